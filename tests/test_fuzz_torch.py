"""Random ragged programs against PyTorch autograd.

Each program gives every example its own random sequence of operations over vectors, scalars and sequences of
their own lengths (shared and per-example weights, mid-graph ``value()`` reads included). It runs under "off",
"depth" and "agenda" and must give PyTorch's values and parameter gradients (float64) to round-off.

The operations come from the table ``OPS``: one ``Op`` per way of using a primitive, with the autobatch builder
and the PyTorch reference side by side. A new primitive is tested here by adding its entries.

Value kinds: "v" a vector (D,), "s" a scalar, "m" a matrix (D, D), "q" a sequence of vectors (T, D), "r" a
sequence of scalars (T,).
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

import autobatch as ab
from autobatch import rnn

D, V = 3, 7  # vector size, lookup table rows
STRATEGIES = ("off", "depth", "agenda")
ANY = "*"  # an input of any kind; the output has the input's kind


@dataclass
class Op:
    """``ins``: the kinds of the inputs ("*" any; sequence inputs of one op share their length); ``out``: the
    output's kind ("*" the first input's). ``ab(P, *xs, **extra)`` and ``torch(P, *xs, **extra)`` build the
    value from inputs ``xs`` and parameters ``P`` (a dict of the same names on both sides); ``extra(rng, T,
    kind)`` draws the op's own arguments (an index, targets), T being its sequence inputs' length (None
    without) and kind its first input's."""

    name: str
    ins: tuple
    out: str
    ab: Callable
    torch: Callable
    extra: Callable = None


def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


def _softmax(x, log=False):
    """Of 0-d values (or of a sequence of them): over an axis of length 1, so 1 (log: 0)."""
    f = torch.log_softmax if log else torch.softmax
    return f(x.unsqueeze(-1), -1).squeeze(-1) if x._kind in "sr" else f(x, -1)


def _pnls_torch(P, x, i):
    ls = torch.log_softmax(x, -1)
    return -ls[i] if x.dim() == 1 else -ls[torch.arange(len(i)), torch.as_tensor(i)]


def _lstm_torch(gates, c):
    i, f, g, o = gates.split(D)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c)


def _gru_torch(xpart, hpart, h):
    r, z = torch.sigmoid(xpart[:2 * D] + hpart[:2 * D]).split(D)
    n = torch.tanh(xpart[2 * D:] + r * hpart[2 * D:])
    return (1 - z) * n + z * h


def _per_example_matrix(P, i, backend):
    row = P["M"][i]
    return ab.reshape(row, (D, D)) if backend == "ab" else row.reshape(D, D)


def _index(rng, T, kind):
    return {"i": int(rng.integers(D))}


def _table_row(rng, T, kind):
    return {"i": int(rng.integers(V))}


def _targets(rng, T, kind):
    return {"i": [int(t) for t in rng.integers(D, size=T)]}


def _row(rng, T, kind):
    return {"t": int(rng.integers(T))}


def _noise(rng, T, kind):
    """Uniforms of the input's whole shape (a sequence's rows first)."""
    return {"u": rng.random(((T,) if T else ()) + {"v": (D,), "q": (D,), "m": (D, D)}.get(kind, ()))}


def _shift(rng, T, kind):
    return {"a": int(rng.integers(1, D))}


def _some_of_d(rng, T, kind):
    """D indices into an axis of size D, repeats allowed."""
    return {"i": [int(j) for j in rng.integers(D, size=D)]}


def _first_extreme(x, axis):
    """The maximum along ``axis`` whose gradient goes to the first maximal entry (autobatch's subgradient; torch's
    own ``amax`` would share it among ties, which relu's zeros make common)."""
    return x.gather(axis, x.argmax(axis, keepdim=True)).squeeze(axis)


def _one_hot(x):
    return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)


def _unary(name, fab, ftorch):
    return Op(name, (ANY,), ANY, lambda P, x: fab(x), lambda P, x: ftorch(x))


