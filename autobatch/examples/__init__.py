"""Runnable training examples on the real datasets or their synthetic stand-ins (issue 4):

    python -m autobatch.examples.tagger    --data ../shared/data/ud-english-ewt   # BiLSTM UPOS tagger
    python -m autobatch.examples.treelstm  --data ../shared/data/sst-trees        # Tree-LSTM sentiment (SST)
    python -m autobatch.examples.lm        --data ../shared/data/ptb-lm           # LSTM language model (PTB)

Without ``--data`` each runs on a small synthetic set from ``autobatch.data`` (quick, works anywhere). Every
example prints a line per epoch and, as its last line, one JSON object with its metrics. ``--distributed``
trains data-parallel over the ranks of an MPI job (``mpirun -n 4 python -m autobatch.examples.tagger
--distributed ...``; needs ``pip install -e '.[mpi]'``): rank 0 alone prints. Each module's model is
a small class (``pc``, ``loss(example)``, ``predict(x)``) that other code can import; ``main(argv)`` is the
command line. This module holds what the three share: the common flags (among them the training tricks:
``--optimizer``, ``--lr-decay``, ``--clip T|auto|none``, ``--normalize``, ``--test``, ``--trace``), the recurrent
block's flags (``add_recurrent_flags``, ``recurrent``), the training loop around ``autobatch.Trainer`` and the
seed ensembles of ``--ensemble N`` (``train_ensemble``; the tagger and the Tree-LSTM). ``bench/tricks.py``
measures each trick with these flags.
"""
import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import graph as _graph
from ..distributed import Communicator, DataParallel, communicator, failure_message
from ..ensemble import Ensemble, accuracy
from ..optim import SGD, Adam, GradNormMonitor
from ..rnn import GRU, LSTM
from ..train import NORMALIZE, Trainer

__all__ = ["common_parser", "add_recurrent_flags", "recurrent", "check_args", "split_file", "subset",
           "train_model", "emit"]


def _clip(text):
    """``--clip``'s value: a threshold > 0, ``auto`` (from the gradient norm's range) or ``none``."""
    if text.lower() in ("auto", "none"):
        return text.lower() if text.lower() == "auto" else None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clip expects a number, 'auto' or 'none', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--clip must be positive, got {value} ('none' for no clipping)")
    return value


