"""Per-example expressions (DyNet style) and the functions that build them.

Each call records one node in the current graph and returns at once; values are computed, batched across
examples, only when ``value()`` or ``backward()`` needs them.
"""
import numbers
import operator

import numpy as np

from . import errors
from . import graph as _graph
from . import registry as R


class Operators:
    """``+ - * /`` (elementwise; scalars broadcast) and ``@``, for expressions and parameters alike."""

    __slots__ = ()
    __array_ufunc__ = None  # make NumPy defer to our reflected operators: array + expr is an expression

    def __add__(self, other):
        return _arith(self, other, R.ADD, lambda c: (1.0, c))

    def __radd__(self, other):
        return _arith(other, self, R.ADD, lambda c: (1.0, c))

    def __sub__(self, other):
        return _arith(self, other, R.SUB, lambda c: (1.0, -c))

    def __rsub__(self, other):
        return _arith(other, self, R.SUB, lambda c: (-1.0, c))

    def __mul__(self, other):
        return _arith(self, other, R.MUL, lambda c: (c, 0.0))

    def __rmul__(self, other):
        return _arith(other, self, R.MUL, lambda c: (c, 0.0))

    def __truediv__(self, other):
        return _arith(self, other, R.DIV, lambda c: (1.0 / c, 0.0))

    def __rtruediv__(self, other):
        if _is_scalar(other):
            return _unary(R.RDIV, self, (("c", float(other)),))
        return _arith(other, self, R.DIV, None)

    def __neg__(self):
        return _unary(R.SCALE_SHIFT, self, (("a", -1.0), ("b", 0.0)))

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)


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
        _node(_graph._current[0], self)  # raises for an expression of an earlier graph
        return self.g

    def value(self):
        """The value as a NumPy array, or a Python float for a 0-d result; runs what it needs, batched."""
        from kernels import backend

        v = backend.asnumpy(self._live().value_of(self.i))
        return float(v) if v.ndim == 0 else np.array(v)

    npvalue = value

    def scalar_value(self):
        """The value as a Python float (the expression must hold one element)."""
        v = self.value()
        if isinstance(v, float) or v.size == 1:
            return float(np.asarray(v).reshape(()))
        raise ValueError(errors.at(f"scalar_value: expression has shape {self.shape}"))

    def backward(self):
        """Add the gradient of this expression (summed if not a scalar) to every parameter's ``.grad``."""
        self._live().backward(self.i)

    def __repr__(self):
        return f"Expression({self.g.n_sig[self.i].prim.name}, shape={self.shape}, node={self.i})"


def _is_scalar(x):
    t = type(x)
    if t is float or t is int:
        return True
    return t is not Expression and not hasattr(x, "_node") and isinstance(x, numbers.Real) and t is not bool


def _arith(a, b, prim, const):
    """A binary op; a Python scalar on one side becomes the constant of one scale_shift node."""
    if const is not None:
        if _is_scalar(b):
            a_, b_ = const(float(b))
            return _unary(R.SCALE_SHIFT, a, (("a", a_), ("b", b_)))
        if _is_scalar(a):
            a_, b_ = const(float(a))
            return _unary(R.SCALE_SHIFT, b, (("a", a_), ("b", b_)))
    g = _graph._current[0]
    return Expression(g, g.add(prim, (_node(g, a), _node(g, b))))


def _node(g, x):
    """The node id of ``x`` in graph ``g``: an expression, a parameter or a NumPy array / constant."""
    if type(x) is Expression:
        if x.g is not g:
            raise RuntimeError(errors.at("expression belongs to an earlier graph: renew_cg() was called after "
                                         "it was built; rebuild it in the current graph"))
        return x.i
    node = getattr(x, "_node", None)  # a Parameter remembers its node in the latest graph that used it
    if node is not None:
        return node[1] if node[0] is g else g.param_node(x)
    if isinstance(x, (np.ndarray, numbers.Real)):
        return input_tensor(x).i
    raise TypeError(errors.at(f"expected an Expression, Parameter or array, got {type(x).__name__}"))


def _apply(prim, xs, attrs=(), aux=None):
    g = _graph._current[0]
    return Expression(g, g.add(prim, tuple([_node(g, x) for x in xs]), attrs, aux))


def _unary(prim, x, attrs=()):
    g = _graph._current[0]
    n = x.i if type(x) is Expression and x.g is g else _node(g, x)
    return Expression(g, g.add(prim, (n,), attrs))


