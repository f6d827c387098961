"""The computation graph of the current minibatch: nodes recorded lazily, one signature per node.

Storage is a set of parallel lists indexed by node id (no object per node), and everything a node's batch
needs to know — primitive, attributes, output shape, dtype, which inputs are shared — lives in its signature,
computed once per distinct signature. Building a node is therefore a tuple, a dict look-up and a few appends.
"""
import time

import numpy as np

from . import errors
from .registry import PARAM, ShapeError

STRATEGIES = ("off", "depth", "agenda")
STRIDE = 1 << 32  # node locations: batch id * STRIDE + position

# The dtype of the most recently created ParameterCollection: what inputs and constants default to.
default_dtype = [np.dtype(np.float32)]
latest_collection = [None]  # the most recently created ParameterCollection


class Signature:
    """What nodes must share to run in one kernel call: op, attributes, input shapes and dtypes, and the
    identity of shared inputs. ``kp`` numbers the (shape, dtype) pair; consumers put it in their own keys."""

    __slots__ = ("id", "prim", "attrs", "kw", "shape", "dtype", "kp", "shared", "expand", "batchable", "param")

    def __init__(self, sid, prim, attrs, shape, dtype, kp, shared, expand, batchable, param=None):
        self.id, self.prim, self.attrs, self.kw = sid, prim, attrs, dict(attrs)
        self.shape, self.dtype, self.kp = shape, dtype, kp
        self.shared, self.expand, self.batchable, self.param = shared, expand, batchable, param

    def describe(self):
        """A short human-readable form, e.g. ``matmul(W0 shared, (128,)) -> (64,)``."""
        kw = "".join(f", {k}={v}" for k, v in self.attrs if k not in ("shape", "dtype"))
        return f"{self.prim.name}{kw} -> {self.shape}"


