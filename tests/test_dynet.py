"""autobatch.dynet against real DyNet 2.2 (``import dynet``, skipped where it is not installed) and against
stored expectations: builders with DyNet's weights give DyNet's numbers, trainers follow DyNet's update rules,
files written by DyNet load, and the expression API behaves as DyNet's tests check."""
import os
import pickle

import numpy as np
import pytest

import autobatch.dynet as ad

try:
    import dynet as rd  # real DyNet (PyPI: dynet38)
except ImportError:  # pragma: no cover - CI without the wheel
    rd = None

needs_dynet = pytest.mark.skipif(rd is None, reason="real DyNet (pip install dynet38) is not installed")

BUILDERS = ["VanillaLSTMBuilder", "CoupledLSTMBuilder", "FastLSTMBuilder", "GRUBuilder", "SimpleRNNBuilder",
            "SparseLSTMBuilder", "CompactVanillaLSTMBuilder"]


def _copy_params(src_pc, dst_pc):
    """Give ``dst_pc``'s parameters (ours) the values of ``src_pc``'s (real DyNet), in creation order."""
    for a, b in zip(src_pc.parameters_list(), dst_pc.parameters_list()):
        b.set_value(a.as_array())
    for a, b in zip(src_pc.lookup_parameters_list(), dst_pc.lookup_parameters_list()):
        b.set_value(a.as_array())


def _run(dy, builder, xs, batched):
    """Outputs and the gradient of a loss over every output, for one sequence (or a minibatch of 3)."""
    dy.renew_cg()
    s = builder.initial_state()
    inputs = [dy.inputTensor(x, batched=batched) for x in xs]
    outs = s.transduce(inputs)
    loss = dy.sum_batches(dy.esum([dy.dot_product(o, o) * (t + 1) for t, o in enumerate(outs)]))
    vals = [o.npvalue() for o in outs]
    loss.backward()
    return vals, loss.value()


