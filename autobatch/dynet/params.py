"""DyNet's parameters: ``ParameterCollection`` (with subcollections and DyNet's names), ``Parameters``,
``LookupParameters``, the initialisers, and saving/loading in DyNet's text format.

Values live in engine parameters (``autobatch.parameters``), so expressions use them directly. DyNet's
defaults: every parameter, vectors included, starts Glorot-uniform; the scale is sqrt(3 * k / sum(dims)) over
the k dimensions of one item (a lookup table's rows are not counted).

DyNet's file format (what ``ParameterCollection.save`` writes): per parameter a header line
``#Parameter# /name {d1,d2} <chars> ZERO_GRAD`` (``#LookupParameter#`` with dims ``{dim,rows}`` for a table),
then one line of values in column-major order, then, with ``FULL_GRAD`` instead of ``ZERO_GRAD``, one line of
its gradient. ``populate`` matches parameters in creation order and checks dims, as DyNet does.
"""
import pickle

import numpy as np

from autobatch.kernels import backend

from .. import errors
from .. import graph as _graph
from .. import parameters as _core
from .. import registry as R
from .expression import Expression, matmul

_rng = [np.random.default_rng()]


def reset_random_seed(seed):
    """Seed the stream that initialisers, dropout and noise draw from."""
    _rng[0] = np.random.default_rng(seed)


def rng():
    """The module's random stream."""
    return _rng[0]


# ---- initialisers ---------------------------------------------------------------------------------------------


class PyInitializer:
    """An initialiser: ``make(shape, lookup)`` returns the initial array (float64; stored as float32)."""

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        raise NotImplementedError


class NormalInitializer(PyInitializer):
    """N(mean, var) (DyNet takes the variance)."""

    def __init__(self, mean=0.0, var=1.0):
        self.mean, self.var = float(mean), float(var)

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        return rng().normal(self.mean, np.sqrt(self.var), size=shape)


class UniformInitializer(PyInitializer):
    """U(-scale, scale)."""

    def __init__(self, scale):
        self.scale = float(scale)

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        return rng().uniform(-self.scale, self.scale, size=shape)


class ConstInitializer(PyInitializer):
    """Every element ``c``."""

    def __init__(self, c):
        self.c = float(c)

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        return np.full(shape, self.c)


class IdentityInitializer(PyInitializer):
    """The identity matrix."""

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"IdentityInitializer needs a square matrix, got {shape}")
        return np.eye(shape[0])


class GlorotInitializer(PyInitializer):
    """Glorot uniform, DyNet's default: scale gain * sqrt(3 k / sum of the k item dims); for 4-d (conv)
    filters gain * sqrt(6 / ((in + out) * h * w))."""

    def __init__(self, is_lookup=False, gain=1.0):
        self.is_lookup, self.gain = is_lookup, float(gain)

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        item = shape[1:] if (lookup or self.is_lookup) else shape
        if len(item) == 4:
            field = item[0] * item[1]
            scale = self.gain * np.sqrt(6.0) / np.sqrt(item[2] * field + item[3] * field)
        else:
            scale = self.gain * np.sqrt(3.0 * len(item)) / np.sqrt(sum(item))
        return rng().uniform(-scale, scale, size=shape)


class SaxeInitializer(PyInitializer):
    """A random orthogonal matrix (Saxe et al. 2014) times ``scale``."""

    def __init__(self, scale=1.0):
        self.scale = float(scale)

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        q, _ = np.linalg.qr(rng().normal(size=(max(shape), max(shape))))
        return self.scale * q[:shape[0], :shape[-1]].reshape(shape)


class NumpyInitializer(PyInitializer):
    """A given array."""

    def __init__(self, array):
        self.array = np.asarray(array, dtype=float)

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        if self.array.shape != tuple(shape):
            raise ValueError(f"initial array has shape {self.array.shape}, parameter has shape {tuple(shape)}")
        return self.array


class FromFileInitializer(PyInitializer):
    """Values read from a whitespace-separated text file (column-major, as DyNet reads it)."""

    def __init__(self, fname):
        self.fname = fname

    def make(self, shape, lookup=False):
        """The initial array of ``shape`` (``lookup``: the first axis indexes rows)."""
        return np.loadtxt(self.fname).reshape(shape, order="F")