def _index(op, i, size):
    """``i`` as an int in [0, size); ``op`` names the operation in the error."""
    if type(i) is not int:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(errors.at(f"{op}: index must be an int, got {type(i).__name__} {i!r}")) from None
    if not 0 <= i < size:
        raise IndexError(errors.at(f"{op}: index {i} out of range for size {size}"))
    return i


# ---- leaves ------------------------------------------------------------------------------------------------


def input_tensor(array, dtype=None):
    """A constant input (a NumPy array or number) in the dtype of the latest ParameterCollection by default."""
    dtype = np.dtype(dtype or _graph.default_dtype[0])
    value = np.asarray(array)
    if value.dtype.kind not in "biuf":
        raise TypeError(errors.at(f"input_tensor: expected numbers, got an array of dtype {value.dtype}"))
    value = np.array(value, dtype=dtype, order="C")  # a copy: later changes to the caller's array don't leak in
    return _apply(R.INPUT, (), (("shape", value.shape), ("dtype", dtype)), value)


_zeros_attrs = {}


def zeros(shape, dtype=None):
    """A constant of zeros of ``shape`` (an int or tuple)."""
    key = (shape, dtype or _graph.default_dtype[0])
    attrs = _zeros_attrs.get(key)
    if attrs is None:
        shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
        attrs = _zeros_attrs[key] = (("shape", shape), ("dtype", np.dtype(key[1])))
    g = _graph._current[0]
    return Expression(g, g.add(R.ZEROS, (), attrs))


def parameter(p):
    """A parameter as an expression of the current graph (``W @ x`` does this implicitly)."""
    g = _graph._current[0]
    return Expression(g, g.param_node(p))


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
    g = _graph._current[0]
    if isinstance(i, (list, tuple, np.ndarray)):
        ids = _indices(f"lookup {table.name}", i, len(table.data))
        node = table._node
        return Expression(g, g.add(R.LOOKUP, (node[1] if node[0] is g else g.param_node(table),), (), ids,
                                   rows=len(ids)))
    if type(i) is not int or not 0 <= i < len(table.data):
        i = _index(f"lookup {table.name}", i, len(table.data))
    node = table._node
    return Expression(g, g.add(R.LOOKUP, (node[1] if node[0] is g else g.param_node(table),), (), i))


# ---- elementwise -------------------------------------------------------------------------------------------


def tanh(x):
    """Elementwise tanh."""
    return _unary(R.TANH, x)


def logistic(x):
    """Elementwise logistic sigmoid 1 / (1 + exp(-x))."""
    return _unary(R.LOGISTIC, x)


def relu(x):
    """Elementwise max(x, 0)."""
    return _unary(R.RELU, x)


def exp(x):
    """Elementwise exp."""
    return _unary(R.EXP, x)


def log(x):
    """Elementwise natural log."""
    return _unary(R.LOG, x)


def square(x):
    """Elementwise x**2."""
    return _unary(R.SQUARE, x)


def sqrt(x):
    """Elementwise square root."""
    return _unary(R.SQRT, x)


def cmult(a, b):
    """Elementwise product (NumPy broadcasting)."""
    return _apply(R.MUL, (a, b))


def cdiv(a, b):
    """Elementwise quotient (NumPy broadcasting)."""
    return _apply(R.DIV, (a, b))


# ---- linear algebra, reductions, structure -----------------------------------------------------------------


_XVEC = {False: (("xvec", False),), True: (("xvec", True),)}


def matmul(a, x):
    """``a @ x``: a matrix times a vector or a matrix. A parameter matrix is shared by the whole batch."""
    g = _graph._current[0]
    ids = (_node(g, a), _node(g, x))
    return Expression(g, g.add(R.MATMUL, ids, _XVEC[len(g.n_sig[ids[1]].shape) == 1]))


def affine(b, W, x):
    """``b + W @ x`` as one node."""
    g = _graph._current[0]
    ids = (_node(g, b), _node(g, W), _node(g, x))
    return Expression(g, g.add(R.AFFINE, ids, _XVEC[len(g.n_sig[ids[2]].shape) == 1]))


def transpose(x):
    """The transpose of a matrix."""
    return _unary(R.TRANSPOSE, x)


def reshape(x, shape):
    """``x`` with a new shape of the same size."""
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    return _apply(R.RESHAPE, (x,), (("shape", shape),))


def softmax(x):
    """Softmax over the last axis."""
    return _unary(R.SOFTMAX, x)


def log_softmax(x):
    """Log-softmax over the last axis."""
    return _unary(R.LOG_SOFTMAX, x)