@needs_dynet
@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("batched", [False, True])
def test_builder_matches_real_dynet(name, batched):
    rng = np.random.default_rng(0)
    m_r, m_a = rd.ParameterCollection(), ad.ParameterCollection()
    b_r, b_a = getattr(rd, name)(2, 4, 3, m_r), getattr(ad, name)(2, 4, 3, m_a)
    for p in m_r.parameters_list():  # random biases too, so every term is exercised
        p.set_value(rng.normal(size=p.shape()) * (p.as_array() != 0 if name == "SparseLSTMBuilder" else 1))
    _copy_params(m_r, m_a)
    xs = [rng.normal(size=(4, 3) if batched else 4) for _ in range(4)]
    out_r, loss_r = _run(rd, b_r, xs, batched)
    out_a, loss_a = _run(ad, b_a, xs, batched)
    for o_r, o_a in zip(out_r, out_a):
        np.testing.assert_allclose(o_a, o_r, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(loss_a, loss_r, rtol=2e-4)
    for p_r, p_a in zip(m_r.parameters_list(), m_a.parameters_list()):
        np.testing.assert_allclose(p_a.grad_as_array(), p_r.grad_as_array(), rtol=2e-3, atol=1e-4)


@needs_dynet
def test_vanilla_lstm_layer_norm_and_birnn_match_real_dynet():
    rng = np.random.default_rng(1)
    for make in (lambda dy, m: dy.VanillaLSTMBuilder(1, 4, 3, m, True),
                 lambda dy, m: dy.BiRNNBuilder(2, 4, 6, m, dy.LSTMBuilder)):
        m_r, m_a = rd.ParameterCollection(), ad.ParameterCollection()
        b_r, b_a = make(rd, m_r), make(ad, m_a)
        for p in m_r.parameters_list():
            p.set_value(rng.normal(size=p.shape()))
        _copy_params(m_r, m_a)
        xs = [rng.normal(size=4) for _ in range(3)]
        res = []
        for dy, b in ((rd, b_r), (ad, b_a)):
            dy.renew_cg()
            outs = b.transduce([dy.inputTensor(x) for x in xs]) if hasattr(b, "builder_layers") else \
                b.initial_state().transduce([dy.inputTensor(x) for x in xs])
            res.append([o.npvalue() for o in outs])
        for o_r, o_a in zip(*res):
            np.testing.assert_allclose(o_a, o_r, rtol=2e-4, atol=2e-5)


def _tiny_model(dy, seed_values=None):
    m = dy.ParameterCollection()
    W = m.add_parameters((5, 4))
    b = m.add_parameters(5)
    E = m.add_lookup_parameters((7, 4))
    return m, W, b, E


def _train(dy, trainer_name, values, steps=4, **kw):
    m, W, b, E = _tiny_model(dy)
    W.set_value(values[0])
    b.set_value(values[1])
    E.init_from_array(values[2])
    trainer = getattr(dy, trainer_name)(m, **kw)
    losses = []
    for step in range(steps):
        dy.renew_cg()
        words = [(step + 1) % 7, (2 * step + 3) % 7]
        loss = dy.esum([dy.pickneglogsoftmax(dy.affine_transform([b, W, dy.tanh(E[w])]), (w + step) % 5) * 3.0
                        for w in words])
        losses.append(loss.value())
        loss.backward()
        trainer.update()
    return losses, [W.as_array(), b.as_array(), E.as_array()]


@needs_dynet
@pytest.mark.parametrize("name,kw", [("SimpleSGDTrainer", {}), ("MomentumSGDTrainer", {}),
                                     ("AdagradTrainer", {}), ("AdadeltaTrainer", {}), ("RMSPropTrainer", {}),
                                     ("AdamTrainer", {}), ("AmsgradTrainer", {}),
                                     ("AdamTrainer", {"alpha": 0.1})])
def test_trainer_matches_real_dynet(name, kw):
    rng = np.random.default_rng(2)
    values = [rng.normal(size=(5, 4)), rng.normal(size=5), rng.normal(size=(7, 4)) * 3]
    l_r, p_r = _train(rd, name, values, **kw)
    l_a, p_a = _train(ad, name, values, **kw)
    np.testing.assert_allclose(l_a, l_r, rtol=1e-4)
    for a, r in zip(p_a, p_r):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)


def test_sgd_clips_to_global_norm_5_and_updates_only_touched_rows():
    m = ad.ParameterCollection()
    W = m.add_parameters(3, init=0)
    E = m.add_lookup_parameters((4, 3), init=1)
    t = ad.SimpleSGDTrainer(m, learning_rate=1.0)
    ad.renew_cg()
    (ad.dot_product(W, ad.inputVector([30.0, 0, 40.0])) + ad.sum_elems(E[2]) * 0).backward()
    t.update()
    np.testing.assert_allclose(W.as_array(), [-3.0, 0, -4.0], rtol=1e-6)  # gradient norm 50 clipped to 5
    np.testing.assert_allclose(E.as_array(), np.ones((4, 3)))
    assert t.clips == 1 and np.all(W.grad_as_array() == 0)


