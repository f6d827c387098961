"""Runnable training examples on the real datasets or their synthetic stand-ins (issue 4):

    python -m autobatch.examples.tagger    --data ../shared/data/ud-english-ewt   # BiLSTM UPOS tagger
    python -m autobatch.examples.treelstm  --data ../shared/data/sst-trees        # Tree-LSTM sentiment (SST)
    python -m autobatch.examples.lm        --data ../shared/data/ptb-lm           # LSTM language model (PTB)

Without ``--data`` each runs on a small synthetic set from ``autobatch.data`` (quick, works anywhere). Every
example prints a line per epoch and, as its last line, one JSON object with its metrics. ``--distributed``
trains data-parallel over the ranks of an MPI job (``mpirun -n 4 python -m autobatch.examples.tagger
--distributed ...``; needs ``pip install -e '.[mpi]'``): rank 0 alone prints. Each module's model is
a small class (``pc``, ``loss(example)``, ``predict(x)``) that other code can import; ``main(argv)`` is the
command line. This module holds what the three share: the common flags and the training loop around
``autobatch.Trainer``.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import graph as _graph
from ..distributed import Communicator, DataParallel, communicator, failure_message
from ..optim import Adam
from ..train import Trainer

__all__ = ["common_parser", "check_args", "split_file", "subset", "train_model", "emit"]


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
    ap.add_argument("--embed", type=int, default=embed, help=f"word embedding size (default {embed})")
    ap.add_argument("--hidden", type=int, default=hidden, help=f"recurrent hidden size (default {hidden})")
    ap.add_argument("--batch-size", type=int, default=batch_size, help=f"minibatch size (default {batch_size})")
    ap.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default {lr})")
    ap.add_argument("--clip", type=float, default=5.0, help="gradient norm clipping threshold (DyNet's 5)")
    ap.add_argument("--strategy", choices=_graph.STRATEGIES, default="agenda", help="batching strategy")
    ap.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better dev "
                                                             "metric (default 3)")
    ap.add_argument("--checkpoint-dir", metavar="DIR", help="write last.npz there after every epoch")
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir/last.npz if present")
    ap.add_argument("--log", metavar="FILE", help="one JSON line per epoch")
    ap.add_argument("--distributed", action="store_true",
                    help="data-parallel over the ranks of an MPI job: launch with mpirun -n N python -m ... "
                         "--distributed (needs pip install -e '.[mpi]'); --batch-size is the whole minibatch, "
                         "shared among the ranks")
    return ap


def check_args(ap, args):
    """Reject flag values the examples cannot use (argparse's own error: usage and exit status 2)."""
    for flag in ("epochs", "batch_size", "embed", "hidden", "mlp", "max_train", "max_dev", "patience"):
        v = getattr(args, flag, None)
        if v is not None and v < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1, got {v}")
    for flag in ("lr", "clip"):
        if not getattr(args, flag) > 0:
            ap.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    if args.resume and not args.checkpoint_dir:
        ap.error("--resume needs --checkpoint-dir")
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
    """Train ``model`` (``pc`` and ``loss(example)``) with ``autobatch.Trainer`` and the common flags: Adam,
    gradient norm clipped at ``--clip``, the minibatch loss normalised by its longest example, early stopping on
    ``evaluate(dev)`` (named ``metric``; ``mode`` says whether higher is better; run with dropout off) with the
    best parameters restored, optional checkpoints and log. Prints one line per epoch: the training loss as the
    optimiser saw it (each minibatch's sum over its longest example's length) and per token, with its
    perplexity when ``perplexity`` (default: when ``metric`` is a perplexity). Returns the Trainer and a summary (the best dev metric, epochs, per-epoch
    training loss and loss per token (and perplexity), training seconds, ``train_<unit>_per_s``, ``ranks`` and
    ``allreduce_bytes_per_step``: the mean bytes this rank sent per gradient sync, 0 in one process). With
    ``--distributed`` (``args.comm`` set by ``check_args``) the Trainer is data-parallel over the job's ranks."""
    if perplexity is None:
        perplexity = "perplexity" in metric
    comm = getattr(args, "comm", None) or Communicator()
    dp = DataParallel(model.pc, comm) if getattr(args, "distributed", False) else None
    trainer = None
    mark = [time.perf_counter(), 0]  # end of the previous epoch's evaluation, steps done by then

    def watched(examples):
        seconds = time.perf_counter() - mark[0]
        losses = trainer.step_losses[mark[1]:]
        value = evaluate(examples)
        per_token = trainer.epoch_loss_per_token
        ppl = f" (perplexity {math.exp(min(per_token, 700)):.2f})" if perplexity else ""
        print(f"epoch {trainer.epoch}: train loss {sum(losses) / max(1, len(losses)):.4f} per minibatch (sum / longest example), "
              f"{per_token:.4f} per token{ppl}, {len(train) / seconds:.0f} {unit}/s; {metric} {value:.4f}",
              flush=True)
        mark[:] = time.perf_counter(), trainer.step
        return value

    trainer = Trainer(model.pc, model.loss, Adam(model.pc, lr=args.lr), batch_size=args.batch_size,
                      strategy=args.strategy, clip=args.clip, evaluate=watched, mode=mode, patience=args.patience,
                      checkpoint_dir=args.checkpoint_dir, log_path=args.log, seed=args.seed, parallel=dp)
    trainer.fit(train, dev, epochs=args.epochs, resume=args.resume)
    history = trainer.history
    seconds = sum(r["seconds"] for r in history)
    summary = {
        metric: trainer.stopper.best,
        "best_epoch": trainer.stopper.best_epoch,
        "epochs": trainer.epoch,
        "train_loss": [round(r["train_loss"], 6) for r in history],
        "train_loss_per_token": [round(r["train_loss_per_token"], 6) for r in history],
        "train_seconds": round(seconds, 3),
        f"train_{unit}_per_s": round(len(train) * len(history) / seconds, 2) if seconds > 0 else None,
        "ranks": comm.size,
        "allreduce_bytes_per_step": 0 if dp is None else round(dp.bytes_per_sync()),
    }
    if perplexity:
        summary["train_perplexity"] = [round(math.exp(min(r["train_loss_per_token"], 700)), 3) for r in history]
    return trainer, summary


def emit(metrics):
    """Print the metrics as the run's last line: one JSON object."""
    print(json.dumps(metrics), flush=True)
    return metrics
