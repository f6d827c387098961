"""Runs a plan: one kernel call per batch, inputs passed as views where the layout allows; then reverse-mode
differentiation over the same batches, one VJP call per batch, gradients scattered back to their sources."""
import numpy as np

try:
    import cython

    COMPILED = cython.compiled  # True inside the compiled module
except ImportError:  # pure Python without Cython installed
    COMPILED = False

from autobatch.kernels import backend
from autobatch.kernels.linalg import rows_product
from autobatch.kernels.structure import SparseRows

# Where an executed node's value lives, as one int: batch id * STRIDE + position in the batch (-1 before it runs).
# One int sorts, compares and tests contiguity faster than a pair. (The graph imports this module, never the
# reverse: the executor reads and writes a graph's execution state through the graph passed to it.)
STRIDE = 1 << 32

# How a batch reads one of its inputs: a parameter/constant passed once, a contiguous slice of an earlier
# batch's output (a view: the common case along recurrent chains), rows taken from one batch, or runs of
# consecutive rows from several batches, joined (two directions of a BiLSTM merged into one batch; see _joined)
# through index arrays (RUNS) or, compiled on the CPU, copied run by run in C (ROWS).
SHARED, SLICE, TAKE, RUNS, ROWS = range(5)


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
    j, latest, i = -1, -1, 0
    for sh in sig.shared:  # the batched input computed last (the first node's input with the highest location)
        if not sh:
            loc = n_loc[args[0][i]]
            if loc > latest:
                j, latest = i, loc
        i += 1
    if j < 0:
        return nodes, args
    keys, rising, last = [], True, -1
    for t in args:  # along chains the batch is in layout order already: test before sorting
        a = t[j]  # (compiled, C ints: the key objects are the graph's own, compared as C values)
        key = n_loc[a]
        loc = key
        if loc < last:
            rising = False
        last = loc
        keys.append(key)
    if rising:
        return nodes, args
    if COMPILED:  # C sorts (``_sorted``, executor.pxd): a few hundred instructions where argsort costs thousands
        return _sorted(keys, nodes, args)  # noqa: F821
    order = np.argsort(np.array(keys, np.int64), kind="stable").tolist()  # (sorted() calls a key per node)
    return [nodes[k] for k in order], [args[k] for k in order]


def _gather(graph, src):
    """The batched input made of the values of nodes ``src``, and how it was read (for the backward pass)."""
    n_loc, stride = graph.n_loc, STRIDE  # (compiled, a C copy of the stride: its divisions are C divisions)
    first, size, k = n_loc[src[0]], len(src), 1
    while k < size:  # consecutive positions of one batch: a view
        a = src[k]  # (compiled, a C int read from a C-typed location: no int objects made or compared)
        loc = n_loc[a]
        if loc != first + k:
            break
        k += 1
    b0 = first // stride
    if k == size:
        p0 = first - b0 * stride
        return graph.batches[b0].out[p0:p0 + size], (SLICE, b0, p0)
    # Rows of one batch: taken through an index array, except compiled on the CPU, where C copies them as it
    # copies a join's (the ROWS plan, below), with no index array.
    if not _rows_in_c():
        base, rows, one, rising, last = b0 * stride, [], True, True, -1
        for a in src:  # all in batch b0? Their rows there, and whether they rise (then no row repeats)
            loc = n_loc[a]  # (compiled, one conversion to a C int; then C arithmetic)
            p = loc - base
            if p < 0 or p >= stride:
                one = False
                break
            if p <= last:
                rising = False
            last = p
            rows.append(p)
        if one:
            idx = backend.to_device(np.array(rows, np.intp))  # kept on the device for the backward pass
            # take(), not [idx]: NumPy's fancy indexing costs three times as much on a few rows
            return graph.batches[b0].out.take(idx, 0), (TAKE, b0, idx, rising or len(set(rows)) == size)
    # Maximal runs of consecutive locations, per source batch: the open one is [start, last]; the sentinel -2
    # after the last node closes it.
    parts, total, start, last = {}, 0, -2, -2
    for k in range(size + 1):
        if k < size:
            a = src[k]
            loc = n_loc[a]
        else:
            loc = -2
        if loc != last + 1:
            if start >= 0:
                b = start // stride
                p = start - b * stride
                n = last + 1 - start
                _add_run(parts, b, p, p + n, total)
                total += n
            start = loc
        last = loc
    return _joined(graph, parts, total)


