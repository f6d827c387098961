"""Optimisers against torch.optim step for step, sparse lookup updates against references, clipping by global
norm, and the gradient-norm monitor."""
import numpy as np
import pytest

import autobatch as ab
from autobatch.optim import SGD, Adam, GradNormMonitor, clip_grad_norm, grad_norm
from autobatch.kernels import backend

SHAPES = {"W": (4, 3), "b": (4,), "E": (6, 3)}


def _model(dtype=np.float64):
    pc = ab.ParameterCollection(seed=0, dtype=dtype)
    pc.add_parameters(SHAPES["W"], init="normal", name="W")
    pc.add_parameters(SHAPES["b"], init="normal", name="b")
    pc.add_lookup_parameters(SHAPES["E"], name="E")
    return pc


def _gradients(steps, seed=1):
    """Per step: a dense gradient per dense parameter and (rows with repeats, row grads) for the table; the
    bias gets none at step 2, so both sides must skip it."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        g = {"W": rng.normal(size=SHAPES["W"]), "b": None if t == 2 else rng.normal(size=SHAPES["b"])}
        idx = rng.choice(SHAPES["E"][0], size=4)
        g["E"] = (idx, rng.normal(size=(4, SHAPES["E"][1])))
        out.append(g)
    return out


def _set_grads(pc, g):
    pc.zero_grad()
    pc["W"].accumulate(g["W"])
    if g["b"] is not None:
        pc["b"].accumulate(g["b"])
    pc["E"].accumulate_rows(*g["E"])


def _dense_lookup(g):
    dense = np.zeros(SHAPES["E"])
    np.add.at(dense, g["E"][0], g["E"][1])
    return dense


OPTIMISERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
]


@pytest.mark.parametrize("name, kw", OPTIMISERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMISERS)])
def test_matches_torch_step_for_step(name, kw):
    torch = pytest.importorskip("torch")
    pc = _model()
    ours = {"SGD": SGD, "Adam": Adam}[name](pc, sparse=False, **kw)
    theirs_params = {p.name: torch.tensor(p.value(), requires_grad=True) for p in pc.parameters()}
    theirs = getattr(torch.optim, name)(list(theirs_params.values()), **kw)
    for g in _gradients(6):
        _set_grads(pc, g)
        ours.step()
        for n, t in theirs_params.items():
            grad = _dense_lookup(g) if n == "E" else g[n]
            t.grad = None if grad is None else torch.tensor(grad)
        theirs.step()
        for p in pc.parameters():
            np.testing.assert_allclose(p.value(), theirs_params[p.name].detach().numpy(), rtol=1e-12, atol=1e-14)
    ab.ParameterCollection()  # restore the float32 default


def test_float32_adam_tracks_torch():
    torch = pytest.importorskip("torch")
    pc = _model(np.float32)
    ours = Adam(pc, lr=0.01, sparse=False)
    tp = {p.name: torch.tensor(p.value(), requires_grad=True) for p in pc.parameters()}
    theirs = torch.optim.Adam(list(tp.values()), lr=0.01)
    for g in _gradients(5):
        _set_grads(pc, {k: (v if k == "E" or v is None else v.astype(np.float32)) for k, v in g.items()})
        ours.step()
        for n, t in tp.items():
            grad = _dense_lookup(g) if n == "E" else g[n]
            t.grad = None if grad is None else torch.tensor(grad, dtype=torch.float32)
        theirs.step()
    for p in pc.parameters():
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.value(), tp[p.name].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sparse_adam_matches_torch_sparse_adam():
    # SparseAdam adds eps to sqrt(v) before bias correction, Adam after; with a negligible eps they agree.
    torch = pytest.importorskip("torch")
    pc = _model()
    E = pc["E"]
    ours = Adam([E], lr=0.01, eps=1e-30)
    t = torch.tensor(E.value(), requires_grad=True)
    theirs = torch.optim.SparseAdam([t], lr=0.01, eps=1e-30)
    for g in _gradients(6):
        E.zero_grad()
        E.accumulate_rows(*g["E"])
        ours.step()
        idx, rows = g["E"]
        t.grad = torch.sparse_coo_tensor(torch.tensor(idx)[None], torch.tensor(rows), SHAPES["E"],
                                         check_invariants=True)
        theirs.step()
        np.testing.assert_allclose(E.value(), t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sparse_adam_matches_numpy_reference_and_leaves_untouched_rows():
    pc = _model()
    E = pc["E"]
    value = E.value()
    m, v = np.zeros_like(value), np.zeros_like(value)
    opt = Adam(pc, lr=0.02, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1)
    for t, g in enumerate(_gradients(5), start=1):
        before = E.value()
        state_before = {k: opt.state["E"][k].copy() for k in ("exp_avg", "exp_avg_sq")} if t > 1 else None
        _set_grads(pc, g)
        opt.step()
        rows = np.unique(g["E"][0])
        grad = _dense_lookup(g)[rows] + 0.1 * value[rows]
        m[rows] = 0.9 * m[rows] + 0.1 * grad
        v[rows] = 0.99 * v[rows] + 0.01 * grad ** 2
        value[rows] -= 0.02 / (1 - 0.9 ** t) * m[rows] / (np.sqrt(v[rows]) / np.sqrt(1 - 0.99 ** t) + 1e-3)
        np.testing.assert_allclose(E.value(), value, rtol=1e-12)
        untouched = np.setdiff1d(np.arange(SHAPES["E"][0]), rows)
        np.testing.assert_array_equal(E.value()[untouched], before[untouched])
        if state_before is not None:
            for k in state_before:
                np.testing.assert_array_equal(backend.asnumpy(opt.state["E"][k])[untouched],
                                              backend.asnumpy(state_before[k])[untouched])


def test_sparse_sgd_is_dense_sgd_without_momentum_and_lazy_with_it():
    pcs = [_model(), _model()]
    plain = [SGD(pcs[0], lr=0.1), SGD(pcs[1], lr=0.1, sparse=False)]
    for g in _gradients(4):
        for pc, opt in zip(pcs, plain):
            _set_grads(pc, g)
            opt.step()
    np.testing.assert_allclose(pcs[0]["E"].value(), pcs[1]["E"].value(), rtol=1e-12)

    pc = _model()
    E = pc["E"]
    value, buf = E.value(), np.zeros(SHAPES["E"])
    opt = SGD(pc, lr=0.1, momentum=0.9)
    for g in _gradients(4):
        _set_grads(pc, g)
        opt.step()
        rows = np.unique(g["E"][0])
        buf[rows] = 0.9 * buf[rows] + _dense_lookup(g)[rows]
        value[rows] -= 0.1 * buf[rows]
        np.testing.assert_allclose(E.value(), value, rtol=1e-12)


def test_zero_grad_and_step_on_a_real_graph(pc64):
    W = pc64.add_parameters((2, 2), init=np.eye(2))
    opt = SGD(pc64, lr=0.5)
    ab.renew_cg()
    ab.sum_elems(W @ ab.input_tensor([1.0, 2.0])).backward()
    opt.step()
    np.testing.assert_allclose(W.value(), np.eye(2) - 0.5 * np.array([[1, 2], [1, 2]]))
    opt.zero_grad()
    assert not W.has_grad()
    opt.step()  # no gradient: nothing moves, no state is created
    np.testing.assert_allclose(W.value(), np.eye(2) - 0.5 * np.array([[1, 2], [1, 2]]))


def test_state_dict_round_trip_continues_identically():
    pcs = [_model(), _model()]
    opts = [Adam(pcs[0], lr=0.01), Adam(pcs[1], lr=0.5)]
    grads = _gradients(6)
    for g in grads[:3]:
        _set_grads(pcs[0], g)
        opts[0].step()
    for p, q in zip(pcs[0].parameters(), pcs[1].parameters()):
        q.set_value(p.value())
    opts[1].load_state_dict(opts[0].state_dict())
    assert opts[1].lr == 0.01 and opts[1].betas == (0.9, 0.999)
    for g in grads[3:]:
        for pc, opt in zip(pcs, opts):
            _set_grads(pc, g)
            opt.step()
    for p, q in zip(pcs[0].parameters(), pcs[1].parameters()):
        np.testing.assert_array_equal(p.value(), q.value())


def test_optimiser_errors():
    pc = _model()
    with pytest.raises(ValueError, match="learning rate must be >= 0"):
        SGD(pc, lr=-1)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        Adam(pc, weight_decay=-0.1)
    with pytest.raises(ValueError, match="momentum must be >= 0"):
        SGD(pc, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        SGD(pc, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas must lie in \[0, 1\)"):
        Adam(pc, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        Adam(pc, eps=-1e-8)
    other = ab.ParameterCollection(dtype=np.float64)
    other.add_parameters((2,), name="W")
    with pytest.raises(ValueError, match=r"parameters named \['W'\] appear more than once"):
        Adam(pc.parameters() + other.parameters())
    with pytest.raises(ValueError, match="optimiser state is for SGD, not Adam"):
        Adam(pc).load_state_dict(SGD(pc, lr=0.1).state_dict())
    sgd = SGD(other, lr=0.1)
    other["W"].accumulate(np.ones(2))
    sgd.step()
    with pytest.raises(ValueError, match=r"names parameters \['ghost'\] that this optimiser does not have"):
        sd = sgd.state_dict()
        sd["state"]["ghost"] = sd["state"].pop("W")
        SGD(other, lr=0.1).load_state_dict(sd)
    ab.ParameterCollection()


# ---- clipping -----------------------------------------------------------------------------------------------


def test_clip_grad_norm_matches_torch_and_treats_lookups_sparsely():
    torch = pytest.importorskip("torch")
    pc = _model()
    g = _gradients(1)[0]
    _set_grads(pc, g)
    dense = {"W": g["W"], "b": g["b"], "E": _dense_lookup(g)}
    tensors = [torch.zeros(SHAPES[n], dtype=torch.float64) for n in dense]
    for t, n in zip(tensors, dense):
        t.grad = torch.tensor(dense[n])
    expected = float(torch.nn.utils.clip_grad_norm_(tensors, 1.5))
    assert grad_norm(pc) == pytest.approx(expected, rel=1e-12)
    rows_before = pc["E"].sparse_grad()[0].copy()
    assert clip_grad_norm(pc, 1.5) == pytest.approx(expected, rel=1e-12)
    for t, p in zip(tensors, pc.parameters()):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)
    # still sparse, same rows
    np.testing.assert_array_equal(backend.asnumpy(pc["E"].sparse_grad()[0]), backend.asnumpy(rows_before))
    assert grad_norm(pc) == pytest.approx(1.5, rel=1e-6)
    assert clip_grad_norm(pc, 100.0) == pytest.approx(1.5, rel=1e-6)  # below the threshold: untouched
    assert grad_norm(pc) == pytest.approx(1.5, rel=1e-6)


def test_scaling_sparse_grad_rows_in_place_scales_the_stored_gradient(pc64):
    E = pc64.add_lookup_parameters((5, 2))
    ab.renew_cg()
    ab.esum([ab.sum_elems(E[i]) for i in (3, 1, 3)]).backward()
    rows, g = E.sparse_grad()
    g *= 0.5
    rows2, g2 = E.sparse_grad()
    np.testing.assert_array_equal(backend.asnumpy(rows2), [1, 3])
    np.testing.assert_allclose(backend.asnumpy(g2), [[0.5, 0.5], [1.0, 1.0]])
    np.testing.assert_allclose(E.grad[[1, 3]], [[0.5, 0.5], [1.0, 1.0]])


def test_clip_table_used_whole_and_looked_up(pc64):
    # Such a table's sparse_grad() is a fresh dense copy each time: clipping must store the scaled copy back.
    E = pc64.add_lookup_parameters((3, 2))
    ab.renew_cg()
    (ab.sum_elems(ab.parameter(E) * 2.0) + ab.sum_elems(E[1])).backward()
    full = np.array([[2.0, 2.0], [3.0, 3.0], [2.0, 2.0]])
    norm = clip_grad_norm([E], 1.0)
    assert norm == pytest.approx(np.linalg.norm(full))
    np.testing.assert_allclose(E.grad, full / (norm + 1e-6))


def test_clip_leaves_non_finite_gradients_alone_and_rejects_bad_max_norm(pc64):
    W = pc64.add_parameters((2,))
    W.accumulate(np.array([np.inf, 1.0]))
    assert clip_grad_norm(pc64, 1.0) == np.inf
    np.testing.assert_array_equal(W.grad, [np.inf, 1.0])
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        clip_grad_norm(pc64, 0.0)


def test_grad_norm_monitor_fixed_and_auto(tmp_path, pc64):
    W = pc64.add_parameters((3,))
    norms = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0]

    def run(monitor):
        seen = []
        for n in norms:
            W.zero_grad()
            W.accumulate(np.array([n, 0.0, 0.0]))
            assert monitor(pc64) == pytest.approx(n)
            seen.append(float(np.linalg.norm(W.grad)))
        return seen

    record = GradNormMonitor()
    assert run(record) == pytest.approx(norms) and record.threshold is None
    assert record.norms == pytest.approx(norms)

    fixed = GradNormMonitor(max_norm=2.5)
    assert run(fixed) == pytest.approx([1.0, 2.0, 2.5, 2.5, 2.5, 2.5], rel=1e-5)

    auto = GradNormMonitor("auto", percentile=50, warmup=4)
    seen = run(auto)
    assert auto.threshold == pytest.approx(2.5)  # the median of the first 4 norms
    assert seen[:4] == pytest.approx(norms[:4])  # nothing clipped while warming up
    assert seen[4:] == pytest.approx([2.5, 2.5], rel=1e-5)

    s = auto.summary()
    assert s["steps"] == 6 and s["max"] == pytest.approx(20.0) and s["median"] == pytest.approx(3.5)
    assert s["threshold"] == pytest.approx(2.5)
    path = auto.plot(tmp_path / "norms.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    copy = GradNormMonitor("auto", warmup=100)
    copy.load_state_dict(auto.state_dict())
    assert copy.threshold == auto.threshold and copy.norms == auto.norms and copy.warmup == 4


def test_grad_norm_monitor_errors():
    with pytest.raises(ValueError, match="max_norm must be None, 'auto' or a number > 0"):
        GradNormMonitor("max")
    with pytest.raises(ValueError, match="max_norm must be None, 'auto' or a number > 0"):
        GradNormMonitor(-1.0)
    with pytest.raises(ValueError, match=r"percentile must lie in \(0, 100\]"):
        GradNormMonitor("auto", percentile=0)
    with pytest.raises(ValueError, match="warmup must be >= 1 step"):
        GradNormMonitor("auto", warmup=0)