@needs_dynet
def test_reads_files_written_by_real_dynet(tmp_path):
    rng = np.random.default_rng(3)
    m_r = rd.ParameterCollection()
    W_r = m_r.add_parameters((3, 4), name="W")
    E_r = m_r.add_lookup_parameters((5, 2, 3))
    lstm_r = rd.VanillaLSTMBuilder(1, 4, 3, m_r)
    for p in m_r.parameters_list():
        p.set_value(rng.normal(size=p.shape()))
    rd.renew_cg()
    rd.sum_elems(W_r * rd.inputVector([1, 2, 3, 4])).backward()  # W gets a gradient: a FULL_GRAD entry
    path = str(tmp_path / "real.model")
    m_r.save(path)
    m_a = ad.ParameterCollection()
    W_a = m_a.add_parameters((3, 4), name="W")
    E_a = m_a.add_lookup_parameters((5, 2, 3))
    lstm_a = ad.VanillaLSTMBuilder(1, 4, 3, m_a)
    m_a.populate(path)
    np.testing.assert_allclose(W_a.as_array(), W_r.as_array(), rtol=1e-7)
    np.testing.assert_allclose(W_a.grad_as_array(), W_r.grad_as_array(), rtol=1e-7)
    np.testing.assert_allclose(E_a.as_array(), E_r.as_array(), rtol=1e-7)
    xs = [rng.normal(size=4) for _ in range(3)]
    outs = []
    for dy, lstm in ((rd, lstm_r), (ad, lstm_a)):
        dy.renew_cg()
        outs.append(lstm.initial_state().transduce([dy.inputTensor(x) for x in xs])[-1].npvalue())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    # ...and real DyNet reads what we write.
    back = str(tmp_path / "ours.model")
    m_a.save(back)
    m_r2 = rd.ParameterCollection()
    W2 = m_r2.add_parameters((3, 4))
    E2 = m_r2.add_lookup_parameters((5, 2, 3))
    rd.VanillaLSTMBuilder(1, 4, 3, m_r2)
    m_r2.populate(back)
    np.testing.assert_allclose(W2.as_array(), W_r.as_array(), rtol=1e-7)
    np.testing.assert_allclose(E2.as_array(), E_r.as_array(), rtol=1e-7)
    single = ad.ParameterCollection().load_param(path, "/W")
    np.testing.assert_allclose(single.as_array(), W_r.as_array(), rtol=1e-7)


