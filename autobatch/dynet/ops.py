"""DyNet's expression functions (``dy.tanh``, ``dy.pickneglogsoftmax_batch``, ``dy.concatenate`` ...) with
DyNet's semantics, each recorded as one or a few engine nodes. A minibatch (a sequence of B rows) goes through
per-row primitives; a single value meeting a minibatch is broadcast to it, as in DyNet."""
import numbers

import numpy as np

from .. import errors
from .. import graph as _graph
from .. import ops as _core_ops
from .. import registry as R
from .expression import (Expression, add, affine, align, batch_rows, batch_size as _bsize, cdiv, constant_node,
                         node, pick, pow_, rank, repeat, reshape as _reshape, scale_shift, select, shape, unary)
from .params import LookupParameters, rng

__all__ = []  # filled at the end: every public function below


def _g():
    return _graph._current[0]


def _ex(n):
    return Expression(_graph._current[0], n)


def _list(op, xs):
    xs = list(xs)
    if not xs:
        raise ValueError(errors.at(f"{op}: needs a non-empty list of expressions"))
    return xs


# ---- inputs ---------------------------------------------------------------------------------------------------


def inputTensor(arr, batched=False, device="", reusable_expr=False):
    """A constant input from a NumPy array (or nested list). ``batched=True``: the last axis indexes batch
    elements; a Python list of arrays is a list of batch elements."""
    if isinstance(arr, list) and arr and isinstance(arr[0], np.ndarray):
        value, batched = np.stack([np.asarray(a, dtype=float) for a in arr]), True
    else:
        value = np.asarray(arr, dtype=float)
        if batched:
            value = np.moveaxis(value, -1, 0)
    if value.dtype.kind not in "biuf":
        raise TypeError(errors.at(f"inputTensor: expected numbers, got dtype {value.dtype}"))
    return _ex(constant_node(_g(), value, batched))


def inputVector(v, device=""):
    """A vector input (settable with ``.set``)."""
    return _ex(constant_node(_g(), np.asarray(v, dtype=float).reshape(-1)))


def vecInput(dim, device=""):
    """A vector input of zeros, to be ``.set`` before use."""
    return _ex(constant_node(_g(), np.zeros(int(dim))))


def scalarInput(s, device=""):
    """A scalar input."""
    return _ex(constant_node(_g(), np.asarray(float(s))))


def matInput(d1, d2):
    """A (d1, d2) matrix input of zeros, to be ``.set``."""
    return _ex(constant_node(_g(), np.zeros((int(d1), int(d2)))))


def inputMatrix(v, d):
    """A matrix from a flat list in column-major order (DyNet's)."""
    return _ex(constant_node(_g(), np.asarray(v, dtype=float).reshape(tuple(d), order="F")))


def sparse_inputTensor(idxs, values, shape, batched=False, defval=0, device=""):
    """An input of ``defval`` everywhere except at ``idxs`` (one index list per dimension)."""
    dense = np.full(tuple(shape), float(defval))
    dense[tuple(np.asarray(i, dtype=np.intp) for i in idxs)] = values
    return inputTensor(dense, batched)


def one_hot(d, idx, device=""):
    """A vector of ``d`` zeros with a 1 at ``idx``."""
    v = np.zeros(int(d))
    v[idx] = 1
    return inputVector(v)


def _filled(dim, batch_size, fill):
    dims = (int(dim),) if isinstance(dim, numbers.Integral) else tuple(int(x) for x in dim)
    shp = (batch_size,) + dims if batch_size > 1 else dims
    return _ex(constant_node(_g(), fill(shp), batch_size > 1))


def zeros(dim, batch_size=1):
    """Zeros of ``dim`` (a minibatch of them for ``batch_size`` > 1)."""
    return _filled(dim, batch_size, np.zeros)


zeroes = zeros


def ones(dim, batch_size=1):
    """Ones of ``dim``."""
    return _filled(dim, batch_size, np.ones)


def constant(dim, val, batch_size=1):
    """``val`` everywhere."""
    return _filled(dim, batch_size, lambda s: np.full(s, float(val)))


def random_normal(dim, mean=0.0, stddev=1.0, batch_size=1):
    """Samples of N(mean, stddev^2), drawn when built."""
    return _filled(dim, batch_size, lambda s: rng().normal(mean, stddev, size=s))


def random_bernoulli(dim, p, scale=1.0, batch_size=1):
    """``scale`` with probability p, else 0."""
    return _filled(dim, batch_size, lambda s: (rng().random(s) < p) * float(scale))


