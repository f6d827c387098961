"""Fused recurrent cell updates: one kernel call computes a whole cell update for the batch from the gates'
stacked pre-activations. Gate layouts follow PyTorch (LSTM [i f g o], GRU [r z n]) so weights copy across.

Two regularisers ride along as attributes, so that switching them on adds no node:
- ``rd`` drops the candidate update (recurrent dropout, Semeniuta et al. 2016), inverted: d(g) = g * mask;
- ``zo`` zones units out (Krueger et al. 2017): new = keep * prev + (1 - keep) * new, where in training
  (``zt``) keep = [u < zo] per unit and in evaluation keep = zo, the expectation.
The uniforms u come per node in ``aux`` ([rd part | zo part]), drawn at build time, so batching cannot change
them. Any input may be shared (no batch axis: a learned initial state); its gradient is summed over the batch.
"""
from . import backend
from .broadcast import batched, sum_to
from .dropout import keep_mask
from .elementwise import logistic as _sigmoid


def _masks(noise, width, rd, zo, zt, dtype):
    """The candidate's dropout mask (None without ``rd``) and the zoneout keep weights (an array in
    training, the scalar ``zo`` in evaluation, None without zoneout)."""
    u = backend.xp.stack(noise) if rd or (zo and zt) else None
    drop = keep_mask(u[:, :width], rd, dtype) if rd else None
    if not zo:
        return drop, None
    return drop, ((u[:, -width:] < zo).astype(dtype) if zt else zo)


def _zone(new, prev, keep):
    # Written so that a kept unit (keep == 1) is exactly prev and a dropped one exactly new.
    return new if keep is None else keep * prev + (1 - keep) * new


def _unzone(g, keep):
    """Split the output gradient between the new value and the kept previous one."""
    if keep is None:
        return g, None
    return g * (1 - keep), g * keep


# ---- LSTM: c_t from (gates, c_prev), then h_t from (gates, c_t [, h_prev]) -------------------------------------


def lstm_cell(noise, gates, c_prev, *, rd, zo, zt):
    """c_t = f * c_prev + i * d(g), zoned out against c_prev."""
    n, H = len(noise), c_prev.shape[-1]
    gates, cp = batched(gates, n, 1), batched(c_prev, n, 1)
    i_f = _sigmoid(gates[:, :2 * H])
    g = backend.xp.tanh(gates[:, 2 * H:3 * H])
    drop, keep = _masks(noise, H, rd, zo, zt, cp.dtype)
    gd = g if drop is None else g * drop
    c = i_f[:, H:] * cp
    c += i_f[:, :H] * gd
    return _zone(c, cp, keep), (i_f, g, gd, drop, keep)


def lstm_cell_vjp(gc, c, noise, gates, c_prev, *, rd, zo, zt, res):
    i_f, g, gd, drop, keep = res
    n, H = len(noise), c.shape[-1]
    cp = batched(c_prev, n, 1)
    gc, g_prev = _unzone(gc, keep)
    i, f = i_f[:, :H], i_f[:, H:]
    dgates = backend.xp.zeros((n, 4 * H), dtype=c.dtype)
    dgates[:, :H] = gc * gd * i * (1 - i)
    dgates[:, H:2 * H] = gc * cp * f * (1 - f)
    dg = gc * i if drop is None else gc * i * drop
    dgates[:, 2 * H:3 * H] = dg * (1 - g * g)
    dc = gc * f if g_prev is None else gc * f + g_prev
    return sum_to(dgates, gates), sum_to(dc, c_prev)


def lstm_hidden(noise, gates, c, *h_prev, zo, zt):
    """h_t = o * tanh(c_t), zoned out against h_prev (an input only when ``zo``)."""
    n, H = len(noise), c.shape[-1]
    o = _sigmoid(batched(gates, n, 1)[:, 3 * H:])
    tc = backend.xp.tanh(batched(c, n, 1))
    _, keep = _masks(noise, H, 0, zo, zt, tc.dtype)
    h = o * tc
    if keep is not None:
        h = _zone(h, batched(h_prev[0], n, 1), keep)
    return h, (o, tc, keep)


