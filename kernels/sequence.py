"""Kernels over whole sentences: a sentence is a (rows, dim) matrix, zero-padded to a bucket length so that
sentences of different lengths share one kernel call; ``aux`` carries each sentence's true length and the
kernels mask what lies past it. Weights are shared (one parameter for the batch)."""
import math

from . import backend
from .broadcast import batched, sum_to


def pad_rows(x, *, rows):
    """The vectors of each item (stacked by the engine: x is (batch, T, dim)) as a (rows, dim) matrix."""
    n, T, D = x.shape
    out = backend.xp.zeros((n, rows, D), dtype=x.dtype)
    out[:, :T] = x
    return out


def pad_rows_vjp(g, y, x, *, rows):
    return (g[:, :x.shape[1]],)


def _valid(lengths, rows, dtype):
    """(batch, rows, 1): 1 at positions inside the sentence, 0 in the padding."""
    xp = backend.xp
    return (xp.arange(rows)[None, :] < lengths[:, None]).astype(dtype)[:, :, None]


# ---- scaled dot-product self-attention --------------------------------------------------------------------------


def self_attention(lengths, X, Wq, Wk, Wv, *, causal):
    """softmax(Q K^T / sqrt(d_k) + mask) V with Q, K, V = X Wq^T, X Wk^T, X Wv^T. Keys past a sentence's end are
    masked (and, when ``causal``, keys after the query); rows past the end come out zero."""
    xp = backend.xp
    n = len(lengths)
    X = batched(X, n, 2)
    _, T, D = X.shape
    X2 = X.reshape(n * T, D)
    Q, K, V = [(X2 @ W.T).reshape(n, T, W.shape[0]) for W in (Wq, Wk, Wv)]
    S = xp.matmul(Q, K.transpose(0, 2, 1)) * (1.0 / math.sqrt(Q.shape[-1]))
    pos = xp.arange(T)
    masked = pos[None, None, :] >= lengths[:, None, None]
    if causal:
        masked = masked | (pos[None, None, :] > pos[None, :, None])
    S = xp.where(masked, -xp.inf, S)  # every row keeps key 0, so no row is all -inf
    S -= S.max(axis=-1, keepdims=True)
    A = xp.exp(S)
    A *= _valid(lengths, T, A.dtype) / A.sum(axis=-1, keepdims=True)
    return xp.matmul(A, V), (Q, K, V, A)


def self_attention_vjp(g, y, lengths, X, Wq, Wk, Wv, *, causal, res):
    xp = backend.xp
    Q, K, V, A = res
    n, T, dk = Q.shape
    dA = xp.matmul(g, V.transpose(0, 2, 1))
    dV = xp.matmul(A.transpose(0, 2, 1), g)
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True)) * (1.0 / math.sqrt(dk))
    dQ, dK = xp.matmul(dS, K), xp.matmul(dS.transpose(0, 2, 1), Q)
    X2 = batched(X, n, 2).reshape(n * T, -1)
    d2 = [d.reshape(n * T, -1) for d in (dQ, dK, dV)]
    dX = (d2[0] @ Wq + d2[1] @ Wk + d2[2] @ Wv).reshape(n, T, -1)
    return (sum_to(dX, X),) + tuple(d.T @ X2 for d in d2)


# ---- dilated 1-d convolution (Kalchbrenner et al. 2016) ---------------------------------------------------------


def _offsets(width, dilation, causal):
    """Where each tap reads, relative to the output position: centred, or ending at it when ``causal``."""
    first = -(width - 1) if causal else -((width - 1) // 2)
    return [(first + k) * dilation for k in range(width)]


def _columns(Xm, offsets):
    """(batch, T, taps, dim): each position's inputs at its taps, zero outside the sentence."""
    xp = backend.xp
    n, T, D = Xm.shape
    lo, hi = max(0, -min(offsets)), max(0, max(offsets))
    P = xp.zeros((n, lo + T + hi, D), dtype=Xm.dtype)
    P[:, lo:lo + T] = Xm
    return xp.stack([P[:, lo + o:lo + o + T] for o in offsets], axis=2)


_ACTIVATIONS = {  # f(a), and f'(a) written in terms of y = f(a)
    "relu": (lambda a: backend.xp.maximum(a, 0), lambda y: y > 0),
    "tanh": (lambda a: backend.xp.tanh(a), lambda y: 1 - y * y),
    "linear": (lambda a: a, None),
}


def dilated_conv(lengths, X, W, b, *, dilation, width, causal, act, residual):
    """y_t = act(b + sum_k W_k x_{t + o_k}) (+ x_t when ``residual``), o_k the taps' offsets spaced by
    ``dilation``; W is (out, width * dim), tap-major. One GEMM for the whole batch (im2col)."""
    n = len(lengths)
    X = batched(X, n, 2)
    _, T, D = X.shape
    valid = _valid(lengths, T, X.dtype)
    Xm = X * valid  # padding must not leak into the sentence through the taps
    cols = _columns(Xm, _offsets(width, dilation, causal))
    a = _ACTIVATIONS[act][0](cols.reshape(n * T, width * D) @ W.T + b).reshape(n, T, -1)
    y = (a + Xm if residual else a) * valid
    return y, (cols, a, valid)


def dilated_conv_vjp(g, y, lengths, X, W, b, *, dilation, width, causal, act, residual, res):
    xp = backend.xp
    cols, a, valid = res
    n, T, H = g.shape
    g = g * valid
    deriv = _ACTIVATIONS[act][1]
    ga = (g if deriv is None else g * deriv(a)).reshape(n * T, H)
    gcols = (ga @ W).reshape(n, T, width, -1)
    gX = g.copy() if residual else xp.zeros((n, T, gcols.shape[-1]), dtype=g.dtype)
    for k, o in enumerate(_offsets(width, dilation, causal)):  # cols[:, t, k] = Xm[:, t + o]
        if abs(o) < T:  # a tap reaching past the whole matrix reads only zeros
            gX[:, max(0, o):T + min(0, o)] += gcols[:, max(0, -o):T - max(0, o), k]
    gX *= valid
    return sum_to(gX, X), ga.T @ cols.reshape(n * T, -1), ga.sum(axis=0)
