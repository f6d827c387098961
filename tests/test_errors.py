"""Each error names the op, the shapes or index, and the user's file:line, raised where the node is built."""
import numpy as np
import pytest

import autobatch as ab


@pytest.fixture
def m():
    pc = ab.ParameterCollection(seed=0)
    ab.renew_cg()
    return dict(pc=pc, W=pc.add_parameters((4, 3)), b=pc.add_parameters((4,)), E=pc.add_lookup_parameters((10, 3)))


def expect(exc, build, *fragments):
    """``build`` (a one-line lambda) must raise ``exc`` whose message holds ``fragments`` and the lambda's line."""
    with pytest.raises(exc) as info:
        build()
    msg = str(info.value)
    for f in fragments + (f"test_errors.py:{build.__code__.co_firstlineno}",):
        assert f in msg, f"{f!r} not in {msg!r}"


def test_matmul_shape_mismatch(m):
    x = ab.zeros(5)
    expect(ValueError, lambda: m["W"] @ x, "matmul", "(4, 3) @ (5,)")


def test_elementwise_shapes_that_do_not_broadcast(m):
    expect(ValueError, lambda: ab.zeros(3) + ab.zeros(4), "add", "(3,) and (4,)")


def test_concat_and_esum_shapes(m):
    expect(ValueError, lambda: ab.concat([ab.zeros((2, 3)), ab.zeros((2, 4))]), "concat", "(2, 3)", "(2, 4)")
    expect(ValueError, lambda: ab.esum([ab.zeros(3), ab.zeros(4)]), "esum", "(3,)", "(4,)")
    expect(ValueError, lambda: ab.esum([]), "esum", "non-empty")


def test_affine_bias_shape(m):
    expect(ValueError, lambda: ab.affine(ab.zeros(3), m["W"], ab.zeros(3)), "affine", "bias shape (3,)")


def test_reshape_transpose_pick(m):
    expect(ValueError, lambda: ab.reshape(ab.zeros(6), (4, 2)), "reshape", "(6,)", "(4, 2)")
    expect(ValueError, lambda: ab.transpose(ab.zeros(6)), "transpose", "(6,)")
    expect(ValueError, lambda: ab.pick_neg_log_softmax(ab.zeros((2, 3)), 0), "pick_neg_log_softmax", "(2, 3)")
    expect(IndexError, lambda: ab.pick(ab.zeros(3), 3), "pick", "index 3", "size 3")


def test_lookup_index_errors(m):
    expect(IndexError, lambda: m["E"][10], "lookup", "E2", "index 10", "size 10")
    expect(IndexError, lambda: m["E"][-1], "index -1")
    expect(TypeError, lambda: m["E"][1.5], "lookup", "must be an int")
    assert m["E"][np.int64(3)].shape == (3,)  # NumPy integers are fine


def test_dtype_mismatch(m):
    a = ab.input_tensor(np.ones(3), dtype=np.float64)
    expect(TypeError, lambda: a + ab.zeros(3), "add", "float32", "float64")
    expect(TypeError, lambda: ab.input_tensor(np.array(["a", "b"])), "input_tensor", "<U1")


def test_expression_from_an_earlier_graph(m):
    x = ab.zeros(3)
    ab.renew_cg()
    expect(RuntimeError, lambda: ab.tanh(x), "earlier graph")
    expect(RuntimeError, lambda: x.value(), "earlier graph")


def test_nan_in_loss_when_asked_to_check(m):
    ab.renew_cg(check_finite=True)
    x = ab.input_tensor([1.0, -1.0])
    bad = ab.log(x)  # the line the error must name
    loss = ab.sum_elems(bad)
    with pytest.raises(FloatingPointError) as info:
        loss.value()
    assert "log" in str(info.value) and f"test_errors.py:{bad_line()}" in str(info.value)


def bad_line():
    import inspect

    src, start = inspect.getsourcelines(test_nan_in_loss_when_asked_to_check)
    return start + next(i for i, line in enumerate(src) if "the line the error must name" in line)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown strategy 'fast'"):
        ab.renew_cg(strategy="fast")


def test_parameter_shape_and_init_errors():
    pc = ab.ParameterCollection()
    with pytest.raises(ValueError, match="positive"):
        pc.add_parameters((0, 3))
    with pytest.raises(ValueError, match="unknown init 'gaussian'"):
        pc.add_parameters((2, 3), init="gaussian")
    with pytest.raises(ValueError, match=r"init array has shape \(2,\)"):
        pc.add_parameters((2, 3), init=np.zeros(2))
    with pytest.raises(TypeError, match="float type"):
        ab.ParameterCollection(dtype=np.int32)
    ab.ParameterCollection(dtype=np.float32)