def random_uniform(dim, left, right, batch_size=1):
    """Samples of U(left, right)."""
    return _filled(dim, batch_size, lambda s: rng().uniform(left, right, size=s))


def random_gumbel(dim, mu=0.0, beta=1.0, batch_size=1):
    """Samples of Gumbel(mu, beta)."""
    return _filled(dim, batch_size, lambda s: rng().gumbel(mu, beta, size=s))


# ---- parameters and lookups -----------------------------------------------------------------------------------


def parameter(*params):
    """Parameters as expressions of the current graph (one, or a list for several)."""
    out = [p.expr() if not isinstance(p, LookupParameters) else _table(p, True) for p in params]
    return out[0] if len(out) == 1 else out


def const_parameter(*params):
    """Parameters as expressions through which no gradient flows."""
    out = [nobackprop(_ex(node(_g(), p))) for p in params]
    return out[0] if len(out) == 1 else out


def _table(p, update):
    e = _ex(node(_g(), p))
    return e if update else nobackprop(e)


def lookup(p, index=0, update=True):
    """Row ``index`` of a lookup table (``update=False``: the row gets no gradient)."""
    g = _g()
    e = _ex(g.add(R.LOOKUP, (node(g, p),), (), _core_ops._index("lookup", index, len(p._p.data))))
    return e if update else nobackprop(e)


def lookup_batch(p, indices, update=True):
    """Rows ``indices`` of a lookup table as one minibatch expression (batch size ``len(indices)``)."""
    g = _g()
    ids = _core_ops._indices("lookup_batch", list(indices), len(p._p.data))
    e = _ex(g.add(R.LOOKUP, (node(g, p),), (), ids, rows=len(ids)))
    return e if update else nobackprop(e)


def nobackprop(x):
    """``x``, through which no gradient flows."""
    return scale_gradient(x, 0.0)


def flip_gradient(x):
    """``x`` forward; the negated gradient backward."""
    return scale_gradient(x, -1.0)


def scale_gradient(x, lambd=1.0):
    """``x`` forward; the gradient times ``lambd`` backward."""
    return unary(R.DY_SCALE_GRADIENT, x, (("lambd", float(lambd)),))


# ---- elementwise ----------------------------------------------------------------------------------------------


def tanh(x):
    """Elementwise tanh."""
    return unary(R.TANH, x)


def logistic(x):
    """Elementwise logistic sigmoid."""
    return unary(R.LOGISTIC, x)


sigmoid = logistic


def rectify(x):
    """Elementwise max(x, 0)."""
    return unary(R.RELU, x)


relu = rectify


def exp(x):
    """Elementwise exp."""
    return unary(R.EXP, x)


def log(x):
    """Elementwise natural log."""
    return unary(R.LOG, x)


def square(x):
    """Elementwise x^2."""
    return unary(R.SQUARE, x)


def sqrt(x):
    """Elementwise square root."""
    return unary(R.SQRT, x)


def cube(x):
    """Elementwise x^3."""
    return cmult(square(x), x)


def abs(x):  # noqa: A001 - DyNet's name
    """Elementwise |x|."""
    return _core("abs", x)


def log_sigmoid(x):
    """Elementwise log(logistic(x)), as -softplus(-x) = -(relu(-x) + log(1 + exp(-|x|)))."""
    return -(rectify(-x) + log(scale_shift(exp(-abs(x)), 1.0, 1.0)))


def softsign(x):
    """Elementwise x / (1 + |x|)."""
    return cdiv(x, scale_shift(abs(x), 1.0, 1.0))


def elu(x, alpha=1.0):
    """Elementwise x for x > 0, alpha (exp(x) - 1) otherwise."""
    return rectify(x) + scale_shift(exp(-rectify(-x)), float(alpha), -float(alpha))


def selu(x):
    """Scaled ELU (Klambauer et al. 2017)."""
    return elu(x, 1.6732632423543772) * 1.0507009873554805


def silu(x, beta=1.0):
    """Elementwise x * logistic(beta x)."""
    return cmult(x, logistic(scale_shift(x, float(beta), 0.0)))


def _core(name, x, *args, **kw):
    """The engine's ``ab.<name>`` applied to a DyNet expression (the core API's op, same semantics here)."""
    import autobatch as ab
    from ..ops import Expression as Core

    g = _g()
    return _ex(getattr(ab, name)(Core(g, node(g, x)), *args, **kw).i)


