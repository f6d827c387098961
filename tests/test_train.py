"""Loss normalisation, early stopping, and the Trainer loop: learning, logging, plotting, progress, errors."""
import json
import re

import numpy as np
import pytest

import autobatch as ab
from autobatch import data
from autobatch.optim import SGD, Adam, GradNormMonitor
from autobatch.train import EarlyStopping, Trainer, fit, normalize_loss


class Tagger:
    """Per token: tag logits = V E[word] + c; the loss is a list of per-token losses."""

    def __init__(self, seed=0, vocab=60, tags=5, dim=8):
        self.pc = ab.ParameterCollection(seed=seed)
        self.E = self.pc.add_lookup_parameters((vocab, dim), name="E")
        self.V = self.pc.add_parameters((tags, dim), name="V")
        self.c = self.pc.add_parameters(tags, name="c")

    def loss(self, ex):
        words, tags = ex
        return [ab.pick_neg_log_softmax(ab.affine(self.c, self.V, self.E[w]), t) for w, t in zip(words, tags)]

    def accuracy(self, examples):
        ab.renew_cg()
        outs = [[ab.affine(self.c, self.V, self.E[w]) for w in words] for words, _ in examples]
        ab.esum([ab.sum_elems(o) for seq in outs for o in seq]).value()  # one batched forward
        pairs = [(int(np.argmax(o.value())), t) for seq, (_, tags) in zip(outs, examples) for o, t in zip(seq, tags)]
        return float(np.mean([p == t for p, t in pairs]))


def tagging_data(n, n_dev=0):
    """``n`` (word ids, tag ids) sentences, and ``n_dev`` more from the same language when asked for."""
    sents = data.synthetic_tagging(n + n_dev, vocab_size=60, n_tags=5, seed=0, mean_len=5, max_len=10)
    tags = list(data.UPOS_TAGS[:5])
    pairs = [([int(w[1:]) for w in s.words], [tags.index(t) for t in s.upos]) for s in sents]
    return (pairs[:n], pairs[n:]) if n_dev else pairs


# ---- normalisation ------------------------------------------------------------------------------------------


def test_normalize_loss_modes_values_and_gradient(pc64):
    w = pc64.add_parameters((1,), init=1.0)
    ab.renew_cg()
    seqs = [[1.0, 2.0], [3.0, 4.0, 5.0, 6.0], 7.0]  # per-token losses w*c; the last example is one Expression
    losses = [[w * c for c in s] if isinstance(s, list) else w * s for s in seqs]
    assert normalize_loss(losses, "sum").scalar_value() == pytest.approx(28.0)
    assert normalize_loss(losses, "batch").scalar_value() == pytest.approx(28.0 / 3)
    assert normalize_loss(losses, "max_len").scalar_value() == pytest.approx(28.0 / 4)
    assert normalize_loss(losses).scalar_value() == pytest.approx(7.0)  # max_len is the default
    normalize_loss(losses, "max_len").backward()
    np.testing.assert_allclose(w.grad, [7.0])


def test_normalize_loss_errors(pc64):
    ab.renew_cg()
    with pytest.raises(ValueError, match="unknown normalize 'mean'"):
        normalize_loss([ab.input_tensor(1.0)], "mean")
    with pytest.raises(ValueError, match="the minibatch has no loss terms"):
        normalize_loss([[], []], "sum")


def test_trainer_normalisations_scale_the_gradient():
    train = tagging_data(6)
    lengths = [len(w) for w, _ in train]
    first = {}
    for mode in ("sum", "batch", "max_len"):
        m = Tagger()
        t = Trainer(m.pc, m.loss, SGD(m.pc, lr=0.0), batch_size=len(train), normalize=mode, progress=False)
        t.fit(train, epochs=1)
        first[mode] = t.monitor.norms[0]
    assert first["batch"] == pytest.approx(first["sum"] / len(train), rel=1e-5)
    assert first["max_len"] == pytest.approx(first["sum"] / max(lengths), rel=1e-5)


# ---- early stopping -----------------------------------------------------------------------------------------


