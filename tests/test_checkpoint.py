"""Checkpoints: round trips, identical continuation after resume, atomic saves, and every load error."""
import json
import os

import numpy as np
import pytest

import autobatch as ab
from autobatch import checkpoint, data
from autobatch.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from autobatch.optim import SGD, Adam, GradNormMonitor
from autobatch.train import Trainer


class NoisyTagger:
    """Per-token tagger whose embeddings get noise from ``pc.rng`` (like dropout), so a resume must restore
    that stream as well as the shuffling order, the optimiser moments and the clipping threshold."""

    def __init__(self, seed=0):
        self.pc = ab.ParameterCollection(seed=seed)
        self.E = self.pc.add_lookup_parameters((60, 6), name="E")
        self.V = self.pc.add_parameters((5, 6), name="V")
        self.c = self.pc.add_parameters(5, name="c")

    def loss(self, ex):
        words, tags = ex
        noise = self.pc.rng.normal(0.0, 0.1, size=(len(words), 6))
        return [ab.pick_neg_log_softmax(ab.affine(self.c, self.V, self.E[w] + ab.input_tensor(z)), t)
                for w, t, z in zip(words, tags, noise)]

    def accuracy(self, examples):
        ab.renew_cg()
        outs = [(ab.affine(self.c, self.V, self.E[w]), t) for words, tags in examples for w, t in zip(words, tags)]
        ab.esum([ab.sum_elems(o) for o, _ in outs]).value()
        return float(np.mean([int(np.argmax(o.value())) == t for o, t in outs]))


def _data():
    sents = data.synthetic_tagging(30, vocab_size=60, n_tags=5, seed=0, mean_len=5, max_len=10)
    tags = list(data.UPOS_TAGS[:5])
    pairs = [([int(w[1:]) for w in s.words], [tags.index(t) for t in s.upos]) for s in sents]
    return pairs[:24], pairs[24:]


def _trainer(model, tmp_path, **kw):
    return Trainer(model.pc, model.loss, Adam(model.pc, lr=0.05), batch_size=5,
                   clip=GradNormMonitor("auto", percentile=80, warmup=3), evaluate=model.accuracy, patience=10,
                   checkpoint_dir=str(tmp_path / "ckpt"), log_path=str(tmp_path / "log.jsonl"), progress=False, **kw)


def _same_run(a, b):
    for p, q in zip(a.pc.parameters(), b.pc.parameters()):
        np.testing.assert_array_equal(p.value(), q.value())
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_s")} for r in h]
    assert strip(a.history) == strip(b.history)
    assert a.monitor.norms == b.monitor.norms and a.monitor.threshold == b.monitor.threshold
    assert a.step_losses == b.step_losses and a.step == b.step and a.epoch == b.epoch
    for name, st in a.optimizer.state.items():
        for k, v in st.items():
            np.testing.assert_array_equal(v, b.optimizer.state[name][k])


def test_resume_continues_identically(tmp_path):
    train, dev = _data()
    straight = _trainer(NoisyTagger(), tmp_path / "a")
    straight.fit(train, dev, epochs=4)

    first = _trainer(NoisyTagger(), tmp_path / "b")
    first.fit(train, dev, epochs=2)
    second = _trainer(NoisyTagger(seed=99), tmp_path / "b")  # a fresh process would build a fresh model
    second.resume(str(tmp_path / "b" / "ckpt" / "last.npz"))
    assert second.epoch == 2 and second.monitor.threshold is not None
    second.fit(train, dev, epochs=4)
    _same_run(straight, second)
    log = [json.loads(line)["epoch"] for line in open(tmp_path / "b" / "log.jsonl")]
    assert log == [1, 2, 3, 4]


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path):
    train, dev = _data()
    straight = _trainer(NoisyTagger(), tmp_path / "a")
    straight.fit(train, dev, epochs=4)

    model = NoisyTagger()
    calls = [0]

    def crashing_loss(ex):
        calls[0] += 1
        if calls[0] == 2 * len(train) + 7:  # in the middle of epoch 3
            raise KeyboardInterrupt
        return model.loss(ex)

    crashing = _trainer(model, tmp_path / "b")
    crashing.loss_fn = crashing_loss
    with pytest.raises(KeyboardInterrupt):
        crashing.fit(train, dev, epochs=4)
    assert crashing.epoch == 2

    again = _trainer(NoisyTagger(seed=5), tmp_path / "b")
    again.fit(train, dev, epochs=4, resume=True)
    _same_run(straight, again)
    assert [json.loads(line)["epoch"] for line in open(tmp_path / "b" / "log.jsonl")] == [1, 2, 3, 4]

    fresh = _trainer(NoisyTagger(), tmp_path / "c")  # resume=True with no checkpoint yet: a normal start
    fresh.fit(train, dev, epochs=1, resume=True)
    assert fresh.epoch == 1 and os.path.exists(tmp_path / "c" / "ckpt" / "last.npz")


