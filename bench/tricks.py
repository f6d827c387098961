"""The training tricks of the classic NLP deck, measured (issue 14): one experiment per claim, each a set of
runs of the example programs that differ from a baseline in one flag, over several seeds.

    python -m bench.tricks --data-root ../shared/data            # the full study (hours)
    python -m bench.tricks --data-root ../shared/data --quick    # a reduced version (<= 20 min on 2 cores)
    python -m bench.tricks --smoke                               # the machinery on tiny synthetic data

Every run is ``autobatch.examples.<task>.main(argv)`` in this process (one run at a time: the machine is
shared), with ``--log`` (per-epoch records) and ``--trace`` (per-step loss and gradient norm) read back; the
argv is printed in TRICKS.md, so each configuration is a runnable command. Runs are cached by argv in
``--work`` (a rerun of an interrupted study skips what is done). Results: ``bench/TRICKS.md`` (or ``--out``)
and its plots ``tricks_<experiment>.png``. Verdicts are computed from the numbers: a difference counts when it
exceeds twice its standard error over the seeds, otherwise "no effect".
"""
import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autobatch import data, ensemble
from autobatch.checkpoint import load_checkpoint
from autobatch.examples import lm, tagger
from autobatch.optim import Adam
from autobatch.plots import line_plot

HERE = Path(__file__).resolve().parent
FULL_RUNS = HERE / "full_runs.md"  # the full-quality runs (issue 14, item 4), written from their outputs


@dataclass
class Scale:
    """The sizes of one version of the study."""

    name: str
    train: int  # EWT training sentences (a fixed random subset)
    dev: int
    epochs: int
    seeds: tuple
    norm_train: int  # the loss normalisation grid's smaller runs
    norm_epochs: int
    norm_lrs: tuple
    norm_batch_sizes: tuple
    cv_configs: tuple  # Adam learning rates searched by cross-validation
    folds: int
    top_k: int
    clip_warmup: int  # --clip auto's warm-up steps (the quick runs have ~80 steps in all)
    long_train: int  # early stopping and dropout: a setting trained long enough to overfit
    long_epochs: int
    lm_train: int = 0  # PTB sentences for the language model's experiment (0: no LM experiment)
    lm_dev: int = 0
    lm_epochs: int = 0
    lm_model: tuple = ("--embed", "64", "--hidden", "128")
    model: tuple = ()  # flags for the tagger's size (the smoke test's tiny one)
    synthetic: bool = False  # synthetic sentences written as CoNLL-U files instead of EWT


SCALES = {
    "full": Scale("full", train=12543, dev=2001, epochs=20, seeds=(0, 1, 2), long_train=12543, long_epochs=20,
                  norm_train=4000, norm_epochs=5,
                  norm_lrs=(1e-3, 1e-2, 1e-1, 1.0), norm_batch_sizes=(8, 32, 128), cv_configs=(1e-3, 3e-3, 1e-2),
                  folds=5, top_k=2, clip_warmup=100, lm_train=10000, lm_dev=1000, lm_epochs=6,
                  lm_model=("--embed", "200", "--hidden", "200", "--softmax", "sampled")),
    "quick": Scale("quick", train=500, dev=300, epochs=5, seeds=(0, 1, 2), long_train=250, long_epochs=12,
                   norm_train=400, norm_epochs=3,
                   norm_lrs=(1e-3, 1e-2, 1e-1, 1.0), norm_batch_sizes=(8, 32, 128), cv_configs=(1e-3, 3e-3, 1e-2),
                   folds=3, top_k=2, clip_warmup=30, lm_train=200, lm_dev=100, lm_epochs=3),
    "smoke": Scale("smoke", train=40, dev=20, epochs=2, seeds=(0, 1), long_train=20, long_epochs=3, norm_train=24,
                   norm_epochs=1, norm_lrs=(0.01, 1.0), norm_batch_sizes=(4, 8), cv_configs=(3e-3, 1e-2), folds=2,
                   top_k=2, clip_warmup=2,
                   lm_train=24, lm_dev=8, lm_epochs=1, lm_model=("--embed", "6", "--hidden", "6"),
                   model=("--embed", "8", "--hidden", "6", "--mlp", "8"), synthetic=True),
}

DROPOUTS = [("none", []), ("standard", ["--dropout", "0.3"]), ("variational", ["--dropout", "0.3", "--variational"]),
            ("recurrent", ["--recurrent-dropout", "0.3"]), ("zoneout", ["--zoneout", "0.15"]),
            ("DropConnect", ["--dropconnect", "0.3"])]


# ---- statistics and verdicts ---------------------------------------------------------------------------------


def mean_std(values):
    """Mean and sample standard deviation (0 for one value) of the finite ``values``; NaNs when none is."""
    a = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(a):
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt(values, scale=100.0, digits=2):
    """``mean ± std`` of ``values`` times ``scale`` (accuracies as percentages), with n."""
    m, s = mean_std(values)
    if not math.isfinite(m):
        return "diverged"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def verdict(base, variant, higher_better=True, scale=100.0, unit=" points"):
    """"helps", "hurts" or "no effect" for ``variant`` against ``base`` (per-seed values), with the difference
    of the means: it counts when it is larger than twice its standard error (and than 1e-9)."""
    mb, sb = mean_std(base)
    mv, sv = mean_std(variant)
    if not math.isfinite(mv):
        return "hurts (diverged)"
    if not math.isfinite(mb):
        return "helps (the baseline diverged)"
    nb = sum(1 for v in base if v is not None and math.isfinite(v))
    nv = sum(1 for v in variant if v is not None and math.isfinite(v))
    diff = mv - mb
    se = math.sqrt(sb ** 2 / nb + sv ** 2 / nv)
    text = f"{diff * scale:+.2f}{unit}"
    if abs(diff) <= max(2 * se, 1e-9):
        return f"no effect ({text}, within 2 s.e. = {2 * se * scale:.2f})"
    return f"{'helps' if (diff > 0) == higher_better else 'hurts'} ({text})"


