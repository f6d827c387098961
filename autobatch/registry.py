"""The one table of primitives: each declares its shape rule, batched forward, VJP and batching behaviour.

Batching behaviour comes from a primitive's kind, as in JAX: an ``elementwise`` primitive broadcasts, so it
takes shared (parameter) inputs without a batch axis and the engine sums their gradients over the batch; a
``structural`` one says with ``shares`` whether it accepts shared inputs (a product with a weight matrix does);
a ``leaf`` makes values from per-node data. Adding an op is adding a record here and its kernels in ``kernels/``;
the registry-driven tests then demand a reference and a gradient check for it.
"""
import numpy as np

from autobatch.kernels import dropout as _dropout, elementwise as ew, linalg, norm as _norm, recurrent as _rec
from autobatch.kernels import scan, sequence as _seq, softmax as sm, structure as st, tree as _tree

from .primitive import Primitive


class ShapeError(ValueError):
    """A shape rule rejected its inputs (the engine adds the op name and the user's file:line)."""


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
RELU = primitive("relu", "elementwise", same_shape, ew.relu, ew.relu_vjp, keeps_int=True)
EXP = primitive("exp", "elementwise", same_shape, ew.exp, ew.exp_vjp)
LOG = primitive("log", "elementwise", same_shape, ew.log, ew.log_vjp)
SQUARE = primitive("square", "elementwise", same_shape, ew.square, ew.square_vjp, keeps_int=True)
SQRT = primitive("sqrt", "elementwise", same_shape, ew.sqrt, ew.sqrt_vjp)
SCALE_SHIFT = primitive("scale_shift", "elementwise", lambda s, a, b: s[0], ew.scale_shift, ew.scale_shift_vjp,
                        keeps_int=lambda a, b: float(a).is_integer() and float(b).is_integer())
RDIV = primitive("rdiv", "elementwise", lambda s, c: s[0], ew.rdiv, ew.rdiv_vjp)
ADD = primitive("add", "elementwise", broadcast, ew.add, ew.add_vjp, keeps_int=True)
SUB = primitive("sub", "elementwise", broadcast, ew.sub, ew.sub_vjp, keeps_int=True)
MUL = primitive("mul", "elementwise", broadcast, ew.mul, ew.mul_vjp, keeps_int=True)
DIV = primitive("div", "elementwise", broadcast, ew.div, ew.div_vjp)

MATMUL = primitive("matmul", "structural", _matmul_shape, linalg.matmul, linalg.matmul_vjp, shares=True,
                   seq="rows", keeps_int=True, outer=(0, 1))
AFFINE = primitive("affine", "structural", _affine_shape, linalg.affine, linalg.affine_vjp, shares=True,
                   seq="rows", keeps_int=True, outer=(1, 2))
TRANSPOSE = primitive("transpose", "structural", _transpose_shape, linalg.transpose, linalg.transpose_vjp,
                      keeps_int=True)

SOFTMAX = primitive("softmax", "structural", same_shape, sm.softmax, sm.softmax_vjp, seq="rows")
LOG_SOFTMAX = primitive("log_softmax", "structural", same_shape, sm.log_softmax, sm.log_softmax_vjp, seq="rows")
PICK_NLS = primitive("pick_neg_log_softmax", "structural", _vector, sm.pick_neg_log_softmax,
                     sm.pick_neg_log_softmax_vjp, aux="index", residual=True, seq="rows")

PICK = primitive("pick", "structural", _pick_shape, st.pick, st.pick_vjp, aux="index", keeps_int=True)
CONCAT = primitive("concat", "structural", _concat_shape, st.concat, st.concat_vjp, seq="rows", keeps_int=True)
ESUM = primitive("esum", "structural", _esum_shape, st.esum, st.esum_vjp, stacks=True, keeps_int=True)
SUM_ELEMS = primitive("sum_elems", "structural", lambda s: (), st.sum_elems, st.sum_elems_vjp, seq="reduce",
                      keeps_int=True)
SEQUENCE = primitive("sequence", "structural", _sequence_shape, st.sequence, st.sequence_vjp, seq="build",
                     keeps_int=True)
PICK_ROW = primitive("pick_row", "structural", same_shape, st.pick_row, st.pick_row_vjp, aux="index", seq="reduce",
                     keeps_int=True)


