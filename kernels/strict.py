"""A strict stand-in for a device array library: a TEST TOOL, selected with ``AUTOBATCH_BACKEND=strict``.

It computes with NumPy, so it says nothing about speed and does not stand in for CuPy. What it checks is
device discipline, the part of running on a GPU that a CPU-only CI can check:

- its arrays (``StrictArray``) refuse every implicit trip to the host: ``np.asarray(a)``, ``float(a)``,
  ``bool(a)``, ``int(a)``, iteration, ``a.tolist()``, ``a.item()``;
- they refuse host arrays where CuPy would refuse them, or would copy them silently: mixed into arithmetic,
  passed to an ``xp`` function, used as an index, or assigned into a device array; NumPy's functions
  (``np.concatenate(...)``) and ufunc methods (``np.add.at``) on them, which CuPy serves only in part;
- every explicit upload (``xp.asarray(host)``) and download (``backend.asnumpy``) is counted in
  ``backend.transfers``, so tests can bound them.

This module is the ``xp`` of that backend: ``xp.f`` is NumPy's ``f`` applied to the unwrapped arrays, its
array results wrapped again. Full reductions give 0-d arrays, as on a GPU, never host scalars.
"""
import operator

import numpy

from . import backend


def _refuse(what):
    raise TypeError(f"strict backend: {what} would move a device array to the host implicitly; download it "
                    f"explicitly with backend.asnumpy(...)")


def _host(what):
    raise TypeError(f"strict backend: a host (NumPy) array {what}; upload it explicitly with "
                    f"backend.to_device(...) (or xp.asarray) first")


def _unwrap(x, what):
    """The NumPy array inside a strict array; lists and tuples unwrapped item by item; a host array refused."""
    t = type(x)
    if t is StrictArray:
        return x._a
    if t is tuple or t is list:
        return t(_unwrap(v, what) for v in x)
    if t is numpy.ndarray:
        _host(what)
    return x


def _wrap(r):
    """Array results back as strict arrays; NumPy scalars (full reductions, scalar indexing) as 0-d ones."""
    t = type(r)
    if t is numpy.ndarray:
        return StrictArray(r)
    if isinstance(r, numpy.generic):
        return StrictArray(numpy.asarray(r))
    if t is tuple or t is list:
        return t(_wrap(v) for v in r)
    return r


def _operand(x):
    """The other side of an arithmetic operator: a strict array's data, a Python or NumPy scalar as is,
    NotImplemented for anything else (an autobatch Expression then gets its reflected operator)."""
    if type(x) is StrictArray:
        return x._a
    if isinstance(x, numpy.ndarray):
        _host("in arithmetic with a device array")
    if isinstance(x, (int, float, complex, numpy.generic)):
        return x
    return NotImplemented


_HOST_VIEWS = frozenset({"data", "ctypes", "flat", "tofile", "dump", "dumps", "base"})


class StrictArray:
    """A device array of the strict backend: NumPy data that refuses implicit host conversion (see module)."""

    __slots__ = ("_a",)
    __hash__ = None

    def __init__(self, data):
        self._a = data

    # ---- metadata: lives on the host on a GPU too, free to read ----
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    T = property(lambda self: StrictArray(self._a.T))

    def __len__(self):
        return len(self._a)

    def __repr__(self):  # no values: printing them would be a download
        return f"StrictArray(shape={self._a.shape}, dtype={self._a.dtype})"

    __str__ = __repr__

    # ---- implicit host conversions: refused ----
    def __array__(self, dtype=None, copy=None):  # NumPy's own signature: *args makes it retry as a sequence
        _refuse("np.asarray / np.array on it")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # NumPy scalars arrive here (np.float32(0.9) * a), and NumPy's ufuncs called on device arrays: computed on
        # the device, as CuPy does. A host array among the inputs is refused; so are the ufunc methods
        # (np.add.at, np.maximum.reduceat ...), which CuPy lacks for most ufuncs: use backend.scatter_add.
        if method != "__call__":
            raise TypeError(f"strict backend: numpy.{ufunc.__name__}.{method} on a device array has no general "
                            f"device version; use backend.xp (or backend.scatter_add for add.at)")
        return _call(ufunc, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        _refuse(f"numpy.{func.__name__} (use backend.xp.{func.__name__})")

    def __bool__(self):
        _refuse("bool() (an `if` on an array)")

    def __float__(self):
        _refuse("float()")

    def __int__(self):
        _refuse("int()")

    def __index__(self):
        _refuse("using it as a Python index")

    def __complex__(self):
        _refuse("complex()")

    def __iter__(self):
        _refuse("iterating over it")

    def tolist(self):
        """Refused: a download in disguise."""
        _refuse(".tolist()")

    def item(self, *args):
        """Refused: a download in disguise."""
        _refuse(".item()")

    def tobytes(self, *args, **kwargs):
        """Refused: a download in disguise."""
        _refuse(".tobytes()")

    def __reduce__(self):  # pickling (process pools) copies the data, as CuPy's arrays do
        return StrictArray, (self._a,)

    # ---- indexing ----
    def __getitem__(self, index):
        return _wrap(self._a[_unwrap(index, "used as an index")])

    def __setitem__(self, index, value):
        self._a[_unwrap(index, "used as an index")] = _unwrap(value, "assigned into a device array")

    # ---- every other method and attribute: NumPy's, on the data, results wrapped ----
    def __getattr__(self, name):
        if name.startswith("_") or name in _HOST_VIEWS:  # __array_interface__, .data ...: the host buffer itself
            raise AttributeError(f"strict backend: device arrays have no {name!r} (a host view of the data)")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, "passed to a device array's method"),
                              **{k: _unwrap(v, "passed to a device array's method") for k, v in kwargs.items()}))

        return method


