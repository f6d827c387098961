"""What a node costs, stage by stage: graph building (``--stage build``, the default: no scheduling, no
kernels), the forward pass (``forward``: scheduling and the batched kernels) or the backward pass
(``backward``) of one minibatch of the suite's per-example models, in machine instructions per node counted by
valgrind's callgrind, and in µs per node.

Instructions do not move with the machine's load, so two builds of the engine compare on a shared machine where
their µs differ by more than what separates them (±25% here). Only the stage is counted: callgrind starts
counting when it starts and stops when it ends (``--toggle-collect`` on the C function it runs under,
``functools.reduce``, which nothing else here calls), so loading the data, importing and the other stages are
left out. Run the forward and backward stages with ``OPENBLAS_NUM_THREADS=1``: idle BLAS threads spin, and
callgrind counts their spinning.

    python -m bench.build_cost --task tree --style prim             # synthetic SST-like trees, minibatch 64
    python -m bench.build_cost --task tagger --style agenda --data ../shared/data/ud-english-ewt
    OPENBLAS_NUM_THREADS=1 python -m bench.build_cost --task tree --style prim --stage forward

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


def run_stage(system, batch, stage, counted):
    """Build the graph of ``batch`` after a ``renew_cg``, then run its forward and backward passes up to
    ``stage``; ``counted(thunk)`` runs the stage that is measured. Returns the nodes recorded."""
    ab.renew_cg(strategy=system.strategy)
    built = []

    def build():
        built.append(ab.esum([system.loss(item) for item in batch]))

    (counted if stage == "build" else _now)(build)
    if stage != "build":
        loss = built[0]
        (counted if stage == "forward" else _now)(loss.value)
        if stage == "backward":
            counted(loss.backward)
            system.opt.zero_grad()
    return len(ab.graph.current())


def _now(thunk):
    thunk()


def measure(args):
    """In this process: the nodes and the seconds of the stage, over ``args.repeats`` graphs, after one warm-up
    graph (signatures made, caches filled). The stage runs inside ``functools.reduce``: its C function is what
    callgrind toggles counting on."""
    d = tasks.load(args.task, args.batch_size, args.data, seed=0)
    system = autobatch_systems.make(args.task, d.n_words, d.n_labels, seed=0, style=args.style)
    batch = d.items[:args.batch_size]
    run_stage(system, batch, args.stage, _now)
    out = {"nodes": 0, "seconds": 0.0}

    def counted(thunk):
        def timed(_, __):
            t0 = time.perf_counter()
            thunk()
            out["seconds"] += time.perf_counter() - t0

        functools.reduce(timed, [0], None)

    for _ in range(args.repeats):
        out["nodes"] += run_stage(system, batch, args.stage, counted)
    return out


def main(argv=None):
    """Print nodes, µs per node and (with valgrind) instructions per node; returns them as a dict."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=("tagger", "tree", "lm"), default="tree")
    ap.add_argument("--style", choices=("prim", "agenda", "seq"), default="prim")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--stage", choices=("build", "forward", "backward"), default="build",
                    help="what is counted (default build)")
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
    line = f"{args.task} {args.style} {args.stage}, minibatch {args.batch_size}, {mode}: {result['nodes']} nodes, " \
           f"{result['us_per_node']:.2f} µs/node"
    if "instructions_per_node" in result:
        line += f", {result['instructions_per_node']:.0f} instructions/node"
    print(line, flush=True)
    return result


if __name__ == "__main__":
    main()