# ---- running the examples ------------------------------------------------------------------------------------


class Runner:
    """Runs example programs in this process, one at a time, caching each run's results in ``work`` by argv."""

    def __init__(self, work, echo=True):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        self.runs = self.cached = 0  # runs trained, runs read from an earlier invocation's cache
        self.seconds = 0.0  # the runs trained now
        self.used_seconds = 0.0  # the recorded training time of every run used, cached ones too
        self.memo = {}

    def folder(self, argv):
        """The run's own folder (its log, trace, checkpoints, cached result)."""
        return self.work / hashlib.sha1(" ".join(argv).encode()).hexdigest()[:16]

    def __call__(self, module, argv, keep_epochs=False):
        """The result of ``module.main(argv)``: ``metrics`` (its JSON line; ``{"diverged": ...}`` when the loss
        or gradient became non-finite), ``log`` (per-epoch records), ``trace`` (per-step losses and gradient
        norms), ``argv`` and ``command``."""
        folder = self.folder(argv)
        if folder in self.memo:
            return self.memo[folder]
        cached = folder / "result.json"
        if cached.exists():
            self.cached += 1
            self.memo[folder] = json.loads(cached.read_text())
            self.used_seconds += self.memo[folder].get("seconds", 0.0)
            return self.memo[folder]
        folder.mkdir(parents=True, exist_ok=True)
        extra = ["--log", str(folder / "log.jsonl"), "--trace", str(folder / "trace.json")]
        if keep_epochs:
            extra += ["--checkpoint-dir", str(folder / "ck"), "--keep-epochs"]
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
                metrics = module.main(list(argv) + extra)
        except FloatingPointError as e:  # a diverged run is a result (of a too large learning rate)
            metrics = {"diverged": str(e).splitlines()[0]}
        seconds = time.perf_counter() - t0
        self.runs += 1
        self.seconds += seconds
        self.used_seconds += seconds
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()] \
            if (folder / "log.jsonl").exists() else []
        trace = json.loads((folder / "trace.json").read_text()) if (folder / "trace.json").exists() else {}
        result = dict(metrics=metrics, log=log, trace=trace, argv=list(argv), seconds=seconds,
                      command=f"python -m {module.__name__} " + " ".join(argv), folder=str(folder))
        cached.write_text(json.dumps(result))
        self.memo[folder] = result
        if self.echo:
            print(f"  [{seconds:6.1f} s] {result['command']}: {metrics.get('diverged') or dev(result)}",
                  file=sys.stderr, flush=True)
        return result


@dataclass
class Task:
    """What the runs of an experiment train: an example program, its data and size flags, and its metric."""

    name: str
    module: object
    argv: list  # --data and the sizes
    train: int
    epochs: int
    higher_better: bool = True  # the metric: dev accuracy (higher is better) or dev perplexity (lower)
    scale: float = 100.0  # accuracies are shown as percentages
    digits: int = 2
    label: str = "dev acc. %"
    axis: str = "dev accuracy"

    def fmt(self, values):
        return fmt(values, self.scale, self.digits)

    def verdict(self, base, variant):
        unit = " points" if self.scale == 100.0 else ""
        return verdict(base, variant, self.higher_better, self.scale, unit)


def dev(run):
    """A run's best dev metric over its epochs: accuracy or perplexity (NaN when it diverged)."""
    m = run["metrics"]
    return m.get("dev_accuracy", m.get("dev_perplexity", float("nan")))


def curve(runs, key="dev_metric", x="epoch"):
    """The seeds' mean of ``key`` per epoch record, against the mean of ``x`` (epoch, step, or cumulative
    training seconds for ``x="seconds"``)."""
    logs = [r["log"] for r in runs if r["log"] and "diverged" not in r["metrics"]]
    if not logs:
        return [], []
    n = min(len(log) for log in logs)
    if x == "seconds":
        xs = np.mean([np.cumsum([rec["seconds"] for rec in log[:n]]) for log in logs], axis=0)
    else:
        xs = np.mean([[rec[x] for rec in log[:n]] for log in logs], axis=0)
    ys = np.mean([[rec[key] if rec[key] is not None else np.nan for rec in log[:n]] for log in logs], axis=0)
    return xs.tolist(), ys.tolist()


def at_time(run, seconds, higher_better=True):
    """The best dev metric a run had reached within ``seconds`` of training (its per-epoch evaluations; NaN
    when its first epoch took longer)."""
    best, t = float("nan"), 0.0
    pick = max if higher_better else min
    for rec in run["log"]:
        t += rec["seconds"]
        if t > seconds * (1 + 1e-9):
            break
        best = rec["dev_metric"] if not math.isfinite(best) else pick(best, rec["dev_metric"])
    return best


