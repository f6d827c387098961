"""Run the peer grid: every (minibatch size, repeat, system) as its own ``bench.peers.run`` process, systems
interleaved within a repeat so they share the machine's noise; print a Markdown table of medians.

    python -m bench.peers.measure --task tagger --data ../shared/data/ud-english-ewt --batch-sizes 1,16,64
    python -m bench.peers.measure --task lm --data ../shared/data/ptb-lm --batch-sizes 16,64 \\
        --systems torch,dynet:0,dynet:1,dynet-batched:0,numpy

A system is ``torch``, ``torch-dense``, ``numpy`` or ``dynet:A`` / ``dynet-batched:A`` with A DyNet's
auto-batching flag. ``--threads N`` runs torch on N threads and NumPy's OpenBLAS on N (OPENBLAS_NUM_THREADS).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run_one(task, spec, mb, args):
    """One ``bench.peers.run`` process; returns its JSON record."""
    system, _, autobatch = spec.partition(":")
    cmd = [sys.executable, "-m", "bench.peers.run", "--task", task, "--system", system, "--batch-size", str(mb),
           "--sentences", str(args.sentences), "--seed", str(args.seed)]
    if autobatch:
        cmd += ["--autobatch", autobatch]
    if args.data:
        cmd += ["--data", args.data]
    env = dict(os.environ)
    if args.threads:
        cmd += ["--threads", str(args.threads)]
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True)
    ap.add_argument("--data", help="corpus folder (default: synthetic data)")
    ap.add_argument("--systems", default="torch,dynet:0,dynet:1,numpy")
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="append every run's record to this file (JSON lines)")
    args = ap.parse_args(argv)
    systems = args.systems.split(",")
    print(f"| task | minibatch | system | sentences/s | words/s | runs (sentences/s) | peak RSS MiB "
          f"| loss @update | last loss | load avg |")
    print("|---|---:|---|---:|---:|---|---:|---|---:|---|")
    for mb in [int(b) for b in args.batch_sizes.split(",")]:
        runs = {s: [] for s in systems}
        for _ in range(args.repeats):
            for spec in systems:
                rec = run_one(args.task, spec, mb, args)
                runs[spec].append(rec)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(dict(rec, spec=spec)) + "\n")
        for spec, recs in runs.items():
            med = lambda key: statistics.median(r[key] for r in recs)  # noqa: E731
            loads = [x for r in recs for x in r["load_avg"]]
            each = " / ".join(f"{r['sents_per_s']:.0f}" for r in recs)
            print(f"| {args.task} | {mb} | {recs[0]['system']} | {med('sents_per_s'):,.0f} | {med('words_per_s'):,.0f} "
                  f"| {each} | {med('peak_rss_mib'):.0f} "
                  f"| {statistics.median(r['loss_at']['loss'] for r in recs):.3f} @{recs[0]['loss_at']['update']} "
                  f"| {med('loss_last'):.3f} | {min(loads):.1f}-{max(loads):.1f} |", flush=True)


if __name__ == "__main__":
    main()
