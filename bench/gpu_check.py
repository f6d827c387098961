"""The one-shot GPU check of issue 15, driven by ``bench/gpu_check.sh``: the CuPy tests, then the suite's three
tasks (BiLSTM tagger, Tree-LSTM, LSTM LM) on the GPU, written word by word (``autobatch-agenda``) and on whole
sentences/trees (``autobatch-seq``), against PyTorch on the same GPU (cuDNN's LSTM over packed sequences; the
Tree-LSTM batched level by level), at minibatches 64 and 256. Writes ONE JSON file of figures.

    python -m bench.gpu_check --out $OUT/gpu_check.json       # on the GPU machine (see bench/gpu_check.sh)
    python -m bench.gpu_check --dry-run --out /tmp/gpu.json   # here: the same code path on NumPy and torch CPU,
                                                              # tiny sizes
    python -m bench.gpu_check --cpu --tasks tree --batch-sizes 256 --out /tmp/cpu.json   # the CPU reference

Every task runs in its own process (``--task``: one JSON line per system and minibatch), under a time budget,
and the JSON is rewritten after every stage, so a run cut short still leaves its figures. Data: the tasks'
synthetic stand-ins (``bench/peers/tasks.py``): the GPU machine has no network and no corpora. Timing: each
system trains ``--warmup`` minibatches untimed (CuPy compiles its kernels then), then ``--timed`` minibatches,
the device synchronised before the clock stops. For autobatch the host/device transfers per minibatch are
recorded too (``backend.transfers``): the discipline the strict backend checks in CI, seen on a real GPU.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("tagger", "tree", "lm")
SYSTEMS = ("autobatch-seq", "torch", "autobatch-agenda")  # the targets' pair first, should time run out


def _versions():
    out = {"python": platform.python_version()}
    for name in ("numpy", "cupy", "torch"):
        try:
            out[name] = __import__(name).__version__
        except Exception as e:  # a missing package is a finding, not a crash
            out[name] = f"missing: {type(e).__name__}"
    import autobatch

    out["autobatch_compiled"] = autobatch.compiled  # the Cython hot path, or pure Python
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        out["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as e:
        out["gpu"] = f"none: {type(e).__name__}: {e}"[:200]
    return out


# ---- one task, in its own process -------------------------------------------------------------------------------


def _sync(device):
    """Wait for the device's queued work (so the clock measures it)."""
    if device != "cuda":
        return
    import cupy
    import torch

    cupy.cuda.Device().synchronize()
    torch.cuda.synchronize()


def _make(system, task, td, device):
    if system == "torch":
        import torch

        from bench.peers import torch_models

        torch.set_num_threads(1)
        return torch_models.make(task, td.n_words, td.n_labels, seed=0, device=device)
    from bench import autobatch_systems

    return autobatch_systems.make(task, td.n_words, td.n_labels, seed=0, style=system.removeprefix("autobatch-"))


def measure(task, system, mb, td, warmup, timed, device):
    """Train ``system`` on ``task``: ``warmup`` minibatches untimed, then ``timed`` timed; one record."""
    from bench.peers import tasks
    from autobatch.kernels import backend

    n = mb * timed
    items, warm = td.items[:n], td.items[n:n + mb * warmup]
    model = _make(system, task, td, device)
    for batch in tasks.batches(task, warm, mb, 1):
        model.train_batch(batch)
    batches = tasks.batches(task, items, mb, 0)
    _sync(device)
    before = dict(backend.transfers)
    t0 = time.perf_counter()
    losses = [model.train_batch(batch) for batch in batches]
    _sync(device)
    seconds = time.perf_counter() - t0
    words = sum(tasks.n_words(task, it) for it in items)
    rec = dict(task=task, system=system, batch_size=mb, sentences=len(items), updates=len(batches),
               seconds=round(seconds, 4), sents_per_s=round(len(items) / seconds, 1),
               words_per_s=round(words / seconds, 1),
               loss_per_term=round(sum(losses) / sum(tasks.n_losses(task, it) for it in items), 5))
    if system != "torch":
        rec["transfers_per_update"] = {k: (backend.transfers[k] - before[k]) / len(batches) for k in before}
        rec["engine"] = {k: round(v, 5) for k, v in model.report().items()}
    return rec


def run_task(args):
    """``--task``: every system and minibatch of one task; a JSON line each (a failure is a line too)."""
    from bench.peers import tasks
    from autobatch.kernels import backend

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    td = tasks.load(args.task, max(sizes) * (args.timed + args.warmup), None, 0)
    for mb in sizes:
        for system in args.systems.split(","):
            try:
                rec = measure(args.task, system, mb, td, args.warmup, args.timed, args.device)
            except Exception as e:  # one system failing must not hide the others' figures
                rec = dict(task=args.task, system=system, batch_size=mb, error=f"{type(e).__name__}: {e}"[:2000])
            rec["backend"] = "torch" if system == "torch" else backend.name
            print(json.dumps(rec), flush=True)


# ---- the driver -------------------------------------------------------------------------------------------------


