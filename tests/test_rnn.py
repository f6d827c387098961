"""LSTM, GRU and RNN blocks equal PyTorch's nn.LSTM / nn.GRU / nn.RNN (same weights copied in, float64) in outputs
and in every gradient, over ragged batches: one layer, stacked, bidirectional, learned initial states, and
layer-normalised cells against the same cell written with torch.nn.functional.layer_norm."""
import numpy as np
import pytest

import autobatch as ab

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # a test-only reference: without it the comparisons skip, the other tests still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch (the reference for these comparisons) is missing")

D, H = 3, 4
LENGTHS = [5, 1, 3, 7, 2]
KINDS = {"lstm": ab.LSTM, "gru": ab.GRU, "rnn": ab.RNN}


def torch_block(kind, *args, **kwargs):
    return getattr(torch.nn, kind.upper())(*args, dtype=torch.float64, **kwargs)


@pytest.fixture(autouse=True)
def seeded_and_restored():
    if torch is not None:
        torch.manual_seed(0)
    yield
    ab.ParameterCollection(dtype=np.float32)  # restore the float32 default for later tests


def _t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def copy_from_torch(layers, tmod, suffix="", first_layer=0):
    """Copy tmod's layers ``first_layer``.. (direction ``suffix``) into our ``layers``; returns the pairs to
    compare gradients of: (our parameter, [torch tensors whose gradient must equal its gradient])."""
    pairs = []
    for k, layer in enumerate(layers):
        name = lambda w: getattr(tmod, f"{w}_l{k + first_layer}{suffix}")  # noqa: E731
        wi, wh, bi, bh = name("weight_ih"), name("weight_hh"), name("bias_ih"), name("bias_hh")
        layer.Wx.set_value(wi.detach().numpy())
        layer.Wh.set_value(wh.detach().numpy())
        pairs += [(layer.Wx, [wi]), (layer.Wh, [wh])]
        if layer.bh is not None:  # GRU: b_hn sits inside r * (...), so the two biases stay apart
            layer.bx.set_value(bi.detach().numpy())
            layer.bh.set_value(bh.detach().numpy())
            pairs += [(layer.bx, [bi]), (layer.bh, [bh])]
        else:
            layer.bx.set_value((bi + bh).detach().numpy())
            pairs.append((layer.bx, [bi, bh]))
    return pairs


def run_ours(pc, transduce, strategy="agenda", seed=0):
    """Outputs and loss of ``transduce`` over ragged sentences read from a lookup table X (so input gradients
    are compared too); the loss is a fixed random weighting of every output."""
    rng = np.random.default_rng(seed)
    X = pc.add_lookup_parameters((sum(LENGTHS), D), init=rng.normal(size=(sum(LENGTHS), D)), name=f"X{strategy}")
    starts = np.cumsum([0] + LENGTHS)
    ab.renew_cg(strategy=strategy)
    outs = [transduce([X[i] for i in range(s, s + n)]) for s, n in zip(starts, LENGTHS)]
    weights = [[rng.normal(size=o.shape) for o in sent] for sent in outs]
    loss = ab.esum([ab.dot(o, ab.input_tensor(w)) for sent, ws in zip(outs, weights) for o, w in zip(sent, ws)])
    loss.backward()
    values = [np.stack([o.value() for o in sent]) for sent in outs]
    return X, values, weights, loss.value()


def run_torch(X, weights, forward):
    """The same loss through ``forward(x) -> (T, out)`` per sentence; returns outputs, loss and x's gradient."""
    x = _t(X.value()).requires_grad_()
    starts = np.cumsum([0] + LENGTHS)
    outs = [forward(x[s:s + n]) for s, n in zip(starts, LENGTHS)]
    loss = sum((o * _t(np.stack(w))).sum() for o, w in zip(outs, weights))
    loss.backward()
    return [o.detach().numpy() for o in outs], loss.item(), x.grad.numpy()


def assert_same(ours, theirs, pairs, X, xgrad):
    values, loss = ours[1], ours[3]
    t_values, t_loss = theirs[0], theirs[1]
    assert loss == pytest.approx(t_loss, rel=1e-12)
    for v, tv in zip(values, t_values):
        np.testing.assert_allclose(v, tv, rtol=1e-10, atol=1e-12)
    for param, tensors in pairs:
        for t in tensors:
            np.testing.assert_allclose(param.grad, t.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=param.name)
    np.testing.assert_allclose(X.grad, xgrad, rtol=1e-9, atol=1e-12)


def torch_seq(tmod, init=None):
    return lambda x: tmod(x[:, None, :], init)[0][:, 0, :]


