"""``batch_map``: run ordinary per-example code that reads values (a parser choosing its next action, greedy
decoding) for all examples in lockstep, so that their operations still batch.

Each example runs in its own greenlet. When it asks for a value that is not computed yet, it is suspended;
once every live example is suspended or finished, everything they asked for runs as one batched forward pass and
they are resumed. Greenlets (not threads) because switching is a plain function call with no locks or GIL
hand-offs — see ``bench/batch_map_overhead.py`` for the measured cost — and the user's code needs no change.
"""
import greenlet

from . import graph as _graph


class ExampleError(RuntimeError):
    """An example raised inside ``batch_map``; ``index`` says which, the original is the ``__cause__``."""

    def __init__(self, index, error):
        super().__init__(f"example {index} raised {type(error).__name__}: {error}")
        self.index = index


class _Wait:
    __slots__ = ("graph", "nodes")

    def __init__(self, graph, nodes):
        self.graph, self.nodes = graph, nodes


def batch_map(fn, examples):
    """``[fn(x) for x in examples]``, with the examples run in lockstep: whenever each live example is waiting
    for a value, all pending values are computed together, batched. Returns the results in order; an exception
    in one example is re-raised as ``ExampleError`` naming its index (the others are abandoned; the graph stays
    usable). A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) passes
    through unchanged."""
    if _graph.value_hook[0] is not None:
        raise RuntimeError("batch_map cannot be nested inside another batch_map")
    examples = list(examples)
    main = greenlet.getcurrent()
    workers = [greenlet.greenlet(lambda x=x: fn(x), parent=main) for x in examples]
    ours = set(workers)

    def suspend(graph, *nodes):
        if greenlet.getcurrent() in ours:
            main.switch(_Wait(graph, nodes))  # resumed once the values exist
        else:  # values asked for outside the examples (e.g. by fn's caller): compute them now
            _graph.Graph.forward(graph, *nodes)

    results = [None] * len(examples)
    _graph.value_hook[0] = suspend
    try:
        runnable = list(range(len(workers)))
        while runnable:
            waits = []
            for i in runnable:
                try:
                    out = workers[i].switch()
                except Exception as error:  # not KeyboardInterrupt, SystemExit...: Ctrl-C must stop the program
                    raise ExampleError(i, error) from error
                if workers[i].dead:
                    results[i] = out
                else:
                    waits.append((i, out))
            by_graph = {}
            for _, w in waits:
                by_graph.setdefault(w.graph, []).extend(w.nodes)
            for g, nodes in by_graph.items():
                _graph.Graph.forward(g, *nodes)  # one batched pass for every suspended example
            runnable = [i for i, _ in waits]
    finally:
        _graph.value_hook[0] = None
        for w in workers:
            if not w.dead:
                w.throw(greenlet.GreenletExit)
    return results