def _rows_in_c():
    """Whether C copies and adds the rows of gathers (``_runs``, executor.pxd): compiled, on NumPy's arrays.
    Elsewhere (pure Python, a device) index arrays do it."""
    return COMPILED and backend.name == "numpy"


def _add_run(parts, b, p, q, where):
    """Record rows [p, q) of batch ``b``, placed at row ``where`` of a joined input, in ``parts`` (see
    _joined). Compiled, an inline C function (executor.pxd)."""
    mine = parts.get(b)
    if mine is None:
        parts[b] = [p, q, where]
    else:
        mine.extend((p, q, where))


def _triples(flat):
    """The runs (start, stop, where) of a flat list of their numbers."""
    it = iter(flat)
    return zip(it, it, it)


def _move_runs(src, join, runs, add):
    """Compiled on NumPy (``_rows_in_c``): the runs of rows (see _joined) of ``src`` copied onto ``join`` (``add``
    false), or those of ``join`` added onto ``src`` (true: a row read twice gets both), by C (``_runs``,
    executor.pxd), or by NumPy run by run for the arrays C does not take (another dtype)."""
    if not _runs(src, join, runs, add):  # noqa: F821
        for p, q, d in _triples(runs):
            if add:
                src[p:q] += join[d:d + q - p]
            else:
                join[d:d + q - p] = src[p:q]


def _joined(graph, parts, total):
    """The ``total`` rows of runs from several batches, joined in order: ``parts`` maps a source batch to its
    runs (start, stop, where they go in the input), in input order, as one flat list of ints (a tuple per run,
    kept for the backward pass, would be a container for the cycle collector to walk until the graph is freed).
    They are read one source batch at a time, not one run at a time: a tree's inputs come from every level
    below, hundreds of runs of a row or two from a few batches, and a NumPy view and copy per run cost more than
    the rest of the batch. Compiled on the CPU, C copies them (the ROWS plan keeps ``parts``). Otherwise a
    batch read in one run is read as a slice, one read in several through index arrays (``src`` rows of the
    batch into ``dst`` rows of the input), and the RUNS plan keeps (batch, src, dst, unique) per source batch:
    ``unique`` when no row of the batch is read twice, so that the backward pass may add the gradient in one
    indexed step."""
    batches = graph.batches
    some = batches[next(iter(parts))].out
    x = backend.xp.empty((total,) + some.shape[1:], some.dtype)
    if _rows_in_c():
        # Compiled on the CPU, C copies the runs of each source batch (``_runs``, executor.pxd: one call of a few
        # hundred instructions where index arrays, take() and an indexed store cost several NumPy calls). The
        # plan keeps the runs per source batch; the backward pass adds the gradient back the same way.
        for b, mine in parts.items():
            _move_runs(batches[b].out, x, mine, False)
        return x, (ROWS, parts)
    groups = []
    for b, mine in parts.items():
        if len(mine) == 3:
            p, q, d = mine
            src, dst, unique = slice(p, q), slice(d, d + q - p), True
            x[dst] = batches[b].out[src]
        else:
            src, dst = [], []
            for p, q, d in _triples(mine):
                for r in range(q - p):
                    src.append(p + r)
                    dst.append(d + r)
            unique, n = len(set(src)) == len(src), len(src)
            both = backend.to_device(np.array(src + dst, np.intp))  # (one upload)
            src, dst = both[:n], both[n:]
            x[dst] = batches[b].out.take(src, 0)
        groups.append((b, src, dst, unique))
    return x, (RUNS, groups)


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
        idx = backend.to_device(idx)
        return batches[b0].out[idx], (TAKE, b0, idx, len(set(src)) == len(src))
    parts, total = {}, 0  # the runs per source batch (see _joined)
    for b, p, q in runs:
        _add_run(parts, b, p, q, total)
        total += q - p
    return _joined(graph, parts, total)


