"""Kernels that move, select or combine values: leaves, lookup, pick, concat, reshape, sums."""
from collections import namedtuple

import numpy as np

from . import backend


class SparseRows(namedtuple("SparseRows", "indices rows")):
    """A gradient for a lookup table that touches only ``indices`` (repeats allowed; they add up)."""


def input_(values, *, shape, dtype):
    """Stack the per-node arrays into one batch."""
    return backend.to_device(np.stack(values) if len(values) > 1 else values[0][None])


def param(values, *, shape, dtype):
    """A parameter's own array, viewed as a batch of one (no copy)."""
    return values[0][None]


def zeros(values, *, shape, dtype):
    return backend.xp.zeros((len(values),) + shape, dtype=dtype)


def lookup(idx, table):
    return table[idx]


def lookup_vjp(g, y, idx, table):
    return (SparseRows(idx, g),)


def pick(idx, x):
    """x[i] along the item's first axis, one index per item."""
    return x[backend.xp.arange(len(idx)), idx]


def pick_vjp(g, y, idx, x):
    gx = backend.xp.zeros_like(x)
    gx[backend.xp.arange(len(idx)), idx] = g
    return (gx,)


def concat(*xs, axis):
    return backend.xp.concatenate(xs, axis=axis + 1)


def concat_vjp(g, y, *xs, axis):
    ends = np.cumsum([x.shape[axis + 1] for x in xs])[:-1].tolist()  # split points are host ints, even on CuPy
    return tuple(backend.xp.split(g, ends, axis=axis + 1))


def esum(x):
    """Sum over axis 1 of the terms stacked there: x is (batch, terms, ...)."""
    return x.sum(axis=1)


def esum_vjp(g, y, x):
    return (backend.xp.broadcast_to(g[:, None], x.shape),)


def _segments(lengths):
    """Per row, the index of the example (sequence) it belongs to; rows of a batch of sequences are packed."""
    return backend.to_device(np.repeat(np.arange(len(lengths)), lengths))


def sum_elems(x, *, lengths=None):
    """Per item the sum of all its elements; for sequences (``lengths`` rows each) over all its rows too."""
    per_row = x.reshape(len(x), -1).sum(1)
    if lengths is None:
        return per_row
    return backend.xp.bincount(_segments(lengths), weights=per_row, minlength=len(lengths)).astype(x.dtype)


def sum_elems_vjp(g, y, x, *, lengths=None):
    if lengths is not None:
        g = g[_segments(lengths)]
    return (backend.xp.broadcast_to(g.reshape((len(x),) + (1,) * (x.ndim - 1)), x.shape),)


def sequence(x):
    """A sequence from its rows: the engine has already packed them, one node's rows after another's."""
    return x


def sequence_vjp(g, y, x):
    return (g,)


def _row_index(idx, lengths):
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return backend.to_device(starts) + idx


def pick_row(idx, x, *, lengths):
    """Row ``i`` of each sequence."""
    return x[_row_index(idx, lengths)]


def pick_row_vjp(g, y, idx, x, *, lengths):
    gx = backend.xp.zeros_like(x)
    gx[_row_index(idx, lengths)] = g
    return (gx,)


def reshape(x, *, shape):
    return x.reshape((len(x),) + shape)


def reshape_vjp(g, y, x, *, shape):
    return (g.reshape(x.shape),)