# ---- parts, stacks, reductions, more elementwise ops (issue 10) and attention over sequences (issue 11) ---------
# Which entries a part takes (a slice, chosen rows) is per-node data, not part of the signature, so examples
# taking different parts of same-shape values share one kernel call; only the part's size is an attribute.
# ``take`` applies to each row of a sequence (its per-row indices repeated); ``take_rows`` chooses rows.
# On sequences, max/min/logsumexp reduce each row (axis >= 1 of the sequence) or, ``*_over_rows``, over the rows
# (axis 0: max pooling over time), and the attention primitives take rows of any count: a sequence's length never
# enters a signature.
from autobatch.kernels import attention as _att, reduce as _red, select as _sel  # noqa: E402  (this section's kernels)


def _take_shape(shapes, axis, n):
    x = shapes[0]
    if not 0 <= axis < len(x):
        raise ShapeError(f"axis {axis} out of range for shape {x}")
    return x[:axis] + (n,) + x[axis + 1:]


def _stack_shape(shapes, axis):
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"needs inputs of one shape, got {', '.join(map(str, shapes))}")
    if not 0 <= axis <= len(shapes[0]):
        raise ShapeError(f"axis {axis} out of range for stacking shape {shapes[0]}")
    return shapes[0][:axis] + (len(shapes),) + shapes[0][axis:]


def _reduce_shape(shapes, axis):
    x = shapes[0]
    if axis is None:
        return ()
    if not 0 <= axis < len(x):
        raise ShapeError(f"axis {axis} out of range for shape {x}")
    return x[:axis] + x[axis + 1:]


def _one_hot_shape(shapes, gradient_mode):
    if len(shapes[0]) != 1:
        raise ShapeError(f"needs a vector, got shape {shapes[0]}")
    return shapes[0]


def _dot_rows_shape(shapes):
    S, q = shapes
    if len(S) != 1 or q != S:
        raise ShapeError(f"needs rows of shape (d,) and a query of shape (d,), got rows {S} and query {q}")
    return ()


def _weighted_sum_shape(shapes):
    S, w = shapes
    if w != ():
        raise ShapeError(f"weights must be a sequence of scalars, got rows of shape {w}")
    return S


ONES = primitive("ones", "leaf", _leaf_shape, _sel.ones, None, aux="list")
TAKE = primitive("take", "structural", _take_shape, _sel.take, _sel.take_vjp, aux="index", seq="rows", keeps_int=True)
TAKE_ROWS = primitive("take_rows", "structural", same_shape, _sel.take_rows, _sel.take_rows_vjp, aux="list",
                      seq="keep", keeps_int=True)
STACK = primitive("stack", "structural", _stack_shape, _sel.stack, _sel.stack_vjp, stacks=True, keeps_int=True)
MAX = primitive("max", "structural", _reduce_shape, _red.max_, _red.max_vjp, seq="rows", keeps_int=True)
MIN = primitive("min", "structural", _reduce_shape, _red.min_, _red.min_vjp, seq="rows", keeps_int=True)
LOGSUMEXP = primitive("logsumexp", "structural", _reduce_shape, _red.logsumexp, _red.logsumexp_vjp, seq="rows")
MAX_OVER_ROWS = primitive("max_over_rows", "structural", same_shape, _red.max_rows, _red.max_rows_vjp, seq="reduce",
                          keeps_int=True)
MIN_OVER_ROWS = primitive("min_over_rows", "structural", same_shape, _red.min_rows, _red.min_rows_vjp, seq="reduce",
                          keeps_int=True)
LOGSUMEXP_OVER_ROWS = primitive("logsumexp_over_rows", "structural", same_shape, _red.logsumexp_rows,
                                _red.logsumexp_rows_vjp, seq="reduce")
ARGMAX = primitive("argmax", "structural", _one_hot_shape, _red.argmax, _red.argmax_vjp, seq="rows", keeps_int=True)
ABS = primitive("abs", "elementwise", same_shape, ew.abs_, ew.abs_vjp, keeps_int=True)
POW_CONST = primitive("pow_const", "elementwise", lambda s, p: s[0], ew.pow_const, ew.pow_const_vjp)
POW = primitive("pow", "elementwise", broadcast, ew.pow_, ew.pow_vjp)
SIN = primitive("sin", "elementwise", same_shape, ew.sin, ew.sin_vjp)
COS = primitive("cos", "elementwise", same_shape, ew.cos, ew.cos_vjp)
TAN = primitive("tan", "elementwise", same_shape, ew.tan, ew.tan_vjp)
DOT_ROWS = primitive("dot_rows", "structural", _dot_rows_shape, _att.dot_rows, _att.dot_rows_vjp, shares=True,
                     seq="keep")
