"""Device discipline, checked without a GPU: the strict backend (kernels/strict.py) refuses implicit host/device
moves, and the engine's explicit ones are counted and bounded: at most one upload per leaf batch, no download
but the values asked for, parameters, gradients and optimiser state kept on the device, and a Trainer that
syncs only what it prints."""
import numpy as np
import pytest

import autobatch as ab
from autobatch import data
from autobatch.examples import tagger, treelstm
from autobatch.optim import SGD, Adam
from autobatch.kernels import backend, strict
from autobatch.kernels.strict import StrictArray


@pytest.fixture
def on(request):
    """Switch to a backend for one test (``on("strict")``), back to the suite's afterwards."""
    def use(name):
        backend.use(name)
        return backend.xp

    start = backend.name
    yield use
    backend.use(start)
    ab.ParameterCollection(dtype=np.float32)  # the float32 default for later tests


def moved(before):
    """Transfers since the snapshot ``before``."""
    return {k: backend.transfers[k] - before[k] for k in before}


# ---- the strict arrays themselves ----------------------------------------------------------------------------


def test_implicit_host_conversions_raise(on):
    xp = on("strict")
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    s = a.sum()
    assert type(s) is StrictArray and s.ndim == 0  # a full reduction stays on the device, as with CuPy
    for convert in (lambda: np.asarray(a), lambda: np.array(s), lambda: float(s), lambda: bool(s), lambda: int(s),
                    lambda: list(a), lambda: a.tolist(), lambda: s.item(), lambda: a.tobytes(),
                    lambda: range(3)[s], lambda: np.stack([a, a]), lambda: a.data,
                    lambda: np.asarray([s, s])):
        with pytest.raises((TypeError, AttributeError), match="strict backend"):
            convert()


def test_host_arrays_mixed_with_device_arrays_raise(on):
    xp = on("strict")
    a, host = xp.zeros((3, 2)), np.ones((3, 2))
    for mix in (lambda: a + host, lambda: host * a, lambda: a[np.array([0, 2])], lambda: xp.concatenate([a, host]),
                lambda: a.__setitem__(slice(None), host), lambda: xp.add.at(a, xp.asarray([0]), 1.0),
                lambda: np.add.at(a, xp.asarray([0]), 1.0)):
        with pytest.raises(TypeError, match="strict backend"):
            mix()
    a += 1.5  # Python and NumPy scalars are fine, as on CuPy
    assert type(np.float32(2) * a) is StrictArray and type(np.tanh(a)) is StrictArray  # NumPy's ufuncs dispatch
    a[xp.asarray([0, 0])] += np.float64(1.0)
    backend.scatter_add(a, xp.asarray([1, 1]), xp.ones((2, 2)))  # the device scatter-add: repeats add up
    np.testing.assert_array_equal(backend.asnumpy(a), [[2.5, 2.5], [3.5, 3.5], [1.5, 1.5]])


def test_every_explicit_transfer_is_counted(on):
    xp = on("strict")
    before = dict(backend.transfers)
    host = np.arange(4, dtype=np.float32)
    a = xp.asarray(host)
    host[0] = 99  # an upload is a copy: later host changes do not reach the device
    assert xp.asarray(a) is a and backend.to_device(a) is a  # already on the device: no transfer
    backend.to_device([1, 2])
    out = backend.asnumpy(a)
    assert type(out) is np.ndarray and out[0] == 0
    assert moved(before) == {"uploads": 2, "upload_bytes": 16 + 2 * np.dtype(np.int_).itemsize, "downloads": 1,
                             "download_bytes": 16}
    assert strict.asnumpy(3.0) == 3.0  # host values pass through uncounted


# ---- the engine under it -------------------------------------------------------------------------------------


def _word_level(pc, B, T=5):
    """README's word-by-word RNN tagger on B random sentences of T words: one node per word and step."""
    E, W, b, V = pc["E"], pc["W"], pc["b"], pc["V"]
    rng = np.random.default_rng(B)
    losses = []
    for _ in range(B):
        h = ab.zeros(8)
        for w in rng.integers(0, len(E), T).tolist():
            h = ab.tanh(W @ ab.concat([E[w], h]) + b)
            losses.append(ab.pick_neg_log_softmax(V @ h, w % 5))
    return ab.esum(losses) * (1.0 / B)