def _shared_product(prim, inputs, plans, kw):
    """The input of a batch of a product (a primitive with ``outer``) that is a shared matrix multiplying the
    batch's row vectors, or -1."""
    outer = prim.outer
    if outer is None:
        return -1
    w, x = outer
    if plans[w][0] != SHARED or not kw.get("xvec") or inputs[w].ndim != 2 or inputs[x].ndim != 2:
        return -1
    return w


# The largest matrix (elements) that run_forward copies column-major: up to 128 x 1,024 a copy costs about 0.6 ns
# per element (a 1,000 x 128 one, 82 us), what a few batches' products gain back. Past the cache it costs more
# (a 10,000 x 256 output layer: 2.1 ns per element, 5.5 ms, about four products of 16 rows' gain), so such a
# matrix is multiplied as it is.
COPY_MAX = 1 << 17


def _column_major(layouts, w, inputs, plans):
    """The shared matrix ``inputs[w]`` as the forward kernel gets it (see ``run_forward``): as it is at its first
    read in the pass (maybe its only one), then as one column-major copy (up to ``COPY_MAX`` elements)."""
    key = plans[w][1]
    if key not in layouts or inputs[w].size > COPY_MAX:
        layouts[key] = None
        return inputs[w]
    t = layouts[key]
    if t is None:
        t = layouts[key] = backend.xp.asfortranarray(inputs[w])
    return t


def run_forward(graph, plan):
    """Execute each batch of ``plan`` in order.

    A shared matrix W (a parameter, or a function of parameters) applied to row vectors X (``Primitive.outer``)
    is multiplied as X @ W.T. OpenBLAS runs that product, with W stored row-major, up to 2.9 times slower than
    with W column-major for batches of 8 to a few dozen rows (the rows of a chain's or a tree level's step): a
    200 x 50 recurrent weight, 16 rows, 9.5 against 4.2 us. The VJP's G @ W wants it row-major (the same gap the
    other way). So from the second batch of a pass that reads it, a matrix of up to ``COPY_MAX`` elements is
    passed to the forward kernel as a column-major copy, made once per pass; the batch keeps the matrix's own
    array for the backward pass. On the CPU only (cuBLAS takes either layout)."""
    n_sig, n_args, n_aux, n_loc, batches = graph.n_sig, graph.n_args, graph.n_aux, graph.n_loc, graph.batches
    n_rows = graph.n_rows
    layouts = {} if backend.name == "numpy" else None  # a shared matrix's node: None once read, then its copy
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
            per_node = [n_aux.get(m) for m in nodes]  # (m, untyped: the dict takes the graph's int objects)
            if sig.ragged and prim.seq == "rows":  # per-row data (a word id, a target) for every row
                # Host ids are uploaded at once; a random op's uniforms were drawn on the device already.
                aux = backend.xp.concatenate(per_node) if prim.random else backend.to_device(np.concatenate(per_node))
            elif prim.aux == "index":
                aux = backend.to_device(np.array(per_node, np.intp))
            else:
                aux = per_node
        w = -1 if layouts is None else _shared_product(prim, inputs, plans, kw)
        if w >= 0:
            own = inputs[w]
            inputs[w] = _column_major(layouts, w, inputs, plans)
        out = prim.fwd(*inputs, **kw) if aux is None else prim.fwd(aux, *inputs, **kw)
        if w >= 0:
            inputs[w] = own
        res = None
        if prim.residual:
            out, res = out
        if out.dtype != sig.dtype:  # the signature's dtype is the truth: integers NumPy made floats, an int32 sum
            out = out.astype(sig.dtype)  # NumPy widened, are cast to it (one compare per batch otherwise)
        counts = [n_rows[m] for m in nodes] if sig.ragged else None
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
        if graph.check_finite and not _all_finite(out):
            _report_nonfinite(graph, batches[bid], counts)


