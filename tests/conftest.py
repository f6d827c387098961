import numpy as np
import pytest

import autobatch as ab
from kernels import backend

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.skipif(not backend.gpu_available(),
                                                                    reason="CuPy or a CUDA GPU is missing"))]


@pytest.fixture(params=BACKENDS)
def xp_backend(request):
    """Run a test once per available backend (NumPy always; CuPy when a GPU is present)."""
    backend.use(request.param)
    yield request.param
    backend.use("numpy")


@pytest.fixture
def pc64():
    """A float64 collection: gradient checks and strategy comparisons need float64 round-off."""
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    ab.renew_cg()
    yield pc
    ab.ParameterCollection(dtype=np.float32)  # restore the float32 default for later tests