def _initializer(init, shape, scale, mean, std):
    """DyNet's ``init=`` argument resolved to an initialiser."""
    if init is None:
        return GlorotInitializer()
    if isinstance(init, PyInitializer):
        return init
    if isinstance(init, np.ndarray):
        return NumpyInitializer(init)
    if isinstance(init, (int, float)):
        return ConstInitializer(init)
    named = {"identity": IdentityInitializer, "glorot": GlorotInitializer, "saxe": SaxeInitializer,
             "he": lambda: NormalInitializer(0, 1 / (2 * shape[-1])),
             "uniform": lambda: UniformInitializer(scale), "normal": lambda: NormalInitializer(mean, std * std)}
    if isinstance(init, str) and init in named:
        return named[init]()
    raise ValueError(f"Didn't recognize initializer {init!r}")


# ---- parameters -----------------------------------------------------------------------------------------------


def _dims(dim):
    return (int(dim),) if isinstance(dim, (int, np.integer)) else tuple(int(d) for d in dim)


class Parameters:
    """A dense parameter. In expressions it stands for its value (``W * x``); ``expr()`` is that expression."""

    def __init__(self, collection, name, core):
        self._collection, self._name, self._p = collection, name, core
        self._updated = True

    # values and gradients
    def shape(self):
        """The dims."""
        return tuple(self._p.shape)

    def as_array(self):
        """The value as a NumPy array."""
        return self._p.value()

    def grad_as_array(self):
        """The gradient accumulated since the last update, as a NumPy array."""
        return np.array(backend.asnumpy(self._p.grad_data()))

    def set_value(self, array):
        """Overwrite the value."""
        self._p.set_value(np.asarray(array).reshape(self._p.shape))

    def clip_inplace(self, left, right):
        """Clip every value to [left, right]."""
        self._p.data[...] = backend.xp.clip(self._p.data, left, right)

    def zero(self):
        """Set every value to 0."""
        self._p.data[...] = 0

    def scale(self, s):
        """Multiply the value by ``s``."""
        self._p.data[...] *= s

    def scale_gradient(self, s):
        """Multiply the accumulated gradient by ``s``."""
        if self._p.has_grad():
            self._p.accumulate(self._p.grad_data() * (s - 1))

    def is_updated(self):
        """Whether trainers update this parameter."""
        return self._updated

    def set_updated(self, b):
        """Exclude (False) or include (True) this parameter in trainers' updates."""
        self._updated = bool(b)

    def name(self):
        """The DyNet name (``/collection/_k``)."""
        return self._name

    # as an expression
    def expr(self, update=True):
        """This parameter in the current graph (``update=False``: no gradient flows to it)."""
        g = _graph._current[0]
        e = Expression(g, g.param_node(self._p))
        return e if update else Expression(g, g.add(R.DY_SCALE_GRADIENT, (e.i,), (("lambd", 0.0),)))

    def value(self, recalculate=False):
        """The value (a float, a list or an array, as ``Expression.value``)."""
        return self.expr().value()

    def npvalue(self, recalculate=False):
        """The value as a NumPy array."""
        return self.expr().npvalue()

    def scalar_value(self, recalculate=False):
        """The value of a one-element parameter as a float."""
        return self.expr().scalar_value()

    def forward(self, recalculate=False):
        """Compute this parameter's node in the current graph."""
        self.expr().forward()

    def backward(self, full=False):
        """Backward from this parameter (its gradient becomes ones)."""
        self.expr().backward(full)

    def dim(self):
        """``(dims, 1)`` as DyNet reports them."""
        return self.shape(), 1

    def __getattr__(self, attr):  # DyNet's Parameters *is* an Expression: the rest of its methods
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.expr(), attr)

    def __add__(self, o): return self.expr() + o
    def __radd__(self, o): return o + self.expr()
    def __sub__(self, o): return self.expr() - o
    def __rsub__(self, o): return o - self.expr()
    def __mul__(self, o): return matmul(self, o) if type(o) is Expression else self.expr() * o
    def __rmul__(self, o): return matmul(o, self) if type(o) is Expression else o * self.expr()
    def __truediv__(self, o): return self.expr() / o
    def __neg__(self): return -self.expr()
    def __getitem__(self, i): return self.expr()[i]

    # saving
    def save(self, fname, key="", append=False):
        """Write this parameter to a DyNet-format file (``key`` replaces its name)."""
        with open(fname, "a" if append else "w") as f:
            _write(f, self, key or self._name)

    def populate(self, fname, key=""):
        """Read this parameter's value from a DyNet-format file (the entry named ``key``)."""
        _assign(self, _entry(fname, key or self._name))

    def __repr__(self):
        return f"Parameters({self._name}, {self.shape()})"


