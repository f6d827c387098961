"""Time one peer system training on one task and print ONE JSON line.

    python -m bench.peers.run --task tagger --system torch --batch-size 16 --sentences 800 \\
        --data ../shared/data/ud-english-ewt
    python -m bench.peers.run --task tree --system dynet --autobatch 1 --batch-size 64 --data ../shared/data/sst-trees
    python -m bench.peers.run --task lm --system numpy --batch-size 16                # synthetic data

Systems: ``torch`` (sparse embedding + SparseAdam), ``torch-dense`` (one dense Adam), ``dynet`` (per sentence;
``--autobatch 0|1``), ``dynet-batched`` (lm only: rnnlm-batch's hand batching), ``numpy`` (hand-padded /
level-batched), and autobatch itself behind the same interface (``autobatch-seq``, ``autobatch-agenda``,
``autobatch-depth``, ``autobatch-off``: ``bench/autobatch_systems.py``). Without ``--data`` the task's synthetic
stand-in from ``autobatch.data`` is used.

The first ``--sentences`` training items are cut into minibatches (``tasks.batches``) and timed over one pass,
after ``--warmup`` minibatches of the items that follow them (not timed, but trained on). Output fields:
sents_per_s, words_per_s, seconds, peak_rss_mib (``ru_maxrss`` of this process: data, framework and model),
loss_last (mean loss per loss term over the last ``--window`` timed updates), loss_at (the same over the
``--window`` updates ending at update ``--check-updates``: every system sees the same minibatches, so it tells
whether they learn alike).
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

from bench.peers import tasks

SYSTEMS = ("torch", "torch-dense", "dynet", "dynet-batched", "numpy",
           "autobatch-seq", "autobatch-agenda", "autobatch-prim", "autobatch-depth", "autobatch-off")


def make_system(system, task, n_words, n_labels, seed, autobatch=0, strategy=None):
    """Import the system's module (configuring DyNet first) and make the model for ``task``; ``strategy``:
    autobatch-prim's batching strategy (default agenda)."""
    if system in ("dynet", "dynet-batched"):
        from bench.peers import dynet_models

        dynet_models.configure(autobatch, seed, dynet_models.MEM[task])  # before anything imports dynet
        return dynet_models.make(task, n_words, n_labels, seed, autobatch=autobatch, batched=system == "dynet-batched")
    if system in ("torch", "torch-dense"):
        from bench.peers import torch_models

        return torch_models.make(task, n_words, n_labels, seed, sparse=system == "torch")
    if system == "numpy":
        from bench.peers import padded_numpy

        return padded_numpy.make(task, n_words, n_labels, seed)
    if system.startswith("autobatch-"):
        from bench import autobatch_systems  # the system under test, behind the same interface

        return autobatch_systems.make(task, n_words, n_labels, seed, style=system.removeprefix("autobatch-"),
                                      strategy=strategy or "agenda")
    raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")


def _threads(args):
    # The threads the system computes with, for the record (DyNet on CPU computes on one).
    if args.system.startswith("torch"):
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        return torch.get_num_threads()
    if args.system == "numpy" or args.system.startswith("autobatch-"):
        return os.environ.get("OPENBLAS_NUM_THREADS", "openblas default")
    return 1


def _per_loss(task, losses, batches):
    return sum(losses) / sum(tasks.n_losses(task, it) for b in batches for it in b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=tasks.TASKS, required=True)
    ap.add_argument("--system", choices=SYSTEMS, required=True)
    ap.add_argument("--autobatch", type=int, default=0, choices=(0, 1), help="DyNet's auto-batching (dynet only)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--sentences", type=int, default=1000, help="items timed (the first of the training set)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed minibatches before the timed pass")
    ap.add_argument("--data", help="corpus folder (default: synthetic data)")
    ap.add_argument("--order", choices=("shuffle", "sorted"), help="minibatch order (default: the task's)")
    ap.add_argument("--check-updates", type=int, default=10, help="report the loss around this update")
    ap.add_argument("--window", type=int, default=5, help="updates averaged for the loss figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategy", choices=("agenda", "depth", "off"),
                    help="autobatch-prim's batching strategy (default agenda); the step-by-step systems name theirs")
    ap.add_argument("--threads", type=int, help="torch threads (default 2); NumPy's BLAS reads OPENBLAS_NUM_THREADS "
                                                "at import, so set that in the environment instead")
    args = ap.parse_args(argv)
    if args.system == "dynet-batched" and args.task != "lm":
        ap.error("--system dynet-batched exists for --task lm only")
    if args.strategy and args.system != "autobatch-prim":
        ap.error("--strategy is autobatch-prim's; the step-by-step code's strategies are --system autobatch-agenda, "
                 "autobatch-depth and autobatch-off")

    warm_n = args.warmup * args.batch_size
    td = tasks.load(args.task, args.sentences + warm_n, args.data, args.seed)
    timed, warm = td.items[: args.sentences], td.items[args.sentences :]
    if len(timed) < args.sentences:
        sys.exit(f"only {len(timed)} items available, --sentences {args.sentences} asked")
    system = make_system(args.system, args.task, td.n_words, td.n_labels, args.seed, args.autobatch, args.strategy)
    threads = _threads(args)
    load_before = os.getloadavg()[0]
    for batch in tasks.batches(args.task, warm, args.batch_size, args.seed + 1, args.order):
        system.train_batch(batch)
    batches = tasks.batches(args.task, timed, args.batch_size, args.seed, args.order)

    losses = []
    t0 = time.perf_counter()
    for batch in batches:
        losses.append(system.train_batch(batch))
    seconds = time.perf_counter() - t0

    w = args.window
    k = min(args.check_updates, len(batches))
    at = slice(max(0, k - w), k)
    words = sum(tasks.n_words(args.task, it) for it in timed)
    out = dict(
        task=args.task, system=system.name, batch_size=args.batch_size, sentences=len(timed), words=words,
        updates=len(batches), seconds=round(seconds, 4),
        sents_per_s=round(len(timed) / seconds, 1), words_per_s=round(words / seconds, 1),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        loss_last=round(_per_loss(args.task, losses[-w:], batches[-w:]), 4),
        loss_at=dict(update=k, loss=round(_per_loss(args.task, losses[at], batches[at]), 4)),
        data=args.data or "synthetic", n_words=td.n_words, warmup_batches=args.warmup, seed=args.seed,
        python=platform.python_version(), threads=threads,
        # the 1-minute load average before and after: above ~1 another process was running beside this one
        load_avg=[round(load_before, 2), round(os.getloadavg()[0], 2)],
    )
    if hasattr(system, "report"):  # autobatch: its strategy, the engine's per-minibatch counts and seconds
        out["strategy"], out["engine"] = system.strategy, system.report()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
