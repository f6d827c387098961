"""Whole-sequence recurrences: one kernel call runs a cell over every sentence of a batch, time step by time
step, each step one product over the sentences still running (PyTorch's packed-sequence layout).

Input rows arrive packed sentence after sentence (``lengths`` rows each). The kernel sorts sentences by
length and reorders rows time-major, so the sentences alive at step t are a prefix and every step reads and
writes contiguous blocks; outputs return in the input's row order. Several directions (a BiLSTM's two) run in
the same loop as one batched product per step. Python's cost is per step, so everything that does not depend on
the previous step (gathers, reorderings, the backward's gate derivatives) is done for all steps at once.
"""
import numpy as np

from . import backend
from .dropout import keep_mask
from .elementwise import sigmoid_


def layout(lengths, reverse):
    """Time-major order of packed rows: ``perm`` (packed row of each time-major row), ``sizes`` (sentences
    alive per step, non-increasing), ``order`` (sentences by decreasing length), ``prev`` (each time-major
    row's predecessor in its sentence; -1 at the first step). With ``reverse`` sentences are read backwards."""
    lengths = np.asarray(lengths, np.intp)
    order = np.argsort(-lengths, kind="stable")
    sl = lengths[order]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[order]
    j = np.repeat(np.arange(len(sl)), sl)  # each row's sentence, by rank
    t = np.arange(len(j)) - np.repeat(np.cumsum(sl) - sl, sl)  # each row's step
    rows = starts[j] + (sl[j] - 1 - t if reverse else t)
    perm = rows[np.argsort(t * len(sl) + j, kind="stable")]
    sizes = len(sl) - np.searchsorted(sl[::-1], np.arange(sl[0]), side="right")
    # Time-major, a sentence's step t - 1 sits sizes[t - 1] rows before its step t.
    prev = np.arange(len(perm)) - np.repeat(np.concatenate([[len(perm) + 1], sizes[:-1]]), sizes)
    return perm, sizes, order, prev


def _device_layout(lengths, dirs):
    """The layouts of ``dirs`` with every index array uploaded in ONE transfer: per direction ``perm`` (device),
    ``sizes`` (host: it drives the loop), and, as device arrays, ``prev`` clamped at 0 and ``order``."""
    layouts = [layout(lengths, r) for r in dirs]
    _, sizes, order, prev = layouts[0]
    D, n = len(dirs), len(prev)
    packed = backend.to_device(np.concatenate([p for p, _, _, _ in layouts] + [np.maximum(prev, 0), order]))
    return [packed[d * n:(d + 1) * n] for d in range(D)], sizes, packed[D * n:(D + 1) * n], packed[(D + 1) * n:]


def _initial(v, order, size, dirs, width, dtype):
    """Initial states (dirs, sentences sorted, width): zeros (None), one shared vector, or a row per sentence;
    a vector holds the directions side by side."""
    xp = backend.xp
    if v is None:
        return xp.zeros((dirs, size, width), dtype)
    if v.ndim == 1:
        return xp.repeat(v.reshape(dirs, 1, width), size, axis=1)
    return v[order].reshape(size, dirs, width).transpose(1, 0, 2).copy()


# Gates are kept as [o i f g] inside (the parameters hold PyTorch's [i f g o]): then the sigmoid gates [o i f] are
# one block and the three gates fed by the memory's gradient [i f g] another.
def _to_oifg(src, dst, H):
    dst[..., :H] = src[..., 3 * H:]
    dst[..., H:] = src[..., :3 * H]


def _from_oifg(src, dst, H):
    dst[..., 3 * H:] = src[..., :H]
    dst[..., :3 * H] = src[..., H:]


def _previous(V, first, prev, n0):
    """Each time-major row's predecessor in its sentence (``prev``, clamped at 0): ``first`` for the first
    step's ``n0`` rows."""
    out = V[:, prev]
    out[:, :n0] = first[:, :n0]
    return out


def _time_major(v, perms, width):
    """Packed rows of ``v`` (directions side by side, ``width`` columns each) as (directions, time-major rows,
    width)."""
    out = backend.xp.empty((len(perms), len(perms[0]), width), v.dtype)
    for d, p in enumerate(perms):
        out[d] = v[p, d * width:(d + 1) * width]
    return out


