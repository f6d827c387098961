"""Per-example expressions (DyNet style) and the functions that build them.

Each call records one node in the current graph and returns at once; values are computed, batched across
examples, only when ``value()`` or ``backward()`` needs them.
"""
import numbers
import operator

import numpy as np

from . import errors
from . import graph as _graph
from .graph import _current  # the list renew_cg() refills: one global look-up per op
# The primitives by name: a module global is one cached look-up when compiled, ``R.TANH`` a module
# attribute look-up per call.
from .registry import (ABS, ADD, AFFINE, ARGMAX, CONCAT, COS, DIV, DOT_ROWS, ESUM, EXP, INPUT, LAYER_NORM, LOG,
    LOGISTIC, LOGSUMEXP, LOGSUMEXP_OVER_ROWS, LOG_SOFTMAX, LOOKUP, MATMUL, MAX, MAX_OVER_ROWS, MIN, MIN_OVER_ROWS,
    MUL, ONES, PICK, PICK_NLS, PICK_ROW, POW, POW_CONST, RDIV, RELU, RESHAPE, SCALE_SHIFT, SEQUENCE, SIN, SOFTMAX,
    SOFTMAX_ROWS, SQRT, SQUARE, STACK, SUB, SUM_ELEMS, TAKE, TAKE_ROWS, TAN, TANH, TRANSPOSE, WEIGHTED_SUM_ROWS,
    ZEROS)


class Operators:
    """``+ - * /`` (elementwise; scalars broadcast) and ``@``, for expressions and parameters alike."""

    __slots__ = ()
    __array_ufunc__ = None  # make NumPy defer to our reflected operators: array + expr is an expression

    def __add__(self, other):
        return _arith(self, other, ADD, lambda c: (1.0, c))

    def __radd__(self, other):
        return _arith(other, self, ADD, lambda c: (1.0, c))

    def __sub__(self, other):
        return _arith(self, other, SUB, lambda c: (1.0, -c))

    def __rsub__(self, other):
        return _arith(other, self, SUB, lambda c: (-1.0, c))

    def __mul__(self, other):
        return _arith(self, other, MUL, lambda c: (c, 0.0))

    def __rmul__(self, other):
        return _arith(other, self, MUL, lambda c: (c, 0.0))

    def __truediv__(self, other):
        return _arith(self, other, DIV, lambda c: (1.0 / c, 0.0))

    def __rtruediv__(self, other):
        if _is_scalar(other):
            return _unary(RDIV, self, (("c", float(other)),))
        return _arith(other, self, DIV, None)

    def __neg__(self):
        return _unary(SCALE_SHIFT, self, (("a", -1.0), ("b", 0.0)))

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __pow__(self, p):
        return pow_(self, p)

    def __rpow__(self, base):
        return pow_(base, self)

    def __abs__(self):
        return abs_(self)


