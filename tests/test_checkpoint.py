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
from autobatch.kernels import backend


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
            np.testing.assert_array_equal(backend.asnumpy(v), backend.asnumpy(b.optimizer.state[name][k]))


def _straight_and_first(tmp_path, epochs, first_epochs):
    """A run of ``epochs`` epochs in ``tmp_path/a``, and one of ``first_epochs`` in ``tmp_path/b``."""
    train, dev = _data()
    straight = _trainer(NoisyTagger(), tmp_path / "a")
    straight.fit(train, dev, epochs=epochs)
    first = _trainer(NoisyTagger(), tmp_path / "b")
    first.fit(train, dev, epochs=first_epochs)
    return train, dev, straight


def test_resume_continues_identically(tmp_path):
    train, dev, straight = _straight_and_first(tmp_path, 4, 2)
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
    assert sorted(os.listdir(tmp_path)) == ["epoch_001.npz", "epoch_002.npz", "epoch_003.npz", "last.npz",
                                            "previous.npz"]
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


# ---- killed writers, unreadable files, falling back, refusing without changing anything --------------------


def _killed_mid_save(path, pc):
    """Fork a child that starts ``save_checkpoint(path, pc)`` and is killed with SIGKILL half-way through
    writing, as ``kill -9`` does; returns its temporary file's path and size."""
    import signal

    folder = os.path.dirname(path)
    before = set(os.listdir(folder))
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            def half_then_die(f, arrays):
                import io

                buf = io.BytesIO()
                np.savez(buf, **arrays)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            checkpoint._write_npz = half_then_die
            save_checkpoint(path, pc, epoch=2)
        finally:
            os._exit(3)  # only reached if SIGKILL did not come
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    (tmp,) = set(os.listdir(folder)) - before
    tmp = os.path.join(folder, tmp)
    return tmp, os.path.getsize(tmp)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_temp_files_of_writers_killed_with_sigkill_are_removed_by_the_next_save(tmp_path):
    pc = _collection()
    path = str(tmp_path / "model.npz")
    save_checkpoint(path, pc, epoch=1)
    tmp, size = _killed_mid_save(path, pc)
    assert size > 100 and os.path.basename(tmp).startswith(".model.npz.")
    assert load_checkpoint(path, _collection(seed=3))["epoch"] == 1  # the last good one is intact
    # the temporary file of another checkpoint that a living writer is writing: kept
    with open(tmp_path / ".other.npz.1.0123abcd.tmp", "wb") as live:
        import fcntl

        fcntl.flock(live.fileno(), fcntl.LOCK_EX)
        save_checkpoint(path, pc, epoch=2)
        assert sorted(os.listdir(tmp_path)) == [".other.npz.1.0123abcd.tmp", "model.npz"]
        assert checkpoint.remove_stale_temps(str(tmp_path)) == []  # its writer holds it
    # Unlocked, written by pid 1 (alive: a reused pid) a minute ago: abandoned. Moments ago, it could be a
    # writer between creating its file and locking it (test_a_cleaner_spares_a_writer_that_has_not_locked_yet).
    old = os.path.getmtime(tmp_path / ".other.npz.1.0123abcd.tmp") - 2 * checkpoint._GAP_S
    os.utime(tmp_path / ".other.npz.1.0123abcd.tmp", (old, old))
    assert checkpoint.remove_stale_temps(str(tmp_path)) == [str(tmp_path / ".other.npz.1.0123abcd.tmp")]
    assert load_checkpoint(path, _collection(seed=3))["epoch"] == 2
    ab.ParameterCollection()


@pytest.mark.skipif(checkpoint.fcntl is None, reason="needs fcntl.flock")
def test_a_cleaner_spares_a_writer_that_has_not_locked_yet(tmp_path, monkeypatch):
    """Another process cleaning the folder (its fit(resume=True)) between a writer's creating its temporary file
    and locking it used to delete it: the save then failed, and with ``previous`` left no last.npz at all."""
    pc = _collection()
    path = str(tmp_path / "last.npz")
    save_checkpoint(path, pc, epoch=1)
    real, removed = checkpoint.fcntl.flock, []

    def flock(fd, op):
        if op == checkpoint.fcntl.LOCK_EX and not removed:  # the writer's own lock, about to be taken
            removed.append(checkpoint.remove_stale_temps(str(tmp_path)))
        return real(fd, op)

    monkeypatch.setattr(checkpoint.fcntl, "flock", flock)
    save_checkpoint(path, pc, previous=str(tmp_path / "previous.npz"), epoch=2)
    assert removed == [[]]
    assert load_checkpoint(path, _collection(seed=3))["epoch"] == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_resume_removes_temp_files_of_killed_writers(tmp_path):
    train, _ = _data()
    m = NoisyTagger()
    t = Trainer(m.pc, m.loss, batch_size=8, checkpoint_dir=str(tmp_path), progress=False)
    t.fit(train, epochs=1)
    tmp, _ = _killed_mid_save(str(tmp_path / "last.npz"), m.pc)
    again = Trainer(NoisyTagger().pc, m.loss, batch_size=8, checkpoint_dir=str(tmp_path), progress=False)
    again.fit(train, epochs=1, resume=True)  # nothing left to train: resuming alone cleans up
    assert again.epoch == 1 and not os.path.exists(tmp) and os.listdir(tmp_path) == ["last.npz"]


