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
    expect(TypeError, lambda: a + ab.zeros(3, dtype=np.float32), "add", "float32", "float64")  # both explicit
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


@pytest.mark.parametrize("combine", [ab.esum, ab.concat])
def test_one_element_esum_and_concat_refuse_an_earlier_graph(m, combine):
    """The one-element shortcuts return their input unchanged; they must still refuse a stale expression where
    it is combined, not at ``value()``."""
    x = ab.tanh(ab.input_tensor([1.0, 2.0]))
    assert combine([x]) is x  # the shortcut, in the current graph
    ab.renew_cg()
    expect(RuntimeError, lambda: combine([x]), "earlier graph")


def test_sequence_blocks_refuse_an_earlier_graph(m):
    X = ab.sequence([ab.input_tensor(np.ones(3)) for _ in range(2)])
    rnn = ab.LSTM(m["pc"], 3, 2)
    birnn = ab.BiRNN(ab.LSTM(m["pc"], 3, 2), ab.LSTM(m["pc"], 3, 2))
    tree, shape = ab.TreeLSTM(m["pc"], 3, 2), np.array([[-1, -1, 0, 0], [-1, -1, 0, 1], [0, 1, 1, -1]])
    assert tree.scan(shape, ab.sequence([ab.zeros(3), ab.zeros(3)])).shape == (3, 2)
    ab.renew_cg()
    expect(RuntimeError, lambda: rnn.transduce(X), "earlier graph")
    expect(RuntimeError, lambda: birnn.transduce(X), "earlier graph")
    expect(RuntimeError, lambda: tree.scan(shape, X), "earlier graph")


def test_backward_of_an_expression_of_no_parameter_adds_nothing(m):
    """As in DyNet: the gradient of an input-only expression with respect to every parameter is zero (it used
    to fail inside the backward pass with "'NoneType' object is not callable")."""
    for build in (lambda: ab.input_tensor([1.0, 2.0]), lambda: ab.sum_elems(ab.input_tensor([1.0, 2.0]) * 3),
                  lambda: ab.zeros(3), lambda: ab.tanh(ab.zeros(3))):
        ab.renew_cg()
        used = ab.sum_elems(m["W"] @ ab.input_tensor(np.ones(3)))  # a parameter in the graph, not in the target
        x = build()
        x.backward()
        assert not m["W"].has_grad() and x.value() is not None
        used.backward()
        assert m["W"].has_grad()
        m["pc"].zero_grad()


def sqrt_line():
    import inspect

    src, start = inspect.getsourcelines(test_nan_made_by_a_derivative_names_its_node)
    return start + next(i for i, line in enumerate(src) if "the derivative that fails" in line)


@pytest.mark.parametrize("strategy", ["off", "depth", "agenda"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's own note of the inf
def test_nan_made_by_a_derivative_names_its_node(strategy):
    """``check_finite`` checks the backward pass too: sqrt(0) is finite, its derivative is not."""
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    W = pc.add_parameters((3,), init=[1.0, 2.0, 4.0])
    ab.renew_cg(strategy=strategy, check_finite=True)
    xs = [ab.input_tensor([1.0, 1.0, float((k - 1) ** 2)]) for k in range(3)]  # the second has a zero
    fine = [ab.sum_elems(ab.tanh(W * x)) for x in xs]
    roots = [ab.sqrt(W * x) for x in xs]  # the derivative that fails
    loss = ab.esum(fine + [ab.sum_elems(r) for r in roots])
    assert np.isfinite(loss.value())
    with pytest.raises(FloatingPointError) as info:
        loss.backward()
    msg = str(info.value)
    assert "sqrt: non-finite gradient" in msg and "VJP" in msg and f"node {roots[1].i} " in msg, msg
    assert "shape (3,)" in msg and f"test_errors.py:{sqrt_line()}" in msg, msg
    ab.renew_cg(strategy=strategy)  # unchecked: the NaN lands in W.grad, as before
    ab.sum_elems(ab.sqrt(W * ab.input_tensor([1.0, 0.0, 1.0]))).backward()
    assert not np.isfinite(W.grad).all()
    ab.ParameterCollection(dtype=np.float32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's own note of the inf
def test_trainer_names_a_derivative_fault_not_the_learning_rate():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    W = pc.add_parameters((3,), init=[1.0, 0.0, 4.0])
    trainer = ab.Trainer(pc, lambda x: ab.sum_elems(ab.sqrt(W * ab.input_tensor(x))), progress=False)
    with pytest.raises(FloatingPointError) as info:
        trainer.train_batch([np.ones(3)])
    msg = str(info.value)
    assert "learning rate" not in msg and "check_finite=True" in msg and "VJP" in msg, msg
    ab.ParameterCollection(dtype=np.float32)