OPS = [
    # ---- sources ----
    Op("E[i]", (), "v", lambda P, i: P["E"][i], lambda P, i: P["E"][i], _table_row),
    Op("E[ids]", (), "q", lambda P, i: P["E"][i], lambda P, i: P["E"][torch.as_tensor(i)],
       lambda rng, T, kind: {"i": [int(j) for j in rng.integers(V, size=rng.integers(1, 5))]}),
    Op("input vector", (), "v", lambda P, x: ab.input_tensor(x), lambda P, x: _t(x),
       lambda rng, T, kind: {"x": rng.normal(size=D)}),
    Op("input scalar", (), "s", lambda P, x: ab.input_tensor(x), lambda P, x: _t(x),
       lambda rng, T, kind: {"x": float(rng.normal())}),
    Op("input matrix", (), "m", lambda P, x: ab.input_tensor(x), lambda P, x: _t(x),
       lambda rng, T, kind: {"x": rng.normal(size=(D, D))}),
    Op("input scalars", (), "r", lambda P, x: ab.sequence([ab.input_tensor(v) for v in x]), lambda P, x: _t(x),
       lambda rng, T, kind: {"x": rng.normal(size=rng.integers(1, 5))}),
    Op("parameter b", (), "v", lambda P: ab.parameter(P["b"]), lambda P: P["b"]),  # the same in every example:
    Op("parameter W", (), "m", lambda P: ab.parameter(P["W"]), lambda P: P["W"]),  # what is made of it, once
    Op("M[i] as a matrix", (), "m", lambda P, i: _per_example_matrix(P, i, "ab"),
       lambda P, i: _per_example_matrix(P, i, "torch"), _table_row),
    # ---- elementwise, on any kind (sequences row by row) ----
    _unary("tanh", ab.tanh, torch.tanh),
    _unary("logistic", ab.logistic, torch.sigmoid),
    _unary("relu", ab.relu, torch.relu),
    _unary("exp(tanh)", lambda x: ab.exp(ab.tanh(x)), lambda x: torch.exp(torch.tanh(x))),
    _unary("log(x^2+1)", lambda x: ab.log(ab.square(x) + 1.0), lambda x: torch.log(x * x + 1)),
    _unary("sqrt(x^2+1)", lambda x: ab.sqrt(ab.square(x) + 1.0), lambda x: torch.sqrt(x * x + 1)),
    _unary("0.5 - 2x", lambda x: 0.5 - 2 * x, lambda x: 0.5 - 2 * x),
    _unary("-x / 4", lambda x: -x / 4, lambda x: -x / 4),
    _unary("2 / (x^2+1)", lambda x: 2 / (ab.square(x) + 1.0), lambda x: 2 / (x * x + 1)),
    Op("a + b", (ANY, ANY), ANY, lambda P, a, b: a + b, lambda P, a, b: a + b),
    Op("a - b", (ANY, ANY), ANY, lambda P, a, b: a - b, lambda P, a, b: a - b),
    Op("a * b", (ANY, ANY), ANY, lambda P, a, b: ab.cmult(a, b), lambda P, a, b: a * b),
    Op("a / (b^2+1)", (ANY, ANY), ANY, lambda P, a, b: a / (ab.square(b) + 1.0), lambda P, a, b: a / (b * b + 1)),
    Op("s * v", ("s", "v"), "v", lambda P, a, b: a * b, lambda P, a, b: a * b),
    Op("v - s", ("v", "s"), "v", lambda P, a, b: a - b, lambda P, a, b: a - b),
    Op("v * b", ("v",), "v", lambda P, a: a * P["b"], lambda P, a: a * P["b"]),  # a shared elementwise input
    Op("m - W", ("m",), "m", lambda P, a: a - P["W"], lambda P, a: a - P["W"]),
    Op("s * b", ("s",), "v", lambda P, a: a * P["b"], lambda P, a: a * P["b"]),  # a 0-d value against a shared one
    Op("v + W", ("v",), "m", lambda P, a: a + P["W"], lambda P, a: a + P["W"]),  # the shared input has more axes
    Op("m + v", ("m", "v"), "m", lambda P, a, b: a + b, lambda P, a, b: a + b),  # broadcast over the rows
    Op("m * s", ("m", "s"), "m", lambda P, a, b: a * b, lambda P, a, b: a * b),
    Op("b + m", ("m",), "m", lambda P, a: P["b"] + a, lambda P, a: P["b"] + a),
    Op("dropout", (ANY,), ANY, lambda P, x, u: ab.dropout(x, 0.3, noise=u),
       lambda P, x, u: x * (_t(u) >= 0.3) / 0.7, _noise),
    # ---- products: a shared matrix, a per-example one ----
    Op("W @ x", ("v",), "v", lambda P, x: P["W"] @ x, lambda P, x: P["W"] @ x),
    Op("W @ X", ("q",), "q", lambda P, x: P["W"] @ x, lambda P, x: x @ P["W"].T),
    Op("affine", ("v",), "v", lambda P, x: ab.affine(P["b"], P["W"], x), lambda P, x: P["b"] + P["W"] @ x),
    Op("W @ m", ("m",), "m", lambda P, x: P["W"] @ x, lambda P, x: P["W"] @ x),
    Op("m @ W", ("m",), "m", lambda P, x: x @ P["W"], lambda P, x: x @ P["W"]),
    Op("m @ v", ("m", "v"), "v", lambda P, a, x: a @ x, lambda P, a, x: a @ x),
    Op("m @ m", ("m", "m"), "m", lambda P, a, b: a @ b, lambda P, a, b: a @ b),
    Op("affine(m, W, m)", ("m", "m"), "m", lambda P, a, b: ab.affine(a, P["W"], b), lambda P, a, b: a + P["W"] @ b),
    Op("transpose", ("m",), "m", lambda P, x: ab.transpose(x), lambda P, x: x.T),
    Op("pick a row of m", ("m",), "v", lambda P, x, i: ab.pick(x, i), lambda P, x, i: x[i], _index),
    Op("W3 @ reshape(m)", ("m",), "v", lambda P, x: P["W3"] @ ab.reshape(x, (D * D,)),
       lambda P, x: P["W3"] @ x.reshape(D * D)),
    Op("affine rows", ("q",), "q", lambda P, x: ab.affine(P["b"], P["W"], x), lambda P, x: P["b"] + x @ P["W"].T),
    Op("M[i] @ x", ("v",), "v", lambda P, x, i: _per_example_matrix(P, i, "ab") @ x,
       lambda P, x, i: _per_example_matrix(P, i, "torch") @ x, _table_row),
    Op("affine(v, M[i], x)", ("v", "v"), "v", lambda P, b, x, i: ab.affine(b, _per_example_matrix(P, i, "ab"), x),
       lambda P, b, x, i: b + _per_example_matrix(P, i, "torch") @ x, _table_row),
    Op("layer_norm", ("v",), "v", lambda P, x: ab.layer_norm(x, P["g"], P["b"]),
       lambda P, x: torch.nn.functional.layer_norm(x, (D,), P["g"], P["b"], 1e-5)),
    # ---- fused recurrent cells (PyTorch's gate layouts: LSTM [i f g o], GRU [r z n]) ----
    Op("lstm step", ("v", "v"), "v", lambda P, x, c: rnn.lstm_hidden(P["W4"] @ x, rnn.lstm_cell(P["W4"] @ x, c)),
       lambda P, x, c: _lstm_torch(P["W4"] @ x, c)),
    Op("gru step", ("v", "v"), "v", lambda P, x, h: rnn.gru_hidden(P["Wg"] @ x, P["Ug"] @ h, h),
       lambda P, x, h: _gru_torch(P["Wg"] @ x, P["Ug"] @ h, h)),
    Op("rnn step", ("v",), "v", lambda P, x: rnn.rnn_hidden(P["W"] @ x), lambda P, x: torch.tanh(P["W"] @ x)),
    Op("layer_norm rows", ("q",), "q", lambda P, x: ab.layer_norm(x, P["g"], P["b"]),
       lambda P, x: torch.nn.functional.layer_norm(x, (D,), P["g"], P["b"], 1e-5)),
    # ---- softmax family, also of scalars ----
    Op("softmax", (ANY,), ANY, lambda P, x: ab.softmax(x), lambda P, x: _softmax(x)),
    Op("log_softmax", (ANY,), ANY, lambda P, x: ab.log_softmax(x), lambda P, x: _softmax(x, log=True)),
    Op("pick", ("v",), "s", lambda P, x, i: ab.pick(x, i), lambda P, x, i: x[i], _index),
    Op("pick_neg_log_softmax", ("v",), "s", lambda P, x, i: ab.pick_neg_log_softmax(x, i), _pnls_torch, _index),
    Op("pick_neg_log_softmax rows", ("q",), "r", lambda P, x, i: ab.pick_neg_log_softmax(x, i), _pnls_torch,
       _targets),
    # ---- structure and reductions ----
    Op("W2 @ concat", ("v", "v"), "v", lambda P, a, b: P["W2"] @ ab.concat([a, b]),
       lambda P, a, b: P["W2"] @ torch.cat([a, b])),
    Op("W2 @ concat rows", ("q", "q"), "q", lambda P, a, b: P["W2"] @ ab.concat([a, b]),
       lambda P, a, b: torch.cat([a, b], -1) @ P["W2"].T),
    Op("esum v", ("v", "v", "v"), "v", lambda P, *xs: ab.esum(list(xs)), lambda P, *xs: sum(xs)),
    Op("esum s", ("s", "s"), "s", lambda P, *xs: ab.esum(list(xs)), lambda P, *xs: sum(xs)),
    Op("esum m", ("m", "m"), "m", lambda P, *xs: ab.esum(list(xs)), lambda P, *xs: sum(xs)),
    Op("concat(m, m, axis=1) @ W2^T", ("m", "m"), "m",
       lambda P, a, b: ab.concat([a, b], axis=1) @ ab.transpose(P["W2"]),
       lambda P, a, b: torch.cat([a, b], 1) @ P["W2"].T),
    Op("sum_elems", (ANY,), "s", lambda P, x: ab.sum_elems(x), lambda P, x: x.sum()),
    Op("mean_elems", (ANY,), "s", lambda P, x: ab.mean_elems(x), lambda P, x: x.mean()),
    Op("dot", ("v", "v"), "s", lambda P, a, b: ab.dot(a, b), lambda P, a, b: a @ b),
    # ---- sequences: built, read row by row ----
    Op("sequence of vectors", ("v", "v", "v"), "q", lambda P, *xs: ab.sequence(list(xs)),
       lambda P, *xs: torch.stack(xs)),
    Op("sequence of scalars", ("s", "s"), "r", lambda P, *xs: ab.sequence(list(xs)), lambda P, *xs: torch.stack(xs)),
    Op("row", ("q",), "v", lambda P, x, t: ab.row(x, t), lambda P, x, t: x[t], _row),
    Op("row of scalars", ("r",), "s", lambda P, x, t: ab.row(x, t), lambda P, x, t: x[t], _row),
    # ---- parts, stacks, reductions, more elementwise ops (issue 10); attention over sequences (issue 11) ----
    Op("rotate v by slices", ("v",), "v", lambda P, x, a: ab.concat([x[a:], x[:a]]),
       lambda P, x, a: torch.cat([x[a:], x[:a]]), _shift),
    Op("select_rows v", ("v",), "v", lambda P, x, i: ab.select_rows(x, i), lambda P, x, i: x[torch.as_tensor(i)],
       _some_of_d),
    Op("rotate m's rows", ("m",), "m", lambda P, x, a: ab.concat([x[a:], x[:a]]),
       lambda P, x, a: torch.cat([x[a:], x[:a]]), _shift),
    Op("rotate m's columns", ("m",), "m",
       lambda P, x, a: ab.concat([ab.pick_range(x, a, D, d=1), ab.pick_range(x, 0, a, d=1)], axis=1),
       lambda P, x, a: torch.cat([x[:, a:], x[:, :a]], 1), _shift),
    Op("select_cols m", ("m",), "m", lambda P, x, i: ab.select_cols(x, i), lambda P, x, i: x[:, torch.as_tensor(i)],
       _some_of_d),
    Op("m[-1]", ("m",), "v", lambda P, x: x[-1], lambda P, x: x[-1]),
    Op("select_cols q", ("q",), "q", lambda P, x, i: ab.select_cols(x, i), lambda P, x, i: x[:, torch.as_tensor(i)],
       _some_of_d),
    Op("q[a:]", ("q",), "q", lambda P, x, t: x[t:], lambda P, x, t: x[t:], _row),
    Op("r[a:]", ("r",), "r", lambda P, x, t: x[t:], lambda P, x, t: x[t:], _row),
    Op("select_rows q", ("q",), "q", lambda P, x, i: ab.select_rows(x, i), lambda P, x, i: x[torch.as_tensor(i)],
       lambda rng, T, kind: {"i": [int(j) for j in rng.integers(T, size=rng.integers(1, 5))]}),
    Op("q[-1]", ("q",), "v", lambda P, x: x[-1], lambda P, x: x[-1]),
    Op("stack v", ("v", "v", "v"), "m", lambda P, *xs: ab.stack(list(xs)), lambda P, *xs: torch.stack(xs)),
    Op("stack v, axis 1", ("v", "v", "v"), "m", lambda P, *xs: ab.stack(list(xs), axis=1),
       lambda P, *xs: torch.stack(xs, 1)),
    Op("concat scalars", ("s", "s", "s"), "v", lambda P, *xs: ab.concat(list(xs)), lambda P, *xs: torch.stack(xs)),
    Op("max", (ANY,), "s", lambda P, x: ab.max(x), lambda P, x: _first_extreme(x.reshape(-1), 0)),
    Op("min", (ANY,), "s", lambda P, x: ab.min(x), lambda P, x: _first_extreme(-x.reshape(-1), 0) * -1),
    Op("max m, axis 1", ("m",), "v", lambda P, x: ab.max(x, axis=1), lambda P, x: _first_extreme(x, 1)),
    Op("min m, axis 0", ("m",), "v", lambda P, x: ab.min(x, axis=0), lambda P, x: -_first_extreme(-x, 0)),
    Op("max over q's rows", ("q",), "v", lambda P, x: ab.max(x, axis=0), lambda P, x: _first_extreme(x, 0)),
    Op("min over q's rows", ("q",), "v", lambda P, x: ab.min(x, axis=0), lambda P, x: -_first_extreme(-x, 0)),
    Op("max of each row of q", ("q",), "r", lambda P, x: ab.max(x, axis=1), lambda P, x: _first_extreme(x, 1)),
    Op("logsumexp", (ANY,), "s", lambda P, x: ab.logsumexp(x), lambda P, x: torch.logsumexp(x.reshape(-1), 0)),
    Op("logsumexp over q's rows", ("q",), "v", lambda P, x: ab.logsumexp(x, axis=0),
       lambda P, x: torch.logsumexp(x, 0)),
    Op("logsumexp m, axis 1", ("m",), "v", lambda P, x: ab.logsumexp(x, axis=1), lambda P, x: torch.logsumexp(x, 1)),
    Op("logsumexp of a list", ("v", "v"), "v", lambda P, a, b: ab.logsumexp([a, b]),
       lambda P, a, b: torch.logsumexp(torch.stack([a, b]), 0)),
    Op("argmax", ("v",), "v", lambda P, x: ab.argmax(x), lambda P, x: _one_hot(x).detach()),
    Op("argmax straight through", ("v",), "v", lambda P, x: ab.argmax(x, gradient_mode="straight_through"),
       lambda P, x: _one_hot(x).detach() + x - x.detach()),
    Op("argmax rows", ("q",), "q", lambda P, x: ab.argmax(x), lambda P, x: _one_hot(x).detach()),
    _unary("abs", ab.abs, torch.abs),
    _unary("x ** 3", lambda x: x ** 3, lambda x: x ** 3),
    _unary("pow(x^2+1, 0.5)", lambda x: ab.pow(ab.square(x) + 1.0, 0.5), lambda x: (x * x + 1) ** 0.5),
    Op("(a^2+1) ** b", (ANY, ANY), ANY, lambda P, a, b: (ab.square(a) + 1.0) ** b, lambda P, a, b: (a * a + 1) ** b),
    _unary("sin", ab.sin, torch.sin),
    _unary("cos", ab.cos, torch.cos),
    _unary("tan(tanh)", lambda x: ab.tan(ab.tanh(x)), lambda x: torch.tan(torch.tanh(x))),
    Op("v + ones", ("v",), "v", lambda P, x: x + ab.ones(D, dtype=np.float64), lambda P, x: x + 1),
    Op("dot_rows", ("q", "v"), "r", lambda P, S, q: ab.dot_rows(S, q), lambda P, S, q: S @ q),
    Op("dot_rows shared", ("q",), "r", lambda P, S: ab.dot_rows(S, P["b"]), lambda P, S: S @ P["b"]),
    Op("softmax_rows", ("r",), "r", lambda P, x: ab.softmax_rows(x), lambda P, x: torch.softmax(x, 0)),
    Op("softmax_rows of vectors", ("q",), "q", lambda P, x: ab.softmax_rows(x), lambda P, x: torch.softmax(x, 0)),
    Op("weighted_sum_rows", ("q", "r"), "v", lambda P, S, w: ab.weighted_sum_rows(S, w), lambda P, S, w: w @ S),
    Op("attention", ("q", "v"), "v",
       lambda P, S, q: ab.weighted_sum_rows(S, ab.softmax_rows(ab.dot_rows(S, q))),
       lambda P, S, q: torch.softmax(S @ q, 0) @ S),
]