def test_early_stopping_counts_patience_and_restores(pc64):
    W = pc64.add_parameters((2,))
    stopper = EarlyStopping(patience=2, mode="max")
    decisions = []
    for k, metric in enumerate([0.5, 0.6, 0.55, float("nan"), 0.9]):
        W.set_value([k, k])
        decisions.append(stopper.update(metric, pc64))
    assert decisions == [False, False, False, True, False]  # a NaN metric is no improvement
    assert stopper.best == 0.9 and stopper.best_epoch == 5  # a later call still tracks the best
    W.set_value([9, 9])
    stopper.restore(pc64)
    np.testing.assert_array_equal(W.value(), [4, 4])

    low = EarlyStopping(patience=1, mode="min", min_delta=0.1)
    assert not low.update(1.0, pc64) and low.improved
    assert low.update(0.95, pc64) and not low.improved  # within min_delta: not an improvement
    never = EarlyStopping(patience=None)
    assert not any(never.update(0.0, pc64) for _ in range(5))


def test_early_stopping_errors():
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        EarlyStopping(mode="best")
    with pytest.raises(ValueError, match="patience must be >= 1"):
        EarlyStopping(patience=0)


def test_trainer_stops_early_and_restores_the_best_parameters():
    train, dev = tagging_data(12, 4)
    m = Tagger()
    scripted = iter([0.1, 0.5, 0.3, 0.4, 0.45, 0.9, 0.95])
    snapshots = []

    def evaluate(d):
        snapshots.append(m.pc["V"].value())
        return next(scripted)

    t = Trainer(m.pc, m.loss, Adam(m.pc, lr=0.05), batch_size=4, evaluate=evaluate, patience=3, progress=False)
    history = t.fit(train, dev, epochs=10)
    assert len(history) == 5 and t.stopped  # epochs 3, 4, 5 failed to beat epoch 2
    assert [r["dev_metric"] for r in history] == [0.1, 0.5, 0.3, 0.4, 0.45]
    assert history[-1]["best_epoch"] == 2 and history[-1]["best_dev"] == 0.5
    np.testing.assert_array_equal(m.pc["V"].value(), snapshots[1])
    assert not np.array_equal(snapshots[1], snapshots[4])


# ---- the loop -----------------------------------------------------------------------------------------------


def test_fit_learns_logs_and_plots(tmp_path):
    train, dev = tagging_data(40, 15)
    m = Tagger()
    log = tmp_path / "log.jsonl"
    t = fit(m.pc, m.loss, train, dev, epochs=6, optimizer=Adam(m.pc, lr=0.05), batch_size=8, clip="auto",
            evaluate=m.accuracy, log_path=str(log), progress=False)
    losses = [r["train_loss"] for r in t.history]
    assert losses[-1] < 0.7 * losses[0]
    assert t.history[-1]["best_dev"] > 0.5  # 5 tags: chance is ~0.2
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert {"train_loss", "dev_metric", "grad_norm_median", "grad_norm_max", "clip", "lr",
            "examples_per_s", "step"} <= set(records[0])
    assert records[-1]["step"] == t.step == len(t.monitor.norms) == len(t.step_losses) == 6 * 5
    paths = t.plot(tmp_path / "plots")
    assert [p.rsplit("/", 1)[-1] for p in map(str, paths)] == ["loss.png", "dev.png", "grad_norm.png"]
    for p in paths:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_reports_examples_per_second_loss_and_grad_norm(capsys):
    m = Tagger()
    train, dev = tagging_data(8, 2)
    t = Trainer(m.pc, m.loss, batch_size=4, evaluate=m.accuracy, progress=True)
    t.fit(train, dev, epochs=1)
    err = capsys.readouterr().err
    assert re.search(r"epoch 1/1: 100%.*8/8 .*[0-9.]+ex/s, loss=[0-9.]+, gnorm=[0-9.]+, dev=[0-9.]+", err), err
    capsys.readouterr()
    Trainer(m.pc, m.loss, batch_size=4, progress=False).fit(train, epochs=1)
    assert capsys.readouterr().err == ""