def test_dynet_file_format_stored_expectation(tmp_path):
    """A file as DyNet writes it (format fixed here): column-major values; a table's rows one after another."""
    path = tmp_path / "stored.model"
    path.write_text("#Parameter# /W {2,3} 96 ZERO_GRAD\n+1 +4 +2 +5 +3 +6 \n"
                    "#LookupParameter# /_0 {2,3} 64 ZERO_GRAD\n+1 +2 +3 +4 +5 +6 \n")
    m = ad.ParameterCollection()
    W = m.add_parameters((2, 3), name="W")
    E = m.add_lookup_parameters((3, 2))
    m.populate(str(path))
    np.testing.assert_array_equal(W.as_array(), [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(E.as_array(), [[1, 2], [3, 4], [5, 6]])


@pytest.mark.parametrize("text, why", [
    ("#Parameter# /W {2,3} 96 ZERO_GRAD\n", "ends before the values of /W"),
    ("#Parameter# /W {2} 30 FULL_GRAD\n+1 +2 \n", "ends before the gradient of /W"),
    ("#Parameter# /W {2} 30 ZERO_GRAD\n+1 abc \n", ":2: the values of /W are not all numbers"),
    ("#Parameter# /W {2,x} 30 ZERO_GRAD\n+1 +2 \n", ":1: bad dims"),
])
def test_malformed_dynet_file_names_the_file(tmp_path, text, why):
    """A cut-short or corrupt file is a ValueError naming the file (not a bare StopIteration or NumPy's)."""
    path = tmp_path / "bad.model"
    path.write_text(text)
    m = ad.ParameterCollection()
    m.add_parameters((2, 3), name="W")
    with pytest.raises(ValueError, match="bad.model") as e:
        m.populate(str(path))
    assert why in str(e.value)


def test_a_repeated_parameter_name_is_made_unique_as_in_dynet(tmp_path):
    """DyNet names a second "W" "/W_1": with two "/W" entries, load would give both the first one's values."""
    m = ad.ParameterCollection()
    a, b = m.add_parameters(2, name="W", init=1.0), m.add_parameters(2, name="W", init=2.0)
    E = m.add_lookup_parameters((2, 2), name="W")
    assert [a.name(), b.name(), E.name()] == ["/W", "/W_1", "/W_2"]
    base = str(tmp_path / "dup")
    ad.save(base, [a, b])
    a2, b2 = ad.load(base, ad.ParameterCollection())
    np.testing.assert_array_equal(a2.as_array(), [1, 1])
    np.testing.assert_array_equal(b2.as_array(), [2, 2])


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("exit 3",))


def test_load_refuses_a_meta_file_that_would_run_code(tmp_path):
    """dy.load unpickles ``.meta``: a global other than a builder class (here os.system, with a harmless
    command) is refused before it can be called."""
    base = str(tmp_path / "evil")
    with open(base + ".meta", "wb") as fh:
        pickle.dump(_RunsCode(), fh)
    open(base + ".data", "w").close()
    with pytest.raises(pickle.UnpicklingError, match="evil.meta: refuses to load .*system"):
        ad.load(base, ad.ParameterCollection())


def test_save_load_objects_round_trip(tmp_path):
    m = ad.ParameterCollection()
    p = m.add_parameters((2, 3))
    b = ad.GRUBuilder(1, 3, 2, m)
    base = str(tmp_path / "objs")
    ad.save(base, [p, b])
    p2, b2 = ad.load(base, ad.ParameterCollection())
    np.testing.assert_array_equal(p2.as_array(), p.as_array())
    for x, y in zip(b.get_parameters()[0], b2.get_parameters()[0]):
        np.testing.assert_array_equal(x.as_array(), y.as_array())


def _layouts(dy):
    dy.renew_cg()
    x = dy.inputTensor(np.arange(6.0).reshape(2, 3))
    xb = dy.inputTensor(np.arange(6.0).reshape(2, 3), batched=True)
    v = dy.inputVector([1.0, -2.0, 3.0])
    return dict(
        reshape=dy.reshape(x, (3, 2)).npvalue(), softmax=dy.softmax(x).npvalue(),
        transpose=dy.transpose(v).npvalue(), batch=xb.npvalue(), batch_dim=xb.dim(),
        vec_value=xb.value(), sum_elems_batched=dy.sum_elems(xb).value(),
        layer_norm=dy.layer_norm(v, dy.inputVector([1.0, 2, 3]), dy.inputVector([0.0, 1, 0])).npvalue(),
        pick_range=dy.pick_range(v, 1, 3).npvalue(), select_cols=dy.select_cols(x, [2, 0]).npvalue(),
        concat_cols=dy.concatenate_cols([v, v * 2]).npvalue(), mean_batches=dy.mean_batches(xb).npvalue(),
        logsumexp=dy.logsumexp([dy.scalarInput(1.0), dy.scalarInput(2.0)]).value(),
        max_dim=dy.max_dim(x, 1).npvalue(), lookup_batch_dim=dy.pick_batch(xb, [0, 1, 1]).value(),
        colwise=dy.colwise_add(x, dy.inputVector([10.0, 20.0])).npvalue(),
        scalar=dy.scalarInput(3.0).npvalue(), value_vec=v.value(), value_scalar=dy.sum_elems(v).value(),
        abs=dy.abs(v).value(), cube=(v ** 3).value(), min_dim=dy.min_dim(x, 1).value(),
        argmax=dy.argmax(v, "zero_gradient").value(), max_dim0=dy.max_dim(x, 0).value(),
    )


# What real DyNet 2.2 computes for _layouts (recorded from dynet38, so the test runs without it too).
STORED = dict(
    reshape=[[0, 4], [3, 2], [1, 5]], transpose=[[1, -2, 3]], batch=[[0, 1, 2], [3, 4, 5]], batch_dim=((2,), 3),
    vec_value=[0, 3, 1, 4, 2, 5], sum_elems_batched=[3, 5, 7], pick_range=[-2, 3], select_cols=[[2, 0], [5, 3]],
    concat_cols=[[1, 2], [-2, -4], [3, 6]], mean_batches=[1, 4], max_dim=[2, 5], lookup_batch_dim=[0, 4, 5],
    colwise=[[10, 11, 12], [23, 24, 25]], scalar=[3], value_vec=[1, -2, 3], value_scalar=2,
    abs=[1, 2, 3], cube=[1, -8, 27], min_dim=[0, 3], argmax=[0, 0, 1], max_dim0=[3, 4, 5],
)


def test_layouts_match_stored_dynet_values():
    got = _layouts(ad)
    for k, want in STORED.items():
        if isinstance(want, tuple):
            assert got[k] == want, k
        else:
            np.testing.assert_allclose(got[k], want, rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(got["softmax"][:, 0], [0.04742587, 0.95257413], rtol=1e-6)
    np.testing.assert_allclose(got["logsumexp"], np.log(np.exp(1) + np.exp(2)), rtol=1e-6)


@needs_dynet
def test_layouts_match_real_dynet():
    got, want = _layouts(ad), _layouts(rd)
    for k in want:
        if isinstance(want[k], tuple):
            assert got[k] == want[k], k
        else:
            np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-6, err_msg=k)


def test_input_gradients_and_gradient_control():
    ad.renew_cg()
    x = ad.inputVector([1.0, 2.0, 3.0])
    y = ad.inputVector([4.0, 5.0, 6.0])
    loss = ad.dot_product(x, ad.nobackprop(y)) + ad.sum_elems(ad.flip_gradient(y))
    loss.forward()
    with pytest.raises(RuntimeError):
        x.gradient()
    loss.backward(full=True)
    np.testing.assert_allclose(x.gradient(), [4, 5, 6])
    np.testing.assert_allclose(y.gradient(), [-1, -1, -1])  # no gradient through nobackprop; flipped sum
    with pytest.raises(RuntimeError):
        ad.renew_cg()
        x.npvalue()  # stale: built in the previous graph


def test_minibatch_losses_equal_per_example_losses():
    m = ad.ParameterCollection()
    E = m.add_lookup_parameters((6, 4))
    W = m.add_parameters((5, 4))
    ad.renew_cg()
    per = ad.esum([ad.pickneglogsoftmax(W * ad.tanh(E[w]), t) for w, t in [(1, 2), (3, 0), (5, 4)]])
    batch = ad.sum_batches(ad.pickneglogsoftmax_batch(W * ad.tanh(ad.lookup_batch(E, [1, 3, 5])), [2, 0, 4]))
    assert batch.value() == pytest.approx(per.value(), rel=1e-6)
    batch.backward()
    g_batch = W.grad_as_array().copy()
    m._core.zero_grad()
    per.backward()
    np.testing.assert_allclose(W.grad_as_array(), g_batch, rtol=1e-5)


def test_batching_is_on_by_default_and_off_gives_the_same_numbers():
    m = ad.ParameterCollection()
    lstm = ad.LSTMBuilder(1, 3, 4, m)
    E = m.add_lookup_parameters((10, 3))
    sents = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    vals = {}
    for auto in (None, False):
        g = ad.renew_cg(autobatching=auto)
        loss = ad.esum([ad.sum_elems(lstm.initial_state().transduce([E[w] for w in s])[-1]) for s in sents])
        vals[auto] = loss.value()
        if auto is None:
            assert len(g.batches) < len(g)  # nodes of the three sentences ran together
    assert vals[None] == pytest.approx(vals[False], rel=1e-6)


def test_bad_input_is_reported_where_it_is_built():
    m = ad.ParameterCollection()
    W = m.add_parameters((3, 4))
    ad.renew_cg()
    with pytest.raises(ValueError, match="test_dynet.py"):
        W * ad.inputVector([1.0, 2.0])
    with pytest.raises(IndexError):
        ad.pickneglogsoftmax(ad.inputVector([1.0, 2.0]), 5)
    with pytest.raises(IndexError):
        ad.pick_batch(ad.inputTensor(np.zeros((2, 3)), batched=True), [0, 2, 1])
    with pytest.raises(ValueError):
        ad.VanillaLSTMBuilder(1, 2, 2, m).get_parameter_expressions()


@needs_dynet
@pytest.mark.parametrize("valid", [True, False])
def test_conv2d_and_maxpooling_match_real_dynet(valid):
    rng = np.random.default_rng(4)
    x, f, b = rng.normal(size=(7, 6, 3)), rng.normal(size=(3, 2, 3, 4)), rng.normal(size=4)
    res = []
    for dy in (rd, ad):
        dy.renew_cg()
        X, F = dy.inputTensor(x), dy.inputTensor(f)
        y = dy.conv2d_bias(X, F, dy.inputTensor(b), [2, 1], valid)
        p = dy.maxpooling2d(X, [2, 3], [2, 2], valid)
        loss = dy.sum_elems(dy.square(y)) + dy.sum_elems(dy.cmult(p, p))
        loss.forward()
        loss.backward(full=True)
        res.append((y.npvalue(), p.npvalue(), X.gradient(), F.gradient()))
    for a, r in zip(res[1], res[0]):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)


