"""Kernels for DyNet's layouts (``autobatch.dynet``): column-major reshape, strided/indexed selection, sums
over a minibatch's rows, inputs that report the gradient reaching them, and a gradient stop.

As everywhere in ``kernels/``, axis 0 is the engine's batch axis; the attributes describe one item.
"""
import numpy as np

from . import backend, recurrent as _rec
from .structure import _segments


def reshape_f(x, *, shape):
    """Reshape each item in column-major (Fortran) order, as DyNet does. With the batch axis moved last, the
    batch is the slowest-varying axis in Fortran order, so items never mix."""
    n = len(x)
    y = backend.xp.moveaxis(x, 0, -1).reshape(shape + (n,), order="F")
    return backend.xp.ascontiguousarray(backend.xp.moveaxis(y, -1, 0))


def reshape_f_vjp(g, y, x, *, shape):
    return (reshape_f(g, shape=x.shape[1:]),)


def _key(spec):
    """One axis of an item's index: an int (the axis goes), a (start, stop, step) slice or a tuple of ints."""
    if type(spec) is int:
        return spec
    if spec[0] == "slice":
        return slice(*spec[1:])
    return backend.xp.asarray(np.array(spec[1], np.intp))


def select(x, *, index):
    """``x[:, spec_0][..., spec_1]...`` one item axis at a time (int lists select like ``np.take``)."""
    y, axis = x, 1
    for spec in index:
        k = _key(spec)
        y = y[(slice(None),) * axis + (k,)]
        axis += type(spec) is not int
    return y


def select_vjp(g, y, x, *, index):
    # Scatter back one axis at a time, last first: the shape before each axis's selection is replayed forward.
    shapes, part, axis = [], x, 1
    for spec in index:
        shapes.append((part.shape, axis))
        part = part[(slice(None),) * axis + (_key(spec),)]
        axis += type(spec) is not int
    for spec, (shape, axis) in zip(reversed(index), reversed(shapes)):
        full = backend.xp.zeros(shape, dtype=g.dtype)
        key = (slice(None),) * axis + (_key(spec),)
        if type(spec) is not int and spec[0] == "take":
            backend.scatter_add(full, key, g)  # repeated indices add up (CuPy has no add.at)
        else:
            full[key] = g
        g = full
    return (g,)


def sum_rows(x, *, lengths):
    """Per example, the sum of its rows (DyNet's ``sum_batches`` over a minibatch held as a sequence)."""
    xp = backend.xp
    out = xp.zeros((len(lengths),) + x.shape[1:], dtype=x.dtype)
    backend.scatter_add(out, _segments(lengths), x)
    return out


def sum_rows_vjp(g, y, x, *, lengths):
    return (g[_segments(lengths)],)


def scale_gradient(x, *, lambd):
    """The identity forward; the gradient times ``lambd`` backward (DyNet's ``scale_gradient``; with 0 its
    ``nobackprop`` and ``const_parameter``, with -1 its ``flip_gradient``)."""
    return x


def scale_gradient_vjp(g, y, x, *, lambd):
    return (None,) if lambd == 0 else (g * lambd if lambd != 1 else g,)


class Input:
    """One input node's data: its value (settable until the node runs, like DyNet's ``vecInput().set``) and,
    after a backward pass that asks for it (DyNet's ``backward(full=True)``), the gradient that reached it."""

    __slots__ = ("value", "grad")
    record = [False]  # set for the duration of a full backward pass

    def __init__(self, value):
        self.value, self.grad = value, None


def recorded_input(items, *, shape, dtype, rows):
    """Stack (or, for a minibatch held as a sequence, concatenate) the items' values into one batch."""
    values = [it.value for it in items]
    if rows:
        return backend.to_device(np.concatenate(values) if len(values) > 1 else values[0])
    return backend.to_device(np.stack(values) if len(values) > 1 else values[0][None])


def recorded_input_vjp(g, y, items, *, shape, dtype, rows):
    if Input.record[0]:
        k = 0
        for it in items:
            n = len(it.value) if rows else 1
            it.grad = backend.asnumpy(g[k:k + n] if rows else g[k])
            k += n
    return ()


# ---- the fused LSTM cell for a minibatch held as a sequence (no regulariser: DyNet's builders apply dropout
# as masks on the inputs, outside the cell) ------------------------------------------------------------------------


def _plain(gates, c):
    """The recurrent kernels' per-item noise list (all None: no recurrent dropout, no zoneout)."""
    return [None] * max(len(gates) if gates.ndim > 1 else 1, len(c) if c.ndim > 1 else 1)


def lstm_cell_rows(gates, c_prev):
    """c = f * c_prev + i * g per row (the engine's [i f g o] gate layout)."""
    return _rec.lstm_cell(_plain(gates, c_prev), gates, c_prev, rd=0.0, zo=0.0, zt=False)


def lstm_cell_rows_vjp(g, c, gates, c_prev, *, res):
    return _rec.lstm_cell_vjp(g, c, _plain(gates, c_prev), gates, c_prev, rd=0.0, zo=0.0, zt=False, res=res)


def lstm_hidden_rows(gates, c):
    """h = o * tanh(c) per row."""
    return _rec.lstm_hidden(_plain(gates, c), gates, c, zo=0.0, zt=False)


def lstm_hidden_rows_vjp(g, h, gates, c, *, res):
    return _rec.lstm_hidden_vjp(g, h, _plain(gates, c), gates, c, zo=0.0, zt=False, res=res)