def test_unreadable_files_name_the_file_and_say_why(tmp_path):
    pc = _collection()
    good = open(save_checkpoint(tmp_path / "m.npz", pc, SGD(pc, lr=0.1), epoch=1), "rb").read()
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF
    cases = {
        "truncated": (good[: len(good) // 2], "the file was cut short"),
        "short_by_ten": (good[:-10], "the file was cut short"),
        "corrupt": (bytes(flipped), "fails its CRC-32 check"),
        "text": (b"epoch 3, loss 0.5\n", "not an .npz \\(zip\\) archive \\(it starts with b'epoc'\\)"),
        "empty": (b"", "the file is empty"),
    }
    for name, (content, why) in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(content)
        with pytest.raises(checkpoint.CheckpointError, match=why) as e:
            load_checkpoint(path, pc)
        assert str(path) in str(e.value) and "allow_pickle" not in str(e.value)
        assert isinstance(e.value, ValueError)
    ab.ParameterCollection()


@pytest.mark.parametrize("meta, why", [("[1, 2]", "its __meta__ is not a JSON object"),
                                        ('{"format": "autobatch-checkpoint", "version": "1"}', "version '1'")])
def test_a_foreign_meta_entry_is_a_checkpoint_error(tmp_path, meta, why):
    """An .npz whose __meta__ is valid JSON of another layout: CheckpointError (which resume falls back past),
    not an AttributeError or TypeError from inside the reader."""
    path = tmp_path / "foreign.npz"
    np.savez(path, __meta__=np.array(meta))
    with pytest.raises(checkpoint.CheckpointError, match=why):
        read_checkpoint(path)


def test_resume_falls_back_to_the_previous_checkpoint_and_keeps_one(tmp_path):
    train, dev, straight = _straight_and_first(tmp_path, 3, 2)
    ckpt = tmp_path / "b" / "ckpt"
    assert sorted(os.listdir(ckpt)) == ["last.npz", "previous.npz"]
    assert read_checkpoint(ckpt / "previous.npz")["extra"]["trainer"]["epoch"] == 1
    last = (ckpt / "last.npz").read_bytes()
    (ckpt / "last.npz").write_bytes(last[: len(last) // 2])  # e.g. a copy cut short
    again = _trainer(NoisyTagger(seed=5), tmp_path / "b")
    with pytest.warns(RuntimeWarning, match=r"last.npz is not a readable checkpoint: .*cut short; resuming "
                                            r"from .*previous.npz instead"):
        again.fit(train, dev, epochs=2, resume=True)
    # the unreadable last.npz was overwritten by epoch 2, never kept as previous.npz (epoch 1's stays)
    assert read_checkpoint(ckpt / "last.npz")["extra"]["trainer"]["epoch"] == 2
    assert read_checkpoint(ckpt / "previous.npz")["extra"]["trainer"]["epoch"] == 1
    again.fit(train, dev, epochs=3)
    _same_run(straight, again)  # epoch 2 run again from epoch 1's checkpoint: the same run
    assert read_checkpoint(ckpt / "previous.npz")["extra"]["trainer"]["epoch"] == 2
    (ckpt / "previous.npz").write_bytes(b"junk")
    (ckpt / "last.npz").write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint to resume from can be read: .*last.npz "
                                                         r"is not a readable checkpoint.*previous.npz is not a "
                                                         r"checkpoint"):
        _trainer(NoisyTagger(), tmp_path / "b").fit(train, dev, epochs=4, resume=True)


def test_a_refused_resume_leaves_model_and_optimiser_untouched(tmp_path):
    train, dev = _data()
    with_dev = _trainer(NoisyTagger(), tmp_path)
    with_dev.fit(train, dev, epochs=1)  # its checkpoint holds an early-stopping state
    m = NoisyTagger(seed=7)
    plain = Trainer(m.pc, m.loss, Adam(m.pc, lr=0.05), batch_size=6, progress=False,
                    checkpoint_dir=str(tmp_path / "ckpt"))
    plain.train_batch(train[:6])  # some optimiser state of its own
    params = {p.name: p.value() for p in m.pc.parameters()}
    opt = plain.optimizer.state_dict()
    loop = plain.state_dict()
    for attempt in (lambda: plain.resume(tmp_path / "ckpt" / "last.npz"), lambda: plain.fit(train, epochs=3,
                                                                                            resume=True)):
        with pytest.raises(ValueError, match="disagree on early stopping"):
            attempt()
        for p in m.pc.parameters():
            np.testing.assert_array_equal(p.value(), params[p.name])
        after = plain.optimizer.state_dict()
        assert after["hyper"] == opt["hyper"] and sorted(after["state"]) == sorted(opt["state"])
        for name, st in opt["state"].items():
            for k, v in st.items():
                np.testing.assert_array_equal(after["state"][name][k], v)
        assert plain.step == loop["step"] == 1 and plain.epoch == 0