def sin(x):
    """Elementwise sine."""
    return _core("sin", x)


def cos(x):
    """Elementwise cosine."""
    return _core("cos", x)


def tan(x):
    """Elementwise tangent."""
    return _core("tan", x)


def sinh(x):
    """Elementwise sinh = (exp(x) - exp(-x)) / 2."""
    return (exp(x) - exp(-x)) * 0.5


def cosh(x):
    """Elementwise cosh = (exp(x) + exp(-x)) / 2."""
    return (exp(x) + exp(-x)) * 0.5


def cmult(x, y):
    """Elementwise product (a single value broadcasts over a minibatch)."""
    return add(R.MUL, (x, y))


def bmax(x, y):
    """Elementwise max: relu(x - y) + y."""
    return rectify(x - y) + y


def bmin(x, y):
    """Elementwise min: x - relu(x - y)."""
    return x - rectify(x - y)


pow = pow_  # noqa: A001 - DyNet's name


# ---- products, sums, norms --------------------------------------------------------------------------------------


def affine_transform(exprs):
    """``b + W1 x1 + W2 x2 + ...`` from the list [b, W1, x1, W2, x2, ...]."""
    exprs = list(exprs)
    if len(exprs) % 2 != 1:
        raise ValueError(errors.at("affine_transform: needs [b, W1, x1, W2, x2, ...]"))
    if len(exprs) == 1:
        return exprs[0]
    out = affine(*exprs[:3])
    for k in range(3, len(exprs), 2):
        out = affine(out, exprs[k], exprs[k + 1])
    return out


def colwise_add(x, y):
    """Add vector ``y`` to every column of matrix ``x``."""
    return add(R.ADD, (x, _reshape(y, shape(y) + (1,))))


def sum_elems(x):
    """The sum of all elements of each example (one scalar per batch element)."""
    g = _g()
    n = node(g, x)
    return _ex(g.add(R.SUM_ELEMS_ROWS if g.n_sig[n].ragged else R.SUM_ELEMS, (n,)))


def mean_elems(x):
    """The mean of all elements of each example."""
    return sum_elems(x) * (1.0 / max(int(np.prod(shape(x))), 1))


def dot_product(x, y):
    """The dot product of two vectors."""
    return sum_elems(cmult(x, y))


def squared_norm(x):
    """The sum of squares."""
    return sum_elems(square(x))


def l2_norm(x):
    """The Euclidean norm."""
    return sqrt(squared_norm(x))


def squared_distance(x, y):
    """||x - y||^2."""
    return squared_norm(x - y)


def l1_distance(x, y):
    """||x - y||_1."""
    return sum_elems(abs(x - y))


def huber_distance(x, y, c=1.345):
    """Huber distance: sum of d^2/2 where |d| <= c, else c |d| - c^2/2 (d = x - y)."""
    a = abs(x - y)
    small = bmin(a, constant(shape(x) or 1, c))
    return sum_elems(square(small) * 0.5 + (a - small) * c)


def binary_log_loss(x, y):
    """-sum(y log x + (1 - y) log(1 - x))."""
    return -sum_elems(cmult(y, log(x)) + cmult(1 - y, log(1 - x)))


def esum(xs):
    """The sum of a list of expressions."""
    xs = _list("esum", xs)
    if len(xs) == 1:
        return _ex(node(_g(), xs[0]))
    g = _g()
    ids = [node(g, x) for x in xs]
    if any(g.n_sig[n].ragged for n in ids):  # minibatches: a balanced tree of per-row adds
        while len(ids) > 1:
            pairs = [align(g, tuple(ids[k:k + 2])) for k in range(0, len(ids) - 1, 2)]
            ids = [g.add(R.ADD, p) for p in pairs] + ids[len(ids) - len(ids) % 2:]
        return _ex(ids[0])
    return _ex(g.add(R.ESUM, tuple(ids)))


def average(xs):
    """The mean of a list of expressions."""
    xs = _list("average", xs)
    return esum(xs) * (1.0 / len(xs))


def emax(xs):
    """The elementwise max of a list of expressions."""
    xs = _list("emax", xs)
    out = xs[0]
    for x in xs[1:]:
        out = bmax(out, x)
    return out


def sum_batches(x):
    """The sum over a minibatch's elements (a single value is returned as it is)."""
    g = _g()
    n = node(g, x)
    return _ex(g.add(R.DY_SUM_ROWS, (n,)) if g.n_sig[n].ragged else n)


