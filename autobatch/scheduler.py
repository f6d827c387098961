# cython: boundscheck=False, wraparound=False
# (compiled: every index below is a node id or a counter in range by construction, never negative)
"""Batching strategies: which not-yet-run nodes execute together, and in what order.

A plan is a list of batches (lists of node ids), each of one signature, in an order that respects
dependencies. Planning never looks at values, so it is separate from execution.

Compiled by Cython (see setup.py) with the C types of ``scheduler.pxd``: the loops below run over C ints, and
per-node counters are arrays (``array``, ``bytearray``) that the compiled code reads as C memory.
"""
from array import array

try:
    import cython

    COMPILED = cython.compiled  # True inside the compiled module
except ImportError:  # pure Python without Cython installed
    COMPILED = False


def _zeros(size, typecode):
    """``size`` zero counters: a C array when compiled (its loops read it as C memory), else a list (which the
    interpreter indexes faster than an array)."""
    return array(typecode, bytes(array(typecode).itemsize * size)) if COMPILED else [0] * size



def pending(graph, targets):
    """Ids, ascending, of the not-yet-executed nodes that the ``targets`` need (themselves included)."""
    n_loc, n_args = graph.n_loc, graph.n_args
    # A walk from the targets over not-yet-run inputs touches only what is needed: nodes built but never read
    # (rows nobody used yet, dead ends) cost nothing however many there are. Ids are a topological order.
    lo = graph.first_pending
    need = bytearray(max(targets) - lo + 1)
    found = []
    for t in targets:
        if not need[t - lo]:
            need[t - lo] = 1
            found.append(t)
    stack = list(found)
    while stack:
        for a in n_args[stack.pop()]:
            if n_loc[a] < 0 and not need[a - lo]:
                need[a - lo] = 1
                found.append(a)
                stack.append(a)
    found.sort()
    return found


def schedule(graph, targets):
    """The plan that computes the ``targets`` (not-yet-run node ids) under the graph's strategy."""
    if graph.strategy == "agenda":
        return _agenda(graph, targets)
    return _STRATEGIES[graph.strategy](graph, pending(graph, targets))


def _off(graph, nodes):
    return [[n] for n in nodes]  # ids are a topological order: inputs are built first


def _depth(graph, nodes):
    # TensorFlow Fold's rule: nodes of one depth never depend on each other, so each (depth, signature)
    # group is a batch (unbatchable signatures are unique to their node).
    n_sig, n_depth = graph.n_sig, graph.n_depth
    groups = {}
    for n in nodes:
        sig = n_sig[n]
        key = (n_depth[n] << 32) + sig.id  # (depth, signature id) as one int: sorts the same, hashes faster
        group = groups.get(key)
        if group is None:
            groups[key] = [n]
        else:
            group.append(n)
    return [groups[k] for k in sorted(groups)]