class Expression(Operators):
    """A node of the current graph (DyNet style); see ``Operators`` for the arithmetic it supports."""

    __slots__ = ("g", "i")

    def __init__(self, g, i):
        self.g, self.i = g, i

    @property
    def shape(self):
        """The shape of one example's value (no batch axis); a sequence's starts with its row count."""
        return self.g.shape_of(self.i)

    @property
    def is_sequence(self):
        """True for a sequence: rows whose count may differ between examples (see ``sequence``)."""
        return self.g.n_sig[self.i].ragged

    @property
    def dtype(self):
        """The value's dtype."""
        return self.g.n_sig[self.i].dtype

    def _live(self):
        _node(_current[0], self)  # raises for an expression of an earlier graph
        return self.g

    def value(self):
        """The value as a NumPy array, or a Python number for a 0-d result (a float; an int for an integer
        dtype); runs what it needs, batched."""
        from autobatch.kernels import backend

        v = backend.asnumpy(self._live().value_of(self.i))
        return v.item() if v.ndim == 0 else np.array(v)

    npvalue = value

    def scalar_value(self):
        """The value as a Python float (the expression must hold one element)."""
        v = self.value()
        if isinstance(v, (int, float)) or v.size == 1:
            return float(np.asarray(v).reshape(()))
        raise ValueError(errors.at(f"scalar_value: expression has shape {self.shape}"))

    def backward(self):
        """Add the gradient of this expression (summed if not a scalar) to every parameter's ``.grad``."""
        self._live().backward(self.i)

    def __getitem__(self, key):
        """``x[i]``: ``pick`` along the first axis (negative ``i`` counts from the end); ``x[a:b]``:
        ``pick_range`` (step 1; bounds clipped as in NumPy, an empty range refused); ``x[[i, j]]``:
        ``select_rows``. On a sequence, ``s[t]`` is row t (``row``) and ``s[a:b]`` a shorter sequence."""
        return _getitem(self, key)

    def __iter__(self):
        """Refused: indexing does not make an expression iterable (a method, not ``__iter__ = None``: compiled,
        Expression is an extension type, whose iteration slot a None attribute would not clear)."""
        raise TypeError("an Expression is not iterable: index it (x[i]), or use rows(s) for a sequence's rows")

    def __repr__(self):
        return f"Expression({self.g.n_sig[self.i].prim.name}, shape={self.shape}, node={self.i})"


class Leaf(Operators):
    """The base class of parameters, holding what the graph keeps on one: ``_node``, (a weak reference to the
    latest graph that read it, its node there). Compiled, a C field (ops.pxd): every op that takes a parameter
    reads it."""

    __slots__ = ("_node",)


def _is_scalar(x):
    t = type(x)
    if t is float or t is int:
        return True
    return t is not Expression and not hasattr(x, "_node") and isinstance(x, numbers.Real) and t is not bool


def _arith(a, b, prim, scale_shift):
    """A binary op; a Python scalar on one side becomes the constant of one scale_shift node (``scale_shift``:
    the scalar -> that node's (a, b); None where no such node exists)."""
    if scale_shift is not None:
        if _is_scalar(b):
            a_, b_ = scale_shift(float(b))
            return _unary(SCALE_SHIFT, a, (("a", a_), ("b", b_)))
        if _is_scalar(a):
            a_, b_ = scale_shift(float(a))
            return _unary(SCALE_SHIFT, b, (("a", a_), ("b", b_)))
    g = _current[0]
    return _expr(g, g.add(prim, (_node(g, a), _node(g, b))))


def _expr(g, i):
    """The Expression of node ``i`` of ``g``. Compiled, a C function that fills the struct (no ``__init__``
    call, no int object for ``i``)."""
    e = Expression.__new__(Expression)
    e.g, e.i = g, i
    return e


def _node(g, x):
    """The node id of ``x`` in graph ``g``: an expression, a parameter or a NumPy array / constant."""
    if type(x) is Expression:
        e = x  # typed when compiled (ops.pxd): its fields are read as C fields, not looked up by name
        if e.g is not g:
            raise RuntimeError(errors.at("expression belongs to an earlier graph: renew_cg() was called after "
                                         "it was built; rebuild it in the current graph"))
        return e.i
    if isinstance(x, Leaf):  # a Parameter
        p = x
        node = p._node
        return node[1] if node[0] is g.ref else g.param_node(x)
    if isinstance(x, (np.ndarray, numbers.Real)):
        return input_tensor(x).i
    raise TypeError(errors.at(f"expected an Expression, Parameter or array, got {type(x).__name__}"))


def _apply(prim, xs, attrs=(), aux=None):
    g = _current[0]
    return _expr(g, g.add(prim, tuple([_node(g, x) for x in xs]), attrs, aux))


def _unary(prim, x, attrs=()):
    g = _current[0]
    return _expr(g, g.add(prim, (_node(g, x),), attrs))