def _packed(V, perms):
    """The inverse of ``_time_major``: (directions, time-major rows, width) back to packed rows."""
    D, n, width = V.shape
    out = backend.xp.empty((n, D * width), V.dtype)
    for d, p in enumerate(perms):
        out[p, d * width:(d + 1) * width] = V[d]
    return out


def _steps_back(sizes):
    """(first time-major row, sentences alive) of each step, the last step first."""
    ends = np.cumsum(sizes).tolist()
    for t in range(len(ends) - 1, -1, -1):
        yield ends[t] - int(sizes[t]), int(sizes[t])


def _masks(noise, perms, order, sizes, D, H, rd, zo, zt, vd, dtype, zones):
    """The regularisers' masks, time-major (D, n, H), from each node's uniforms ``(rows, seq)``: ``rows`` (its
    row count, D x [rd | zoneout of each of the ``zones`` states] x H, in the step path's order; None without)
    and ``seq`` (D x H, the variational mask of h; None without). Returns the candidate's dropout mask, the
    zoneout keep weights of each state (arrays in training, the scalar ``zo`` in evaluation) and the
    variational mask of h per row; None where off."""
    xp = backend.xp
    drop, keeps, vh = None, [None] * zones, None
    k = bool(rd) + zones * bool(zo and zt)
    if k:
        U = _time_major(xp.concatenate([u for u, _ in noise]), perms, k * H)
        if rd:
            drop = keep_mask(U[:, :, :H], rd, dtype)
        if zo and zt:
            keeps = [(U[:, :, (k - zones + j) * H:(k - zones + j + 1) * H] < zo).astype(dtype) for j in range(zones)]
    if zo and not zt:
        keeps = [zo] * zones  # evaluation: the expectation
    if vd:
        V = _initial(xp.stack([v for _, v in noise]), order, len(order), D, H, dtype)
        V = keep_mask(V, vd, dtype)
        ranks = backend.to_device(np.concatenate([np.arange(b) for b in sizes.tolist()]))
        vh = V[:, ranks]  # each time-major row's sentence
    return (drop, *keeps, vh)


def _rows(m, s, b):
    """Rows s:s+b of a per-row mask; a scalar (or None) as it is."""
    return m[:, s:s + b] if hasattr(m, "shape") else m


def lstm_scan(noise, x, Wh, h0=None, c0=None, *, lengths, dirs, rd=0.0, zo=0.0, zt=False, vd=0.0):
    """LSTM over each sentence, in each direction of ``dirs`` (False: left to right, True: right to left).
    x: each row's input part of the gates, per direction [i f g o] (W_x x_t + b), directions side by side;
    Wh: the recurrent weights (4H, H) per direction, stacked; h0, c0: initial states (None: zeros).
    Returns every step's h, directions side by side, packed like x.
    The step path's regularisers run inside the loop, as attributes with per-node uniforms in ``noise`` (see
    ``_masks``; each node's entry is None without them): ``rd`` drops the candidate (Semeniuta), ``zo``
    zones c and h out (``zt``: training, else the expectation), ``vd`` masks h before W_h (Gal's variational
    dropout), exactly as ``kernels/recurrent.py``'s cells and a dropout node per step do."""
    return _lstm(noise, x, Wh, None, h0, c0, lengths, dirs, rd, zo, zt, vd, 0.0)


def lstm_scan_vjp(g, y, noise, x, Wh, h0=None, c0=None, *, lengths, dirs, rd=0.0, zo=0.0, zt=False, vd=0.0,
                  res):
    return _lstm_vjp(g, x, Wh, None, h0, c0, lengths, dirs, res)


def lstm_ln_scan(noise, x, Wh, ah, h0=None, c0=None, *, lengths, dirs, eps, rd=0.0, zo=0.0, zt=False, vd=0.0):
    """``lstm_scan`` with the recurrent product layer-normalised, as the layer-norm LSTM's step path:
    gates = x + ah * LN(W_h h) (LN over all 4H gates, gain ``ah`` (4H,) per direction, no bias: x, itself
    LN(W_x x; a_x, b), carries it)."""
    return _lstm(noise, x, Wh, ah, h0, c0, lengths, dirs, rd, zo, zt, vd, eps)


def lstm_ln_scan_vjp(g, y, noise, x, Wh, ah, h0=None, c0=None, *, lengths, dirs, eps, rd=0.0, zo=0.0, zt=False,
                     vd=0.0, res):
    return _lstm_vjp(g, x, Wh, ah, h0, c0, lengths, dirs, res)