class LookupParameters(Parameters):
    """A lookup table of ``rows`` vectors: ``E[i]`` (``lookup``) is one row; ``batch(ids)`` a minibatch."""

    def __getitem__(self, i):
        from .ops import lookup

        return lookup(self, i)

    def __len__(self):
        return self._p.shape[0]

    def batch(self, ids):
        """The rows ``ids`` as one minibatch expression (``lookup_batch``)."""
        from .ops import lookup_batch

        return lookup_batch(self, ids)

    def init_from_array(self, array):
        """Overwrite the table with ``array`` (rows, dim)."""
        self.set_value(array)

    def init_row(self, i, row):
        """Overwrite row ``i``."""
        self._p.data[i] = backend.xp.asarray(np.asarray(row, dtype=self._p.dtype))

    def row_as_array(self, i):
        """Row ``i`` as a NumPy array."""
        return self.as_array()[i]

    def rows_as_array(self, rows):
        """Rows ``rows`` as a NumPy array."""
        return self.as_array()[list(rows)]

    def row_grad_as_array(self, i):
        """The gradient of row ``i``."""
        return self.grad_as_array()[i]

    def rows_grad_as_array(self, rows):
        """The gradients of rows ``rows``."""
        return self.grad_as_array()[list(rows)]

    def expr(self, update=True):
        """Refused: a table is read row by row."""
        raise TypeError("LookupParameters are read with lookup()/E[i], not as one expression")

    def __repr__(self):
        return f"LookupParameters({self._name}, {self.shape()})"


class ParameterCollection:
    """DyNet's ``ParameterCollection`` (alias ``Model``): parameters, lookup tables and subcollections, named as
    DyNet names them (``/_0``, ``/sub/_1``, ``/vanilla-lstm-builder/_0``)."""

    def __init__(self, parent=None, name="/"):
        self._parent, self._name = parent, name
        self._items = []  # Parameters and subcollections in creation order
        self._counts = {"param": 0, "sub": 0}
        self._child_names = {}
        self._param_names = {}  # explicit parameter name -> how many times it was given
        self._core = parent._core if parent is not None else _core.ParameterCollection(dtype=np.float32)

    # creation
    def _param_name(self, name):
        if name:  # a repeated name gets _1, _2, ... as in DyNet: save/load find parameters by name
            k = self._param_names.get(name, 0)
            self._param_names[name] = k + 1
            return self._name + name + (f"_{k}" if k else "")
        k = self._counts["param"]
        self._counts["param"] += 1
        return f"{self._name}_{k}"

    def _add(self, cls, dims, init, name, lookup):
        full = self._param_name(name)
        values = init.make(dims, lookup) if isinstance(init, PyInitializer) else init
        make = self._core.add_lookup_parameters if lookup else self._core.add_parameters
        core = make(dims, init=np.asarray(values, dtype=float).reshape(dims),
                    name=f"{full}#{len(self._core.parameters())}")
        p = cls(self, full, core)
        self._items.append(p)
        return p

    def add_parameters(self, dim, init=None, name="", device="", scale=1.0, mean=0.0, std=1.0):
        """A dense parameter of ``dim`` (Glorot by default; ``init`` a number, name, array or initialiser)."""
        dims = _dims(dim)
        if isinstance(init, np.ndarray):
            return self.parameters_from_numpy(init, name)
        return self._add(Parameters, dims, _initializer(init, dims, scale, mean, std), name, False)

    def add_lookup_parameters(self, dim, init=None, name="", device="", scale=1.0, mean=0.0, std=1.0):
        """A lookup table of shape (rows, dim...)."""
        dims = _dims(dim)
        if isinstance(init, np.ndarray):
            return self.lookup_parameters_from_numpy(init, name)
        if init is None:
            init = GlorotInitializer(is_lookup=True)
        return self._add(LookupParameters, dims, _initializer(init, dims[1:], scale, mean, std), name, True)

    def parameters_from_numpy(self, array, name="", device=""):
        """A dense parameter holding ``array``."""
        array = np.asarray(array, dtype=float)
        return self._add(Parameters, array.shape, array, name, False)

    def lookup_parameters_from_numpy(self, array, name="", device=""):
        """A lookup table holding ``array`` (rows first)."""
        array = np.asarray(array, dtype=float)
        return self._add(LookupParameters, array.shape, array, name, True)

    def add_subcollection(self, name=None):
        """A child collection whose names start with this one's (``/name/``)."""
        if not name:
            name = f"_{self._counts['sub']}"
            self._counts["sub"] += 1
        k = self._child_names.get(name, 0)
        self._child_names[name] = k + 1
        sub = ParameterCollection(self, f"{self._name}{name}{'_' + str(k) if k else ''}/")
        self._items.append(sub)
        return sub

    # listing
    def _walk(self):
        for it in self._items:
            if isinstance(it, ParameterCollection):
                yield from it._walk()
            else:
                yield it

    def parameters_list(self):
        """Every dense parameter, subcollections included, in creation order."""
        return [p for p in self._walk() if type(p) is Parameters]

    def lookup_parameters_list(self):
        """Every lookup table, in creation order."""
        return [p for p in self._walk() if type(p) is LookupParameters]

    def name(self):
        """The collection's name prefix."""
        return self._name

    # DyNet-format files
    def save(self, fname, name="", append=False):
        """Write every parameter (values, and gradients where not zero) in DyNet's text format."""
        with open(fname, "a" if append else "w") as f:
            for p in self.parameters_list() + self.lookup_parameters_list():
                _write(f, p, (name + p._name[len(self._name) - 1:]) if name else p._name)

    def populate(self, fname, key=""):
        """Read every parameter from a DyNet-format file (written by DyNet or by ``save``), in creation order;
        ``key`` restricts the entries to names starting with it."""
        entries = [e for e in read_dynet_file(fname) if e["name"].startswith(key)]
        dense = [e for e in entries if not e["lookup"]]
        tables = [e for e in entries if e["lookup"]]
        for kind, params, got in (("parameters", self.parameters_list(), dense),
                                  ("lookup parameters", self.lookup_parameters_list(), tables)):
            if len(got) != len(params):
                raise RuntimeError(f"{fname}: {len(got)} {kind} in the file, {len(params)} in the collection")
            for p, e in zip(params, got):
                _assign(p, e)

    def load_param(self, fname, key):
        """A new parameter holding the entry ``key`` of a DyNet-format file."""
        e = _entry(fname, key)
        return self._add(LookupParameters if e["lookup"] else Parameters, e["value"].shape, e["value"], "", e["lookup"])

    load_lookup_param = load_param


