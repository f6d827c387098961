"""Batching strategies: which not-yet-run nodes execute together, and in what order.

A plan is a list of batches (lists of node ids), each of one signature, in an order that respects
dependencies. Planning never looks at values, so it is separate from execution.
"""


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
        groups.setdefault((n_depth[n], n_sig[n].id), []).append(n)
    return [groups[k] for k in sorted(groups)]


def _agenda(graph, targets):
    # DyNet's agenda: run ready unbatchable nodes first; otherwise the ready signature whose nodes have the
    # lowest mean depth, the mean taken once over ALL its pending nodes, not only the ready ones. A signature
    # whose nodes hang off every step of a chain (per-word losses) has a mean deeper than the chain's own
    # signatures, so it waits until the chains are done and then runs as one batch.
    n_sig, n_args, n_depth, n_loc, local = graph.n_sig, graph.n_args, graph.n_depth, graph.n_loc, graph.local
    nsig = len(graph.signatures)
    count, depth_sum = [0] * nsig, [0] * nsig
    lo = graph.first_pending  # per-node lists below are indexed by id - lo
    size = max(targets) - lo + 1
    need, waiting, consumers = bytearray(size), [0] * size, [None] * size
    stack, leaves = [], []
    for t in targets:
        if not need[t - lo]:
            need[t - lo] = 1
            stack.append(t)
    # One walk from the targets (as in ``pending``) also counts each node's pending inputs and records its
    # consumers.
    while stack:
        n = stack.pop()
        sid = local[n_sig[n]]
        count[sid] += 1
        depth_sum[sid] += n_depth[n]
        k = 0
        for a in n_args[n]:
            if n_loc[a] < 0:
                k += 1
                i = a - lo
                c = consumers[i]
                if c is None:
                    consumers[i] = [n]
                else:
                    c.append(n)
                if not need[i]:
                    need[i] = 1
                    stack.append(a)
        if k:
            waiting[n - lo] = k
        else:
            leaves.append(n)
    leaves.sort()
    ready = {}  # signature (local index) -> its nodes whose inputs have all run
    for n in leaves:
        ready.setdefault(local[n_sig[n]], []).append(n)
    sigs = graph.signatures
    rank = [(sigs[s].batchable, depth_sum[s] / count[s]) if count[s] else None for s in range(nsig)]
    left = len(waiting) - waiting.count(0)
    plan = []
    while ready:
        batch = ready.pop(min(ready, key=rank.__getitem__))  # an unbatchable signature holds one node
        plan.append(batch)
        for n in batch:
            for c in consumers[n - lo] or ():
                k = waiting[c - lo] = waiting[c - lo] - 1
                if not k:
                    left -= 1
                    ready.setdefault(local[n_sig[c]], []).append(c)
    if left:
        raise RuntimeError(f"cycle detected: {left} nodes never became ready")
    return plan


_STRATEGIES = {"off": _off, "depth": _depth, "agenda": _agenda}
