"""Attention over sequences (issue 11): ``dot_rows``, ``softmax_rows`` and ``weighted_sum_rows`` are one node
each, batched across sentences of any lengths in one kernel call, equal to PyTorch autograd; the attention
example's forward batches do not grow with the number of distinct source lengths, it learns, and its batched
loss and gradients equal the node-by-node ones."""
import json

import numpy as np
import pytest
import torch

import autobatch as ab
from autobatch.examples import attention
from autobatch.train import normalize_loss


@pytest.fixture(autouse=True)
def float32_default():
    yield
    ab.ParameterCollection(dtype=np.float32)  # the example makes its own collections; restore the default


def _attend(H, q):
    return ab.weighted_sum_rows(H, ab.softmax_rows(ab.dot_rows(H, q)))


@pytest.mark.parametrize("shared_query", [False, True])
def test_attention_ops_match_torch_on_ragged_batches(pc64, shared_query):
    rng = np.random.default_rng(0)
    lengths = [1, 4, 2, 5, 3]
    Hs = [rng.normal(size=(T, 3)) for T in lengths]
    qs = [rng.normal(size=3) for _ in lengths]
    Q = pc64.add_parameters((3,), init=qs[0])
    tables = [pc64.add_parameters((T, 3), init=H) for T, H in zip(lengths, Hs)]
    w = rng.normal(size=3)
    ab.renew_cg(strategy="agenda")
    outs = [_attend(ab.sequence([ab.parameter(P)[t] for t in range(T)]), Q if shared_query else ab.input_tensor(q))
            for T, P, q in zip(lengths, tables, qs)]
    loss = ab.esum([ab.dot(o, ab.input_tensor(w)) for o in outs])
    loss.backward()
    ran = {name: v["batches"] for name, v in ab.graph_stats()["by_signature"].items()}
    for op in ("dot_rows", "softmax_rows", "weighted_sum_rows"):  # every length in one kernel call
        assert [n for k, n in ran.items() if k.startswith(op)] == [1], ran

    tH = [torch.tensor(H, requires_grad=True) for H in Hs]
    tq = torch.tensor(qs[0], requires_grad=True)
    total = 0
    for H, q, o in zip(tH, qs, outs):
        a = torch.softmax(H @ (tq if shared_query else torch.tensor(q)), dim=0)
        c = a @ H
        np.testing.assert_allclose(o.value(), c.detach().numpy(), rtol=1e-12, atol=1e-12)
        total = total + c @ torch.tensor(w)
    total.backward()
    for P, H in zip(tables, tH):
        np.testing.assert_allclose(P.grad, H.grad.numpy(), rtol=1e-10, atol=1e-12)
    if shared_query:
        np.testing.assert_allclose(Q.grad, tq.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_rows_of_vector_rows_is_per_element_over_time(pc64):
    X = np.random.default_rng(1).normal(size=(4, 2)) * 30  # large: the per-example shift must keep it finite
    ab.renew_cg()
    s = ab.softmax_rows(ab.sequence([ab.input_tensor(r) for r in X]))
    e = np.exp(X - X.max(0))
    np.testing.assert_allclose(s.value(), e / e.sum(0), rtol=1e-12)
    assert s.is_sequence and s.shape == (4, 2)


def test_attention_errors_name_the_users_line(pc64):
    ab.renew_cg()
    H = ab.sequence([ab.input_tensor(np.ones(3))] * 4)
    w3 = ab.sequence([ab.input_tensor(1.0)] * 3)
    cases = [(lambda: ab.dot_rows(ab.input_tensor(np.ones((4, 3))), ab.input_tensor(np.ones(3))), "needs a sequence"),
             (lambda: ab.dot_rows(H, ab.input_tensor(np.ones(2))), "query of shape (d,)"),
             (lambda: ab.dot_rows(H, H), "one vector per example"),
             (lambda: ab.softmax_rows(ab.input_tensor(np.ones(3))), "needs a sequence"),
             (lambda: ab.weighted_sum_rows(H, w3), "3 weights for a sequence of 4 rows"),
             (lambda: ab.weighted_sum_rows(H, H), "sequence of scalars")]
    for build, message in cases:
        with pytest.raises(ValueError, match=r"\(at .*test_attention\.py") as e:
            build()
        assert message in str(e.value)


def _ragged_and_equal(n=32):
    return (attention.synthetic(n, vocab=10, min_len=3, max_len=8, seed=1),
            attention.synthetic(n, vocab=10, min_len=8, max_len=8, seed=1))


@pytest.mark.parametrize("strategy", ["agenda", "depth"])
def test_forward_batches_do_not_grow_with_distinct_source_lengths(strategy):
    model = attention.Seq2Seq(10, embed=8, hidden=8)
    ragged, equal = _ragged_and_equal()
    assert len({len(s) for s, _ in ragged}) == 6 and len({len(s) for s, _ in equal}) == 1
    n_ragged = attention.forward_batches(model, ragged, strategy)
    by_signature = ab.graph_stats()["by_signature"]
    n_equal = attention.forward_batches(model, equal, strategy)
    assert n_ragged <= n_equal
    for op in ("dot_rows", "softmax_rows", "weighted_sum_rows"):  # one batch per decoder step, all lengths in it
        assert sum(v["batches"] for k, v in by_signature.items() if k.startswith(op)) == 8


def test_attention_batched_equals_node_by_node():
    model = attention.Seq2Seq(7, embed=4, hidden=5, seed=3, dtype=np.float64)
    examples = attention.synthetic(6, vocab=7, min_len=1, max_len=6, seed=2)
    results = {}
    for strategy in ("off", "depth", "agenda"):
        ab.renew_cg(strategy=strategy)
        model.pc.zero_grad()
        loss = normalize_loss([model.loss(ex) for ex in examples])
        loss.backward()
        results[strategy] = (loss.value(), [p.grad.copy() for p in model.pc.parameters()])
    for strategy in ("depth", "agenda"):
        assert results[strategy][0] == pytest.approx(results["off"][0], rel=1e-12)
        for g, g_off in zip(results[strategy][1], results["off"][1]):
            np.testing.assert_allclose(g, g_off, rtol=1e-10, atol=1e-12)
    ab.renew_cg()
    decoded = ab.batch_map(model.translate, [s for s, _ in examples])  # lockstep == one at a time
    assert decoded == [model.translate_all([s])[0] for s, _ in examples]


def test_attention_example_learns(capsys):
    m = attention.main(["--max-train", "300", "--max-dev", "60", "--epochs", "3", "--batch-size", "16",
                        "--embed", "16", "--hidden", "32", "--lr", "0.01", "--seed", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == m
    assert m["train_loss"][-1] < 0.8 * m["train_loss"][0]
    assert m["dev_accuracy"] > 2.5 * m["chance_accuracy"]
    assert m["forward_batches_per_minibatch"] > 0 and m["task"] == "reverse"


def test_attention_example_rejects_bad_flags(capsys):
    for argv in (["--data", "x"], ["--min-len", "5", "--max-len", "4"], ["--vocab", "1"]):
        with pytest.raises(SystemExit) as e:
            attention.main(argv)
        assert e.value.code == 2
