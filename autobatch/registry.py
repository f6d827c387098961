"""The one table of primitives: each declares its shape rule, batched forward, VJP and batching behaviour.

Batching behaviour comes from a primitive's kind, as in JAX: an ``elementwise`` primitive broadcasts, so it
takes shared (parameter) inputs without a batch axis and the engine sums their gradients over the batch; a
``structural`` one says with ``shares`` whether it accepts shared inputs (a product with a weight matrix does);
a ``leaf`` makes values from per-node data. Adding an op is adding a record here and its kernels in ``kernels/``;
the registry-driven tests then demand a reference and a gradient check for it.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from kernels import dropout as _dropout, elementwise as ew, linalg, norm as _norm, recurrent as _rec
from kernels import scan, sequence as _seq, softmax as sm, structure as st, tree as _tree


class ShapeError(ValueError):
    """A shape rule rejected its inputs (the engine adds the op name and the user's file:line)."""


@dataclass(frozen=True, eq=False)
class Primitive:
    """One operation: ``shape(shapes, **attrs) -> out shape``, ``fwd``/``vjp`` kernels (see ``kernels``)."""

    name: str
    kind: str  # "leaf" | "elementwise" | "structural"
    shape: Callable
    fwd: Callable
    vjp: Optional[Callable]
    shares: bool = False  # accepts shared (parameter) inputs without a batch axis
    aux: Optional[str] = None  # per-node data batched as "index" (an int array) or "list"
    random: bool = False  # draws random numbers: never treated as a constant of the graph
    stacks: bool = False  # its (many, same-shape) inputs arrive as ONE array, stacked on axis 1
    residual: bool = False  # fwd returns (out, saved) and the VJP receives ``res=saved`` (no recomputation)
    # How it treats a *sequence* input (a value of T rows, T differing per example; see graph.py): "rows" applies
    # it to each row (a sequence comes out); "keep"/"reduce" need each example's row count (``lengths=``) and
    # give a sequence / one value back; "build" makes a sequence of its inputs; "none" refuses sequences.
    seq: str = "none"
    must_share: tuple = ()  # inputs that must be parameters (or computed from them alone): one for the batch

    def __post_init__(self):
        # Applied to parameters alone, the result is the same for every example (no per-node data, no
        # randomness), so it is computed once per graph.
        object.__setattr__(self, "constant_foldable", self.aux is None and not self.random)

    def __repr__(self):
        return f"<primitive {self.name}>"


REGISTRY = {}


def primitive(name, kind, shape, fwd, vjp, **kw):
    """Declare and register a primitive."""
    if name in REGISTRY:
        raise ValueError(f"primitive {name!r} declared twice")
    kw.setdefault("shares", kind == "elementwise")
    kw.setdefault("seq", "rows" if kind == "elementwise" else "none")
    REGISTRY[name] = p = Primitive(name, kind, shape, fwd, vjp, **kw)
    return p


# ---- shape rules -----------------------------------------------------------------------------------------


def same_shape(shapes):
    return shapes[0]


def broadcast(shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(f"shapes {' and '.join(map(str, shapes))} do not broadcast") from None


def _matmul_shape(shapes, xvec):
    a, x = shapes
    if len(a) != 2 or len(x) not in (1, 2):
        raise ShapeError(f"needs a matrix @ a vector or matrix, got {a} @ {x}")
    if a[1] != x[0]:
        raise ShapeError(f"inner dimensions differ: {a} @ {x}")
    return (a[0],) + x[1:]


def _affine_shape(shapes, xvec):
    out = _matmul_shape(shapes[1:], xvec)
    if shapes[0] != out:
        raise ShapeError(f"bias shape {shapes[0]} differs from the product's shape {out} (W {shapes[1]} @ x {shapes[2]})")
    return out


def _vector(shapes):
    if len(shapes[0]) != 1:
        raise ShapeError(f"needs a vector, got shape {shapes[0]}")
    return ()


def _pick_shape(shapes):
    if len(shapes[0]) < 1:
        raise ShapeError("cannot pick from a scalar")
    return shapes[0][1:]


def _lookup_shape(shapes):
    return shapes[0][1:]


def _concat_shape(shapes, axis):
    first = shapes[0]
    if not 0 <= axis < len(first):
        raise ShapeError(f"axis {axis} out of range for shape {first}")
    for s in shapes[1:]:
        if len(s) != len(first) or s[:axis] + s[axis + 1:] != first[:axis] + first[axis + 1:]:
            raise ShapeError(f"shapes {', '.join(map(str, shapes))} differ off axis {axis}")
    return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]


def _esum_shape(shapes):
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"all terms need one shape, got {', '.join(map(str, shapes))}")
    return shapes[0]


