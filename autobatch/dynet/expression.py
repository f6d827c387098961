"""DyNet's ``Expression``, recorded as a node of the engine's current graph.

Layout: an expression's DyNet dimensions are its engine shape (a DyNet scalar, dims ``(1,)``, is a 0-d value
here, so that it broadcasts against anything). A DyNet minibatch of B examples (``lookup_batch``,
``inputTensor(batched=True)``) is one *sequence* node of B rows, each row one example's value, so the engine's
per-row kernels serve a whole minibatch in one call; its ``npvalue`` puts the batch last, as DyNet does.
"""
import numbers

import numpy as np

from autobatch.kernels import backend
from autobatch.kernels.layout import Input

from .. import errors
from .. import graph as _graph
from .. import ops as _core_ops
from .. import registry as R


def cg():
    """The current graph (DyNet's ``cg()``)."""
    return _graph._current[0]


class Expression:
    """A DyNet expression: ``*`` is the matrix product, ``+ - /`` elementwise with DyNet's broadcasting."""

    __slots__ = ("g", "i")

    def __init__(self, g, i):
        self.g, self.i = g, i

    # ---- what DyNet reports --------------------------------------------------------------------------------

    def _live(self):
        if self.g is not _graph._current[0]:
            raise RuntimeError("Stale Expression (created before renewing the Computation Graph).")
        return self.g

    def dim(self):
        """``(dims, batch_size)`` as DyNet reports them (a scalar has dims ``(1,)``)."""
        g = self._live()
        return g.n_sig[self.i].shape or (1,), batch_size(g, self.i)

    def _array(self, recalculate=False):
        g = self._live()
        if recalculate:
            g.invalidate()
        return np.array(backend.asnumpy(g.value_of(self.i)))

    def npvalue(self, recalculate=False):
        """The value as a NumPy array; a minibatch's batch axis comes last (DyNet's layout). ``recalculate``:
        recompute the whole graph first (parameters or inputs changed since)."""
        v = self._array(recalculate)
        if self.g.n_sig[self.i].ragged:
            v = np.moveaxis(v.reshape(v.shape[:1] + (self.g.n_sig[self.i].shape or (1,))), 0, -1)
        return v.reshape(1) if v.ndim == 0 else v

    def vec_value(self, recalculate=False):
        """All values as a flat list: batch element after batch element, each in column-major order."""
        v = self._array(recalculate)
        if not self.g.n_sig[self.i].ragged:
            v = v[None]
        return [float(a) for item in v for a in np.asarray(item).flatten(order="F")]

    def scalar_value(self, recalculate=False):
        """The value of a one-element expression as a float (the first element of a minibatch's)."""
        v = self._array(recalculate)
        return float(v.reshape(-1)[0])

    def value(self, recalculate=False):
        """A float (one element), a list (a vector or a minibatch of scalars) or an array (2+ dims)."""
        if len(self.g.n_sig[self.i].shape) >= 2:
            return self.npvalue(recalculate)
        vec = self.vec_value(recalculate)
        return vec[0] if len(vec) == 1 else vec

    def tensor_value(self, recalculate=False):
        """The value as a NumPy array (DyNet's Tensor)."""
        return self.npvalue()

    def forward(self, recalculate=False):
        """Compute this expression (and what it needs), batched; ``recalculate``: the whole graph again."""
        g = self._live()
        if recalculate:
            g.invalidate()
        g.forward(self.i)

    def backward(self, full=False):
        """Accumulate gradients into the parameters; ``full=True`` also records them for inputs (``gradient``)."""
        g = self._live()
        Input.record[0] = bool(full)
        try:
            g.backward(self.i)
        finally:
            Input.record[0] = False

    def gradient(self):
        """The gradient reaching this input expression in the last ``backward(full=True)``."""
        g = self._live()
        item = g.n_aux.get(self.i)
        if g.n_sig[self.i].prim is not R.DY_INPUT:
            raise RuntimeError("gradient(): available for input expressions (inputTensor, vecInput, ...) after "
                               "backward(full=True); a parameter's is p.grad_as_array()")
        if item.grad is None:
            raise RuntimeError("gradient(): no gradient recorded; call backward(full=True) first")
        v = item.grad
        return np.moveaxis(v, 0, -1) if g.n_sig[self.i].ragged else v

    def set(self, values):
        """Set the value of an input (``vecInput``, ``inputVector``, ``scalarInput``, ...); values computed from
        it are recomputed when next asked for, as in DyNet."""
        g = self._live()
        if g.n_sig[self.i].prim is not R.DY_INPUT:
            raise TypeError("set(): only input expressions can be set")
        item = g.n_aux[self.i]
        values = np.asarray(values, dtype=item.value.dtype)
        if values.size != item.value.size:  # said here, not as NumPy's reshape error
            raise ValueError(errors.at(f"set(): {values.size} values for an input of shape {item.value.shape}"))
        item.value = values.reshape(item.value.shape)
        g.invalidate()  # DyNet's static-graph style: the next value() recomputes with the new input

    def __getitem__(self, index):
        return getitem(self, index)

    def __repr__(self):
        return f"expression {self.i}/{id(self.g) & 0xffff}"

    # ---- DyNet's operators -----------------------------------------------------------------------------------

    def __add__(self, other):
        return scale_shift(self, 1.0, float(other)) if _number(other) else add(R.ADD, (self, other))

    def __radd__(self, other):
        return scale_shift(self, 1.0, float(other)) if _number(other) else add(R.ADD, (other, self))

    def __sub__(self, other):
        return scale_shift(self, 1.0, -float(other)) if _number(other) else add(R.SUB, (self, other))

    def __rsub__(self, other):
        return scale_shift(self, -1.0, float(other)) if _number(other) else add(R.SUB, (other, self))

    def __mul__(self, other):
        return scale_shift(self, float(other), 0.0) if _number(other) else matmul(self, other)

    def __rmul__(self, other):
        return scale_shift(self, float(other), 0.0) if _number(other) else matmul(other, self)

    def __truediv__(self, other):
        return scale_shift(self, 1.0 / float(other), 0.0) if _number(other) else cdiv(self, other)

    def __rtruediv__(self, other):
        if _number(other):
            return unary(R.RDIV, self, (("c", float(other)),))
        return cdiv(other, self)

    def __neg__(self):
        return scale_shift(self, -1.0, 0.0)

    def __pow__(self, other, modulo=None):
        return pow_(self, other)


