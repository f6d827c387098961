"""Looking inside a graph: counts and timings, a batching report, networkx export and a picture of the batches.
None of this runs on the hot path."""
import time
from collections import Counter

from . import graph as _graph


def graph_stats(g=None):
    """Counts and timings of the current graph: nodes, forward/backward batches, seconds spent building,
    scheduling, executing and in backward, and the batches broken down by signature."""
    g = g or _graph.current()
    t = dict(g.times)
    if g.has_pending():  # nodes built since the last execution: their building time is still running
        t["build_s"] += time.perf_counter() - g._mark
    by_sig = {}
    for b in g.batches:
        s = by_sig.setdefault(b.sig.describe(), {"batches": 0, "nodes": 0})
        s["batches"] += 1
        s["nodes"] += len(b.nodes)
    for s in by_sig.values():
        s["mean_size"] = s["nodes"] / s["batches"]
    n = len(g)
    return dict(nodes=n, executed_nodes=sum(len(b.nodes) for b in g.batches), forward_batches=len(g.batches),
                backward_batches=g.backward_batches, signatures=len(g.signatures), strategy=g.strategy,
                us_per_node_build_schedule=1e6 * (t["build_s"] + t["schedule_s"]) / max(n, 1),
                by_signature=by_sig, **t)


def _why_alone(g, b):
    sig = b.sig
    if sig.param is not None:
        return f"parameter {sig.param.name} (read once, shared by every use)"
    if not sig.batchable:
        return "constant computed from parameters only (computed once, shared)"
    others = sum(1 for b2 in g.batches if b2.sig is sig) - 1
    if others == 0:
        return "the only node of its signature"
    return "no other node of its signature was ready at the same time"


def batching_report(g=None, file=None):
    """Print (and return) which signatures ran, in how many batches of what mean size, and which nodes ran
    unbatched and why."""
    g = g or _graph.current()
    stats = graph_stats(g)
    lines = [f"graph: {stats['nodes']} nodes, {stats['forward_batches']} forward batches, "
             f"{stats['backward_batches']} backward batches, strategy {g.strategy}",
             f"{'signature':60s} {'batches':>8s} {'nodes':>7s} {'mean':>7s}"]
    for name, s in sorted(stats["by_signature"].items(), key=lambda kv: -kv[1]["nodes"]):
        lines.append(f"{name[:60]:60s} {s['batches']:8d} {s['nodes']:7d} {s['mean_size']:7.1f}")
    alone = Counter()
    for b in g.batches:
        if len(b.nodes) == 1:
            alone[(b.sig.prim.name, _why_alone(g, b))] += 1
    if alone:
        lines.append("ran unbatched:")
        for (op, why), k in alone.most_common():
            lines.append(f"  {k:5d} x {op}: {why}")
    text = "\n".join(lines)
    print(text, file=file)
    return text


def to_networkx(g=None):
    """The graph as a ``networkx.DiGraph``: node attributes op, shape, depth, batch (-1 if not executed)."""
    import networkx as nx

    g = g or _graph.current()
    G = nx.DiGraph()
    for n, sig in enumerate(g.n_sig):
        G.add_node(n, op=sig.prim.name, shape=sig.shape, depth=g.n_depth[n], batch=g.batch_of(n))
        G.add_edges_from((a, n) for a in g.n_args[n])
    return G


def draw_batches(path, g=None):
    """Write a PNG of the graph laid out by depth, each node coloured by the batch it ran in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    G = to_networkx(g)
    layer = Counter()
    pos = {}
    for n, d in G.nodes(data=True):
        pos[n] = (layer[d["depth"]], -d["depth"])
        layer[d["depth"]] += 1
    colors = [d["batch"] for _, d in G.nodes(data=True)]
    width = max(6, min(40, max(layer.values(), default=1) * 0.25))
    fig, ax = plt.subplots(figsize=(width, max(4, min(40, len(layer) * 0.3))))
    nx.draw_networkx(G, pos, ax=ax, node_color=colors, cmap="tab20", node_size=30, with_labels=False,
                     arrows=False, width=0.3, edge_color="#999999")
    ax.set_title(f"{G.number_of_nodes()} nodes, {len(set(colors))} batches (colour = batch)")
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