def _lstm(noise, x, Wh, ah, h0, c0, lengths, dirs, rd, zo, zt, vd, eps):
    xp = backend.xp
    D, H = len(dirs), Wh.shape[1]
    B = len(lengths)
    perms, sizes, prev, order = _device_layout(lengths, dirs)
    n = len(perms[0])
    A = xp.empty((D, n, 4 * H), x.dtype)  # time-major pre-activations, then activations, [o i f g]
    _to_oifg(_time_major(x, perms, 4 * H), A, H)
    WhT = xp.empty((D, H, 4 * H), x.dtype)
    _to_oifg(Wh.reshape(D, 4 * H, H).transpose(0, 2, 1), WhT, H)
    C, Hs = xp.empty((D, n, H), x.dtype), xp.empty((D, n, H), x.dtype)
    h = h_first = _initial(h0, order, B, D, H, x.dtype)
    c = c_first = _initial(c0, order, B, D, H, x.dtype)
    masks = _masks(noise, perms, order, sizes, D, H, rd, zo, zt, vd, x.dtype, 2) if rd or zo or vd else None
    drop = kc = kh = vh = None
    ln = None
    if ah is not None:  # the normalised products and 1 / std per row, for the VJP
        gain = xp.empty((D, 1, 4 * H), x.dtype)
        _to_oifg(ah.reshape(D, 1, 4 * H), gain, H)
        R, rstd = xp.empty((D, n, 4 * H), x.dtype), xp.empty((D, n, 1), x.dtype)
        ln = gain, R, rstd
    s = 0
    for b in sizes.tolist():
        a = A[:, s:s + b]
        hp, cp = h[:, :b], c[:, :b]
        if masks is not None:
            drop, kc, kh, vh = (_rows(m, s, b) for m in masks)
        r = xp.matmul(hp if vh is None else hp * vh, WhT)
        if ln is None:
            a += r
        else:
            r -= r.mean(axis=-1, keepdims=True)
            rs = rstd[:, s:s + b]
            xp.sqrt((r * r).mean(axis=-1, keepdims=True) + eps, out=rs)
            xp.divide(1.0, rs, out=rs)
            xp.multiply(r, rs, out=R[:, s:s + b])
            a += gain * R[:, s:s + b]
        sigmoid_(a[:, :, :3 * H])
        xp.tanh(a[:, :, 3 * H:], out=a[:, :, 3 * H:])
        cn, hn = C[:, s:s + b], Hs[:, s:s + b]
        xp.multiply(a[:, :, 2 * H:3 * H], cp, out=cn)
        cn += a[:, :, H:2 * H] * (a[:, :, 3 * H:] if drop is None else a[:, :, 3 * H:] * drop)
        if kc is not None:  # a kept unit is exactly its previous value
            cn[...] = kc * cp + (1 - kc) * cn
        xp.tanh(cn, out=hn)
        hn *= a[:, :, :H]
        if kh is not None:
            hn[...] = kh * hp + (1 - kh) * hn
        h, c = hn, cn  # the next step's sentences are a prefix of these
        s += b
    return _packed(Hs, perms), (perms, sizes, order, prev, A, C, Hs, h_first, c_first, masks, ln)