def _word_model():
    pc = ab.ParameterCollection(seed=1)
    pc.add_lookup_parameters((50, 8), name="E")
    pc.add_parameters((8, 16), name="W")
    pc.add_parameters((8,), name="b")
    pc.add_parameters((5, 8), name="V")
    return pc


def _tagging_examples(n=12):
    """The BiLSTM tagger (sentence level: one scan node per minibatch) and n synthetic examples."""
    sents = data.synthetic_tagging(n, vocab_size=40, seed=n, mean_len=6, max_len=12)
    words = data.Vocab.build([s.words for s in sents])
    tags = data.Vocab.build([s.upos for s in sents], unk=None)
    model = tagger.Tagger(words, tags, embed=8, hidden=6, mlp=5, seed=0)
    return model, [model.encode(s) for s in sents]


def _sentence_tagger(n):
    model, examples = _tagging_examples(n)
    return model.pc, lambda: ab.esum([ab.sum_elems(model.loss(ex)) for ex in examples])


def _tree_model(n):
    trees = data.synthetic_trees(n, vocab_size=60, seed=n, mean_len=6, max_len=12)
    model = treelstm.TreeSentiment(data.Vocab.build([t.leaves() for t in trees]), embed=6, hidden=5)
    return model.pc, lambda: ab.esum([ab.sum_elems(model.loss(t)) for t in trees])


def _stats(build):
    ab.renew_cg()
    loss = build()
    loss.backward()
    return ab.graph_stats()


@pytest.mark.parametrize("name", ["numpy", "strict"])
def test_one_upload_per_leaf_batch_however_many_examples(on, name):
    on(name)
    for small, large in [(lambda: _word_model(), None), (_sentence_tagger, 4), (_tree_model, 4)]:
        if large is None:  # word level: same batches for 4 and 16 sentences of one length
            pc = small()
            counts = [_stats(lambda: _word_level(pc, B)) for B in (4, 16)]
        else:  # whole sentences and trees: a scan batch for any number of them
            counts = []
            for n in (large, 4 * large):
                pc, build = small(n)
                counts.append(_stats(build))
        a, b = counts
        assert a["forward_batches"] == b["forward_batches"]
        assert a["uploads"] == b["uploads"] > 0, "uploads grew with the minibatch: one per node, not per batch"
        assert a["uploads"] <= a["forward_batches"]
        assert a["downloads"] == b["downloads"] == 0  # nothing was asked for


def test_upload_and_download_counts_are_the_same_under_numpy_and_strict(on):
    seen = []
    for name in ("numpy", "strict"):
        on(name)
        pc, build = _sentence_tagger(6)
        ab.renew_cg()
        loss = build()
        loss.value()
        loss.backward()
        pc["E"].grad
        s = ab.graph_stats()
        seen.append({k: s[k] for k in backend.transfers})
    numpy_run, strict_run = seen
    if ab.compiled:  # compiled, NumPy's rows gathered from earlier batches are copied by C: no index array uploaded
        assert numpy_run["uploads"] < strict_run["uploads"]
        for k in ("uploads", "upload_bytes"):
            del numpy_run[k], strict_run[k]
    assert numpy_run == strict_run and numpy_run["downloads"] == 2


def test_no_download_but_the_values_asked_for(on):
    on("strict")
    pc = _word_model()
    ab.renew_cg()
    loss = _word_level(pc, 6)
    loss.backward()  # forward and backward: nothing comes back
    assert ab.graph_stats()["downloads"] == 0
    value = loss.value()
    assert isinstance(value, float) and ab.graph_stats()["downloads"] == 1
    assert ab.graph_stats()["download_bytes"] == np.dtype(np.float32).itemsize  # the one scalar, not a batch
    pc["W"].grad
    assert ab.graph_stats()["downloads"] == 2


