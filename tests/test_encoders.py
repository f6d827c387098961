"""Sentence encoders: SelfAttention and DilatedConv1D equal their NumPy references on ragged sentences whatever
the bucket size (padding never leaks), give the same values and gradients under every strategy, and run one
kernel call per bucket, not per sentence."""
import numpy as np
import pytest

import autobatch as ab
import cell_references as ref
from autobatch import encoders as enc

D = 6
LENGTHS = [1, 7, 3, 8, 5, 2, 9, 4]


@pytest.fixture(autouse=True)
def restore():
    yield
    ab.ParameterCollection(dtype=np.float32)


def _run(make, lengths=LENGTHS, strategy="agenda", seed=0):
    """Outputs (one (T, out) array per sentence) and gradients of a random weighting of them."""
    pc = ab.ParameterCollection(seed=seed, dtype=np.float64)
    block = make(pc)
    X = pc.add_lookup_parameters((sum(lengths), D), init="normal")
    rng = np.random.default_rng(seed)
    starts = np.cumsum([0] + list(lengths))
    ab.renew_cg(strategy=strategy)
    outs = [block.transduce([X[i] for i in range(s, s + n)]) for s, n in zip(starts, lengths)]
    loss = ab.esum([ab.dot(o, ab.input_tensor(rng.normal(size=o.shape))) for sent in outs for o in sent])
    loss.backward()
    values = [np.stack([o.value() for o in sent]) for sent in outs]
    return block, X, values, {p.name: p.grad for p in pc.parameters()}, ab.graph_stats()


