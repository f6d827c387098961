"""Runs a plan: one kernel call per batch, inputs passed as views where the layout allows; then reverse-mode
differentiation over the same batches, one VJP call per batch, gradients scattered back to their sources."""
import numpy as np

from kernels import backend
from kernels.structure import SparseRows

from .graph import STRIDE

# How a batch reads one of its inputs: a parameter/constant passed once, a contiguous slice of an earlier
# batch's output (a view: the common case along recurrent chains), rows taken from one batch, or runs of
# consecutive rows from several batches, joined (two directions of a BiLSTM merged into one batch).
SHARED, SLICE, TAKE, RUNS = range(4)


class Batch:
    """One executed group: its signature, nodes (in output order), output, inputs, how they were read, the
    per-node data, and what the kernel saved for its VJP."""

    __slots__ = ("sig", "nodes", "out", "inputs", "plans", "aux", "res", "kw")

    def __init__(self, sig, nodes, out, inputs, plans, aux, res, kw):
        self.sig, self.nodes, self.out, self.inputs, self.plans, self.aux, self.res, self.kw = (
            sig, nodes, out, inputs, plans, aux, res, kw)


def _order(graph, nodes, args, sig):
    """Sort a batch by where its most recently computed batched input lives, so that input is a slice."""
    n_loc = graph.n_loc
    batched = [j for j, sh in enumerate(sig.shared) if not sh]
    if not batched:
        return nodes, args
    j = max(batched, key=lambda j: n_loc[args[0][j]])
    order = sorted(range(len(nodes)), key=[n_loc[t[j]] for t in args].__getitem__)
    return [nodes[k] for k in order], [args[k] for k in order]


