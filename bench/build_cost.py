"""What recording a node costs: graph building alone (no scheduling, no kernels) of one minibatch of the suite's
per-example models, in machine instructions per node counted by valgrind's callgrind, and in µs per node.

Instructions do not move with the machine's load, so two builds of the engine compare on a shared machine where
their µs differ by more than what separates them (±25% here). Only the building is counted: callgrind starts
counting when the builds start and stops when they end (``--toggle-collect`` on the C function they run under,
``functools.reduce``, which nothing else here calls), so loading the data and importing are left out.

    python -m bench.build_cost --task tree --style prim             # synthetic SST-like trees, minibatch 64
    python -m bench.build_cost --task tagger --style agenda --data ../shared/data/ud-english-ewt

``--style``: "prim" (the tree task's Tree-LSTM from primitives), "agenda" (word by word), "seq" (whole sentences);
see ``bench/autobatch_systems.py``. Without valgrind on the PATH it prints the µs alone. ``AUTOBATCH_PURE=1``
measures the pure-Python engine.
"""
import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import time

import autobatch as ab
from bench import autobatch_systems
from bench.peers import tasks


def builds(system, batch, repeats):
    """Build ``repeats`` graphs of ``batch`` (each after a ``renew_cg``); returns the nodes recorded."""
    nodes = 0
    for _ in range(repeats):
        ab.renew_cg(strategy=system.strategy)
        ab.esum([system.loss(item) for item in batch])
        nodes += len(ab.graph.current())
    return nodes


def measure(args):
    """In this process: the nodes and seconds of ``args.repeats`` builds, after one warm-up build (signatures
    made, caches filled). The builds run inside ``functools.reduce``: its C function is what callgrind toggles
    counting on."""
    d = tasks.load(args.task, args.batch_size, args.data, seed=0)
    system = autobatch_systems.make(args.task, d.n_words, d.n_labels, seed=0, style=args.style)
    batch = d.items[:args.batch_size]
    builds(system, batch, 1)
    out = {}

    def timed(_, __):
        t0 = time.perf_counter()
        out["nodes"] = builds(system, batch, args.repeats)
        out["seconds"] = time.perf_counter() - t0

    functools.reduce(timed, [0], None)
    return out


def main(argv=None):
    """Print nodes, µs per node and (with valgrind) instructions per node; returns them as a dict."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=("tagger", "tree", "lm"), default="tree")
    ap.add_argument("--style", choices=("prim", "agenda", "seq"), default="prim")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="graphs built and counted (default 1)")
    ap.add_argument("--data", metavar="DIR", help="the task's dataset folder (default: synthetic)")
    ap.add_argument("--no-valgrind", action="store_true", help="time only (what the valgrind run executes)")
    args = ap.parse_args(argv)
    result = measure(args)
    result["us_per_node"] = result["seconds"] / result["nodes"] * 1e6
    valgrind = shutil.which("valgrind")
    if valgrind and not args.no_valgrind:
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"build_cost.{os.getpid()}.callgrind")
        cmd = [valgrind, "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
               f"--callgrind-out-file={out}", sys.executable, "-m", "bench.build_cost", "--no-valgrind",
               *(argv if argv is not None else sys.argv[1:])]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        os.remove(out)
        refs = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
        result["instructions_per_node"] = int(refs.group(1).replace(",", "")) / result["nodes"]
    mode = "compiled" if ab.compiled else "pure Python"
    line = f"{args.task} {args.style}, minibatch {args.batch_size}, {mode}: {result['nodes']} nodes, " \
           f"{result['us_per_node']:.2f} µs/node"
    if "instructions_per_node" in result:
        line += f", {result['instructions_per_node']:.0f} instructions/node"
    print(line, flush=True)
    return result


if __name__ == "__main__":
    main()