def test_reshape_changes_the_batch_size_column_major():
    ad.renew_cg()
    x = ad.inputTensor(np.arange(12.0).reshape(2, 6))
    y = ad.reshape(x, (2, 2), 3)
    assert y.dim() == ((2, 2), 3)
    np.testing.assert_array_equal(y.npvalue()[:, :, 1], [[2, 3], [8, 9]])  # 2nd block of 4 column-major values
    np.testing.assert_array_equal(ad.reshape(y, (2, 6), 1).npvalue(), x.npvalue())
    mask = ad.reshape(ad.inputVector([1.0, 0.0, 2.0]), (1,), 3)
    assert mask.dim() == ((1,), 3) and mask.value() == [1.0, 0.0, 2.0]


def test_inputs_slicing_and_minibatch_manipulation_match_numpy():
    data = np.random.default_rng(5).random((4, 5, 6))
    ad.renew_cg()
    x, xb = ad.inputTensor(data), ad.inputTensor(data, batched=True)
    np.testing.assert_allclose(x[1:3, ::2, 4:].npvalue(), data[1:3, ::2, 4:])
    np.testing.assert_allclose(xb[:2, 1:3, ::4].npvalue(), data[:2, 1:3, ::4])  # the last slice picks batch elements
    np.testing.assert_allclose(x[2].npvalue(), data[2])
    np.testing.assert_allclose(x[-1].npvalue(), data[-1])
    assert xb.dim() == ((4, 5), 6)
    np.testing.assert_allclose(ad.pick_batch_elems(xb, [5, 0]).npvalue(), data[..., [5, 0]])
    np.testing.assert_allclose(ad.concatenate_to_batch([ad.pick_batch_elem(xb, 3), ad.pick(x, 0, 2)]).npvalue(),
                               np.stack([data[..., 3], data[:, :, 0]], -1))
    sp = ad.sparse_inputTensor(([0, 1], [2, 0]), [5.0, 7.0], (2, 3))
    np.testing.assert_array_equal(sp.npvalue(), [[0, 0, 5], [7, 0, 0]])
    v = ad.vecInput(3)
    v.set([1.0, 2.0, 3.0])
    total = ad.sum_elems(v)
    assert total.value() == 6.0
    v.set([0.0, 0.0, 5.0])  # DyNet's static-graph style: the graph recomputes with the new input
    assert total.value() == 5.0
    with pytest.raises(ValueError, match=r"set\(\): 2 values for an input of shape \(3,\).*test_dynet.py"):
        v.set([1.0, 2.0])
    assert total.value() == 5.0  # the refused values changed nothing


