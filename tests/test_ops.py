"""Registry-driven op tests: every primitive has a NumPy reference and a float64 gradient check, run batched
(several examples, per-example and shared inputs) and node by node. A primitive added to the registry
without an entry in CASES fails ``test_every_primitive_has_cases``."""
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from scipy.special import expit, log_softmax as np_log_softmax, logsumexp, softmax as np_softmax

import autobatch as ab
import cell_references as ref
from autobatch import encoders as enc, rnn
from autobatch.graph import keeps_int
from autobatch.registry import REGISTRY
from autobatch.kernels import backend, big_softmax

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
                unary(ab.softmax, lambda x: np_softmax(x, -1), shape=(2, 4)),
                unary(ab.softmax, np.ones_like, shape=()),  # of a scalar: 1 (DyNet's), never over the batch
                Case(lambda k, x: ab.softmax(_rows_of(x, k + 1)), [()], lambda k, x: np.ones(k + 1))],
    "log_softmax": [unary(ab.log_softmax, lambda x: np_log_softmax(x, -1), shape=(5,)),
                    unary(ab.log_softmax, np.zeros_like, shape=())],
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
    "lstm_ln_scan": [Case(lambda k, x, Wh, ah: _scan(_rows_of(x, k + 2), Wh, ah=ah), [(8,), (8, 2), (8,)],
                          lambda k, x, Wh, ah: _scan_ref(_rows_np(x, k + 2), Wh, ah=ah), shared=(1, 2)),
                     Case(lambda k, x, Wh, ah, h0, c0: _scan(_rows_of(x, k + 1), Wh, h0, c0, reverse=True, ah=ah),
                          [(8,), (8, 2), (8,), (2,), (2,)],  # initial states per example
                          lambda k, x, Wh, ah, h0, c0: _scan_ref(_rows_np(x, k + 1)[::-1], Wh, h0, c0, ah)[::-1],
                          shared=(1, 2))],
    "rnn_scan": [Case(lambda k, x, Wh: _rnn_scan(_rows_of(x, k + 2), Wh, dirs=(False,)), [(3,), (3, 3)],
                      lambda k, x, Wh: _rnn_ref(_rows_np(x, k + 2), Wh), shared=(1,)),
                 Case(lambda k, x, Wh, h0: _rnn_scan(_rows_of(x, k + 1), Wh, h0, dirs=(False, True)),
                      [(6,), (6, 3), (6,)], lambda k, x, Wh, h0: np.concatenate(
                          [_rnn_ref(_rows_np(x, k + 1)[:, :3], Wh[:3], h0[:3]),
                           _rnn_ref(_rows_np(x, k + 1)[::-1, 3:], Wh[3:], h0[3:])[::-1]], axis=1), shared=(1,))],
    "gru_scan": [Case(lambda k, x, Wh, bh: _gru_scan(_rows_of(x, k + 2), Wh, bh), [(6,), (6, 2), (6,)],
                      lambda k, x, Wh, bh: _gru_ref(_rows_np(x, k + 2), Wh, bh), shared=(1, 2)),
                 Case(lambda k, x, Wh, bh, h0: _gru_scan(_rows_of(x, k + 1), Wh, bh, h0, dirs=(False, True)),
                      [(12,), (12, 2), (12,), (4,)],  # initial states per example
                      lambda k, x, Wh, bh, h0: _gru_ref(_rows_np(x, k + 1), Wh, bh, h0, (False, True)),
                      shared=(1, 2)),
                 Case(lambda k, x, Wh, bh, h0: _gru_scan(_rows_of(x, k + 1), Wh, bh, h0, dirs=(True, False)),
                      [(12,), (12, 2), (12,), (4,)],
                      lambda k, x, Wh, bh, h0: _gru_ref(_rows_np(x, k + 1), Wh, bh, h0, (True, False)),
                      shared=(1, 2, 3))],
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
                  Case(lambda k, a, b: ab.dot(a, b), [(4,), (4,)], lambda k, a, b: a @ b),
                  unary(ab.sum_elems, np.sum, shape=()),
                  Case(lambda k, x: ab.mean_elems(_rows_of(x, k + 2)), [(3,)],  # over every row of a sequence
                       lambda k, x: _rows_np(x, k + 2).mean())],
    # ---- issue 3: layer norm, dropout, fused cells (masks from fixed uniforms ref.U), sentence encoders ----
    "layer_norm": [Case(lambda k, x, g, b: ab.layer_norm(x, g, b), [(5,)] * 3, lambda k, *a: ref.layer_norm(*a),
                        shared=(1, 2)),
                   Case(lambda k, x, g, b: ab.layer_norm(x, g, b), [(5,)] * 3, lambda k, *a: ref.layer_norm(*a)),
                   Case(lambda k, x, g, b: ab.layer_norm(x, g, b), [(5,)] * 3, lambda k, *a: ref.layer_norm(*a),
                        shared=(0, 1))],
    "dropout": [Case(lambda k, x: ab.dropout(x, 0.4, noise=ref.U[k, :6]), [(6,)],
                     lambda k, x: x * ref.keep(ref.U[k, :6], 0.4)),
                Case(lambda k, W: ab.dropout(W, 0.3, noise=ref.U[k, :6].reshape(2, 3)), [(2, 3)],
                     lambda k, W: W * ref.keep(ref.U[k, :6].reshape(2, 3), 0.3), shared=(0,)),
                Case(lambda k, x: ab.dropout(x, 0.5, noise=ref.U[k, 0]), [()],
                     lambda k, x: x * ref.keep(ref.U[k, 0], 0.5)),
                # a sequence of k + 2 rows: a mask per row, sequences of several lengths in one batch
                Case(lambda k, x: ab.dropout(_rows_of(x, k + 2), 0.4, noise=ref.U[k, :3 * k + 6].reshape(k + 2, 3)),
                     [(3,)], lambda k, x: _rows_np(x, k + 2) * ref.keep(ref.U[k, :3 * k + 6].reshape(k + 2, 3), 0.4))],
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
    # ---- issue 10: parts, stacks, reductions, more elementwise ops; issue 11: attention over sequences ----
    # Example k takes a different part (or a sequence of k + 2 rows), so different parts share each batch.
    "ones": [Case(lambda k: ab.ones((2, 3)), [], lambda k: np.ones((2, 3)))],
    "take": [Case(lambda k, x: x[k:k + 2], [(4,)], lambda k, x: x[k:k + 2]),
             Case(lambda k, x: ab.select_rows(x, [[2, 0], [1, 1], [0, 2]][k]), [(3, 2)],
                  lambda k, x: x[[[2, 0], [1, 1], [0, 2]][k]]),
             Case(lambda k, x: ab.select_cols(x, [[2, 0], [1, 1], [0, 2]][k]), [(2, 3)],
                  lambda k, x: x[:, [[2, 0], [1, 1], [0, 2]][k]]),
             Case(lambda k, x: ab.pick_range(x, k, k + 1, d=1), [(2, 3)], lambda k, x: x[:, k:k + 1]),
             Case(lambda k, W: ab.pick_range(W, k, k + 2), [(4, 2)], lambda k, W: W[k:k + 2], shared=(0,)),
             Case(lambda k, x: ab.pick_range(_rows_of(x, k + 2), k, k + 2, d=1), [(4,)],
                  lambda k, x: _rows_np(x, k + 2)[:, k:k + 2]),
             Case(lambda k, x: ab.select_cols(_rows_of(x, k + 1), [[2, 0], [1, 1], [0, 2]][k]), [(3,)],
                  lambda k, x: _rows_np(x, k + 1)[:, [[2, 0], [1, 1], [0, 2]][k]])],
    "take_rows": [Case(lambda k, x: _rows_of(x, k + 3)[1:], [(3,)], lambda k, x: _rows_np(x, k + 3)[1:]),
                  Case(lambda k, x: ab.select_rows(_rows_of(x, k + 2), [k + 1, 0, k + 1]), [(2,)],
                       lambda k, x: _rows_np(x, k + 2)[[k + 1, 0, k + 1]])],
    "stack": [Case(lambda k, a, b: ab.stack([a, b]), [(3,), (3,)], lambda k, a, b: np.stack([a, b])),
              Case(lambda k, a, b: ab.stack([a, b, a], axis=1), [(2, 3), (2, 3)],
                   lambda k, a, b: np.stack([a, b, a], axis=1), shared=(1,)),
              Case(lambda k, a, b: ab.concat([a, b, a]), [(), ()], lambda k, a, b: np.array([a, b, a]))],
    "max": [unary(ab.max, np.max), Case(lambda k, x: ab.max(x, axis=1), [(3, 4)], lambda k, x: x.max(1)),
            Case(lambda k, x: ab.max(x, axis=-2), [(3, 4)], lambda k, x: x.max(0)),
            Case(lambda k, x: ab.max(_rows_of(x, k + 2), axis=1), [(3,)], lambda k, x: _rows_np(x, k + 2).max(1))],
    "min": [unary(ab.min, np.min), Case(lambda k, x: ab.min(x, axis=0), [(3, 4)], lambda k, x: x.min(0))],
    "logsumexp": [unary(ab.logsumexp, logsumexp),
                  Case(lambda k, x: ab.logsumexp(x, axis=1), [(3, 4)], lambda k, x: logsumexp(x, 1)),
                  Case(lambda k, a, b, c: ab.logsumexp([a, b, c]), [(2,)] * 3,
                       lambda k, a, b, c: logsumexp(np.stack([a, b, c]), 0)),
                  Case(lambda k, x: ab.logsumexp(_rows_of(x, k + 2), axis=1), [(3,)],
                       lambda k, x: logsumexp(_rows_np(x, k + 2), 1))],
    "max_over_rows": [Case(lambda k, x: ab.max(_rows_of(x, k + 2), axis=0), [(3,)],
                           lambda k, x: _rows_np(x, k + 2).max(0), init=_away_from_zero),
                      Case(lambda k, x: ab.max(_rows_of(x, k + 2)), [(3,)], lambda k, x: _rows_np(x, k + 2).max(),
                           init=_away_from_zero),
                      Case(lambda k, x: ab.max(ab.sequence([x[t] for t in range(k + 2)])), [(4,)],
                           lambda k, x: x[:k + 2].max())],
    "min_over_rows": [Case(lambda k, x: ab.min(_rows_of(x, k + 2), axis=0), [(3,)],
                           lambda k, x: _rows_np(x, k + 2).min(0), init=_away_from_zero)],
    "logsumexp_over_rows": [Case(lambda k, x: ab.logsumexp(_rows_of(x, k + 2), axis=0), [(3,)],
                                 lambda k, x: logsumexp(_rows_np(x, k + 2), 0)),
                            Case(lambda k, x: ab.logsumexp(_rows_of(x, k + 2)), [(3,)],
                                 lambda k, x: logsumexp(_rows_np(x, k + 2)))],
    # The one-hot is piecewise constant: no gradient; straight_through is checked in tests/test_select.py.
    "argmax": [unary(ab.argmax, lambda x: np.eye(5)[x.argmax()], shape=(5,))],
    "abs": [unary(ab.abs, np.abs, init=_away_from_zero)],
    "pow_const": [Case(lambda k, x: x ** 3, [(3,)], lambda k, x: x ** 3),
                  Case(lambda k, x: ab.pow(x, 0.5), [(2, 2)], lambda k, x: x ** 0.5, init=_positive)],
    "pow": [Case(lambda k, x, p: ab.pow(x, p), [(3,), (3,)], lambda k, x, p: x ** p, init=_positive),
            Case(lambda k, x, p: x ** p, [(3,), ()], lambda k, x, p: x ** p, init=_positive),
            Case(lambda k, x, p: x ** p, [(3,), (1,)], lambda k, x, p: x ** p, init=_positive, shared=(1,)),
            Case(lambda k, x: 2.0 ** x, [(3,)], lambda k, x: 2.0 ** x)],
    "sin": [unary(ab.sin, np.sin)],
    "cos": [unary(ab.cos, np.cos)],
    "tan": [unary(ab.tan, np.tan, init=lambda rng, shape: rng.uniform(-1, 1, size=shape))],
    "dot_rows": [Case(lambda k, x, q: ab.dot_rows(_rows_of(x, k + 2), q), [(3,), (3,)],
                      lambda k, x, q: _rows_np(x, k + 2) @ q),
                 Case(lambda k, x, q: ab.dot_rows(_rows_of(x, k + 2), q), [(3,), (3,)],
                      lambda k, x, q: _rows_np(x, k + 2) @ q, shared=(1,))],
    "softmax_rows": [Case(lambda k, x: ab.softmax_rows(ab.sequence([x[t] for t in range(k + 2)])), [(4,)],
                          lambda k, x: np_softmax(x[:k + 2])),
                     Case(lambda k, x: ab.softmax_rows(_rows_of(x, k + 2)), [(3,)],
                          lambda k, x: np_softmax(_rows_np(x, k + 2), 0))],
    "weighted_sum_rows": [Case(lambda k, x, w: ab.weighted_sum_rows(_rows_of(x, k + 2),
                                                                    ab.sequence([w[t] for t in range(k + 2)])),
                               [(3,), (4,)], lambda k, x, w: w[:k + 2] @ _rows_np(x, k + 2))],
    # DyNet compatibility (autobatch.dynet): per-row twins on sequences (DyNet minibatches), DyNet's layouts.
    "transpose_rows": [Case(lambda k, x: _dy("transpose_rows", _rows_of(x, k + 2)), [(2, 3)],
                            lambda k, x: _rows_np(x, k + 2).transpose(0, 2, 1)),
                       unary(lambda x: _dy("transpose_rows", x), lambda x: x.T, shape=(2, 3))],
    "pick_rows": [Case(lambda k, x: _dy("pick_rows", _rows_of(x, 3), aux=np.array([2, 0, k])), [(3,)],
                       lambda k, x: _rows_np(x, 3)[[0, 1, 2], [2, 0, k]])],
    "sum_elems_rows": [Case(lambda k, x: _dy("sum_elems_rows", _rows_of(x, k + 2)), [(2, 3)],
                            lambda k, x: _rows_np(x, k + 2).sum(axis=(1, 2)))],
    "dy_select": [Case(lambda k, x: _dy("dy_select", x, (("index", (("slice", 0, 2, 1), ("take", (2, 0, 2)))),)),
                       [(3, 4)], lambda k, x: x[0:2][:, [2, 0, 2]]),
                  Case(lambda k, x: _dy("dy_select", x, (("index", (1, ("slice", 3, None, -2))),)), [(3, 4)],
                       lambda k, x: x[1, 3::-2]),
                  Case(lambda k, x: _dy("dy_select", _rows_of(x, k + 1), (("index", (("take", (1,)),)),)), [(3,)],
                       lambda k, x: _rows_np(x, k + 1)[:, [1]])],
    "dy_reshape": [Case(lambda k, x: _dy("dy_reshape", x, (("shape", (3, 2)),)), [(2, 3)],
                        lambda k, x: x.reshape((3, 2), order="F")),
                   Case(lambda k, x: _dy("dy_reshape", _rows_of(x, k + 1), (("shape", (6,)),)), [(2, 3)],
                        lambda k, x: np.stack([r.reshape(-1, order="F") for r in _rows_np(x, k + 1)]))],
    "dy_sum_rows": [Case(lambda k, x: _dy("dy_sum_rows", _rows_of(x, k + 2)), [(2, 3)],
                         lambda k, x: _rows_np(x, k + 2).sum(0))],
    # Only lambd = 1 is a true gradient; 0 and -1 (nobackprop, flip_gradient) are checked in tests/test_dynet.py.
    "dy_scale_gradient": [Case(lambda k, x: _dy("dy_scale_gradient", x, (("lambd", 1.0),)), [(3,)], lambda k, x: x),
                          Case(lambda k, x: _dy("dy_scale_gradient", _rows_of(x, 2), (("lambd", 1.0),)), [(3,)],
                               lambda k, x: _rows_np(x, 2))],
    "dy_input": [Case(lambda k: _dy_input(np.arange(6.0).reshape(2, 3) * k), [],
                      lambda k: np.arange(6.0).reshape(2, 3) * k)],
    "dy_conv2d": [Case(lambda k, x, f: _dy2("dy_conv2d", x, f, (("stride", (2, 1)), ("valid", False))),
                       [(5, 4, 2), (3, 2, 2, 3)], lambda k, x, f: _conv_ref(x, f, (2, 1), False), shared=(1,)),
                  Case(lambda k, x, f: _dy2("dy_conv2d", x, f, (("stride", (1, 2)), ("valid", True))),
                       [(4, 5, 2), (2, 2, 2, 3)], lambda k, x, f: _conv_ref(x, f, (1, 2), True))],
    "lstm_cell_rows": [Case(lambda k, gt, c: _dy2("lstm_cell_rows", _rows_of(gt, k + 2), _rows_of(c, k + 2), ()),
                            [(8,), (2,)], lambda k, gt, c: np.stack([ref.lstm_cell(a, b) for a, b in
                                                                     zip(_rows_np(gt, k + 2), _rows_np(c, k + 2))])),
                       Case(lambda k, gt, c: _dy2("lstm_cell_rows", gt, c, ()), [(8,), (2,)],
                            lambda k, gt, c: ref.lstm_cell(gt, c), shared=(1,))],
    "lstm_hidden_rows": [Case(lambda k, gt, c: _dy2("lstm_hidden_rows", _rows_of(gt, k + 2), _rows_of(c, k + 2), ()),
                              [(8,), (2,)], lambda k, gt, c: np.stack([ref.lstm_hidden(a, b) for a, b in
                                                                       zip(_rows_np(gt, k + 2), _rows_np(c, k + 2))]))],
    "dy_maxpool2d": [Case(lambda k, x: _dy("dy_maxpool2d", x, (("ksize", (2, 2)), ("stride", (2, 1)),
                                                               ("valid", False))),
                          [(5, 4, 2)], lambda k, x: _pool_ref(x, (2, 2), (2, 1), False))],
    # ---- issue 13: output layers for large vocabularies (word classes, tail clusters, a shared sample) ----
    "class_softmax_nll": [Case(lambda k, x, *p: _layer("class_softmax_nll", _rows_of(x, k + 2), p, _CLASS_ATTRS,
                                                       _CLASSES.rank[_TARGETS[k][:k + 2]]),
                               [(3,), (3, 3), (3,), (6, 3), (6,)],
                               lambda k, x, *p: -_pick_rows(_class_ref(_rows_np(x, k + 2), *p), _TARGETS[k][:k + 2]),
                               shared=(1, 2, 3, 4)),
                          Case(lambda k, x, *p: _layer("class_softmax_nll", x, p, _CLASS_ATTRS,
                                                       int(_CLASSES.rank[_TARGETS[k][0]])),
                               [(3,), (3, 3), (3,), (6, 3), (6,)],
                               lambda k, x, *p: -_class_ref(x[None], *p)[0, _TARGETS[k][0]], shared=(1, 2, 3, 4))],
    "class_softmax_log_probs": [Case(lambda k, x, *p: _layer("class_softmax_log_probs", _rows_of(x, k + 1), p,
                                                             _CLASS_ATTRS),
                                     [(3,), (3, 3), (3,), (6, 3), (6,)],
                                     lambda k, x, *p: _class_ref(_rows_np(x, k + 1), *p), shared=(1, 2, 3, 4))],
    "adaptive_softmax_nll": [Case(lambda k, x, *p: _layer("adaptive_softmax_nll", _rows_of(x, k + 2), p,
                                                          _adaptive_attrs(True), _TARGETS[k][:k + 2]),
                                  [(4,), (5, 4), (5,), (2, 4), (2, 2), (1, 4), (2, 1)],
                                  lambda k, x, *p: -_pick_rows(_adaptive_ref(_rows_np(x, k + 2), True, *p),
                                                               _TARGETS[k][:k + 2]), shared=(1, 2, 3, 4, 5, 6)),
                             Case(lambda k, x, *p: _layer("adaptive_softmax_nll", x, p, _adaptive_attrs(False),
                                                          int(_TARGETS[k][1])),
                                  [(4,), (5, 4), (2, 4), (2, 2), (1, 4), (2, 1)],
                                  lambda k, x, *p: -_adaptive_ref(x[None], False, *p)[0, _TARGETS[k][1]],
                                  shared=(1, 2, 3, 4, 5))],
    "adaptive_softmax_log_probs": [Case(lambda k, x, *p: _layer("adaptive_softmax_log_probs", _rows_of(x, k + 1), p,
                                                                _adaptive_attrs(True)),
                                        [(4,), (5, 4), (5,), (2, 4), (2, 2), (1, 4), (2, 1)],
                                        lambda k, x, *p: _adaptive_ref(_rows_np(x, k + 1), True, *p),
                                        shared=(1, 2, 3, 4, 5, 6))],
    # The gradient checked is the sampled objective's given the sample (one fixed sample, shared by the graph).
    "sampled_softmax_nll": [Case(lambda k, x, W, b: _layer("sampled_softmax_nll", _rows_of(x, k + 2), (W, b), (),
                                                           (_TARGETS[k][:k + 2], _sample())),
                                 [(3,), (6, 3), (6,)],
                                 lambda k, x, W, b: _sampled_ref(_rows_np(x, k + 2), W, b, _TARGETS[k][:k + 2]),
                                 shared=(1, 2)),
                            Case(lambda k, x, W, b: _layer("sampled_softmax_nll", x, (W, b), (),
                                                           (_TARGETS[k][2:3], _sample())),
                                 [(3,), (6, 3), (6,)],
                                 lambda k, x, W, b: _sampled_ref(x[None], W, b, _TARGETS[k][2:3])[0], shared=(1, 2))],
}

