"""Training: loss normalisation, early stopping, and a model-agnostic ``Trainer``/``fit`` loop with a progress
bar, a JSON-lines log per epoch, PNG plots, atomic checkpoints and resume.

The loop is the one the DyNet deck recommends: one graph per minibatch (the engine batches the per-example
code), the minibatch loss normalised, the gradient norm watched and clipped, the dev metric checked each
epoch with patience, and the best parameters restored at the end.
"""
import contextlib
import json
import math
import os
import sys
import time
import warnings

import numpy as np

from . import checkpoint as _ckpt
from . import data as _data
from . import graph as _graph
from . import ops
from .optim import Adam, GradNormMonitor
from .plots import line_plot
from .regularize import eval_mode

NORMALIZE = ("max_len", "batch", "sum")
LAST, PREVIOUS = "last.npz", "previous.npz"  # the checkpoints fit(resume=True) reads, newest first


# ---- loss normalisation -------------------------------------------------------------------------------------


def _terms(losses, allow_empty=False):
    """Flatten per-example losses (an Expression, a sequence of per-token losses, or a list of per-token
    Expressions each) into one list of terms, with each example's length (its number of tokens). No terms at
    all is an error unless ``allow_empty`` (one rank's shard of a minibatch may have none)."""
    terms, lengths = [], []
    for x in losses:
        if isinstance(x, (list, tuple)):
            terms.extend(x)
            lengths.append(len(x))
        elif isinstance(x, ops.Expression) and x.is_sequence:
            terms.append(ops.sum_elems(x))
            lengths.append(x.shape[0])
        else:
            terms.append(x)
            lengths.append(1)
    if not terms and not allow_empty:
        raise ValueError("normalize_loss: the minibatch has no loss terms")
    return terms, lengths


def sum_loss(losses):
    """The plain sum of every loss term of the minibatch."""
    return ops.esum(_terms(losses)[0])


def batch_mean_loss(losses):
    """The summed loss divided by the number of examples (each example's terms summed along its sequence)."""
    return sum_loss(losses) * (1.0 / len(losses))


def max_len_loss(losses):
    """The summed loss divided by the longest sequence in the minibatch (its number of loss terms)."""
    # The deck's choice: one constant per minibatch keeps every token's weight equal within it (a long
    # sentence counts for more, as in the plain sum), while the gradient scale stops growing with length.
    terms, lengths = _terms(losses)
    return ops.esum(terms) * (1.0 / max(lengths))


def _scale(normalize, longest, examples):
    """The constant a minibatch's summed loss is multiplied by under ``normalize`` (None: the plain sum), given
    its longest example's number of loss terms and its number of examples."""
    if normalize == "max_len":
        return 1.0 / longest if longest > 0 else None
    return 1.0 / examples if normalize == "batch" else None


def normalize_loss(losses, normalize="max_len"):
    """One scalar loss for a minibatch from per-example losses (an Expression, or a list of per-token
    Expressions, per example). ``normalize``: ``"max_len"`` (sum / longest sequence's length), ``"batch"``
    (sum / number of examples) or ``"sum"``."""
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize {normalize!r}: expected one of {NORMALIZE}")
    return {"max_len": max_len_loss, "batch": batch_mean_loss, "sum": sum_loss}[normalize](losses)


# ---- early stopping -----------------------------------------------------------------------------------------


