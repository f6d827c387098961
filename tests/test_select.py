"""Parts, stacks, reductions and the smaller ops of issue 10, beyond the registry-driven checks in test_ops.py:
indexing semantics (``x[i]``, ``x[a:b]``, sequences), that examples taking different parts share one kernel
call, sequence reductions batched across lengths, argmax's gradient modes, and errors at the user's line."""
import numpy as np
import pytest

import autobatch as ab


def _batches(op):
    return sum(v["batches"] for k, v in ab.graph_stats()["by_signature"].items() if k.split(",")[0].split(" ")[0] == op)


def test_indexing_a_vector_and_a_matrix(pc64):
    v, M = np.arange(5.0), np.arange(12.0).reshape(3, 4)
    ab.renew_cg()
    x, m = ab.input_tensor(v), ab.input_tensor(M)
    assert x[1].value() == 1.0 and x[-1].value() == 4.0
    np.testing.assert_array_equal(m[-2].value(), M[-2])
    for key in (slice(1, 3), slice(None, 2), slice(-3, None), slice(2, 100), slice(None, -1)):
        np.testing.assert_array_equal(x[key].value(), v[key])
        np.testing.assert_array_equal(m[key].value(), M[key])
    np.testing.assert_array_equal(x[[4, 0, 4]].value(), v[[4, 0, 4]])
    np.testing.assert_array_equal(ab.select_rows(m, [2, 0]).value(), M[[2, 0]])
    np.testing.assert_array_equal(ab.select_cols(m, [3, 3, 1]).value(), M[:, [3, 3, 1]])
    np.testing.assert_array_equal(ab.pick_range(m, 1, 3, d=1).value(), M[:, 1:3])
    np.testing.assert_array_equal(ab.pick_range(x, 0, 5).value(), v)


def test_indexing_a_sequence(pc64):
    rows = np.arange(10.0).reshape(5, 2)
    ab.renew_cg()
    s = ab.sequence([ab.input_tensor(r) for r in rows])
    np.testing.assert_array_equal(s[1].value(), rows[1])
    np.testing.assert_array_equal(s[-1].value(), rows[-1])
    part = s[1:4]
    assert part.is_sequence and part.shape == (3, 2)
    np.testing.assert_array_equal(part.value(), rows[1:4])
    np.testing.assert_array_equal(ab.tanh(part).value(), np.tanh(rows[1:4]))  # a sequence like any other
    picked = ab.select_rows(s, [4, 4, 0])
    assert picked.is_sequence and picked.shape == (3, 2)
    np.testing.assert_array_equal(picked.value(), rows[[4, 4, 0]])
    np.testing.assert_array_equal(ab.pick_range(s, 2, 5).value(), rows[2:5])
    within = ab.pick_range(s, 1, 2, d=1)  # along each row: a sequence of 1-vectors
    assert within.is_sequence and within.shape == (5, 1)
    np.testing.assert_array_equal(within.value(), rows[:, 1:2])
    np.testing.assert_array_equal(ab.select_cols(s, [1, 0, 1]).value(), rows[:, [1, 0, 1]])


def test_different_parts_of_many_examples_share_one_kernel_call(pc64):
    rng = np.random.default_rng(0)
    vs = [rng.normal(size=6) for _ in range(5)]
    ab.renew_cg(strategy="agenda")
    parts = [ab.input_tensor(v)[k:k + 2] for k, v in enumerate(vs)]
    seqs = [ab.sequence([ab.input_tensor(v)[t] for t in range(k + 2)]) for k, v in enumerate(vs)]
    tails = [s[1:] for s in seqs]  # sequences of 1..5 rows
    ab.forward(*parts, *tails)
    assert _batches("take") == 1 and _batches("take_rows") == 1
    for k, (p, t) in enumerate(zip(parts, tails)):
        np.testing.assert_array_equal(p.value(), vs[k][k:k + 2])
        np.testing.assert_array_equal(t.value(), vs[k][1:k + 2])