def _transpose_shape(shapes):
    if len(shapes[0]) != 2:
        raise ShapeError(f"needs a matrix, got shape {shapes[0]}")
    return shapes[0][::-1]


def _reshape_shape(shapes, shape):
    if int(np.prod(shapes[0])) != int(np.prod(shape)):
        raise ShapeError(f"cannot reshape {shapes[0]} into {shape}")
    return shape


def _sequence_shape(shapes):
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"rows of a sequence need one shape, got {', '.join(map(str, sorted(set(shapes))))}")
    return shapes[0]


def _leaf_shape(shapes, shape, dtype):
    return shape


# ---- the primitives --------------------------------------------------------------------------------------

PARAM = primitive("param", "leaf", _leaf_shape, st.param, None, aux="list")
INPUT = primitive("input", "leaf", _leaf_shape, st.input_, None, aux="list")
ZEROS = primitive("zeros", "leaf", _leaf_shape, st.zeros, None, aux="list")
LOOKUP = primitive("lookup", "structural", _lookup_shape, st.lookup, st.lookup_vjp, shares=True, aux="index",
                   seq="rows")

TANH = primitive("tanh", "elementwise", same_shape, ew.tanh, ew.tanh_vjp)
LOGISTIC = primitive("logistic", "elementwise", same_shape, ew.logistic, ew.logistic_vjp)
RELU = primitive("relu", "elementwise", same_shape, ew.relu, ew.relu_vjp)
EXP = primitive("exp", "elementwise", same_shape, ew.exp, ew.exp_vjp)
LOG = primitive("log", "elementwise", same_shape, ew.log, ew.log_vjp)
SQUARE = primitive("square", "elementwise", same_shape, ew.square, ew.square_vjp)
SQRT = primitive("sqrt", "elementwise", same_shape, ew.sqrt, ew.sqrt_vjp)
SCALE_SHIFT = primitive("scale_shift", "elementwise", lambda s, a, b: s[0], ew.scale_shift, ew.scale_shift_vjp)
RDIV = primitive("rdiv", "elementwise", lambda s, c: s[0], ew.rdiv, ew.rdiv_vjp)
ADD = primitive("add", "elementwise", broadcast, ew.add, ew.add_vjp)
SUB = primitive("sub", "elementwise", broadcast, ew.sub, ew.sub_vjp)
MUL = primitive("mul", "elementwise", broadcast, ew.mul, ew.mul_vjp)
DIV = primitive("div", "elementwise", broadcast, ew.div, ew.div_vjp)

MATMUL = primitive("matmul", "structural", _matmul_shape, linalg.matmul, linalg.matmul_vjp, shares=True,
                   seq="rows")
AFFINE = primitive("affine", "structural", _affine_shape, linalg.affine, linalg.affine_vjp, shares=True,
                   seq="rows")
TRANSPOSE = primitive("transpose", "structural", _transpose_shape, linalg.transpose, linalg.transpose_vjp)

SOFTMAX = primitive("softmax", "structural", same_shape, sm.softmax, sm.softmax_vjp, seq="rows")
LOG_SOFTMAX = primitive("log_softmax", "structural", same_shape, sm.log_softmax, sm.log_softmax_vjp, seq="rows")
PICK_NLS = primitive("pick_neg_log_softmax", "structural", _vector, sm.pick_neg_log_softmax,
                     sm.pick_neg_log_softmax_vjp, aux="index", residual=True, seq="rows")

PICK = primitive("pick", "structural", _pick_shape, st.pick, st.pick_vjp, aux="index")
CONCAT = primitive("concat", "structural", _concat_shape, st.concat, st.concat_vjp, seq="rows")
ESUM = primitive("esum", "structural", _esum_shape, st.esum, st.esum_vjp, stacks=True)
SUM_ELEMS = primitive("sum_elems", "structural", lambda s: (), st.sum_elems, st.sum_elems_vjp, seq="reduce")
SEQUENCE = primitive("sequence", "structural", _sequence_shape, st.sequence, st.sequence_vjp, seq="build")
PICK_ROW = primitive("pick_row", "structural", same_shape, st.pick_row, st.pick_row_vjp, aux="index", seq="reduce")


def _lstm_scan_shape(shapes, dirs):
    x, Wh, *init = shapes
    D = len(dirs)
    if len(Wh) != 2 or x != (Wh[0],) or Wh[0] != D * 4 * Wh[1]:
        raise ShapeError(f"needs gate inputs ({D} x 4H,) and recurrent weights ({D} x 4H, H) for {D} "
                         f"direction(s), got {x} and {Wh}")
    if any(s != (D * Wh[1],) for s in init):
        raise ShapeError(f"initial states {init} must have shape {(D * Wh[1],)}")
    return (D * Wh[1],)