def write_synthetic_treebank(folder, n_train, n_dev):
    """Synthetic tagged sentences (``data.synthetic_tagging``, seed 0) as a CoNLL-U treebank folder, so that the
    smoke version runs the examples' ``--data`` path like the real one; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sents = data.synthetic_tagging(n_train + n_dev, vocab_size=60, seed=0, mean_len=8, max_len=16)
    for split, part in (("train", sents[:n_train]), ("dev", sents[n_train:])):
        blocks = ["\n".join(f"{i}\t{w}\t_\t{t}\t_\t_\t{h}\t{r}\t_\t_" for i, (w, t, h, r)
                            in enumerate(zip(s.words, s.upos, s.heads, s.rels), 1)) for s in part]
        (folder / f"synthetic-ud-{split}.conllu").write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return str(folder)


def write_synthetic_ptb(folder, n_train, n_dev):
    """Synthetic text (``data.synthetic_lm``, seed 0) as ptb.train.txt and ptb.valid.txt; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sents = data.synthetic_lm(n_train + n_dev, vocab_size=50, seed=0, mean_len=8, max_len=16)
    for name, part in (("ptb.train.txt", sents[:n_train]), ("ptb.valid.txt", sents[n_train:])):
        (folder / name).write_text("".join(" ".join(s) + "\n" for s in part), encoding="utf-8")
    return str(folder)


# ---- the study -----------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One claim's results."""

    key: str
    claim: str
    experiment: str
    result: str
    verdict: str
    details: list = field(default_factory=list)  # markdown lines
    plots: list = field(default_factory=list)
    commands: list = field(default_factory=list)