class EarlyStopping:
    """Tracks a dev metric, keeps a copy of the parameters at its best, and says when ``patience`` epochs
    in a row have failed to improve it by more than ``min_delta``::

        stopper = EarlyStopping(patience=3, mode="max")
        for epoch in ...:
            if stopper.update(evaluate(dev), pc):
                break
        stopper.restore(pc)
    """

    def __init__(self, patience=3, mode="max", min_delta=0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"EarlyStopping: mode must be 'max' or 'min', got {mode!r}")
        if patience is not None and patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1 (or None: never stop), got {patience}")
        self.patience, self.mode, self.min_delta = patience, mode, float(min_delta)
        self.best = None
        self.best_epoch = None
        self.bad_epochs = 0
        self.epochs = 0
        self.improved = False
        self.best_params = None  # {name: NumPy copy}

    def better(self, metric):
        """Whether ``metric`` would improve on the best so far (by more than ``min_delta``)."""
        if metric is None or not math.isfinite(metric):
            return False
        if self.best is None:
            return True
        return metric > self.best + self.min_delta if self.mode == "max" else metric < self.best - self.min_delta

    def update(self, metric, pc):
        """Record one epoch's metric; snapshot ``pc`` when it improved. Returns True when training should stop."""
        self.epochs += 1
        self.improved = self.better(metric)
        if self.improved:
            self.best, self.best_epoch, self.bad_epochs = float(metric), self.epochs, 0
            self.best_params = pc.values()
        else:
            self.bad_epochs += 1
        return self.should_stop

    @property
    def should_stop(self):
        """True once ``patience`` epochs in a row brought no improvement."""
        return self.patience is not None and self.bad_epochs >= self.patience

    def restore(self, pc):
        """Copy the best parameters back into ``pc`` (no-op before any improvement)."""
        if self.best_params is not None:
            pc.set_values(self.best_params)

    def state_dict(self):
        """Everything needed to continue identically after a resume (the best snapshot included)."""
        return {k: getattr(self, k) for k in ("patience", "mode", "min_delta", "best", "best_epoch",
                                              "bad_epochs", "epochs", "improved", "best_params")}

    def load_state_dict(self, sd):
        """Restore what ``state_dict`` returned."""
        for k, v in sd.items():
            setattr(self, k, v)


# ---- the training loop --------------------------------------------------------------------------------------


def _rng_state(rng):
    return rng.bit_generator.state


def _set_rng_state(rng, state):
    rng.bit_generator.state = state