def test_updates_respect_set_updated_and_lookup_update_false():
    m = ad.ParameterCollection()
    W = m.add_parameters(2, init=1)
    V = m.add_parameters(2, init=1)
    E = m.add_lookup_parameters((3, 2), init=1)
    t = ad.SimpleSGDTrainer(m, learning_rate=0.5)
    V.set_updated(False)
    ad.renew_cg()
    loss = ad.dot_product(W, V) + ad.sum_elems(ad.lookup(E, 1, update=False)) + ad.sum_elems(E[2])
    loss.backward()
    t.update()
    np.testing.assert_allclose(W.as_array(), [0.5, 0.5])
    np.testing.assert_allclose(V.as_array(), [1, 1])
    np.testing.assert_allclose(E.as_array(), [[1, 1], [1, 1], [0.5, 0.5]])


def test_softmax_builders():
    pc = ad.ParameterCollection()
    sm = ad.StandardSoftmaxBuilder(3, 4, pc)
    ad.renew_cg()
    r = ad.inputVector([0.5, -1.0, 2.0])
    logits = sm.W.as_array() @ r.npvalue() + sm.b.as_array()
    want = -(logits[2] - np.log(np.exp(logits).sum()))
    assert sm.neg_log_softmax(r, 2).value() == pytest.approx(want, rel=1e-5)
    rb = ad.inputTensor(np.stack([r.npvalue()] * 2, -1), batched=True)
    np.testing.assert_allclose(sm.neg_log_softmax_batch(rb, [2, 2]).value(), [want, want], rtol=1e-5)