def _number(x):
    return type(x) in (int, float) or (isinstance(x, numbers.Real) and not isinstance(x, (bool, np.ndarray)))


def batch_size(g, n):
    """DyNet's batch size of node ``n``: its row count for a minibatch (a sequence), else 1."""
    return g.n_rows[n] if g.n_sig[n].ragged else 1


def node(g, x):
    """The node id of ``x`` (an Expression or DyNet Parameters) in graph ``g``."""
    if type(x) is Expression:
        if x.g is not g:
            raise RuntimeError(errors.at("Stale Expression (created before renewing the Computation Graph)."))
        return x.i
    core = getattr(x, "_p", None)  # Parameters / LookupParameters wrap an engine parameter
    if core is not None:
        return g.param_node(core)
    if _number(x):
        return _constant(g, np.float32(x))
    raise TypeError(errors.at(f"expected a dynet Expression or Parameters, got {type(x).__name__}"))


# ---- building nodes ----------------------------------------------------------------------------------------


def constant_node(g, value, batched=False):
    """An input node holding ``value`` (for a minibatch: its rows, the batch first); it reports the gradient
    that reaches it after ``backward(full=True)``."""
    value = np.array(value, dtype=_graph.default_dtype[0], order="C")
    shape = value.shape[1:] if batched else value.shape
    attrs = (("shape", shape), ("dtype", value.dtype), ("rows", batched))
    return g.add(R.DY_INPUT, (), attrs, Input(value), rows=len(value) if batched else None)


