"""The dropout family: observed rates match p, masks are per example and reproducible from the seed, variational
masks repeat across time steps, recurrent dropout touches only the candidate, zoneout keeps units at rate p and
uses its expectation in eval mode, eval mode is deterministic, gradients flow only through kept units; and a
BiLSTM with every option on still runs in batches bounded by its length, equal to node-by-node execution."""
import numpy as np
import pytest

import autobatch as ab
import cell_references as ref
from autobatch import registry as R
from autobatch import rnn

ALL_OPTIONS = dict(num_layers=2, combine="sum", layer_norm=True, learned_init=True, dropout=0.3, variational=True,
                   recurrent_dropout=0.2, zoneout=0.1, dropconnect=0.25)


@pytest.fixture(autouse=True)
def restore():
    yield
    ab.train_mode()
    ab.ParameterCollection(dtype=np.float32)


def _ones_table(pc, rows, dim):
    return pc.add_lookup_parameters((rows, dim), init="ones")


def _nodes_of(g, prim, lo=0):
    return [n for n in range(lo, len(g)) if g.n_sig[n].prim is prim]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_drop_rate_matches_p_and_kept_units_are_scaled(p):
    pc = ab.ParameterCollection(seed=11, dtype=np.float64)
    X = _ones_table(pc, 64, 500)
    ab.renew_cg()
    out = np.stack([ab.dropout(X[i], p).value() for i in range(64)])
    rate = np.mean(out == 0)
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / out.size)  # a binomial proportion, 4 standard errors
    np.testing.assert_allclose(out[out != 0], 1 / (1 - p))
    per_example = (out == 0).mean(axis=1)
    assert per_example.std() > 0  # a mask per example, not one shared by the batch