SOFTMAX_ROWS = primitive("softmax_rows", "structural", same_shape, _att.softmax_rows, _att.softmax_rows_vjp,
                         seq="keep")
WEIGHTED_SUM_ROWS = primitive("weighted_sum_rows", "structural", _weighted_sum_shape, _att.weighted_sum_rows,
                              _att.weighted_sum_rows_vjp, seq="reduce")


def _gated_scan_shape(x, Wh, init, D, gates):
    """The output (D x H,) of a scan over gate inputs x (D x gates*H,) with recurrent weights (D x gates*H, H)
    and initial states (D x H,), D directions."""
    if len(Wh) != 2 or x != (Wh[0],) or Wh[0] != D * gates * Wh[1]:
        raise ShapeError(f"needs gate inputs ({D} x {gates}H,) and recurrent weights ({D} x {gates}H, H) for {D} "
                         f"direction(s), got {x} and {Wh}")
    if any(s != (D * Wh[1],) for s in init):
        raise ShapeError(f"initial states {init} must have shape {(D * Wh[1],)}")
    return (D * Wh[1],)


def _lstm_scan_shape(shapes, dirs, rd=0.0, zo=0.0, zt=False, vd=0.0):
    x, Wh, *init = shapes
    return _gated_scan_shape(x, Wh, init, len(dirs), 4)


# The scans' regularisers' uniforms are per-node data, drawn at build time (None without regularisers).
LSTM_SCAN = primitive("lstm_scan", "structural", _lstm_scan_shape, scan.lstm_scan, scan.lstm_scan_vjp,
                      shares=True, residual=True, seq="keep", must_share=(1,), aux="list", random=True)


def _lstm_ln_scan_shape(shapes, dirs, eps, rd=0.0, zo=0.0, zt=False, vd=0.0):
    x, Wh, ah, *init = shapes
    if ah != x:  # the recurrent product's layer-norm gain: one per gate input
        raise ShapeError(f"needs a layer-norm gain of the gate inputs' shape {x}, got {ah}")
    return _gated_scan_shape(x, Wh, init, len(dirs), 4)


LSTM_LN_SCAN = primitive("lstm_ln_scan", "structural", _lstm_ln_scan_shape, scan.lstm_ln_scan, scan.lstm_ln_scan_vjp,
                         shares=True, residual=True, seq="keep", must_share=(1, 2), aux="list", random=True)


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


def _gru_scan_shape(shapes, dirs, rd=0.0, zo=0.0, zt=False, vd=0.0):
    x, Wh, bh, *init = shapes
    if bh != x:  # b_h: one bias per gate input (b_hn is the part r multiplies)
        raise ShapeError(f"needs a recurrent bias of the gate inputs' shape {x}, got {bh}")
    return _gated_scan_shape(x, Wh, init, len(dirs), 3)


GRU_SCAN = primitive("gru_scan", "structural", _gru_scan_shape, scan.gru_scan, scan.gru_scan_vjp,
                     shares=True, residual=True, seq="keep", must_share=(1, 2), aux="list", random=True)


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
RESHAPE = primitive("reshape", "structural", _reshape_shape, st.reshape, st.reshape_vjp, keeps_int=True)


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


# ---- output layers for large vocabularies (issue 13) ------------------------------------------------------------
# One node per predicted word, or per sentence over the sequence of its states (a per-row op: the targets are
# per-row data). The output layer's parameters are shared by the whole batch, so a batch is every row of every
# sentence, grouped by class inside the kernel. See ``kernels/big_softmax.py`` and ``autobatch/output_layers.py``.
from autobatch.kernels import big_softmax as _big  # noqa: E402  (this section's kernels)


def _state_dim(shapes):
    if len(shapes[0]) != 1:
        raise ShapeError(f"needs a state vector (or a sequence of them), got shape {shapes[0]}")
    return shapes[0][0]


