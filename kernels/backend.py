"""The array module every kernel computes with: NumPy by default, CuPy when asked for.

The choice is made once (``use``) and read by kernels as ``backend.xp``, so the same kernel code
serves the CPU and the GPU without ``if gpu:`` branches.
"""
import os

import numpy

xp = numpy
name = "numpy"


def use(backend):
    """Select ``"numpy"`` or ``"cupy"`` as the array module for all kernels; returns the module."""
    global xp, name
    if backend == "numpy":
        xp, name = numpy, "numpy"
    elif backend == "cupy":
        import cupy  # an ImportError here is the clearest message when CuPy is missing

        xp, name = cupy, "cupy"
    else:
        raise ValueError(f"unknown backend {backend!r}: expected 'numpy' or 'cupy'")
    return xp


def asnumpy(a):
    """A NumPy array (or Python scalar) for any backend array."""
    return a if name == "numpy" else xp.asnumpy(a)


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU here"
        return False


if os.environ.get("AUTOBATCH_BACKEND"):
    use(os.environ["AUTOBATCH_BACKEND"])


def scatter_add(target, idx, rows):
    """``target[idx] += rows`` where repeated indices add up."""
    if name == "numpy":
        numpy.add.at(target, idx, rows)
    else:
        import cupyx

        cupyx.scatter_add(target, idx, rows)
