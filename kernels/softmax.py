"""Softmax family over the last axis of each item, computed from shifted logits for stability.

The batch axis is axis 0, so an item's last axis is the array's last axis only when items have one: a batch of
0-d items (or the packed rows of a sequence of 0-d values) arrives as a 1-d array, and reducing its last axis
would mix the examples. ``_items`` gives such a batch an item axis of length 1, where softmax is 1 (as DyNet's
softmax of a scalar) and log-softmax 0; every kernel here reduces through it."""
from . import backend


def _items(x):
    """``x`` with a trailing item axis when its items are 0-d (see the module docstring)."""
    return x[:, None] if x.ndim == 1 else x


def _logsumexp(x):
    xp = backend.xp
    m = x.max(axis=-1, keepdims=True)
    return m + xp.log(xp.exp(x - m).sum(axis=-1, keepdims=True))


def softmax(x):
    xp = backend.xp
    z = _items(x)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).reshape(x.shape)


def softmax_vjp(g, y, x):
    gz, yz = _items(g), _items(y)
    return ((yz * (gz - (gz * yz).sum(axis=-1, keepdims=True))).reshape(x.shape),)


def log_softmax(x):
    z = _items(x)
    return (z - _logsumexp(z)).reshape(x.shape)


def log_softmax_vjp(g, y, x):
    gz = _items(g)
    return ((gz - backend.xp.exp(_items(y)) * gz.sum(axis=-1, keepdims=True)).reshape(x.shape),)


def pick_neg_log_softmax(idx, x):
    """-log softmax(x)[i] per item: the cross-entropy loss of one vector of logits (the shape rule admits
    vectors only, so x is (batch, classes)). Saves the softmax, which is the whole of the gradient but for the
    picked entry."""
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