def pick(x, i):
    """``x[i]`` along the first axis (a scalar for a vector); ``i`` may differ per example and still batch."""
    g = _graph._current[0]
    n = _node(g, x)
    shape = g.n_sig[n].shape
    if not shape:
        raise ValueError(errors.at("pick: cannot pick from a scalar (shape ())"))
    return Expression(g, g.add(R.PICK, (n,), (), _index("pick", i, shape[0])))


def pick_neg_log_softmax(x, i):
    """``-log softmax(x)[i]`` for a vector of logits: the cross-entropy loss, as one node. For a sequence of
    logit vectors, ``i`` lists one target per row and the result is the sequence of the rows' losses."""
    g = _graph._current[0]
    n = _node(g, x)
    sig = g.n_sig[n]
    if len(sig.shape) != 1:
        raise ValueError(errors.at(f"pick_neg_log_softmax: needs a vector of logits, got shape {sig.shape}"))
    if sig.ragged:
        ids = _indices("pick_neg_log_softmax", i, sig.shape[0])
        if len(ids) != g.n_rows[n]:
            raise ValueError(errors.at(f"pick_neg_log_softmax: {len(ids)} targets for a sequence of "
                                       f"{g.n_rows[n]} rows"))
        return Expression(g, g.add(R.PICK_NLS, (n,), (), ids))
    return Expression(g, g.add(R.PICK_NLS, (n,), (), _index("pick_neg_log_softmax", i, sig.shape[0])))


def sequence(xs):
    """A sequence from a list of same-shape expressions (its rows). A sequence is one node however long, and
    per-row ops on it (``W @ s``, ``tanh``, ``concat``, losses) run over all rows of all examples at once."""
    xs = _nonempty("sequence", xs)
    g = _graph._current[0]
    return Expression(g, g.add(R.SEQUENCE, tuple([_node(g, x) for x in xs])))


def row(s, t):
    """Row ``t`` of a sequence (negative ``t`` counts from the end)."""
    g = _graph._current[0]
    n = _node(g, s)
    if not g.n_sig[n].ragged:
        raise ValueError(errors.at(f"row: needs a sequence, got a value of shape {g.shape_of(n)}"))
    T = g.n_rows[n]
    t = _index("row", t + T if type(t) is int and t < 0 else t, T)
    return Expression(g, g.add(R.PICK_ROW, (n,), (), t))


def rows(s):
    """The rows of a sequence, as a list of expressions."""
    g = _graph._current[0]
    n = _node(g, s)
    if not g.n_sig[n].ragged:
        raise ValueError(errors.at(f"rows: needs a sequence, got a value of shape {g.shape_of(n)}"))
    return [Expression(g, g.add(R.PICK_ROW, (n,), (), t)) for t in range(g.n_rows[n])]


def _nonempty(op, xs):
    if type(xs) is not list:
        xs = list(xs)
    if not xs:
        raise ValueError(errors.at(f"{op}: needs a non-empty list"))
    return xs


_AXIS = [(("axis", k),) for k in range(8)]


def concat(xs, axis=0):
    """Concatenation of a list of expressions along ``axis`` of each example."""
    xs = _nonempty("concat", xs)
    if len(xs) == 1 and type(xs[0]) is Expression:
        return xs[0]
    return _apply(R.CONCAT, xs, _AXIS[axis] if type(axis) is int and 0 <= axis < 8 else (("axis", int(axis)),))


def esum(xs):
    """The elementwise sum of a non-empty list of same-shape expressions, as one node."""
    xs = _nonempty("esum", xs)
    return xs[0] if len(xs) == 1 and type(xs[0]) is Expression else _apply(R.ESUM, xs)


def sum_elems(x):
    """The sum of all elements (a scalar)."""
    return _unary(R.SUM_ELEMS, x)


def mean_elems(x):
    """The mean of all elements (a scalar)."""
    g = _graph._current[0]
    size = int(np.prod(g.n_sig[_node(g, x)].shape))
    return sum_elems(x) * (1.0 / size)


def forward(*exprs):
    """Compute several expressions in ONE batched pass (``value()`` on each in turn would run them apart).
    Inside ``batch_map`` the example waits for the others, as ``value()`` does."""
    g = _graph._current[0]
    (_graph.value_hook[0] or _graph.Graph.forward)(g, *[_node(g, e) for e in exprs])


def dot(a, b):
    """The dot product of two same-shape expressions (a scalar)."""
    g = _graph._current[0]
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
    return _apply(R.LAYER_NORM, (x, gain, bias), attrs)