def test_class_factored_softmax_is_a_distribution(tmp_path):
    path = tmp_path / "clusters.txt"
    path.write_text("".join(f"c{i // 3} w{i}\n" for i in range(7)))  # clusters of 3, 3 and a singleton
    words = {f"w{i}": i for i in range(7)}
    sm = ad.ClassFactoredSoftmaxBuilder(4, str(path), words, ad.ParameterCollection())
    ad.renew_cg()
    r = ad.inputVector([0.1, -0.4, 0.3, 0.9])
    nll = np.array([sm.neg_log_softmax(r, w).value() for w in range(7)])
    assert np.exp(-nll).sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(sm.full_log_distribution(r).npvalue(), -nll, rtol=1e-5)


def test_dropout_noise_and_process_setup():
    ad.dynet_config.set(mem=512, random_seed=7, autobatch=1)
    ad.DynetParams().init()
    ad.renew_cg(immediate_compute=True, check_validity=True, autobatching=True)
    x = ad.inputVector(np.ones(2000))
    kept = ad.dropout(x, 0.25).npvalue()
    np.testing.assert_allclose(np.unique(kept), [0.0, 4 / 3], rtol=1e-6)
    assert abs((kept > 0).mean() - 0.75) < 0.05
    assert abs(ad.noise(x, 0.1).npvalue().std() - 0.1) < 0.01
    np.testing.assert_array_equal(ad.dropout(x, 0.0).npvalue(), np.ones(2000))


@needs_dynet
def test_initialisers_follow_dynet_scales():
    m = ad.ParameterCollection()
    assert np.abs(m.add_parameters((30, 20)).as_array()).max() <= np.sqrt(6 / 50)
    vec = m.add_parameters(50).as_array()  # vectors are Glorot-random too, not zeros
    assert 0 < np.abs(vec).max() <= np.sqrt(3 / 50)
    assert np.abs(m.add_lookup_parameters((100, 12)).as_array()).max() <= np.sqrt(3 / 12)
    np.testing.assert_array_equal(m.add_parameters((3, 3), init="identity").as_array(), np.eye(3))
    assert m.add_parameters((400, 400), init="normal", mean=1, std=2).as_array().std() == pytest.approx(2, rel=0.05)
    names = [p.name() for p in m.parameters_list()] + [p.name() for p in m.lookup_parameters_list()]
    m_r = rd.ParameterCollection()
    for dims in ((30, 20), 50):
        m_r.add_parameters(dims)
    m_r.add_lookup_parameters((100, 12))
    m_r.add_parameters((3, 3))
    m_r.add_parameters((2, 2))
    want = [p.name() for p in m_r.parameters_list()] + [p.name() for p in m_r.lookup_parameters_list()]
    assert names == want