def _all_finite(a):
    """True when ``a`` holds no NaN or infinity: one explicit download of one flag (``check_finite`` is a
    debugging mode that syncs after every batch)."""
    return bool(backend.asnumpy(backend.xp.isfinite(a).all()))


def _first_bad_row(a):
    """The index along the leading axis of the first row holding a NaN or infinity (0 for a 0-d array)."""
    a = backend.asnumpy(a)
    return 0 if a.ndim == 0 else int(np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(1))[0])


def _node_at(batch, row, counts):
    """The node of ``batch`` owning ``row`` of an array packing ``counts[k]`` rows per node (one if None)."""
    return batch.nodes[row if counts is None else int(np.searchsorted(np.cumsum(counts), row, side="right"))]


def _report_nonfinite(graph, batch, counts):
    n = _node_at(batch, _first_bad_row(batch.out), counts)
    raise FloatingPointError(f"{batch.sig.prim.name}: non-finite value (NaN or inf) in node {n} of shape "
                             f"{graph.shape_of(n)}, built at {graph.n_site[n]}")


def _check_gradients(graph, batch, gins):
    """With ``check_finite``, name the node whose VJP made a non-finite gradient. Its incoming gradient, output
    and inputs are finite (later batches and the forward pass were checked), so the fault is this op's own
    derivative: sqrt or log at 0, a division by a zero input."""
    sig, nodes = batch.sig, batch.nodes
    for j, gi in enumerate(gins):
        if gi is None:
            continue
        rows = gi.rows if isinstance(gi, SparseRows) else gi
        if _all_finite(rows):
            continue
        n, where = nodes[0], "" if len(nodes) == 1 else f" (one of {len(nodes)} nodes batched together)"
        per_node = rows.ndim and (batch.plans[j][0] != SHARED or sig.prim.kind == "elementwise")
        if per_node and len(rows) == len(batch.out):  # one row per output row
            n, where = _node_at(batch, _first_bad_row(rows), [graph.n_rows[m] for m in nodes] if sig.ragged
                                else None), ""
        elif per_node and j in sig.seq_inputs:  # one row per input row
            n, where = _node_at(batch, _first_bad_row(rows), [graph.n_rows[graph.n_args[m][j]] for m in nodes]), ""
        raise FloatingPointError(f"{sig.prim.name}: non-finite gradient (NaN or inf) from the derivative (VJP) "
                                 f"of node {n}{where} of shape {graph.shape_of(n)} with respect to its input {j}, "
                                 f"built at {graph.n_site[n]}")


