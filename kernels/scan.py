"""Whole-sequence recurrences: one kernel call runs a cell over every sentence of a batch, time step by time
step, each step one product over the sentences still running (PyTorch's packed-sequence layout).

Input rows arrive packed sentence after sentence (``lengths`` rows each). The kernel sorts sentences by
length and reorders rows time-major, so the sentences alive at step t are a prefix and every step reads and
writes contiguous blocks; outputs return in the input's row order. Several directions (a BiLSTM's two) run in
the same loop as one batched product per step, halving the number of steps' array calls.
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


def _initial(v, order, size, dirs, width, dtype):
    """Initial states (dirs, sentences sorted, width): zeros (None), one shared vector, or a row per sentence;
    a vector holds the directions side by side."""
    xp = backend.xp
    if v is None:
        return xp.zeros((dirs, size, width), dtype)
    if v.ndim == 1:
        return xp.repeat(v.reshape(dirs, 1, width), size, axis=1)
    return v[xp.asarray(order)].reshape(size, dirs, width).transpose(1, 0, 2).copy()


def _sigmoid_(v):
    """Logistic sigmoid in place, as 0.5 * tanh(v / 2) + 0.5 (no overflow)."""
    v *= 0.5
    backend.xp.tanh(v, out=v)
    v *= 0.5
    v += 0.5


def _ifog(H):
    """Gate positions [i f o g] taken from the parameters' [i f g o] (PyTorch's order): the three sigmoid
    gates then form one contiguous block."""
    return np.concatenate([np.arange(2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])


def lstm_scan(x, Wh, h0=None, c0=None, *, lengths, dirs):
    """LSTM over each sentence, in each direction of ``dirs`` (False: left to right, True: right to left).
    x: each row's input part of the gates, per direction [i f g o] (W_x x_t + b), directions side by side;
    Wh: the recurrent weights (4H, H) per direction, stacked; h0, c0: initial states (None: zeros).
    Returns every step's h, directions side by side, packed like x."""
    xp = backend.xp
    D, H = len(dirs), Wh.shape[1]
    B = len(lengths)
    layouts = [layout(lengths, r) for r in dirs]
    sizes, order = layouts[0][1], layouts[0][2]
    perms = [xp.asarray(p) for p, _, _ in layouts]
    n = len(perms[0])
    ifog = _ifog(H)
    cols = [xp.asarray(d * 4 * H + ifog) for d in range(D)]
    A = xp.stack([x[p[:, None], c[None, :]] for p, c in zip(perms, cols)])  # (D, n, 4H): time-major, [i f o g]
    WhT = xp.ascontiguousarray(Wh.reshape(D, 4 * H, H)[:, xp.asarray(ifog)].transpose(0, 2, 1))  # (D, H, 4H)
    C, Hs, Hprev = (xp.empty((D, n, H), x.dtype) for _ in range(3))
    h = _initial(h0, order, B, D, H, x.dtype)
    c = _initial(c0, order, B, D, H, x.dtype)
    c_first = c
    s = 0
    for b in sizes.tolist():
        a = A[:, s:s + b]
        hp = h[:, :b]
        Hprev[:, s:s + b] = hp
        a += xp.matmul(hp, WhT)
        _sigmoid_(a[:, :, :3 * H])
        xp.tanh(a[:, :, 3 * H:], out=a[:, :, 3 * H:])
        cn = C[:, s:s + b]
        xp.multiply(a[:, :, H:2 * H], c[:, :b], out=cn)
        cn += a[:, :, :H] * a[:, :, 3 * H:]
        hn = Hs[:, s:s + b]
        xp.tanh(cn, out=hn)
        hn *= a[:, :, 2 * H:3 * H]
        h, c = hn, cn  # the next step's sentences are a prefix of these
        s += b
    out = xp.empty((n, D * H), x.dtype)
    for d, p in enumerate(perms):
        out[p, d * H:(d + 1) * H] = Hs[d]
    return out, (perms, cols, sizes, order, A, C, Hprev, c_first)