def test_max_pooling_over_time_batches_sentences_of_any_lengths(pc64):
    rng = np.random.default_rng(1)
    sents = [rng.normal(size=(T, 3)) for T in (1, 4, 2, 6)]
    ab.renew_cg(strategy="agenda")
    seqs = [ab.sequence([ab.input_tensor(r) for r in X]) for X in sents]
    pooled = [ab.max(s, axis=0) for s in seqs]
    lowest = [ab.min(s, axis=0) for s in seqs]
    overall = [ab.max(s) for s in seqs]
    per_row = [ab.max(s, axis=1) for s in seqs]
    lse = [ab.logsumexp(s, axis=0) for s in seqs]
    ab.forward(*pooled, *lowest, *overall, *per_row, *lse)
    assert _batches("max_over_rows") == 2 and _batches("min_over_rows") == 1  # max(s): rows, then over them
    for X, p, lo, o, r, ls in zip(sents, pooled, lowest, overall, per_row, lse):
        np.testing.assert_allclose(p.value(), X.max(0))
        np.testing.assert_allclose(lo.value(), X.min(0))
        assert o.value() == pytest.approx(X.max())
        assert r.is_sequence
        np.testing.assert_allclose(r.value(), X.max(1))
        np.testing.assert_allclose(ls.value(), np.log(np.exp(X).sum(0)), rtol=1e-12)


