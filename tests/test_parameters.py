"""Gradient semantics users rely on: dense .grad, accumulation across backward calls, sparse lookup rows."""
import numpy as np
import pytest

import autobatch as ab
from autobatch.kernels import backend


def test_grad_zero_before_backward_and_accumulates(pc64):
    W = pc64.add_parameters((2, 3))
    assert np.array_equal(W.grad, np.zeros((2, 3)))
    x = np.array([1.0, 2.0, 3.0])
    for expected in (1, 2):
        ab.renew_cg()  # renew_cg does not clear gradients
        ab.sum_elems(W @ ab.input_tensor(x)).backward()
        np.testing.assert_allclose(W.grad, expected * np.tile(x, (2, 1)))
    pc64.zero_grad()
    assert np.array_equal(W.grad, np.zeros((2, 3)))


def test_lookup_grad_touches_only_used_rows_and_sums_repeats(pc64):
    E = pc64.add_lookup_parameters((6, 2))
    ab.renew_cg()
    loss = ab.esum([ab.sum_elems(E[i] * float(k + 1)) for k, i in enumerate([1, 4, 1])])
    loss.backward()
    expected = np.zeros((6, 2))
    expected[1], expected[4] = 1 + 3, 2
    np.testing.assert_allclose(E.grad, expected)
    rows, grads = E.sparse_grad()
    assert backend.asnumpy(rows).tolist() == [1, 4]
    np.testing.assert_allclose(backend.asnumpy(grads), [[4, 4], [2, 2]])


def test_default_dtype_follows_latest_collection():
    ab.ParameterCollection(dtype=np.float64)
    ab.renew_cg()
    assert ab.zeros(3).dtype == np.float64 and ab.input_tensor([1, 2]).dtype == np.float64
    ab.ParameterCollection()
    assert ab.zeros(3).dtype == np.float32


def test_value_types(pc64):
    W = pc64.add_parameters((2, 2), init=np.eye(2))
    ab.renew_cg()
    v = ab.sum_elems(W @ ab.input_tensor([1.0, 2.0]))
    assert isinstance(v.value(), float) and v.value() == 3.0
    vec = (W @ ab.input_tensor([1.0, 2.0])).value()
    assert isinstance(vec, np.ndarray) and vec.shape == (2,)
    assert isinstance(W.value(), np.ndarray)


def test_constants_from_parameters_are_computed_once(pc64):
    W = pc64.add_parameters((3, 3))
    h0 = pc64.add_parameters((3,), init="normal")
    ab.renew_cg()
    outs = [ab.tanh(W @ h0) for _ in range(5)]  # the same constant in every example
    assert len({o.i for o in outs}) == 1
    total = ab.esum([ab.sum_elems(o) for o in outs])
    total.backward()
    y = np.tanh(W.value() @ h0.value())
    np.testing.assert_allclose(h0.grad, 5 * W.value().T @ (1 - y ** 2))


def test_init_options():
    pc = ab.ParameterCollection(seed=3)
    assert np.all(pc.add_parameters(4).value() == 0)  # vectors start at zero
    assert np.all(pc.add_parameters((2, 2), init=1.5).value() == 1.5)
    W = pc.add_parameters((20, 30))
    assert np.abs(W.value()).max() <= np.sqrt(6 / 50) + 1e-7
    np.testing.assert_array_equal(pc.add_parameters((2,), init=lambda rng, s: np.arange(2.0)).value(), [0, 1])
    same = [ab.ParameterCollection(seed=7).add_parameters((3, 3)).value() for _ in range(2)]
    np.testing.assert_array_equal(*same)
    assert pc.num_parameters() == 4 + 4 + 600 + 2


def test_values_snapshot_and_set_values_restore_every_parameter_by_name():
    pc = ab.ParameterCollection(seed=0)
    W, E = pc.add_parameters((3, 2)), pc.add_lookup_parameters((4, 2))
    snapshot = pc.values()
    assert sorted(snapshot) == sorted([W.name, E.name])
    W.set_value(np.zeros((3, 2)))
    E.set_value(np.ones((4, 2)))
    snapshot[W.name][0, 0] += 1.0  # a copy: changing it later changes nothing until it is set
    assert W.value()[0, 0] == 0.0
    pc.set_values(snapshot)
    np.testing.assert_array_equal(W.value(), snapshot[W.name])
    np.testing.assert_array_equal(E.value(), snapshot[E.name])
    with pytest.raises(KeyError):
        pc.set_values({W.name: snapshot[W.name]})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_add_of_rows_is_add_at_bit_for_bit(dtype):
    # NumPy's scatter_add adds whole rows through a flattened index (the fast 1-d add.at) from 512 elements on:
    # the same sums in the same order as add.at itself, repeats, negative and int32 indices and strided rows too.
    start = backend.name
    backend.use("numpy")  # (the NumPy path itself, under the strict suite too)
    try:
        _check_scatter_add(dtype)
    finally:
        backend.use(start)


def _check_scatter_add(dtype):
    rng = np.random.default_rng(0)
    for n, rows_shape, idx_dtype in [(300, (7, 5), np.intp), (40, (64,), np.int32), (3, (4,), np.intp)]:
        idx = rng.integers(-9, 9, n).astype(idx_dtype)
        rows = rng.standard_normal((n,) + rows_shape).astype(dtype) * 10.0 ** rng.integers(-3, 4, (n,) + rows_shape)
        for r in (rows, rows[:, ::-1]):  # contiguous and strided
            got, want = np.ones((9,) + rows_shape, dtype), np.ones((9,) + rows_shape, dtype)
            backend.scatter_add(got, idx, r)
            np.add.at(want, idx, r)
            np.testing.assert_array_equal(got, want)
    with pytest.raises(IndexError):
        backend.scatter_add(np.zeros((9, 64)), np.array([9] * 10), np.ones((10, 64)))