def _lstm_vjp(g, x, Wh, ah, h0, c0, lengths, dirs, res):
    xp = backend.xp
    perms, sizes, order, prev, A, C, Hs, h_first, c_first, masks, ln = res
    drop, kc, kh, vh = masks if masks is not None else (None,) * 4
    D, H = len(dirs), Wh.shape[1]
    B, n0 = len(lengths), int(sizes[0])
    G = _time_major(g, perms, H)
    # The gate derivatives depend on no other step: computed for all steps at once. The zoneout weights scale
    # the new values' share of each gradient, the kept share goes straight to the previous step.
    o, i, f, gg = A[:, :, :H], A[:, :, H:2 * H], A[:, :, 2 * H:3 * H], A[:, :, 3 * H:]
    gd = gg if drop is None else gg * drop
    tc = xp.tanh(C)
    to_c = o * (1 - tc * tc)  # d c_t / d h_t
    P = xp.empty_like(A)  # d pre-activation / d h_t for o; / d c_t for i, f, g
    P[:, :, :H] = tc * o * (1 - o)
    P[:, :, H:2 * H] = gd * i * (1 - i)
    P[:, :, 2 * H:3 * H] = _previous(C, c_first, prev, n0) * f * (1 - f)
    P[:, :, 3 * H:] = i * (1 - gg * gg) if drop is None else i * drop * (1 - gg * gg)
    f_c = f  # d c_(t-1) / d c_t
    if kh is not None:
        P[:, :, :H] *= 1 - kh
        to_c = to_c * (1 - kh)
    if kc is not None:
        P[:, :, H:] *= (1 - kc) if not hasattr(kc, "shape") else xp.tile(1 - kc, (1, 1, 3))
        f_c = f * (1 - kc) + kc
    P_ifg = P[:, :, H:].reshape(D, -1, 3, H)
    Wh_oifg = xp.empty((D, 4 * H, H), x.dtype)
    _to_oifg(Wh.reshape(D, 4 * H, H).transpose(0, 2, 1), Wh_oifg.transpose(0, 2, 1), H)
    dA = xp.empty_like(A)
    dA_ifg = dA[:, :, H:].reshape(D, -1, 3, H)
    dR = dA if ln is None else xp.empty_like(A)  # d (W_h h) per row: d pre-activation, through LN if there is one
    if ln is not None:
        gain, R, rstd = ln
    dh = xp.zeros((D, B, H), x.dtype)
    dc = xp.zeros((D, B, H), x.dtype)
    for s, b in _steps_back(sizes):
        dhn = G[:, s:s + b] + dh[:, :b]
        dcn = dhn * to_c[:, s:s + b]
        dcn += dc[:, :b]
        xp.multiply(dhn, P[:, s:s + b, :H], out=dA[:, s:s + b, :H])
        xp.multiply(dcn[:, :, None], P_ifg[:, s:s + b], out=dA_ifg[:, s:s + b])
        if ln is not None:  # through the normalisation: remove the gradient's components along 1 and along R
            gr, Rt = dA[:, s:s + b] * gain, R[:, s:s + b]
            dR[:, s:s + b] = rstd[:, s:s + b] * (gr - gr.mean(axis=-1, keepdims=True)
                                                 - Rt * (gr * Rt).mean(axis=-1, keepdims=True))
        dh[:, :b] = xp.matmul(dR[:, s:s + b], Wh_oifg)
        if vh is not None:
            dh[:, :b] *= vh[:, s:s + b]
        if kh is not None:
            dh[:, :b] += dhn * _rows(kh, s, b)
        xp.multiply(dcn, f_c[:, s:s + b], out=dc[:, :b])
    h_prev = _previous(Hs, h_first, prev, n0)
    if vh is not None:
        h_prev = h_prev * vh
    dWh = xp.empty((D, 4 * H, H), x.dtype)
    _from_oifg(xp.matmul(h_prev.transpose(0, 2, 1), dR), dWh.transpose(0, 2, 1), H)
    dX = xp.empty_like(dA)
    _from_oifg(dA, dX, H)
    grads = [_packed(dX, perms), dWh.reshape(Wh.shape)]
    if ln is not None:
        dgain = xp.empty((D, 4 * H), x.dtype)
        _from_oifg((dA * R).sum(axis=1), dgain, H)
        grads.append(dgain.reshape(ah.shape))
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
    out[order] = per_sentence
    return out


def rnn_scan(x, Wh, h0=None, *, lengths, dirs):
    """Elman RNN over each sentence, in each direction of ``dirs``: h_t = tanh(x_t + W_h h_(t-1)), x holding
    each row's input part (W_x x_t + b) per direction side by side, Wh (H, H) per direction stacked."""
    xp = backend.xp
    D, H = len(dirs), Wh.shape[1]
    perms, sizes, prev, order = _device_layout(lengths, dirs)
    Hs = _time_major(x, perms, H)  # pre-activations, then each step's h
    WhT = xp.ascontiguousarray(Wh.reshape(D, H, H).transpose(0, 2, 1))
    h = h_first = _initial(h0, order, len(lengths), D, H, x.dtype)
    s = 0
    for b in sizes.tolist():
        a = Hs[:, s:s + b]
        a += xp.matmul(h[:, :b], WhT)
        xp.tanh(a, out=a)
        h = a
        s += b
    return _packed(Hs, perms), (perms, sizes, order, prev, Hs, h_first)