def _agenda(graph, targets):
    # DyNet's agenda: run ready unbatchable nodes first; otherwise the ready signature whose nodes have the
    # lowest mean depth, the mean taken once over ALL its pending nodes, not only the ready ones. A signature
    # whose nodes hang off every step of a chain (per-word losses) has a mean deeper than the chain's own
    # signatures, so it waits until the chains are done and then runs as one batch.
    n_sig, n_args, n_depth, n_loc, local = graph.n_sig, graph.n_args, graph.n_depth, graph.n_loc, graph.local
    ref = graph.ref
    sigs = graph.signatures
    nsig = len(sigs)
    count, depth_sum = _zeros(nsig, "q"), _zeros(nsig, "q")
    lo = graph.first_pending  # per-node arrays below are indexed by id - lo
    size = max(targets) - lo + 1
    need, waiting, sid_of = bytearray(size), _zeros(size, "i"), _zeros(size, "i")
    # Each node's consumers, as a linked list in flat arrays (no list per node): edge e (from 1) is consumer
    # dst[e] (the graph's int object), followed by edge nxt[e]; first[i] and last[i] are node i's first and last
    # edges (0: none), appending keeps the order they were met in. An input read twice by one node has two edges.
    # Compiled, their number is counted first (a C loop over the nodes; growing the arrays costs more). Pure Python
    # skips that pass (2% of its forward pass): room for two per node, doubled when full.
    if COMPILED:
        cap = 1
        for t in range(lo, lo + size):
            cap += len(n_args[t])
    else:
        cap = 2 * size + 2
    first, last, nxt, dst = _zeros(size, "i"), _zeros(size, "i"), _zeros(cap, "i"), [None] * cap
    e = 0
    stack, leaves = [], []
    for t in targets:
        if not need[t - lo]:
            need[t - lo] = 1
            stack.append(t)
    # One walk from the targets (as in ``pending``) also counts each node's pending inputs and records its
    # consumers and its signature's index.
    left = 0  # nodes waiting for an input
    # Compiled, the node ids n, a, c stay the int objects the graph holds, moved between lists as they are; ni,
    # ai, ci are their C values for arithmetic. (Typed ids were boxed anew at every append: 10 per node.)
    while stack:
        n = stack.pop()
        ni = n
        sig = n_sig[ni]
        sid = sig.lidx if sig.lref is ref else local[sig]  # (the dict only for a graph registered before another)
        sid_of[ni - lo] = sid
        count[sid] += 1
        depth_sum[sid] += n_depth[ni]
        k = 0
        for a in n_args[ni]:
            ai = a
            if n_loc[ai] < 0:
                k += 1
                i = ai - lo
                e += 1
                if e == cap:
                    grown = _zeros(cap + cap, "i")
                    grown[:cap] = nxt
                    nxt = grown
                    dst += [None] * cap
                    cap += cap
                dst[e] = n
                if last[i]:
                    nxt[last[i]] = e
                else:
                    first[i] = e
                last[i] = e
                if not need[i]:
                    need[i] = 1
                    stack.append(a)
        if k:
            waiting[ni - lo] = k
            left += 1
        else:
            leaves.append(n)
    leaves.sort()
    unbatchable = bytearray(nsig)
    mean = _zeros(nsig, "d")
    for sid in range(nsig):
        unbatchable[sid] = not sigs[sid].batchable
        if count[sid]:
            mean[sid] = depth_sum[sid] / count[sid]
    # The ready nodes of each signature (local index), and the signatures holding some, in the order they
    # became ready: ties in rank go to the earliest.
    ready, active, plan = [None] * nsig, [], []
    # Pick numbers (from 1): when each signature's ready list was opened, and when it last ran.
    opened, ran = _zeros(nsig, "q"), _zeros(nsig, "q")
    released = leaves  # nodes whose inputs have all run, not yet in a ready list
    while True:
        for c in released:
            ci = c
            sid = sid_of[ci - lo]
            r = ready[sid]
            if r is None:
                ready[sid] = [c]
                active.append(sid)
                opened[sid] = len(plan) + 1
            else:
                r.append(c)
        if not active:
            break
        best, pick = active[0], 0  # an unbatchable signature first (it holds one node); else the lowest mean
        for j in range(1, len(active)):
            sid = active[j]
            if unbatchable[sid] > unbatchable[best] or (unbatchable[sid] == unbatchable[best]
                                                        and mean[sid] < mean[best]):
                best, pick = sid, j
        if not unbatchable[best]:
            # Completing the wave: a signature opened since ``best`` last ran (its nodes came from the same
            # steps) whose ready nodes would release more of ``best`` runs first, so that they join this batch.
            # The two directions of a BiLSTM: their gate products differ (two weight matrices) and the cell
            # update, one signature, would otherwise run once per direction. A list that has waited since
            # before ``best`` last ran (per-word losses held back by their deeper mean) is never taken here.
            # Such a list holds one wave's nodes, so its first node speaks for it: one look per active
            # signature, not one per ready node (a Tree-LSTM's leaf lists hold hundreds at minibatch 64).
            alt, alt_pick = -1, 0
            for j in range(len(active)):
                sid = active[j]
                if sid == best or unbatchable[sid] or opened[sid] < ran[best] or (
                        alt >= 0 and mean[sid] >= mean[alt]):
                    continue
                if _releases(ready[sid][0], best, first, nxt, dst, waiting, sid_of, lo):
                    alt, alt_pick = sid, j
            if alt >= 0:
                best, pick = alt, alt_pick
        del active[pick]
        ran[best] = len(plan) + 1
        batch = ready[best]
        ready[best] = None
        plan.append(batch)
        released = []
        for n in batch:
            ni = n
            e = first[ni - lo]
            while e:
                c = dst[e]
                e = nxt[e]
                ci = c
                i = ci - lo
                k = waiting[i] - 1
                waiting[i] = k
                if not k:
                    left -= 1
                    released.append(c)
    if left:
        raise RuntimeError(f"cycle detected: {left} nodes never became ready")
    return plan


def _releases(n, sid, first, nxt, dst, waiting, sid_of, lo):
    """Whether running node ``n`` makes a node of signature ``sid`` ready (its last pending input is ``n``)."""
    ni = n
    e = first[ni - lo]
    while e:
        ci = dst[e]
        e = nxt[e]
        if sid_of[ci - lo] == sid and waiting[ci - lo] == 1:
            return True
    return False


_STRATEGIES = {"off": _off, "depth": _depth, "agenda": _agenda}
