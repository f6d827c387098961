"""Kernels that take parts of values: chosen indices along one axis (slices, ``select_rows``/``select_cols``),
rows of sequences; stacking values along a new axis; the ``ones`` leaf. Indices are per-node data, so examples
that take different parts (``x[0:3]`` and ``x[2:5]``) still share one kernel call."""
import numpy as np

from . import backend
from . import segments as seg


def take(idx, x, *, axis, n):
    """Per item, the ``n`` entries ``idx[k]`` (an int array of shape (batch, n)) along the item's ``axis``."""
    xp = backend.xp
    moved = xp.moveaxis(x, axis + 1, 1)
    out = moved[xp.arange(len(x))[:, None], idx]  # (batch, n, other axes...)
    return xp.ascontiguousarray(xp.moveaxis(out, 1, axis + 1))


def take_vjp(g, y, idx, x, *, axis, n):
    xp = backend.xp
    gx = xp.zeros_like(x)
    # Through a view with the axis moved next to the batch axis; repeated indices add up.
    backend.scatter_add(xp.moveaxis(gx, axis + 1, 1), (xp.arange(len(x))[:, None], idx), xp.moveaxis(g, axis + 1, 1))
    return (gx,)


def _packed_rows(rows, lengths):
    """The packed row numbers of every example's chosen rows (a list of int arrays, one per example)."""
    return backend.xp.asarray(np.concatenate([s + r for s, r in zip(seg.starts(lengths), rows)]))


def take_rows(rows, x, *, lengths):
    """Per example, the sequence of its rows ``rows[k]`` (any order, repeats allowed)."""
    return x[_packed_rows(rows, lengths)]


def take_rows_vjp(g, y, rows, x, *, lengths):
    gx = backend.xp.zeros_like(x)
    backend.scatter_add(gx, _packed_rows(rows, lengths), g)
    return (gx,)


def stack(x, *, axis):
    """The inputs, which arrive stacked on axis 1 (batch, inputs, ...), with that axis moved to ``axis``."""
    xp = backend.xp
    return x if axis == 0 else xp.ascontiguousarray(xp.moveaxis(x, 1, axis + 1))


def stack_vjp(g, y, x, *, axis):
    return (backend.xp.moveaxis(g, axis + 1, 1),)


def ones(values, *, shape, dtype):
    return backend.xp.ones((len(values),) + shape, dtype=dtype)
