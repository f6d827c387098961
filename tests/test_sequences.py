"""Sequences: a sentence as ONE node of T rows, T differing between examples. Per-row ops batch over every row
of every sentence; results equal the same model written word by word; recurrences run as one scan node."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autobatch as ab

D, H, TAGS, VOCAB = 5, 4, 3, 30


@pytest.fixture
def pc():
    pc = ab.ParameterCollection(seed=2, dtype=np.float64)
    yield pc
    ab.ParameterCollection(dtype=np.float32)


def _tagger(pc, bidirectional=True, **lstm):
    E = pc.add_lookup_parameters((VOCAB, D), init="normal")
    f = ab.LSTM(pc, D, H, **lstm)
    birnn = ab.BiRNN(f, ab.LSTM(pc, D, H, **lstm)) if bidirectional else None
    W, b = pc.add_parameters((TAGS, 2 * H if bidirectional else H)), pc.add_parameters((TAGS,), init="normal")

    def loss(words, tags, as_sequence):
        if as_sequence:
            X = E[words]
            Hs = birnn.transduce(X) if birnn else f.transduce(X)
            return ab.sum_elems(ab.pick_neg_log_softmax(ab.affine(b, W, ab.tanh(Hs)), tags))
        xs = [E[w] for w in words]
        hs = birnn.transduce(xs) if birnn else f.transduce(xs)
        return ab.esum([ab.pick_neg_log_softmax(ab.affine(b, W, ab.tanh(h)), t) for h, t in zip(hs, tags)])

    return loss


def _run(pc, loss_fn, sentences, as_sequence, strategy="agenda"):
    pc.zero_grad()
    ab.renew_cg(strategy=strategy)
    loss = ab.esum([loss_fn(w, t, as_sequence) for w, t in sentences])
    value = loss.value()
    loss.backward()
    return value, [p.grad for p in pc.parameters()], ab.graph_stats()


sentence = st.integers(1, 8).flatmap(lambda n: st.tuples(st.lists(st.integers(0, VOCAB - 1), min_size=n, max_size=n),
                                                        st.lists(st.integers(0, TAGS - 1), min_size=n, max_size=n)))


@settings(max_examples=25, deadline=None)
@given(sentences=st.lists(sentence, min_size=1, max_size=6), layers=st.integers(1, 2), learned=st.booleans())
def test_sequence_model_equals_word_by_word_model(sentences, layers, learned):
    pc = ab.ParameterCollection(seed=5, dtype=np.float64)
    loss_fn = _tagger(pc, num_layers=layers, learned_init=learned)
    ref_value, ref_grads, ref_stats = _run(pc, loss_fn, sentences, False)
    for strategy in ("off", "agenda"):
        value, grads, stats = _run(pc, loss_fn, sentences, True, strategy)
        assert np.isclose(value, ref_value, rtol=1e-10)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)
    assert stats["nodes"] < ref_stats["nodes"]
    ab.ParameterCollection(dtype=np.float32)


def test_a_sentence_is_a_few_nodes_and_the_batch_a_few_kernels(pc):
    loss_fn = _tagger(pc)
    rng = np.random.default_rng(0)
    sentences = [(list(rng.integers(0, VOCAB, n)), list(rng.integers(0, TAGS, n))) for n in rng.integers(1, 40, 64)]
    _, _, stats = _run(pc, loss_fn, sentences, True)
    params = len(pc.parameters()) + 5  # + the two directions' stacked weights (3) and zero states (2)
    per_sentence = 7  # lookup; affine and scan for both directions at once; tanh, affine, loss, sum
    assert stats["nodes"] <= params + 64 * per_sentence + 1
    assert stats["forward_batches"] <= params + per_sentence + 2  # independent of lengths and of 64
    scans = [v for k, v in stats["by_signature"].items() if k.startswith("lstm_scan")]
    assert sum(s["batches"] for s in scans) == 1 and sum(s["nodes"] for s in scans) == 64


def test_lstm_sequence_equals_torch_packed(pc):
    torch = pytest.importorskip("torch")
    f, bwd = ab.LSTM(pc, D, H), ab.LSTM(pc, D, H)
    E = pc.add_lookup_parameters((VOCAB, D), init="normal")
    sents = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]]
    ab.renew_cg()
    outs = [ab.BiRNN(f, bwd).transduce(E[s]) for s in sents]
    total = ab.esum([ab.sum_elems(ab.square(o)) for o in outs])
    ours = [o.value() for o in outs]
    total.backward()
    ref = torch.nn.LSTM(D, H, bidirectional=True).double()
    with torch.no_grad():
        for suffix, block in (("", f), ("_reverse", bwd)):
            layer = block.layers[0]
            getattr(ref, "weight_ih_l0" + suffix).copy_(torch.tensor(layer.Wx.value()))
            getattr(ref, "weight_hh_l0" + suffix).copy_(torch.tensor(layer.Wh.value()))
            getattr(ref, "bias_ih_l0" + suffix).copy_(torch.tensor(layer.bx.value()))
            getattr(ref, "bias_hh_l0" + suffix).zero_()
    Et = torch.tensor(E.value(), requires_grad=True)
    packed = torch.nn.utils.rnn.pack_sequence([Et[s] for s in sents], enforce_sorted=False)
    out, _ = ref(packed)
    padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
    for k, n in enumerate(lengths.tolist()):
        np.testing.assert_allclose(ours[k], padded[k, :n].detach().numpy(), rtol=1e-12, atol=1e-14)
    (padded ** 2).sum().backward()
    np.testing.assert_allclose(E.grad, Et.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(f.layers[0].Wh.grad, ref.weight_hh_l0.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(bwd.layers[0].Wx.grad, ref.weight_ih_l0_reverse.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_regularised_blocks_fall_back_to_steps_and_match():
    sentences = [([1, 2, 3], [0, 1, 2]), ([4, 5], [1, 1])]
    runs = []
    for as_sequence in (True, False):  # two identical models from one seed: the same masks, drawn in order
        pc = ab.ParameterCollection(seed=9, dtype=np.float64)
        loss_fn = _tagger(pc, dropout=0.3, variational=True)
        runs.append(_run(pc, loss_fn, sentences, as_sequence))
    assert np.isclose(runs[0][0], runs[1][0], rtol=1e-12)
    for g, r in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13)
    ab.eval_mode()
    try:
        _, _, stats = _run(pc, loss_fn, sentences, True)  # no regulariser in eval: back to scans
        assert any(k.startswith("lstm_scan") for k in stats["by_signature"])
    finally:
        ab.train_mode()


def test_rows_and_sequence_round_trip(pc):
    E = pc.add_lookup_parameters((VOCAB, D), init="normal")
    ab.renew_cg()
    X = E[[3, 1, 4]]
    assert X.is_sequence and X.shape == (3, D)
    rows = ab.rows(X)
    assert [r.shape for r in rows] == [(D,)] * 3 and not rows[0].is_sequence
    np.testing.assert_array_equal(ab.sequence(rows).value(), E.value()[[3, 1, 4]])
    np.testing.assert_array_equal(rows[1].value(), E.value()[1])


def test_sequence_errors(pc):
    E = pc.add_lookup_parameters((VOCAB, D))
    W = pc.add_parameters((H, D))
    ab.renew_cg()
    with pytest.raises(IndexError, match=r"lookup E0: index 30 out of range .*test_sequences.py"):
        E[[1, 30]]
    with pytest.raises(ValueError, match="non-empty 1-d list"):
        E[[]]
    with pytest.raises(TypeError, match="indices must be ints"):
        E[[1.5, 2.0]]
    X, Y = E[[1, 2, 3]], E[[1, 2]]
    with pytest.raises(ValueError, match=r"add: sequences of different lengths \[2, 3\]"):
        X + Y
    with pytest.raises(ValueError, match="mixes sequences .* with a single value per example"):
        X + E[4]
    with pytest.raises(ValueError, match="transpose: does not take sequences"):
        ab.transpose(X)
    with pytest.raises(ValueError, match="3 targets for a sequence of 2 rows"):
        ab.pick_neg_log_softmax(W @ Y, [0, 1, 2])
    with pytest.raises(ValueError, match="rows: needs a sequence"):
        ab.rows(E[1])
    with pytest.raises(ValueError, match="sequence: rows must be single values of one shape"):
        ab.sequence([E[1], ab.zeros(2)])
    with pytest.raises(ValueError, match="lstm_scan: input 1 must be a parameter"):
        from autobatch import registry as R

        g = ab.current_graph()
        g.add(R.LSTM_SCAN, ((W @ ab.zeros(D)).i, E[[1, 2]].i), (("reverse", False),))