@dataclass
class Slot:
    """A value of an example's program: its kind and, for a sequence, its row count."""

    kind: str
    T: int  # rows of a sequence (None otherwise)


def _params(seed):
    rng = np.random.default_rng(seed)
    values = dict(W=rng.normal(scale=0.6, size=(D, D)), W2=rng.normal(scale=0.5, size=(D, 2 * D)),
                  W3=rng.normal(scale=0.4, size=(D, D * D)), W4=rng.normal(scale=0.6, size=(4 * D, D)),
                  Wg=rng.normal(scale=0.6, size=(3 * D, D)), Ug=rng.normal(scale=0.6, size=(3 * D, D)),
                  b=rng.normal(size=D), g=rng.uniform(0.5, 1.5, size=D), E=rng.normal(size=(V, D)),
                  M=rng.normal(scale=0.6, size=(V, D * D)))
    pc = ab.ParameterCollection(seed=seed, dtype=np.float64)
    P = {k: (pc.add_lookup_parameters(v.shape, init=v) if k in "EM" else pc.add_parameters(v.shape, init=v))
         for k, v in values.items()}
    T = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
    return pc, P, T


def _tagged(x, kind):
    x._kind = kind
    return x


def _candidates(slots, want, T=None):
    """Indices of slots of kind ``want`` ("*": any), of sequence length T where given."""
    return [j for j, s in enumerate(slots) if (want == ANY or s.kind == want) and (T is None or s.T == T)]


