"""NumPy references for the recurrent-cell, layer-norm, dropout and sentence-encoder primitives, shared by the
registry-driven op tests and the block tests; and fixed uniforms for tests that pass masks explicitly."""
import numpy as np
from scipy.special import expit, softmax

import autobatch as ab

U = np.random.default_rng(7).random((3, 64))  # fixed uniforms: example k's masks come from row k


def keep(u, p):
    """The inverted-dropout mask of uniforms ``u``: 1 / (1 - p) where u >= p, else 0."""
    return (u >= p) / (1 - p)


def in_eval(build):
    """``build()`` with eval_mode in force."""
    ab.eval_mode()
    try:
        return build()
    finally:
        ab.train_mode()


def layer_norm(x, gain, bias, eps=1e-5):
    return (x - x.mean()) / np.sqrt(x.var() + eps) * gain + bias


def _zoneout(new, prev, zo, u, train):
    if not zo:
        return new
    keep_prev = (u < zo) if train else zo
    return keep_prev * prev + (1 - keep_prev) * new


def _drop(x, rd, u, train):
    return x * keep(u[:len(x)], rd) if rd and train else x


def _zone_u(u, H, rd, train):
    return None if u is None else u[H:2 * H] if rd and train else u[:H]


def lstm_cell(gates, c, rd=0.0, zo=0.0, u=None, train=True):
    H = len(c)
    i, f, g = expit(gates[:H]), expit(gates[H:2 * H]), np.tanh(gates[2 * H:3 * H])
    return _zoneout(f * c + i * _drop(g, rd, u, train), c, zo, _zone_u(u, H, rd, train), train)


def lstm_hidden(gates, c, h_prev=None, zo=0.0, u=None, train=True):
    H = len(c)
    return _zoneout(expit(gates[3 * H:]) * np.tanh(c), h_prev, zo, _zone_u(u, H, 0.0, train), train)


def gru_hidden(xpart, hpart, h, rd=0.0, zo=0.0, u=None, train=True):
    H = len(h)
    r, z = expit(xpart[:H] + hpart[:H]), expit(xpart[H:2 * H] + hpart[H:2 * H])
    n = _drop(np.tanh(xpart[2 * H:] + r * hpart[2 * H:]), rd, u, train)
    return _zoneout((1 - z) * n + z * h, h, zo, _zone_u(u, H, rd, train), train)


def rnn_hidden(pre, h_prev=None, rd=0.0, zo=0.0, u=None, train=True):
    H = len(pre)
    return _zoneout(_drop(np.tanh(pre), rd, u, train), h_prev, zo, _zone_u(u, H, rd, train), train)


def self_attention(X, Wq, Wk, Wv, length, causal=False):
    x = X[:length]
    Q, K, V = x @ Wq.T, x @ Wk.T, x @ Wv.T
    S = Q @ K.T / np.sqrt(Q.shape[1])
    if causal:
        S[np.triu_indices(length, 1)] = -np.inf
    out = np.zeros((X.shape[0], Wv.shape[0]))
    out[:length] = softmax(S, axis=-1) @ V
    return out


def dilated_conv(X, W, b, length, dilation=1, causal=False, act="relu", residual=False):
    T, D = X.shape
    width = W.shape[1] // D
    x = np.zeros_like(X)
    x[:length] = X[:length]
    first = -(width - 1) if causal else -((width - 1) // 2)
    f = {"relu": lambda a: np.maximum(a, 0), "tanh": np.tanh, "linear": lambda a: a}[act]
    out = np.zeros((T, W.shape[0]))
    for t in range(length):
        taps = [x[t + (first + k) * dilation] if 0 <= t + (first + k) * dilation < T else np.zeros(D)
                for k in range(width)]
        out[t] = f(W @ np.concatenate(taps) + b) + (x[t] if residual else 0)
    return out