def _gather(graph, src):
    """The batched input made of the values of nodes ``src``, and how it was read (for the backward pass)."""
    n_loc = graph.n_loc
    locs = [n_loc[a] for a in src]
    first, size = locs[0], len(src)
    b0 = first // STRIDE
    if locs[-1] - first == size - 1 and locs == list(range(first, first + size)):
        p0 = first - b0 * STRIDE
        return graph.batches[b0].out[p0:p0 + size], (SLICE, b0, p0)
    bs = [loc // STRIDE for loc in locs]
    if bs.count(b0) == size:
        idx = np.array(locs, dtype=np.intp) - b0 * STRIDE
        return graph.batches[b0].out[backend.xp.asarray(idx)], (TAKE, b0, idx, len(set(locs)) == size)
    runs, start = [], 0
    for k in range(1, size + 1):
        if k == size or locs[k] != locs[k - 1] + 1:
            b, p = divmod(locs[start], STRIDE)
            runs.append((b, p, p + k - start))
            start = k
    return _joined(graph, runs)


def _joined(graph, runs):
    """Runs (batch, start, stop) of rows from several batches, joined in order."""
    batches = graph.batches
    return backend.xp.concatenate([batches[b].out[p:q] for b, p, q in runs]), (RUNS, runs)


def _gather_rows(graph, src):
    """Like ``_gather`` for sequence nodes: each contributes its rows, packed one node after another."""
    n_loc, n_rows = graph.n_loc, graph.n_rows
    runs = []  # maximal runs of consecutive rows: (batch, start, stop)
    for a in src:
        b, p = divmod(n_loc[a], STRIDE)
        q = p + n_rows[a]
        if runs and runs[-1][0] == b and runs[-1][2] == p:
            runs[-1] = (b, runs[-1][1], q)
        else:
            runs.append((b, p, q))
    batches = graph.batches
    if len(runs) == 1:
        b, p, q = runs[0]
        return batches[b].out[p:q], (SLICE, b, p)
    b0 = runs[0][0]
    if all(r[0] == b0 for r in runs):
        idx = np.concatenate([np.arange(p, q) for _, p, q in runs])
        return batches[b0].out[backend.xp.asarray(idx)], (TAKE, b0, idx, len(set(src)) == len(src))
    return _joined(graph, runs)


def run_forward(graph, plan):
    """Execute each batch of ``plan`` in order."""
    n_sig, n_args, n_aux, n_loc, batches = graph.n_sig, graph.n_args, graph.n_aux, graph.n_loc, graph.batches
    n_rows = graph.n_rows
    for nodes in plan:
        sig = n_sig[nodes[0]]
        prim = sig.prim
        args = [n_args[n] for n in nodes]
        build = prim.seq == "build"
        if len(nodes) > 1 and not build:
            nodes, args = _order(graph, nodes, args, sig)
        size = len(nodes)
        inputs, plans, kw = [], [], sig.kw
        if build:  # a sequence from its rows: all rows of all nodes, packed, in one read
            x, p = _gather(graph, [a for t in args for a in t])
            inputs.append(x)
            plans.append(p)
        elif prim.stacks:  # one gather for all terms of all nodes: a sum of a thousand losses is one read
            x, p = _gather(graph, [a for t in args for a in t])
            inputs.append(x.reshape((size, len(args[0])) + x.shape[1:]))
            plans.append(p)
        else:
            for j, shared in enumerate(sig.shared):
                if shared:
                    a = args[0][j]
                    b, pos = divmod(n_loc[a], STRIDE)
                    x, p = batches[b].out[pos], (SHARED, a)
                else:
                    col = [t[j] for t in args]
                    x, p = _gather_rows(graph, col) if j in sig.seq_inputs else _gather(graph, col)
                    if sig.expand[j]:  # align a lower-rank batched input for broadcasting against the output
                        x = x.reshape((len(x),) + (1,) * (len(sig.shape) - x.ndim + 1) + x.shape[1:])
                inputs.append(x)
                plans.append(p)
            if sig.seq_inputs and prim.seq != "rows":  # the kernel walks each example's rows itself
                j = sig.seq_inputs[0]
                kw = dict(kw, lengths=np.array([n_rows[t[j]] for t in args], np.intp))
        aux = None
        if prim.aux is not None:
            per_node = [n_aux.get(n) for n in nodes]
            if sig.ragged and prim.seq == "rows":  # per-row data (a word id, a target) for every row
                aux = backend.xp.asarray(np.concatenate(per_node))
            elif prim.aux == "index":
                aux = backend.xp.asarray(np.array(per_node, np.intp))
            else:
                aux = per_node
        out = prim.fwd(*inputs, **kw) if aux is None else prim.fwd(aux, *inputs, **kw)
        res = None
        if prim.residual:
            out, res = out
        counts = [n_rows[n] for n in nodes] if sig.ragged else None
        total = size if counts is None else sum(counts)
        if out.shape != (total,) + sig.shape:
            raise RuntimeError(f"kernel {prim.name} returned shape {out.shape}, expected {(total,) + sig.shape}")
        bid = len(batches)
        batches.append(Batch(sig, nodes, out, inputs, plans, aux, res, kw))
        base = bid * STRIDE
        if counts is None:
            for k, n in enumerate(nodes):
                n_loc[n] = base + k
        else:
            for n, c in zip(nodes, counts):
                n_loc[n] = base
                base += c
        if graph.check_finite and not bool(backend.xp.isfinite(out).all()):
            _report_nonfinite(graph, batches[bid], counts)


def _report_nonfinite(graph, batch, counts):
    bad_row = np.flatnonzero(~np.isfinite(backend.asnumpy(batch.out)).reshape(len(batch.out), -1).all(1))[0]
    k = bad_row if counts is None else int(np.searchsorted(np.cumsum(counts), bad_row, side="right"))
    n = batch.nodes[k]
    raise FloatingPointError(f"{batch.sig.prim.name}: non-finite value (NaN or inf) in node {n} of shape "
                             f"{graph.shape_of(n)}, built at {graph.n_site[n]}")


def unbroadcast(g, shape):
    """Sum a broadcast gradient down to ``shape`` (leading axes, then axes of length 1)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def run_backward(graph, target):
    """Reverse-mode pass from ``target`` over the executed batches; parameters receive their gradients."""
    xp = backend.xp
    batches, n_loc = graph.batches, graph.n_loc
    grads = {}

    def buffer(b):
        g = grads.get(b)
        if g is None:
            g = grads[b] = xp.zeros_like(batches[b].out)
        return g

    def wants(b):  # inputs and constants of zeros take no gradient
        sig = batches[b].sig
        return sig.prim.vjp is not None or sig.param is not None

    top, pos = divmod(n_loc[target], STRIDE)
    buffer(top)[pos:pos + graph.n_rows.get(target, 1)] = 1
    count = 0
    for bid in range(top, -1, -1):
        g = grads.pop(bid, None)
        if g is None:
            continue
        count += 1
        batch = batches[bid]
        sig = batch.sig
        if sig.param is not None:
            sig.param.accumulate(g[0])
            continue
        prim = sig.prim
        kw = batch.kw if batch.res is None else dict(batch.kw, res=batch.res)
        if batch.aux is None:
            gins = prim.vjp(g, batch.out, *batch.inputs, **kw)
        else:
            gins = prim.vjp(g, batch.out, batch.aux, *batch.inputs, **kw)
        for j, (gi, plan) in enumerate(zip(gins, batch.plans)):
            if gi is None:
                continue
            kind = plan[0]
            if prim.kind == "elementwise":
                x = batch.inputs[j]
                gi = unbroadcast(gi, x.shape)
                if sig.expand[j]:
                    gi = gi.reshape((len(x),) + graph.n_sig[graph.n_args[batch.nodes[0]][j]].shape)
            elif prim.stacks:
                gi = gi.reshape((-1,) + gi.shape[2:])
            if kind == SHARED:
                a = plan[1]
                b, p = divmod(n_loc[a], STRIDE)
                param = batches[b].sig.param
                if param is not None:
                    if isinstance(gi, SparseRows):
                        param.accumulate_rows(gi.indices, gi.rows)
                    else:
                        param.accumulate(gi)
                elif isinstance(gi, SparseRows):
                    backend.scatter_add(buffer(b)[p], gi.indices, gi.rows)
                else:
                    buffer(b)[p] += gi
            elif kind == SLICE:
                if wants(plan[1]):
                    buffer(plan[1])[plan[2]:plan[2] + len(gi)] += gi
            elif kind == TAKE:
                if wants(plan[1]):
                    idx = xp.asarray(plan[2])
                    if plan[3]:
                        buffer(plan[1])[idx] += gi
                    else:
                        backend.scatter_add(buffer(plan[1]), idx, gi)
            else:
                k = 0
                for b, p, q in plan[1]:
                    if wants(b):
                        buffer(b)[p:q] += gi[k:k + q - p]
                    k += q - p
    graph.backward_batches += count