class Graph:
    """One minibatch's graph. Created by ``renew_cg``; expressions of an older graph are rejected."""

    def __init__(self, strategy="agenda", check_finite=False):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: expected one of {STRATEGIES}")
        self.strategy = strategy
        self.check_finite = check_finite
        self.n_sig, self.n_args, self.n_depth = [], [], []
        self.n_aux = {}  # per-node data (an index, an input array), only for the nodes that have some
        # Where each executed node's value lives, as one int: batch id * STRIDE + position in the batch
        # (-1 before it runs). One int sorts, compares and tests contiguity faster than a pair.
        self.n_loc = []
        self.first_pending = 0  # every node below this id has run
        self.n_site = [] if check_finite else None
        self.static = set()  # nodes computed from parameters only: the same for every example
        self._sigs, self.signatures, self._kinds = {}, [], {}
        self._param_node, self._cse = {}, {}
        self.batches = []
        self.backward_batches = 0
        self.times = dict(build_s=0.0, schedule_s=0.0, execute_s=0.0, backward_s=0.0)
        self._mark = time.perf_counter()

    def __len__(self):
        return len(self.n_sig)

    # ---- building ----------------------------------------------------------------------------------------

    def _new_signature(self, key, prim, attrs, args, batchable=True, param=None):
        n_sig = self.n_sig
        shapes = [n_sig[a].shape for a in args]
        dtypes = {n_sig[a].dtype for a in args}
        if len(dtypes) > 1:
            raise TypeError(errors.at(f"{prim.name}: inputs mix dtypes {sorted(map(str, dtypes))}; "
                                      f"convert with input_tensor(..., dtype=) so all match"))
        kw = dict(attrs)
        try:
            shape = tuple(prim.shape(shapes, **kw))
        except ShapeError as e:
            raise ValueError(errors.at(f"{prim.name}: {e}")) from None
        dtype = dtypes.pop() if dtypes else kw.get("dtype")
        shared = tuple(p < 0 for p in key[2:]) if batchable else (False,) * len(args)
        expand = tuple(prim.kind == "elementwise" and not sh and len(s) < len(shape)
                       for s, sh in zip(shapes, shared))
        kp = self._kinds.setdefault((shape, dtype), len(self._kinds))
        sig = Signature(len(self.signatures), prim, attrs, shape, dtype, kp, shared, expand, batchable, param)
        self._sigs[key] = sig
        self.signatures.append(sig)
        return sig

    def add(self, prim, args, attrs=(), aux=None):
        """Record a node of ``prim`` over input node ids ``args``; returns its id. Nothing is computed."""
        n_sig, static, n_depth = self.n_sig, self.static, self.n_depth
        if static.isdisjoint(args):  # the common case, unrolled: this is the hottest line of model code
            k = len(args)
            if k == 1:
                a = args[0]
                key, depth = (prim, attrs, n_sig[a].kp), n_depth[a] + 1
            elif k == 2:
                a, b = args
                key, depth = (prim, attrs, n_sig[a].kp, n_sig[b].kp), max(n_depth[a], n_depth[b]) + 1
            else:
                key = (prim, attrs, *[n_sig[a].kp for a in args])
                depth = max(map(n_depth.__getitem__, args)) + 1 if args else 0
        elif prim.constant_foldable and static.issuperset(args):
            return self._add_static(prim, args, attrs)
        elif prim.shares:  # a shared parameter (or constant) input is passed once; its identity joins the key
            if len(args) == 1:  # a lookup
                key, depth = (prim, attrs, -1 - args[0]), n_depth[args[0]] + 1
            elif len(args) == 2:
                a, b = args
                key = (prim, attrs, -1 - a if a in static else n_sig[a].kp, -1 - b if b in static else n_sig[b].kp)
                depth = max(n_depth[a], n_depth[b]) + 1
            else:
                key = (prim, attrs, *[-1 - a if a in static else n_sig[a].kp for a in args])
                depth = max(map(n_depth.__getitem__, args)) + 1
        else:
            key = (prim, attrs, *[n_sig[a].kp for a in args])
            depth = max(map(n_depth.__getitem__, args)) + 1
        sig = self._sigs.get(key) or self._new_signature(key, prim, attrs, args)
        n = len(n_sig)
        n_sig.append(sig)
        self.n_args.append(args)
        n_depth.append(depth)
        if aux is not None:
            self.n_aux[n] = aux
        if self.n_site is not None:
            self.n_site.append(errors.user_site())
        return n

    def _add_static(self, prim, args, attrs):
        # A function of parameters alone is the same for every example: compute it once (common
        # subexpression) and let consumers share it like a parameter.
        key = (prim, attrs, args)
        n = self._cse.get(key)
        if n is None:
            n = self._append(self._new_signature(("static", len(self.n_sig)), prim, attrs, args, False), args,
                             max(self.n_depth[a] for a in args) + 1)
            self.static.add(n)
            self._cse[key] = n
        return n

    def _append(self, sig, args, depth, aux=None):
        n = len(self.n_sig)
        self.n_sig.append(sig)
        self.n_args.append(args)
        self.n_depth.append(depth)
        if aux is not None:
            self.n_aux[n] = aux
        if self.n_site is not None:
            self.n_site.append(errors.user_site())
        return n

    def param_node(self, param):
        """The node reading ``param`` in this graph (one per parameter, however often it is used)."""
        n = self._param_node.get(param)
        if n is None:
            attrs = (("shape", param.shape), ("dtype", param.dtype))
            sig = self._new_signature(("param", len(self.n_sig)), PARAM, attrs, (), False, param)
            n = self._append(sig, (), 0, param.data)
            self.static.add(n)
            self._param_node[param] = n
        param._node = (self, n)
        return n

    # ---- running -----------------------------------------------------------------------------------------

    def forward(self, *targets):
        """Execute every not-yet-run node that the ``targets`` (node ids) need, batched by the strategy."""
        from . import executor, scheduler  # executed lazily: building needs neither

        grow = len(self.n_sig) - len(self.n_loc)
        if grow:
            self.n_loc.extend([-1] * grow)
        targets = [t for t in targets if self.n_loc[t] < 0]
        if not targets:
            return
        t0 = time.perf_counter()
        self.times["build_s"] += t0 - self._mark
        plan = scheduler.schedule(self, targets)
        t1 = time.perf_counter()
        executor.run_forward(self, plan)
        n_loc, lo = self.n_loc, self.first_pending
        while lo < len(n_loc) and n_loc[lo] >= 0:
            lo += 1
        self.first_pending = lo
        self._mark = t2 = time.perf_counter()
        self.times["schedule_s"] += t1 - t0
        self.times["execute_s"] += t2 - t1

    def value_of(self, n):
        """The backend array of node ``n`` (a view into its batch's output), executing as needed. Inside
        ``batch_map`` an example asking for a value it lacks is suspended until the others catch up."""
        if n >= len(self.n_loc) or self.n_loc[n] < 0:
            (value_hook[0] or Graph.forward)(self, n)
        b, p = divmod(self.n_loc[n], STRIDE)
        return self.batches[b].out[p]

    def collection(self):
        """The ParameterCollection this graph reads (that of its first parameter; else the latest created)."""
        for param in self._param_node:
            return param.collection
        return latest_collection[0]

    def batch_of(self, n):
        """The id of the batch node ``n`` ran in (-1 if it has not run)."""
        return self.n_loc[n] // STRIDE if n < len(self.n_loc) and self.n_loc[n] >= 0 else -1

    def has_pending(self):
        """True when some node has not run yet."""
        return len(self.n_loc) < len(self.n_sig) or -1 in self.n_loc

    def backward(self, target):
        """Accumulate d target / d parameter into every parameter's ``.grad``."""
        from . import executor

        self.forward(target)
        t0 = time.perf_counter()
        executor.run_backward(self, target)
        self._mark = t1 = time.perf_counter()
        self.times["backward_s"] += t1 - t0


_current = [Graph()]
value_hook = [None]  # set by batch_map: how a missing value is obtained (suspend, or run now)


def current():
    """The current graph (the one made by the latest ``renew_cg``)."""
    return _current[0]


def renew_cg(strategy="agenda", check_finite=False):
    """Start a new graph for the next minibatch. ``strategy``: "agenda" (default), "depth" or "off" (node by
    node). ``check_finite=True`` makes every batch check its output and name the first node that produced a
    NaN or infinity. Parameter gradients are not cleared (use ``zero_grad``)."""
    g = _current[0] = Graph(strategy, check_finite)
    return g