def mean_batches(x):
    """The mean over a minibatch's elements."""
    return sum_batches(x) * (1.0 / _bsize(_g(), node(_g(), x)))


def sum_dim(x, d, b=False, n=0):
    """Sum over dims ``d`` (and over the batch with ``b``)."""
    out = x
    for k in sorted(d, reverse=True):
        size = shape(out)[k]
        out = esum([select(out, [("slice", None, None, None)] * k + [j]) for j in range(size)])
    return sum_batches(out) if b else out


def logsumexp(xs):
    """Elementwise log(sum(exp)) over a list of same-shape expressions, stably: for the columns M of the
    list, m_0 - log_softmax(M)_0 per row."""
    xs = _list("logsumexp", xs)
    if len(xs) == 1:
        return xs[0]
    if rank(xs[0]) == 0:
        v = concatenate(xs)
        return _first(v - log_softmax(v))
    return logsumexp_dim(concatenate_cols(xs), 1)


def _first(v):
    return pick(v, 0)


def logsumexp_dim(x, d=0):
    """log(sum(exp)) along dim ``d`` of a vector or matrix."""
    if rank(x) == 1:
        return _first(x - log_softmax(x))
    m = x if d == 1 else transpose(x)  # rows of m are reduced
    return select(m - _softmax_rows(m, R.LOG_SOFTMAX), [("slice", None, None, None), 0])


# ---- softmax and losses -----------------------------------------------------------------------------------------


def _softmax_rows(x, prim):
    return unary(prim, x)


def softmax(x, d=0):
    """Softmax of a vector, or of each column (``d=0``, DyNet's default) or row (``d=1``) of a matrix."""
    if rank(x) == 2 and d == 0:
        return transpose(unary(R.SOFTMAX, transpose(x)))
    return unary(R.SOFTMAX, x)


def log_softmax(x, restrict=None):
    """Log-softmax of a vector (of each column of a matrix); ``restrict``: only those indices keep mass."""
    if restrict is not None:
        mask = np.full(shape(x), -np.inf)
        mask[list(restrict)] = 0.0
        x = x + inputTensor(np.where(np.isinf(mask), -1e30, 0.0))
    if rank(x) == 2:
        return transpose(unary(R.LOG_SOFTMAX, transpose(x)))
    return unary(R.LOG_SOFTMAX, x)


def pickneglogsoftmax(x, v):
    """-log softmax(x)[v] (the same v for every batch element)."""
    g = _g()
    n = node(g, x)
    B = _bsize(g, n)
    return _pnls(g, n, [v] * B if g.n_sig[n].ragged else v)  # _pnls checks v: no int() that takes True or 2.7


def pickneglogsoftmax_batch(x, vs):
    """-log softmax(x_b)[v_b] for each batch element b."""
    g = _g()
    vs = list(vs)  # checked as indices by _pnls
    n = node(g, x)
    if not g.n_sig[n].ragged:
        n = repeat(g, n, len(vs))
    elif g.n_rows[n] != len(vs):
        raise ValueError(errors.at(f"pickneglogsoftmax_batch: {len(vs)} targets for a batch of {g.n_rows[n]}"))
    return _pnls(g, n, vs)


def _pnls(g, n, v):
    size = g.n_sig[n].shape
    if len(size) != 1:
        raise ValueError(errors.at(f"pickneglogsoftmax: needs a vector, got dims {size}"))
    if np.ndim(v) == 0:
        return _ex(g.add(R.PICK_NLS, (n,), (), _core_ops._index("pickneglogsoftmax", v, size[0])))
    return _ex(g.add(R.PICK_NLS, (n,), (), _core_ops._indices("pickneglogsoftmax", v, size[0])))


def pick_batch(x, indices, dim=0):
    """Element ``indices[b]`` of batch element b."""
    g = _g()
    n = node(g, x)
    ids = _core_ops._indices("pick_batch", list(indices), (g.n_sig[n].shape or (1,))[dim])
    if not g.n_sig[n].ragged:
        n = repeat(g, n, len(ids))
    if dim:
        return concatenate_to_batch([pick(batch_rows(_ex(n), [b]), int(i), dim) for b, i in enumerate(ids)])
    return _ex(g.add(R.PICK_ROWS, (n,), (), ids))


def hinge(x, index, m=1.0):
    """Multiclass hinge loss: sum_j max(0, m - x[index] + x[j]) over j != index."""
    return sum_elems(rectify(x - pick(x, index) + float(m))) - float(m)