LSTM_SCAN = primitive("lstm_scan", "structural", _lstm_scan_shape, scan.lstm_scan, scan.lstm_scan_vjp,
                      shares=True, residual=True, seq="keep", must_share=(1,))


def _rnn_scan_shape(shapes, dirs):
    x, Wh, *init = shapes
    D = len(dirs)
    if len(Wh) != 2 or x != (Wh[0],) or Wh[0] != D * Wh[1]:
        raise ShapeError(f"needs inputs ({D} x H,) and recurrent weights ({D} x H, H) for {D} direction(s), got "
                         f"{x} and {Wh}")
    if any(s != x for s in init):
        raise ShapeError(f"initial states {init} must have shape {x}")
    return x


RNN_SCAN = primitive("rnn_scan", "structural", _rnn_scan_shape, scan.rnn_scan, scan.rnn_scan_vjp,
                     shares=True, residual=True, seq="keep", must_share=(1,))


def _tree_scan_shape(shapes):
    x, W, bx, U, b = shapes
    H = U[1] // 2 if len(U) == 2 else 0
    if not H or U != (5 * H, 2 * H) or b != (5 * H,) or W != (3 * H,) + x or bx != (3 * H,):
        raise ShapeError(f"needs leaf inputs (D,), W (3H, D), b_x (3H,), U (5H, 2H), b (5H,); got x {x}, W {W}, "
                         f"b_x {bx}, U {U}, b {b}")
    return (H,)


TREE_LSTM_SCAN = primitive("tree_lstm_scan", "structural", _tree_scan_shape, scan.tree_lstm_scan,
                           scan.tree_lstm_scan_vjp, shares=True, residual=True, seq="keep", aux="list",
                           must_share=(1, 2, 3, 4))
RESHAPE = primitive("reshape", "structural", _reshape_shape, st.reshape, st.reshape_vjp)


# ---- recurrent cells, layer normalisation, dropout and sentence encoders (issue 3) ----------------------------
# Cell primitives fuse a whole cell update into one node; their regularisers (recurrent dropout ``rd``, zoneout
# ``zo`` with ``zt`` = training) are attributes, their uniforms per-node ``aux`` drawn at build time.


def _layer_norm_shape(shapes, eps):
    x, gain, bias = shapes
    if len(x) != 1:
        raise ShapeError(f"needs a vector, got shape {x}")
    if gain != x or bias != x:
        raise ShapeError(f"gain {gain} and bias {bias} must have the input's shape {x}")
    return x


def _stacked(what, shape, state, k):
    if len(state) != 1 or shape != (k * state[0],):
        raise ShapeError(f"{what} shape {shape} must be {k} x the state's shape {state}")


def _arity(shapes, n, zo):
    """Zoneout adds the previous state as a last input."""
    want = n + bool(zo)
    if len(shapes) != want:
        raise ShapeError(f"takes {want} inputs{' (zoneout needs the previous state)' if zo else ''}, "
                         f"got {len(shapes)}")


def _lstm_cell_shape(shapes, rd, zo, zt):
    _arity(shapes, 2, 0)
    _stacked("gates", shapes[0], shapes[1], 4)
    return shapes[1]


def _lstm_hidden_shape(shapes, zo, zt):
    _arity(shapes, 2, zo)
    _stacked("gates", shapes[0], shapes[1], 4)
    if zo and shapes[2] != shapes[1]:
        raise ShapeError(f"previous state shape {shapes[2]} differs from the cell's {shapes[1]}")
    return shapes[1]


def _gru_hidden_shape(shapes, rd, zo, zt):
    _arity(shapes, 3, 0)
    _stacked("input part", shapes[0], shapes[2], 3)
    _stacked("recurrent part", shapes[1], shapes[2], 3)
    return shapes[2]


def _rnn_hidden_shape(shapes, rd, zo, zt):
    _arity(shapes, 1, zo)
    if len(shapes[0]) != 1:
        raise ShapeError(f"needs a vector, got shape {shapes[0]}")
    if zo and shapes[1] != shapes[0]:
        raise ShapeError(f"previous state shape {shapes[1]} differs from {shapes[0]}")
    return shapes[0]


def _pad_rows_shape(shapes, rows):
    if len(shapes[0]) != 1 or any(s != shapes[0] for s in shapes):
        raise ShapeError(f"needs vectors of one shape, got {', '.join(map(str, sorted(set(shapes))))}")
    if rows < len(shapes):
        raise ShapeError(f"{len(shapes)} vectors do not fit in {rows} rows")
    return (rows, shapes[0][0])