def _index(op, i, size):
    """``i`` as an int in [0, size); ``op`` names the operation in the error."""
    if type(i) is not int:
        if isinstance(i, (bool, np.bool_)):  # operator.index(True) is 1: a bool would silently read row 1
            raise TypeError(errors.at(f"{op}: index must be an int, got bool {i!r}"))
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(errors.at(f"{op}: index must be an int, got {type(i).__name__} {i!r}")) from None
    if not 0 <= i < size:
        raise IndexError(errors.at(f"{op}: index {i} out of range for size {size}"))
    return i


# ---- leaves ------------------------------------------------------------------------------------------------


def input_tensor(array, dtype=None):
    """A constant input (a NumPy array or number). Without ``dtype`` it is *weakly typed*: it has the dtype of
    the latest ParameterCollection, and takes that of the values it meets (a float64 model's, even next to a
    float32 collection); an explicit ``dtype`` (float or int) is kept, and mixing explicit dtypes raises."""
    weak = dtype is None
    dtype = np.dtype(_graph.default_dtype[0] if weak else dtype)
    if dtype.kind not in "iuf":
        raise TypeError(errors.at(f"input_tensor: dtype must be a float or integer type, got {dtype}"))
    source = np.asarray(array)
    if source.dtype.kind not in "biuf":
        raise TypeError(errors.at(f"input_tensor: expected numbers, got an array of dtype {source.dtype}"))
    value = np.array(source, dtype=dtype, order="C")  # a copy: later changes to the caller's array don't leak in
    x = _apply(INPUT, (), (("shape", value.shape), ("dtype", dtype)), value)
    if weak:  # a copy in another dtype converts the numbers given, not ones rounded to the default
        exact = np.can_cast(source.dtype, dtype, "safe")
        x.g.weak[x.i] = None if exact else source.copy() if source is array else source
    return x


_filled_attrs = {}  # (shape, dtype) as given -> the attributes: zeros(64) in a loop normalises nothing


def _filled(prim, shape, dtype):
    """A constant leaf of ``prim`` (zeros or ones) of ``shape``; weakly typed without ``dtype``."""
    key = (shape, dtype or _graph.default_dtype[0])
    attrs = _filled_attrs.get(key)
    if attrs is None:
        shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
        attrs = _filled_attrs[key] = (("shape", shape), ("dtype", np.dtype(key[1])))
    g = _current[0]
    n = g.add(prim, (), attrs)
    if dtype is None:
        g.weak[n] = None
    return _expr(g, n)


def zeros(shape, dtype=None):
    """A constant of zeros of ``shape`` (an int or tuple); weakly typed without ``dtype``, as ``input_tensor``."""
    return _filled(ZEROS, shape, dtype)


def parameter(p):
    """A parameter as an expression of the current graph (``W @ x`` does this implicitly)."""
    g = _current[0]
    return _expr(g, g.param_node(p))