def rnn_scan_vjp(g, y, x, Wh, h0=None, *, lengths, dirs, res):
    xp = backend.xp
    perms, sizes, order, prev, Hs, h_first = res
    D, H = len(dirs), Wh.shape[1]
    dA = _time_major(g, perms, H)  # becomes the gradient of each step's pre-activation
    deriv = 1 - Hs * Hs
    W = Wh.reshape(D, H, H)
    dh = xp.zeros((D, len(lengths), H), x.dtype)
    for s, b in _steps_back(sizes):
        da = dA[:, s:s + b]
        da += dh[:, :b]
        da *= deriv[:, s:s + b]
        dh[:, :b] = xp.matmul(da, W)
    dWh = xp.matmul(dA.transpose(0, 2, 1), _previous(Hs, h_first, prev, int(sizes[0])))
    grads = [_packed(dA, perms), dWh.reshape(Wh.shape)]
    if h0 is not None:
        grads.append(_initial_grad(dh, order, h0.ndim == 1))
    return tuple(grads)


def gru_scan(noise, x, Wh, bh, h0=None, *, lengths, dirs, rd=0.0, zo=0.0, zt=False, vd=0.0):
    """GRU (PyTorch's) over each sentence, in each direction of ``dirs``: with a = W_h h_(t-1) + b_h,
    r, z = sigmoid(x_rz + a_rz), n = tanh(x_n + r * a_n), h_t = (1 - z) * n + z * h_(t-1). x: each row's input
    part (W_x x_t + b_x) per direction [r z n], directions side by side; Wh (3H, H) and bh (3H,) per direction,
    stacked; h0 the initial state (None: zeros). The regularisers as in ``lstm_scan`` (``rd`` on n, zoneout on
    h, ``vd`` on h before W_h), as ``kernels/recurrent.py``'s ``gru_hidden`` runs them."""
    xp = backend.xp
    D, H = len(dirs), Wh.shape[1]
    perms, sizes, prev, order = _device_layout(lengths, dirs)
    X = _time_major(x, perms, 3 * H)  # pre-activations, then activations [r z n]
    An = xp.empty((D, len(perms[0]), H), x.dtype)  # each step's a_n, which r multiplies
    Hs = xp.empty_like(An)
    WhT = xp.ascontiguousarray(Wh.reshape(D, 3 * H, H).transpose(0, 2, 1))
    b3 = bh.reshape(D, 1, 3 * H)
    h = h_first = _initial(h0, order, len(lengths), D, H, x.dtype)
    masks = _masks(noise, perms, order, sizes, D, H, rd, zo, zt, vd, x.dtype, 1) if rd or zo or vd else None
    drop = kh = vh = None
    s = 0
    for b in sizes.tolist():
        hp = h[:, :b]
        if masks is not None:
            drop, kh, vh = (_rows(m, s, b) for m in masks)
        a = xp.matmul(hp if vh is None else hp * vh, WhT)
        a += b3
        rz, nn = X[:, s:s + b, :2 * H], X[:, s:s + b, 2 * H:]
        rz += a[:, :, :2 * H]
        sigmoid_(rz)
        An[:, s:s + b] = a[:, :, 2 * H:]
        nn += rz[:, :, :H] * a[:, :, 2 * H:]
        xp.tanh(nn, out=nn)
        hn = Hs[:, s:s + b]
        nd = nn if drop is None else nn * drop
        xp.subtract(hp, nd, out=hn)
        hn *= rz[:, :, H:]
        hn += nd
        if kh is not None:  # a kept unit is exactly its previous value
            hn[...] = kh * hp + (1 - kh) * hn
        h = hn
        s += b
    return _packed(Hs, perms), (perms, sizes, order, prev, X, An, Hs, h_first, masks)