def unbroadcast(g, shape):
    """Sum a broadcast gradient down to ``shape`` (leading axes, then axes of length 1)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def _outer_input(batch, batches, n_loc):
    """The input of ``batch`` whose gradient ``run_backward`` forms after the pass, or -1: a parameter matrix
    (m x k) that multiplies the batch's row vectors, of a primitive that declares it (``Primitive.outer``), when
    the batch has fewer than m k / (m + k) rows. Stacking a row copies its m + k numbers, and a product of its
    own makes and adds a new m x k matrix: a batch of more rows keeps its own product (also efficient on its
    own), one of fewer joins the stack."""
    w = _shared_product(batch.sig.prim, batch.inputs, batch.plans, batch.kw)
    if w < 0:
        return -1
    m, k = batch.inputs[w].shape
    if len(batch.out) * (m + k) >= m * k:
        return -1
    return w if batches[n_loc[batch.plans[w][1]] // STRIDE].sig.param is not None else -1


def _stacked(arrays):
    return arrays[0] if len(arrays) == 1 else backend.xp.concatenate(arrays)


def run_backward(graph, target):
    """Reverse-mode pass from ``target`` over the executed batches; parameters receive their gradients.

    A parameter matrix applied to row vectors (the weights of ``affine`` and ``matmul``) gets the part of its
    gradient G.T @ X that comes from batches of few rows once, after the pass: their rows are stacked into one
    product (see ``_outer_input``). Each such batch's own product, with the batch's few rows (one to a few dozen
    along a chain or up a tree) as its inner dimension, made a new matrix the size of the weight and an add into
    its gradient: in the suite's tree and tagger minibatches of 16, two-fifths of the backward pass. The sums
    come in another order, equal to round-off. Stacking batches products across batches, so the "off" strategy,
    the node-by-node reference that the batched strategies are checked against, does not stack."""
    xp = backend.xp
    batches, n_loc = graph.batches, graph.n_loc
    grads = {}
    outer = {}  # a parameter's node: the output gradients and the row vectors of the batches that read it
    stack = graph.strategy != "off"

    def buffer(b):
        g = grads.get(b)
        if g is None:
            out = batches[b].out
            g = grads[b] = xp.zeros(out.shape, out.dtype)  # (zeros_like costs three times as much)
        return g

    def wants(b):  # inputs, constants of zeros and integer values take no gradient
        sig = batches[b].sig
        return (sig.prim.vjp is not None or sig.param is not None) and sig.dtype.kind == "f"

    rows_in_c = _rows_in_c()  # gradient rows added in C (see _joined)
    top, pos = divmod(n_loc[target], STRIDE)
    if not wants(top):  # a function of inputs only: its gradient with respect to every parameter is zero
        return
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
            param = sig.param()  # None once the model is gone: nothing left to train
            if param is not None:
                param.accumulate(g[0])
            continue
        prim = sig.prim
        kw = batch.kw if batch.res is None else dict(batch.kw, res=batch.res)
        w = _outer_input(batch, batches, n_loc) if stack else -1
        if w >= 0:
            kw = dict(kw, outer=False)
            key, x = batch.plans[w][1], batch.inputs[prim.outer[1]]
            rows = outer.get(key)
            if rows is None:
                outer[key] = ([g], [x])
            else:
                rows[0].append(g)
                rows[1].append(x)
        if batch.aux is None:
            gins = prim.vjp(g, batch.out, *batch.inputs, **kw)
        else:
            gins = prim.vjp(g, batch.out, batch.aux, *batch.inputs, **kw)
        if graph.check_finite:
            _check_gradients(graph, batch, gins)
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
                ref = batches[b].sig.param
                if ref is not None:
                    param = ref()
                    if param is None:
                        continue
                    if isinstance(gi, SparseRows):
                        param.accumulate_rows(gi.indices, gi.rows)
                    else:
                        param.accumulate(gi)
                elif isinstance(gi, SparseRows):
                    backend.scatter_add(buffer(b)[p], gi.indices, gi.rows)
                else:
                    buffer(b)[p] += gi
            elif kind == SLICE:
                b = plan[1]
                if wants(b):
                    p, out = plan[2], batches[b].out
                    if p == 0 and gi.shape == out.shape and b not in grads:
                        # The first gradient to reach batch b covers all of it (one consumer reads it whole, the
                        # common case along a chain): a copy is its buffer (a new array of zeros and an add made
                        # two passes and a memset).
                        grads[b] = xp.array(gi, out.dtype, order="C")
                    else:
                        acc = buffer(b)
                        if rows_in_c:
                            _move_runs(acc, gi, [p, p + len(gi), 0], True)
                        else:
                            acc[p:p + len(gi)] += gi
            elif kind == TAKE:
                if wants(plan[1]):
                    idx = plan[2]
                    if plan[3]:
                        buffer(plan[1])[idx] += gi
                    else:
                        backend.scatter_add(buffer(plan[1]), idx, gi)
            elif kind == RUNS:  # per source batch (see _joined)
                for b, src, dst, unique in plan[1]:
                    if wants(b):
                        if unique:
                            buffer(b)[src] += gi[dst]
                        else:
                            backend.scatter_add(buffer(b), src, gi[dst])
            else:  # ROWS: per source batch, in C (see _joined)
                for b, mine in plan[1].items():
                    if wants(b):
                        _move_runs(buffer(b), gi, mine, True)
    for a, (gs, xs) in outer.items():
        param = batches[n_loc[a] // STRIDE].sig.param()
        if param is not None:
            param.accumulate(rows_product(_stacked(gs), _stacked(xs)))
    graph.backward_batches += count