def test_scanned_states_answer_like_stepped_states():
    """add_inputs over single vectors runs one scan node; its states still give c (s()), prev() and further
    inputs, equal to stepping input by input."""
    m = ad.ParameterCollection()
    lstm = ad.VanillaLSTMBuilder(2, 3, 4, m)
    for p in m.parameters_list():
        p.set_value(np.random.default_rng(6).normal(size=p.shape()))
    xs = [np.random.default_rng(k).normal(size=3) for k in range(4)]
    got = {}
    for mode in ("scan", "steps"):
        g = ad.renew_cg()
        s0 = lstm.initial_state()
        inputs = [ad.inputVector(x) for x in xs]
        states = s0.add_inputs(inputs) if mode == "scan" else s0._steps(inputs)
        nxt = states[-1].add_input(ad.inputVector(xs[0]))
        got[mode] = ([e.npvalue() for e in states[2].s()], states[1].output().npvalue(), nxt.output().npvalue(),
                     states[2].prev().output().npvalue())
        if mode == "scan":
            assert any(sig.prim.name == "lstm_scan" for sig in g.n_sig)
    for a, b in zip(got["scan"], got["steps"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@needs_dynet
def test_loads_objects_saved_by_real_dynet(tmp_path):
    """dy.save of real DyNet (pickled specs + the text format) loads, and the model computes DyNet's numbers."""
    rng = np.random.default_rng(7)
    m_r = rd.ParameterCollection()
    E_r = m_r.add_lookup_parameters((6, 3))
    lstm_r = rd.VanillaLSTMBuilder(1, 3, 4, m_r)
    bi_r = rd.BiRNNBuilder(1, 3, 4, m_r, rd.GRUBuilder)
    W_r = m_r.add_parameters((2, 4))
    for p in m_r.parameters_list():
        p.set_value(rng.normal(size=p.shape()))
    base = str(tmp_path / "real")
    rd.save(base, [E_r, lstm_r, bi_r, W_r])
    E_a, lstm_a, bi_a, W_a = ad.load(base, ad.ParameterCollection())
    np.testing.assert_allclose(E_a.as_array(), E_r.as_array(), rtol=1e-7)
    outs = []
    for dy, (E, lstm, bi, W) in ((rd, (E_r, lstm_r, bi_r, W_r)), (ad, (E_a, lstm_a, bi_a, W_a))):
        dy.renew_cg()
        xs = [E[w] for w in (1, 4, 2)]
        h = lstm.initial_state().transduce(xs)[-1]
        outs.append(((W * h).npvalue(), bi.transduce(xs)[1].npvalue()))
    for a, r in zip(outs[1], outs[0]):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)


def test_static_graph_style_training_learns_xor():
    """DyNet's xor example style: one graph built once, inputs set and the loss recomputed at every step."""
    m = ad.ParameterCollection()
    W, b, V, a = m.add_parameters((8, 2)), m.add_parameters(8), m.add_parameters((1, 8)), m.add_parameters(1)
    trainer = ad.SimpleSGDTrainer(m)
    ad.renew_cg()
    x, y = ad.vecInput(2), ad.scalarInput(0)
    pred = V * ad.tanh(W * x + b) + a
    loss = ad.squared_distance(pred, y)
    data = [([1, 1], -1), ([1, -1], 1), ([-1, 1], 1), ([-1, -1], -1)]
    for _ in range(300):
        for xv, yv in data:
            x.set(xv)
            y.set(yv)
            loss.scalar_value()
            loss.backward()
            trainer.update()
    for xv, yv in data:
        x.set(xv)
        assert pred.scalar_value() == pytest.approx(yv, abs=0.1)


def test_indices_are_checked_like_the_core_api():
    # The DyNet functions use the core's index checks: a bool or a float is not an index (it used to read row 1
    # or truncate 2.7 to 2 silently), and out-of-range ids name the op.
    m = ad.ParameterCollection()
    p = m.add_lookup_parameters((5, 3))
    ad.renew_cg()
    x = ad.inputVector([1.0, 2.0, 3.0])
    for bad in (lambda: ad.lookup(p, True), lambda: ad.pick(x, True), lambda: ad.pickneglogsoftmax(x, True),
                lambda: ad.pickneglogsoftmax(x, 2.7)):
        with pytest.raises(TypeError, match="index must be an int"):
            bad()
    with pytest.raises(IndexError, match="lookup_batch: index 9"):
        ad.lookup_batch(p, [1, 9])
    assert ad.lookup(p, np.int64(2)).npvalue() == pytest.approx(p.as_array()[2])