def common_parser(description, *, epochs, batch_size, lr, embed, hidden, max_train, max_dev):
    """An ArgumentParser with the flags every example takes; the defaults differ per example."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", metavar="DIR", help="the dataset's folder (default: synthetic data)")
    ap.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    ap.add_argument("--max-train", type=int, default=None, metavar="N",
                    help=f"use N training examples (default: all; synthetic: {max_train})")
    ap.add_argument("--max-dev", type=int, default=None, metavar="N",
                    help=f"use N dev examples (default: all; synthetic: {max_dev})")
    ap.add_argument("--seed", type=int, default=0, help="initialisation, shuffling and synthetic data")
    ap.add_argument("--test", action="store_true", help="after training, also score the best model on the "
                                                         "dataset's test split (needs --data)")
    ap.add_argument("--embed", type=int, default=embed, help=f"word embedding size (default {embed})")
    ap.add_argument("--hidden", type=int, default=hidden, help=f"recurrent hidden size (default {hidden})")
    ap.add_argument("--batch-size", type=int, default=batch_size, help=f"minibatch size (default {batch_size})")
    ap.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr})")
    ap.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="the optimiser (default adam)")
    ap.add_argument("--momentum", type=float, default=0.0, help="sgd: momentum (default 0)")
    ap.add_argument("--lr-decay", type=float, default=1.0, metavar="F",
                    help="multiply the learning rate by F after every epoch that does not improve the dev metric "
                         "(default 1: constant)")
    ap.add_argument("--clip", type=_clip, default=5.0, metavar="{T,auto,none}",
                    help="gradient norm clipping: a threshold (default DyNet's 5), 'auto' (the 95th percentile "
                         "of the first --clip-warmup steps' norms) or 'none'")
    ap.add_argument("--clip-warmup", type=int, default=100, metavar="N",
                    help="--clip auto: the steps whose norms set the threshold (default 100)")
    ap.add_argument("--normalize", choices=NORMALIZE, default="max_len",
                    help="the minibatch loss: its sum over the longest example's length (default), over the "
                         "number of examples, or the plain sum")
    ap.add_argument("--strategy", choices=_graph.STRATEGIES, default="agenda", help="batching strategy")
    ap.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better dev "
                                                             "metric (default 3)")
    ap.add_argument("--checkpoint-dir", metavar="DIR", help="write last.npz there after every epoch")
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir/last.npz if present")
    ap.add_argument("--log", metavar="FILE", help="one JSON line per epoch")
    ap.add_argument("--keep-epochs", action="store_true", help="also keep --checkpoint-dir/epoch_NNN.npz per "
                                                                "epoch (for checkpoint ensembles)")
    ap.add_argument("--trace", metavar="FILE", help="write every step's loss and gradient norm there (JSON)")
    ap.add_argument("--distributed", action="store_true",
                    help="data-parallel over the ranks of an MPI job: launch with mpirun -n N python -m ... "
                         "--distributed (needs pip install -e '.[mpi]'); --batch-size is the whole minibatch, "
                         "shared among the ranks")
    return ap


def add_recurrent_flags(ap, *, dropout=0.0):
    """The recurrent block's tricks as flags (the tagger's and the language model's; see ``recurrent``)."""
    g = ap.add_argument_group("recurrent block")
    g.add_argument("--cell", choices=("lstm", "gru"), default="lstm", help="the recurrent cell (default lstm)")
    g.add_argument("--layers", type=int, default=1, help="stacked layers (default 1)")
    g.add_argument("--combine", choices=("last", "sum"), default="last",
                   help="with --layers > 1: the top layer's outputs (default) or their sum over the layers")
    g.add_argument("--layer-norm", action="store_true", help="layer normalisation in the recurrence")
    g.add_argument("--learned-init", action="store_true", help="trainable initial state (default zeros)")
    g.add_argument("--forget-bias", type=float, default=1.0, help="lstm: the forget gate's initial bias (1)")
    g.add_argument("--reset-bias", type=float, default=-1.0, help="gru: the reset gate's initial bias (-1)")
    g.add_argument("--dropout", type=float, default=dropout,
                   help=f"dropout on the feed-forward connections: the recurrence's input (a new mask per step) "
                        f"and its output (default {dropout})")
    g.add_argument("--variational", action="store_true",
                   help="with --dropout: one mask per sequence on the recurrence's input and on its h (Gal)")
    g.add_argument("--recurrent-dropout", type=float, default=0.0,
                   help="dropout on the cell's candidate update (Semeniuta; default 0)")
    g.add_argument("--zoneout", type=float, default=0.0, help="zoneout on h (and c) (default 0)")
    g.add_argument("--dropconnect", type=float, default=0.0,
                   help="DropConnect on the recurrence's weight matrices, one mask per sequence (default 0)")
    return g


def recurrent(args, pc, input_dim, hidden, name):
    """The recurrent block the flags of ``add_recurrent_flags`` describe: an LSTM or GRU (``autobatch.rnn``)."""
    options = dict(num_layers=args.layers, combine=args.combine, layer_norm=args.layer_norm,
                   learned_init=args.learned_init, dropout=args.dropout, variational=args.variational,
                   recurrent_dropout=args.recurrent_dropout, zoneout=args.zoneout, dropconnect=args.dropconnect,
                   name=name)
    if args.cell == "gru":
        return GRU(pc, input_dim, hidden, reset_bias=args.reset_bias, **options)
    return LSTM(pc, input_dim, hidden, forget_bias=args.forget_bias, **options)