def test_parameters_gradients_and_optimiser_state_stay_on_the_device(on):
    on("strict")
    pc, build = _sentence_tagger(6)
    opt = Adam(pc, lr=0.01)
    for _ in range(3):
        before = dict(backend.transfers)
        ab.renew_cg()
        opt.zero_grad()
        build().backward()
        for p in pc.parameters():
            grads = p.sparse_grad() if p.is_lookup else (p.grad_data(),)
            assert all(type(g) is StrictArray for g in grads), p.name
        graph = moved(before)
        opt.step()
        assert moved(before) == graph, "the optimiser step moved data between host and device"
        assert graph["downloads"] == 0 and graph["uploads"] <= ab.graph_stats()["forward_batches"]
    for p in pc.parameters():
        assert type(p.data) is StrictArray
        assert all(type(v) is StrictArray for k, v in opt.state[p.name].items() if k != "step")


def test_trainer_syncs_only_what_it_prints(on):
    on("strict")
    model, examples = _tagging_examples()
    trainer = ab.Trainer(model.pc, model.loss, Adam(model.pc, lr=0.01), batch_size=4, clip=5.0, progress=False,
                         seed=0)
    before = dict(backend.transfers)
    trainer.fit(examples, epochs=2)
    steps = trainer.step
    assert steps == 6
    # Per step the loss and the gradient norm, both shown on the progress bar: two scalars, nothing else.
    assert moved(before)["downloads"] == 2 * steps
    assert moved(before)["download_bytes"] <= 2 * steps * 8



def _train(make, steps=3):
    """Losses and final parameters of ``steps`` clipped SGD-with-momentum updates (linear in the gradients, so
    round-off stays round-off; Adam's normalisation would magnify it on near-zero gradients)."""
    pc, build = make()
    opt = SGD(pc, lr=0.5, momentum=0.9)
    losses = []
    for _ in range(steps):
        ab.renew_cg()
        opt.zero_grad()
        loss = build()
        losses.append(loss.value())
        loss.backward()
        ab.clip_grad_norm(pc, 1.0)
        opt.step()
    return losses, {p.name: p.value() for p in pc.parameters()}


def _word_task():
    pc = _word_model()
    return pc, lambda: _word_level(pc, 6)


@pytest.mark.parametrize("make", [_word_task, lambda: _sentence_tagger(6), lambda: _tree_model(6)],
                         ids=["word-level", "tagger", "tree"])
def test_training_matches_numpy_to_float32_round_off(make, xp_backend):
    """Whole training steps (forward, backward, clipping, the update) on each backend equal NumPy's in float32."""
    losses, params = _train(make)
    backend.use("numpy")
    ref_losses, ref_params = _train(make)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for name, value in params.items():
        np.testing.assert_allclose(value, ref_params[name], rtol=1e-3, atol=1e-5, err_msg=name)


# ---- the one-shot GPU script's code path, on the CPU ---------------------------------------------------------


@pytest.mark.parametrize("task", ["tagger", "tree", "lm"])
def test_gpu_check_measures_every_system_on_the_cpu(task, on):
    pytest.importorskip("torch")
    from bench import gpu_check
    from bench.peers import tasks

    on("numpy")
    td = tasks.load(task, 6, None, 0)
    runs = [gpu_check.measure(task, system, 2, td, warmup=1, timed=2, device="cpu") for system in gpu_check.SYSTEMS]
    for r in runs:
        assert r["sentences"] == 4 and r["updates"] == 2 and r["sents_per_s"] > 0 and np.isfinite(r["loss_per_term"])
    seq, torch_run, steps = runs
    assert seq["loss_per_term"] == pytest.approx(steps["loss_per_term"], rel=1e-4)  # one model, two writings
    # Per update: the leaf batches go up, the loss and gradient norm come down (clipping), nothing else.
    assert seq["transfers_per_update"]["downloads"] == 2 and seq["transfers_per_update"]["uploads"] > 0
    report = {"tests": {"exit_code": 0}, "runs": [dict(r, task="tagger", batch_size=64) for r in runs]}
    targets = gpu_check._targets(report, cpu_tree_256=None)
    # (the target is rounded to 3 decimals: on this tiny task the ratio can be 0.03, where that is over 1%)
    assert targets["tests_pass"] and targets["tagger_seq_over_torch_mb64"] == pytest.approx(
        seq["sents_per_s"] / torch_run["sents_per_s"], abs=5e-4)
