"""Results that were once wrong without a word (issue 10): the mean of a sequence, softmax of a scalar under
batching, dropout on sequences, a bool used as an index, dtypes that did not match the values, and a stray
ParameterCollection changing the dtype of a model's inputs."""
import numpy as np
import pytest

import autobatch as ab

STRATEGIES = ("off", "depth", "agenda")


@pytest.fixture(autouse=True)
def restore():
    yield
    ab.train_mode()
    ab.ParameterCollection(dtype=np.float32)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mean_of_a_sequence_divides_by_every_element(strategy):
    pc = ab.ParameterCollection(seed=3, dtype=np.float64)
    O, E = pc.add_parameters((3, 4)), pc.add_lookup_parameters((6, 4))
    ab.renew_cg(strategy=strategy)
    losses = ab.pick_neg_log_softmax(O @ E[[1, 2, 3, 4, 5]], [0, 1, 2, 0, 1])
    mean, total = ab.mean_elems(losses), ab.sum_elems(losses)
    assert mean.value() == pytest.approx(total.value() / 5, rel=1e-14)
    seq = E[[0, 1, 2]]  # 3 rows of 4
    assert ab.mean_elems(seq).value() == pytest.approx(E.value()[:3].mean(), rel=1e-14)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_softmax_of_scalars_is_one_under_every_strategy(strategy):
    ab.renew_cg(strategy=strategy)
    xs = [ab.sum_elems(ab.input_tensor([float(k)])) for k in range(3)]
    sm, lsm = [ab.softmax(x) for x in xs], [ab.log_softmax(x) for x in xs]
    ab.forward(*sm, *lsm)
    assert [s.value() for s in sm] == [1.0, 1.0, 1.0]
    assert [s.value() for s in lsm] == [0.0, 0.0, 0.0]


def _sequence_dropout(strategy, lengths, p=0.5):
    pc = ab.ParameterCollection(seed=5, dtype=np.float64)
    E = pc.add_lookup_parameters((10, 6), init="normal")
    ab.renew_cg(strategy=strategy)
    ids = [list(range(k, k + n)) for k, n in enumerate(lengths)]
    ys = [ab.dropout(E[i], p) for i in ids]
    ab.esum([ab.sum_elems(y) for y in ys]).backward()
    return E, ids, [y.value() for y in ys], E.grad


def test_dropout_on_sequences_gives_each_row_its_mask_under_every_strategy():
    lengths = [3, 1, 4, 2]  # several lengths in one batch
    runs = {s: _sequence_dropout(s, lengths) for s in STRATEGIES}
    E, ids, values, grad = runs["off"]
    for s in ("depth", "agenda"):
        for v, v_off in zip(runs[s][2], values):
            np.testing.assert_array_equal(v, v_off)
        np.testing.assert_allclose(runs[s][3], grad, rtol=0, atol=1e-15)
    table = E.value()
    masks = [v / table[i] for v, i in zip(values, ids)]
    for m, n in zip(masks, lengths):
        assert m.shape == (n, 6) and set(np.unique(m)) <= {0.0, 2.0}
    rows = np.concatenate(masks)
    assert len({r.tobytes() for r in rows}) > len(rows) // 2  # rows do not share one mask
    # the gradient of each row is its own mask
    expected = np.zeros_like(table)
    for m, i in zip(masks, ids):
        np.add.at(expected, i, m)
    np.testing.assert_allclose(grad, expected, rtol=1e-15)


def test_dropout_on_a_sequence_takes_noise_of_its_whole_shape():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    E = pc.add_lookup_parameters((4, 2), init="ones")
    ab.renew_cg()
    u = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]])
    np.testing.assert_array_equal(ab.dropout(E[[0, 1, 2]], 0.5, noise=u).value(), [[2, 0], [0, 2], [2, 2]])
    with pytest.raises(ValueError, match="needs 6"):
        ab.dropout(E[[0, 1, 2]], 0.5, noise=u[0])


