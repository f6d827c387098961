"""graph_stats, batching_report, networkx export and the batch picture, on a small ragged workload."""
import numpy as np

import autobatch as ab


def _workload():
    pc = ab.ParameterCollection(seed=0)
    E, W, V = pc.add_lookup_parameters((20, 4)), pc.add_parameters((4, 8)), pc.add_parameters((3, 4))
    ab.renew_cg()
    losses = []
    for n in (2, 5, 3):
        h = ab.zeros(4)
        for t in range(n):
            h = ab.tanh(W @ ab.concat([E[t], h]))
            losses.append(ab.pick_neg_log_softmax(V @ h, t % 3))
    loss = ab.esum(losses)
    loss.value()
    loss.backward()
    return loss


def test_graph_stats_counts_and_timings():
    _workload()
    s = ab.graph_stats()
    for key in ("nodes", "forward_batches", "backward_batches", "build_s", "schedule_s", "execute_s", "by_signature"):
        assert key in s
    assert s["nodes"] == s["executed_nodes"] == 3 + 3 + 10 * 6 + 1  # params, zeros, 6 per step, esum
    assert sum(v["nodes"] for v in s["by_signature"].values()) == s["nodes"]
    assert sum(v["batches"] for v in s["by_signature"].values()) == s["forward_batches"]
    assert 0 < s["backward_batches"] <= s["forward_batches"]
    assert min(s["build_s"], s["schedule_s"], s["execute_s"], s["backward_s"]) > 0


def test_has_pending_after_builds_partial_passes_and_invalidation():
    """Nodes built since the last pass, and nodes an earlier pass did not need, are pending; a pass over them
    all leaves none; invalidating makes every node pending again."""
    pc = ab.ParameterCollection(seed=0)
    E = pc.add_lookup_parameters((5, 3))
    ab.renew_cg()
    g = ab.graph.current()
    a, b = ab.tanh(E[0]), ab.logistic(E[1])
    assert g.has_pending()
    a.value()  # b's branch not needed: built before a's nodes' end, still pending
    assert g.has_pending()
    b.value()
    assert not g.has_pending()
    c = ab.cmult(a, b)
    assert g.has_pending()
    c.value()
    assert not g.has_pending()
    g.invalidate()
    assert g.has_pending()
    c.value()
    assert not g.has_pending()


def test_batching_report_names_signatures_and_unbatched_nodes(capsys):
    _workload()
    text = ab.batching_report()
    assert text == capsys.readouterr().out.rstrip("\n")
    assert "lookup -> (4,)" in text and "pick_neg_log_softmax -> ()" in text
    # parameters are read once for every use: listed as shared, never as "ran unbatched"
    assert "shared, nothing to batch: 3 parameter reads (E0, W1, W2) and 0 constants" in text
    unbatched = text[text.index("ran unbatched:"):]
    assert "parameter" not in unbatched and "esum: the only node of its signature" in unbatched


def test_to_networkx_and_draw(tmp_path):
    _workload()
    G = ab.to_networkx()
    assert G.number_of_nodes() == ab.graph_stats()["nodes"]
    ops = {d["op"] for _, d in G.nodes(data=True)}
    assert {"lookup", "concat", "matmul", "tanh", "pick_neg_log_softmax", "esum", "param"} <= ops
    assert all(d["batch"] >= 0 and isinstance(d["depth"], int) for _, d in G.nodes(data=True))
    import networkx as nx

    assert nx.is_directed_acyclic_graph(G)
    path = ab.draw_batches(tmp_path / "batches.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    ab.ParameterCollection(dtype=np.float32)


def test_the_batch_picture_has_a_lane_per_signature_a_legend_and_a_true_title(tmp_path):
    from autobatch import graph, inspect

    pc = ab.ParameterCollection(seed=0)
    E, W, V = pc.add_lookup_parameters((50, 8)), pc.add_parameters((8, 16)), pc.add_parameters((5, 8))
    ab.renew_cg()
    rng = np.random.default_rng(0)
    losses = []
    for n in rng.integers(3, 12, 20):  # ~900 nodes
        h = ab.zeros(8)
        for t in range(n):
            h = ab.tanh(W @ ab.concat([E[int(rng.integers(50))], h]))
            losses.append(ab.pick_neg_log_softmax(V @ h, t % 5))
    ab.esum(losses).value()
    ab.tanh(W @ ab.concat([E[1], E[2]]))  # 5 nodes built after the run: not executed, in no batch
    s = ab.graph_stats()
    assert s["nodes"] >= 800 and s["nodes"] - s["executed_nodes"] == 5
    ax = inspect._batch_figure(graph.current()).axes[0]
    assert ax.get_title() == (f"{s['executed_nodes']} nodes ran in {s['forward_batches']} forward batches of "
                              f"{len(s['by_signature'])} signatures (strategy agenda); 5 nodes not run yet")
    lanes = [t.get_text() for t in ax.get_yticklabels()]
    assert len(lanes) == len(s["by_signature"]) and "parameter W1 -> (8, 16)" in lanes
    assert "tanh -> (8,)" in lanes and "pick_neg_log_softmax -> ()" in lanes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "tanh: 11 batches, 146 nodes" in legend and "esum: 1 batch, 1 node" in legend
    assert len(ax.patches) == s["forward_batches"]  # one bar per batch
    colours = {p.get_facecolor() for p in ax.patches}
    assert len(colours) == len(legend)  # one colour per op, none shared
    assert [round(p.get_x() + p.get_width() / 2) for p in ax.patches] == list(range(s["forward_batches"]))
    path = ab.draw_batches(tmp_path / "big.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    ab.ParameterCollection(dtype=np.float32)


def test_op_colours_do_not_repeat():
    from autobatch.inspect import _op_colours

    for n in (3, 10, 11, 40, 55):
        assert len(set(_op_colours([f"op{i}" for i in range(n)]).values())) == n
