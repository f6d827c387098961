"""Batched execution equals node-by-node execution: random ragged workloads (chains, trees, shared and
unshared parameters, mid-graph value() calls) give the same values and gradients under every strategy."""
import numpy as np
from hypothesis import given, settings, strategies as st

import autobatch as ab

STRATEGIES = ("off", "depth", "agenda")
H, VOCAB, TAGS = 4, 7, 3


def _model(seed):
    pc = ab.ParameterCollection(seed=seed, dtype=np.float64)
    m = dict(pc=pc, E=pc.add_lookup_parameters((VOCAB, H)), W=pc.add_parameters((H, 2 * H)),
             W2=pc.add_parameters((H, 2 * H)), b=pc.add_parameters((H,), init="normal"),
             V=pc.add_parameters((TAGS, H)), h0=pc.add_parameters((H,), init="normal"))
    return m


def _chain(m, words, tags, which, probes, probe_at):
    W = m["W"] if which == 0 else m["W2"]
    h = ab.zeros(H) if which == 0 else m["h0"] * 1.0
    losses = []
    for t, (w, y) in enumerate(zip(words, tags)):
        h = ab.tanh(W @ ab.concat([m["E"][w], h]) + m["b"])
        if t % 2:  # a gate: a second use of h in the same step
            h = h * ab.logistic(h)
        losses.append(ab.pick_neg_log_softmax(m["V"] @ h, y))
        if (t, which) == probe_at:
            probes.append(h.value())  # a mid-graph read: only what h needs runs now
    return losses


def _tree(m, tree, probes):
    """tree: a word id (leaf) or a pair of subtrees; returns (h, losses)."""
    if isinstance(tree, int):
        h = ab.tanh(m["E"][tree])
        return h, [ab.pick_neg_log_softmax(m["V"] @ h, tree % TAGS)]
    (hl, ll), (hr, lr) = _tree(m, tree[0], probes), _tree(m, tree[1], probes)
    h = ab.tanh(ab.affine(m["b"], m["W"], ab.concat([hl, hr])))
    return h, ll + lr + [ab.pick_neg_log_softmax(m["V"] @ h, (len(ll) + len(lr)) % TAGS)]


def _run(strategy, sentences, trees, probe_at, seed):
    m = _model(seed)
    ab.renew_cg(strategy=strategy)
    probes, losses = [], []
    for i, (words, tags) in enumerate(sentences):
        losses += _chain(m, words, tags, i % 2, probes, probe_at if i < 2 else None)
    for tree in trees:
        losses += _tree(m, tree, probes)[1]
    loss = ab.esum(losses) / max(len(sentences) + len(trees), 1)
    value = loss.value()
    loss.backward()
    grads = {k: p.grad for k, p in m.items() if k != "pc"}
    return value, probes, grads, ab.graph_stats()


sentence = st.integers(1, 9).flatmap(lambda n: st.tuples(st.lists(st.integers(0, VOCAB - 1), min_size=n, max_size=n),
                                                        st.lists(st.integers(0, TAGS - 1), min_size=n, max_size=n)))
tree = st.recursive(st.integers(0, VOCAB - 1), lambda sub: st.tuples(sub, sub), max_leaves=8)


@settings(max_examples=40, deadline=None)
@given(sentences=st.lists(sentence, min_size=1, max_size=6), trees=st.lists(tree, max_size=4),
       probe_at=st.none() | st.tuples(st.integers(0, 8), st.integers(0, 1)), seed=st.integers(0, 3))
def test_strategies_agree(sentences, trees, probe_at, seed):
    results = {s: _run(s, sentences, trees, probe_at, seed) for s in STRATEGIES}
    ref_value, ref_probes, ref_grads, ref_stats = results["off"]
    for s in ("depth", "agenda"):
        value, probes, grads, stats = results[s]
        assert np.isclose(value, ref_value, rtol=1e-9, atol=0)
        assert len(probes) == len(ref_probes)
        for p, q in zip(probes, ref_probes):
            np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
        for k in ref_grads:
            np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-9, atol=1e-12)
        assert stats["forward_batches"] <= ref_stats["forward_batches"]
    ab.ParameterCollection(dtype=np.float32)


def test_nodes_built_after_a_value_call_still_batch():
    m = _model(0)
    ab.renew_cg()
    first = [ab.tanh(m["W"] @ ab.concat([m["E"][i], ab.zeros(H)])) for i in range(5)]
    first[0].value()  # runs only node 0's ancestors
    ran = ab.graph_stats()["executed_nodes"]
    second = [ab.tanh(m["W"] @ ab.concat([m["E"][i], ab.zeros(H)])) for i in range(5)]
    total = ab.esum([ab.sum_elems(h) for h in first[1:] + second])
    total.value()
    stats = ab.graph_stats()
    tanh = [v for k, v in stats["by_signature"].items() if k.startswith("tanh")][0]
    assert tanh["batches"] == 2 and tanh["nodes"] == 10  # 1 alone, then the 4 left of the first with all 5 new
    assert ran < 10
    ab.ParameterCollection(dtype=np.float32)