def test_masks_come_from_the_collections_seed():
    def masks(seed):
        pc = ab.ParameterCollection(seed=seed)
        X = _ones_table(pc, 4, 50)
        ab.renew_cg()
        return np.stack([ab.dropout(X[i], 0.5).value() for i in range(4)])

    a, b, c = masks(1), masks(1), masks(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({row.tobytes() for row in a}) == 4


def test_eval_mode_switches_dropout_off_without_a_node():
    pc = ab.ParameterCollection(seed=0)
    X = _ones_table(pc, 2, 5)
    ab.renew_cg()
    x = X[0]
    assert ab.training()
    ab.eval_mode()
    assert not ab.training()
    assert ab.dropout(x, 0.5).i == x.i
    ab.train_mode()
    assert ab.training() and ab.dropout(x, 0.5).i != x.i


def test_dropout_gradient_flows_only_through_kept_units():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    X = pc.add_lookup_parameters((3, 40), init="normal")
    ab.renew_cg()
    ys = [ab.dropout(X[i], 0.4) for i in range(3)]
    ab.esum([ab.sum_elems(y) for y in ys]).backward()
    masks = np.stack([y.value() for y in ys]) / X.value()
    np.testing.assert_allclose(X.grad, masks)
    assert (X.grad == 0).any() and (X.grad != 0).any()


def _lstm_masks(lstm, pc, lengths, dim):
    """Per sentence: the masks its x-dropout nodes applied (inputs are ones, so the output is the mask) and
    those its h-dropout nodes applied (output / input)."""
    E = _ones_table(pc, 1, dim)
    ab.renew_cg()
    g = ab.current_graph()
    per_sentence = []
    for n in lengths:
        lo = len(g)
        lstm.transduce([E[0] for _ in range(n)])
        xs, hs = [], []
        for d in _nodes_of(g, R.DROPOUT, lo):
            src = g.n_args[d][0]
            if g.n_sig[src].prim is R.LOOKUP:
                xs.append(ab.Expression(g, d).value())
            elif len(g.n_sig[src].shape) == 1:  # h (a DropConnect mask is on a weight matrix)
                h = ab.Expression(g, src).value()
                hs.append(np.where(h != 0, ab.Expression(g, d).value() / np.where(h != 0, h, 1), np.nan))
        per_sentence.append((xs, hs))
    return per_sentence


def test_variational_masks_repeat_across_steps_and_differ_across_examples():
    pc = ab.ParameterCollection(seed=4, dtype=np.float64)
    lstm = ab.LSTM(pc, 30, 30, dropout=0.5, variational=True, learned_init=True)
    for layer in lstm.layers:
        layer.h0.set_value(np.linspace(0.5, 1.5, 30))  # a non-zero first h, so its mask shows
    sentences = _lstm_masks(lstm, pc, [6, 4, 5], 30)
    firsts = []
    for (xs, hs), n in zip(sentences, [6, 4, 5]):
        assert len(xs) == len(hs) == n
        for m in xs[1:]:
            np.testing.assert_array_equal(m, xs[0])
        for m in hs[1:]:
            np.testing.assert_allclose(m, hs[0], rtol=1e-9, equal_nan=True)
        assert set(np.unique(xs[0])) == {0.0, 2.0}
        firsts.append((xs[0], hs[0]))
    assert not np.array_equal(firsts[0][0], firsts[1][0]) and not np.array_equal(firsts[1][0], firsts[2][0])
    assert not np.allclose(firsts[0][1], firsts[1][1], equal_nan=True)


def test_plain_dropout_draws_a_new_mask_each_step_on_the_input_only():
    pc = ab.ParameterCollection(seed=4, dtype=np.float64)
    (xs, hs), = _lstm_masks(ab.LSTM(pc, 30, 30, dropout=0.5), pc, [5], 30)
    assert len(xs) == 5 and not hs
    assert len({m.tobytes() for m in xs}) == 5


def test_recurrent_dropout_touches_only_the_candidate():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    H, p = 50, 0.4
    G = pc.add_lookup_parameters((1, 4 * H), init="normal")
    C = pc.add_lookup_parameters((1, H), init="normal")
    u = np.random.default_rng(3).random(H)
    grads = {}
    for rd in (0.0, p):
        pc.zero_grad()
        ab.renew_cg()
        c = rnn.lstm_cell(G[0], C[0], recurrent_dropout=rd, noise=u if rd else None)
        ab.sum_elems(c).backward()
        grads[rd] = G.grad[0], C.grad[0], c.value()
    gates, c_prev = G.value()[0], C.value()[0]
    np.testing.assert_allclose(grads[p][2], ref.lstm_cell(gates, c_prev, p, 0.0, u))
    drop = ref.keep(u, p)
    (g0, c0, _), (g1, c1, _) = grads[0.0], grads[p]
    np.testing.assert_array_equal(g1[H:2 * H], g0[H:2 * H])  # forget gate: untouched
    np.testing.assert_array_equal(c1, c0)  # c_prev's path: untouched
    np.testing.assert_allclose(g1[2 * H:3 * H], g0[2 * H:3 * H] * drop)  # the candidate: masked
    np.testing.assert_allclose(g1[:H], g0[:H] * drop)  # the input gate only scales the (masked) candidate
    assert (g1[2 * H:3 * H][drop == 0] == 0).all() and (drop == 0).any()


def _zoneout_run(lstm, E, train=True):
    """The states of the sequence E[0], E[1], ... in one graph (built in eval mode unless ``train``)."""
    if not train:
        ab.eval_mode()
    ab.renew_cg()
    states = [lstm.initial_state()]
    for i in range(len(E)):
        states.append(states[-1].add_input(E[i]))
    ab.train_mode()
    return states[1:]


def test_zoneout_keeps_previous_units_at_rate_p_and_uses_the_expectation_in_eval():
    pc = ab.ParameterCollection(seed=2, dtype=np.float64)
    p = 0.3
    lstm = ab.LSTM(pc, 8, 200, zoneout=p)
    E = pc.add_lookup_parameters((12, 8), init="normal")
    steps = [(s.h.value(), s.c.value()) for s in _zoneout_run(lstm, E)]
    kept_h = np.mean([np.mean(a[0] == b[0]) for a, b in zip(steps, steps[1:])])
    kept_c = np.mean([np.mean(a[1] == b[1]) for a, b in zip(steps, steps[1:])])
    se = np.sqrt(p * (1 - p) / (11 * 200))
    assert abs(kept_h - p) < 4 * se and abs(kept_c - p) < 4 * se
    # eval: c = p * c_prev + (1 - p) * c_new and h likewise, recomputed from each node's own inputs
    states = _zoneout_run(lstm, E, train=False)
    g = ab.current_graph()
    value = lambda n: ab.Expression(g, n).value()  # noqa: E731
    for s in states:
        gates, c, h_prev = g.n_args[s.h.i]
        np.testing.assert_allclose(s.h.value(), ref.lstm_hidden(value(gates), value(c), value(h_prev), p, train=False))
        gates, c_prev = g.n_args[s.c.i]
        np.testing.assert_allclose(s.c.value(), ref.lstm_cell(value(gates), value(c_prev), 0.0, p, train=False))
    first = np.stack([s.h.value() for s in states])
    np.testing.assert_array_equal(np.stack([s.h.value() for s in _zoneout_run(lstm, E, train=False)]), first)


def test_zoneout_gradient_skips_the_new_value_of_kept_units():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    H, p = 40, 0.5
    G = pc.add_lookup_parameters((1, 4 * H), init="normal")
    C = pc.add_lookup_parameters((2, H), init="normal")
    u = np.random.default_rng(8).random(H)
    ab.renew_cg()
    h = rnn.lstm_hidden(G[0], C[0], C[1], zoneout=p, noise=u)
    ab.sum_elems(h).backward()
    kept = u < p
    np.testing.assert_array_equal(h.value()[kept], C.value()[1][kept])
    assert (G.grad[0][3 * H:][kept] == 0).all() and (G.grad[0][3 * H:][~kept] != 0).all()
    np.testing.assert_array_equal(C.grad[1], kept.astype(float))
    assert (C.grad[0][kept] == 0).all()


def test_dropconnect_masks_weights_per_example_and_blocks_their_gradient():
    pc = ab.ParameterCollection(seed=6, dtype=np.float64)
    lstm = ab.LSTM(pc, 10, 20, dropconnect=0.4)
    E = pc.add_lookup_parameters((5, 10), init="normal")
    ab.renew_cg()
    g = ab.current_graph()
    outs = [lstm.transduce([E[i] for i in range(k, k + 3)]) for k in (0, 2)]
    ab.esum([ab.sum_elems(o[-1]) for o in outs[:1]]).backward()
    W = lstm.layers[0].Wh
    masked = [n for n in _nodes_of(g, R.DROPOUT) if g.n_args[n][0] == g.param_node(W)]
    assert len(masked) == 2  # one per sequence, used at every step
    masks = [ab.Expression(g, n).value() / W.value() for n in masked]
    assert abs(np.mean(masks[0] == 0) - 0.4) < 0.05 and not np.array_equal(masks[0], masks[1])
    grad = W.grad
    assert (grad[masks[0] == 0] == 0).all() and (grad[masks[0] != 0] != 0).mean() > 0.9


def _bilstm(seed, options, D=5, H=4, vocab=50):
    pc = ab.ParameterCollection(seed=seed, dtype=np.float64)
    E = pc.add_lookup_parameters((vocab, D))
    bi = ab.BiRNN(ab.LSTM(pc, D, H, **options), ab.LSTM(pc, D, H, **options))
    V = pc.add_parameters((3, 2 * H))
    return pc, E, bi, V


def _tagging_loss(model, lengths, strategy="agenda", seed=1):
    pc, E, bi, V = model
    rng = np.random.default_rng(seed)
    ab.renew_cg(strategy=strategy)
    losses = []
    for n in lengths:
        ws = rng.integers(0, len(E), n)
        outs = bi.transduce([E[w] for w in ws])
        losses += [ab.pick_neg_log_softmax(V @ o, int(w) % 3) for o, w in zip(outs, ws)]
    return ab.esum(losses)


def test_eval_mode_is_deterministic_and_only_zoneout_remains():
    lengths = [3, 5, 1]
    ab.eval_mode()
    a = _tagging_loss(_bilstm(0, ALL_OPTIONS), lengths).value()
    b = _tagging_loss(_bilstm(0, ALL_OPTIONS), lengths).value()
    quiet = dict(ALL_OPTIONS, dropout=0.0, recurrent_dropout=0.0, dropconnect=0.0)
    c = _tagging_loss(_bilstm(0, quiet), lengths).value()
    ab.train_mode()
    d = _tagging_loss(_bilstm(0, ALL_OPTIONS), lengths).value()
    assert a == b == c and a != d


def test_bilstm_with_every_option_batches_by_length_and_equals_node_by_node():
    """64 ragged sentences: forward and backward batches stay within (max length x the recurrent nodes per
    step: 2 directions x 2 layers x {h dropout, W_h h, layer norm, cell, output}) plus a few, and the loss and
    every gradient equal those of strategy "off" with the same seed."""
    lengths = np.random.default_rng(0).integers(1, 13, 64)
    results = {}
    for strategy in ("agenda", "off"):
        model = _bilstm(3, ALL_OPTIONS)
        loss = _tagging_loss(model, lengths, strategy)
        value = loss.value()
        loss.backward()
        results[strategy] = value, {p.name: p.grad for p in model[0].parameters()}, ab.graph_stats()
    (v_a, g_a, s_a), (v_o, g_o, s_o) = results["agenda"], results["off"]
    bound = lengths.max() * (2 * 2 * 5) + 12
    assert s_a["forward_batches"] <= bound and s_a["backward_batches"] <= bound
    assert s_a["nodes"] > 50 * bound
    assert v_a == pytest.approx(v_o, rel=1e-12)
    for name in g_o:
        np.testing.assert_allclose(g_a[name], g_o[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert any(np.abs(g).sum() > 0 for g in g_a.values())


def test_dropout_errors_name_the_op_and_the_line():
    pc = ab.ParameterCollection(seed=0)
    X = _ones_table(pc, 2, 4)
    ab.renew_cg()
    with pytest.raises(ValueError, match=r"dropout: p must lie in \[0, 1\), got 1.0 \(at .*test_dropout.py:\d+\)"):
        ab.dropout(X[0], 1.0)
    with pytest.raises(ValueError, match=r"dropout: noise has 3 values, needs 4 \(at .*test_dropout.py"):
        ab.dropout(X[0], 0.5, noise=np.zeros(3))
    with pytest.raises(ValueError, match="zoneout needs h_prev"):
        rnn.lstm_hidden(ab.zeros(16), X[0], zoneout=0.2)
    ab.renew_cg()
    assert ab.dropout(ab.zeros(4), 0.5).shape == (4,)  # no parameter read yet: the latest collection's stream
    from autobatch import graph

    latest, graph.latest_collection[0] = graph.latest_collection[0], None
    try:
        with pytest.raises(ValueError, match="dropout: no ParameterCollection exists"):
            ab.dropout(ab.zeros(4), 0.5)
    finally:
        graph.latest_collection[0] = latest
    given = ab.dropout(ab.input_tensor([1.0, 2.0, 3.0, 4.0]), 0.5, noise=[0.0, 0.9, 0.2, 0.5])
    assert given.value().tolist() == [0.0, 4.0, 0.0, 8.0]  # given uniforms need no collection


_SCANNED = [  # (cell, options, scans in training, in eval): the LSTM's and GRU's scans run all but
    # DropConnect (and the GRU's layer norm)
    (ab.LSTM, dict(dropout=0.4), True, True),
    (ab.GRU, dict(dropout=0.4), True, True),
    (ab.LSTM, dict(recurrent_dropout=0.3), True, True),
    (ab.LSTM, dict(zoneout=0.3), True, True),
    (ab.LSTM, dict(dropout=0.4, variational=True, learned_init=True), True, True),
    (ab.LSTM, dict(dropout=0.3, recurrent_dropout=0.2, zoneout=0.25, learned_init=True), True, True),
    (ab.LSTM, dict(dropout=0.3, variational=True, recurrent_dropout=0.2, zoneout=0.25), True, True),
    (ab.LSTM, dict(layer_norm=True), True, True),
    (ab.LSTM, dict(layer_norm=True, learned_init=True), True, True),
    (ab.LSTM, dict(layer_norm=True, dropout=0.3, variational=True, zoneout=0.2, recurrent_dropout=0.2), True, True),
    (ab.GRU, dict(zoneout=0.3), True, True),
    (ab.GRU, dict(recurrent_dropout=0.3), True, True),
    (ab.GRU, dict(dropout=0.4, variational=True, learned_init=True), True, True),
    (ab.GRU, dict(dropout=0.3, variational=True, recurrent_dropout=0.2, zoneout=0.25, learned_init=True), True,
     True),
    (ab.GRU, dict(layer_norm=True), False, False),
    (ab.RNN, dict(zoneout=0.3), False, False),
    (ab.RNN, dict(dropout=0.3), True, True),
    (ab.LSTM, dict(dropconnect=0.3), False, True),
]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell, options, in_training, in_eval", _SCANNED,
                         ids=[f"{c.__name__}-{'-'.join(o)}" for c, o, _, _ in _SCANNED])
def test_regularised_blocks_scan_and_equal_the_step_path(cell, options, in_training, in_eval, reverse, train):
    """Under the regularisers (and the layer norm) its scan runs, a whole sequence still runs as one scan node per
    layer. The scan draws the same uniforms in the same order as the step path (layer by layer, step by step),
    so from one seed both give the same values and gradients, in training and in evaluation (zoneout's
    expectation)."""
    def run(as_sequence):
        pc = ab.ParameterCollection(seed=5, dtype=np.float64)
        E = pc.add_lookup_parameters((7, 6), init="normal")
        block = cell(pc, 6, 5, num_layers=2, **options)
        for p in pc.parameters():
            if p.name.endswith((".h0", ".c0")):  # learned initial states away from zero, so their masks show
                p.set_value(np.linspace(-0.5, 0.7, p.shape[0]))
            if p.name.endswith((".ln_x", ".ln_h")):  # layer-norm gains that differ per gate and unit
                p.set_value(np.linspace(0.5, 1.5, p.shape[0]))
        (ab.train_mode if train else ab.eval_mode)()
        ab.renew_cg()
        terms = []
        for ids in ([3, 1, 4, 1, 5, 2], [6, 0], [2, 6, 5, 3]):  # three lengths in one batch: the scan sorts them
            if as_sequence:
                hs = ab.rows(block.transduce(E[ids], reverse=reverse))
            else:
                hs = block.transduce([E[i] for i in ids], reverse=reverse)
            weights = np.cos(np.arange(30.0) + len(ids)).reshape(6, 5)  # a weight per sentence, unit and step
            terms += [ab.dot(h, ab.input_tensor(w)) for h, w in zip(hs, weights)]
        out = ab.esum(terms)
        g = ab.current_graph()
        scans = sum(g.n_sig[n].prim.name.endswith("_scan") for n in range(len(g)))
        out.backward()
        return out.value(), [p.grad.copy() for p in pc.parameters()], scans

    v_seq, g_seq, n_scans = run(True)
    v_step, g_step, n_step = run(False)
    assert n_step == 0 and n_scans == 3 * 2 * (in_training if train else in_eval)
    np.testing.assert_allclose(v_seq, v_step, rtol=1e-10)
    for a, b in zip(g_seq, g_step):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11)


def test_a_birnn_under_dropout_scans_each_direction_with_its_own_masks():
    pc = ab.ParameterCollection(seed=2, dtype=np.float64)
    E = _ones_table(pc, 1, 8)
    birnn = ab.BiRNN(ab.LSTM(pc, 8, 4, dropout=0.5), ab.LSTM(pc, 8, 4, dropout=0.5))
    ab.renew_cg()
    g = ab.current_graph()
    birnn.transduce(E[[0] * 6]).value()
    scans = [n for n in range(len(g)) if g.n_sig[n].prim is R.LSTM_SCAN]
    masks = [ab.Expression(g, d).value() for d in _nodes_of(g, R.DROPOUT)]
    assert len(scans) == 2 and len(masks) == 2
    assert not np.array_equal(masks[0], masks[1])
    assert len({row.tobytes() for row in masks[0]}) == 6  # a new mask per step