@needs_torch
@pytest.mark.parametrize("strategy", ["agenda", "off"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch(kind, layers, strategy):
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    block, tmod = KINDS[kind](pc, D, H, num_layers=layers), torch_block(kind, D, H, num_layers=layers)
    pairs = copy_from_torch(block.layers, tmod)
    ours = run_ours(pc, block.transduce, strategy)
    theirs = run_torch(ours[0], ours[2], torch_seq(tmod))
    assert_same(ours, theirs, pairs, ours[0], theirs[2])


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
def test_bidirectional_matches_torch(kind):
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    bi = ab.BiRNN(KINDS[kind](pc, D, H), KINDS[kind](pc, D, H))
    tmod = torch_block(kind, D, H, bidirectional=True)
    pairs = copy_from_torch(bi.fwd.layers, tmod) + copy_from_torch(bi.bwd.layers, tmod, "_reverse")
    ours = run_ours(pc, bi.transduce)
    assert ours[1][0].shape == (LENGTHS[0], 2 * H)
    theirs = run_torch(ours[0], ours[2], torch_seq(tmod))
    assert_same(ours, theirs, pairs, ours[0], theirs[2])


@needs_torch
def test_stacked_bidirectional_matches_torch():
    """Two BiRNN layers, the second reading [f; b] of the first, are torch's 2-layer bidirectional LSTM."""
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    first = ab.BiRNN(ab.LSTM(pc, D, H), ab.LSTM(pc, D, H))
    second = ab.BiRNN(ab.LSTM(pc, 2 * H, H), ab.LSTM(pc, 2 * H, H))
    tmod = torch_block("lstm", D, H, num_layers=2, bidirectional=True)
    pairs = (copy_from_torch(first.fwd.layers, tmod) + copy_from_torch(first.bwd.layers, tmod, "_reverse")
             + copy_from_torch(second.fwd.layers, tmod, first_layer=1)
             + copy_from_torch(second.bwd.layers, tmod, "_reverse", first_layer=1))
    ours = run_ours(pc, lambda xs: second.transduce(first.transduce(xs)))
    theirs = run_torch(ours[0], ours[2], torch_seq(tmod))
    assert_same(ours, theirs, pairs, ours[0], theirs[2])


@needs_torch
def test_combine_sum_adds_every_layers_output():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    block = ab.LSTM(pc, D, H, num_layers=2, combine="sum")
    t1, t2 = torch_block("lstm", D, H), torch_block("lstm", H, H)
    pairs = copy_from_torch(block.layers[:1], t1) + copy_from_torch(block.layers[1:], t2)

    def forward(x):
        y1 = t1(x[:, None, :])[0]
        return (y1 + t2(y1)[0])[:, 0, :]

    ours = run_ours(pc, block.transduce)
    theirs = run_torch(ours[0], ours[2], forward)
    assert_same(ours, theirs, pairs, ours[0], theirs[2])


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
def test_learned_initial_state_matches_torch(kind):
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    block, tmod = KINDS[kind](pc, D, H, num_layers=2, learned_init=True), torch_block(kind, D, H, 2)
    pairs = copy_from_torch(block.layers, tmod)
    rng = np.random.default_rng(5)
    h0 = _t(rng.normal(size=(2, 1, H))).requires_grad_()
    c0 = _t(rng.normal(size=(2, 1, H))).requires_grad_()
    for k, layer in enumerate(block.layers):
        layer.h0.set_value(h0[k, 0].detach().numpy())
        if kind == "lstm":
            layer.c0.set_value(c0[k, 0].detach().numpy())
    ours = run_ours(pc, block.transduce)
    theirs = run_torch(ours[0], ours[2], torch_seq(tmod, (h0, c0) if kind == "lstm" else h0))
    assert_same(ours, theirs, pairs, ours[0], theirs[2])
    for k, layer in enumerate(block.layers):
        np.testing.assert_allclose(layer.h0.grad, h0.grad[k, 0].numpy(), rtol=1e-9, atol=1e-12)
        if kind == "lstm":
            np.testing.assert_allclose(layer.c0.grad, c0.grad[k, 0].numpy(), rtol=1e-9, atol=1e-12)


def torch_ln_cell(kind, p, x, learned):
    """The layer-normalised cell (Ba et al. 2016) in torch, over the sequence x: LN on each linear map."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    h = p["h0"] if learned else torch.zeros(H, dtype=torch.float64)
    c = p["c0"] if learned and kind == "lstm" else torch.zeros(H, dtype=torch.float64)
    out = []
    for xt in x:
        xpart = F.layer_norm(p["Wx"] @ xt, (G * H,), p["ln_x"], p["b"])
        if kind == "gru":
            hpart = F.layer_norm(p["Wh"] @ h, (G * H,), p["ln_h"], p["bh"])
            r, z = torch.sigmoid(xpart[:H] + hpart[:H]), torch.sigmoid(xpart[H:2 * H] + hpart[H:2 * H])
            h = (1 - z) * torch.tanh(xpart[2 * H:] + r * hpart[2 * H:]) + z * h
        else:
            pre = F.layer_norm(p["Wh"] @ h, (G * H,), p["ln_h"], xpart)
            if kind == "rnn":
                h = torch.tanh(pre)
            else:
                i, f, g, o = pre.split(H)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out)


@needs_torch
@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_layer_norm_cells_match_torch(kind, learned):
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    block = KINDS[kind](pc, D, H, layer_norm=True, learned_init=learned)
    rng = np.random.default_rng(3)
    layer = block.layers[0]
    tp = {}
    for key in ("Wx", "Wh", "bx", "bh", "ax", "ah", "h0", "c0"):
        param = getattr(layer, key)
        if param is not None:
            param.set_value(rng.normal(size=param.shape))
            tp[param.name.split(".")[-1]] = (param, _t(param.value()).requires_grad_())
    ours = run_ours(pc, block.transduce)
    theirs = run_torch(ours[0], ours[2],
                       lambda x: torch_ln_cell(kind, {k: t for k, (_, t) in tp.items()}, x, learned))
    assert_same(ours, theirs, [(param, [t]) for param, t in tp.values()], ours[0], theirs[2])


@needs_torch
def test_layer_norm_primitive_matches_torch():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    X = pc.add_lookup_parameters((4, 6), init=rng.normal(size=(4, 6)) * 3 + 1)
    gain, bias = pc.add_parameters(6, init=rng.normal(size=6)), pc.add_parameters(6, init=rng.normal(size=6))
    w = rng.normal(size=(4, 6))
    ab.renew_cg()
    ys = [ab.layer_norm(X[i], gain, bias) for i in range(4)]
    ab.esum([ab.dot(y, ab.input_tensor(w[i])) for i, y in enumerate(ys)]).backward()
    tx, tg, tb = (_t(a).requires_grad_() for a in (X.value(), gain.value(), bias.value()))
    ty = F.layer_norm(tx, (6,), tg, tb)
    (ty * _t(w)).sum().backward()
    np.testing.assert_allclose(np.stack([y.value() for y in ys]), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for ours, theirs in ((X, tx), (gain, tg), (bias, tb)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_states_step_by_step_equal_transduce():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    block = ab.LSTM(pc, D, H, num_layers=2, combine="sum")
    E = pc.add_lookup_parameters((7, D))
    ab.renew_cg()
    words = [3, 0, 6, 2]
    whole = block.transduce([E[w] for w in words])
    state = block.initial_state()
    np.testing.assert_array_equal(state.h.value(), np.zeros(H))
    steps = []
    for w in words:
        state = state.add_input(E[w])
        steps.append(state)
    for s, o in zip(steps, whole):
        np.testing.assert_allclose(s.output.value(), o.value(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(s.output.value(), s.hs[0].value() + s.hs[1].value(), rtol=1e-12)
        assert s.h.shape == s.c.shape == (H,) and len(s.cs) == 2
    gru_state = ab.GRU(pc, D, H).initial_state()
    with pytest.raises(AttributeError, match="GRU states have no memory cell c"):
        gru_state.c
    with pytest.raises(AttributeError, match="GRU states have no memory cell c"):
        gru_state.cs


def test_gate_biases_start_as_asked():
    pc = ab.ParameterCollection(seed=0)
    lstm, gru = ab.LSTM(pc, D, H), ab.GRU(pc, D, H)
    np.testing.assert_array_equal(lstm.layers[0].bx.value(), np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    np.testing.assert_array_equal(gru.layers[0].bx.value(), np.r_[-np.ones(H), np.zeros(2 * H)])
    np.testing.assert_array_equal(gru.layers[0].bh.value(), np.zeros(3 * H))
    custom = ab.LSTM(pc, D, H, forget_bias=2.5)
    assert custom.layers[0].bx.value()[H:2 * H].tolist() == [2.5] * H


@pytest.mark.parametrize("kind,per_step", [("lstm", 4), ("gru", 3), ("rnn", 3)])
def test_nodes_per_step(kind, per_step):
    """A step is a few fused nodes: the x-part, the recurrent product and the cell update (one fewer on the
    first step, whose zero state needs no recurrent product)."""
    pc = ab.ParameterCollection(seed=0)
    block = KINDS[kind](pc, D, H)
    E = pc.add_lookup_parameters((5, D))
    ab.renew_cg()
    xs = [E[i] for i in range(5)]
    block.transduce(xs)  # the first use in a graph adds the parameters' nodes
    before = len(ab.current_graph())
    block.transduce(xs)
    assert len(ab.current_graph()) - before == per_step * len(xs) - 1


def test_build_errors_name_the_block_and_the_line():
    pc = ab.ParameterCollection(seed=0)
    lstm = ab.LSTM(pc, D, H)
    ab.renew_cg()
    with pytest.raises(ValueError) as info:
        lstm.transduce([ab.zeros(D + 1)])
    assert "LSTM: input of shape (4,), expected (3,)" in str(info.value) and "test_rnn.py" in str(info.value)
    state = lstm.initial_state()
    with pytest.raises(ValueError, match=r"LSTM: input of shape \(2,\)"):
        state.add_input(ab.zeros(2))
    ab.renew_cg()
    with pytest.raises(RuntimeError, match="state belongs to an earlier graph"):
        state.add_input(ab.zeros(D))
    with pytest.raises(ValueError, match="BiRNN: forward input_dim 3 differs from backward input_dim 5"):
        ab.BiRNN(lstm, ab.LSTM(pc, 5, H))


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_layers=0), "GRU: num_layers must be at least 1, got 0"),
    (dict(combine="mean"), "GRU: combine must be 'last' or 'sum', got 'mean'"),
    (dict(dropout=1.0), r"GRU: dropout must lie in \[0, 1\), got 1.0"),
    (dict(zoneout=-0.1), r"GRU: zoneout must lie in \[0, 1\), got -0.1"),
    (dict(hidden_dim=0), "GRU: hidden_dim must be positive, got 0"),
])
def test_option_errors(kwargs, message):
    pc = ab.ParameterCollection(seed=0)
    args = dict(input_dim=D, hidden_dim=H)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ab.GRU(pc, **args)


def test_transducing_nothing_gives_nothing():
    pc = ab.ParameterCollection(seed=0)
    ab.renew_cg()
    assert ab.LSTM(pc, D, H).transduce([]) == [] and ab.BiRNN(ab.GRU(pc, D, H), ab.GRU(pc, D, H)).transduce([]) == []


def test_cell_and_layer_norm_shape_errors_name_the_op_and_the_line():
    from autobatch import registry as R, rnn

    def expect(build, *fragments):
        with pytest.raises(ValueError) as info:
            build()
        for f in fragments + (f"test_rnn.py:{build.__code__.co_firstlineno}",):
            assert f in str(info.value), f"{f!r} not in {str(info.value)!r}"

    ab.renew_cg()
    z = ab.zeros
    expect(lambda: ab.layer_norm(z((2, 3)), z(3), z(3)), "layer_norm: needs a vector, got shape (2, 3)")
    expect(lambda: ab.layer_norm(z(5), z(4), z(5)),
           "layer_norm: gain (4,) and bias (5,) must have the input's shape (5,)")
    expect(lambda: rnn.lstm_cell(z(7), z(2)), "lstm_cell: gates shape (7,) must be 4 x the state's shape (2,)")
    expect(lambda: rnn.lstm_hidden(z(8), z(2), z(3), zoneout=0.5, noise=np.ones(2)),
           "lstm_hidden: previous state shape (3,) differs from the cell's (2,)")
    expect(lambda: rnn.gru_hidden(z(5), z(6), z(2)),
           "gru_hidden: input part shape (5,) must be 3 x the state's shape (2,)")
    expect(lambda: rnn.gru_hidden(z(6), z(4), z(2)), "gru_hidden: recurrent part shape (4,) must be 3 x the state's")
    expect(lambda: rnn.rnn_hidden(z((2, 2))), "rnn_hidden: needs a vector, got shape (2, 2)")
    expect(lambda: rnn.rnn_hidden(z(2), z(3), zoneout=0.5, noise=np.ones(2)),
           "rnn_hidden: previous state shape (3,) differs from (2,)")
    g = ab.current_graph()  # the builders above always pass h_prev with zoneout; a direct add can forget it
    zo = (("zo", 0.5), ("zt", False))
    expect(lambda: g.add(R.LSTM_HIDDEN, (z(8).i, z(2).i), zo),
           "lstm_hidden: takes 3 inputs (zoneout needs the previous state), got 2")
    expect(lambda: g.add(R.LSTM_CELL, (z(8).i,), (("rd", 0.0),) + zo), "lstm_cell: takes 2 inputs, got 1")
    with pytest.raises(ValueError, match=r"lstm_cell: recurrent_dropout must lie in \[0, 1\), got 2.0"):
        rnn.lstm_cell(z(8), z(2), recurrent_dropout=2)