def check_args(ap, args):
    """Reject flag values the examples cannot use (argparse's own error: usage and exit status 2)."""
    for flag in ("epochs", "batch_size", "embed", "hidden", "mlp", "max_train", "max_dev", "patience", "layers",
                 "clip_warmup", "ensemble", "jobs"):
        v = getattr(args, flag, None)
        if v is not None and v < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1, got {v}")
    if not args.lr > 0:
        ap.error(f"--lr must be positive, got {args.lr}")
    if not 0.0 < getattr(args, "lr_decay", 1.0) <= 1.0:
        ap.error(f"--lr-decay must lie in (0, 1], got {args.lr_decay}")
    for flag in ("dropout", "recurrent_dropout", "zoneout", "dropconnect", "momentum"):
        v = getattr(args, flag, None)
        if v is not None and not 0.0 <= v < 1.0:
            ap.error(f"--{flag.replace('_', '-')} must lie in [0, 1), got {v}")
    if getattr(args, "variational", False) and not args.dropout:
        ap.error("--variational needs --dropout P > 0 (it makes that dropout's masks one per sequence)")
    if args.resume and not args.checkpoint_dir:
        ap.error("--resume needs --checkpoint-dir")
    if args.test and not args.data:
        ap.error("--test needs --data (the synthetic sets have no test split)")
    if args.keep_epochs and not args.checkpoint_dir:
        ap.error("--keep-epochs needs --checkpoint-dir")
    if getattr(args, "jobs", 1) > 1 and getattr(args, "distributed", False):
        ap.error("--jobs trains ensemble members in processes of their own; it cannot run under --distributed")
    args.comm = Communicator()
    if getattr(args, "distributed", False):
        try:
            args.comm = join_job()
        except ImportError as e:
            ap.error(f"--distributed: {e}")


def join_job():
    """Join the MPI job this process was launched in (``--distributed``) and return its communicator. Ranks
    other than 0 print nothing to stdout from then on (their errors still reach stderr), so the run's output
    is rank 0's alone and ends with its JSON line. An uncaught exception on any rank aborts the whole job with
    "rank r of n failed" and the traceback, even in an example whose main is not wrapped in ``comm.run``:
    otherwise the other ranks would wait in their next collective forever."""
    comm = communicator(True)
    if comm.rank != 0:
        sys.stdout = open(os.devnull, "w")
    if comm.size > 1:
        sys.excepthook = lambda kind, value, tb: comm.abort(failure_message(comm, value))
    return comm


def split_file(folder, pattern):
    """The one file in ``folder`` matching ``pattern``."""
    matches = sorted(Path(folder).glob(pattern))
    if len(matches) != 1:
        what = "no file" if not matches else f"{len(matches)} files ({', '.join(m.name for m in matches)})"
        raise FileNotFoundError(f"{folder}: {what} matching {pattern!r}; --data must be the dataset's folder")
    return matches[0]


