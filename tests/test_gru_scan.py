"""A GRU over a sequence (``E[ids]``) runs as one ``gru_scan`` node per layer, both directions of a BiRNN in one:
equal to PyTorch's nn.GRU over a packed ragged batch (float64, outputs and every gradient, the initial state's
included) and to the same block run step by step, under every batching strategy."""
import numpy as np
import pytest

import autobatch as ab

try:
    import torch
except ImportError:  # a test-only reference: without it that comparison skips, the others still run
    torch = None

D, H, VOCAB = 3, 4, 20
SENTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11], [12], [13, 14, 15, 16]]


@pytest.fixture(autouse=True)
def restored():
    yield
    ab.ParameterCollection(dtype=np.float32)  # restore the float32 default for later tests


def _model(layers, bidirectional, learned):
    pc = ab.ParameterCollection(seed=3, dtype=np.float64)
    E = pc.add_lookup_parameters((VOCAB, D), init="normal")
    blocks = [ab.GRU(pc, D, H, num_layers=layers, learned_init=learned) for _ in range(1 + bidirectional)]
    rng = np.random.default_rng(4)
    for block in blocks:  # random biases and initial states, so a wrong b_hn or h0 path shows
        for layer in block.layers:
            for p in (layer.bx, layer.bh, layer.h0):
                if p is not None:
                    p.set_value(rng.normal(size=p.shape))
    transducer = ab.BiRNN(*blocks) if bidirectional else blocks[0]
    return pc, E, blocks, transducer


def _ours(pc, E, transducer, as_sequence, strategy="agenda"):
    """Outputs and gradients of a fixed random weighting of every output."""
    pc.zero_grad()
    ab.renew_cg(strategy=strategy)
    rng = np.random.default_rng(1)
    outs = []
    for s in SENTS:
        out = transducer.transduce(E[s] if as_sequence else [E[w] for w in s])
        outs.append(out if as_sequence else ab.sequence(out))
    weights = [rng.normal(size=(len(s), o.shape[-1])) for s, o in zip(SENTS, outs)]
    weighted = [ab.cmult(o, ab.sequence([ab.input_tensor(r) for r in w])) for o, w in zip(outs, weights)]
    loss = ab.esum([ab.sum_elems(v) for v in weighted])
    value = loss.value()
    loss.backward()
    return [o.value() for o in outs], value, [p.grad.copy() for p in pc.parameters()], weights, ab.graph_stats()


@pytest.mark.skipif(torch is None, reason="PyTorch (the reference for this comparison) is missing")
@pytest.mark.parametrize("layers,bidirectional,learned", [(1, False, False), (2, False, True), (1, True, False),
                                                          (1, True, True)])
def test_gru_scan_equals_torch_packed(layers, bidirectional, learned):
    pc, E, blocks, transducer = _model(layers, bidirectional, learned)
    outs, _, _, weights, stats = _ours(pc, E, transducer, True)
    assert any(k.startswith("gru_scan") for k in stats["by_signature"])
    ref = torch.nn.GRU(D, H, num_layers=layers, bidirectional=bidirectional, dtype=torch.float64)
    suffixes = ["", "_reverse"][:1 + bidirectional]
    with torch.no_grad():
        for block, suffix in zip(blocks, suffixes):
            for k, layer in enumerate(block.layers):
                for ours, theirs in ((layer.Wx, "weight_ih"), (layer.Wh, "weight_hh"), (layer.bx, "bias_ih"),
                                     (layer.bh, "bias_hh")):
                    getattr(ref, f"{theirs}_l{k}{suffix}").copy_(torch.tensor(ours.value()))
    Et = torch.tensor(E.value(), requires_grad=True)
    h0 = None
    if learned:  # one learned vector per layer and direction, shared by every sentence
        h0 = torch.tensor(np.stack([block.layers[k].h0.value() for k in range(layers) for block in blocks]),
                          requires_grad=True)
    init = None if h0 is None else h0[:, None, :].expand(-1, len(SENTS), -1)
    packed = torch.nn.utils.rnn.pack_sequence([Et[s] for s in SENTS], enforce_sorted=False)
    padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(ref(packed, init)[0], batch_first=True)
    loss = 0
    for k, n in enumerate(lengths.tolist()):
        np.testing.assert_allclose(outs[k], padded[k, :n].detach().numpy(), rtol=1e-12, atol=1e-14)
        loss = loss + (padded[k, :n] * torch.tensor(weights[k])).sum()
    loss.backward()
    np.testing.assert_allclose(E.grad, Et.grad.numpy(), rtol=1e-10, atol=1e-13)
    for d, (block, suffix) in enumerate(zip(blocks, suffixes)):
        for k, layer in enumerate(block.layers):
            for ours, theirs in ((layer.Wx, "weight_ih"), (layer.Wh, "weight_hh"), (layer.bx, "bias_ih"),
                                 (layer.bh, "bias_hh")):
                np.testing.assert_allclose(ours.grad, getattr(ref, f"{theirs}_l{k}{suffix}").grad.numpy(),
                                           rtol=1e-10, atol=1e-13, err_msg=ours.name)
            if learned:
                np.testing.assert_allclose(layer.h0.grad, h0.grad[k * len(blocks) + d].numpy(), rtol=1e-10,
                                           atol=1e-13)


