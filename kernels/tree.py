"""Fused binary Tree-LSTM cell updates (Tai et al. 2015, the N-ary variant with N = 2): one kernel call computes
the memory cells of a whole batch of tree nodes, another their outputs.

Gate pre-activations are stacked [i o u f_l f_r]. A leaf has no children and only [i o u] (3H): c = i * u. An
internal node has all five (5H): c = i * u + f_l * c_l + f_r * c_r, each child with its own forget gate. In both
layouts o sits at [H, 2H), so one output kernel, h = o * tanh(c), serves leaves and internal nodes alike, and a
leaf's input transform needs no rows for forget gates it would never use.

Any input may be shared (no batch axis, e.g. a learned state); its gradient is summed over the batch.
"""
from . import backend
from .broadcast import batched, sum_to
from .elementwise import logistic as _sigmoid

LEAF_GATES, NODE_GATES = 3, 5  # gate blocks of a leaf [i o u] and of an internal node [i o u f_l f_r]


def _batch_size(xs):
    """The batch size: that of any batched input (inputs are vectors per item, so a batched one has rank 2)."""
    return max((x.shape[0] for x in xs if x.ndim == 2), default=1)


def tree_lstm_cell(gates, *children):
    """c = sigmoid(i) * tanh(u) + sum_k sigmoid(f_k) * c_k over the children's cells ``children`` (none or two)."""
    n = _batch_size((gates,) + children)
    g = batched(gates, n, 1)
    H = g.shape[1] // (NODE_GATES if children else LEAF_GATES)
    i = _sigmoid(g[:, :H])
    u = backend.xp.tanh(g[:, 2 * H:3 * H])
    c = i * u
    f = None
    if children:
        f = _sigmoid(g[:, 3 * H:])
        c += f[:, :H] * batched(children[0], n, 1) + f[:, H:] * batched(children[1], n, 1)
    return c, (i, u, f)


def tree_lstm_cell_vjp(gc, c, gates, *children, res):
    i, u, f = res
    n, H = c.shape
    dgates = backend.xp.zeros((n, gates.shape[-1]), dtype=c.dtype)  # o (at [H, 2H)) takes no gradient here
    dgates[:, :H] = gc * u * i * (1 - i)
    dgates[:, 2 * H:3 * H] = gc * i * (1 - u * u)
    if not children:
        return (sum_to(dgates, gates),)
    cl, cr = batched(children[0], n, 1), batched(children[1], n, 1)
    fl, fr = f[:, :H], f[:, H:]
    dgates[:, 3 * H:4 * H] = gc * cl * fl * (1 - fl)
    dgates[:, 4 * H:] = gc * cr * fr * (1 - fr)
    return sum_to(dgates, gates), sum_to(gc * fl, children[0]), sum_to(gc * fr, children[1])


def tree_lstm_hidden(gates, c):
    """h = sigmoid(o) * tanh(c), o at [H, 2H) of either gate layout."""
    n = _batch_size((gates, c))
    H = c.shape[-1]
    o = _sigmoid(batched(gates, n, 1)[:, H:2 * H])
    tc = backend.xp.tanh(batched(c, n, 1))
    return o * tc, (o, tc)


def tree_lstm_hidden_vjp(gh, h, gates, c, *, res):
    o, tc = res
    n, H = h.shape
    dgates = backend.xp.zeros((n, gates.shape[-1]), dtype=h.dtype)
    dgates[:, H:2 * H] = gh * tc * o * (1 - o)
    return sum_to(dgates, gates), sum_to(gh * o * (1 - tc * tc), c)