def _binary(op):
    def forward(self, other):
        o = _operand(other)
        return NotImplemented if o is NotImplemented else _wrap(op(self._a, o))

    def reflected(self, other):
        o = _operand(other)
        return NotImplemented if o is NotImplemented else _wrap(op(o, self._a))

    def inplace(self, other):
        o = _operand(other)
        if o is NotImplemented:
            return NotImplemented
        iop = getattr(operator, f"i{op.__name__.strip('_')}")
        iop(self._a, o)
        return self

    return forward, reflected, inplace


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift"):
    _fwd, _ref, _inp = _binary(getattr(operator, _name + "_" if _name in ("and", "or") else _name))
    setattr(StrictArray, f"__{_name}__", _fwd)
    setattr(StrictArray, f"__r{_name}__", _ref)
    setattr(StrictArray, f"__i{_name}__", _inp)
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):  # Python reflects comparisons itself
    setattr(StrictArray, f"__{_name}__", _binary(getattr(operator, _name))[0])
for _name in ("neg", "pos", "abs", "invert"):
    setattr(StrictArray, f"__{_name}__", (lambda op: lambda self: StrictArray(op(self._a)))(getattr(operator, _name)))

ndarray = StrictArray


# ---- the module as ``xp`` ----------------------------------------------------------------------------------


def asarray(a, dtype=None, order=None):
    """A device array: a strict array as is (cast to ``dtype``), host data uploaded (a copy; counted)."""
    if type(a) is StrictArray:
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    data = numpy.array(a, dtype=dtype, order=order or "K", copy=True)  # later changes on the host don't leak
    backend.count("uploads", data.nbytes)
    return StrictArray(data)


def array(a, dtype=None, copy=True, order="K"):
    """Like ``asarray``; a strict array is copied unless ``copy=False``."""
    if type(a) is StrictArray:
        return a.astype(dtype or a.dtype, order=order, copy=copy)
    return asarray(a, dtype, order)


def ascontiguousarray(a, dtype=None):
    """A C-contiguous device array (host data uploaded: counted)."""
    if type(a) is StrictArray:
        return StrictArray(numpy.ascontiguousarray(a._a, dtype=dtype))
    return asarray(a, dtype, "C")


def asnumpy(a):
    """Download: a NumPy copy of a strict array (counted); host data as is."""
    if type(a) is not StrictArray:
        return numpy.asarray(a)
    backend.count("downloads", a._a.nbytes)
    return a._a.copy()


def scatter_add(target, idx, rows):
    """``target[idx] += rows`` with repeats adding up (CuPy's cupyx.scatter_add; NumPy's add.at)."""
    numpy.add.at(target._a, _unwrap(idx, "used as an index"), _unwrap(rows, "scatter-added into a device array"))


class _Ufunc:
    """A NumPy ufunc over strict arrays; ``at`` is refused, as CuPy has it for few ufuncs (use scatter_add)."""

    def __init__(self, f):
        self._f = f
        self.__name__ = f.__name__

    def __call__(self, *args, **kwargs):
        return _call(self._f, args, kwargs)

    def reduce(self, *args, **kwargs):
        return _call(self._f.reduce, args, kwargs)

    def outer(self, *args, **kwargs):
        return _call(self._f.outer, args, kwargs)

    def at(self, *args, **kwargs):
        raise TypeError(f"strict backend: {self.__name__}.at has no general device version; use "
                        f"backend.scatter_add")


def _call(f, args, kwargs):
    what = f"passed to xp.{getattr(f, '__name__', f)}"
    return _wrap(f(*_unwrap(args, what), **{k: _unwrap(v, what) for k, v in kwargs.items()}))


def _function(f):
    def call(*args, **kwargs):
        return _call(f, args, kwargs)

    call.__name__ = call.__qualname__ = f.__name__
    call.__doc__ = f"NumPy's {f.__name__} over strict arrays."
    return call


_cache = {}


def __getattr__(name):
    """``xp.name``: NumPy's function, wrapped; types, dtypes and constants (``xp.float32``, ``xp.inf``) as is."""
    got = _cache.get(name)
    if got is None:
        f = getattr(numpy, name)  # AttributeError for what NumPy lacks
        if isinstance(f, numpy.ufunc):
            got = _Ufunc(f)
        elif callable(f) and not isinstance(f, type):
            got = _function(f)
        else:
            got = f
        _cache[name] = got
    return got
