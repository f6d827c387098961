import os
from pathlib import Path

import numpy as np
import pytest

import autobatch as ab
from autobatch.kernels import backend

# The host backend the suite runs under: NumPy, or the strict test backend (AUTOBATCH_BACKEND=strict), which
# refuses implicit host/device moves. CuPy tests run in addition to it when a GPU is present.
HOST = "strict" if backend.name == "strict" else "numpy"
START = backend.name  # what tests without the fixture run under (AUTOBATCH_BACKEND, NumPy by default)
BACKENDS = [HOST, pytest.param("cupy", marks=pytest.mark.skipif(not backend.gpu_available(),
                                                                reason="CuPy or a CUDA GPU is missing"))]


@pytest.fixture(params=BACKENDS)
def xp_backend(request):
    """Run a test once per available backend (the host backend always; CuPy when a GPU is present)."""
    backend.use(request.param)
    yield request.param
    backend.use(START)


@pytest.fixture
def pc64():
    """A float64 collection: gradient checks and strategy comparisons need float64 round-off."""
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    ab.renew_cg()
    yield pc
    ab.ParameterCollection(dtype=np.float32)  # restore the float32 default for later tests


# The real datasets (UD EWT, SST, PTB): $AUTOBATCH_DATA, else ../shared/data beside the repository. Tests that
# need them skip without them, saying where they looked.
DATA = Path(os.environ.get("AUTOBATCH_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture
def real_data():
    """``real_data(*parts)``: the path of a file or folder of the real datasets (under ``DATA``); skips the
    test, saying how to point the tests at the data, when it is not there."""
    def find(*parts):
        path = DATA.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"real data not found at {path}: set AUTOBATCH_DATA to the folder holding "
                        "ud-english-ewt, sst-trees and ptb-lm")
        return path

    return find
