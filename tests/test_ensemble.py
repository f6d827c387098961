"""Ensembles of seeds, of the top configurations of a cross-validated search, and of checkpoints; members and
trials trained in worker processes. Models and data are top-level so the worker processes can import them."""
import numpy as np
import pytest

import autobatch as ab
from autobatch.ensemble import (Ensemble, SearchResult, accuracy, checkpoint_ensemble, cv_search, kfold,
                                model_probs, seed_ensemble, top_k_ensemble)
from autobatch.optim import Adam
from autobatch.train import Trainer


def xor(n, seed, flip=0.0):
    """Points in [-1, 1]^2 labelled by the sign of x*y (not linearly separable); ``flip`` adds label noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    y = np.where(rng.random(n) < flip, 1 - y, y)
    return [(xi, int(yi)) for xi, yi in zip(x, y)]


class MLP:
    """``model_fn``: a one-hidden-layer classifier (``hidden=0``: logistic regression). ``nan=True`` makes
    the loss NaN, a stand-in for a diverging configuration."""

    def __init__(self, config, seed):
        self.pc = ab.ParameterCollection(seed=seed)
        self.hidden, self.nan = config.get("hidden", 8), config.get("nan", False)
        self.dropout = config.get("dropout", 0.0)
        classes = config.get("classes", 2)
        if self.hidden:
            self.W = self.pc.add_parameters((self.hidden, 2), name="W")
            self.b = self.pc.add_parameters(self.hidden, name="b")
        self.V = self.pc.add_parameters((classes, self.hidden or 2), name="V")
        self.c = self.pc.add_parameters(classes, name="c")
        self.optimizer = Adam(self.pc, lr=config.get("lr", 0.05))

    def logits(self, x):
        h = ab.input_tensor(x)
        if self.hidden:
            h = ab.dropout(ab.tanh(ab.affine(self.b, self.W, h)), self.dropout)
        return ab.affine(self.c, self.V, h)

    def loss(self, ex):
        loss = ab.pick_neg_log_softmax(self.logits(ex[0]), ex[1])
        return ab.log(loss * 0.0 - 1.0) if self.nan else loss

    def probs(self, x):
        return ab.softmax(self.logits(x))


def test_seed_ensemble_is_at_least_as_accurate_as_its_median_member():
    train, test = xor(60, 0, flip=0.2), xor(1000, 1)
    ens = seed_ensemble(MLP, {"hidden": 16}, train, seeds=(0, 1, 2), max_workers=2, epochs=30, batch_size=10)
    assert [i["seed"] for i in ens.info] == [0, 1, 2] and len(ens.info[0]["history"]) == 30
    members = [accuracy(m, test) for m in ens.members]
    assert len(set(members)) == 3  # the seeds gave different models
    assert accuracy(ens, test) >= np.median(members)
    assert min(members) > 0.8  # each member learnt the non-linear task
    xs = [x for x, _ in test[:20]]
    mean = np.mean([model_probs(m, xs) for m in ens.members], axis=0)
    np.testing.assert_allclose(ens.predict_proba(xs), mean, rtol=1e-6)
    assert ens.predict(xs) == [int(p.argmax()) for p in mean]


def test_parallel_members_equal_in_process_members():
    train = xor(30, 2)
    kw = dict(seeds=(3, 4), epochs=2, batch_size=10)
    forked = seed_ensemble(MLP, {"hidden": 4}, train, max_workers=2, context="fork", **kw)
    local = seed_ensemble(MLP, {"hidden": 4}, train, max_workers=1, **kw)
    for a, b in zip(forked.members, local.members):
        for p, q in zip(a.pc.parameters(), b.pc.parameters()):
            np.testing.assert_array_equal(p.value(), q.value())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cv_search_picks_the_known_best_setting_and_top_k_ensembles_it():
    data = xor(120, 0)
    linear, good, slow, broken = {"hidden": 0}, {"hidden": 8, "lr": 0.05}, {"hidden": 8, "lr": 1e-4}, {"nan": True}
    results = cv_search(MLP, [linear, slow, good, broken], data, folds=3, max_workers=2, epochs=20, batch_size=10)
    assert [r.config for r in results][0] == good  # only the MLP with a working rate can learn XOR
    assert results[0].score > 0.85 and max(results[1].score, results[2].score) < 0.7
    assert results[-1].config == broken and np.isnan(results[-1].score)  # diverged: scored NaN, ranked last
    assert len(results[0].fold_scores) == 3

    ens = top_k_ensemble(MLP, results, data, k=2, max_workers=1, epochs=10, batch_size=10)
    assert [i["config"] for i in ens.info] == [results[0].config, results[1].config]
    assert accuracy(ens, xor(300, 5)) > 0.8


def test_checkpoint_ensemble_loads_each_checkpoint(tmp_path):
    model = MLP({"hidden": 8}, 0)
    train = xor(60, 3)
    t = Trainer(model.pc, model.loss, model.optimizer, batch_size=10, checkpoint_dir=str(tmp_path),
                keep_epochs=True, progress=False)
    t.fit(train, epochs=5)
    paths = [tmp_path / f"epoch_{e:03d}.npz" for e in (3, 4, 5)]
    ens = checkpoint_ensemble(MLP, {"hidden": 8}, paths)
    assert [i["checkpoint"] for i in ens.info] == list(map(str, paths))
    for p, q in zip(ens.members[-1].pc.parameters(), model.pc.parameters()):
        np.testing.assert_array_equal(p.value(), q.value())  # the last checkpoint is the trained model
    assert not np.array_equal(ens.members[0].V.value(), ens.members[-1].V.value())
    xs = [x for x, _ in train[:10]]
    np.testing.assert_allclose(ens.predict_proba(xs), np.mean([model_probs(m, xs) for m in ens.members], 0),
                               rtol=1e-6)


class FixedTagger:
    """Per-token probabilities from fixed logits: token w gets class w % 3."""

    def __init__(self, classes=3):
        self.classes = classes

    def probs(self, words):
        return [ab.softmax(ab.input_tensor(np.eye(self.classes)[w % self.classes] * 3.0)) for w in words]


def test_sequence_outputs_are_scored_per_token():
    examples = [([0, 1, 2], [0, 1, 0]), ([4], [1]), ([5, 3], [2, 2])]
    ens = Ensemble([FixedTagger(), FixedTagger()])
    probs = ens.predict_proba([x for x, _ in examples])
    assert [p.shape for p in probs] == [(3, 3), (1, 3), (2, 3)]
    np.testing.assert_array_equal(ens.predict([x for x, _ in examples])[0], [0, 1, 2])
    assert accuracy(ens, examples) == pytest.approx(4 / 6)


def test_kfold_partitions_every_index_once():
    splits = kfold(10, 3, seed=1)
    held = np.concatenate([te for _, te in splits])
    assert sorted(held.tolist()) == list(range(10))
    for tr, te in splits:
        assert sorted(np.concatenate([tr, te]).tolist()) == list(range(10))
    np.testing.assert_array_equal(kfold(10, 3, seed=1)[0][1], splits[0][1])


def test_ensemble_errors():
    with pytest.raises(ValueError, match="an Ensemble needs at least one member"):
        Ensemble([])
    with pytest.raises(ValueError, match=r"members disagree on the shape of input 0's probabilities: "
                                         r"\[\(1, 2\), \(1, 3\)\]"):
        Ensemble([FixedTagger(2), FixedTagger(3)]).predict_proba([[1]])
    with pytest.raises(ValueError, match="needs 2 <= k <= n examples, got k=5, n=4"):
        kfold(4, 5)
    with pytest.raises(ValueError, match="cv_search needs at least one configuration"):
        cv_search(MLP, [], xor(10, 0))
    with pytest.raises(ValueError, match="no configuration of the search has a finite score"):
        top_k_ensemble(MLP, [SearchResult({"nan": True}, float("nan"))], xor(10, 0))


class Spy(MLP):
    """An MLP with dropout that records ``ab.training()`` whenever it builds its output (and can fail there)."""

    def __init__(self, config, seed):
        super().__init__(dict(config, dropout=0.5), seed)
        self.modes, self.fail = [], False

    def probs(self, x):
        self.modes.append(ab.training())
        if self.fail:
            raise RuntimeError("probs failed")
        return super().probs(x)


def test_evaluation_runs_with_dropout_off_and_restores_the_mode():
    xs = [x for x, _ in xor(30, 0)]
    model = Spy({"hidden": 16}, 0)
    ens = Ensemble([model])
    first, second = ens.predict_proba(xs), ens.predict_proba(xs)
    for a, b in zip(first, second):  # dropout at p=0.5 would make every call differ
        np.testing.assert_array_equal(a, b)
    assert set(model.modes) == {False} and ab.training()
    accuracy(ens, xor(10, 1))  # the ensemble's accuracy evaluates through predict_proba
    assert set(model.modes) == {False} and ab.training()
    with ab.train_mode():  # deterministic=False keeps the mode in force: Monte Carlo dropout
        mc = ens.predict_proba(xs[:5], deterministic=False), ens.predict_proba(xs[:5], deterministic=False)
    assert not np.array_equal(mc[0][0], mc[1][0]) and model.modes[-1] is True
    model.fail = True
    with pytest.raises(RuntimeError, match="probs failed"):
        ens.predict_proba(xs)
    assert ab.training()  # restored on the way out of the exception too
    with ab.eval_mode():  # a mode set by the caller survives the evaluation
        model.fail = False
        ens.predict_proba(xs[:2])
        assert not ab.training()
    assert ab.training()


def test_eval_and_train_mode_are_plain_calls_and_context_managers():
    assert ab.training()
    ab.eval_mode()
    assert not ab.training()
    with ab.train_mode():
        assert ab.training()
    assert not ab.training()
    ab.train_mode()
    assert ab.training()
    with pytest.raises(KeyError):
        with ab.eval_mode():
            assert not ab.training()
            raise KeyError("inside")
    assert ab.training()


def test_seed_ensemble_and_search_score_in_eval_mode():
    seen = []  # the mode every score call saw: the dev scores during fit, and the held-out folds

    def score(model, examples):
        seen.append(ab.training())
        return accuracy(model, examples)

    seed_ensemble(Spy, {"hidden": 4}, xor(20, 0), seeds=(0,), dev=xor(10, 1), score=score, max_workers=1,
                  epochs=2, batch_size=10)
    cv_search(Spy, [{"hidden": 4}], xor(20, 0), folds=2, score=score, max_workers=1, epochs=1, batch_size=10)
    assert len(seen) == 2 + 2 and not any(seen) and ab.training()