def _class_shape(shapes, classes, out):
    H = _state_dim(shapes)
    C, V = classes.n_classes, classes.size
    want = [(H,), (C, H), (C,), (V, H), (V,)]
    if list(shapes) != want:
        raise ShapeError(f"needs state ({H},), class weights ({C}, {H}) and bias ({C},), word weights ({V}, {H}) "
                         f"and bias ({V},) for {classes}; got {', '.join(map(str, shapes))}")
    return (V,) if out else ()


def _adaptive_shape(shapes, cutoffs, head_bias, out):
    H = _state_dim(shapes)
    n = len(cutoffs) - 1
    head = cutoffs[0] + n
    want = [(H,), (head, H)] + [(head,)] * bool(head_bias)
    for i in range(n):
        d = shapes[len(want)][0] if len(shapes) > len(want) and shapes[len(want)] else 0
        want += [(d, H), (cutoffs[i + 1] - cutoffs[i], d)]
    if list(shapes) != want or any(w[0] < 1 for w in want[1:]):
        raise ShapeError(f"needs state ({H},), head ({head}, {H}){' and its bias' if head_bias else ''}, then per "
                         f"tail cluster i a projection (d_i, {H}) and weights (size_i, d_i) for cutoffs "
                         f"{list(cutoffs)}; got {', '.join(map(str, shapes))}")
    return (cutoffs[-1],) if out else ()


def _sampled_shape(shapes):
    H = _state_dim(shapes)
    W = shapes[1]
    if len(W) != 2 or W[1] != H or shapes[2] != W[:1]:
        raise ShapeError(f"needs state ({H},), weights (V, {H}) and bias (V,); got {', '.join(map(str, shapes))}")
    return ()


_OUT = dict(shares=True, seq="rows", residual=True)
CLASS_NLL = primitive("class_softmax_nll", "structural", lambda s, classes: _class_shape(s, classes, False),
                      _big.class_nll, _big.class_nll_vjp, aux="index", must_share=(1, 2, 3, 4), **_OUT)
CLASS_LOG_PROBS = primitive("class_softmax_log_probs", "structural",
                            lambda s, classes: _class_shape(s, classes, True), _big.class_log_probs,
                            _big.class_log_probs_vjp, must_share=(1, 2, 3, 4), **_OUT)
# Arity varies with the number of tail clusters; must_share names the head, the block passes only parameters.
ADAPTIVE_NLL = primitive("adaptive_softmax_nll", "structural",
                         lambda s, cutoffs, head_bias: _adaptive_shape(s, cutoffs, head_bias, False),
                         _big.adaptive_nll, _big.adaptive_nll_vjp, aux="index", must_share=(1,), **_OUT)
ADAPTIVE_LOG_PROBS = primitive("adaptive_softmax_log_probs", "structural",
                               lambda s, cutoffs, head_bias: _adaptive_shape(s, cutoffs, head_bias, True),
                               _big.adaptive_log_probs, _big.adaptive_log_probs_vjp, must_share=(1,), **_OUT)
# Per-node data is (targets, the graph's shared sample), not one index per row, so the kernel walks the rows
# itself ("keep": a sequence in, a sequence out). random: the sample is drawn when the graph is built.
SAMPLED_NLL = primitive("sampled_softmax_nll", "structural", _sampled_shape, _big.sampled_nll,
                        _big.sampled_nll_vjp, shares=True, seq="keep", residual=True, aux="list", random=True,
                        must_share=(1, 2))


# ---- DyNet compatibility (issue 12: ``autobatch.dynet``) -------------------------------------------------------
# A DyNet minibatch (``lookup_batch``, ``inputTensor(batched=True)``) is held as a sequence of B rows, so the
# per-row primitives above serve it unchanged. These records add what DyNet's semantics need besides: per-row
# twins of primitives that otherwise refuse sequences (same kernels: they already loop over axis 0), DyNet's
# column-major reshape and strided selection, sums over a minibatch, inputs that report their gradient, gradient
# scaling, conv2d / maxpooling2d on (H, W, C) images, and the fused LSTM cell row by row over a minibatch.
from autobatch.kernels import conv as _conv, layout as _layout  # noqa: E402 - this section's kernels


