"""The same DyNet programs on real DyNet 2.2 (auto-batching on) and through ``autobatch.dynet``, in one run.

The programs are the DyNet peers of ``bench/peers/dynet_models.py`` (dynet-benchmark's bilstm-tagger, treenn and
per-sentence LSTM LM, plus rnnlm-batch's hand-batched LM), unchanged: for autobatch.dynet the module they call
``dy`` is ``autobatch.dynet`` instead of ``dynet``. Each system runs in a process of its own on one thread
(``OPENBLAS_NUM_THREADS=1``; DyNet on CPU computes on one), timed over the same minibatches by
``bench.peers.run``; the systems alternate per task so both see the same machine load.

    python -m bench.dynet_compat --data ../shared/data            # tagger, tree, lm, lm-batched
    python -m bench.dynet_compat --tasks tagger --sentences 320

Prints one JSON line per (task, system) and a table: sentences/s, the ratio autobatch.dynet / DyNet, and the loss
per term at update ``--check-updates`` (same data, same order: both should learn alike).
"""
import argparse
import json
import os
import subprocess
import sys

# (task, bench.peers.run system, corpus folder under --data)
TASKS = {"tagger": ("tagger", "dynet", "ud-english-ewt"), "tree": ("tree", "dynet", "sst-trees"),
         "lm": ("lm", "dynet", "ptb-lm"), "lm-batched": ("lm", "dynet-batched", "ptb-lm")}


def child(argv):
    """Run ``bench.peers.run`` with DyNet's module replaced by autobatch.dynet (in this process only)."""
    import autobatch.dynet as ad
    from bench.peers import dynet_models, run

    def configure(autobatch=0, seed=0, mem="512"):
        """Stand-in for DyNet's configure: the programs' ``dy`` becomes autobatch.dynet."""
        ad.reset_random_seed(seed + 1)
        dynet_models.dy = ad
        return ad

    dynet_models.configure = configure
    run.main(argv)


def _run(system, task, args):
    peer_task, peer_system, folder = TASKS[task]
    argv = ["--task", peer_task, "--system", peer_system, "--autobatch", "1", "--batch-size", str(args.batch_size),
            "--sentences", str(args.sentences), "--check-updates", str(args.check_updates), "--seed", str(args.seed)]
    if args.data:
        argv += ["--data", os.path.join(args.data, folder)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bench.dynet_compat", "--child"] if system == "autobatch.dynet" else \
        [sys.executable, "-m", "bench.peers.run"]
    out = subprocess.run(cmd + argv, env=env, capture_output=True, text=True, check=True).stdout
    line = json.loads(out.strip().splitlines()[-1])
    line.update(system=system, task=task)
    return line


def main():
    """Run every task on both systems and print the table."""
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("AUTOBATCH_DATA"),
                    help="folder holding ud-english-ewt, sst-trees, ptb-lm (default: synthetic data)")
    ap.add_argument("--tasks", default="tagger,tree,lm,lm-batched")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--sentences", type=int, default=320)
    ap.add_argument("--check-updates", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for task in args.tasks.split(","):
        pair = {}
        for system in ("dynet", "autobatch.dynet"):
            res = _run(system, task, args)
            print(json.dumps(res), flush=True)
            pair[system] = res
        rows.append((task, pair))
    print(f"\n{'task':<11} {'DyNet sent/s':>13} {'autobatch.dynet':>16} {'ratio':>6}   loss@{args.check_updates} "
          f"(DyNet / ours)")
    for task, p in rows:
        d, a = p["dynet"], p["autobatch.dynet"]
        print(f"{task:<11} {d['sents_per_s']:>13} {a['sents_per_s']:>16} {a['sents_per_s'] / d['sents_per_s']:>6.2f}"
              f"   {d['loss_at']['loss']} / {a['loss_at']['loss']}")


if __name__ == "__main__":
    main()