def _generate(rng, TP, n_examples):
    """A program: per example, its instructions (op index, input slots, extra arguments, read now?) and the
    weights of its values in the loss; built while evaluating it in PyTorch, whose values are kept (and
    instructions making huge values are drawn again)."""
    sources = [k for k, op in enumerate(OPS) if not op.ins]
    program, torch_values = [], []
    for _ in range(n_examples):
        slots, values, instrs = [], [], []
        for k in sources:  # every example starts from one of each source
            extra = OPS[k].extra(rng, None, None) if OPS[k].extra else {}
            value = _tagged(OPS[k].torch(TP, **extra), OPS[k].out)
            slots.append(Slot(OPS[k].out, len(value) if OPS[k].out in "qr" else None))
            values.append(value)
            instrs.append((k, (), extra, False))
        steps, tries = int(rng.integers(4, 18)), 0
        while steps and tries < 200:
            tries += 1
            k = int(rng.integers(len(OPS)))
            op = OPS[k]
            if not op.ins:
                continue
            first = _candidates(slots, op.ins[0])
            if not first:
                continue
            args = [int(rng.choice(first))]
            kind, T = slots[args[0]].kind, slots[args[0]].T
            for want in op.ins[1:]:
                pool = _candidates(slots, kind if want == ANY else want, T if (want == ANY or want in "qr") else None)
                if want in "qr" and T is None:
                    pool = _candidates(slots, want)
                    T = slots[pool[0]].T if pool else None
                    pool = [j for j in pool if slots[j].T == T]
                if not pool:
                    break
                args.append(int(rng.choice(pool)))
            if len(args) != len(op.ins):
                continue
            T = next((slots[a].T for a in args if slots[a].T is not None), None)
            extra = op.extra(rng, T, kind) if op.extra else {}
            out = kind if op.out == ANY else op.out
            y = _tagged(op.torch(TP, *[values[a] for a in args], **extra), out)
            if not torch.isfinite(y).all() or y.abs().max() > 1e3:
                continue  # keep values moderate: exp and products of big values overflow
            if out in "qr" and op.out != ANY:
                T = len(y)
            slots.append(Slot(out, T if out in "qr" else None))
            values.append(y)
            instrs.append((k, tuple(args), extra, bool(rng.random() < 0.15)))
            steps -= 1
        weights = rng.normal(size=len(values))
        program.append((instrs, weights))
        torch_values.append(values)
    # The examples' instructions are built interleaved, in a random order, as batch_map or a user's loop might.
    order = rng.permutation(np.repeat(np.arange(n_examples), [len(instrs) for instrs, _ in program]))
    return (program, [int(x) for x in order]), torch_values


