"""Data parallelism: one process is the identity; two MPI ranks on halves of a minibatch match one process on
the whole of it, replicas stay bit-identical, and a failing rank stops the job instead of hanging."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import autobatch as ab
from autobatch.distributed import Communicator, DataParallel

SCRIPT = Path(__file__).parent / "mpi" / "dp_script.py"


def test_single_process_is_the_identity():
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    E, W = pc.add_lookup_parameters((10, 3)), pc.add_parameters((2, 3))
    dp = DataParallel(pc, Communicator())
    assert (dp.rank, dp.size, dp.is_root) == (0, 1, True)
    ab.renew_cg()
    ab.sum_elems(W @ E[4] + W @ E[7]).backward()
    before = (W.grad, E.grad)
    dp.sync_gradients()
    np.testing.assert_array_equal(W.grad, before[0])
    np.testing.assert_array_equal(E.grad, before[1])
    assert dp.volume == W.grad.nbytes + 2 * 8 + 2 * 3 * 8  # dense buffer + 2 touched rows (indices + values)
    assert dp.shard(list(range(5))) == list(range(5))
    ab.ParameterCollection(dtype=np.float32)


def _mpirun():
    if shutil.which("mpirun") is None:
        return None
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    flags = ["--oversubscribe", "--allow-run-as-root"] if "Open MPI" in version else []
    return ["mpirun", *flags, "-n", "2", sys.executable, str(SCRIPT)]


needs_mpi = pytest.mark.skipif(_mpirun() is None, reason="mpi4py or mpirun missing: pip install -e '.[mpi]'")


@needs_mpi
def test_two_ranks_equal_one_process_and_stay_identical():
    r = subprocess.run(_mpirun() + ["equal"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 12 steps on 2 ranks" in r.stdout


@needs_mpi
def test_a_failing_rank_stops_the_job_with_a_clear_error():
    r = subprocess.run(_mpirun() + ["fail"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "rank 1 of 2 failed" in r.stderr and "rank 1 met a bad example" in r.stderr
