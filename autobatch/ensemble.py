"""Ensembles that predict by averaging their members' probabilities, in the deck's three kinds: one model
trained with different seeds, the top-k configurations of a hyper-parameter search scored by k-fold
cross-validation, and several checkpoints of one run.

Models follow a small protocol so that members and search trials can be trained in separate processes (a
``concurrent.futures.ProcessPoolExecutor``): a top-level ``model_fn(config, seed)`` builds a fresh model, an
object with

- ``pc``: its ParameterCollection (the same parameter names for every call with the same ``config``),
- ``loss(example)``: the loss Expression (or list of per-token loss Expressions) of one labelled example,
- ``probs(x)``: the class-probability vector of one input (or a list of them, one per token),
- optionally ``optimizer`` (default ``Adam(pc)``).

Labelled examples are ``(x, y)`` pairs, ``y`` an int class or a sequence of ints (one per token). A worker
sends back the trained parameters by name; the parent rebuilds the model with ``model_fn`` and loads them.
"""
import contextlib
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import graph as _graph
from . import ops
from .checkpoint import load_checkpoint
from .regularize import eval_mode
from .train import fit


def _flat(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _mode(deterministic):
    """``eval_mode()`` for the block when ``deterministic``, else the mode in force (e.g. Monte Carlo dropout
    under ``train_mode()``)."""
    return eval_mode() if deterministic else contextlib.nullcontext()


def model_probs(model, inputs, batch_size=256, strategy="agenda", deterministic=True):
    """``model.probs(x)`` for every input as NumPy arrays, one graph per ``batch_size`` inputs so the engine
    batches the forward pass across them; in ``eval_mode()`` (dropout off) unless ``deterministic=False``, the
    previous mode restored afterwards."""
    with _mode(deterministic):
        return _probs(model, list(inputs), batch_size, strategy)


def _probs(model, inputs, batch_size, strategy):
    out = []
    for i in range(0, len(inputs), batch_size):
        _graph.renew_cg(strategy=strategy)
        exprs = [model.probs(x) for x in inputs[i:i + batch_size]]
        flat = [e for x in exprs for e in _flat(x)]
        if flat:  # one target that needs them all: value() of each one alone would run example by example
            ops.esum([ops.sum_elems(e) for e in flat]).value()
        for x in exprs:
            if isinstance(x, (list, tuple)):
                out.append(np.array([np.asarray(e.value()) for e in x]))
            else:
                out.append(np.asarray(x.value()))
    return out


class Ensemble:
    """Predicts by averaging the probabilities of its ``members`` (objects with ``probs(x)``); ``info`` keeps
    what each member was (config, seed, history, checkpoint path)."""

    def __init__(self, members, info=None):
        self.members = list(members)
        if not self.members:
            raise ValueError("an Ensemble needs at least one member")
        self.info = list(info) if info is not None else [{} for _ in self.members]

    def __len__(self):
        return len(self.members)

    def predict_proba(self, inputs, batch_size=256, deterministic=True):
        """The members' mean probabilities for each input (one array per input), in ``eval_mode()`` unless
        ``deterministic=False`` (then in the mode in force)."""
        inputs = list(inputs)
        per_member = [model_probs(m, inputs, batch_size, deterministic=deterministic) for m in self.members]
        out = []
        for i, arrays in enumerate(zip(*per_member)):
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise ValueError(f"ensemble members disagree on the shape of input {i}'s probabilities: "
                                 f"{sorted(shapes)}")
            out.append(np.mean(arrays, axis=0))
        return out

    def predict(self, inputs, batch_size=256):
        """The most probable class of each input (an int, or an int array for per-token outputs)."""
        return [int(p.argmax()) if p.ndim == 1 else p.argmax(-1) for p in self.predict_proba(inputs, batch_size)]


def accuracy(model, examples):
    """The fraction of correct predictions (per token for sequence labels) of a model or an Ensemble on
    ``(x, y)`` examples."""
    examples = list(examples)
    ens = model if isinstance(model, Ensemble) else Ensemble([model])
    pred = ens.predict([x for x, _ in examples])
    correct = total = 0
    for p, (_, y) in zip(pred, examples):
        p, y = np.atleast_1d(p), np.atleast_1d(np.asarray(y))
        correct += int((p == y).sum())
        total += len(y)
    return correct / total if total else float("nan")


def kfold(n, k, seed=0):
    """``k`` (train indices, held-out indices) splits of ``range(n)``, shuffled by ``seed``; every index is
    held out exactly once."""
    if not 2 <= k <= n:
        raise ValueError(f"k-fold cross-validation needs 2 <= k <= n examples, got k={k}, n={n}")
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), np.sort(folds[i])) for i in range(k)]


# ---- training members, possibly in parallel -----------------------------------------------------------------