N_EXAMPLES = 3


def _rows_of(x, n):
    """A sequence of n distinct rows made from x."""
    return ab.sequence([x * (0.5 + 0.25 * t) for t in range(n)])


def _rows_np(x, n):
    return np.stack([x * (0.5 + 0.25 * t) for t in range(n)])


def _dy(name, x, attrs=(), aux=None):
    """A node of the DyNet-compatibility primitive ``name`` over ``x`` (built the way autobatch.dynet does)."""
    g = ab.current_graph()
    return ab.Expression(g, g.add(REGISTRY[name], (ab.ops._node(g, x),), attrs, aux))


def _dy2(name, x, f, attrs):
    g = ab.current_graph()
    return ab.Expression(g, g.add(REGISTRY[name], (ab.ops._node(g, x), ab.ops._node(g, f)), attrs))


def _same_pad(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _padded(x, kh, kw, stride, valid, fill):
    if valid:
        return x, (x.shape[0] - kh) // stride[0] + 1, (x.shape[1] - kw) // stride[1] + 1
    oh, t, b = _same_pad(x.shape[0], kh, stride[0])
    ow, l, r = _same_pad(x.shape[1], kw, stride[1])
    return np.pad(x, ((t, b), (l, r), (0, 0)), constant_values=fill), oh, ow


def _conv_ref(x, f, stride, valid):
    """Convolution written out window by window (TensorFlow's SAME padding for valid=False)."""
    kh, kw = f.shape[:2]
    p, oh, ow = _padded(x, kh, kw, stride, valid, 0.0)
    out = np.zeros((oh, ow, f.shape[3]))
    for i in range(oh):
        for j in range(ow):
            win = p[i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
            out[i, j] = np.tensordot(win, f, axes=3)
    return out


def _pool_ref(x, ksize, stride, valid):
    p, oh, ow = _padded(x, ksize[0], ksize[1], stride, valid, -np.inf)
    return np.array([[p[i * stride[0]:i * stride[0] + ksize[0], j * stride[1]:j * stride[1] + ksize[1]].max((0, 1))
                      for j in range(ow)] for i in range(oh)])


def _dy_input(value):
    from autobatch.dynet.expression import constant_node

    g = ab.current_graph()
    return ab.Expression(g, constant_node(g, value))


def _scan(X, Wh, h0=None, c0=None, reverse=False, dirs=None, ah=None):
    g = ab.current_graph()
    ids = [ab.ops._node(g, v) for v in (X, Wh, ah, h0, c0) if v is not None]
    attrs = (("dirs", dirs or (reverse,)),)
    if ah is not None:  # the layer-norm LSTM's scan: gates = x + ah * LN(W_h h)
        return ab.Expression(g, g.add(REGISTRY["lstm_ln_scan"], tuple(ids), attrs + (("eps", 1e-5),)))
    return ab.Expression(g, g.add(REGISTRY["lstm_scan"], tuple(ids), attrs))


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


def _gru_scan(X, Wh, bh, h0=None, dirs=(False,)):
    g = ab.current_graph()
    ids = tuple(ab.ops._node(g, v) for v in (X, Wh, bh, h0) if v is not None)
    return ab.Expression(g, g.add(REGISTRY["gru_scan"], ids, (("dirs", dirs),)))


def _gru_ref(X, Wh, bh, h0=None, dirs=(False,)):
    """Each direction's GRU step by step with the cell reference, directions side by side."""
    H, outs = Wh.shape[1], []
    for d, reverse in enumerate(dirs):
        h, hs = (np.zeros(H) if h0 is None else h0[d * H:(d + 1) * H]), []
        W, b = Wh[d * 3 * H:(d + 1) * 3 * H], bh[d * 3 * H:(d + 1) * 3 * H]
        for x in (X[::-1] if reverse else X)[:, d * 3 * H:(d + 1) * 3 * H]:
            h = ref.gru_hidden(x, W @ h + b, h)
            hs.append(h)
        outs.append(np.stack(hs[::-1] if reverse else hs))
    return np.concatenate(outs, axis=1)


def _bidirectional_ref(X, Wh, h0, c0):
    f = _scan_ref(X[:, :8], Wh[:8], h0[:2], c0[:2])
    b = _scan_ref(X[::-1, 8:], Wh[8:], h0[2:], c0[2:])[::-1]
    return np.concatenate([f, b], axis=1)


def _scan_ref(X, Wh, h0=None, c0=None, ah=None):
    """The LSTM recurrence over rows of gate inputs X (4H each), step by step with the cell references; with
    ``ah`` the recurrent product is layer-normalised (gain ah, no bias)."""
    H = Wh.shape[1]
    h = np.zeros(H) if h0 is None else h0
    c = np.zeros(H) if c0 is None else c0
    out = []
    for x in X:
        r = Wh @ h
        if ah is not None:
            r = ah * (r - r.mean()) / np.sqrt(r.var() + 1e-5)
        gates = x + r
        c = ref.lstm_cell(gates, c)
        h = ref.lstm_hidden(gates, c)
        out.append(h)
    return np.stack(out)


# ---- issue 13: output layers. Six words in classes [1 0 2 1 0 1] (class 2 a singleton; the stored order is not
# the id order); adaptive cut-offs 3, 5 over seven words; a sample of four words with hand-set corrections.
_CLASSES = big_softmax.Classes(np.array([1, 0, 2, 1, 0, 1]))
_CLASS_ATTRS = (("classes", _CLASSES),)
_TARGETS = np.array([[0, 4, 2, 5], [5, 1, 3, 4], [2, 5, 0, 3]])  # example k's row targets: head and both tails
_SAMPLES = {}


def _layer(name, x, params, attrs=(), aux=None):
    """A node of the output-layer primitive ``name`` over state(s) ``x`` and ``params`` (as autobatch.output_layers
    builds it)."""
    g = ab.current_graph()
    ids = (ab.ops._node(g, x),) + tuple(ab.ops._node(g, p) for p in params)
    return ab.Expression(g, g.add(REGISTRY[name], ids, attrs, aux))


def _pick_rows(lp, targets):
    return lp[np.arange(len(lp)), targets]


def _class_ref(X, Wc, bc, W, b):
    """log p(w) for every word, word by word: class log-softmax plus the log-softmax over the class's words (W's
    rows in the stored order)."""
    lpc = np_log_softmax(X @ Wc.T + bc, axis=1)
    classes = np.array([1, 0, 2, 1, 0, 1])
    out = np.empty((len(X), len(classes)))
    for w, c in enumerate(classes):
        members = np.flatnonzero(classes == c)
        rows = _CLASSES.rank[members]
        out[:, w] = lpc[:, c] + np_log_softmax(X @ W[rows].T + b[rows], axis=1)[:, list(members).index(w)]
    return out


def _adaptive_attrs(head_bias):
    return (("cutoffs", (3, 5, 7)), ("head_bias", head_bias))


def _adaptive_ref(X, head_bias, head, *p):
    """PyTorch's AdaptiveLogSoftmaxWithLoss.log_prob written out: head words, then each tail cluster."""
    bias, (P1, O1, P2, O2) = (p[0], p[1:]) if head_bias else (0.0, p)
    lph = np_log_softmax(X @ head.T + bias, axis=1)
    pairs = [(P1, O1), (P2, O2)]
    tails = [lph[:, 3 + i:4 + i] + np_log_softmax(X @ P.T @ O.T, axis=1) for i, (P, O) in enumerate(pairs)]
    return np.concatenate([lph[:, :3]] + tails, axis=1)


def _sample():
    """The sample: words 0, 2, 3, 5 (one per backend: its arrays live there)."""
    s = _SAMPLES.get(backend.name)
    if s is None:
        s = _SAMPLES[backend.name] = big_softmax.Sample([0, 2, 3, 5], backend.xp.asarray([-0.3, 0.2, 0.1, -1.0]))
    return s


def _sampled_ref(X, W, b, targets):
    """Per row: log(exp(s_t) + sum over sampled k != t of exp(s_k + corr_k)) - s_t."""
    out = []
    for x, t in zip(X, targets):
        s = W @ x + b
        z = [s[t]] + [s[k] + c for k, c in zip([0, 2, 3, 5], [-0.3, 0.2, 0.1, -1.0]) if k != t]
        out.append(logsumexp(z) - s[t])
    return np.array(out)


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
    for strategy in ("off", "depth", "agenda"):
        ab.renew_cg(strategy=strategy)
        outs = [case.build(k, *_inputs(case, tables, k)) for k in range(N_EXAMPLES)]
        ab.forward(*outs)  # one pass, so the examples' nodes run batched (value() alone runs only what it needs)
        for k, o in enumerate(outs):
            assert outs[k].g.n_sig[o.i].prim.name == name or name in ("sum_elems",)
            np.testing.assert_allclose(o.value(), case.ref(k, *_arrays(case, tables, k)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,i", _all_cases())
def test_vjp_matches_central_differences(name, i, pc64, xp_backend):
    case, rng = CASES[name][i], np.random.default_rng(100 + i)
    tables = _tables(pc64, case, rng)
    ab.renew_cg()
    shapes = [o.shape for o in [case.build(k, *_inputs(case, tables, k)) for k in range(N_EXAMPLES)]]
    _check_gradients(pc64, case, tables, shapes, rng, ("off", "agenda"))


def _check_gradients(pc, case, tables, shapes, rng, strategies):
    """Gradients of a random weighting of the outputs: equal under ``strategies``, and equal to a central
    difference of the loss along a random direction."""
    weights = [rng.normal(size=s) if s else rng.normal() for s in shapes]
    grads = {}
    for strategy in strategies:
        pc.zero_grad()
        _, loss = _loss(case, tables, weights, strategy)
        loss.backward()
        grads[strategy] = [t.grad for t in tables]
    for strategy in strategies[1:]:
        for g_off, g_batched in zip(grads[strategies[0]], grads[strategy]):
            np.testing.assert_allclose(g_batched, g_off, rtol=1e-10, atol=1e-12)
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
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads[strategies[-1]], direction))
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


# ---- every op on 0-d values ------------------------------------------------------------------------------------
# A batch of 0-d items is a 1-d array, so a kernel that reduces "the last axis" of its input reduces the batch
# (softmax of a scalar once gave softmax over the examples). Each case is run again with every per-example input
# 0-d: the op either refuses it where it is built (a clear error naming the user's line) or computes, batched,
# what it computes node by node, with gradients matching central differences.

ACCEPT_0D = {"tanh", "logistic", "relu", "exp", "log", "square", "sqrt", "scale_shift", "rdiv", "add", "sub", "mul",
             "div", "softmax", "log_softmax", "sum_elems", "esum", "sequence", "pick_row", "dropout"}


def _zero_d(case):
    """``case`` with its per-example inputs 0-d (shared ones keep their shapes); None if that changes nothing."""
    shapes = [s if j in case.shared else () for j, s in enumerate(case.shapes)]
    return None if shapes == list(case.shapes) else dataclasses.replace(case, shapes=shapes)


def _build_zero_d(pc, case, rng):
    """The tables and output shapes of ``case`` on 0-d inputs, or None where the op refuses them."""
    tables = _tables(pc, case, rng)
    ab.renew_cg()
    try:
        outs = [case.build(k, *_inputs(case, tables, k)) for k in range(N_EXAMPLES)]
    except (ValueError, TypeError, IndexError) as e:
        assert "(at " in str(e), f"a refusal must name the user's line: {e!r}"
        return None
    return tables, [o.shape for o in outs]


_ZERO_D = [pytest.param(name, i, id=f"{name}-{i}") for name, cases in CASES.items() for i, c in enumerate(cases)
           if _zero_d(c) is not None]


@pytest.mark.parametrize("name,i", _ZERO_D)
def test_zero_d_inputs_batch_like_node_by_node(name, i, pc64, xp_backend):
    case, rng = _zero_d(CASES[name][i]), np.random.default_rng(200 + i)
    built = _build_zero_d(pc64, case, rng)
    if built is None:
        return  # refused at build time, clearly (checked above)
    tables, shapes = built
    values = {}
    for strategy in ("off", "depth", "agenda"):
        ab.renew_cg(strategy=strategy)
        outs = [case.build(k, *_inputs(case, tables, k)) for k in range(N_EXAMPLES)]
        ab.forward(*outs)
        values[strategy] = [np.asarray(o.value()) for o in outs]
    for strategy in ("depth", "agenda"):
        for v, v_off in zip(values[strategy], values["off"]):
            np.testing.assert_allclose(v, v_off, rtol=1e-12, atol=1e-12)
    _check_gradients(pc64, case, tables, shapes, rng, ("off", "depth", "agenda"))


def test_ops_that_take_0d_values_accept_them(pc64):
    accepted = {name for name, cases in CASES.items() for c in cases
                if _zero_d(c) is not None and _build_zero_d(pc64, _zero_d(c), np.random.default_rng(0)) is not None}
    accepted |= {name for name, cases in CASES.items() for c in cases if () in c.shapes}  # 0-d cases of their own
    assert ACCEPT_0D <= accepted, f"refuse 0-d inputs: {sorted(ACCEPT_0D - accepted)}"


def test_leaves(pc64, xp_backend):
    W = pc64.add_parameters((2, 3), init=np.arange(6.0).reshape(2, 3))
    ab.renew_cg()
    x = ab.input_tensor([[1, 2, 3], [4, 5, 6]])
    z = ab.zeros((2, 3))
    assert x.dtype == np.float64 and z.dtype == np.float64
    np.testing.assert_array_equal((x + z + W).value(), np.arange(6.0).reshape(2, 3) + [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(ab.parameter(W).value(), W.value())


# ---- integer inputs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,i", _all_cases())
def test_integer_inputs_get_the_dtype_their_values_have(name, i):
    """Every case again on int64 inputs (shared ones too, as constants): where the op takes them, the dtype a node
    reports is its value's (tanh or / of integers give the float default, + and sums keep integers)."""
    case, rng = CASES[name][i], np.random.default_rng(300 + i)
    ab.ParameterCollection(dtype=np.float32)
    ab.renew_cg()
    data = [rng.integers(1, 4, size=s) for s in case.shapes]
    try:
        outs = [case.build(k, *[ab.input_tensor(d, dtype=np.int64) for d in data]) for k in range(N_EXAMPLES)]
    except (ValueError, TypeError, IndexError) as e:
        assert "(at " in str(e), f"a refusal must name the user's line: {e!r}"
        return
    ab.forward(*outs)
    for o in outs:
        v = backend.asnumpy(o.g.value_of(o.i))
        assert v.dtype == o.dtype and v.shape == o.shape
        sig = o.g.n_sig[o.i]
        assert o.dtype == (np.int64 if keeps_int(sig.prim, sig.kw) else np.float32)