def lstm_scan_vjp(g, y, x, Wh, h0=None, c0=None, *, lengths, dirs, res):
    xp = backend.xp
    perms, cols, sizes, order, A, C, Hprev, c_first = res
    D, H = len(dirs), Wh.shape[1]
    B = len(lengths)
    G = xp.stack([g[p, d * H:(d + 1) * H] for d, p in enumerate(perms)])  # (D, n, H) time-major
    # Everything but the recurrence itself is computed for all steps at once, before the loop.
    i, f, o, gg = A[:, :, :H], A[:, :, H:2 * H], A[:, :, 2 * H:3 * H], A[:, :, 3 * H:]
    tc = xp.tanh(C)
    Cprev = xp.empty_like(C)
    Cprev[:, :sizes[0]] = c_first[:, :sizes[0]]
    ends = np.cumsum(sizes)
    for t in range(1, len(sizes)):  # each step's previous memory: the previous step's first rows
        s, b = int(ends[t - 1]), int(sizes[t])
        Cprev[:, s:s + b] = C[:, s - int(sizes[t - 1]):s - int(sizes[t - 1]) + b]
    to_c = o * (1 - tc * tc)  # d c_t / d h_t (through h = o * tanh(c))
    dA = xp.empty_like(A)
    P = xp.empty_like(A)  # d gate pre-activation / d c_t, for [i f o g]: the o part is d / d h_t instead
    P[:, :, :H] = gg * i * (1 - i)
    P[:, :, H:2 * H] = Cprev * f * (1 - f)
    P[:, :, 2 * H:3 * H] = tc * o * (1 - o)
    P[:, :, 3 * H:] = i * (1 - gg * gg)
    ifog = xp.asarray(_ifog(H))
    WhS = Wh.reshape(D, 4 * H, H)[:, ifog]  # (D, 4H, H), [i f o g]
    dh = xp.zeros((D, B, H), x.dtype)
    dc = xp.zeros((D, B, H), x.dtype)
    for t in range(len(sizes) - 1, -1, -1):
        b = int(sizes[t])
        s = int(ends[t]) - b
        dhn = G[:, s:s + b] + dh[:, :b]
        dcn = dhn * to_c[:, s:s + b]
        dcn += dc[:, :b]
        da, p = dA[:, s:s + b], P[:, s:s + b]
        xp.multiply(dhn, p[:, :, 2 * H:3 * H], out=da[:, :, 2 * H:3 * H])
        for k in (0, 1, 3):  # i, f, g: through the memory
            xp.multiply(dcn, p[:, :, k * H:(k + 1) * H], out=da[:, :, k * H:(k + 1) * H])
        dh[:, :b] = xp.matmul(da, WhS)
        xp.multiply(dcn, f[:, s:s + b], out=dc[:, :b])
    dWh = xp.empty((D, 4 * H, H), x.dtype)
    dWh[:, ifog] = xp.matmul(dA.transpose(0, 2, 1), Hprev)  # back to the parameters' [i f g o]
    gx = xp.empty((len(x), D * 4 * H), x.dtype)
    for d, (p, c) in enumerate(zip(perms, cols)):
        gx[p[:, None], c[None, :]] = dA[d]
    grads = [gx, dWh.reshape(Wh.shape)]
    for v, dv in ((h0, dh), (c0, dc)):
        if v is not None:
            grads.append(_initial_grad(dv, order, v.ndim == 1))
    return tuple(grads)


def _initial_grad(dv, order, shared):
    """(D, sentences sorted, H) gradients back to the initial state's layout (directions side by side)."""
    D, B, H = dv.shape
    per_sentence = dv.transpose(1, 0, 2).reshape(B, D * H)
    if shared:
        return per_sentence.sum(axis=0)
    out = backend.xp.empty_like(per_sentence)
    out[backend.xp.asarray(order)] = per_sentence
    return out
