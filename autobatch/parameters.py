"""Trainable parameters: dense matrices/vectors and lookup tables, grouped in a ParameterCollection."""
import itertools
import weakref

import numpy as np

from autobatch.kernels import backend

from . import graph as _graph
from . import ops


_uids = itertools.count()


def _on_device(a):
    """``a`` as a backend array: host data (a caller's NumPy gradient) uploaded, counted."""
    return a if backend.is_device_array(a) else backend.to_device(a)


class Parameter(ops.Leaf):
    """A trainable array. Used in expressions directly (``W @ x``); ``.grad`` is its accumulated gradient."""

    is_lookup = False

    def __init__(self, collection, name, data):
        self.collection = collection
        self.name = name
        self.data = data  # backend array; optimisers update it in place
        self._grad = None
        self._node = (None, -1)  # (weak ref to the graph, node id) of this parameter in the graph that last used it
        self.uid = next(_uids)  # never reused, unlike id(): graphs' shared signatures name parameters by it
        # The shared signature tables name this parameter; they must forget it when the model is dropped.
        weakref.finalize(self, _graph.release_parameter, self.uid).atexit = False

    @property
    def shape(self):
        """The parameter's shape."""
        return self.data.shape

    @property
    def dtype(self):
        """The parameter's dtype."""
        return self.data.dtype

    def value(self):
        """A NumPy copy of the current value."""
        return np.array(backend.asnumpy(self.data))

    def set_value(self, array):
        """Overwrite the value (shape must match)."""
        array = backend.xp.asarray(array, dtype=self.data.dtype)
        if array.shape != self.data.shape:
            raise ValueError(f"set_value: {self.name} has shape {self.data.shape}, got {array.shape}")
        self.data[...] = array

    @property
    def grad(self):
        """Dense NumPy gradient accumulated since the last ``zero_grad`` (zeros before any backward)."""
        return np.array(backend.asnumpy(self.grad_data()))

    def grad_data(self):
        """The dense gradient as a backend array: the stored one (no copy), or fresh zeros if there is none."""
        return backend.xp.zeros_like(self.data) if self._grad is None else self._grad

    def accumulate(self, g):
        """Add a dense gradient (a backend array; host data is uploaded)."""
        g = _on_device(g)
        if g.shape != self.data.shape:
            raise RuntimeError(f"gradient of shape {g.shape} for {self.name} of shape {self.data.shape}")
        if self._grad is None:
            self._grad = g.copy()
        else:
            self._grad += g

    def accumulate_rows(self, indices, rows):
        """Add gradient ``rows`` to rows ``indices`` (repeated indices add up; host data is uploaded)."""
        indices, rows = _on_device(indices), _on_device(rows)
        if self._grad is None:
            self._grad = backend.xp.zeros_like(self.data)
        backend.scatter_add(self._grad, indices, rows)

    def zero_grad(self):
        """Forget the accumulated gradient."""
        self._grad = None

    def has_grad(self):
        """True when some backward reached this parameter since the last ``zero_grad``."""
        return self._grad is not None

    def expr(self):
        """This parameter as an expression of the current graph."""
        return ops.parameter(self)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class LookupParameter(Parameter):
    """An embedding table: ``E[i]`` is row ``i`` as an expression; its gradient is kept as sparse rows."""

    is_lookup = True

    def __init__(self, collection, name, data):
        super().__init__(collection, name, data)
        self._rows = []  # (indices, row gradients) pairs; summed per distinct row on demand
        self._compact = True

    def __getitem__(self, index):
        return ops.lookup(self, index)

    def __len__(self):
        return self.data.shape[0]

    def sparse_grad(self):
        """``(rows, grads)``: the distinct touched row indices, ascending, and their summed gradients (backend
        arrays). A table also used whole (``E.expr()``) reports every row."""
        xp = backend.xp
        if self._grad is not None:  # used whole too: fold the rows in, so scaling the result scales the gradient
            for i, r in self._rows:
                backend.scatter_add(self._grad, i, r)
            self._rows = []
            return xp.arange(self.data.shape[0]), self._grad
        if not self._rows:
            return xp.zeros(0, dtype=np.intp), xp.zeros((0,) + self.data.shape[1:], self.data.dtype)
        if len(self._rows) > 1 or not self._compact:
            idx = xp.concatenate([i for i, _ in self._rows])
            rows = xp.concatenate([r for _, r in self._rows])
            uniq, inverse = xp.unique(idx, return_inverse=True)
            summed = xp.zeros((len(uniq),) + self.data.shape[1:], self.data.dtype)
            backend.scatter_add(summed, inverse.reshape(-1), rows)
            self._rows, self._compact = [(uniq, summed)], True
        return self._rows[0]

    def accumulate_rows(self, indices, rows):
        self._rows.append((_on_device(indices), _on_device(rows)))
        self._compact = False

    def grad_data(self):
        """The dense gradient (a new backend array unless the table was also used whole)."""
        if not self._rows:
            return super().grad_data()
        dense = self._grad.copy() if self._grad is not None else backend.xp.zeros_like(self.data)
        for i, r in self._rows:
            backend.scatter_add(dense, i, r)
        return dense

    def has_grad(self):
        return bool(self._rows) or self._grad is not None

    def zero_grad(self):
        self._rows = []
        self._grad = None