def repeat(g, n, B):
    """Node ``n`` (one value) as a minibatch of ``B`` copies; the copies' gradients add up into ``n``."""
    return g.add(R.SEQUENCE, (n,) * B)


def align(g, ids, shares=True):
    """Bring the inputs of one op to a common batch size, as DyNet broadcasts a batch of one: a single value
    meeting a minibatch becomes B copies (a parameter stays shared where the op ``shares`` inputs)."""
    n_sig = g.n_sig
    if not any([n_sig[n].ragged for n in ids]):  # the common case: no minibatch involved
        return ids
    sizes = [g.n_rows[n] for n in ids if n_sig[n].ragged]
    B = max(sizes)
    out = []
    for n in ids:
        if g.n_sig[n].ragged:
            r = g.n_rows[n]
            if r != B:
                if r != 1:
                    raise ValueError(errors.at(f"batch sizes {r} and {B} do not match"))
                n = repeat(g, g.add(R.PICK_ROW, (n,), (), 0), B)
        elif not (shares and g.is_static(n)):
            n = repeat(g, n, B)
        out.append(n)
    return tuple(out)


def add(prim, xs, attrs=(), aux=None, shares=None):
    """A node of ``prim`` over expressions ``xs`` (aligned to one batch size), as an Expression."""
    g = _graph._current[0]
    ids = tuple([x.i if type(x) is Expression and x.g is g else node(g, x) for x in xs])
    if len(ids) > 1:
        ids = align(g, ids, prim.shares if shares is None else shares)
    return Expression(g, g.add(prim, ids, attrs, aux))


def unary(prim, x, attrs=()):
    """A one-input node (elementwise or per-row: a minibatch passes through row by row)."""
    g = _graph._current[0]
    return Expression(g, g.add(prim, (x.i if type(x) is Expression and x.g is g else node(g, x),), attrs))


def scale_shift(x, a, b):
    """``a * x + b`` for Python numbers a, b."""
    return unary(R.SCALE_SHIFT, x, (("a", a), ("b", b)))


def rank(x):
    """The number of DyNet dimensions of one example's value in the engine (0 for a scalar)."""
    g = _graph._current[0]
    return len(g.n_sig[node(g, x)].shape)


def shape(x):
    """One example's engine shape (a DyNet scalar is ``()``)."""
    g = _graph._current[0]
    return g.n_sig[node(g, x)].shape


def reshape(x, dims):
    """Column-major reshape (DyNet's) of each example to ``dims``; ``()`` for a scalar."""
    dims = tuple(int(d) for d in dims)
    if shape(x) == dims:
        g = _graph._current[0]
        return Expression(g, node(g, x))
    return unary(R.DY_RESHAPE, x, (("shape", dims),))


_XVEC = {True: (("xvec", True),), False: (("xvec", False),)}


def matmul(a, b):
    """DyNet's ``a * b``: the matrix product (a vector is a column; a scalar scales)."""
    g = _graph._current[0]
    ia, ib = node(g, a), node(g, b)
    sa, rb = g.n_sig[ia].shape, len(g.n_sig[ib].shape)
    if not sa or not rb:
        return add(R.MUL, (a, b))
    if len(sa) == 1:
        ia = g.add(R.DY_RESHAPE, (ia,), (("shape", sa + (1,)),))
    return Expression(g, g.add(R.MATMUL, align(g, (ia, ib)), _XVEC[rb == 1]))


def affine(b, W, x):
    """``b + W x`` as one node where the shapes allow (else a product and a sum)."""
    g = _graph._current[0]
    ids = (node(g, b), node(g, W), node(g, x))
    sb, sW, sx = (g.n_sig[n].shape for n in ids)
    if len(sW) == 2 and len(sx) in (1, 2) and sb == sW[:1] + sx[1:]:
        return Expression(g, g.add(R.AFFINE, align(g, ids), _XVEC[len(sx) == 1]))
    return add(R.ADD, (b, matmul(W, x)))