def _sentences(X, lengths=LENGTHS):
    starts = np.cumsum([0] + list(lengths))
    return [X.value()[s:s + n] for s, n in zip(starts, lengths)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bucket", [1, 4, 16])
def test_self_attention_matches_numpy(causal, bucket):
    block, X, values, _, _ = _run(lambda pc: ab.SelfAttention(pc, D, 4, 5, causal=causal, bucket=bucket))
    W = [w.value() for w in (block.Wq, block.Wk, block.Wv)]
    for x, v in zip(_sentences(X), values):
        np.testing.assert_allclose(v, ref.self_attention(x, *W, len(x), causal), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bucket", [1, 8])
@pytest.mark.parametrize("causal", [False, True])
def test_dilated_conv_matches_numpy(causal, bucket):
    block, X, values, _, _ = _run(lambda pc: ab.DilatedConv1D(pc, D, D, [1, 2, 4], causal=causal, bucket=bucket,
                                                               activation="tanh"))
    for x, v in zip(_sentences(X), values):
        want = x
        for W, b, attrs in block.layers:
            want = ref.dilated_conv(want, W.value(), b.value(), len(x), dilation=dict(attrs)["dilation"],
                                    causal=causal, act="tanh", residual=True)
        np.testing.assert_allclose(v, want, rtol=1e-10, atol=1e-12)


def test_dilated_conv_widens_then_keeps_its_width():
    block, X, values, _, _ = _run(lambda pc: ab.DilatedConv1D(pc, D, 4, [1, 3], kernel_size=2))
    assert [dict(a)["residual"] for _, _, a in block.layers] == [False, True]
    for x, v in zip(_sentences(X), values):
        h1 = ref.dilated_conv(x, block.layers[0][0].value(), block.layers[0][1].value(), len(x))
        want = ref.dilated_conv(h1, block.layers[1][0].value(), block.layers[1][1].value(), len(x), dilation=3,
                                residual=True)
        np.testing.assert_allclose(v, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [lambda pc: ab.SelfAttention(pc, D, causal=True, bucket=4),
                                  lambda pc: ab.DilatedConv1D(pc, D, D, [1, 2], bucket=4)],
                         ids=["attention", "conv"])
def test_strategies_agree(make):
    _, _, v_a, g_a, _ = _run(make, strategy="agenda")
    _, _, v_o, g_o, _ = _run(make, strategy="off")
    for a, o in zip(v_a, v_o):
        np.testing.assert_allclose(a, o, rtol=1e-12, atol=1e-14)
    for name in g_o:
        np.testing.assert_allclose(g_a[name], g_o[name], rtol=1e-10, atol=1e-12)


def test_one_kernel_call_per_bucket_not_per_sentence():
    lengths = np.random.default_rng(0).integers(1, 41, 64)
    buckets = len({-(-n // 8) for n in lengths})
    make = lambda pc: ab.DilatedConv1D(pc, D, D, [1, 2, 4], bucket=8)  # noqa: E731
    *_, stats = _run(make, lengths)
    by_op = {}
    for sig, s in stats["by_signature"].items():
        op = sig.split("(")[0].split(",")[0].split(" ")[0]
        by_op[op] = by_op.get(op, 0) + s["batches"]
    assert by_op["dilated_conv"] == 3 * buckets  # three layers
    assert by_op["pick"] == buckets
    assert by_op["pad_rows"] <= len(set(lengths))  # gathering a sentence's vectors: one call per length
    *_, stats = _run(lambda pc: ab.SelfAttention(pc, D, bucket=8), lengths)
    assert sum(s["batches"] for k, s in stats["by_signature"].items() if k.startswith("self_attention")) == buckets


def test_encoder_errors():
    pc = ab.ParameterCollection(seed=0)
    att = ab.SelfAttention(pc, D)
    ab.renew_cg()
    with pytest.raises(ValueError, match=r"SelfAttention: needs a non-empty list of vectors \(at .*test_encoders"):
        att.transduce([])
    with pytest.raises(ValueError, match=r"SelfAttention: input of shape \(5,\), expected \(6,\) \(at .*test_enc"):
        att.transduce([ab.zeros(D), ab.zeros(5)])
    with pytest.raises(ValueError, match="DilatedConv1D: activation must be one of"):
        ab.DilatedConv1D(pc, D, D, activation="gelu")
    with pytest.raises(ValueError, match="DilatedConv1D: needs at least one dilation rate"):
        ab.DilatedConv1D(pc, D, D, dilations=[])
    with pytest.raises(ValueError, match="DilatedConv1D: each dilation must be a positive integer, got 0"):
        ab.DilatedConv1D(pc, D, D, dilations=[1, 0])
    with pytest.raises(ValueError, match="SelfAttention: bucket must be a positive integer, got 0"):
        ab.SelfAttention(pc, D, bucket=0)
    X = ab.zeros((4, D))
    with pytest.raises(ValueError, match=r"self_attention: length 5 must be an int in \[1, rows\] for a matrix of "
                                         r"shape \(4, 6\) \(at .*test_encoders"):
        enc.self_attention(X, att.Wq, att.Wk, att.Wv, 5)
    with pytest.raises(ValueError, match=r"dilated_conv: length 2.0 must be an int"):
        enc.dilated_conv(X, pc.add_parameters((6, 18)), pc.add_parameters(6), 2.0)
    with pytest.raises(ValueError, match=r"self_attention: query \(6, 6\), key \(6, 6\) and value \(6, 5\)"):
        enc.self_attention(X, att.Wq, att.Wk, pc.add_parameters((6, 5)), 2)
    W, b = pc.add_parameters((4, 3 * D)), pc.add_parameters(4)
    with pytest.raises(ValueError, match="dilated_conv: a residual connection needs out == dim, got 4 and 6"):
        enc.dilated_conv(X, W, b, 3, residual=True)
    with pytest.raises(ValueError, match=r"dilated_conv: weights \(4, 18\) and bias \(5,\) must be \(out, 3 x 6\)"):
        enc.dilated_conv(X, W, pc.add_parameters(5), 3)
    with pytest.raises(ValueError, match="dilated_conv: the weights' 17 columns are not a multiple of the input wi"):
        enc.dilated_conv(X, pc.add_parameters((4, 17)), b, 3)
    with pytest.raises(ValueError, match=r"dilated_conv: needs a \(rows, dim\) matrix, got shape \(6,\)"):
        enc.dilated_conv(ab.zeros(D), W, b, 1)
    with pytest.raises(ValueError, match=r"self_attention: needs a \(rows, dim\) matrix, got shape \(6,\)"):
        enc.self_attention(ab.zeros(D), att.Wq, att.Wk, att.Wv, 1)
    with pytest.raises(ValueError, match="dilated_conv: activation must be one of"):
        enc.dilated_conv(X, W, b, 3, activation="gelu")
    with pytest.raises(TypeError, match=r"self_attention: weights must be Parameters .*got Expression \(at .*test_e"):
        enc.self_attention(X, att.Wq, att.Wk, ab.parameter(att.Wv) * 1.0, 2)
    with pytest.raises(TypeError, match="dilated_conv: weights must be Parameters"):
        enc.dilated_conv(X, W, ab.zeros(4), 3)
    with pytest.raises(ValueError, match=r"pad_rows: needs vectors of one shape, got \(3,\), \(6,\)"):
        enc.pad_rows([ab.zeros(D), ab.zeros(3)], 4)
    with pytest.raises(ValueError, match=r"pad_rows: needs a non-empty list of vectors \(at .*test_encoders"):
        enc.pad_rows([], 4)
    with pytest.raises(ValueError, match="pad_rows: 3 vectors do not fit in 2 rows"):
        enc.pad_rows([ab.zeros(D)] * 3, 2)