def pick_batch_elem(x, v):
    """Batch element ``v`` of a minibatch."""
    return batch_rows(x, [int(v)]) if _bsize(_g(), node(_g(), x)) > 1 or v else x


def pick_batch_elems(x, vs):
    """Batch elements ``vs`` as a minibatch."""
    return batch_rows(x, [int(v) for v in vs])


def concatenate_to_batch(xs):
    """One minibatch of the batch elements of every expression in ``xs``."""
    g = _g()
    rows = []
    for x in _list("concatenate_to_batch", xs):
        n = node(g, x)
        rows += ([g.add(R.PICK_ROW, (n,), (), r) for r in range(g.n_rows[n])] if g.n_sig[n].ragged else [n])
    return _ex(g.add(R.SEQUENCE, tuple(rows)))


def noise(x, stddev):
    """``x`` plus Gaussian noise of ``stddev`` (drawn when built)."""
    g = _g()
    n = node(g, x)
    B = _bsize(g, n)
    ragged = g.n_sig[n].ragged
    shp = ((B,) if ragged else ()) + g.n_sig[n].shape
    return add(R.ADD, (x, _ex(constant_node(g, rng().normal(0, stddev, size=shp), ragged))))


def _mask(x, p, per_batch=False, block=False):
    g = _g()
    n = node(g, x)
    ragged = g.n_sig[n].ragged
    B = _bsize(g, n)
    item = () if block else g.n_sig[n].shape
    if per_batch and ragged:
        m = np.broadcast_to((rng().random(item) >= p) / (1 - p), (B,) + item)
    else:
        m = (rng().random(((B,) if ragged else ()) + item) >= p) / (1 - p)
    return cmult(x, _ex(constant_node(g, m, ragged)))


def dropout(x, p):
    """Inverted dropout: each unit zeroed with probability p, the rest scaled by 1 / (1 - p)."""
    return x if p == 0 else _mask(x, float(p))


def dropout_batch(x, p):
    """Dropout with one mask shared by every batch element."""
    return x if p == 0 else _mask(x, float(p), per_batch=True)


def block_dropout(x, p):
    """Drop a whole example (every unit) with probability p."""
    return x if p == 0 else _mask(x, float(p), block=True)


# ---- structure --------------------------------------------------------------------------------------------------