class Study:
    """The experiments, over one ``Scale``, on the tagger (``data_root``'s UD EWT, or synthetic for smoke)."""

    def __init__(self, scale, data_root, runner, out):
        self.s, self.runner, self.out = scale, runner, Path(out)
        if scale.synthetic:
            self.data = write_synthetic_treebank(runner.work / "synthetic-ud", scale.train, scale.dev)
        else:
            self.data = str(Path(data_root) / "ud-english-ewt")
        self.tasks = {"tagger": Task("EWT tagger", tagger, ["--data", self.data, "--max-dev", str(scale.dev)] +
                                     list(scale.model), scale.train, scale.epochs)}
        self.tasks["long"] = Task("EWT tagger, small data trained long", tagger, self.tasks["tagger"].argv,
                                  scale.long_train, scale.long_epochs)
        if scale.lm_train:
            ptb = (write_synthetic_ptb(runner.work / "synthetic-ptb", scale.lm_train, scale.lm_dev)
                   if scale.synthetic else str(Path(data_root) / "ptb-lm"))
            self.tasks["lm"] = Task("PTB LM", lm, ["--data", ptb, "--max-dev",
                                                   str(scale.lm_dev)] + list(scale.lm_model), scale.lm_train,
                                    scale.lm_epochs, higher_better=False, scale=1.0, digits=1,
                                    label="dev perplexity", axis="dev perplexity")
        self.rows = []
        self.timings = {}

    # -- configurations --

    def argv(self, seed, *change, train=None, epochs=None, task="tagger"):
        """The argv of one run: the task's data and sizes, equal epochs (early stopping off: patience =
        epochs), the seed, and the flags ``change`` makes."""
        t = self.tasks[task]
        epochs = epochs or t.epochs
        argv = t.argv[:2] + ["--max-train", str(train or t.train)] + t.argv[2:] + [
            "--epochs", str(epochs), "--patience", str(epochs), "--seed", str(seed)]
        return argv + [str(c) for c in change]

    def runs(self, *change, keep_epochs=False, task="tagger", **kw):
        """One run per seed of the task's baseline with the flags ``change``."""
        return [self.runner(self.tasks[task].module, self.argv(seed, *change, task=task, **kw),
                            keep_epochs=keep_epochs) for seed in self.s.seeds]

    def base(self):
        return self.runs(keep_epochs=True)

    def plot(self, key, series, title, xlabel, ylabel, **kw):
        path = self.out.parent / f"tricks_{key}.png"
        line_plot(path, {k: v for k, v in series.items() if v[0]}, title, xlabel, ylabel, **kw)
        return path.name

    def table(self, header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]

    def compare(self, key, claim, change_text, configs, *, x="epoch", xlabel="epoch", equal_time=False,
                extra_cols=None, task="tagger"):
        """The common shape of an experiment: ``configs`` = [(name, runs)], the first the baseline; the best dev
        metric over equal epochs, and with ``equal_time`` also the best reached within the training time of
        the fastest configuration (mean over its seeds). ``extra_cols``: [(header, f(runs) -> cell)]."""
        t = self.tasks[task]
        base_name, base_runs = configs[0]
        header = ["configuration", f"best {t.label} (mean ± std, {len(base_runs)} seeds, {t.epochs} epochs)",
                  "train s/run", "verdict vs " + base_name]
        budget = None
        at = lambda runs: [at_time(r, budget, t.higher_better) for r in runs]
        if equal_time:
            budget = min(np.mean([sum(rec["seconds"] for rec in r["log"]) for r in runs]) for _, runs in configs)
            header.insert(2, f"{t.label} within {budget:.1f} s of training")
        if extra_cols:
            header[-1:-1] = [c for c, _ in extra_cols]
        rows, verdicts = [], []
        for name, runs in configs:
            row = [name, t.fmt([dev(r) for r in runs])]
            if equal_time:
                within = at(runs)
                row.append(t.fmt(within) if any(math.isfinite(v) for v in within) else "no epoch done")
            row.append(f"{np.mean([r['metrics'].get('train_seconds', float('nan')) for r in runs]):.1f}")
            if extra_cols:
                row += [f(runs) for _, f in extra_cols]
            v = "—" if name == base_name else t.verdict([dev(r) for r in base_runs], [dev(r) for r in runs])
            if equal_time and name != base_name:
                first = np.mean([r["log"][0]["seconds"] for r in runs if r["log"]])
                v += "; at equal time: " + (t.verdict(at(base_runs), at(runs)) if all(
                    math.isfinite(v) for v in at(runs)) else f"hurts (its first epoch takes {first:.1f} s, more "
                                                             f"than the {budget:.1f} s budget)")
            row.append(v)
            if name != base_name:
                verdicts.append(f"{name}: {v}")
            rows.append(row)
        plots = [self.plot(key, {name: curve(runs, x=x) for name, runs in configs}, claim[:60], xlabel, t.axis)]
        if equal_time and x != "seconds":
            plots.append(self.plot(key + "_time", {name: curve(runs, x="seconds") for name, runs in configs},
                                   claim[:50] + " (wall time)", "training seconds", t.axis))
        result = "; ".join(f"{n} {t.fmt([dev(r) for r in runs])}" for n, runs in configs)
        commands = [runs[0]["command"] for _, runs in configs]
        return Row(key, claim, f"{t.name}, baseline {base_name}; changed: {change_text}", result,
                   "; ".join(verdicts), self.table(header, rows), plots, commands)

    # -- the experiments, in the deck's order --

    def optimizer(self):
        return self.compare("optimizer", "Adam converges faster and needs less tuning than plain SGD.",
                            "the optimiser (SGD at lr 0.1, DyNet's SimpleSGD default; Adam at the example's 3e-3)",
                            [("Adam lr 3e-3", self.base()), ("SGD lr 0.1", self.runs("--optimizer", "sgd",
                                                                                      "--lr", "0.1"))])

    def clipping(self):
        w = self.s.clip_warmup
        configs = [("clip 5", self.base()), (f"clip auto (p95 of the first {w} steps)",
                                             self.runs("--clip", "auto", "--clip-warmup", w)),
                   ("no clipping", self.runs("--clip", "none"))]
        threshold = lambda r: r["trace"].get("clip")

        def norms(runs):
            a = np.concatenate([r["trace"]["grad_norms"] for r in runs])
            return f"{np.median(a):.2f} / {np.percentile(a, 95):.2f} / {a.max():.2f}"

        def clipped(runs):  # steps whose norm was above the threshold in force (scaled down)
            counts = []
            for r in runs:
                t, norms_ = threshold(r), r["trace"]["grad_norms"]
                if t is None:
                    counts.append(0)
                else:
                    start = w if "auto" in r["argv"] else 0  # auto clips only after its warm-up
                    counts.append(sum(n > t for n in norms_[start:]))
            return f"{np.mean(counts):.1f}"

        def spikes(runs):  # steps whose norm exceeds 3x the run's median: what clipping is for
            counts = [sum(n > 3 * np.median(g) for n in g) for g in (r["trace"]["grad_norms"] for r in runs)]
            return f"{np.mean(counts):.1f}"

        def thresholds(runs):
            ts = [threshold(r) for r in runs]
            return "none" if ts[0] is None else f"{np.mean(ts):.2f}"

        row = self.compare("clipping", "Clip the gradient norm at its usual range: it prevents the spikes.",
                           "the clipping threshold (gradient norm range from the unclipped runs)", configs,
                           extra_cols=[("norm median / p95 / max", norms), ("threshold", thresholds),
                                       ("clipped steps", clipped), ("spikes > 3x median", spikes)])
        none_run = configs[2][1][0]
        auto_t = threshold(configs[1][1][0])
        g = none_run["trace"]["grad_norms"]
        row.plots.append(self.plot("clipping_norms", {"no clipping, seed 0": (range(1, len(g) + 1), g)},
                                   "gradient norm per step (no clipping); dashed: auto threshold", "step",
                                   "L2 norm", hline=auto_t, log=True))
        return row

    def normalisation(self):
        s = self.s
        grid = {}
        for norm in ("sum", "batch", "max_len"):
            for bs in s.norm_batch_sizes:
                for lr in s.norm_lrs:
                    grid[norm, bs, lr] = self.runs("--optimizer", "sgd", "--clip", "none", "--normalize", norm,
                                                   "--batch-size", bs, "--lr", lr, train=s.norm_train,
                                                   epochs=s.norm_epochs)
        score = lambda runs: np.mean([dev(r) if math.isfinite(dev(r)) else 0.0 for r in runs])
        middle = s.norm_batch_sizes[len(s.norm_batch_sizes) // 2]
        rows, carries, series, costs = [], {}, {}, {}
        for norm in ("sum", "batch", "max_len"):
            best, scores = {}, {}
            for bs in s.norm_batch_sizes:
                scores[bs] = {lr: score(grid[norm, bs, lr]) for lr in s.norm_lrs}
                best[bs] = max(scores[bs], key=scores[bs].get)
                series[f"{norm}, batch {bs}"] = ([math.log10(lr) for lr in s.norm_lrs], list(scores[bs].values()))
            # what carrying batch `middle`'s best lr over to the other sizes costs, against their own best
            costs[norm] = np.mean([scores[bs][best[bs]] - scores[bs][best[middle]] for bs in s.norm_batch_sizes
                                   if bs != middle])
            for bs in s.norm_batch_sizes:
                cells = [fmt([dev(r) for r in grid[norm, bs, lr]]) for lr in s.norm_lrs]
                lost = scores[bs][best[bs]] - scores[bs][best[middle]]
                rows.append([norm, bs] + cells + [f"{best[bs]:g}", f"{lost * 100:.2f}"])
            carries[norm] = len(set(best.values())) == 1
        header = (["normalisation", "batch size"] + [f"lr {lr:g}" for lr in s.norm_lrs] +
                  ["best lr", f"points lost with batch {middle}'s best lr"])
        plot = self.plot("normalisation", series, "dev accuracy against SGD learning rate", "log10 learning rate",
                         "dev accuracy")
        said = {"sum": False, "batch": True, "max_len": True}  # the deck: carries over with, not without
        matches = [carries[n] == said[n] for n in said]
        result = "; ".join(f"{n}: best lr {'the same' if carries[n] else 'differs'} across batch sizes (carrying "
                           f"batch {middle}'s over costs {costs[n] * 100:.2f} points)" for n in carries)
        v = (f"{'as claimed' if all(matches) else 'partly as claimed' if any(matches) else 'not as claimed'}: "
             f"the best learning rate carries over with "
             f"{', '.join(n for n in carries if carries[n]) or 'no normalisation'}; the cost of carrying it over "
             f"is lowest with {min(costs, key=costs.get)}")
        return Row("normalisation", "Normalise the loss (mean over the batch or ÷ longest sentence): then the best "
                   "learning rate carries over between minibatch sizes; with the plain sum it does not.",
                   f"EWT tagger ({s.norm_train} train sentences, {s.norm_epochs} epochs), SGD without clipping (so "
                   f"the loss scale reaches the update; Adam is invariant to it); changed: the normalisation, the "
                   f"batch size {'/'.join(map(str, s.norm_batch_sizes))} and the lr", result, v,
                   self.table(header, rows) + ["", "Cells: best dev accuracy % over the epochs; a diverged run "
                                               "scores 0 when choosing the best lr."],
                   [plot], [grid["max_len", s.norm_batch_sizes[0], s.norm_lrs[0]][0]["command"]])

    def early_stopping(self):
        runs = self.runs(task="long")
        patience = 3
        stops, best_vals, last_vals, stop_vals = [], [], [], []
        for r in runs:
            curve_ = [rec["dev_metric"] for rec in r["log"]]
            best, best_epoch, bad, stop = -1.0, 0, 0, len(curve_)
            for e, v in enumerate(curve_, 1):  # the Trainer's rule: stop after `patience` epochs without a gain
                if v > best:
                    best, best_epoch, bad = v, e, 0
                else:
                    bad += 1
                    if bad >= patience:
                        stop = e
                        break
            stops.append(stop)
            stop_vals.append(max(curve_[:stop]))
            best_vals.append(max(curve_))
            last_vals.append(curve_[-1])
        long = self.tasks["long"]
        rows = [["epoch it stops at (patience 3)", f"{np.mean(stops):.1f} of {long.epochs}"],
                ["dev % at the best epoch (restored)", fmt(stop_vals)],
                ["dev % at the last epoch", fmt(last_vals)],
                [f"dev % at the best of all {long.epochs} epochs", fmt(best_vals)]]
        v = (verdict(last_vals, stop_vals) + f", {long.epochs - np.mean(stops):.1f} epochs saved; stopping vs the "
             f"best of all epochs: " + verdict(best_vals, stop_vals))
        return Row("early_stopping", "Early stopping: stop when dev stops improving and keep the best epoch.",
                   f"{long.name} ({long.train} sentences), {long.epochs} epochs without stopping; the Trainer's "
                   "rule (patience 3, "
                   "best restored) applied to the dev curve, which is what the same run with --patience 3 does",
                   f"stops at epoch {np.mean(stops):.1f}; best {fmt(stop_vals)} vs last {fmt(last_vals)}",
                   "restoring the best epoch vs the last: " + v, self.table(["", "value"], rows),
                   [self.plot("early_stopping", {f"seed {r['argv'][r['argv'].index('--seed') + 1]}":
                                                 curve([r]) for r in runs}, "dev accuracy per epoch", "epoch",
                              "dev accuracy")],
                   [runs[0]["command"].replace(f"--patience {long.epochs}", "--patience 3")])

    def cells(self):
        return self.compare("cell", "A GRU works about as well as an LSTM, with fewer parameters and faster.",
                            "the cell (--cell gru)", [("LSTM", self.base()), ("GRU", self.runs("--cell", "gru"))],
                            equal_time=True, x="seconds", xlabel="training seconds",
                            extra_cols=[("parameters", lambda runs: str(runs[0]["metrics"].get("parameters")))])

    def layer_norm(self):
        return self.compare("layer_norm", "Layer normalisation in the recurrence speeds up learning.",
                            "--layer-norm", [("no layer norm", self.base()), ("layer norm", self.runs("--layer-norm"))],
                            x="step", xlabel="updates", equal_time=True,
                            extra_cols=[("dev % after epoch 1", lambda runs: fmt([r["log"][0]["dev_metric"]
                                                                                 for r in runs]))])

    def stacking(self):
        embed = int(self.s.model[1]) if self.s.model else 128
        hidden = int(self.s.model[3]) if self.s.model else 50

        def lstm_params(h, layers):
            return 4 * h * (embed + h + 1) + (layers - 1) * 4 * h * (2 * h + 1)

        target = lstm_params(hidden, 1)
        size = {L: min(range(1, hidden + 1), key=lambda h: abs(lstm_params(h, L) - target)) for L in (2, 3)}
        configs = [(f"1 layer of {hidden}", self.base()),
                   (f"2 layers of {size[2]}", self.runs("--layers", 2, "--hidden", size[2])),
                   (f"3 layers of {size[3]}", self.runs("--layers", 3, "--hidden", size[3])),
                   (f"2 layers of {size[2]}, outputs summed", self.runs("--layers", 2, "--hidden", size[2],
                                                                        "--combine", "sum"))]
        row = self.compare("stacking", "Stacking 2-3 smaller layers beats one big layer at equal parameter "
                           "count; summing the layers' outputs helps over the top layer only.",
                           "the layers (hidden size chosen so each direction's LSTM has the baseline's parameter "
                           f"count, {target})", configs,
                           extra_cols=[("parameters (whole model)",
                                        lambda runs: str(runs[0]["metrics"].get("parameters")))])
        row.verdict += "; summed vs last: " + verdict([dev(r) for r in configs[1][1]], [dev(r) for r in configs[3][1]])
        return row

    def learned_init(self):
        configs = [("zeros", self.base()), ("learned", self.runs("--learned-init"))]
        k = min(20, min(len(r["trace"]["step_losses"]) for _, runs in configs for r in runs))
        first = lambda runs: [float(np.mean(r["trace"]["step_losses"][:k])) for r in runs]
        row = self.compare("learned_init", "A learned initial state beats zeros, mostly early in training.",
                           "--learned-init", configs,
                           extra_cols=[(f"mean loss, first {k} updates", lambda runs: fmt(first(runs), 1.0, 3))])
        row.verdict += f"; loss over the first {k} updates: " + verdict(first(configs[0][1]), first(configs[1][1]),
                                                                        higher_better=False, scale=1.0, unit="")
        n = min(len(r["trace"]["step_losses"]) for _, runs in configs for r in runs)
        row.plots.append(self.plot("learned_init_loss", {name: (range(1, n + 1), np.mean(
            [r["trace"]["step_losses"][:n] for r in runs], axis=0).tolist()) for name, runs in configs},
            "training loss per update", "update", "minibatch loss"))
        return row

    def gate_biases(self):
        lstm = self.compare("gate_bias", "Gate biases: LSTM forget gate bias 1 (not 0); GRU reset bias -1.",
                            "the initial gate bias", [("LSTM forget 1", self.base()),
                                                      ("LSTM forget 0", self.runs("--forget-bias", 0))])
        gru = self.compare("gate_bias_gru", "GRU reset bias -1 vs 0", "--reset-bias 0",
                           [("GRU reset -1", self.runs("--cell", "gru")),
                            ("GRU reset 0", self.runs("--cell", "gru", "--reset-bias", 0))])
        lstm.details += [""] + gru.details
        lstm.plots += gru.plots
        lstm.commands += gru.commands[1:]
        lstm.result += "; " + gru.result
        lstm.verdict += "; " + gru.verdict
        return lstm

    def dropout(self):
        return self.dropout_family("dropout", "long", "Dropout regularises (variational/recurrent/zoneout/"
                                   "DropConnect for the recurrence); it roughly doubles the iterations to converge.")

    def dropout_family(self, key, task, claim):
        """The dropout variants against none on ``task``, with the epochs each takes to its best dev."""
        configs = [(name, self.runs(*flags, task=task)) for name, flags in DROPOUTS]
        best_epoch = lambda runs: [r["metrics"].get("best_epoch") or np.nan for r in runs]
        row = self.compare(key, claim, "the dropout variant (p 0.3; zoneout 0.15)", configs, task=task,
                           extra_cols=[("epochs to best dev", lambda runs: fmt(best_epoch(runs), 1.0, 1))])
        none = np.nanmean(best_epoch(configs[0][1]))
        row.verdict += "; epochs to best dev vs none: " + ", ".join(
            f"{name} x{np.nanmean(best_epoch(runs)) / none:.2f}" for name, runs in configs[1:])
        if none >= self.tasks[task].epochs:
            row.verdict += f" (none peaks at the last epoch, {none:.0f}: the ratios are bounded by the run's length)"
        return row

    def dropout_lm(self):
        if "lm" not in self.tasks:
            return None
        return self.dropout_family("dropout_lm", "lm", "The dropout family on a language model (where the "
                                   "recurrence's own variants are meant to matter most).")

    def ensembles(self):
        s = self.s
        base = self.base()
        ap = tagger.parser()

        train_sents, dev_sents = tagger.load(ap.parse_args(self.argv(0)))  # the same for every seed

        def model_fn(config, seed):  # autobatch.ensemble's protocol: a fresh model per (config, seed)
            model = tagger.build(ap.parse_args(self.argv(seed, "--lr", config["lr"])), train_sents, dev_sents)
            model.optimizer = Adam(model.pc, lr=config["lr"])
            return model

        model = model_fn({"lr": 3e-3}, 0)
        dev_ex = [model.encode(x) for x in dev_sents]
        train_ex = [model.encode(x) for x in train_sents]

        def checkpoint(run, epoch):
            return str(Path(run["folder"]) / "ck" / f"epoch_{epoch:03d}.npz")

        singles = [dev(r) for r in base]
        seed_members = [checkpoint(r, r["metrics"]["best_epoch"]) for r in base]
        members = []
        for path, seed in zip(seed_members, s.seeds):
            m = model_fn({"lr": 3e-3}, seed)
            load_checkpoint(path, m.pc)
            members.append(m)
        seed_acc = ensemble.accuracy(ensemble.Ensemble(members), dev_ex)
        last = min(3, s.epochs)
        ck_accs = [ensemble.accuracy(ensemble.checkpoint_ensemble(
            model_fn, {"lr": 3e-3}, [checkpoint(r, e) for e in range(s.epochs - last + 1, s.epochs + 1)],
            seed=seed), dev_ex) for r, seed in zip(base, s.seeds)]
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            results = ensemble.cv_search(model_fn, [{"lr": lr} for lr in s.cv_configs], train_ex, folds=s.folds,
                                         max_workers=1, epochs=s.epochs, batch_size=32, clip=5.0)
            top, top1 = [], []
            for seed in s.seeds:
                ens = ensemble.top_k_ensemble(model_fn, results, train_ex, k=s.top_k, seed=seed, max_workers=1,
                                              epochs=s.epochs, batch_size=32, clip=5.0)
                top.append(ensemble.accuracy(ens, dev_ex))
                top1.append(ensemble.accuracy(ens.members[0], dev_ex))
            elapsed = time.perf_counter() - t0  # trained now, outside the cache
            self.runner.seconds += elapsed
            self.runner.used_seconds += elapsed
        rows = [["best single (max over seeds)", f"{max(singles) * 100:.2f}", "—"],
                ["single models (mean ± std)", fmt(singles), "—"],
                [f"seed ensemble ({len(s.seeds)} seeds' best epochs)", f"{seed_acc * 100:.2f}",
                 f"{(seed_acc - max(singles)) * 100:+.2f} vs best single"],
                [f"checkpoint ensemble (last {last} epochs, per seed)", fmt(ck_accs),
                 verdict(singles, ck_accs)],
                [f"top-{s.top_k} of {s.folds}-fold CV over Adam lr {', '.join(map(str, s.cv_configs))} (per seed)",
                 fmt(top), "vs its top-1 member " + verdict(top1, top)]]
        cv = "; ".join(f"lr {r.config['lr']}: {r.score * 100:.2f}" for r in results)
        v = (f"seeds: {'helps' if seed_acc > max(singles) else 'no gain'} ({(seed_acc - max(singles)) * 100:+.2f} "
             f"vs the best single); checkpoints: {verdict(singles, ck_accs)}; top-k: {verdict(top1, top)}")
        return Row("ensembles", "Ensembles (seeds, top-k of a search, checkpoints) beat the best single model.",
                   "EWT tagger baseline; members averaged by probability (autobatch.ensemble)",
                   f"seeds {seed_acc * 100:.2f}, checkpoints {fmt(ck_accs)}, top-k {fmt(top)} vs single "
                   f"{fmt(singles)}", v, self.table(["model", "dev acc. %", "verdict"], rows) +
                   ["", f"CV scores (held-out accuracy %): {cv}."], [], [base[0]["command"] + " --keep-epochs"])

    EXPERIMENTS = ("optimizer", "clipping", "early_stopping", "cells", "layer_norm", "stacking", "learned_init",
                   "gate_biases", "dropout", "dropout_lm", "ensembles", "normalisation")

    def run(self, only=None, write=None):
        for name in self.EXPERIMENTS:
            if only and name not in only:
                continue
            t0, fresh, used = time.perf_counter(), self.runner.seconds, self.runner.used_seconds
            print(f"{name} ...", file=sys.stderr, flush=True)
            row = getattr(self, name)()
            if row is None:  # not in this version of the study
                continue
            self.rows.append(row)
            # What the experiment costs: its runs' recorded training times (also those read from the cache,
            # so a rerun from the cache states the same full-study estimate) plus everything else it did now.
            other = time.perf_counter() - t0 - (self.runner.seconds - fresh)
            self.timings[row.key] = other + (self.runner.used_seconds - used)
            if write:
                write(self)
        return self.rows


# ---- the report ----------------------------------------------------------------------------------------------


def estimate_full(study):
    """The full study's time, scaled from this run: each experiment's seconds times the ratio of its task's
    training sentence-epochs in the full version to this one's (a rough linear estimate: evaluation, a bigger
    model or softmax and slower convergence are not in it)."""
    s, full = study.s, SCALES["full"]
    ratio = lambda n, e, n0, e0: (n * e) / max(1, n0 * e0)
    ratios = {"normalisation": ratio(full.norm_train, full.norm_epochs, s.norm_train, s.norm_epochs),
              "dropout": ratio(full.long_train, full.long_epochs, s.long_train, s.long_epochs),
              "early_stopping": ratio(full.long_train, full.long_epochs, s.long_train, s.long_epochs),
              "dropout_lm": ratio(full.lm_train, full.lm_epochs, s.lm_train, s.lm_epochs)}
    base = ratio(full.train, full.epochs, s.train, s.epochs)
    ratios["ensembles"] = base * full.folds / s.folds
    return sum(t * ratios.get(k, base) for k, t in study.timings.items())


def report(study, args, started, path):
    s = study.s
    wall = time.perf_counter() - started
    lines = [
        "# The training tricks, measured (issue 14)",
        "",
        f"Command: `python -m bench.tricks {' '.join(args.argv)}` — version **{s.name}**, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()} 2-core shared VM "
        f"(other jobs running), `OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}`; "
        f"wall time {wall / 60:.1f} min ({study.runner.runs} runs trained now"
        f"{f', {study.runner.cached} read from the cache of an earlier invocation' if study.runner.cached else ''}).",
        "",
        f"Data: {'synthetic tagging data written as CoNLL-U (smoke test)' if s.synthetic else 'UD English EWT'}"
        f", a fixed random subset of **{s.train} training and {s.dev} dev sentences**, {s.epochs} epochs, seeds "
        f"{', '.join(map(str, s.seeds))}; the normalisation grid uses **{s.norm_train} training sentences** and "
        f"{s.norm_epochs} epochs. Tagger baseline: `autobatch.examples.tagger` defaults (embedding 128, BiLSTM 50 "
        f"per direction, MLP 32, Adam 3e-3, clip 5, loss ÷ longest sentence, minibatch 32)"
        f"{', at tiny sizes ' + ' '.join(s.model) if s.model else ''}. "
        + (f"Language model (the dropout family's second task): {'synthetic text' if s.synthetic else 'PTB'}, "
           f"**{s.lm_train} training and {s.lm_dev} dev sentences**, {s.lm_epochs} epochs, `autobatch.examples.lm` "
           f"with {' '.join(s.lm_model)}{'' if s.synthetic else ' (the vocabulary: all of PTB train, 10k words)'}. "
           if s.lm_train else "")
        + (f"Early stopping and the tagger's dropout family use a setting that can overfit: **{s.long_train} "
           f"training sentences for {s.long_epochs} epochs**. ")
        + "Each number is the best dev metric over the epochs (the Trainer restores it), mean ± sample std "
        "over the seeds, every configuration trained for the same epochs (early stopping off). A difference "
        "counts only beyond twice its standard error. The recurrence tricks other than dropout are measured on "
        "the tagger's BiLSTM (the LM costs ~10x more per run); SST is not used by the study (no claim here is "
        "about trees), only by the full-quality runs.",
        "",
    ]
    if s.name != "full":
        lines += [f"This is the reduced version: small subsets and few epochs, so the absolute accuracies are far "
                  f"below published ones and small effects drown in seed noise. The full version "
                  f"(`python -m bench.tricks --data-root ../shared/data`: {SCALES['full'].train} sentences, "
                  f"{SCALES['full'].epochs} epochs) is estimated at **{estimate_full(study) / 3600:.1f} hours** "
                  "on this machine (each experiment's time here scaled by the ratio of sentence-epochs).", ""]
    if FULL_RUNS.exists():
        lines += ["The examples' full-data runs toward published quality, with the best tricks from here, are at the "
                  "end: [Full runs](#full-runs-toward-published-quality).", ""]
    lines += ["| claim | experiment | result | verdict on this data |", "|---|---|---|---|"]
    for r in study.rows:
        lines.append(f"| {r.claim} | {r.experiment} | {r.result} | {r.verdict} |")
    for r in study.rows:
        lines += ["", f"## {r.key.replace('_', ' ')}", "", f"**Claim.** {r.claim}", "",
                  f"**Experiment.** {r.experiment}.", "", *r.details, "", f"**Verdict.** {r.verdict}", ""]
        lines += [f"![{p}]({p})" for p in r.plots]
        if r.commands:
            lines += ["", "Commands (seed 0; add `--log F --trace F` for the curves):", ""]
            lines += [f"    {c}" for c in r.commands]
        lines += ["", f"({study.timings.get(r.key, 0):.0f} s)"]
    if FULL_RUNS.exists():  # the full-data runs are hours each: recorded by hand, carried into every report
        lines += ["", FULL_RUNS.read_text(encoding="utf-8").rstrip()]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("AUTOBATCH_DATA", "../shared/data"),
                    help="the folder holding ud-english-ewt/ (default $AUTOBATCH_DATA or ../shared/data)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the reduced version (<= 20 minutes)")
    mode.add_argument("--smoke", action="store_true", help="tiny synthetic data: the machinery only (seconds)")
    ap.add_argument("--only", nargs="+", choices=Study.EXPERIMENTS, help="run these experiments only")
    ap.add_argument("--out", default=str(HERE / "TRICKS.md"), help="the report (plots go next to it)")
    ap.add_argument("--work", default=None, help="the runs' logs, traces, checkpoints and cache (default: a "
                                                 "folder per version under the system's temp dir)")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    scale = SCALES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if not scale.synthetic and not (Path(args.data_root) / "ud-english-ewt").is_dir():
        ap.error(f"--data-root {args.data_root}: no ud-english-ewt/ there")
    import tempfile
    work = args.work or os.path.join(tempfile.gettempdir(), f"autobatch_tricks_{scale.name}")
    started = time.perf_counter()
    study = Study(scale, args.data_root, Runner(work, echo=not args.smoke), args.out)
    study.run(args.only, write=lambda st: report(st, args, started, args.out))
    print(f"wrote {args.out} ({(time.perf_counter() - started) / 60:.1f} min)", file=sys.stderr)
    return study


if __name__ == "__main__":
    main()
