"""The array module every kernel computes with: NumPy by default, CuPy on a GPU, or the strict test backend.

The choice is made once (``use``, or ``AUTOBATCH_BACKEND`` at import) and read by kernels as ``backend.xp``,
so the same kernel code serves the CPU and the GPU without ``if gpu:`` branches. ``"strict"``
(``kernels/strict.py``) is a test tool: NumPy arrays that refuse implicit host conversion, so CI without a GPU
catches host/device mixing.

Host/device traffic goes through ``to_device`` (upload) and ``asnumpy`` (download), which count into
``transfers`` under every backend (a dict update: cheap); ``graph_stats()`` reports them per graph.
"""
import os

import numpy

xp = numpy
name = "numpy"
NAMES = ("numpy", "cupy", "strict")

# Host <-> device moves since the process started: counts and bytes.
transfers = {"uploads": 0, "upload_bytes": 0, "downloads": 0, "download_bytes": 0}


def count(kind, nbytes):
    """Record one transfer: ``kind`` is "uploads" or "downloads"."""
    transfers[kind] += 1
    transfers[kind[:-1] + "_bytes"] += int(nbytes)


def use(backend):
    """Select ``"numpy"``, ``"cupy"`` or ``"strict"`` as the array module for all kernels; returns the module.
    Arrays made under one backend are not converted: choose before creating parameters."""
    global xp, name
    if backend == "numpy":
        xp = numpy
    elif backend == "cupy":
        import cupy  # an ImportError here is the clearest message when CuPy is missing

        xp = cupy
    elif backend == "strict":
        from . import strict

        xp = strict
    else:
        raise ValueError(f"unknown backend {backend!r}: expected one of {NAMES}")
    name = backend
    return xp


def to_device(a, dtype=None):
    """Upload host data (an array, a list, a number) as a backend array; counted. A backend array is returned as
    is (cast to ``dtype``), uncounted."""
    if name == "strict":
        return xp.asarray(a, dtype=dtype)  # the strict module counts its uploads itself
    if name == "cupy" and isinstance(a, xp.ndarray):
        return xp.asarray(a, dtype=dtype)
    a = numpy.asarray(a, dtype=dtype)
    count("uploads", a.nbytes)
    return a if name == "numpy" else xp.asarray(a)


def asnumpy(a):
    """Download: a NumPy array for any backend array (the array itself under NumPy); counted. Python scalars
    and host arrays pass through uncounted."""
    if name == "numpy":
        if isinstance(a, (numpy.ndarray, numpy.generic)):  # a reduction's scalar is a download on a GPU
            count("downloads", a.nbytes)
        return a
    if isinstance(a, xp.ndarray):
        if name == "strict":
            return xp.asnumpy(a)  # counts itself
        count("downloads", a.nbytes)
        return xp.asnumpy(a)
    return a


def is_device_array(a):
    """True for an array of the current backend (under NumPy: any ndarray)."""
    return isinstance(a, xp.ndarray)


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU here"
        return False


def scatter_add(target, idx, rows):
    """``target[idx] += rows`` where repeated indices add up (NumPy's ``add.at``, which CuPy lacks)."""
    if name == "numpy":
        _add_at(target, idx, rows)
    elif name == "strict":
        xp.scatter_add(target, idx, rows)
    else:
        import cupyx

        cupyx.scatter_add(target, idx, rows)


def _add_at(target, idx, rows):
    """NumPy's ``add.at``. Whole rows picked by one index array take its general path, about 13 ns per element:
    an embedding's gradient rows of one minibatch cost half a millisecond. Adding the same values into the
    flattened array, one index per element, takes its 1-d path, five times faster from a few hundred elements
    on, and adds in the same order (the same sums, bit for bit)."""
    if (isinstance(idx, numpy.ndarray) and idx.ndim == 1 and target.ndim > 1 and rows.size >= 512
            and target.flags.c_contiguous and rows.shape == idx.shape + target.shape[1:]):
        w = target.size // target.shape[0]
        flat = (idx.astype(numpy.intp, copy=False)[:, None] * w + numpy.arange(w)).reshape(-1)
        numpy.add.at(target.reshape(-1), flat, rows.reshape(-1))
    else:
        numpy.add.at(target, idx, rows)


if os.environ.get("AUTOBATCH_BACKEND"):
    use(os.environ["AUTOBATCH_BACKEND"])