def _glorot(rng, shape):
    fan = shape[0] + (shape[1] if len(shape) > 1 else 0)
    scale = np.sqrt(6.0 / fan) if len(shape) > 1 else 0.0
    return rng.uniform(-scale, scale, size=shape)


def _initial(init, rng, shape):
    """Resolve an ``init`` argument: None (Glorot for matrices, zeros for vectors), a number, an array,
    a name ('glorot', 'zeros', 'ones', 'normal', 'uniform') or a callable ``init(rng, shape)``."""
    if init is None or (isinstance(init, str) and init == "glorot"):
        return _glorot(rng, shape)
    if isinstance(init, str):
        makers = {
            "zeros": lambda: np.zeros(shape),
            "ones": lambda: np.ones(shape),
            "normal": lambda: rng.normal(0.0, 1.0 / np.sqrt(shape[-1]), size=shape),
            "uniform": lambda: rng.uniform(-np.sqrt(3.0 / shape[-1]), np.sqrt(3.0 / shape[-1]), size=shape),
        }
        if init not in makers:
            raise ValueError(f"unknown init {init!r}: expected one of {sorted(makers) + ['glorot']}")
        return makers[init]()
    if callable(init):
        return np.asarray(init(rng, shape))
    array = np.asarray(init, dtype=float)
    if array.ndim == 0:
        return np.full(shape, float(array))
    if array.shape != tuple(shape):
        raise ValueError(f"init array has shape {array.shape}, parameter shape is {tuple(shape)}")
    return array


class ParameterCollection:
    """Owns a model's parameters, their dtype and the seeded random stream used for init and dropout masks."""

    def __init__(self, seed=None, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"ParameterCollection dtype must be a float type, got {self.dtype}")
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._params = []
        _graph.default_dtype[0] = self.dtype
        _graph.latest_collection[0] = weakref.ref(self)  # weak: dropping the model frees it

    def _add(self, cls, shape, init, name):
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if not shape or any(s <= 0 for s in shape):
            raise ValueError(f"parameter shape must be non-empty and positive, got {shape}")
        name = name or f"{'E' if cls is LookupParameter else 'W'}{len(self._params)}"
        if any(p.name == name for p in self._params):
            raise ValueError(f"a parameter named {name!r} already exists in this collection")
        data = backend.xp.asarray(_initial(init, self.rng, shape), dtype=self.dtype)
        param = cls(self, name, data)
        self._params.append(param)
        return param

    def add_parameters(self, shape, init=None, name=None):
        """A dense parameter. ``init``: None (Glorot uniform for matrices, zeros for vectors), a number,
        an array, a name ('glorot', 'zeros', 'ones', 'normal', 'uniform') or ``init(rng, shape)``."""
        if init is None and (not isinstance(shape, (tuple, list)) or len(shape) == 1):
            init = "zeros"
        return self._add(Parameter, shape, init, name)

    def add_lookup_parameters(self, shape, init="uniform", name=None):
        """A lookup table of shape ``(rows, dim...)``; rows are read with ``E[i]``."""
        if len(shape) < 2:
            raise ValueError(f"lookup parameters need shape (rows, dim...), got {tuple(shape)}")
        return self._add(LookupParameter, shape, init, name)

    def parameters(self):
        """All parameters, in creation order."""
        return list(self._params)

    def __iter__(self):
        return iter(self._params)

    def __getitem__(self, name):
        for p in self._params:
            if p.name == name:
                return p
        raise KeyError(name)

    def values(self):
        """Every parameter's value as a NumPy copy, by name: a snapshot that ``set_values`` puts back (the best
        epoch's, or one trained in another process)."""
        return {p.name: p.value() for p in self._params}

    def set_values(self, values):
        """Overwrite every parameter with ``values[name]`` (what ``values()`` returned)."""
        for p in self._params:
            p.set_value(values[p.name])

    def zero_grad(self):
        """Clear every parameter's accumulated gradient."""
        for p in self._params:
            p.zero_grad()

    def num_parameters(self):
        """Total number of scalar weights."""
        return sum(int(np.prod(p.shape)) for p in self._params)