def _attention_shape(shapes, causal):
    X, q, k, v = shapes
    if len(X) != 2:
        raise ShapeError(f"needs a (rows, dim) matrix, got shape {X}")
    if len(q) != 2 or q[1] != X[1] or k != q or len(v) != 2 or v[1] != X[1]:
        raise ShapeError(f"query {q}, key {k} and value {v} weights must be (d, {X[1]}), one d for query and key")
    return (X[0], v[0])


def _conv_shape(shapes, dilation, width, causal, act, residual):
    X, W, b = shapes
    if len(X) != 2:
        raise ShapeError(f"needs a (rows, dim) matrix, got shape {X}")
    if len(W) != 2 or W[1] != width * X[1] or b != W[:1]:
        raise ShapeError(f"weights {W} and bias {b} must be (out, {width} x {X[1]}) and (out,)")
    if residual and W[0] != X[1]:
        raise ShapeError(f"a residual connection needs out == dim, got {W[0]} and {X[1]}")
    return (X[0], W[0])


LAYER_NORM = primitive("layer_norm", "structural", _layer_norm_shape, _norm.layer_norm, _norm.layer_norm_vjp,
                       shares=True, residual=True, seq="rows")
DROPOUT = primitive("dropout", "elementwise", lambda s, p: s[0], _dropout.dropout, _dropout.dropout_vjp,
                    aux="list", random=True, residual=True)
_CELL = dict(shares=True, aux="list", random=True, residual=True)
LSTM_CELL = primitive("lstm_cell", "structural", _lstm_cell_shape, _rec.lstm_cell, _rec.lstm_cell_vjp, **_CELL)
LSTM_HIDDEN = primitive("lstm_hidden", "structural", _lstm_hidden_shape, _rec.lstm_hidden, _rec.lstm_hidden_vjp,
                        **_CELL)
GRU_HIDDEN = primitive("gru_hidden", "structural", _gru_hidden_shape, _rec.gru_hidden, _rec.gru_hidden_vjp, **_CELL)
RNN_HIDDEN = primitive("rnn_hidden", "structural", _rnn_hidden_shape, _rec.rnn_hidden, _rec.rnn_hidden_vjp, **_CELL)
PAD_ROWS = primitive("pad_rows", "structural", _pad_rows_shape, _seq.pad_rows, _seq.pad_rows_vjp, stacks=True)
SELF_ATTENTION = primitive("self_attention", "structural", _attention_shape, _seq.self_attention,
                           _seq.self_attention_vjp, shares=True, aux="index", residual=True)
DILATED_CONV = primitive("dilated_conv", "structural", _conv_shape, _seq.dilated_conv, _seq.dilated_conv_vjp,
                         shares=True, aux="index", residual=True)


# ---- binary Tree-LSTM cells (issue 4) --------------------------------------------------------------------------
# Tai et al. (2015), N-ary with N = 2. Gates stacked [i o u f_l f_r]; a leaf has [i o u] only (see kernels/tree.py).
# The memory and the output are two nodes, as for the LSTM, so that the output kernel serves leaves and internal
# nodes alike.


def _tree_cell_shape(shapes):
    if len(shapes) not in (1, 3):
        raise ShapeError(f"takes the gates alone (a leaf) or the gates and both children's cells, "
                         f"got {len(shapes)} inputs")
    gates = shapes[0]
    if len(shapes) == 1:
        if len(gates) != 1 or gates[0] % 3:
            raise ShapeError(f"a leaf's gates [i o u] must be a vector of 3 x the state's size, got shape {gates}")
        return (gates[0] // 3,)
    if shapes[1] != shapes[2]:
        raise ShapeError(f"the children's cells differ in shape: {shapes[1]} and {shapes[2]}")
    _stacked("gates", gates, shapes[1], 5)
    return shapes[1]


def _tree_hidden_shape(shapes):
    _arity(shapes, 2, 0)
    gates, c = shapes
    if len(c) != 1 or gates not in ((3 * c[0],), (5 * c[0],)):
        raise ShapeError(f"gates shape {gates} must be 3 (a leaf) or 5 (a node) x the cell's shape {c}")
    return c


TREE_LSTM_CELL = primitive("tree_lstm_cell", "structural", _tree_cell_shape, _tree.tree_lstm_cell,
                           _tree.tree_lstm_cell_vjp, shares=True, residual=True)
TREE_LSTM_HIDDEN = primitive("tree_lstm_hidden", "structural", _tree_hidden_shape, _tree.tree_lstm_hidden,
                             _tree.tree_lstm_hidden_vjp, shares=True, residual=True)