def lstm_hidden_vjp(gh, h, noise, gates, c, *h_prev, zo, zt, res):
    o, tc, keep = res
    n, H = len(noise), h.shape[-1]
    gh, g_prev = _unzone(gh, keep)
    dgates = backend.xp.zeros((n, 4 * H), dtype=h.dtype)
    dgates[:, 3 * H:] = gh * tc * o * (1 - o)
    grads = (sum_to(dgates, gates), sum_to(gh * o * (1 - tc * tc), c))
    return grads if keep is None else grads + (sum_to(g_prev, h_prev[0]),)


# ---- GRU: h_t from (input part, recurrent part, h_prev), PyTorch's formulation ----------------------------------


def gru_hidden(noise, xpart, hpart, h_prev, *, rd, zo, zt):
    """r, z = sigmoid(x_rz + h_rz); n = tanh(x_n + r * h_n); h_t = (1 - z) * d(n) + z * h_prev, zoned out.
    ``xpart`` = W_i x + b_i and ``hpart`` = W_h h + b_h, each stacked [r z n]."""
    n, H = len(noise), h_prev.shape[-1]
    xpart, hpart, hp = batched(xpart, n, 1), batched(hpart, n, 1), batched(h_prev, n, 1)
    rz = _sigmoid(xpart[:, :2 * H] + hpart[:, :2 * H])
    cand = backend.xp.tanh(xpart[:, 2 * H:] + rz[:, :H] * hpart[:, 2 * H:])
    drop, keep = _masks(noise, H, rd, zo, zt, hp.dtype)
    nd = cand if drop is None else cand * drop
    h = nd + rz[:, H:] * (hp - nd)
    return _zone(h, hp, keep), (rz, cand, nd, drop, keep)


def gru_hidden_vjp(gh, h, noise, xpart, hpart, h_prev, *, rd, zo, zt, res):
    rz, cand, nd, drop, keep = res
    n, H = len(noise), h.shape[-1]
    hp = batched(h_prev, n, 1)
    gh, g_prev = _unzone(gh, keep)
    r, z = rz[:, :H], rz[:, H:]
    dh = gh * z if g_prev is None else gh * z + g_prev
    dn = gh * (1 - z) if drop is None else gh * (1 - z) * drop
    dan = dn * (1 - cand * cand)
    dx = backend.xp.empty((n, 3 * H), dtype=h.dtype)
    dx[:, :H] = dan * batched(hpart, n, 1)[:, 2 * H:] * r * (1 - r)
    dx[:, H:2 * H] = gh * (hp - nd) * z * (1 - z)
    dx[:, 2 * H:] = dan
    dhpart = dx.copy()
    dhpart[:, 2 * H:] *= r
    return sum_to(dx, xpart), sum_to(dhpart, hpart), sum_to(dh, h_prev)


# ---- Elman RNN: h_t = tanh(pre) with pre = W_i x + W_h h + b ------------------------------------------------------


def rnn_hidden(noise, pre, *h_prev, rd, zo, zt):
    """h_t = d(tanh(pre)), zoned out against h_prev (an input only when ``zo``)."""
    n, H = len(noise), pre.shape[-1]
    t = backend.xp.tanh(batched(pre, n, 1))
    drop, keep = _masks(noise, H, rd, zo, zt, t.dtype)
    h = t if drop is None else t * drop
    if keep is not None:
        h = _zone(h, batched(h_prev[0], n, 1), keep)
    return h, (t, drop, keep)


def rnn_hidden_vjp(gh, h, noise, pre, *h_prev, rd, zo, zt, res):
    t, drop, keep = res
    gh, g_prev = _unzone(gh, keep)
    dt = gh if drop is None else gh * drop
    grads = (sum_to(dt * (1 - t * t), pre),)
    return grads if keep is None else grads + (sum_to(g_prev, h_prev[0]),)