def subset(items, n):
    """``n`` of ``items`` drawn at random, kept in their order (all of them when ``n`` is None or not smaller).
    Random rather than the first ``n`` because dataset files can be sorted (SST's are, by sentiment); the draw
    is fixed, the same for every ``--seed``, so runs that differ in seed see the same examples."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    keep = np.sort(np.random.default_rng(0).choice(len(items), size=n, replace=False))
    return [items[i] for i in keep.tolist()]


def train_model(model, train, dev, evaluate, args, *, metric, mode="max", unit="examples", perplexity=None):
    """Train ``model`` (``pc`` and ``loss(example)``) with ``autobatch.Trainer`` and the common flags: Adam (or
    ``--optimizer sgd``), gradient norm clipped per ``--clip``, the minibatch loss normalised per ``--normalize``
    (default: by its longest example), early stopping on
    ``evaluate(dev)`` (named ``metric``; ``mode`` says whether higher is better; run with dropout off) with the
    best parameters restored, optional checkpoints, log and ``--trace``. Prints one line per epoch: the training
    loss as the optimiser saw it (each minibatch's normalised loss) and per token, with its perplexity when
    ``perplexity`` (default: when ``metric`` is a perplexity). Returns the Trainer and a summary (the best dev
    metric, epochs, the dev metric per epoch (``dev_curve``), per-epoch training loss and loss per token (and
    perplexity), training seconds, ``train_<unit>_per_s``, ``ranks`` and
    ``allreduce_bytes_per_step``: the mean bytes this rank sent per gradient sync, 0 in one process). With
    ``--distributed`` (``args.comm`` set by ``check_args``) the Trainer is data-parallel over the job's ranks."""
    if perplexity is None:
        perplexity = "perplexity" in metric
    comm = getattr(args, "comm", None) or Communicator()
    dp = DataParallel(model.pc, comm) if getattr(args, "distributed", False) else None
    trainer = None
    mark = [time.perf_counter()]  # end of the previous epoch's evaluation
    how = {"max_len": "sum / longest example", "batch": "mean over examples", "sum": "sum"}[args.normalize]

    def watched(examples):
        seconds = time.perf_counter() - mark[0]
        losses = trainer.step_losses[trainer.epoch_first_step:]  # (a resumed run holds the earlier epochs' too)
        value = evaluate(examples)
        rate = getattr(args, "lr_decay", 1.0)
        decay = "" if rate == 1.0 or trainer.stopper.better(value) else f"; lr x {rate:g}"
        if decay:  # decay on a plateau: the steps were too big to settle in the minimum
            optimizer.lr *= rate
        per_token = trainer.epoch_loss_per_token
        ppl = f" (perplexity {math.exp(min(per_token, 700)):.2f})" if perplexity else ""
        tag = getattr(args, "tag", "")  # "[seed S] " for members trained in parallel (--jobs)
        print(f"{tag}epoch {trainer.epoch}: train loss {sum(losses) / max(1, len(losses)):.4f} per minibatch "
              f"({how}), {per_token:.4f} per token{ppl}, {len(train) / seconds:.0f} {unit}/s; {metric} "
              f"{value:.4f}{decay}", flush=True)
        mark[0] = time.perf_counter()
        return value

    if args.optimizer == "sgd":
        optimizer = SGD(model.pc, lr=args.lr, momentum=args.momentum)
    else:
        optimizer = Adam(model.pc, lr=args.lr)
    clip = GradNormMonitor("auto", warmup=args.clip_warmup) if args.clip == "auto" else args.clip
    trainer = Trainer(model.pc, model.loss, optimizer, batch_size=args.batch_size, normalize=args.normalize,
                      strategy=args.strategy, clip=clip, evaluate=watched, mode=mode, patience=args.patience,
                      checkpoint_dir=args.checkpoint_dir, keep_epochs=args.keep_epochs, log_path=args.log,
                      seed=args.seed, parallel=dp)
    try:
        trainer.fit(train, dev, epochs=args.epochs, resume=args.resume)
    finally:  # a diverged run's trace is the interesting one
        if args.trace and comm.rank == 0:
            write_trace(args.trace, trainer)
    history = trainer.history
    seconds = sum(r["seconds"] for r in history)
    summary = {
        metric: trainer.stopper.best,
        "best_epoch": trainer.stopper.best_epoch,
        "epochs": trainer.epoch,
        "train_loss": [round(r["train_loss"], 6) for r in history],
        "train_loss_per_token": [round(r["train_loss_per_token"], 6) for r in history],
        "dev_curve": [r["dev_metric"] for r in history],
        "train_seconds": round(seconds, 3),
        f"train_{unit}_per_s": round(len(train) * len(history) / seconds, 2) if seconds > 0 else None,
        "ranks": comm.size,
        "allreduce_bytes_per_step": 0 if dp is None else round(dp.bytes_per_sync()),
    }
    if perplexity:
        summary["train_perplexity"] = [round(math.exp(min(r["train_loss_per_token"], 700)), 3) for r in history]
    return trainer, summary


def write_trace(path, trainer):
    """``--trace``: every step's loss (as the optimiser saw it) and gradient norm before clipping, the clipping
    threshold in the end, and the steps per epoch, as one JSON object."""
    trace = {"step_losses": trainer.step_losses, "grad_norms": trainer.monitor.norms,
             "clip": trainer.monitor.threshold, "epoch_steps": [r["step"] for r in trainer.history]}
    Path(path).write_text(json.dumps(trace), encoding="utf-8")


def add_ensemble_flag(ap):
    """``--ensemble N``: train N models and also report their ensemble (see ``train_ensemble``)."""
    ap.add_argument("--ensemble", type=int, default=1, metavar="N",
                    help="train N models (seeds --seed .. --seed + N - 1, each with its own initialisation and "
                         "shuffling, each stopped early on dev) and also report their ensemble, which averages "
                         "the members' probabilities (default 1: one model)")
    ap.add_argument("--jobs", type=int, default=1, metavar="J",
                    help="with --ensemble: train J members at a time, each in its own process (default 1)")


def train_ensemble(args, make_model, train, dev, evaluate, *, metric, unit, scored_dev, test=None,
                   test_metric="test_accuracy"):
    """Train ``args.ensemble`` models with ``train_model`` (``make_model(seed)`` builds one; ``evaluate(model,
    examples)`` is the dev metric) and, with more than one, score their ensemble (``autobatch.ensemble``: the
    mean of the members' ``probs``) on ``scored_dev`` and ``test``, ``(x, label)`` lists. Returns the members
    and the summary: the first member's, plus per-member results and ``ensemble_<metric>`` /
    ``ensemble_<test_metric>``; each member's ``<test_metric>`` when ``test`` is given. With ``--jobs J`` > 1,
    J members train at a time in forked processes; each sends back its parameters and summary, so the result
    is the same as training them one after another."""
    seeds = [args.seed + k for k in range(args.ensemble)]
    job = (args, make_model, train, dev, evaluate, metric, unit, test, test_metric)
    jobs = min(getattr(args, "jobs", 1), len(seeds))
    if jobs > 1:
        members, summaries = [], []
        for seed, (params, summary) in zip(seeds, _in_processes(job, seeds, jobs)):
            model = make_model(seed)
            model.pc.set_values(params)
            members.append(model)
            summaries.append(summary)
    else:
        members, summaries = map(list, zip(*(_train_member(job, seed) for seed in seeds)))
    summary = summaries[0]
    if len(members) > 1:
        ens = Ensemble(members)
        keep = (metric, test_metric, "best_epoch", "epochs", "train_seconds", "dev_curve")
        summary = {**summary, "members": [{k: s[k] for k in keep if k in s} for s in summaries],
                   f"ensemble_{metric}": accuracy(ens, scored_dev)}
        if test is not None:
            summary[f"ensemble_{test_metric}"] = accuracy(ens, test)
        each = ", ".join(f"{s[metric]:.4f}" for s in summaries)
        print(f"ensemble of {len(members)}: {metric} {summary[f'ensemble_{metric}']:.4f} (members {each})",
              flush=True)
    return members, summary


def _train_member(job, seed):
    """Train the ensemble member of ``seed``: returns the model and its summary."""
    args, make_model, train, dev, evaluate, metric, unit, test, test_metric = job
    own = {"seed": seed}  # its own initialisation and shuffling too
    if args.ensemble > 1 and args.checkpoint_dir:  # each member's checkpoints apart from the others'
        own["checkpoint_dir"] = str(Path(args.checkpoint_dir) / f"seed_{seed}")
    if getattr(args, "jobs", 1) > 1:  # members in parallel interleave their lines
        own["tag"] = f"[seed {seed}] "
    member_args = argparse.Namespace(**{**vars(args), **own})
    model = make_model(seed)
    _, summary = train_model(model, train, dev, lambda examples: evaluate(model, examples), member_args,
                             metric=metric, unit=unit)
    if test is not None:  # the best epoch's parameters, restored by the Trainer
        summary[test_metric] = accuracy(model, test)
    return model, summary


_JOB = None  # the ensemble a forked worker trains a member of: inherited, because closures cannot be pickled


def _member_in_process(seed):
    model, summary = _train_member(_JOB, seed)
    return model.pc.values(), summary


def _in_processes(job, seeds, jobs):
    """``_train_member`` for every seed, ``jobs`` at a time in forked processes; the parameters by name and the
    summary of each, in seed order."""
    global _JOB
    _JOB = job
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_member_in_process, seeds))
    finally:
        _JOB = None


def emit(metrics):
    """Print the metrics as the run's last line: one JSON object."""
    print(json.dumps(metrics), flush=True)
    return metrics