def test_keep_epochs_writes_one_checkpoint_per_epoch(tmp_path):
    train, _ = _data()
    m = NoisyTagger()
    t = Trainer(m.pc, m.loss, batch_size=8, checkpoint_dir=str(tmp_path), keep_epochs=True, progress=False)
    t.fit(train, epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["epoch_001.npz", "epoch_002.npz", "epoch_003.npz", "last.npz"]
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "epoch_003.npz")["params"]["V"], m.V.value())


def _collection(seed=0, shape=(3, 2)):
    pc = ab.ParameterCollection(seed=seed, dtype=np.float64)
    pc.add_parameters(shape, name="W")
    pc.add_lookup_parameters((4, 2), name="E")
    return pc


def _grads(pc, k):
    pc.zero_grad()
    pc["W"].accumulate(np.full(pc["W"].shape, 0.1 * (k + 1)))
    pc["E"].accumulate_rows(np.array([k % 4, 1]), np.ones((2, 2)))


def test_round_trip_parameters_optimiser_and_extra_state(tmp_path):
    pc = _collection()
    opt = Adam(pc, lr=0.1)
    for k in range(3):
        _grads(pc, k)
        opt.step()
    extra = {"epoch": 3, "name": "run", "none": None, "pair": (1, 2.5), "arr": np.arange(4.0),
             "nested": {"rng": np.random.default_rng(0).bit_generator.state, "xs": [np.ones(2), 7]}}
    path = save_checkpoint(tmp_path / "m.npz", pc, opt, **extra)

    pc2 = _collection(seed=1)
    opt2 = Adam(pc2, lr=0.5)
    got = load_checkpoint(path, pc2, opt2)
    assert got["epoch"] == 3 and got["name"] == "run" and got["none"] is None and got["pair"] == [1, 2.5]
    np.testing.assert_array_equal(got["arr"], np.arange(4.0))
    assert got["nested"]["rng"] == extra["nested"]["rng"] and got["nested"]["xs"][1] == 7
    assert opt2.lr == 0.1
    for k in range(3, 6):  # identical continuation
        for p_, o_ in ((pc, opt), (pc2, opt2)):
            _grads(p_, k)
            o_.step()
    for p, q in zip(pc.parameters(), pc2.parameters()):
        np.testing.assert_array_equal(p.value(), q.value())
    ck = read_checkpoint(path)
    assert sorted(ck["params"]) == ["E", "W"] and ck["optimizer"]["type"] == "Adam"
    ab.ParameterCollection()


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "interrupt"])
def test_an_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, failure):
    pc = _collection()
    path = tmp_path / "model.npz"
    save_checkpoint(path, pc, SGD(pc, lr=0.1), epoch=1)
    before = pc["W"].value()
    pc["W"].set_value(before + 1.0)
    real = checkpoint._write_npz

    def half_then_fail(f, arrays):
        import io

        buf = io.BytesIO()
        real(buf, arrays)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise failure

    monkeypatch.setattr(checkpoint, "_write_npz", half_then_fail)
    with pytest.raises(type(failure)):
        save_checkpoint(path, pc, epoch=2)
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    fresh = _collection(seed=3)
    assert load_checkpoint(path, fresh)["epoch"] == 1
    np.testing.assert_array_equal(fresh["W"].value(), before)
    monkeypatch.undo()
    save_checkpoint(path, pc, epoch=2)
    assert load_checkpoint(path, fresh)["epoch"] == 2
    ab.ParameterCollection()