Model = ParameterCollection


# ---- the text format ------------------------------------------------------------------------------------------


def _fmt(values):
    return " ".join(f"{v:+.8e}" for v in values) + " "


def _column_major(a, lookup):
    return np.concatenate([r.reshape(-1, order="F") for r in a]) if lookup else a.reshape(-1, order="F")


def _write(f, p, name):
    """One entry: header, column-major values, and the gradient if it is not all zero."""
    lookup = type(p) is LookupParameters
    value = p.as_array()
    # A table is stored as DyNet holds it: dims {dim, rows}, each row's values together.
    flat, gflat = _column_major(value, lookup), _column_major(p.grad_as_array(), lookup)
    dims = (value.shape[1:] + value.shape[:1]) if lookup else value.shape
    line = _fmt(flat)
    zero = not np.any(gflat)
    f.write(f"#{'LookupParameter' if lookup else 'Parameter'}# {name} {{{','.join(map(str, dims))}}} "
            f"{len(line) + 1 if zero else 2 * (len(line) + 1)} {'ZERO_GRAD' if zero else 'FULL_GRAD'}\n")
    f.write(line + "\n")
    if not zero:
        f.write(_fmt(gflat) + "\n")


def read_dynet_file(fname):
    """The entries of a DyNet-format file: dicts with ``name``, ``lookup``, ``value`` and ``grad`` (None for
    ZERO_GRAD) as row-major NumPy arrays of the parameter's shape (a table's rows first). A malformed file
    raises ValueError naming the file and the line."""
    out = []
    with open(fname) as f:
        lines = enumerate(f, 1)
        for lineno, header in lines:
            if not header.strip():
                continue
            parts = header.split()
            if parts[0] not in ("#Parameter#", "#LookupParameter#") or len(parts) < 4:
                raise ValueError(f"{fname}:{lineno}: bad parameter header {header.strip()!r}")
            lookup = parts[0] == "#LookupParameter#"
            try:
                dims = tuple(int(d) for d in parts[2].strip("{}").split(","))
            except ValueError:
                raise ValueError(f"{fname}:{lineno}: bad dims {parts[2]!r} in the header of {parts[1]}") from None
            full = len(parts) > 4 and parts[4] == "FULL_GRAD"
            rows = [_values(fname, lines, parts[1], what) for what in (("values", "gradient") if full else
                                                                          ("values",))]
            arrays = []
            for flat in rows:
                if flat.size != int(np.prod(dims)):
                    raise ValueError(f"{fname}: {parts[1]} has {flat.size} values for dims {dims}")
                if lookup:  # {dim..., rows}: row after row
                    arrays.append(flat.reshape((dims[-1],) + dims[:-1][::-1]).transpose(
                        (0,) + tuple(range(len(dims) - 1, 0, -1))))
                else:
                    arrays.append(flat.reshape(dims, order="F"))
            out.append(dict(name=parts[1], lookup=lookup, value=arrays[0], grad=arrays[1] if full else None))
    return out


