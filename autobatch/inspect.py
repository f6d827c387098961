"""Looking inside a graph: counts and timings, a batching report, networkx export and a picture of the batches.
None of this runs on the hot path."""
import time
from collections import Counter

from autobatch.kernels import backend

from . import graph as _graph


def graph_stats(g=None):
    """Counts and timings of the current graph: nodes, forward/backward batches, seconds spent building,
    scheduling, executing and in backward, the batches broken down by signature, and the host/device traffic
    since the graph was made (``uploads``, ``downloads`` and their bytes, counted under every backend)."""
    g = g or _graph.current()
    t = dict(g.times)
    if g.has_pending():  # nodes built since the last execution: their building time is still running
        t["build_s"] += time.perf_counter() - g._mark
    per_sig = {}  # counted per signature object first: describing each of a graph's ~1,000 batches cost more
    for b in g.batches:  # than the rest of this function (benchmarks call it once per minibatch)
        c = per_sig.get(b.sig)
        if c is None:
            per_sig[b.sig] = [1, len(b.nodes)]
        else:
            c[0] += 1
            c[1] += len(b.nodes)
    by_sig = {}
    for sig, (batches, nodes) in per_sig.items():  # two signatures may read the same (attrs not shown)
        s = by_sig.setdefault(sig.describe(), {"batches": 0, "nodes": 0})
        s["batches"] += batches
        s["nodes"] += nodes
    for s in by_sig.values():
        s["mean_size"] = s["nodes"] / s["batches"]
    n = len(g)
    return dict(nodes=n, executed_nodes=sum(nodes for _, nodes in per_sig.values()), forward_batches=len(g.batches),
                backward_batches=g.backward_batches, signatures=len(g.signatures), strategy=g.strategy,
                us_per_node_build_schedule=1e6 * (t["build_s"] + t["schedule_s"]) / max(n, 1),
                by_signature=by_sig, **_transfers(g), **t)


def _transfers(g):
    now, then = backend.transfers, g.transfers_at
    return {k: now[k] - then[k] for k in now}


def _shared(sig):
    """What a node of ``sig`` is when it is one value shared by every use, so that batching it would make no
    sense: ``"parameter NAME"``, ``"constant"`` (computed from parameters only), else None."""
    if sig.param is not None:  # a weak reference: the model may be gone
        param = sig.param()
        return f"parameter {'(freed)' if param is None else param.name}"
    return None if sig.batchable else "constant"


def _why_alone(g, b):
    sig = b.sig
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
    alone, shared = Counter(), []
    for b in g.batches:
        what = _shared(b.sig)
        if what is not None:  # read or computed once for every use: nothing to batch, so not "unbatched"
            shared.extend([what] * len(b.nodes))
        elif len(b.nodes) == 1:
            alone[(b.sig.prim.name, _why_alone(g, b))] += 1
    if shared:
        params = [w[len("parameter "):] for w in shared if w.startswith("parameter ")]
        names = ", ".join(params[:8]) + (", ..." if len(params) > 8 else "")
        lines.append(f"shared, nothing to batch: {len(params)} parameter reads ({names}) and "
                     f"{len(shared) - len(params)} constants, each one value for every use")
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


def _op_colours(ops):
    """A distinct colour per op name (the legend's), from qualitative palettes: no colour stands for two ops
    unless there are more than 40 of them, and then evenly spaced hues."""
    from matplotlib import colormaps

    if len(ops) <= 10:
        palette = list(colormaps["tab10"].colors)
    elif len(ops) <= 40:
        palette = [c for name in ("tab20", "tab20b", "tab20c") for c in colormaps[name].colors]
    else:
        palette = [colormaps["hsv"](i / len(ops)) for i in range(len(ops))]
    return {op: palette[i] for i, op in enumerate(ops)}


def _lane_label(sig):
    """A lane's name: the signature, with the parameter's name for a parameter read."""
    what = _shared(sig)
    text = sig.describe()
    if what is not None and what.startswith("parameter "):
        text = f"{what} {text[len(sig.prim.name) + 1:]}"
    return text[:48]


def _count(k, noun):
    return f"{k} {noun}" if k == 1 else f"{k} {noun}{'es' if noun.endswith('h') else 's'}"


def draw_batches(path, g=None):
    """Write a PNG of how the graph ran: one lane per signature (labelled with its op and output shape), the
    forward batches left to right in the order they ran, each a bar coloured by its op (legend: op, batches,
    nodes) whose height grows with its number of nodes (written on it while there is room). The title counts
    the nodes that ran, the batches and the signatures, and the nodes not run yet, if any. Readable from a
    handful of nodes to tens of thousands; returns ``path``."""
    _batch_figure(g or _graph.current()).savefig(path, dpi=100, bbox_inches="tight")
    return path


def _batch_figure(g):
    """``draw_batches``' picture of graph ``g``, as a matplotlib Figure."""
    # The Agg canvas directly, not pyplot: no global figure state, no GUI backend
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    batches = g.batches
    lanes = {}  # signature -> lane, in order of first run (top to bottom)
    for b in batches:
        lanes.setdefault(b.sig, len(lanes))
    ops = list(dict.fromkeys(b.sig.prim.name for b in batches))
    colours = _op_colours(ops)
    biggest = max((len(b.nodes) for b in batches), default=1)
    fig = Figure(figsize=(min(30, max(8, 4 + 0.06 * len(batches))), min(40, max(3, 1.2 + 0.3 * len(lanes)))),
                 dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    label_sizes = len(batches) <= 80
    for i, b in enumerate(batches):
        k, lane = len(b.nodes), lanes[b.sig]
        height = 0.2 + 0.7 * k / biggest
        ax.bar(i, height, width=0.9, bottom=lane - height / 2, color=colours[b.sig.prim.name], linewidth=0)
        if label_sizes and k > 1:
            ax.text(i, lane, str(k), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([_lane_label(sig) for sig in lanes], fontsize=7 if len(lanes) <= 60 else 5)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlim(-0.5, max(len(batches), 1) - 0.5)
    ax.set_xlabel("forward batches in the order they ran (time →); bar height and number: nodes in the batch")
    nodes = {op: [0, 0] for op in ops}
    for b in batches:
        nodes[b.sig.prim.name][0] += 1
        nodes[b.sig.prim.name][1] += len(b.nodes)
    ax.legend(handles=[Patch(color=colours[op], label=f"{op}: {_count(nb, 'batch')}, {_count(nn, 'node')}")
                       for op, (nb, nn) in nodes.items()], loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7,
              title="op", title_fontsize=8, frameon=False)
    executed = sum(len(b.nodes) for b in batches)
    pending = len(g) - executed
    ax.set_title(f"{executed} nodes ran in {len(batches)} forward batches of {len(lanes)} signatures "
                 f"(strategy {g.strategy})" + (f"; {pending} nodes not run yet" if pending else ""), fontsize=9)
    ax.grid(axis="x", color="#eeeeee", lw=0.5)
    ax.set_axisbelow(True)
    return fig