def _child(cmd, env, timeout):
    """Run ``cmd``; its stdout, stderr's tail, exit code (124 on timeout) and seconds."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=max(timeout, 1))
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = (e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")), 124
    return out, err[-3000:], rc, round(time.perf_counter() - t0, 1)


def run_tests(args, env, timeout):
    """The CuPy tests (the ``xp_backend`` fixture's cupy runs, and the float32 training comparison)."""
    # -v: a line per test as it ends, so a run cut off by its timeout still says what passed and what failed.
    cmd = [sys.executable, "-m", "pytest", "-v", "--tb=line", "-p", "no:cacheprovider", "-k", args.tests_k,
           *args.tests.split()]
    out, err, rc, secs = _child(cmd, dict(env, PYTHONUNBUFFERED="1"), timeout)
    lines = out.strip().splitlines()
    counts = {k: sum(f" {k}" in ln for ln in lines if "::" in ln) for k in ("PASSED", "FAILED", "SKIPPED", "ERROR")}
    return dict(command=" ".join(cmd[1:]), exit_code=rc, seconds=secs, summary=lines[-1] if lines else "",
                counts=counts, failures=[ln for ln in lines if "::" in ln and (" FAILED" in ln or " ERROR" in ln)][:50],
                stderr_tail=err[-1000:] if rc not in (0, 5) else "", failure_lines=[
                    ln for ln in lines if ln.startswith("E ") or ".py:" in ln and "Error" in ln][:30])


def _targets(report, cpu_tree_256):
    """The issue's targets, read off the figures (None where a figure is missing)."""
    def rate(task, system, mb):
        for r in report["runs"]:
            if (r["task"], r["system"], r["batch_size"]) == (task, system, mb) and "sents_per_s" in r:
                return r["sents_per_s"]
        return None

    tests = report.get("tests", {})
    seq, torch = rate("tagger", "autobatch-seq", 64), rate("tagger", "torch", 64)
    tree = rate("tree", "autobatch-seq", 256)
    return {
        "tests_pass": tests.get("exit_code") == 0 if tests else None,  # the CuPy tests, on a GPU
        "tagger_seq_over_torch_mb64": round(seq / torch, 3) if seq and torch else None,
        "tree_seq_mb256_over_cpu": round(tree / cpu_tree_256, 2) if tree and cpu_tree_256 else None,
        "cpu_tree_seq_mb256_reference": cpu_tree_256,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="the JSON file to write")
    ap.add_argument("--dry-run", action="store_true", help="CPU: NumPy and torch CPU, tiny sizes, same code path")
    ap.add_argument("--cpu", action="store_true", help="CPU at full sizes (the reference figures)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--batch-sizes", default="64,256")
    ap.add_argument("--timed", type=int, default=4, help="timed minibatches per system and minibatch size")
    ap.add_argument("--warmup", type=int, default=2, help="untimed minibatches first (kernel compilation)")
    ap.add_argument("--tests", default="tests/test_ops.py tests/test_strict_backend.py")
    ap.add_argument("--tests-k", default="cupy", help="pytest -k selection of the tests to run")
    ap.add_argument("--budget-s", type=float, default=390, help="the whole run's time budget")
    ap.add_argument("--cpu-tree-256", type=float, help="this CPU machine's autobatch-seq Tree-LSTM sents/s at mb 256")
    ap.add_argument("--task", help=argparse.SUPPRESS)  # internal: run one task in this process
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.task:
        return run_task(args)
    if not args.out:
        ap.error("--out is required")
    on_cpu = args.dry_run or args.cpu
    if args.dry_run:  # the same stages at toy sizes
        args.batch_sizes, args.timed, args.warmup = "4,8", 1, 1
        args.tests, args.tests_k = "tests/test_strict_backend.py", "training_matches"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env["AUTOBATCH_BACKEND"] = "numpy" if on_cpu else "cupy"
    start = time.perf_counter()
    report = dict(issue=15, started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  mode="dry-run" if args.dry_run else "cpu" if args.cpu else "gpu", versions=_versions(),
                  settings=dict(batch_sizes=args.batch_sizes, timed=args.timed, warmup=args.warmup,
                                data="synthetic (bench/peers/tasks.py)", numpy_threads=1, torch_threads=1),
                  runs=[])

    def save():
        report["seconds"] = round(time.perf_counter() - start, 1)
        report["targets"] = _targets(report, args.cpu_tree_256)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")

    if not args.cpu:
        test_env = dict(env, AUTOBATCH_BACKEND="numpy")  # the suite's host backend; the cupy params run beside it
        report["tests"] = run_tests(args, test_env, 0.4 * args.budget_s)
        save()
        print("tests:", report["tests"]["summary"], flush=True)
    tasks = args.tasks.split(",")
    for k, task in enumerate(tasks):
        left = args.budget_s - (time.perf_counter() - start)
        cmd = [sys.executable, "-m", "bench.gpu_check", "--task", task, "--device", "cpu" if on_cpu else "cuda",
               "--systems", args.systems, "--batch-sizes", args.batch_sizes, "--timed", str(args.timed),
               "--warmup", str(args.warmup)]
        out, err, rc, secs = _child(cmd, env, left / (len(tasks) - k))
        got = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        report["runs"] += got
        if rc:
            report.setdefault("task_failures", []).append(dict(task=task, exit_code=rc, seconds=secs,
                                                               stderr_tail=err[-1500:]))
        save()
        for r in got:
            print(task, r["system"], r["batch_size"], r.get("sents_per_s", r.get("error")), flush=True)
    save()
    print(json.dumps(report["targets"]))


if __name__ == "__main__":
    main()