def _values(fname, lines, name, what):
    """The next line of ``lines`` (``(lineno, text)`` pairs) as floats: the ``what`` of parameter ``name``."""
    try:
        lineno, text = next(lines)
    except StopIteration:  # a bare StopIteration would say nothing about the file
        raise ValueError(f"{fname}: the file ends before the {what} of {name}: it was cut short") from None
    try:
        return np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise ValueError(f"{fname}:{lineno}: the {what} of {name} are not all numbers") from None


def _entry(fname, key):
    for e in read_dynet_file(fname):
        if e["name"] == key:
            return e
    raise KeyError(f"{fname}: no parameter named {key!r}")


def _assign(p, e):
    if e["value"].shape != p.shape() or e["lookup"] != (type(p) is LookupParameters):
        raise RuntimeError(f"dimensions of {e['name']} in the file {e['value'].shape} do not match {p.name()} "
                           f"{p.shape()}")
    p.set_value(e["value"])
    p._p.zero_grad()
    if e["grad"] is not None:
        p._p.accumulate(backend.xp.asarray(e["grad"], dtype=p._p.dtype))


# ---- saving objects (dy.save / dy.load), in DyNet's own layout ------------------------------------------------
# ``basename.meta`` is a sequence of pickles, one per object: ("Parameters", name), ("LookupParameters", name), or
# (builder class, spec, name of its collection); ``basename.data`` holds their parameters in the text format
# above, under their names. Files written by real DyNet's ``dy.save`` load here: its classes (module ``_dynet``)
# are read as this module's.


class _Unpickler(pickle.Unpickler):
    """Reads only what ``save`` writes: tuples of plain values and classes that rebuild from a spec. Any other
    global (``os.system``, ...) is refused, since a ``.meta`` file that names one runs it when unpickled."""

    def __init__(self, fh, fname):
        super().__init__(fh)
        self.fname = fname

    def find_class(self, module, name):
        if module in ("_dynet", "dynet"):
            import autobatch.dynet as ad

            found = getattr(ad, name, None)
        else:
            found = super().find_class(module, name)
        if isinstance(found, type) and hasattr(found, "from_spec"):
            return found
        raise pickle.UnpicklingError(f"{self.fname}: refuses to load {module}.{name}: a saved-objects file names "
                                     "only classes with from_spec (a builder); this one may run code")


def save(basename, objects):
    """Save parameters, lookup parameters and builders (anything with ``spec``, ``from_spec`` and
    ``param_collection``) to ``basename.meta`` and ``basename.data``, as DyNet does."""
    open(basename + ".data", "w").close()
    with open(basename + ".meta", "wb") as fh:
        for obj in objects:
            if isinstance(obj, Parameters):
                pickle.dump((type(obj).__name__, obj.name()), fh)
                obj.save(basename + ".data", append=True)
            elif hasattr(obj, "param_collection"):
                pickle.dump((type(obj), obj.spec, obj.param_collection().name()), fh)
                obj.param_collection().save(basename + ".data", append=True)
            else:
                raise TypeError(errors.at(f"save: cannot save a {type(obj).__name__}"))


def load_generator(basename, pc):
    """Rebuild saved objects (ours or real DyNet's) in collection ``pc``, one at a time."""
    data = basename + ".data"
    with open(basename + ".meta", "rb") as fh:
        while True:
            try:
                item = _Unpickler(fh, basename + ".meta").load()
            except EOFError:
                return
            if item[0] in ("Parameters", "LookupParameters"):
                yield pc.load_param(data, item[1])
            else:
                cls, spec, name = item
                obj = cls.from_spec(spec, pc)
                obj.param_collection().populate(data, name)
                yield obj


def load(basename, pc):
    """Rebuild saved objects in collection ``pc`` (a list, in the order saved)."""
    return list(load_generator(basename, pc))