def test_strict_false_loads_the_common_parameters(tmp_path):
    pc = _collection()
    save_checkpoint(tmp_path / "m.npz", pc)
    other = ab.ParameterCollection(dtype=np.float64)
    W = other.add_parameters((3, 2), name="W")
    other.add_parameters((5,), name="extra")
    load_checkpoint(tmp_path / "m.npz", other, strict=False)
    np.testing.assert_array_equal(W.value(), pc["W"].value())
    ab.ParameterCollection()


def test_load_errors_change_nothing(tmp_path):
    pc = _collection()
    path = save_checkpoint(tmp_path / "m.npz", pc, SGD(pc, lr=0.1))
    no_opt = save_checkpoint(tmp_path / "p.npz", pc)

    renamed = ab.ParameterCollection(dtype=np.float64)
    renamed.add_parameters((3, 2), name="W2")
    renamed.add_lookup_parameters((4, 2), name="E")
    with pytest.raises(ValueError, match=r"missing from the checkpoint \['W2'\], in the checkpoint but not in the "
                                         r"collection \['W'\]"):
        load_checkpoint(path, renamed)

    wrong = _collection(seed=1, shape=(2, 3))
    before = wrong["E"].value()
    with pytest.raises(ValueError, match=r"parameter 'W' has shape \(3, 2\) in the checkpoint, \(2, 3\) in the"):
        load_checkpoint(path, wrong)
    np.testing.assert_array_equal(wrong["E"].value(), before)  # E matched but was not loaded

    other = _collection(seed=2)
    before = other["W"].value()
    with pytest.raises(ValueError, match="holds no optimiser state"):
        load_checkpoint(no_opt, other, Adam(other))
    with pytest.raises(ValueError, match="optimiser state is for SGD, not Adam"):
        load_checkpoint(path, other, Adam(other))
    np.testing.assert_array_equal(other["W"].value(), before)

    np.savez(tmp_path / "plain.npz", W=np.zeros(2))
    with pytest.raises(ValueError, match="is not an autobatch checkpoint"):
        read_checkpoint(tmp_path / "plain.npz")
    np.savez(tmp_path / "future.npz", __meta__=np.array(json.dumps({"format": checkpoint.FORMAT, "version": 99})))
    with pytest.raises(ValueError, match="unsupported checkpoint format 'autobatch-checkpoint' version 99"):
        read_checkpoint(tmp_path / "future.npz")

    with pytest.raises(TypeError, match=r"cannot store extra.when of type object"):
        save_checkpoint(tmp_path / "x.npz", pc, when=object())
    with pytest.raises(TypeError, match=r"extra.table has a key 3 of type int; keys must be str"):
        save_checkpoint(tmp_path / "x.npz", pc, table={3: "x"})
    assert not os.path.exists(tmp_path / "x.npz")
    ab.ParameterCollection()


def test_trainer_resume_errors(tmp_path):
    train, dev = _data()
    m = NoisyTagger()
    save_checkpoint(tmp_path / "bare.npz", m.pc, Adam(m.pc))
    with pytest.raises(ValueError, match="holds no Trainer state"):
        Trainer(m.pc, m.loss, Adam(m.pc), progress=False).resume(tmp_path / "bare.npz")
    with_dev = _trainer(m, tmp_path)
    with_dev.fit(train, dev, epochs=1)
    plain = Trainer(m.pc, m.loss, Adam(m.pc, lr=0.05), progress=False)
    with pytest.raises(ValueError, match="disagree on early stopping"):
        plain.resume(tmp_path / "ckpt" / "last.npz")