def test_max_gradient_goes_to_the_first_maximum(pc64):
    W = pc64.add_parameters((2, 3), init=np.array([[1.0, 5.0, 5.0], [2.0, 0.0, 2.0]]))
    ab.renew_cg()
    (ab.max(W) + ab.sum_elems(ab.max(W, axis=1)) + ab.sum_elems(ab.min(W, axis=1))).backward()
    np.testing.assert_array_equal(W.grad, [[1.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    pc64.zero_grad()
    ab.renew_cg()
    s = ab.sequence([ab.parameter(W)[0], ab.parameter(W)[0]])  # tied rows: the first row gets it
    ab.sum_elems(ab.max(s, axis=0)).backward()
    np.testing.assert_array_equal(W.grad, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def test_argmax_one_hot_and_gradient_modes(pc64):
    W = pc64.add_parameters((4,), init=np.array([0.5, 3.0, -1.0, 3.0]))
    ab.renew_cg()
    hot = ab.argmax(W)
    np.testing.assert_array_equal(hot.value(), [0, 1, 0, 0])  # the first of tied maxima
    assert int(hot.value().argmax()) == 1 == int(ab.parameter(W).value().argmax())
    w = np.array([1.0, 2.0, 3.0, 4.0])
    ab.dot(hot, ab.input_tensor(w)).backward()
    np.testing.assert_array_equal(W.grad, 0)
    ab.renew_cg()
    ab.dot(ab.argmax(W, gradient_mode="straight_through"), ab.input_tensor(w)).backward()
    np.testing.assert_array_equal(W.grad, w)  # passed through unchanged
    with pytest.raises(ValueError, match="gradient_mode"):
        ab.argmax(W, gradient_mode="soft")


def test_stack_concat_of_scalars_logsumexp_of_a_list_and_small_ops(pc64):
    a, b = np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.0, -1.0])
    ab.renew_cg()
    x, y = ab.input_tensor(a), ab.input_tensor(b)
    np.testing.assert_array_equal(ab.stack([x, y]).value(), np.stack([a, b]))
    np.testing.assert_array_equal(ab.stack([x, y], axis=1).value(), np.stack([a, b], 1))
    v = ab.concat([x[0], ab.sum_elems(y), x[2]])  # DyNet allows concatenating scalars
    assert v.shape == (3,)
    np.testing.assert_array_equal(v.value(), [1.0, -0.5, 3.0])
    assert ab.concat([x[1]]).shape == (1,)
    np.testing.assert_allclose(ab.logsumexp([x, y]).value(), np.logaddexp(a, b), rtol=1e-12)
    assert ab.logsumexp(x).value() == pytest.approx(np.log(np.exp(a).sum()))
    np.testing.assert_array_equal(ab.ones((2, 3)).value(), np.ones((2, 3)))
    assert ab.ones(4).dtype == np.float64 and ab.ones(2, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(abs(x).value(), np.abs(a))
    np.testing.assert_array_equal(ab.abs(x).value(), np.abs(a))
    np.testing.assert_allclose((x ** 2).value(), a ** 2)
    np.testing.assert_allclose(ab.pow(ab.abs(x), y).value(), np.abs(a) ** b)
    np.testing.assert_allclose((2 ** x).value(), 2.0 ** a)
    assert ab.sigmoid is ab.logistic
    for f, ref in ((ab.sin, np.sin), (ab.cos, np.cos), (ab.tan, np.tan)):
        np.testing.assert_allclose(f(x).value(), ref(a), rtol=1e-12)


def test_pow_gradient_in_the_exponent_at_zero_is_zero(pc64):
    X = pc64.add_parameters((2,), init=np.array([0.0, 2.0]))
    P = pc64.add_parameters((2,), init=np.array([2.0, 3.0]))
    ab.renew_cg()
    ab.sum_elems(ab.pow(X, P)).backward()  # d/dp 0**p = 0 (the limit), not 0 * log 0 = NaN
    np.testing.assert_allclose(P.grad, [0.0, 8.0 * np.log(2.0)])
    np.testing.assert_allclose(X.grad, [0.0, 12.0])


def test_bad_parts_raise_at_the_users_line(pc64):
    ab.renew_cg()
    x, m = ab.input_tensor(np.arange(4.0)), ab.input_tensor(np.ones((2, 3)))
    s = ab.sequence([x, x])
    here = r"\(at .*test_select\.py"
    cases = [(lambda: x[::2], ValueError, "only step 1"), (lambda: x[3:1], IndexError, "empty range"),
             (lambda: x[4], IndexError, "out of range"), (lambda: x[-5], IndexError, "out of range"),
             (lambda: x[True], TypeError, "bool"), (lambda: x[1.5], TypeError, "must be an int"),
             (lambda: m[0, 1], TypeError, "one axis at a time"), (lambda: x[1][0], ValueError, "scalar"),
             (lambda: s[2], IndexError, "out of range"), (lambda: s[5:], IndexError, "empty range"),
             (lambda: ab.pick_range(x, 2, 5), IndexError, "out of range"),
             (lambda: ab.pick_range(x, 2, 2), IndexError, "an empty range"),
             (lambda: ab.pick_range(x, -1, 2), IndexError, "out of range"),
             (lambda: ab.pick_range(x, True, 2), TypeError, "bool"),
             (lambda: ab.select_rows(m, [0, 2]), IndexError, "out of range"),
             (lambda: ab.select_rows(m, []), ValueError, "non-empty"),
             (lambda: ab.select_cols(x, [0]), ValueError, "needs a matrix"),
             (lambda: ab.select_cols(ab.sequence([m, m]), [0]), ValueError, "or a sequence of vectors"),
             (lambda: ab.stack([x, m]), ValueError, "one shape"), (lambda: ab.stack([s, s]), ValueError, "sequences"),
             (lambda: ab.concat([x[0], x]), ValueError, "one shape"),
             (lambda: ab.max(m, axis=2), IndexError, "out of range"),
             (lambda: ab.logsumexp([x, m]), ValueError, "one shape"),
             (lambda: ab.argmax(m), ValueError, "needs a vector")]
    for build, kind, message in cases:
        with pytest.raises(kind, match=here) as e:
            build()
        assert message in str(e.value), (message, str(e.value))
    with pytest.raises(TypeError, match="not iterable"):
        iter(x)  # indexing does not make expressions iterable


def test_a_weakly_typed_slice_meeting_another_dtype_keeps_its_rows():
    # Inputs without a dtype take the dtype of the model they meet (graph.py's weak typing): the slice is
    # recorded again in float32, and must keep its 2 rows rather than take the 5 of the sequence it slices.
    W = ab.ParameterCollection(seed=0, dtype=np.float32).add_parameters((3, 2))
    ab.ParameterCollection(dtype=np.float64)  # a stray collection: inputs default to float64
    try:
        ab.renew_cg()
        rows = np.arange(10.0).reshape(5, 2)
        s = ab.sequence([ab.input_tensor(r) for r in rows])
        y = W @ s[1:3]
        assert y.shape == (2, 3) and y.dtype == np.float32
        np.testing.assert_allclose(y.value(), rows[1:3] @ W.value().T, rtol=1e-6)
        assert (W @ ab.ones(2)).dtype == np.float32  # ones are weakly typed too, as zeros
    finally:
        ab.ParameterCollection(dtype=np.float32)