def cdiv(a, b):
    """Elementwise quotient."""
    return add(R.DIV, (a, b))


def pow_(x, y):
    """Elementwise ``x ** y``: the engine's power for a number ``y``; for an expression, exp(y log x) (x > 0)."""
    if _number(y):
        import autobatch as ab
        from ..ops import Expression as Core

        g = _graph._current[0]
        return Expression(g, ab.pow(Core(g, node(g, x)), float(y)).i)
    return unary(R.EXP, add(R.MUL, (y, unary(R.LOG, x))))


def select(x, index):
    """Per example, ``x`` indexed one axis at a time (see ``kernels.layout.select``)."""
    return unary(R.DY_SELECT, x, (("index", tuple(index)),))


def pick(x, index, dim=0):
    """Element/row ``index`` along ``dim`` of each example (the same index for every batch element)."""
    g = _graph._current[0]
    n = node(g, x)
    sig = g.n_sig[n]
    if dim >= max(len(sig.shape), 1):
        raise ValueError(errors.at(f"pick: dim {dim} out of range for dims {sig.shape or (1,)}"))
    index = _core_ops._index(f"pick along dim {dim}", index, sig.shape[dim] if sig.shape else 1)
    if not sig.shape:
        return Expression(g, n)
    if dim:
        return select(x, [("slice", None, None, None)] * dim + [int(index)])
    if sig.ragged:  # the per-row twin takes one index per row
        return Expression(g, g.add(R.PICK_ROWS, (n,), (), np.full(g.n_rows[n], index, np.intp)))
    return Expression(g, g.add(R.PICK, (n,), (), int(index)))


def batch_rows(x, rows):
    """The batch elements ``rows`` of ``x`` as a minibatch (a single value is its own batch element 0)."""
    g = _graph._current[0]
    n = node(g, x)
    B = batch_size(g, n)
    for r in rows:
        if not 0 <= r < B:
            raise IndexError(errors.at(f"batch element {r} out of range for batch size {B}"))
    if not g.n_sig[n].ragged:
        return Expression(g, n) if len(rows) == 1 else Expression(g, repeat(g, n, len(rows)))
    if list(rows) == list(range(B)):
        return Expression(g, n)
    if len(rows) == 1:  # a batch of one is a single value, as in DyNet
        return Expression(g, g.add(R.PICK_ROW, (n,), (), int(rows[0])))
    return Expression(g, g.add(R.SEQUENCE, tuple(g.add(R.PICK_ROW, (n,), (), int(r)) for r in rows)))


def getitem(x, index):
    """DyNet's ``x[i]`` (``pick``) and ``x[a:b:s, ...]`` (strided selection; a last slice beyond the dims
    selects batch elements)."""
    g = _graph._current[0]
    shp = g.n_sig[node(g, x)].shape or (1,)
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if not -shp[0] <= i < shp[0]:
            raise IndexError(f"Index too large: {i} for size {shp[0]}")
        return pick(x, i + shp[0] if i < 0 else i)
    index = index if isinstance(index, tuple) else (index,)
    if len(index) > len(shp) + 1 or not all(isinstance(s, slice) for s in index):
        raise IndexError(errors.at(f"index {index!r}: use an int or up to {len(shp) + 1} slices"))
    specs = []
    for d, s in zip(shp, index):
        if s.step is not None and s.step <= 0:
            raise IndexError(f"steps must be positive, got: {s.step}")
        specs.append(("slice",) + s.indices(d))
    if len(index) > len(shp):
        B = batch_size(g, node(g, x))
        x = batch_rows(x, list(range(B))[index[-1]])
    if not g.n_sig[node(g, x)].shape:
        return x
    if all(spec[1:] == (0, d, 1) for spec, d in zip(specs, shp)):
        return x
    return select(x, specs)