def gru_scan_vjp(g, y, noise, x, Wh, bh, h0=None, *, lengths, dirs, rd=0.0, zo=0.0, zt=False, vd=0.0, res):
    xp = backend.xp
    perms, sizes, order, prev, X, An, Hs, h_first, masks = res
    drop, kh, vh = masks if masks is not None else (None,) * 3
    D, H = len(dirs), Wh.shape[1]
    Hp = _previous(Hs, h_first, prev, int(sizes[0]))
    r, z, nn = X[:, :, :H], X[:, :, H:2 * H], X[:, :, 2 * H:]
    nd = nn if drop is None else nn * drop
    # Every factor that depends on no other step's gradient, for all steps at once: d a / d h_t (Q, [r z n]).
    # Zoneout keeps a share kh of h_(t-1): the new value's share of d h_t is 1 - kh.
    Pn = (1 - z) * (1 - nn * nn)  # d x_n / d h_t
    if drop is not None:
        Pn *= drop
    if kh is not None:
        Pn *= 1 - kh
    Q = xp.empty_like(X)
    Q[:, :, :H] = Pn * An * r * (1 - r)
    Q[:, :, H:2 * H] = (Hp - nd) * z * (1 - z) * (1 if kh is None else 1 - kh)
    Q[:, :, 2 * H:] = Pn * r
    carry = z if kh is None else z * (1 - kh) + kh  # d h_(t-1) / d h_t along the direct path
    G = _time_major(g, perms, H)  # becomes each step's whole d h_t
    dA = xp.empty_like(X)
    dA3, Q3 = dA.reshape(D, -1, 3, H), Q.reshape(D, -1, 3, H)
    W = Wh.reshape(D, 3 * H, H)
    dh = xp.zeros((D, len(lengths), H), x.dtype)
    for s, b in _steps_back(sizes):
        dhn = G[:, s:s + b]
        dhn += dh[:, :b]
        xp.multiply(dhn[:, :, None], Q3[:, s:s + b], out=dA3[:, s:s + b])
        step = xp.matmul(dA[:, s:s + b], W)
        if vh is not None:
            step *= vh[:, s:s + b]
        step += dhn * _rows(carry, s, b)
        dh[:, :b] = step
    dX = dA.copy()  # the r and z parts are shared; x_n's gradient lacks a_n's factor r
    dX[:, :, 2 * H:] = G * Pn
    grads = [_packed(dX, perms), xp.matmul(dA.transpose(0, 2, 1), Hp if vh is None else Hp * vh).reshape(Wh.shape),
             dA.sum(axis=1).reshape(bh.shape)]
    if h0 is not None:
        grads.append(_initial_grad(dh, order, h0.ndim == 1))
    return tuple(grads)


# ---- Tree-LSTM over whole trees, level by level -------------------------------------------------------------
# A tree arrives as its leaves' inputs (rows of a sequence) and its shape (per node in post-order: left child,
# right child, height, leaf number; -1 where absent). All trees of a batch run together: first every leaf of
# every tree (one product), then height by height every internal node of that height (one product each).


def _tree_layout(shapes, lengths):
    """Global node numbering over the batch's trees: children as global rows, leaves' input rows, and the nodes
    of each height (as index arrays, leaves first)."""
    sizes = np.array([len(s) for s in shapes])
    node_off = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    leaf_off = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    S = np.concatenate(shapes)
    tree = np.repeat(np.arange(len(shapes)), sizes)
    internal = S[:, 0] >= 0
    left = np.where(internal, S[:, 0] + node_off[tree], -1)
    right = np.where(internal, S[:, 1] + node_off[tree], -1)
    leaf_rows = np.flatnonzero(~internal)
    leaf_input = S[leaf_rows, 3] + leaf_off[tree[leaf_rows]]
    order = np.argsort(S[:, 2], kind="stable")
    bounds = np.searchsorted(S[order, 2], np.arange(1, S[:, 2].max() + 2))
    levels = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]  # heights 1, 2, ...
    return left, right, leaf_rows, leaf_input, levels


# Inside, an internal node's gates are kept as [i o f_l f_r u] (the parameters hold [i o u f_l f_r]): the four
# sigmoid gates are then one block. Per level only the recurrence runs; the weight gradients are one product at
# the end over every level's inputs.
def _ifu(H):
    return np.concatenate([np.arange(2 * H), np.arange(3 * H, 5 * H), np.arange(2 * H, 3 * H)])