def _train_member(model_fn, config, seed, train, dev, held_out, score, fit_kwargs, catch_divergence):
    """Train one model (in a worker process or in-process); returns its parameters by name, its history and
    its score on ``held_out``. A diverging trial of a search scores NaN instead of failing the search."""
    model = model_fn(config, seed)
    kw = dict(fit_kwargs)
    kw.setdefault("progress", False)
    kw.setdefault("seed", seed)
    if dev is not None:
        kw["evaluate"] = lambda d: score(model, d)
    try:
        trainer = fit(model.pc, model.loss, train, dev, optimizer=getattr(model, "optimizer", None), **kw)
    except FloatingPointError:
        if not catch_divergence:
            raise
        return None, [], float("nan")
    with eval_mode():  # a held-out score is an evaluation: dropout off, whatever ``score`` does
        held = None if held_out is None else float(score(model, held_out))
    return model.pc.values(), trainer.history, held


def _run_all(jobs, max_workers, context):
    """Run ``_train_member`` on each argument tuple: in-process for one worker, else in a process pool."""
    if max_workers is None or max_workers <= 1 or len(jobs) <= 1:
        return [_train_member(*job) for job in jobs]
    ctx = multiprocessing.get_context(context)
    with ProcessPoolExecutor(max_workers=min(max_workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_train_member, *job) for job in jobs]
        return [f.result() for f in futures]


def _rebuild(model_fn, config, seed, params):
    model = model_fn(config, seed)
    model.pc.set_values(params)
    return model


def _train_ensemble(model_fn, specs, train, dev, score, max_workers, context, fit_kwargs):
    jobs = [(model_fn, config, seed, list(train), dev, None, score, fit_kwargs, False) for config, seed in specs]
    results = _run_all(jobs, max_workers, context)
    members = [_rebuild(model_fn, c, s, params) for (c, s), (params, _, _) in zip(specs, results)]
    info = [dict(config=c, seed=s, history=h) for (c, s), (_, h, _) in zip(specs, results)]
    return Ensemble(members, info)


def seed_ensemble(model_fn, config, train, seeds=(0, 1, 2), dev=None, score=accuracy, max_workers=2,
                  context="spawn", **fit_kwargs):
    """Train ``model_fn(config, seed)`` once per seed (in parallel processes when ``max_workers > 1``) with
    ``fit(..., **fit_kwargs)``; with ``dev``, each member early-stops on ``score(model, dev)``."""
    return _train_ensemble(model_fn, [(config, s) for s in seeds], train, dev, score, max_workers, context,
                           fit_kwargs)


@dataclass
class SearchResult:
    """One configuration of a search: its mean cross-validated score and the score of each fold."""

    config: dict
    score: float
    fold_scores: list = field(default_factory=list)


def cv_search(model_fn, configs, data, folds=5, seed=0, score=accuracy, max_workers=2, context="spawn",
              **fit_kwargs):
    """Score each configuration by ``folds``-fold cross-validation on ``data`` (train on the other folds,
    ``score(model, held-out fold)``, higher is better) and return SearchResults best first. All
    (configuration, fold) trials share one process pool; a trial whose loss diverges scores NaN and sorts
    last."""
    configs, data = list(configs), list(data)
    if not configs:
        raise ValueError("cv_search needs at least one configuration")
    splits = kfold(len(data), folds, seed)
    jobs = [(model_fn, c, seed, [data[i] for i in tr], None, [data[i] for i in te], score, fit_kwargs, True)
            for c in configs for tr, te in splits]
    held = [r[2] for r in _run_all(jobs, max_workers, context)]
    results = []
    for j, c in enumerate(configs):
        scores = held[j * folds:(j + 1) * folds]
        mean = float(np.mean(scores)) if all(math.isfinite(s) for s in scores) else float("nan")
        results.append(SearchResult(c, mean, scores))
    # NaN sorts last; Python's sort is stable, so ties keep the order of ``configs``.
    return sorted(results, key=lambda r: -r.score if math.isfinite(r.score) else math.inf)


def top_k_ensemble(model_fn, results, train, k=3, seed=0, dev=None, score=accuracy, max_workers=2,
                   context="spawn", **fit_kwargs):
    """Train the best ``k`` configurations of ``cv_search`` results on all of ``train`` and ensemble them."""
    best = [r.config for r in results if math.isfinite(r.score)][:k]
    if not best:
        raise ValueError("top_k_ensemble: no configuration of the search has a finite score")
    return _train_ensemble(model_fn, [(c, seed) for c in best], train, dev, score, max_workers, context,
                           fit_kwargs)


def checkpoint_ensemble(model_fn, config, paths, seed=0):
    """An ensemble of several checkpoints of one run (e.g. the last epochs' ``epoch_NNN.npz`` written by a
    Trainer with ``keep_epochs=True``): each is loaded into a fresh ``model_fn(config, seed)``."""
    members, info = [], []
    for path in paths:
        model = model_fn(config, seed)
        load_checkpoint(path, model.pc)
        members.append(model)
        info.append(dict(config=config, seed=seed, checkpoint=str(path)))
    return Ensemble(members, info)
