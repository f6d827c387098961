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


def test_batching_report_names_signatures_and_unbatched_nodes(capsys):
    _workload()
    text = ab.batching_report()
    assert text == capsys.readouterr().out.rstrip("\n")
    assert "lookup -> (4,)" in text and "pick_neg_log_softmax -> ()" in text
    assert "ran unbatched:" in text and "parameter W1" in text


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