@pytest.mark.parametrize("layers,bidirectional,learned", [(1, False, False), (2, False, True), (1, True, True),
                                                          (2, True, False)])
def test_gru_scan_equals_steps_under_every_strategy(layers, bidirectional, learned):
    pc, E, _, transducer = _model(layers, bidirectional, learned)
    ref_outs, ref_value, ref_grads, _, ref_stats = _ours(pc, E, transducer, False)
    assert not any(k.startswith("gru_scan") for k in ref_stats["by_signature"])
    for strategy in ("off", "depth", "agenda"):
        outs, value, grads, _, stats = _ours(pc, E, transducer, True, strategy)
        assert value == pytest.approx(ref_value, rel=1e-12)
        for o, r in zip(outs, ref_outs):
            np.testing.assert_allclose(o, r, rtol=1e-12, atol=1e-14)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13)
        assert stats["nodes"] < ref_stats["nodes"]


@pytest.mark.parametrize("layers,bidirectional,per_sentence", [(1, False, 1), (3, False, 3), (1, True, 1)])
def test_one_gru_scan_node_per_layer(layers, bidirectional, per_sentence):
    """A layer of a sentence is one scan node (a BiRNN's two directions one together), and each layer's nodes of
    the whole batch one kernel call."""
    pc, E, _, transducer = _model(layers, bidirectional, False)
    *_, stats = _ours(pc, E, transducer, True)
    scans = [v for k, v in stats["by_signature"].items() if k.startswith("gru_scan")]
    assert sum(s["nodes"] for s in scans) == per_sentence * len(SENTS)
    assert sum(s["batches"] for s in scans) == layers
    assert not any(k.startswith("gru_hidden") for k in stats["by_signature"])


@pytest.mark.parametrize("options, in_training, in_eval", [
    (dict(dropout=0.3), True, True),  # standard dropout is outside the recurrence: a dropout node on the input
    (dict(recurrent_dropout=0.3, zoneout=0.2), True, True),  # inside it, run by the scan
    (dict(dropconnect=0.3), False, True),  # masked weights per sequence: step by step in training
    (dict(layer_norm=True), False, False),  # no layer-norm GRU scan
])
def test_regularised_gru_scans_unless_its_scan_cannot_run_the_regulariser(options, in_training, in_eval):
    pc = ab.ParameterCollection(seed=3, dtype=np.float64)
    E = pc.add_lookup_parameters((VOCAB, D), init="normal")
    gru = ab.GRU(pc, D, H, **options)
    for mode, scans in ((ab.train_mode, in_training), (ab.eval_mode, in_eval)):
        mode()
        try:
            *_, stats = _ours(pc, E, gru, True)
        finally:
            ab.train_mode()
        assert any(k.startswith("gru_scan") for k in stats["by_signature"]) == scans


def test_gru_scan_shape_errors():
    from autobatch import registry as R

    pc = ab.ParameterCollection(seed=3, dtype=np.float64)
    E = pc.add_lookup_parameters((VOCAB, 3 * H))
    Wh, bh = pc.add_parameters((3 * H, H)), pc.add_parameters((2 * H,))
    ab.renew_cg()
    g = ab.current_graph()
    x, attrs = E[[1, 2]].i, (("dirs", (False,)),)
    with pytest.raises(ValueError, match=r"gru_scan: needs a recurrent bias of the gate inputs' shape \(12,\), "
                                         r"got \(8,\) \(at .*test_gru_scan.py"):
        g.add(R.GRU_SCAN, (x, g.param_node(Wh), g.param_node(bh)), attrs)
    with pytest.raises(ValueError, match=r"gru_scan: needs gate inputs \(2 x 3H,\) .* for 2 direction"):
        g.add(R.GRU_SCAN, (x, g.param_node(Wh), g.param_node(pc.add_parameters((3 * H,)))), (("dirs", (0, 1)),))
    with pytest.raises(ValueError, match=r"gru_scan: input 2 must be a parameter"):
        g.add(R.GRU_SCAN, (x, g.param_node(Wh), E[3].i), attrs)