def test_trainer_accepts_a_monitor_and_clips_with_it():
    m = Tagger()
    monitor = GradNormMonitor(max_norm=1e-3)
    t = Trainer(m.pc, m.loss, SGD(m.pc, lr=0.1), batch_size=4, clip=monitor, progress=False)
    t.fit(tagging_data(8), epochs=1)
    assert t.monitor is monitor and len(monitor.norms) == 2 and min(monitor.norms) > 1e-3
    assert t.history[0]["clip"] == 1e-3


def test_trainer_errors():
    m = Tagger()
    train = tagging_data(4)
    with pytest.raises(ValueError, match="unknown normalize 'token'"):
        Trainer(m.pc, m.loss, normalize="token")
    with pytest.raises(ValueError, match="unknown strategy 'greedy'"):
        Trainer(m.pc, m.loss, strategy="greedy")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Trainer(m.pc, m.loss, batch_size=0)
    with pytest.raises(ValueError, match="patience needs an evaluate"):
        Trainer(m.pc, m.loss, patience=2)
    t = Trainer(m.pc, m.loss, progress=False)
    with pytest.raises(ValueError, match="a dev set was given but no evaluate"):
        t.fit(train, train, epochs=1)
    with pytest.raises(ValueError, match="the training set is empty"):
        t.fit([], epochs=1)
    with pytest.raises(ValueError, match="fit\\(resume=True\\) needs the Trainer's checkpoint_dir"):
        t.fit(train, epochs=1, resume=True)
    vec = Trainer(m.pc, lambda ex: ab.affine(m.c, m.V, m.E[ex[0][0]]), progress=False)
    with pytest.raises(ValueError, match=r"loss_fn must return scalar losses; the minibatch loss has shape \(5,\)"):
        vec.fit(train, epochs=1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_trainer_stops_on_non_finite_loss_or_gradient(pc64):
    w = pc64.add_parameters((1,), init=0.0)
    nan_loss = Trainer(pc64, lambda x: ab.log(w - 1.0), progress=False)
    with pytest.raises(FloatingPointError, match="epoch 1, step 1: the loss is nan"):
        nan_loss.fit([1.0], epochs=1)
    inf_grad = Trainer(pc64, lambda x: ab.sqrt(w * x), progress=False)  # d sqrt(u) / du at u = 0
    with pytest.raises(FloatingPointError, match="epoch 1, step 1: the gradient norm is inf"):
        inf_grad.fit([1.0], epochs=1)


def test_evaluate_runs_in_eval_mode_and_the_mode_is_restored():
    train, dev = tagging_data(12, 4)
    m = Tagger()
    seen = []

    def evaluate(d):
        seen.append(ab.training())
        if len(seen) == 3:
            raise KeyError("evaluation failed")
        return 0.5

    t = Trainer(m.pc, m.loss, batch_size=4, evaluate=evaluate, progress=False)
    t.fit(train, dev, epochs=2)
    assert seen == [False, False] and ab.training()
    with pytest.raises(KeyError, match="evaluation failed"):
        t.fit(train, dev, epochs=3)
    assert ab.training()  # restored although evaluate raised
    seen.clear()
    Trainer(m.pc, m.loss, batch_size=4, evaluate=lambda d: seen.append(ab.training()) or 0.5, progress=False,
            deterministic_eval=False).fit(train, dev, epochs=1)
    assert seen == [True]


def test_the_log_has_the_loss_per_token_as_well_as_the_normalised_loss(tmp_path):
    train = tagging_data(20)
    m = Tagger(dim=4)
    t = Trainer(m.pc, m.loss, SGD(m.pc, lr=0.0), batch_size=5, progress=False, log_path=str(tmp_path / "log"))
    t.fit(train, epochs=1)  # lr 0: every step sees the same parameters, so the per-token loss can be recomputed
    ab.renew_cg()
    per_token = [x.value() for ex in train for x in m.loss(ex)]
    record = json.loads((tmp_path / "log").read_text().splitlines()[-1])
    assert record["train_tokens"] == sum(len(w) for w, _ in train) == len(per_token)
    assert record["train_loss_per_token"] == pytest.approx(float(np.mean(per_token)), rel=1e-5)
    # the normalised loss (by each minibatch's longest sentence) is another number, larger per step
    assert record["train_loss"] > 2 * record["train_loss_per_token"]