def reshape(x, d, batch_size=1):
    """Column-major reshape to dims ``d`` and ``batch_size`` batch elements (DyNet's layout: the batch is the
    slowest-varying axis, so batch element b is the b-th block of the column-major values)."""
    d = () if tuple(d) == (1,) else tuple(int(k) for k in d)
    g = _g()
    n = node(g, x)
    B = _bsize(g, n)
    if batch_size == B:
        return _reshape(x, d)
    item = int(np.prod(d))
    total = int(np.prod(g.n_sig[n].shape)) * B
    if item * batch_size != total:
        raise ValueError(errors.at(f"reshape: {total} values do not fill {batch_size} x {d or (1,)}"))
    if B == 1:  # one value -> a minibatch of its blocks
        flat = _reshape(x, (total,))
        rows = [_reshape(select(flat, [("slice", b * item, (b + 1) * item, 1)]), d) for b in range(batch_size)]
        return _ex(g.add(R.SEQUENCE, tuple(node(g, r) for r in rows)))
    if batch_size == 1:  # a minibatch -> one value of its blocks one after another
        flat = [_reshape(batch_rows(x, [b]), (total // B,)) for b in range(B)]
        return _reshape(concatenate(flat), d)
    return reshape(reshape(x, (total,), 1), d, batch_size)


def transpose(x, dims=(1, 0)):
    """The transpose of a matrix (a vector (d,) becomes (1, d))."""
    g = _g()
    n = node(g, x)
    r = len(g.n_sig[n].shape)
    if r == 0:
        return _ex(n)
    if r == 1:
        return _reshape(x, (1,) + g.n_sig[n].shape)
    if list(dims) != [1, 0]:
        raise ValueError(errors.at(f"transpose: only dims [1, 0] of a matrix are supported, got {list(dims)}"))
    return _ex(g.add(R.TRANSPOSE_ROWS if g.n_sig[n].ragged else R.TRANSPOSE, (n,)))


def select_rows(x, rs):
    """Rows ``rs`` of a matrix (or elements of a vector)."""
    return select(x, [("take", tuple(int(r) for r in rs))])


def select_cols(x, cs):
    """Columns ``cs`` of a matrix."""
    return select(x, [("slice", None, None, None), ("take", tuple(int(c) for c in cs))])


def pick_range(x, s, e, d=0):
    """Elements [s, e) along dim ``d``."""
    return select(x, [("slice", None, None, None)] * d + [("slice", int(s), int(e), 1)])


pickrange = pick_range


def strided_select(x, strides, range_from, range_to):
    """Every ``strides[k]``-th element from ``range_from[k]`` to ``range_to[k]`` along each dim k."""
    shp = shape(x)
    specs = []
    for k, d in enumerate(shp):
        st = strides[k] if k < len(strides) else 1
        lo = range_from[k] if k < len(range_from) else 0
        hi = range_to[k] if k < len(range_to) else d
        specs.append(("slice", lo, hi, st))
    return select(x, specs)


def _as_vector(x):
    return _reshape(x, (1,)) if rank(x) == 0 else x


def concatenate(xs, d=0):
    """Concatenation along dim ``d`` (scalars count as vectors of one)."""
    xs = [_as_vector(x) for x in _list("concatenate", xs)]
    if len(xs) == 1:
        return xs[0]
    if d >= rank(xs[0]):
        xs = [_reshape(x, shape(x) + (1,) * (d + 1 - rank(x))) for x in xs]
    return add(R.CONCAT, tuple(xs), (("axis", int(d)),), shares=False)


def concatenate_cols(xs):
    """Vectors (or matrices) side by side as the columns of a matrix."""
    xs = [_as_vector(x) for x in _list("concatenate_cols", xs)]
    return concatenate([_reshape(x, shape(x) + (1,)) if rank(x) == 1 else x for x in xs], 1)


def max_dim(x, d=0):
    """The max along dim ``d`` (for a minibatch, a chain of elementwise maxes over the dim's slices)."""
    return _extreme(x, d, bmax, "max")


def min_dim(x, d=0):
    """The min along dim ``d``."""
    return _extreme(x, d, bmin, "min")


def _extreme(x, d, pairwise, name):
    g = _g()
    n = node(g, x)
    if not g.n_sig[n].ragged:
        return _core(name, x, axis=d)
    size = g.n_sig[n].shape[d]
    parts = [select(x, [("slice", None, None, None)] * d + [j]) for j in range(size)]
    out = parts[0]
    for p in parts[1:]:
        out = pairwise(out, p)
    return out


def layer_norm(x, g, b):
    """DyNet's layer normalisation: g * (x - mean) / (std + 1e-8) + b, std the population deviation."""
    c = x - mean_elems(x)
    std = sqrt(mean_elems(square(c)))
    return cmult(g, cdiv(c, scale_shift(std, 1.0, 1e-8))) + b


def weight_norm(w, g):
    """``w`` scaled to norm ``g`` (Salimans & Kingma 2016)."""
    return cmult(w, cdiv(g, l2_norm(w)))


def argmax(x, gradient_mode="zero_gradient"):
    """A one-hot vector at the max of ``x`` (``gradient_mode``: "zero_gradient" or "straight_through_gradient")."""
    return _core("argmax", x, gradient_mode=gradient_mode)


def to_device(e, device_str):
    """The engine has one device per process: ``e`` itself."""
    return e


__all__ = [k for k, v in list(globals().items()) if callable(v) and not k.startswith("_")
           and getattr(v, "__module__", None) == __name__] + ["pow", "cdiv", "zeroes", "sigmoid", "relu",
                                                              "pickrange", "pick"]


# ---- convolution (DyNet's image layout: (H, W, C) per example) ---------------------------------------------------


def conv2d(x, f, stride, is_valid=True):
    """2-d convolution of an (H, W, C_in) image with (kh, kw, C_in, C_out) filters; VALID or SAME padding."""
    return add(R.DY_CONV2D, (x, f), (("stride", tuple(int(s) for s in stride)), ("valid", bool(is_valid))))


def conv2d_bias(x, f, b, stride, is_valid=True):
    """``conv2d`` plus a bias per output channel."""
    return add(R.ADD, (conv2d(x, f, stride, is_valid), b))


def maxpooling2d(x, ksize, stride, is_valid=True):
    """The max over each (kh, kw) window, per channel."""
    return unary(R.DY_MAXPOOL2D, x, (("ksize", tuple(int(k) for k in ksize)),
                                     ("stride", tuple(int(s) for s in stride)), ("valid", bool(is_valid))))


__all__ += ["conv2d", "conv2d_bias", "maxpooling2d"]