def _twin(prim):
    """``prim`` applied row by row to a sequence (a DyNet minibatch); on a single value it is ``prim`` itself."""
    return primitive(prim.name + "_rows", prim.kind, prim.shape, prim.fwd, prim.vjp, shares=prim.shares,
                     aux=prim.aux, residual=prim.residual, seq="rows")


TRANSPOSE_ROWS, PICK_ROWS, SUM_ELEMS_ROWS = _twin(TRANSPOSE), _twin(PICK), _twin(SUM_ELEMS)


def _select_shape(shapes, index):
    shape, out = shapes[0], []
    if len(index) > len(shape):
        raise ShapeError(f"{len(index)} indices for shape {shape}")
    for d, spec in zip(shape, index):
        if type(spec) is int:
            if not -d <= spec < d:
                raise ShapeError(f"index {spec} out of range for size {d}")
        elif spec[0] == "slice":
            n = len(range(*slice(*spec[1:]).indices(d)))
            if n == 0:
                raise ShapeError(f"slice {spec[1]}:{spec[2]}:{spec[3]} of size {d} is empty")
            out.append(n)
        else:
            if not spec[1] or any(not 0 <= i < d for i in spec[1]):
                raise ShapeError(f"indices {list(spec[1])} out of range for size {d}")
            out.append(len(spec[1]))
    return tuple(out) + shape[len(index):]


def _input_shape(shapes, shape, dtype, rows):
    return shape


DY_INPUT = primitive("dy_input", "leaf", _input_shape, _layout.recorded_input, _layout.recorded_input_vjp,
                     aux="list")
DY_RESHAPE = primitive("dy_reshape", "structural", _reshape_shape, _layout.reshape_f, _layout.reshape_f_vjp,
                       seq="rows")
DY_SELECT = primitive("dy_select", "structural", _select_shape, _layout.select, _layout.select_vjp, seq="rows")
DY_SUM_ROWS = primitive("dy_sum_rows", "structural", same_shape, _layout.sum_rows, _layout.sum_rows_vjp,
                        seq="reduce")
DY_SCALE_GRADIENT = primitive("dy_scale_gradient", "structural", lambda s, lambd: s[0], _layout.scale_gradient,
                              _layout.scale_gradient_vjp, seq="rows")



def _conv2d_shape(shapes, stride, valid):
    x, f = shapes
    if len(x) != 3 or len(f) != 4 or f[2] != x[2]:
        raise ShapeError(f"needs an image (H, W, C) and filters (kh, kw, C, C_out), got {x} and {f}")
    if valid and (f[0] > x[0] or f[1] > x[1]):
        raise ShapeError(f"filter {f[:2]} larger than the image {x[:2]} (VALID padding)")
    oh, ow, _, _ = _conv.geometry(x, f[0], f[1], stride, valid)
    return (oh, ow, f[3])


def _maxpool2d_shape(shapes, ksize, stride, valid):
    x = shapes[0]
    if len(x) != 3:
        raise ShapeError(f"needs an image (H, W, C), got {x}")
    if valid and (ksize[0] > x[0] or ksize[1] > x[1]):
        raise ShapeError(f"window {ksize} larger than the image {x[:2]} (VALID padding)")
    oh, ow, _, _ = _conv.geometry(x, ksize[0], ksize[1], stride, valid)
    return (oh, ow, x[2])


DY_CONV2D = primitive("dy_conv2d", "structural", _conv2d_shape, _conv.conv2d, _conv.conv2d_vjp, shares=True,
                      seq="rows")
DY_MAXPOOL2D = primitive("dy_maxpool2d", "structural", _maxpool2d_shape, _conv.maxpool2d, _conv.maxpool2d_vjp,
                         seq="rows")

# The fused LSTM cell row by row over a DyNet minibatch (the cells above take one value per example).
LSTM_CELL_ROWS = primitive("lstm_cell_rows", "structural", lambda s: _lstm_cell_shape(s, 0.0, 0.0, False),
                           _layout.lstm_cell_rows, _layout.lstm_cell_rows_vjp, shares=True, residual=True, seq="rows")
LSTM_HIDDEN_ROWS = primitive("lstm_hidden_rows", "structural", lambda s: _lstm_hidden_shape(s, 0.0, False),
                             _layout.lstm_hidden_rows, _layout.lstm_hidden_rows_vjp, shares=True, residual=True,
                             seq="rows")
