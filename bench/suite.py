"""The issue-5 benchmark suite: the three dynet-benchmark tasks (BiLSTM tagger on UD EWT, Tree-LSTM on SST,
LSTM LM on PTB) trained by every system, one after another, systems interleaved within each repeat so that
ratios hold on a noisy machine. Writes its tables into ``bench/RESULTS.md`` (between the suite's markers) and a
bar chart per task into ``bench/suite_<task>.png``.

    python -m bench.suite                                   # synthetic stand-ins (quick)
    python -m bench.suite --data-root ../shared/data        # the real corpora
    python -m bench.suite --tasks tagger --batch-sizes 16,64 --repeats 3 --data-root ../shared/data

Each run is its own process (``python -m bench.peers.run``: DyNet's auto-batching is chosen at import), times
one pass over the task's first ``--sentences`` items after a warm-up, and reports sentences/s, words/s, peak
memory, the loss after the same number of updates (every system sees the same minibatches), and for autobatch
the kernel launches per minibatch and where the time went. Systems whose package is missing are skipped with a
note (``pip install -e .[bench]`` installs PyTorch and DyNet). NumPy-based systems run with one BLAS thread
(``OPENBLAS_NUM_THREADS=1``, as DyNet computes on one), and PyTorch with ``--torch-threads`` (1 by default).
"""
import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = {"tagger": "ud-english-ewt", "tree": "sst-trees", "lm": "ptb-lm"}
# autobatch-agenda is the per-word (per-tree-node) code as a DyNet user writes it; autobatch-prim, the tree task
# only, is the Tree-LSTM from primitives (affine, logistic, tanh, cmult per node: dynet-benchmark's treenn).
SYSTEMS = [("autobatch-seq", []), ("autobatch-agenda", []), ("autobatch-prim", []), ("autobatch-depth", []),
           ("autobatch-off", []),
           ("numpy", []), ("torch", []), ("dynet", ["--autobatch", "0"]), ("dynet", ["--autobatch", "1"])]
NEEDS = {"torch": "torch", "dynet": "dynet"}
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"


def label(system, extra):
    return f"{system} autobatch={extra[1]}" if system == "dynet" else system


def available(system):
    module = NEEDS.get(system)
    return module is None or importlib.util.find_spec(module) is not None


