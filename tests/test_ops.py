"""Registry-driven op tests: every primitive has a NumPy reference and a float64 gradient check, run batched
(several examples, per-example and shared inputs) and node by node. A primitive added to the registry
without an entry in CASES fails ``test_every_primitive_has_cases``."""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from scipy.special import expit, log_softmax as np_log_softmax, logsumexp, softmax as np_softmax

import autobatch as ab
import cell_references as ref
from autobatch import encoders as enc, rnn
from autobatch.registry import REGISTRY

LEAVES = {"param", "input", "zeros"}  # covered by test_leaves below


def _normal(rng, shape):
    return rng.normal(size=shape)


def _positive(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


def _away_from_zero(rng, shape):
    return rng.uniform(0.3, 1.5, size=shape) * rng.choice([-1, 1], size=shape)


@dataclass
class Case:
    """``build(k, *inputs)`` builds example k's node; ``ref(k, *arrays)`` computes it in NumPy."""

    build: Callable
    shapes: list
    ref: Callable
    shared: tuple = ()  # inputs passed as a Parameter (one value shared by every example)
    init: Callable = _normal
    per_input_init: dict = field(default_factory=dict)


def unary(fn, ref, shape=(3, 4), init=_normal):
    return Case(lambda k, x: fn(x), [shape], lambda k, x: ref(x), init=init)


CASES = {
    "lookup": [Case(lambda k, E: ab.lookup(E, [2, 0, 2][k]), [(4, 3)], lambda k, E: E[[2, 0, 2][k]], shared=(0,))],
    "tanh": [unary(ab.tanh, np.tanh)],
    "logistic": [unary(ab.logistic, expit), unary(ab.logistic, expit, shape=(5,))],
    "relu": [unary(ab.relu, lambda x: np.maximum(x, 0), init=_away_from_zero)],
    "exp": [unary(ab.exp, np.exp)],
    "log": [unary(ab.log, np.log, init=_positive)],
    "square": [unary(ab.square, np.square)],
    "sqrt": [unary(ab.sqrt, np.sqrt, init=_positive)],
    "scale_shift": [Case(lambda k, x: 1 - x, [(4,)], lambda k, x: 1 - x),
                    Case(lambda k, x: x / 4 + 0.5, [(2, 3)], lambda k, x: x / 4 + 0.5),
                    Case(lambda k, x: 3 * x, [()], lambda k, x: 3 * x),
                    Case(lambda k, x: -x, [(3,)], lambda k, x: -x)],
    "rdiv": [Case(lambda k, x: 2 / x, [(4,)], lambda k, x: 2 / x, init=_away_from_zero)],
    "add": [Case(lambda k, a, b: a + b, [(3,), (3,)], lambda k, a, b: a + b),
            Case(lambda k, a, b: a + b, [(3,), (3,)], lambda k, a, b: a + b, shared=(1,)),
            Case(lambda k, a, b: a + b, [(2, 3), (3,)], lambda k, a, b: a + b),
            Case(lambda k, a, b: a + b, [(), (4,)], lambda k, a, b: a + b)],
    "sub": [Case(lambda k, a, b: a - b, [(3,), (3,)], lambda k, a, b: a - b),
            Case(lambda k, a, b: a - b, [(2, 3), (2, 1)], lambda k, a, b: a - b, shared=(0,))],
    "mul": [Case(lambda k, a, b: ab.cmult(a, b), [(3,), (3,)], lambda k, a, b: a * b),
            Case(lambda k, a, b: a * b, [(), (4,)], lambda k, a, b: a * b),
            Case(lambda k, a, b: a * b, [(4,), (4,)], lambda k, a, b: a * b, shared=(0,))],
    "div": [Case(lambda k, a, b: a / b, [(3,), (3,)], lambda k, a, b: a / b, init=_away_from_zero),
            Case(lambda k, a, b: ab.cdiv(a, b), [(2, 3), ()], lambda k, a, b: a / b, init=_away_from_zero)],
    "matmul": [Case(lambda k, W, x: W @ x, [(4, 3), (3,)], lambda k, W, x: W @ x, shared=(0,)),
               Case(lambda k, W, x: W @ x, [(4, 3), (3,)], lambda k, W, x: W @ x),
               Case(lambda k, W, x: W @ x, [(4, 3), (3, 2)], lambda k, W, x: W @ x, shared=(0,)),
               Case(lambda k, W, x: W @ x, [(4, 3), (3, 2)], lambda k, W, x: W @ x),
               Case(lambda k, W, x: W @ x, [(4, 3), (3,)], lambda k, W, x: W @ x, shared=(1,)),
               Case(lambda k, W, x: W @ x, [(4, 3), (3, 2)], lambda k, W, x: W @ x, shared=(1,))],
    "affine": [Case(lambda k, b, W, x: ab.affine(b, W, x), [(4,), (4, 3), (3,)],
                    lambda k, b, W, x: b + W @ x, shared=(0, 1)),
               Case(lambda k, b, W, x: ab.affine(b, W, x), [(4,), (4, 3), (3,)], lambda k, b, W, x: b + W @ x),
               Case(lambda k, b, W, x: ab.affine(b, W, x), [(4, 2), (4, 3), (3, 2)],
                    lambda k, b, W, x: b + W @ x, shared=(1,)),
               Case(lambda k, b, W, x: ab.affine(b, W, x), [(4,), (4, 3), (3,)],  # the product is a constant
                    lambda k, b, W, x: b + W @ x, shared=(1, 2)),
               Case(lambda k, b, W, x: ab.affine(b, W, x), [(4, 2), (4, 3), (3, 2)],
                    lambda k, b, W, x: b + W @ x, shared=(1, 2))],
    "transpose": [unary(ab.transpose, lambda x: x.T, shape=(2, 3))],
    "reshape": [Case(lambda k, x: ab.reshape(x, (3, 2)), [(6,)], lambda k, x: x.reshape(3, 2))],
    "softmax": [unary(ab.softmax, lambda x: np_softmax(x, -1), shape=(5,)),
                unary(ab.softmax, lambda x: np_softmax(x, -1), shape=(2, 4))],
    "log_softmax": [unary(ab.log_softmax, lambda x: np_log_softmax(x, -1), shape=(5,))],
    "pick_neg_log_softmax": [Case(lambda k, x: ab.pick_neg_log_softmax(x, [1, 4, 1][k]), [(5,)],
                                  lambda k, x: logsumexp(x) - x[[1, 4, 1][k]])],
    # Sequences: example k has k + 1 (or k + 2) rows, so examples of different lengths share each batch.
    "sequence": [Case(lambda k, x: ab.sequence([x, x * 2.0, ab.tanh(x)][:k + 1]), [(3,)],
                      lambda k, x: np.stack([x, x * 2.0, np.tanh(x)][:k + 1]))],
    "pick_row": [Case(lambda k, x: ab.rows(ab.sequence([x, x * 2.0, x * 3.0][:k + 1]))[k], [(3,)],
                      lambda k, x: x * (k + 1.0))],
    "lstm_scan": [Case(lambda k, x, Wh: _scan(_rows_of(x, k + 2), Wh, reverse=False), [(8,), (8, 2)],
                       lambda k, x, Wh: _scan_ref(_rows_np(x, k + 2), Wh), shared=(1,)),
                  Case(lambda k, x, Wh: _scan(_rows_of(x, k + 2), Wh, reverse=True), [(8,), (8, 2)],
                       lambda k, x, Wh: _scan_ref(_rows_np(x, k + 2)[::-1], Wh)[::-1], shared=(1,)),
                  Case(lambda k, x, Wh, h0, c0: _scan(_rows_of(x, k + 1), Wh, h0, c0), [(8,), (8, 2), (2,), (2,)],
                       lambda k, x, Wh, h0, c0: _scan_ref(_rows_np(x, k + 1), Wh, h0, c0), shared=(1, 2)),
                  Case(lambda k, x, Wh, h0, c0: _scan(_rows_of(x, k + 1), Wh, h0, c0, reverse=True),
                       [(8,), (8, 2), (2,), (2,)],  # initial states per example
                       lambda k, x, Wh, h0, c0: _scan_ref(_rows_np(x, k + 1)[::-1], Wh, h0, c0)[::-1],
                       shared=(1,)),
                  Case(lambda k, x, Wh, h0, c0: _scan(_rows_of(x, k + 2), Wh, h0, c0, dirs=(False, True)),
                       [(16,), (16, 2), (4,), (4,)], lambda k, x, Wh, h0, c0: _bidirectional_ref(
                           _rows_np(x, k + 2), Wh, h0, c0), shared=(1, 2, 3))],
    "rnn_scan": [Case(lambda k, x, Wh: _rnn_scan(_rows_of(x, k + 2), Wh, dirs=(False,)), [(3,), (3, 3)],
                      lambda k, x, Wh: _rnn_ref(_rows_np(x, k + 2), Wh), shared=(1,)),
                 Case(lambda k, x, Wh, h0: _rnn_scan(_rows_of(x, k + 1), Wh, h0, dirs=(False, True)),
                      [(6,), (6, 3), (6,)], lambda k, x, Wh, h0: np.concatenate(
                          [_rnn_ref(_rows_np(x, k + 1)[:, :3], Wh[:3], h0[:3]),
                           _rnn_ref(_rows_np(x, k + 1)[::-1, 3:], Wh[3:], h0[3:])[::-1]], axis=1), shared=(1,))],
    "tree_lstm_scan": [Case(lambda k, x, W, bx, U, b: _tree_scan(_rows_of(x, len(_TREES[k]) // 2 + 1), _TREES[k],
                                                               W, bx, U, b), [(3,), (6, 3), (6,), (10, 4), (10,)],
                            lambda k, x, W, bx, U, b: _tree_ref(_rows_np(x, len(_TREES[k]) // 2 + 1), _TREES[k],
                                                                W, bx, U, b), shared=(1, 2, 3, 4))],
    "pick": [Case(lambda k, x: ab.pick(x, [0, 2, 1][k]), [(3,)], lambda k, x: x[[0, 2, 1][k]]),
             Case(lambda k, x: ab.pick(x, [1, 0, 1][k]), [(2, 3)], lambda k, x: x[[1, 0, 1][k]])],
    "concat": [Case(lambda k, a, b: ab.concat([a, b]), [(2,), (3,)], lambda k, a, b: np.concatenate([a, b])),
               Case(lambda k, a, b: ab.concat([a, b], axis=1), [(2, 1), (2, 3)],
                    lambda k, a, b: np.concatenate([a, b], 1)),
               Case(lambda k, a, b: ab.concat([a, b]), [(2,), (3,)], lambda k, a, b: np.concatenate([a, b]),
                    shared=(1,))],
    "esum": [Case(lambda k, a, b, c: ab.esum([a, b, c]), [(3,)] * 3, lambda k, a, b, c: a + b + c),
             Case(lambda k, a, b: ab.esum([a, b]), [(2, 2)] * 2, lambda k, a, b: a + b)],
    "sum_elems": [unary(ab.sum_elems, np.sum), Case(lambda k, x: ab.mean_elems(x), [(3, 2)], lambda k, x: x.mean()),
                  Case(lambda k, a, b: ab.dot(a, b), [(4,), (4,)], lambda k, a, b: a @ b)],
    # ---- issue 3: layer norm, dropout, fused cells (masks from fixed uniforms ref.U), sentence encoders ----
    "layer_norm": [Case(lambda k, x, g, b: ab.layer_norm(x, g, b), [(5,)] * 3, lambda k, *a: ref.layer_norm(*a),
                        shared=(1, 2)),
                   Case(lambda k, x, g, b: ab.layer_norm(x, g, b), [(5,)] * 3, lambda k, *a: ref.layer_norm(*a)),
                   Case(lambda k, x, g, b: ab.layer_norm(x, g, b), [(5,)] * 3, lambda k, *a: ref.layer_norm(*a),
                        shared=(0, 1))],
    "dropout": [Case(lambda k, x: ab.dropout(x, 0.4, noise=ref.U[k, :6]), [(6,)],
                     lambda k, x: x * ref.keep(ref.U[k, :6], 0.4)),
                Case(lambda k, W: ab.dropout(W, 0.3, noise=ref.U[k, :6].reshape(2, 3)), [(2, 3)],
                     lambda k, W: W * ref.keep(ref.U[k, :6].reshape(2, 3), 0.3), shared=(0,))],
    "lstm_cell": [Case(lambda k, gt, c: rnn.lstm_cell(gt, c), [(8,), (2,)], lambda k, gt, c: ref.lstm_cell(gt, c)),
                  Case(lambda k, gt, c: rnn.lstm_cell(gt, c, recurrent_dropout=0.4, zoneout=0.3, noise=ref.U[k, :4]),
                       [(8,), (2,)], lambda k, gt, c: ref.lstm_cell(gt, c, 0.4, 0.3, ref.U[k])),
                  Case(lambda k, gt, c: ref.in_eval(lambda: rnn.lstm_cell(gt, c, recurrent_dropout=0.4, zoneout=0.3)),
                       [(8,), (2,)], lambda k, gt, c: ref.lstm_cell(gt, c, 0.4, 0.3, train=False)),
                  Case(lambda k, gt, c: rnn.lstm_cell(gt, c, zoneout=0.5, noise=ref.U[k, :2]), [(8,), (2,)],
                       lambda k, gt, c: ref.lstm_cell(gt, c, 0.0, 0.5, ref.U[k]), shared=(1,))],
    "lstm_hidden": [Case(lambda k, gt, c: rnn.lstm_hidden(gt, c), [(8,), (2,)],
                         lambda k, gt, c: ref.lstm_hidden(gt, c)),
                    Case(lambda k, gt, c, h: rnn.lstm_hidden(gt, c, h, zoneout=0.5, noise=ref.U[k, :2]),
                         [(8,), (2,), (2,)], lambda k, gt, c, h: ref.lstm_hidden(gt, c, h, 0.5, ref.U[k])),
                    Case(lambda k, gt, c, h: ref.in_eval(lambda: rnn.lstm_hidden(gt, c, h, zoneout=0.3)),
                         [(8,), (2,), (2,)], lambda k, gt, c, h: ref.lstm_hidden(gt, c, h, 0.3, train=False),
                         shared=(2,))],
    "gru_hidden": [Case(lambda k, x, hp, h: rnn.gru_hidden(x, hp, h), [(6,), (6,), (2,)],
                        lambda k, x, hp, h: ref.gru_hidden(x, hp, h)),
                   Case(lambda k, x, hp, h: rnn.gru_hidden(x, hp, h, recurrent_dropout=0.4, zoneout=0.3,
                                                           noise=ref.U[k, :4]),
                        [(6,), (6,), (2,)], lambda k, x, hp, h: ref.gru_hidden(x, hp, h, 0.4, 0.3, ref.U[k])),
                   Case(lambda k, x, hp, h: ref.in_eval(lambda: rnn.gru_hidden(x, hp, h, zoneout=0.3)),
                        [(6,), (6,), (2,)], lambda k, x, hp, h: ref.gru_hidden(x, hp, h, 0.0, 0.3, train=False),
                        shared=(1, 2))],
    "rnn_hidden": [Case(lambda k, p: rnn.rnn_hidden(p), [(3,)], lambda k, p: ref.rnn_hidden(p)),
                   Case(lambda k, p, h: rnn.rnn_hidden(p, h, recurrent_dropout=0.4, zoneout=0.3, noise=ref.U[k, :6]),
                        [(3,), (3,)], lambda k, p, h: ref.rnn_hidden(p, h, 0.4, 0.3, ref.U[k])),
                   Case(lambda k, p, h: ref.in_eval(lambda: rnn.rnn_hidden(p, h, recurrent_dropout=0.4, zoneout=0.3)),
                        [(3,), (3,)], lambda k, p, h: ref.rnn_hidden(p, h, 0.4, 0.3, train=False), shared=(1,))],
    "pad_rows": [Case(lambda k, a, b: enc.pad_rows([a, b], 4), [(3,), (3,)],
                      lambda k, a, b: np.vstack([a, b, np.zeros((2, 3))])),
                 Case(lambda k, a, b: enc.pad_rows([a, b, a], 3), [(2,), (2,)], lambda k, a, b: np.vstack([a, b, a]),
                      shared=(1,))],
    "self_attention": [Case(lambda k, X, q, kk, v: enc.self_attention(X, q, kk, v, [3, 1, 4][k]),
                            [(4, 3), (2, 3), (2, 3), (3, 3)],
                            lambda k, *a: ref.self_attention(*a, [3, 1, 4][k]), shared=(1, 2, 3)),
                       Case(lambda k, X, q, kk, v: enc.self_attention(X, q, kk, v, [4, 2, 3][k], causal=True),
                            [(4, 3), (2, 3), (2, 3), (1, 3)],
                            lambda k, *a: ref.self_attention(*a, [4, 2, 3][k], causal=True), shared=(1, 2, 3))],
    "dilated_conv": [Case(lambda k, X, W, b: enc.dilated_conv(X, W, b, [5, 2, 4][k], dilation=2, activation="tanh"),
                          [(5, 2), (3, 6), (3,)],
                          lambda k, *a: ref.dilated_conv(*a, [5, 2, 4][k], dilation=2, act="tanh"), shared=(1, 2)),
                     Case(lambda k, X, W, b: enc.dilated_conv(X, W, b, [3, 5, 1][k], causal=True, residual=True),
                          [(5, 3), (3, 6), (3,)],
                          lambda k, *a: ref.dilated_conv(*a, [3, 5, 1][k], causal=True, residual=True),
                          shared=(1, 2)),
                     Case(lambda k, X, W, b: enc.dilated_conv(X, W, b, [4, 2, 3][k], dilation=3, causal=True),
                          [(4, 2), (3, 6), (3,)],  # the first tap (offset -6) reaches past the whole matrix
                          lambda k, *a: ref.dilated_conv(*a, [4, 2, 3][k], dilation=3, causal=True),
                          shared=(1, 2))],
    # ---- issue 4: binary Tree-LSTM cells, gates [i o u] (leaf) or [i o u f_l f_r] (internal node), H = 2 ----
    "tree_lstm_cell": [Case(lambda k, gt: ab.tree.tree_lstm_cell(gt), [(6,)],
                            lambda k, gt: expit(gt[:2]) * np.tanh(gt[4:6])),
                       Case(lambda k, gt, cl, cr: ab.tree.tree_lstm_cell(gt, cl, cr), [(10,), (2,), (2,)],
                            lambda k, gt, cl, cr: expit(gt[:2]) * np.tanh(gt[4:6]) + expit(gt[6:8]) * cl
                            + expit(gt[8:]) * cr),
                       Case(lambda k, gt, cl, cr: ab.tree.tree_lstm_cell(gt, cl, cr), [(10,), (2,), (2,)],
                            lambda k, gt, cl, cr: expit(gt[:2]) * np.tanh(gt[4:6]) + expit(gt[6:8]) * cl
                            + expit(gt[8:]) * cr, shared=(1,))],
    "tree_lstm_hidden": [Case(lambda k, gt, c: ab.tree.tree_lstm_hidden(gt, c), [(6,), (2,)],
                              lambda k, gt, c: expit(gt[2:4]) * np.tanh(c)),
                         Case(lambda k, gt, c: ab.tree.tree_lstm_hidden(gt, c), [(10,), (2,)],
                              lambda k, gt, c: expit(gt[2:4]) * np.tanh(c), shared=(0,))],
}

N_EXAMPLES = 3


def _rows_of(x, n):
    """A sequence of n distinct rows made from x."""
    return ab.sequence([x * (0.5 + 0.25 * t) for t in range(n)])


def _rows_np(x, n):
    return np.stack([x * (0.5 + 0.25 * t) for t in range(n)])


def _scan(X, Wh, h0=None, c0=None, reverse=False, dirs=None):
    g = ab.current_graph()
    ids = [ab.ops._node(g, v) for v in (X, Wh, h0, c0) if v is not None]
    return ab.Expression(g, g.add(REGISTRY["lstm_scan"], tuple(ids), (("dirs", dirs or (reverse,)),)))


# Trees in post-order, per node (left, right, height, leaf number): one leaf; a pair; ((a b) c) and (a (b c)) mixed.
_TREES = [np.array([[-1, -1, 0, 0]]),
          np.array([[-1, -1, 0, 0], [-1, -1, 0, 1], [0, 1, 1, -1]]),
          np.array([[-1, -1, 0, 0], [-1, -1, 0, 1], [0, 1, 1, -1], [-1, -1, 0, 2], [2, 3, 2, -1]])]


def _tree_scan(X, shape, W, bx, U, b):
    g = ab.current_graph()
    ids = tuple(ab.ops._node(g, v) for v in (X, W, bx, U, b))
    return ab.Expression(g, g.add(REGISTRY["tree_lstm_scan"], ids, (), shape, rows=len(shape)))


def _tree_ref(X, shape, W, bx, U, b):
    """Each node's h in post-order, node by node, with the Tree-LSTM equations written out."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    H = U.shape[1] // 2
    hs, cs = [], []
    for left, right, _, leaf in shape:
        if left < 0:
            a = W @ X[leaf] + bx
            c = sig(a[:H]) * np.tanh(a[2 * H:])
        else:
            a = U @ np.concatenate([hs[left], hs[right]]) + b
            c = sig(a[:H]) * np.tanh(a[2 * H:3 * H]) + sig(a[3 * H:4 * H]) * cs[left] + sig(a[4 * H:]) * cs[right]
        hs.append(sig(a[H:2 * H]) * np.tanh(c))
        cs.append(c)
    return np.stack(hs)


def _rnn_scan(X, Wh, h0=None, dirs=(False,)):
    g = ab.current_graph()
    ids = tuple(ab.ops._node(g, v) for v in (X, Wh, h0) if v is not None)
    return ab.Expression(g, g.add(REGISTRY["rnn_scan"], ids, (("dirs", dirs),)))


def _rnn_ref(X, Wh, h0=None):
    h, out = (np.zeros(Wh.shape[1]) if h0 is None else h0), []
    for x in X:
        h = np.tanh(x + Wh @ h)
        out.append(h)
    return np.stack(out)


def _bidirectional_ref(X, Wh, h0, c0):
    f = _scan_ref(X[:, :8], Wh[:8], h0[:2], c0[:2])
    b = _scan_ref(X[::-1, 8:], Wh[8:], h0[2:], c0[2:])[::-1]
    return np.concatenate([f, b], axis=1)


def _scan_ref(X, Wh, h0=None, c0=None):
    """The LSTM recurrence over rows of gate inputs X (4H each), step by step with the cell references."""
    H = Wh.shape[1]
    h = np.zeros(H) if h0 is None else h0
    c = np.zeros(H) if c0 is None else c0
    out = []
    for x in X:
        gates = x + Wh @ h
        c = ref.lstm_cell(gates, c)
        h = ref.lstm_hidden(gates, c)
        out.append(h)
    return np.stack(out)


def _tables(pc, case, rng):
    """Per input, either a shared Parameter or a lookup table whose row k is example k's value."""
    tables = []
    for j, shape in enumerate(case.shapes):
        if j in case.shared:
            tables.append(pc.add_parameters(shape, init=case.init(rng, shape)))
        else:
            full = (N_EXAMPLES,) + tuple(shape) if shape else (N_EXAMPLES, 1)
            tables.append(pc.add_lookup_parameters(full, init=case.init(rng, full)))
    return tables


def _inputs(case, tables, k):
    out = []
    for j, t in enumerate(tables):
        if j in case.shared:
            out.append(t)
        else:
            row = t[k]
            out.append(ab.reshape(row, ()) if case.shapes[j] == () else row)
    return out


def _arrays(case, tables, k):
    return [t.value() if j in case.shared else t.value()[k].reshape(case.shapes[j]) for j, t in enumerate(tables)]


def _weighted(o, w):
    if o.is_sequence:  # a sequence is weighted row by row, by a sequence of the same length
        return ab.sum_elems(o * ab.sequence([ab.input_tensor(row) for row in w]))
    return ab.sum_elems(o * ab.input_tensor(w)) if o.shape else o * float(w)


def _loss(case, tables, weights, strategy):
    ab.renew_cg(strategy=strategy)
    outs = [case.build(k, *_inputs(case, tables, k)) for k in range(N_EXAMPLES)]
    loss = ab.esum([_weighted(o, w) for o, w in zip(outs, weights)])
    return outs, loss


def _all_cases():
    return [pytest.param(name, i, id=f"{name}-{i}") for name, cases in CASES.items() for i in range(len(cases))]


def test_every_primitive_has_cases():
    missing = set(REGISTRY) - LEAVES - set(CASES)
    assert not missing, f"primitives without reference/gradient cases: {sorted(missing)}"


@pytest.mark.parametrize("name,i", _all_cases())
def test_forward_matches_numpy(name, i, pc64, xp_backend):
    case, rng = CASES[name][i], np.random.default_rng(i)
    tables = _tables(pc64, case, rng)
    for strategy in ("off", "agenda"):
        ab.renew_cg(strategy=strategy)
        outs = [case.build(k, *_inputs(case, tables, k)) for k in range(N_EXAMPLES)]
        for k, o in enumerate(outs):
            assert outs[k].g.n_sig[o.i].prim.name == name or name in ("sum_elems",)
            np.testing.assert_allclose(o.value(), case.ref(k, *_arrays(case, tables, k)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,i", _all_cases())
def test_vjp_matches_central_differences(name, i, pc64, xp_backend):
    case, rng = CASES[name][i], np.random.default_rng(100 + i)
    tables = _tables(pc64, case, rng)
    ab.renew_cg()
    shapes = [o.shape for o in [case.build(k, *_inputs(case, tables, k)) for k in range(N_EXAMPLES)]]
    weights = [rng.normal(size=s) if s else rng.normal() for s in shapes]
    grads = {}
    for strategy in ("off", "agenda"):
        pc64.zero_grad()
        _, loss = _loss(case, tables, weights, strategy)
        loss.backward()
        grads[strategy] = [t.grad for t in tables]
    for g_off, g_agenda in zip(grads["off"], grads["agenda"]):
        np.testing.assert_allclose(g_agenda, g_off, rtol=1e-10, atol=1e-12)
    # Central difference along one random direction (HIPS autograd's check).
    direction = [rng.normal(size=t.shape) for t in tables]
    base = [t.value() for t in tables]
    eps = 1e-6

    def loss_at(step):
        for t, b, d in zip(tables, base, direction):
            t.set_value(b + step * d)
        return _loss(case, tables, weights, "agenda")[1].value()

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    loss_at(0.0)
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads["agenda"], direction))
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_leaves(pc64, xp_backend):
    W = pc64.add_parameters((2, 3), init=np.arange(6.0).reshape(2, 3))
    ab.renew_cg()
    x = ab.input_tensor([[1, 2, 3], [4, 5, 6]])
    z = ab.zeros((2, 3))
    assert x.dtype == np.float64 and z.dtype == np.float64
    np.testing.assert_array_equal((x + z + W).value(), np.arange(6.0).reshape(2, 3) + [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(ab.parameter(W).value(), W.value())