def tree_lstm_scan(shapes, x, W, bx, U, b, *, lengths):
    """Every node's h, per tree in post-order, for binary trees with leaf inputs x (packed, ``lengths`` leaves
    per tree): leaves [i o u] = W x + b_x, c = i * u; internal nodes [i o u f_l f_r] = U [h_l; h_r] + b,
    c = i * u + f_l * c_l + f_r * c_r; h = o * tanh(c) (sigmoid i, o, f; tanh u)."""
    xp = backend.xp
    left, right, leaf_rows, leaf_input, levels = _tree_layout(shapes, lengths)
    n, H = len(left), U.shape[1] // 2
    # Every index array of the batch (leaves, gate order, each level's nodes and children) in ONE upload.
    host = [leaf_rows, leaf_input, _ifu(H)] + [a for nodes in levels for a in (nodes, left[nodes], right[nodes])]
    ends = np.cumsum([len(a) for a in host]).tolist()
    packed = backend.to_device(np.concatenate(host).astype(np.intp))
    rows, leaf_input, order, *per_level = [packed[e - len(a):e] for a, e in zip(host, ends)]
    Hs, C, TC = (xp.empty((n, H), x.dtype) for _ in range(3))
    A_leaf = x[leaf_input] @ W.T + bx
    sigmoid_(A_leaf[:, :2 * H])
    xp.tanh(A_leaf[:, 2 * H:], out=A_leaf[:, 2 * H:])
    c = A_leaf[:, :H] * A_leaf[:, 2 * H:]
    C[rows] = c
    TC[rows] = tc = xp.tanh(c)
    Hs[rows] = A_leaf[:, H:2 * H] * tc
    UT, bo = xp.ascontiguousarray(U[order].T), b[order]
    saved = []
    for k in range(len(levels)):
        nd, l, r = per_level[3 * k:3 * k + 3]
        kids = xp.concatenate([Hs[l], Hs[r]], axis=1)
        a = kids @ UT
        a += bo
        sigmoid_(a[:, :4 * H])
        xp.tanh(a[:, 4 * H:], out=a[:, 4 * H:])
        cl, cr = C[l], C[r]
        c = a[:, :H] * a[:, 4 * H:]
        c += a[:, 2 * H:3 * H] * cl
        c += a[:, 3 * H:4 * H] * cr
        tc = xp.tanh(c)
        C[nd], TC[nd] = c, tc
        Hs[nd] = a[:, H:2 * H] * tc
        saved.append((nd, l, r, kids, a, cl, cr))
    return Hs, (rows, leaf_input, A_leaf, C, TC, saved, order)


def tree_lstm_scan_vjp(g, y, shapes, x, W, bx, U, b, *, lengths, res):
    xp = backend.xp
    rows, leaf_input, A_leaf, C, TC, saved, order = res
    H = U.shape[1] // 2
    dH, dC = g.copy(), xp.zeros_like(C)
    Uo = U[order]
    das, kidss = [], []
    for nd, l, r, kids, a, cl, cr in reversed(saved):  # a node's gradients are complete once its parents are done
        tc, o = TC[nd], a[:, H:2 * H]
        dh = dH[nd]
        dc = dC[nd]
        dc += dh * o * (1 - tc * tc)
        s4 = a[:, :4 * H]
        da = xp.empty_like(a)
        da[:, :4 * H] = s4 * (1 - s4)  # sigmoid derivatives of [i o f_l f_r], then times what they multiply
        da[:, :H] *= dc * a[:, 4 * H:]
        da[:, H:2 * H] *= dh * tc
        da[:, 2 * H:3 * H] *= dc * cl
        da[:, 3 * H:4 * H] *= dc * cr
        da[:, 4 * H:] = dc * a[:, :H] * (1 - a[:, 4 * H:] ** 2)
        das.append(da)
        kidss.append(kids)
        dkids = da @ Uo
        # Children belong to exactly one parent, so plain indexed adds never collide within a level.
        dH[l] += dkids[:, :H]
        dH[r] += dkids[:, H:]
        dC[l] += dc * a[:, 2 * H:3 * H]
        dC[r] += dc * a[:, 3 * H:4 * H]
    dU, db = xp.zeros_like(U), xp.zeros_like(b)
    if das:
        dA = xp.concatenate(das)
        dU[order] = dA.T @ xp.concatenate(kidss)
        db[order] = dA.sum(axis=0)
    i, o, u = A_leaf[:, :H], A_leaf[:, H:2 * H], A_leaf[:, 2 * H:]
    tc = TC[rows]
    dh = dH[rows]
    dc = dC[rows] + dh * o * (1 - tc * tc)
    da = xp.empty_like(A_leaf)
    da[:, :H] = dc * u * i * (1 - i)
    da[:, H:2 * H] = dh * tc * o * (1 - o)
    da[:, 2 * H:] = dc * i * (1 - u * u)
    X = x[leaf_input]
    dx = xp.zeros_like(x)
    dx[leaf_input] = da @ W
    return dx, da.T @ X, da.sum(axis=0), dU, db
