"""Whole-sequence recurrences: one kernel call runs a cell over every sentence of a batch, time step by time
step, each step one product over the sentences still running (PyTorch's packed-sequence layout).

Input rows arrive packed sentence after sentence (``lengths`` rows each). The kernel sorts sentences by
length and reorders rows time-major, so the sentences alive at step t are a prefix and every step reads and
writes contiguous blocks; outputs return in the input's row order.
"""
import numpy as np

from . import backend


def layout(lengths, reverse):
    """Time-major order of packed rows: ``perm`` (packed row of each time-major row), ``sizes`` (sentences
    alive per step, non-increasing), ``order`` (sentences by decreasing length). With ``reverse`` each
    sentence is read from its last row to its first."""
    lengths = np.asarray(lengths, np.intp)
    order = np.argsort(-lengths, kind="stable")
    sl = lengths[order]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[order]
    j = np.repeat(np.arange(len(sl)), sl)  # each row's sentence, by rank
    t = np.arange(len(j)) - np.repeat(np.cumsum(sl) - sl, sl)  # each row's step
    rows = starts[j] + (sl[j] - 1 - t if reverse else t)
    perm = rows[np.argsort(t * len(sl) + j, kind="stable")]
    sizes = len(sl) - np.searchsorted(sl[::-1], np.arange(sl[0]), side="right")
    return perm, sizes, order


def _initial(v, order, size, width, dtype):
    """An initial state per sentence, sorted: zeros (None), one shared vector, or one row per sentence."""
    xp = backend.xp
    if v is None:
        return xp.zeros((size, width), dtype)
    if v.ndim == 1:
        return xp.repeat(v[None], size, axis=0)
    return v[xp.asarray(order)]


def _sigmoid_(v):
    """Logistic sigmoid in place, as 0.5 * tanh(v / 2) + 0.5 (no overflow)."""
    v *= 0.5
    backend.xp.tanh(v, out=v)
    v *= 0.5
    v += 0.5


def lstm_scan(x, Wh, h0=None, c0=None, *, lengths, reverse):
    """LSTM over each sentence: x holds each row's input part of the gates [i f g o] (W_x x_t + b, packed),
    Wh (4H, H) the recurrent weights; h0, c0 initial states (None: zeros). Returns every step's h, packed."""
    xp = backend.xp
    H = Wh.shape[1]
    perm, sizes, order = layout(lengths, reverse)
    perm_x = xp.asarray(perm)
    A = x[perm_x]  # time-major pre-activations, turned into activations in place
    n, B = len(A), len(lengths)
    C, Hs, Hprev = (xp.empty((n, H), x.dtype) for _ in range(3))
    h = _initial(h0, order, B, H, x.dtype)
    c = _initial(c0, order, B, H, x.dtype)
    c_first = c
    WhT = Wh.T
    s = 0
    for b in sizes.tolist():
        a = A[s:s + b]
        hp = h[:b]
        Hprev[s:s + b] = hp
        a += hp @ WhT
        _sigmoid_(a[:, :2 * H])
        _sigmoid_(a[:, 3 * H:])
        xp.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])
        cn = C[s:s + b]
        xp.multiply(a[:, H:2 * H], c[:b], out=cn)
        cn += a[:, :H] * a[:, 2 * H:3 * H]
        hn = Hs[s:s + b]
        xp.tanh(cn, out=hn)
        hn *= a[:, 3 * H:]
        h, c = hn, cn  # the next step's sentences are a prefix of these
        s += b
    out = xp.empty_like(Hs)
    out[perm_x] = Hs
    return out, (perm_x, sizes, order, A, C, Hprev, c_first)


def _unsort(v, order, shared):
    """Per-sentence gradients back in the input's order; summed when the initial state was shared."""
    if shared:
        return v.sum(axis=0)
    out = backend.xp.empty_like(v)
    out[backend.xp.asarray(order)] = v
    return out


def lstm_scan_vjp(g, y, x, Wh, h0=None, c0=None, *, lengths, reverse, res):
    xp = backend.xp
    perm_x, sizes, order, A, C, Hprev, c_first = res
    H = Wh.shape[1]
    G = g[perm_x]
    dA = xp.empty_like(A)
    B = len(lengths)
    dh = xp.zeros((B, H), x.dtype)
    dc = xp.zeros((B, H), x.dtype)
    ends = np.cumsum(sizes)
    for t in range(len(sizes) - 1, -1, -1):
        b = int(sizes[t])
        s = int(ends[t]) - b
        a = A[s:s + b]
        i, f, gg, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        tc = xp.tanh(C[s:s + b])
        dhn = G[s:s + b] + dh[:b]
        dcn = dhn * o
        dcn *= 1 - tc * tc
        dcn += dc[:b]
        cp = C[s - int(sizes[t - 1]):s - int(sizes[t - 1]) + b] if t else c_first[:b]
        da = dA[s:s + b]
        xp.multiply(dcn * gg, i * (1 - i), out=da[:, :H])
        xp.multiply(dcn * cp, f * (1 - f), out=da[:, H:2 * H])
        xp.multiply(dcn * i, 1 - gg * gg, out=da[:, 2 * H:3 * H])
        xp.multiply(dhn * tc, o * (1 - o), out=da[:, 3 * H:])
        dh[:b] = da @ Wh
        dc[:b] = dcn * f
    gx = xp.empty_like(dA)
    gx[perm_x] = dA
    grads = [gx, dA.T @ Hprev]
    if h0 is not None:
        grads.append(_unsort(dh, order, h0.ndim == 1))
    if c0 is not None:
        grads.append(_unsort(dc, order, c0.ndim == 1))
    return tuple(grads)
