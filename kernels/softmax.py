"""Softmax family over the last axis of each item, computed from shifted logits for stability."""
from . import backend


def _logsumexp(x):
    xp = backend.xp
    m = x.max(axis=-1, keepdims=True)
    return m + xp.log(xp.exp(x - m).sum(axis=-1, keepdims=True))


def softmax(x):
    xp = backend.xp
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_vjp(g, y, x):
    return (y * (g - (g * y).sum(axis=-1, keepdims=True)),)


def log_softmax(x):
    return x - _logsumexp(x)


def log_softmax_vjp(g, y, x):
    return (g - backend.xp.exp(y) * g.sum(axis=-1, keepdims=True),)


def pick_neg_log_softmax(idx, x):
    """-log softmax(x)[i] per item: the cross-entropy loss of one vector of logits. Saves the softmax, which
    is the whole of the gradient but for the picked entry."""
    xp = backend.xp
    rows = xp.arange(len(idx))
    m = x.max(axis=-1, keepdims=True)
    p = xp.exp(x - m)
    total = p.sum(axis=-1, keepdims=True)
    p /= total
    return (xp.log(total) + m)[:, 0] - x[rows, idx], p


def pick_neg_log_softmax_vjp(g, y, idx, x, *, res):
    gx = res * g[:, None]
    gx[backend.xp.arange(len(idx)), idx] -= g
    return (gx,)