def _indices(op, ids, size):
    """A list of ints as an index array in [0, size), checked at once."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not len(ids):
        raise ValueError(errors.at(f"{op}: needs an int or a non-empty 1-d list of ints, got shape {ids.shape}"))
    if ids.dtype.kind not in "iu":
        raise TypeError(errors.at(f"{op}: indices must be ints, got dtype {ids.dtype}"))
    bad = ids[(ids < 0) | (ids >= size)]
    if len(bad):
        raise IndexError(errors.at(f"{op}: index {int(bad[0])} out of range for size {size}"))
    return ids.astype(np.intp)


def lookup(table, i):
    """Row ``i`` of a lookup parameter (``E[i]`` is the same); all lookups of one table run as one gather.
    With a list of ids, the rows as one sequence (a sentence's embeddings: one node, however long)."""
    g = _current[0]
    if not isinstance(table, Leaf):  # only parameters have rows to look up
        raise TypeError(errors.at(f"lookup: needs a LookupParameter, got {type(table).__name__}"))
    p = table
    node = p._node
    n = node[1] if node[0] is g.ref else g.param_node(table)
    if isinstance(i, (list, tuple, np.ndarray)):
        ids = _indices(f"lookup {table.name}", i, len(table.data))
        return _expr(g, g.add(LOOKUP, (n,), (), ids, rows=len(ids)))
    if type(i) is not int or not 0 <= i < len(table.data):
        i = _index(f"lookup {table.name}", i, len(table.data))
    return _expr(g, g.add(LOOKUP, (n,), (), i))


# ---- elementwise -------------------------------------------------------------------------------------------


def tanh(x):
    """Elementwise tanh."""
    return _unary(TANH, x)


def logistic(x):
    """Elementwise logistic sigmoid 1 / (1 + exp(-x))."""
    return _unary(LOGISTIC, x)


def relu(x):
    """Elementwise max(x, 0)."""
    return _unary(RELU, x)


def exp(x):
    """Elementwise exp."""
    return _unary(EXP, x)


def log(x):
    """Elementwise natural log."""
    return _unary(LOG, x)


def square(x):
    """Elementwise x**2."""
    return _unary(SQUARE, x)


def sqrt(x):
    """Elementwise square root."""
    return _unary(SQRT, x)


def cmult(a, b):
    """Elementwise product (NumPy broadcasting)."""
    return _apply(MUL, (a, b))


def cdiv(a, b):
    """Elementwise quotient (NumPy broadcasting)."""
    return _apply(DIV, (a, b))


# ---- linear algebra, reductions, structure -----------------------------------------------------------------


_XVEC = {False: (("xvec", False),), True: (("xvec", True),)}


def matmul(a, x):
    """``a @ x``: a matrix times a vector or a matrix. A parameter matrix is shared by the whole batch."""
    g = _current[0]
    m, n = _node(g, a), _node(g, x)
    sig = g.n_sig[n]
    return _expr(g, g.add(MATMUL, (m, n), _XVEC[len(sig.shape) == 1]))


def affine(b, W, x):
    """``b + W @ x`` as one node."""
    g = _current[0]
    nb, nw, n = _node(g, b), _node(g, W), _node(g, x)
    sig = g.n_sig[n]  # (compiled, read with a C index)
    return _expr(g, g.add(AFFINE, (nb, nw, n), _XVEC[len(sig.shape) == 1]))


def transpose(x):
    """The transpose of a matrix."""
    return _unary(TRANSPOSE, x)


def reshape(x, shape):
    """``x`` with a new shape of the same size."""
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    return _apply(RESHAPE, (x,), (("shape", shape),))


def softmax(x):
    """Softmax over the last axis (of a scalar: 1, as in DyNet; of a sequence: row by row)."""
    return _unary(SOFTMAX, x)


def log_softmax(x):
    """Log-softmax over the last axis (of a scalar: 0; of a sequence: row by row)."""
    return _unary(LOG_SOFTMAX, x)


def pick(x, i):
    """``x[i]`` along the first axis (a scalar for a vector); ``i`` may differ per example and still batch."""
    g = _current[0]
    n = _node(g, x)
    shape = g.n_sig[n].shape
    if not shape:
        raise ValueError(errors.at("pick: cannot pick from a scalar (shape ())"))
    return _expr(g, g.add(PICK, (n,), (), _index("pick", i, shape[0])))


def pick_neg_log_softmax(x, i):
    """``-log softmax(x)[i]`` for a vector of logits: the cross-entropy loss, as one node. For a sequence of
    logit vectors, ``i`` lists one target per row and the result is the sequence of the rows' losses."""
    g = _current[0]
    n = _node(g, x)
    sig = g.n_sig[n]
    if len(sig.shape) != 1:
        raise ValueError(errors.at(f"pick_neg_log_softmax: needs a vector of logits, got shape {sig.shape}"))
    if sig.ragged:
        ids = _indices("pick_neg_log_softmax", i, sig.shape[0])
        if len(ids) != g.n_rows[n]:
            raise ValueError(errors.at(f"pick_neg_log_softmax: {len(ids)} targets for a sequence of "
                                       f"{g.n_rows[n]} rows"))
        return _expr(g, g.add(PICK_NLS, (n,), (), ids))
    return _expr(g, g.add(PICK_NLS, (n,), (), _index("pick_neg_log_softmax", i, sig.shape[0])))


def sequence(xs):
    """A sequence from a list of same-shape expressions (its rows). A sequence is one node however long, and
    per-row ops on it (``W @ s``, ``tanh``, ``concat``, losses) run over all rows of all examples at once."""
    xs = _nonempty("sequence", xs)
    g = _current[0]
    return _expr(g, g.add(SEQUENCE, tuple([_node(g, x) for x in xs])))


def row(s, t):
    """Row ``t`` of a sequence (negative ``t`` counts from the end)."""
    g = _current[0]
    n = _node(g, s)
    if not g.n_sig[n].ragged:
        raise ValueError(errors.at(f"row: needs a sequence, got a value of shape {g.shape_of(n)}"))
    T = g.n_rows[n]
    t = _index("row", t + T if type(t) is int and t < 0 else t, T)
    return _expr(g, g.add(PICK_ROW, (n,), (), t))


def rows(s):
    """The rows of a sequence, as a list of expressions."""
    g = _current[0]
    n = _node(g, s)
    if not g.n_sig[n].ragged:
        raise ValueError(errors.at(f"rows: needs a sequence, got a value of shape {g.shape_of(n)}"))
    return [_expr(g, g.add(PICK_ROW, (n,), (), t)) for t in range(g.n_rows[n])]


def _nonempty(op, xs):
    if type(xs) is not list:
        xs = list(xs)
    if not xs:
        raise ValueError(errors.at(f"{op}: needs a non-empty list"))
    return xs


_AXIS = [(("axis", k),) for k in range(8)]


def concat(xs, axis=0):
    """Concatenation of a list of expressions along ``axis`` of each example; scalars (0-d) make a vector."""
    xs = _nonempty("concat", xs)
    first = xs[0]
    if type(first) is Expression and first.g is _current[0]:
        if axis == 0 and not first.g.n_sig[first.i].shape:
            return stack(xs)  # scalars concatenate into a vector, as in DyNet
        if len(xs) == 1:
            return first  # (one of an earlier graph takes the general path, which refuses it)
    return _apply(CONCAT, xs, _AXIS[axis] if type(axis) is int and 0 <= axis < 8 else (("axis", int(axis)),))


def esum(xs):
    """The elementwise sum of a non-empty list of same-shape expressions, as one node."""
    xs = _nonempty("esum", xs)
    if len(xs) == 1 and type(xs[0]) is Expression and xs[0].g is _current[0]:
        return xs[0]  # (one of an earlier graph takes the general path, which refuses it)
    return _apply(ESUM, xs)


def sum_elems(x):
    """The sum of all elements (a scalar)."""
    return _unary(SUM_ELEMS, x)


def mean_elems(x):
    """The mean of all elements (a scalar); a sequence's mean is over all its rows."""
    g = _current[0]
    size = int(np.prod(g.shape_of(_node(g, x))))  # a sequence's shape starts with its row count
    return sum_elems(x) * (1.0 / size)


def forward(*exprs):
    """Compute several expressions in ONE batched pass (``value()`` on each in turn would run them apart).
    Inside ``batch_map`` the example waits for the others, as ``value()`` does."""
    g = _current[0]
    (_graph.value_hook[0] or _graph.Graph.forward)(g, *[_node(g, e) for e in exprs])


def dot(a, b):
    """The dot product of two same-shape expressions (a scalar)."""
    g = _current[0]
    sa, sb = g.n_sig[_node(g, a)].shape, g.n_sig[_node(g, b)].shape
    if sa != sb:
        raise ValueError(errors.at(f"dot: shapes {sa} and {sb} differ"))
    return sum_elems(cmult(a, b))


# ---- normalisation (issue 3) -------------------------------------------------------------------------------

_LN_EPS = {}


def layer_norm(x, gain, bias, eps=1e-5):
    """Layer normalisation of a vector (Ba et al. 2016): ``gain * (x - mean(x)) / sqrt(var(x) + eps) + bias``,
    as one node; ``gain`` and ``bias`` are usually parameters (shared by the batch), ``bias`` may be per example."""
    attrs = _LN_EPS.get(eps)
    if attrs is None:
        attrs = _LN_EPS[eps] = (("eps", float(eps)),)
    return _apply(LAYER_NORM, (x, gain, bias), attrs)


# ---- parts, stacks, reductions, more elementwise ops (issue 10) ----------------------------------------------
# Named with a trailing underscore where the name is a Python builtin (max, min, abs, pow): the package exports
# them as ab.max, ab.min, ab.abs, ab.pow, while code in this module keeps the builtins.


def _resolve(x):
    """The graph, node id and signature of ``x`` (an expression, parameter or array)."""
    g = _current[0]
    n = _node(g, x)
    return g, n, g.n_sig[n]


def _take(g, n, axis, idx):
    """Entries ``idx`` along ``axis`` of the value, or of every row of a sequence (``axis`` of a row)."""
    idx = np.asarray(idx, np.intp)
    rows = g.n_rows.get(n)
    aux = idx if rows is None else np.tile(idx, (rows, 1))  # a per-row op takes one index array per row
    return _expr(g, g.add(TAKE, (n,), (("axis", axis), ("n", len(idx))), aux))


def _take_rows(g, n, idx):
    return _expr(g, g.add(TAKE_ROWS, (n,), (), np.asarray(idx, np.intp), rows=len(idx)))


def _getitem(x, key):
    """``x[key]``: see ``Expression.__getitem__``."""
    g, n, sig = _resolve(x)
    if type(key) is tuple:
        raise TypeError(errors.at(f"x[{', '.join(map(repr, key))}]: index one axis at a time, x[i][j]"))
    if isinstance(key, (list, np.ndarray)):
        return select_rows(x, key)
    if not sig.ragged and not sig.shape:
        raise ValueError(errors.at(f"x[{key!r}]: cannot index a scalar (shape ())"))
    size = g.n_rows[n] if sig.ragged else sig.shape[0]
    if type(key) is slice:
        if key.step not in (None, 1):
            raise ValueError(errors.at(f"x[{key.start}:{key.stop}:{key.step}]: only step 1 is supported; "
                                       f"select_rows(x, list(range(...))) takes any rows"))
        a, b, _ = key.indices(size)
        if b <= a:
            raise IndexError(errors.at(f"x[{key.start}:{key.stop}]: empty range of an axis of size {size}"))
        return _take_rows(g, n, range(a, b)) if sig.ragged else _take(g, n, 0, range(a, b))
    if sig.ragged:
        return row(x, key)
    return pick(x, key + size if type(key) is int and -size <= key < 0 else key)


def pick_range(x, s, e, d=0):
    """Entries ``s`` to ``e - 1`` along axis ``d`` (DyNet's ``pick_range``; ``x[s:e]`` for ``d = 0``). Examples
    taking different ranges of one size share a kernel call. On a sequence, ``d = 0`` gives a shorter sequence
    and ``d > 0`` takes the range along axis ``d - 1`` of every row."""
    g, n, sig = _resolve(x)
    shape = g.shape_of(n)
    if not shape:
        raise ValueError(errors.at("pick_range: cannot take a range of a scalar (shape ())"))
    d = _index("pick_range axis", d, len(shape))
    s, e = (_index("pick_range", v, 1 << 62) if type(v) is not int else v for v in (s, e))  # ints, not bools
    if not 0 <= s < e <= shape[d]:
        what = "an empty range" if 0 <= s and e <= s else "out of range"
        raise IndexError(errors.at(f"pick_range: [{s}, {e}) is {what} for an axis of size {shape[d]}"))
    if sig.ragged:  # d = 0: some of its rows; d > 0: axis d - 1 of every row
        return _take(g, n, d - 1, range(s, e)) if d else _take_rows(g, n, range(s, e))
    return _take(g, n, d, range(s, e))


def select_rows(x, rows):
    """The rows ``rows`` (a list of ints: any order, repeats allowed) of a matrix (or vector: its entries), as
    DyNet's ``select_rows``; of a sequence, the sequence of those rows. Gradients of repeated rows add up."""
    g, n, sig = _resolve(x)
    if sig.ragged:
        return _take_rows(g, n, _indices("select_rows", rows, g.n_rows[n]))
    if not sig.shape:
        raise ValueError(errors.at("select_rows: cannot select from a scalar (shape ())"))
    return _take(g, n, 0, _indices("select_rows", rows, sig.shape[0]))


def select_cols(x, cols):
    """The columns ``cols`` (a list of ints: any order, repeats allowed) of a matrix, as DyNet's
    ``select_cols``; of a sequence of vectors (a T x d matrix), those entries of every row (a sequence)."""
    g, n, sig = _resolve(x)
    if len(sig.shape) != 2 - sig.ragged:
        raise ValueError(errors.at(f"select_cols: needs a matrix or a sequence of vectors, got "
                                   f"{'a sequence of shape ' if sig.ragged else 'shape '}{g.shape_of(n)}"))
    return _take(g, n, 1 - sig.ragged, _indices("select_cols", cols, sig.shape[-1]))


def stack(xs, axis=0):
    """Same-shape expressions stacked along a new axis ``axis`` (0: the first), as one node."""
    xs = _nonempty("stack", xs)
    if type(axis) is not int or axis < 0:
        raise ValueError(errors.at(f"stack: axis must be a non-negative int, got {axis!r}"))
    return _apply(STACK, xs, (("axis", axis),))


def ones(shape, dtype=None):
    """A constant of ones of ``shape`` (an int or tuple); weakly typed without ``dtype``, as ``zeros``."""
    return _filled(ONES, shape, dtype)


def _reduce(op, prim, over_rows, x, axis):
    """``prim`` over all elements (``axis=None``) or one axis; on a sequence axis 0 is its rows
    (``over_rows``) and axis k > 0 axis k - 1 of every row."""
    g, n, sig = _resolve(x)
    if axis is not None:
        ndim = len(sig.shape) + sig.ragged
        axis = _index(f"{op} axis", axis + ndim if type(axis) is int and -ndim <= axis < 0 else axis, ndim)
    if not sig.ragged:
        return _expr(g, g.add(prim, (n,), (("axis", axis),)))
    if axis is None:  # over every element of every row: each row's, then over the rows
        if sig.shape:
            n = g.add(prim, (n,), (("axis", None),))
        return _expr(g, g.add(over_rows, (n,)))
    if axis == 0:
        return _expr(g, g.add(over_rows, (n,)))
    return _expr(g, g.add(prim, (n,), (("axis", axis - 1),)))


def max_(x, axis=None):
    """The largest element (``axis=None``: a scalar) or the maxima along ``axis``. On a sequence, axis 0 runs
    over its rows: ``max(s, axis=0)`` is max pooling over time, batched across sentences of any lengths. The
    gradient goes to the first maximal element. Exported as ``ab.max``."""
    return _reduce("max", MAX, MAX_OVER_ROWS, x, axis)


def min_(x, axis=None):
    """The smallest element, or the minima along ``axis``; on a sequence as ``max``. Exported as ``ab.min``."""
    return _reduce("min", MIN, MIN_OVER_ROWS, x, axis)


def logsumexp(x, axis=None):
    """``log(sum(exp(x)))`` over all elements (a scalar) or along ``axis`` (on a sequence as ``max``). Given a
    list of same-shape expressions, their elementwise logsumexp, as DyNet's ``logsumexp([a, b, ...])``."""
    if isinstance(x, (list, tuple)):
        xs = _nonempty("logsumexp", x)
        return xs[0] if len(xs) == 1 else _reduce("logsumexp", LOGSUMEXP, None, stack(xs), 0)
    return _reduce("logsumexp", LOGSUMEXP, LOGSUMEXP_OVER_ROWS, x, axis)


_GRADIENT_MODES = ("zero_gradient", "straight_through")


def argmax(x, gradient_mode="zero_gradient"):
    """A one-hot vector marking the (first) largest entry of a vector, as DyNet's ``argmax``; its index is
    ``argmax(x).value().argmax()``, or simply ``x.value().argmax()``. ``gradient_mode``: "zero_gradient" (none
    flows back) or "straight_through" (the gradient passes to ``x`` unchanged). Row by row on a sequence."""
    if gradient_mode not in _GRADIENT_MODES:
        raise ValueError(errors.at(f"argmax: gradient_mode must be one of {_GRADIENT_MODES}, got {gradient_mode!r}"))
    return _apply(ARGMAX, (x,), (("gradient_mode", gradient_mode),))


def abs_(x):
    """Elementwise absolute value (gradient sign(x), 0 at 0). Exported as ``ab.abs``; ``abs(x)`` works too."""
    return _unary(ABS, x)


def pow_(x, p):
    """Elementwise ``x ** p``: ``p`` a Python number (a constant of the signature) or an expression / array
    (NumPy broadcasting; both get gradients). Exported as ``ab.pow``; ``x ** p`` works too."""
    if _is_scalar(p) and not isinstance(x, numbers.Real):
        return _unary(POW_CONST, x, (("p", float(p)),))
    return _apply(POW, (x, p))


sigmoid = logistic  # the same node: logistic is DyNet's name, sigmoid PyTorch's


def sin(x):
    """Elementwise sine."""
    return _unary(SIN, x)


def cos(x):
    """Elementwise cosine."""
    return _unary(COS, x)


def tan(x):
    """Elementwise tangent."""
    return _unary(TAN, x)


# ---- attention over sequences (issue 11) ---------------------------------------------------------------------
# Each is one node however long the sequence, and sequences of every length share its kernel call: Luong-style
# attention is scores = dot_rows(H, q); a = softmax_rows(scores); context = weighted_sum_rows(H, a).


def _sequence_of(op, x, what="a sequence"):
    g, n, sig = _resolve(x)
    if not sig.ragged:
        raise ValueError(errors.at(f"{op}: needs {what}, got a single value of shape {sig.shape}"))
    return g, n, sig


def dot_rows(S, q):
    """The dot product of every row of sequence ``S`` (vectors of size d) with the vector ``q`` (one per
    example, or a shared parameter): a sequence of scalars (attention scores)."""
    g, n, _ = _sequence_of("dot_rows", S, "a sequence of vectors")
    m = _node(g, q)
    if g.n_sig[m].ragged:
        raise ValueError(errors.at(f"dot_rows: the query must be one vector per example, got a sequence of "
                                   f"shape {g.shape_of(m)}"))
    return _expr(g, g.add(DOT_ROWS, (n, m)))


def softmax_rows(s):
    """The softmax over the rows of a sequence, per example: for a sequence of scalars (scores) a sequence of
    weights summing to 1; for a sequence of vectors the same for each element, over time."""
    g, n, _ = _sequence_of("softmax_rows", s)
    return _expr(g, g.add(SOFTMAX_ROWS, (n,)))


def weighted_sum_rows(S, w):
    """The rows of sequence ``S`` weighted by the sequence of scalars ``w`` (one per row) and summed: one value
    of a row's shape (the attention context ``sum_t w_t S_t``)."""
    g, n, _ = _sequence_of("weighted_sum_rows", S)
    _, m, _ = _sequence_of("weighted_sum_rows", w, "weights that are a sequence of scalars")
    if g.n_rows[n] != g.n_rows[m]:
        raise ValueError(errors.at(f"weighted_sum_rows: {g.n_rows[m]} weights for a sequence of {g.n_rows[n]} "
                                   f"rows"))
    return _expr(g, g.add(WEIGHTED_SUM_ROWS, (n, m)))