def test_a_bool_is_not_an_index():
    pc = ab.ParameterCollection(seed=0)
    E = pc.add_lookup_parameters((3, 2))
    ab.renew_cg()
    for build in (lambda: E[True], lambda: ab.pick(E[0], True), lambda: ab.row(E[[0, 1]], False),
                  lambda: E[np.True_], lambda: E[[True, False]]):
        with pytest.raises(TypeError, match="test_numerics.py"):
            build()


def test_integer_inputs_give_floats_where_the_op_does_and_say_so():
    ab.ParameterCollection(dtype=np.float32)
    ab.renew_cg()
    x = ab.input_tensor([1, 2, 4], dtype=np.int64)
    for y in (ab.tanh(x), ab.sqrt(x), x / 2, 2 / x, x / x, ab.mean_elems(x), x * 0.5 + 1):
        assert y.dtype == np.float32
        assert np.asarray(y.value()).dtype == np.float32 or isinstance(y.value(), float)
    np.testing.assert_allclose(ab.sqrt(x).value(), [1, np.sqrt(2), 2], rtol=1e-7)
    for y in (x + x, x * x, ab.esum([x, x]), ab.concat([x, x]), ab.square(x), -x, 2 * x - 1):
        assert y.dtype == np.int64 and y.value().dtype == np.int64
    np.testing.assert_array_equal((2 * x - 1).value(), [1, 3, 7])
    s = ab.sum_elems(ab.input_tensor([1, 2], dtype=np.int32))
    assert s.dtype == np.int32 and s.value() == 3 and isinstance(s.value(), int)
    # integer values take no gradient (and do not break the backward pass through them)
    ab.sum_elems(ab.tanh(x * x)).backward()


def _model_loss(pc, W, b, strategy):
    ab.renew_cg(strategy=strategy)
    losses = []
    for k in range(3):
        x = ab.input_tensor(np.linspace(-1, 1, 4) * (k + 1))  # weakly typed: no dtype given
        h = ab.zeros(3)
        for _ in range(k + 1):
            h = ab.tanh(W @ ab.concat([x, h]) + b) * (1 - ab.input_tensor([0.5, 0.0, 0.25]))
        losses.append(ab.pick_neg_log_softmax(h, k))
    loss = ab.esum(losses)
    pc.zero_grad()
    loss.backward()
    return loss.value(), W.grad


@pytest.mark.parametrize("model_dtype,stray_dtype", [(np.float64, np.float32), (np.float32, np.float64)])
def test_a_stray_collection_does_not_change_a_models_inputs(model_dtype, stray_dtype):
    pc = ab.ParameterCollection(seed=1, dtype=model_dtype)
    W, b = pc.add_parameters((3, 7)), pc.add_parameters(3, init="normal")
    alone = {s: _model_loss(pc, W, b, s) for s in STRATEGIES}
    ab.ParameterCollection(dtype=stray_dtype)  # e.g. a helper's, or a test fixture's
    for s in STRATEGIES:
        value, grad = _model_loss(pc, W, b, s)
        assert value == alone[s][0] and grad.dtype == model_dtype
        np.testing.assert_array_equal(grad, alone[s][1])
    ab.renew_cg()
    with pytest.raises(TypeError, match="mix dtypes"):  # explicit dtypes that differ still refuse
        W @ ab.input_tensor(np.ones(7), dtype=stray_dtype)


def test_weak_inputs_meeting_each_other_take_the_wider_float():
    ab.ParameterCollection(dtype=np.float32)
    ab.renew_cg()
    a = ab.input_tensor([1.0, 2.0])
    ab.ParameterCollection(dtype=np.float64)
    b = ab.input_tensor([3.0, 4.0])
    assert (a + b).dtype == np.float64 and (a + b).value().dtype == np.float64


def test_lookup_needs_a_table_and_a_recurrent_cell_a_vector():
    """Both once failed inside the engine (AttributeError, IndexError) instead of at the user's line."""
    ab.renew_cg()
    with pytest.raises(TypeError, match="lookup: needs a LookupParameter.*test_numerics.py"):
        ab.lookup(ab.input_tensor(np.ones((3, 2))), 1)
    with pytest.raises(ValueError, match="rnn_hidden: needs a vector, got shape \\(\\).*test_numerics.py"):
        ab.rnn.rnn_hidden(ab.input_tensor(1.0))