def run(task, system, extra, mb, args):
    """One subprocess run; its JSON line, or None (with the error printed) if it failed."""
    n = args.sentences if mb > 1 else max(args.batch_size_one, 1)
    if system == "autobatch-off" and mb > 1:
        n = min(n, args.off_sentences)
    cmd = [sys.executable, "-m", "bench.peers.run", "--task", task, "--system", system, "--batch-size", str(mb),
           "--sentences", str(n), *extra]
    if args.data_root:
        cmd += ["--data", str(Path(args.data_root) / DATA[task])]
    if system.startswith("torch"):
        cmd += ["--threads", str(args.torch_threads)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent, timeout=args.timeout)
    if p.returncode:
        print(f"  {task} {label(system, extra)} mb {mb}: FAILED\n{p.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(task, results, batch_sizes):
    """Markdown rows: medians per (system, minibatch)."""
    lines = ["| system | " + " | ".join(f"mb {mb} sents/s" for mb in batch_sizes) + " | words/s (mb "
             f"{batch_sizes[-1]}) | peak MiB | loss at update 10 (mb {batch_sizes[-1]}) |",
             "|---|" + "---:|" * (len(batch_sizes) + 3)]
    for name in dict.fromkeys(k[0] for k in results):
        cells, last = [], None
        for mb in batch_sizes:
            runs = results.get((name, mb))
            if not runs:
                cells.append("—")
                continue
            last = runs
            cells.append(f"{statistics.median(r['sents_per_s'] for r in runs):,.0f}")
        if last is None:
            continue
        words = statistics.median(r["words_per_s"] for r in last)
        mem = max(r["peak_rss_mib"] for r in last)
        loss = statistics.median(r["loss_at"]["loss"] for r in last)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {words:,.0f} | {mem:,.0f} | {loss:.3f} |")
    return "\n".join(lines)


def launches(results, batch_sizes):
    """Kernel launches and time split of the autobatch systems at the largest minibatch."""
    mb = batch_sizes[-1]
    stages = ("build_s", "schedule_s", "execute_s", "backward_s", "update_s")
    lines = ["| system | nodes/mb | forward batches/mb | backward batches/mb | " + " | ".join(
        f"{k[:-2].replace('execute', 'forward')} µs/node (share)" for k in stages) + " |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (name, m), runs in results.items():
        if m != mb or not name.startswith("autobatch") or "engine" not in runs[0]:
            continue
        e = {k: statistics.median(r["engine"][k] for r in runs) for k in runs[0]["engine"]}
        total = sum(e[k] for k in stages)
        split = " | ".join(f"{1e6 * e[k] / e['nodes']:.2f} ({100 * e[k] / total:.0f}%)" for k in stages)
        lines.append(f"| {name} | {e['nodes']:,.0f} | {e['forward_batches']:,.0f} | {e['backward_batches']:,.0f} "
                     f"| {split} |")
    return "\n".join(lines)


def chart(task, results, batch_sizes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(k[0] for k in results))
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(names), 4))
    width = 0.8 / len(batch_sizes)
    for i, mb in enumerate(batch_sizes):
        ys = [statistics.median(r["sents_per_s"] for r in results[(n, mb)]) if results.get((n, mb)) else 0
              for n in names]
        ax.bar([k + i * width for k in range(len(names))], ys, width, label=f"minibatch {mb}")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names, rotation=30, ha="right")
    ax.set_ylabel("training sentences/s")
    ax.set_title(f"{task}: training throughput (median of runs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(section):
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda m: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="tagger,tree,lm")
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--systems", help="comma-separated subset of: " + ", ".join(label(s, e) for s, e in SYSTEMS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sentences", type=int, default=640, help="items timed per run (minibatch > 1)")
    ap.add_argument("--batch-size-one", type=int, default=160, help="items timed per run at minibatch 1")
    ap.add_argument("--off-sentences", type=int, default=160, help="items timed for strategy off (slow)")
    ap.add_argument("--data-root", help="folder holding ud-english-ewt, sst-trees, ptb-lm (default: synthetic)")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="PyTorch threads (default 1: on a shared machine a second thread spins while the other "
                         "core is busy, and runs 10-20 times slower)")
    ap.add_argument("--no-write", action="store_true", help="print the tables but leave RESULTS.md and the charts alone")
    args = ap.parse_args(argv)
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    wanted = set(args.systems.split(",")) if args.systems else None
    systems = [(s, e) for s, e in SYSTEMS if wanted is None or label(s, e) in wanted]
    notes = [f"`{label(s, e)}` skipped: its package is not installed" for s, e in systems if not available(s)]
    systems = [(s, e) for s, e in systems if available(s)]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = []
    for task in args.tasks.split(","):
        results = {}
        for mb in batch_sizes:
            for rep in range(args.repeats):
                for system, extra in systems:
                    if system == "dynet" and task == "lm" and mb == 1 and rep:  # slow and uninformative
                        continue
                    if system == "autobatch-prim" and task != "tree":  # the tree task's system only
                        continue
                    r = run(task, system, extra, mb, args)
                    if r is not None:
                        results.setdefault((label(system, extra), mb), []).append(r)
                        print(f"{task} mb {mb} {label(system, extra)}: {r['sents_per_s']} sents/s", flush=True)
        if not args.no_write:  # --no-write leaves the committed charts alone too
            chart(task, results, batch_sizes, HERE / f"suite_{task}.png")
        sections.append(f"### {task}\n\n{table(task, results, batch_sizes)}\n\nautobatch's engine at minibatch "
                        f"{batch_sizes[-1]} (medians):\n\n{launches(results, batch_sizes)}\n\n"
                        f"![{task}](suite_{task}.png)")
    cmd = "python -m bench.suite " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"## Suite (issue 5): {started}\n\nCommand: `{cmd}` — {os.cpu_count()}-core CPU, no GPU; "
              f"{args.repeats} repeats, systems interleaved; NumPy systems on 1 BLAS thread, PyTorch on "
              f"{args.torch_threads}, DyNet on 1. Data: {args.data_root or 'synthetic stand-ins'}.\n" + "".join(f"\n- {n}" for n in notes))
    section = header + "\n\n" + "\n\n".join(sections)
    print(section)
    if not args.no_write:
        write_results(section)


if __name__ == "__main__":
    main()
