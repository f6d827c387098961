"""Runs a plan: one kernel call per batch, inputs passed as views where the layout allows; then reverse-mode
differentiation over the same batches, one VJP call per batch, gradients scattered back to their sources."""
import numpy as np

from kernels import backend
from kernels.structure import SparseRows

from . import errors

# How a batch reads one of its inputs: a parameter/constant passed once, a contiguous slice of an earlier
# batch's output (a view: the common case along recurrent chains), rows taken from one batch, or a stack.
SHARED, SLICE, TAKE, STACK = range(4)


class Batch:
    """One executed group: its signature, nodes (in output order), output, inputs and how they were read."""

    __slots__ = ("sig", "nodes", "out", "inputs", "plans", "aux")

    def __init__(self, sig, nodes, out, inputs, plans, aux):
        self.sig, self.nodes, self.out, self.inputs, self.plans, self.aux = sig, nodes, out, inputs, plans, aux


def _order(graph, nodes, sig):
    """Sort a batch by where its most recently computed batched input lives, so that input is a slice."""
    n_args, n_batch, n_pos = graph.n_args, graph.n_batch, graph.n_pos
    first = n_args[nodes[0]]
    batched = [j for j, sh in enumerate(sig.shared) if not sh]
    if not batched:
        return nodes
    j = max(batched, key=lambda j: n_batch[first[j]])
    return sorted(nodes, key=lambda n: (n_batch[n_args[n][j]], n_pos[n_args[n][j]]))


def _gather(graph, nodes, j):
    n_args, n_batch, n_pos, batches = graph.n_args, graph.n_batch, graph.n_pos, graph.batches
    src = [n_args[n][j] for n in nodes]
    bs = [n_batch[a] for a in src]
    ps = [n_pos[a] for a in src]
    b0, p0, size = bs[0], ps[0], len(src)
    if bs.count(b0) == size:
        out = batches[b0].out
        if ps[-1] - p0 == size - 1 and ps == list(range(p0, p0 + size)):
            return out[p0:p0 + size], (SLICE, b0, p0)
        idx = np.asarray(ps, dtype=np.intp)
        return out[backend.xp.asarray(idx)], (TAKE, b0, idx, len(set(ps)) == size)
    return backend.xp.stack([batches[b].out[p] for b, p in zip(bs, ps)]), (STACK, bs, ps)


def run_forward(graph, plan):
    """Execute each batch of ``plan`` in order."""
    n_args, n_aux, n_batch, n_pos, batches = graph.n_args, graph.n_aux, graph.n_batch, graph.n_pos, graph.batches
    for nodes in plan:
        sig = graph.n_sig[nodes[0]]
        if len(nodes) > 1:
            nodes = _order(graph, nodes, sig)
        size = len(nodes)
        inputs, plans = [], []
        for j, shared in enumerate(sig.shared):
            if shared:
                a = n_args[nodes[0]][j]
                x, p = batches[n_batch[a]].out[n_pos[a]], (SHARED, a)
            else:
                x, p = _gather(graph, nodes, j)
                if sig.expand[j]:  # align a lower-rank batched input for broadcasting against the output
                    x = x.reshape((size,) + (1,) * (len(sig.shape) - x.ndim + 1) + x.shape[1:])
            inputs.append(x)
            plans.append(p)
        aux = None
        if sig.prim.aux == "index":
            aux = backend.xp.asarray(np.fromiter((n_aux[n] for n in nodes), np.intp, size))
        elif sig.prim.aux == "list":
            aux = [n_aux.get(n) for n in nodes]
        out = sig.prim.fwd(*inputs, **sig.kw) if aux is None else sig.prim.fwd(aux, *inputs, **sig.kw)
        if out.shape != (size,) + sig.shape:
            raise RuntimeError(f"kernel {sig.prim.name} returned shape {out.shape}, expected {(size,) + sig.shape}")
        bid = len(batches)
        batches.append(Batch(sig, nodes, out, inputs, plans, aux))
        for k, n in enumerate(nodes):
            n_batch[n] = bid
            n_pos[n] = k
        if graph.check_finite and not bool(backend.xp.isfinite(out).all()):
            _report_nonfinite(graph, batches[bid])


def _report_nonfinite(graph, batch):
    bad = np.flatnonzero(~np.isfinite(backend.asnumpy(batch.out)).reshape(len(batch.nodes), -1).all(1))[0]
    n = batch.nodes[bad]
    raise FloatingPointError(f"{batch.sig.prim.name}: non-finite value (NaN or inf) in node {n} of shape "
                             f"{batch.sig.shape}, built at {graph.n_site[n]}")


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
    batches, n_batch, n_pos = graph.batches, graph.n_batch, graph.n_pos
    grads = {}

    def buffer(b):
        g = grads.get(b)
        if g is None:
            g = grads[b] = xp.zeros_like(batches[b].out)
        return g

    def wants(b):
        sig = batches[b].sig
        return sig.prim.vjp is not None or sig.param is not None

    buffer(n_batch[target])[n_pos[target]] = 1
    count = 0
    for bid in range(n_batch[target], -1, -1):
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
        if batch.aux is None:
            gins = prim.vjp(g, batch.out, *batch.inputs, **sig.kw)
        else:
            gins = prim.vjp(g, batch.out, batch.aux, *batch.inputs, **sig.kw)
        for j, (gi, plan) in enumerate(zip(gins, batch.plans)):
            if gi is None:
                continue
            kind = plan[0]
            if prim.kind == "elementwise":
                x = batch.inputs[j]
                gi = unbroadcast(gi, x.shape)
                if sig.expand[j]:
                    gi = gi.reshape((len(x),) + graph.n_sig[graph.n_args[batch.nodes[0]][j]].shape)
            if kind == SHARED:
                a = plan[1]
                src = batches[n_batch[a]].sig
                if src.param is not None:
                    if isinstance(gi, SparseRows):
                        src.param.accumulate_rows(gi.indices, gi.rows)
                    else:
                        src.param.accumulate(gi)
                else:
                    target_rows = buffer(n_batch[a])
                    if isinstance(gi, SparseRows):
                        backend.scatter_add(target_rows[n_pos[a]], gi.indices, gi.rows)
                    else:
                        target_rows[n_pos[a]] += gi
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
                for k, (b, p) in enumerate(zip(plan[1], plan[2])):
                    if wants(b):
                        buffer(b)[p] += gi[k]
    graph.backward_batches += count