class Trainer:
    """Trains any model written per example. Per minibatch: ``renew_cg(strategy)``, ``loss_fn(example)`` for
    each example (an Expression, or a list of per-token loss Expressions), ``normalize_loss``, ``value()``,
    ``backward()``, gradient-norm monitoring/clipping, ``optimizer.step()``.

    - ``optimizer``: default ``Adam(pc)``.
    - ``clip``: None (record the norm only), a max norm, ``"auto"`` (threshold from the first steps' norms),
      or a ``GradNormMonitor``.
    - ``evaluate(dev) -> float``: the dev metric after each epoch (``mode`` says whether higher is better),
      run in ``eval_mode()`` (dropout off: the same parameters always score the same) unless
      ``deterministic_eval=False``; with ``patience`` training stops after that many epochs without
      improvement, and with ``restore_best`` the best parameters are put back when ``fit`` returns.
    - ``checkpoint_dir``: ``last.npz`` is written atomically after every epoch, the one before it kept as
      ``previous.npz``; ``fit(resume=True)`` continues from ``last.npz``, or from ``previous.npz`` when
      ``last.npz`` is missing or unreadable (with a warning naming it). ``keep_epochs=True`` also keeps
      ``epoch_NNN.npz`` per epoch (for checkpoint ensembles).
    - ``log_path``: one JSON object per epoch (``history`` holds the same records): ``train_loss`` (the mean
      normalised minibatch loss, what the optimiser saw), ``train_loss_per_token`` (the summed loss of the
      epoch over its number of loss terms; ``exp`` of it is a language model's perplexity), the gradient
      norms, and the dev metric.
    - ``progress``: a tqdm bar with examples/s, loss and gradient norm (default: when stderr is a terminal).
    - ``seed``: the shuffling seed (default ``pc.seed``); ``sort_by`` groups similar examples (see
      ``data.minibatches``).
    - ``parallel``: a ``distributed.DataParallel`` over ``pc`` for example-wise data parallelism. Every rank
      draws the same minibatches (the shuffling seed is rank 0's), builds the graph of its own shard of each,
      normalises by the whole minibatch (its example count, or its longest example: one integer max over the
      ranks, as an example's number of loss terms is known only once ``loss_fn`` has built it) and sums the
      gradients over the ranks before clipping and the step, so every replica applies the same update. The
      loss recorded is the whole minibatch's. Rank 0 alone evaluates the dev set (the metric is broadcast, so
      every rank takes the same early-stopping decision), writes checkpoints, the log and plots, and shows the
      progress bar. ``save`` and ``fit(resume=True)`` are collective: rank 0 reads the checkpoint and sends it
      to the others, which need no copy of the file. Wrap the script's main in ``parallel.run``.
    """

    def __init__(self, pc, loss_fn, optimizer=None, *, batch_size=32, normalize="max_len", strategy="agenda",
                 clip=None, evaluate=None, mode="max", patience=None, min_delta=0.0, restore_best=True,
                 checkpoint_dir=None, keep_epochs=False, log_path=None, progress=None, seed=None, sort_by=None,
                 parallel=None, deterministic_eval=True):
        if normalize not in NORMALIZE:
            raise ValueError(f"unknown normalize {normalize!r}: expected one of {NORMALIZE}")
        if strategy not in _graph.STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: expected one of {_graph.STRATEGIES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if patience is not None and evaluate is None:
            raise ValueError("patience needs an evaluate(dev) -> metric callback to watch")
        if parallel is not None and parallel.pc is not pc:
            raise ValueError("parallel= must be a DataParallel over this Trainer's ParameterCollection")
        self.parallel = parallel
        self.is_root = parallel is None or parallel.is_root
        self.pc, self.loss_fn = pc, loss_fn
        self.optimizer = optimizer if optimizer is not None else Adam(pc)
        self.batch_size, self.normalize, self.strategy = int(batch_size), normalize, strategy
        self.monitor = clip if isinstance(clip, GradNormMonitor) else GradNormMonitor(clip)
        self.evaluate, self.deterministic_eval = evaluate, bool(deterministic_eval)
        self.stopper = EarlyStopping(patience, mode, min_delta) if evaluate is not None else None
        self.restore_best = restore_best
        self.checkpoint_dir, self.keep_epochs = checkpoint_dir, keep_epochs
        self.log_path = log_path
        self.progress = self.is_root and (sys.stderr.isatty() if progress is None else bool(progress))
        self.sort_by = sort_by
        seed = pc.seed if seed is None else seed
        if parallel is not None:  # every rank must draw the same minibatches, even from an unseeded start
            seed = parallel.agree(int(np.random.SeedSequence().entropy) if seed is None else seed)
        self.rng = np.random.default_rng(seed)
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimiser steps
        self.epoch_first_step = 0  # the step the epoch under way (or the last one) began at
        self.history = []  # one dict per completed epoch
        self.step_losses = []
        self.stopped = False
        # The running epoch's summed (unnormalised) loss and its number of loss terms (tokens)
        self.epoch_loss_sum, self.epoch_tokens = 0.0, 0
        self._last_unreadable = False  # resumed from previous.npz: the next save must not keep last.npz

    # ---- one minibatch ----

    def train_batch(self, batch):
        """One optimiser step on ``batch``; returns ``(loss value, gradient norm before clipping)``. With
        ``parallel``, every rank calls it with the same whole minibatch and trains on its shard of it."""
        if self.parallel is not None:
            value, scale, tokens = self._parallel_loss_and_gradients(batch)
        else:
            _graph.renew_cg(strategy=self.strategy)
            terms, lengths = _terms([self.loss_fn(ex) for ex in batch])
            scale, tokens = _scale(self.normalize, max(lengths), len(batch)), sum(lengths)
            loss = ops.esum(terms) if scale is None else ops.esum(terms) * scale  # as normalize_loss builds it
            value = self._scalar(loss)
            self._check_loss(value)
            self.pc.zero_grad()
            loss.backward()
        self.epoch_loss_sum += value if scale is None else value / scale
        self.epoch_tokens += tokens
        norm = self.monitor(self.pc)
        if not math.isfinite(norm):
            raise FloatingPointError(f"epoch {self.epoch + 1}, step {self.step + 1}: the gradient norm is "
                                     f"{norm} while the loss is finite: some op's derivative is not finite (sqrt "
                                     f"or log at 0, a division by 0) or overflowed; renew_cg(check_finite=True) "
                                     f"names the node whose VJP made it")
        self.optimizer.step()
        self.step += 1
        self.step_losses.append(value)
        return value, norm

    @staticmethod
    def _scalar(loss):
        if loss.shape not in ((), (1,)):
            raise ValueError(f"loss_fn must return scalar losses; the minibatch loss has shape {loss.shape}")
        return float(np.asarray(loss.value()).reshape(()))

    def _check_loss(self, value):
        if not math.isfinite(value):
            raise FloatingPointError(f"epoch {self.epoch + 1}, step {self.step + 1}: the loss is {value}; "
                                     "renew_cg(check_finite=True) names the node that produced it")

    def _parallel_loss_and_gradients(self, batch):
        """This rank's share of the minibatch loss, built and differentiated; the gradients summed over the
        ranks. Returns the whole minibatch's loss (every rank's share summed, in the same collective), the
        normalisation's scale and the minibatch's number of loss terms."""
        dp = self.parallel
        _graph.renew_cg(strategy=self.strategy)
        local = dp.shard(batch)
        terms, lengths = _terms([self.loss_fn(ex) for ex in local], allow_empty=True)
        # The scale of each normalisation over the WHOLE minibatch, so that the ranks' shares add up to the
        # loss one process would compute: same constant, same graph shape (sum of terms times it).
        longest = dp.comm.max(max(lengths, default=0)) if self.normalize == "max_len" else 0
        scale = _scale(self.normalize, longest, len(batch))
        self.pc.zero_grad()
        value = 0.0
        if terms:
            loss = ops.esum(terms)
            if scale is not None:
                loss = loss * scale
            value = self._scalar(loss)
            if math.isfinite(value):  # a non-finite loss is reported below, on every rank alike
                loss.backward()
        value, n_terms, tokens = dp.sync_gradients(value, len(terms), sum(lengths))
        if n_terms == 0:
            raise ValueError("normalize_loss: the minibatch has no loss terms")
        self._check_loss(value)
        return float(value), scale, int(round(tokens))

    # ---- epochs ----

    def fit(self, train, dev=None, epochs=10, resume=False):
        """Train until ``epochs`` epochs are complete in all (a resumed run counts those already done) or early
        stopping says stop; returns ``history``. ``resume=True`` first loads ``checkpoint_dir/last.npz`` if
        there is one (``previous.npz`` when ``last.npz`` is missing or unreadable, with a warning) and removes
        the temporary files that writers killed mid-save left there."""
        if resume:
            if self.checkpoint_dir is None:
                raise ValueError("fit(resume=True) needs the Trainer's checkpoint_dir")
            paths = [os.path.join(self.checkpoint_dir, name) for name in (LAST, PREVIOUS)]
            if self.is_root:
                _ckpt.remove_stale_temps(self.checkpoint_dir)
                paths = [path for path in paths if os.path.exists(path)]
            if self.parallel is not None:  # only rank 0 need have the files
                paths = self.parallel.agree(paths)
            if paths:
                self._resume(paths)
        if dev is not None and self.evaluate is None:
            raise ValueError("a dev set was given but no evaluate(dev) -> metric callback")
        train = list(train)
        if not train:
            raise ValueError("the training set is empty")
        if self.log_path is not None and self.is_root:  # start the log afresh, or from the resumed history
            os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
            _ckpt.atomic_write_text(self.log_path, "".join(json.dumps(r) + "\n" for r in self.history))
        while self.epoch < epochs and not self.stopped:
            self._run_epoch(train, dev, epochs)
        if self.stopper is not None and self.restore_best:
            self.stopper.restore(self.pc)
        return self.history

    def _run_epoch(self, train, dev, epochs):
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        first_step = self.epoch_first_step = self.step
        total = 0.0
        self.epoch_loss_sum, self.epoch_tokens = 0.0, 0
        # The bar is left on screen: one line per epoch with its examples/s, last loss and gradient norm, and
        # the dev metric once it is known.
        bar = tqdm(total=len(train), unit="ex", desc=f"epoch {self.epoch + 1}/{epochs}", disable=not self.progress,
                   dynamic_ncols=True)
        try:
            for batch in _data.minibatches(train, self.batch_size, rng=self.rng, sort_by=self.sort_by):
                value, norm = self.train_batch(batch)
                total += value
                bar.update(len(batch))
                bar.set_postfix(loss=f"{value:.4g}", gnorm=f"{norm:.3g}", refresh=False)
            seconds = time.perf_counter() - t0
            self.epoch += 1
            norms = np.array(self.monitor.norms[first_step:])
            record = {
                "epoch": self.epoch,
                "step": self.step,
                "train_loss": total / max(1, self.step - first_step),
                "train_loss_per_token": self.epoch_loss_per_token,
                "train_tokens": self.epoch_tokens,
                "grad_norm_median": float(np.median(norms)),
                "grad_norm_max": float(norms.max()),
                "clip": self.monitor.threshold,
                "lr": self.optimizer.lr,
                "examples_per_s": len(train) / seconds if seconds > 0 else None,
                "seconds": seconds,
            }
            postfix = dict(loss=f"{record['train_loss']:.4g}", gnorm=f"{record['grad_norm_median']:.3g}")
            if dev is not None:
                with eval_mode() if self.deterministic_eval else contextlib.nullcontext():
                    metric = self.evaluate(dev) if self.is_root else None
                metric = None if metric is None else float(metric)
                if self.parallel is not None:  # one metric, so one decision and one best snapshot everywhere
                    metric = self.parallel.agree(metric)
                self.stopped = self.stopper.update(metric, self.pc)
                record.update(dev_metric=metric, best_dev=self.stopper.best, best_epoch=self.stopper.best_epoch)
                postfix["dev"] = "none" if metric is None else f"{metric:.4g}"
            bar.set_postfix(postfix, refresh=False)
        finally:
            bar.close()
        self.history.append(record)
        if self.checkpoint_dir is not None:
            if self.is_root:
                os.makedirs(self.checkpoint_dir, exist_ok=True)
            # last.npz's predecessor stays as previous.npz, unless last.npz is the unreadable file resumed past
            keep = None if self._last_unreadable else os.path.join(self.checkpoint_dir, PREVIOUS)
            self.save(os.path.join(self.checkpoint_dir, LAST), previous=keep)
            self._last_unreadable = False
            if self.keep_epochs:
                self.save(os.path.join(self.checkpoint_dir, f"epoch_{self.epoch:03d}.npz"))
        if self.log_path is not None and self.is_root:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    @property
    def epoch_loss_per_token(self):
        """The running (or last) epoch's summed loss over its number of loss terms (None before any)."""
        return self.epoch_loss_sum / self.epoch_tokens if self.epoch_tokens else None

    # ---- checkpoints ----

    def state_dict(self):
        """The loop's own state (counters, RNG streams, history, monitor, early stopping)."""
        return {
            "epoch": self.epoch, "step": self.step, "stopped": self.stopped,
            "rng": _rng_state(self.rng), "pc_rng": _rng_state(self.pc.rng),
            "history": self.history, "step_losses": np.array(self.step_losses, dtype=float),
            "monitor": self.monitor.state_dict(),
            "stopper": None if self.stopper is None else self.stopper.state_dict(),
        }

    def check_state_dict(self, sd):
        """Raise ValueError when ``load_state_dict(sd)`` could not restore ``sd`` into this Trainer; changes
        nothing."""
        missing = [k for k in ("epoch", "step", "stopped", "rng", "pc_rng", "history", "step_losses", "monitor",
                               "stopper") if k not in sd]
        if missing:
            raise ValueError(f"the Trainer state lacks {missing}")
        if (sd["stopper"] is None) != (self.stopper is None):
            raise ValueError("the checkpoint and this Trainer disagree on early stopping (evaluate=): the "
                             f"checkpoint has {'none' if sd['stopper'] is None else 'an early-stopping state'}, "
                             f"this Trainer {'none' if self.stopper is None else 'an evaluate= callback'}")
        for k in ("rng", "pc_rng"):  # a generator refuses a malformed state: try it on a scratch one
            try:
                _set_rng_state(np.random.default_rng(), sd[k])
            except (TypeError, ValueError, KeyError) as e:
                raise ValueError(f"the Trainer state's {k} is not a random generator's state ({e})") from e

    def load_state_dict(self, sd):
        """Restore what ``state_dict`` returned (checked first by ``check_state_dict``: a refused state changes
        nothing). A checkpoint of a data-parallel run also holds every rank's dropout stream (``pc_rngs``): each
        rank of a job of the same size takes its own; a job of another size starts fresh per-rank streams
        (``rank_seed`` of ``pc.seed`` and the step)."""
        self.check_state_dict(sd)
        self.epoch, self.step, self.stopped = int(sd["epoch"]), int(sd["step"]), bool(sd["stopped"])
        _set_rng_state(self.rng, sd["rng"])
        dp, streams = self.parallel, sd.get("pc_rngs")
        if dp is None or dp.size == 1 and not streams:
            _set_rng_state(self.pc.rng, sd["pc_rng"])
        elif streams and len(streams) == dp.size:
            _set_rng_state(self.pc.rng, streams[dp.rank])
        else:
            seed = dp.rank_seed(None if self.pc.seed is None else self.pc.seed + self.step)
            _set_rng_state(self.pc.rng, _rng_state(np.random.default_rng(seed)))
        self.history = list(sd["history"])
        self.step_losses = [float(x) for x in np.asarray(sd["step_losses"]).reshape(-1)]
        self.monitor.load_state_dict(sd["monitor"])
        if self.stopper is not None:
            self.stopper.load_state_dict(sd["stopper"])

    def save(self, path, previous=None):
        """Write parameters, optimiser and loop state to ``path`` (atomically; with ``previous``, the checkpoint
        ``path`` held until now is kept there). With ``parallel`` every rank must call it (it gathers each
        rank's dropout stream) and rank 0 alone writes."""
        state = self.state_dict()
        if self.parallel is not None:
            state["pc_rngs"] = self.parallel.comm.gather_objects(state["pc_rng"])
            if not self.is_root:
                return path
        _ckpt.save_checkpoint(path, self.pc, self.optimizer, previous=previous, trainer=state)
        return path

    def resume(self, path):
        """Load a checkpoint written by ``save`` so the next ``fit`` continues exactly where it stopped (``fit``
        then rewrites the log from the checkpoint's history: an epoch interrupted after it was logged but
        before it was saved is run again and logged once). Every part of the checkpoint is checked before
        anything is changed: one that does not fit this Trainer (other parameters, optimiser or early stopping)
        or cannot be read raises and leaves the model, the optimiser and the loop as they were. With
        ``parallel`` every rank must call it: rank 0 reads ``path`` and broadcasts parameters, optimiser and
        loop state, so the other ranks need no copy of the file (checkpoints are written on rank 0's machine
        only) and the replicas stay bit-identical; an error reading it is raised on every rank."""
        return self._resume([path])

    def _resume(self, paths):
        """``resume`` from the first of ``paths`` that reads as a checkpoint."""
        if self.parallel is None:
            self.load_state_dict(self._read_trainer_state(paths))
            return self
        dp = self.parallel
        failure = sd = None
        if self.is_root:
            try:
                sd = self._read_trainer_state(paths)
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks have heard of it
                failure = e
        message = dp.agree(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if message is not None:
            raise RuntimeError(f"rank 0 could not resume from {paths[0]}: {message}")
        dp.broadcast_parameters()
        opt = dp.agree(self.optimizer.state_dict() if self.is_root else None)
        sd = dp.agree(sd)
        if not self.is_root:
            self.optimizer.load_state_dict(opt)
        self.load_state_dict(sd)
        return self

    def _read_trainer_state(self, paths):
        """Load the first of ``paths`` that reads as a checkpoint into the parameters and the optimiser, once
        everything in it is checked to fit (an unreadable file falls back to the next with a warning); returns
        its loop state, checked too, for ``load_state_dict``."""
        errors = []
        for path in paths:
            try:
                ck = _ckpt.read_checkpoint(path)
            except (_ckpt.CheckpointError, FileNotFoundError) as e:
                errors.append(e)
                continue
            if errors:
                warnings.warn(f"{errors[-1]}; resuming from {path} instead", RuntimeWarning, stacklevel=4)
            self._last_unreadable = bool(errors)

            def check(extra):
                if "trainer" not in extra:
                    raise ValueError(f"{path} holds no Trainer state (it was written by save_checkpoint, not "
                                     "Trainer.save)")
                try:
                    self.check_state_dict(extra["trainer"])
                except ValueError as e:
                    raise ValueError(f"{path}: {e}") from e

            return _ckpt.apply_checkpoint(path, ck, self.pc, self.optimizer, check=check)["trainer"]
        if len(errors) == 1:
            raise errors[0]
        raise _ckpt.CheckpointError("no checkpoint to resume from can be read: " + "; ".join(map(str, errors)))

    # ---- plots ----

    def plot(self, folder):
        """Save ``loss.png`` (per step and per epoch), ``dev.png`` (the dev metric per epoch, when there is
        one) and ``grad_norm.png`` (per step, with the clipping threshold) in ``folder``; returns their paths
        (with ``parallel``, rank 0 draws them and the other ranks return an empty list)."""
        if not self.is_root:
            return []
        os.makedirs(folder, exist_ok=True)
        epochs = [r["epoch"] for r in self.history]
        steps_per_epoch = [r["step"] for r in self.history]
        paths = [os.path.join(folder, "loss.png")]
        line_plot(paths[0], {"per step": (range(1, len(self.step_losses) + 1), self.step_losses),
                              "epoch mean": (steps_per_epoch, [r["train_loss"] for r in self.history])},
                   "training loss", "step", "loss")
        dev = [(e, r["dev_metric"]) for e, r in zip(epochs, self.history) if r.get("dev_metric") is not None]
        if dev:
            paths.append(os.path.join(folder, "dev.png"))
            line_plot(paths[-1], {"dev": tuple(zip(*dev))}, "dev metric", "epoch", "metric")
        paths.append(self.monitor.plot(os.path.join(folder, "grad_norm.png")))
        return paths


def fit(pc, loss_fn, train, dev=None, epochs=10, resume=False, **trainer_kwargs):
    """Make a ``Trainer(pc, loss_fn, **trainer_kwargs)`` and run ``fit(train, dev, epochs, resume)``; returns
    the Trainer (its ``history``, ``plot``, ``monitor``...)."""
    trainer = Trainer(pc, loss_fn, **trainer_kwargs)
    trainer.fit(train, dev, epochs, resume)
    return trainer