def _run(program, order, P, strategy):
    """Builds every example's instructions in ``order`` (reading values mid-graph where the program says), then
    the weighted loss; returns the reads (per example, in order), the values of every slot, and the loss value
    after backward."""
    ab.renew_cg(strategy=strategy)
    reads, exprs = [[] for _ in program], [[] for _ in program]
    for x in order:
        vals = exprs[x]
        k, args, extra, read = program[x][0][len(vals)]
        e = OPS[k].ab(P, *[vals[a] for a in args], **extra)
        vals.append(e)
        if read:
            reads[x].append(np.asarray(e.value()))
    terms = [ab.sum_elems(e) * float(w) for vals, (_, ws) in zip(exprs, program) for e, w in zip(vals, ws)]
    loss = ab.esum(terms)
    loss.backward()
    return reads, [[np.asarray(e.value()) for e in vals] for vals in exprs], loss.value()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    ab.ParameterCollection(dtype=np.float32)


SEEDS = range(20)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_program_matches_torch(seed):
    rng = np.random.default_rng(seed)
    pc, P, TP = _params(seed)
    (program, order), tvals = _generate(rng, TP, n_examples=int(rng.integers(2, 7)))
    loss = sum((v.sum() * float(w)) for vals, (_, ws) in zip(tvals, program) for v, w in zip(vals, ws))
    loss.backward()
    expected_reads = [[tvals[x][j].detach().numpy() for j, ins in enumerate(instrs) if ins[3]]
                      for x, (instrs, _) in enumerate(program)]
    for strategy in STRATEGIES:
        pc.zero_grad()
        reads, values, total = _run(program, order, P, strategy)
        where = f"seed {seed}, strategy {strategy}"
        for got, want in zip(sum(reads, []), sum(expected_reads, [])):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"mid-graph read, {where}")
        pairs = [(x, j, got, want.detach().numpy()) for x, (vals, tv) in enumerate(zip(values, tvals))
                 for j, (got, want) in enumerate(zip(vals, tv))]
        flat = [np.concatenate([np.ravel(p[k]) for p in pairs]) for k in (2, 3)]
        if not np.allclose(*flat, rtol=1e-10, atol=1e-12):  # one comparison; name the first value that differs
            for x, j, got, want in pairs:
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12,
                                           err_msg=f"{OPS[program[x][0][j][0]].name}, example {x}, value {j}, {where}")
        assert total == pytest.approx(loss.item(), rel=1e-10, abs=1e-10)
        for name, p in P.items():
            want = TP[name].grad.numpy() if TP[name].grad is not None else np.zeros(p.shape)
            np.testing.assert_allclose(p.grad, want, rtol=1e-9, atol=1e-10, err_msg=f"grad of {name}, {where}")


def test_every_op_of_the_table_is_drawn():
    """The programs above exercise every entry (a table entry no program reaches tests nothing)."""
    drawn = set()
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        _, _, TP = _params(seed)
        (program, _), _ = _generate(rng, TP, n_examples=int(rng.integers(2, 7)))
        drawn |= {OPS[k].name for instrs, _ in program for k, *_ in instrs}
    assert drawn == {op.name for op in OPS}, sorted({op.name for op in OPS} - drawn)
