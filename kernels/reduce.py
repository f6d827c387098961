"""Reductions other than sums: max, min and logsumexp over all of each item's elements (``axis=None``) or one
axis of it, the same over a sequence's rows (``*_rows``, per example: ``lengths`` rows each), and argmax as a
one-hot vector. The gradient of a max or min goes to the first extreme element, the one ``argmax`` names."""
from . import backend
from . import segments as seg


def _flat(x, axis):
    """``x`` and the batched axis to reduce: all of an item's elements flattened into one, or ``axis``."""
    return (x.reshape(len(x), -1), 1) if axis is None else (x, axis + 1)


def _first_extreme(x, axis, sign):
    """A 0/1 mask of each item's first maximum (``sign`` 1) or minimum (-1) along ``axis`` (None: all)."""
    xp = backend.xp
    xf, a = _flat(x, axis)
    idx = xp.expand_dims((sign * xf).argmax(axis=a), a)
    shape = [1] * xf.ndim
    shape[a] = xf.shape[a]
    return (xp.arange(xf.shape[a]).reshape(shape) == idx).reshape(x.shape)


def _expand(g, x, axis):
    """An item-level gradient ``g`` of a reduction, broadcastable against ``x``."""
    if axis is None:
        return g.reshape((len(x),) + (1,) * (x.ndim - 1))
    return backend.xp.expand_dims(g, axis + 1)


def max_(x, *, axis):
    xf, a = _flat(x, axis)
    return xf.max(axis=a)


def max_vjp(g, y, x, *, axis):
    return (_first_extreme(x, axis, 1) * _expand(g, x, axis),)


def min_(x, *, axis):
    xf, a = _flat(x, axis)
    return xf.min(axis=a)


def min_vjp(g, y, x, *, axis):
    return (_first_extreme(x, axis, -1) * _expand(g, x, axis),)


def logsumexp(x, *, axis):
    """log sum exp, shifted by the maximum so that large values neither overflow nor lose precision."""
    xp = backend.xp
    xf, a = _flat(x, axis)
    m = xf.max(axis=a, keepdims=True)
    return (m + xp.log(xp.exp(xf - m).sum(axis=a, keepdims=True))).squeeze(a)


def logsumexp_vjp(g, y, x, *, axis):
    # d/dx logsumexp = softmax(x) = exp(x - y)
    return (_expand(g, x, axis) * backend.xp.exp(x - _expand(y, x, axis)),)


def max_rows(x, *, lengths):
    """Per example, the elementwise maximum over its rows (max pooling over time)."""
    return seg.seg_max(x, lengths)


def max_rows_vjp(g, y, x, *, lengths):
    return (seg.first_max(x, y, lengths) * seg.expand(g, lengths),)


def min_rows(x, *, lengths):
    return -seg.seg_max(-x, lengths)


def min_rows_vjp(g, y, x, *, lengths):
    return (seg.first_max(-x, -y, lengths) * seg.expand(g, lengths),)


def logsumexp_rows(x, *, lengths):
    """Per example, the elementwise log sum exp over its rows."""
    xp = backend.xp
    m = seg.seg_max(x, lengths)
    return m + xp.log(seg.seg_sum(xp.exp(x - seg.expand(m, lengths)), lengths))


def logsumexp_rows_vjp(g, y, x, *, lengths):
    return (seg.expand(g, lengths) * backend.xp.exp(x - seg.expand(y, lengths)),)


def argmax(x, *, gradient_mode):
    """A one-hot vector of each item's (first) largest element."""
    return _first_extreme(x, 0, 1).astype(x.dtype)


def argmax_vjp(g, y, x, *, gradient_mode):
    # DyNet's two modes: the one-hot is piecewise constant (no gradient), or passes the gradient through as if
    # it were the identity (the straight-through estimator of Bengio et al. 2013).
    return (g if gradient_mode == "straight_through" else None,)

