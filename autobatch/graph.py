"""The computation graph of the current minibatch: nodes recorded lazily, one signature per node.

Storage is a set of parallel lists indexed by node id (no object per node), and everything a node's batch
needs to know — primitive, attributes, output shape, dtype, which inputs are shared — lives in its signature,
computed once per distinct signature. Building a node is therefore a tuple, a dict look-up and a few appends.

A node's value is either one array of its signature's shape, or a *sequence*: T rows of that shape, T differing
from example to example (a sentence's word vectors). Signatures ignore T, so sentences of any lengths share
kernels: a batch of sequences is their rows packed one after another, and an op applied row by row (a product
with a weight matrix, tanh, a loss per word) runs over all the words of all the sentences in one call.
"""
import time

import numpy as np

from . import errors
from .registry import PARAM, ShapeError

STRATEGIES = ("off", "depth", "agenda")
STRIDE = 1 << 32  # node locations: batch id * STRIDE + position

# Signatures are shared by all graphs: a minibatch finds the ones it needs already made (shape rules run once
# per distinct signature per process, not per graph). Their keys therefore hold only global facts: interned
# (shape, dtype, sequence) kinds, and for shared inputs a global id of the constant (a parameter, or a value
# computed from parameters) rather than a node id.
_KINDS = {}
_SIGNATURES = {}
_CONSTANTS = {}  # a constant's recipe (param uid, or op and input constants) -> its global id

# The dtype of the most recently created ParameterCollection: what inputs and constants default to.
default_dtype = [np.dtype(np.float32)]
latest_collection = [None]  # the most recently created ParameterCollection


class Signature:
    """What nodes must share to run in one kernel call: op, attributes, input shapes, dtypes and whether they
    are sequences, and the identity of shared inputs. ``kp`` numbers the (shape, dtype, sequence) triple;
    consumers put it in their own keys. ``shape`` is a sequence's row shape."""

    __slots__ = ("id", "prim", "attrs", "kw", "shape", "dtype", "kp", "shared", "expand", "batchable", "param",
                 "ragged", "seq_inputs")

    def __init__(self, sid, prim, attrs, shape, dtype, kp, shared, expand, batchable, param=None, ragged=False,
                 seq_inputs=()):
        self.id, self.prim, self.attrs, self.kw = sid, prim, attrs, dict(attrs)
        self.shape, self.dtype, self.kp = shape, dtype, kp
        self.shared, self.expand, self.batchable, self.param = shared, expand, batchable, param
        self.ragged, self.seq_inputs = ragged, seq_inputs  # output is a sequence; which inputs are

    def describe(self):
        """A short human-readable form, e.g. ``matmul, xvec=True -> (64,)`` (``[T] x`` for sequences)."""
        kw = "".join(f", {k}={v}" for k, v in self.attrs if k not in ("shape", "dtype"))
        return f"{self.prim.name}{kw} -> {'[T] x ' if self.ragged else ''}{self.shape}"


class Graph:
    """One minibatch's graph. Created by ``renew_cg``; expressions of an older graph are rejected."""

    def __init__(self, strategy="agenda", check_finite=False):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: expected one of {STRATEGIES}")
        self.strategy = strategy
        self.check_finite = check_finite
        self.n_sig, self.n_args, self.n_depth = [], [], []
        self.n_aux = {}  # per-node data (an index, an input array), only for the nodes that have some
        self.n_rows = {}  # a sequence node's row count T
        # Where each executed node's value lives, as one int: batch id * STRIDE + position in the batch
        # (-1 before it runs). One int sorts, compares and tests contiguity faster than a pair.
        self.n_loc = []
        self.first_pending = 0  # every node below this id has run
        self.n_site = [] if check_finite else None
        self.static = set()  # nodes computed from parameters only: the same for every example
        self._const_id = {}  # such a node's global constant id
        self._sigs, self.signatures, self.local = {}, [], {}  # signatures used here; their index here
        self._param_node, self._cse = {}, {}
        self.batches = []
        self.backward_batches = 0
        self.times = dict(build_s=0.0, schedule_s=0.0, execute_s=0.0, backward_s=0.0)
        self._mark = time.perf_counter()

    def __len__(self):
        return len(self.n_sig)

    # ---- building ----------------------------------------------------------------------------------------

    def _signature(self, key, prim, attrs, args, batchable=True, param=None, rows=None):
        """The signature of ``key``, made on first use in this process, registered in this graph."""
        sig = _SIGNATURES.get(key) or self._new_signature(key, prim, attrs, args, batchable, param, rows)
        self._sigs[key] = sig
        self.local[sig] = len(self.signatures)
        self.signatures.append(sig)
        return sig

    def _new_signature(self, key, prim, attrs, args, batchable=True, param=None, rows=None):
        n_sig = self.n_sig
        shapes = [n_sig[a].shape for a in args]
        dtypes = {n_sig[a].dtype for a in args}
        if len(dtypes) > 1:
            raise TypeError(errors.at(f"{prim.name}: inputs mix dtypes {sorted(map(str, dtypes))}; "
                                      f"convert with input_tensor(..., dtype=) so all match"))
        shared = tuple(p < 0 for p in key[2:2 + len(args)]) if batchable else (False,) * len(args)
        for j in prim.must_share:
            if not shared[j]:
                raise ValueError(errors.at(f"{prim.name}: input {j} must be a parameter (one value for the whole "
                                           f"batch), got a per-example value of shape {shapes[j]}"))
        seq_inputs = tuple(j for j, a in enumerate(args) if n_sig[a].ragged)
        ragged = rows is not None or prim.seq == "build"
        if seq_inputs:
            ragged = self._check_sequence_inputs(prim, args, shared, seq_inputs)
        kw = dict(attrs)
        try:
            shape = tuple(prim.shape(shapes, **kw))
        except ShapeError as e:
            raise ValueError(errors.at(f"{prim.name}: {e}")) from None
        dtype = dtypes.pop() if dtypes else kw.get("dtype")
        expand = tuple(prim.kind == "elementwise" and not sh and len(s) < len(shape)
                       for s, sh in zip(shapes, shared))
        kp = _KINDS.setdefault((shape, dtype, ragged), len(_KINDS))
        sig = Signature(len(_SIGNATURES), prim, attrs, shape, dtype, kp, shared, expand, batchable, param,
                        ragged, seq_inputs)
        _SIGNATURES[key] = sig
        return sig

    def _check_sequence_inputs(self, prim, args, shared, seq_inputs):
        """Whether a node over these inputs (some sequences) gives a sequence; refuses what cannot work."""
        if prim.seq in ("none", "build"):
            raise ValueError(errors.at(f"{prim.name}: does not take sequences (input {seq_inputs[0]} is one); "
                                       f"use rows(x) for its rows"))
        if prim.seq == "rows":
            single = [j for j, a in enumerate(args) if not shared[j] and j not in seq_inputs]
            if single:
                raise ValueError(errors.at(f"{prim.name}: mixes sequences (inputs {list(seq_inputs)}) with a "
                                           f"single value per example (input {single[0]}); a per-row op needs "
                                           f"every per-example input to be a sequence of the same length"))
        return prim.seq in ("rows", "keep")

    def _sequence_rows(self, n, sig, args):
        """Row count of a new sequence node: its inputs' (which must agree, for a per-row op)."""
        n_rows = self.n_rows
        counts = {n_rows[args[j]] for j in sig.seq_inputs}
        if len(counts) > 1:
            raise ValueError(errors.at(f"{sig.prim.name}: sequences of different lengths {sorted(counts)}"))
        n_rows[n] = counts.pop()

    def add(self, prim, args, attrs=(), aux=None, rows=None):
        """Record a node of ``prim`` over input node ids ``args``; returns its id. Nothing is computed.
        ``rows``: the node is a sequence of that many rows (one per item of its per-node data)."""
        n_sig, static, n_depth, const = self.n_sig, self.static, self.n_depth, self._const_id
        if prim.seq == "build":
            return self._add_sequence(prim, args, attrs)
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
                key, depth = (prim, attrs, -1 - const[args[0]]), n_depth[args[0]] + 1
            elif len(args) == 2:
                a, b = args
                key = (prim, attrs, -1 - const[a] if a in static else n_sig[a].kp,
                       -1 - const[b] if b in static else n_sig[b].kp)
                depth = max(n_depth[a], n_depth[b]) + 1
            else:
                key = (prim, attrs, *[-1 - const[a] if a in static else n_sig[a].kp for a in args])
                depth = max(map(n_depth.__getitem__, args)) + 1
        else:
            key = (prim, attrs, *[n_sig[a].kp for a in args])
            depth = max(map(n_depth.__getitem__, args)) + 1
        if rows is not None:
            key += ("rows",)
        sig = self._sigs.get(key) or self._signature(key, prim, attrs, args, rows=rows)
        if sig.ragged:
            if rows is not None:
                self.n_rows[len(n_sig)] = rows
            else:
                self._sequence_rows(len(n_sig), sig, args)
        return self._append(sig, args, depth, aux)

    def _add_sequence(self, prim, args, attrs):
        # The row count is not part of the signature: sequences of every length share one kernel call.
        n_sig = self.n_sig
        kinds = {n_sig[a].kp for a in args}
        key = (prim, attrs, n_sig[args[0]].kp)
        sig = self._sigs.get(key) or self._signature(key, prim, attrs, args[:1])
        if len(kinds) > 1 or sig.seq_inputs:
            raise ValueError(errors.at(f"{prim.name}: rows must be single values of one shape and dtype, got "
                                       f"{sorted({self.shape_of(a) for a in args})}"))
        n = self._append(sig, args, max(map(self.n_depth.__getitem__, args)) + 1)
        self.n_rows[n] = len(args)
        return n

    def _add_static(self, prim, args, attrs):
        # A function of parameters alone is the same for every example: compute it once (common
        # subexpression) and let consumers share it like a parameter.
        key = (prim, attrs, args)
        n = self._cse.get(key)
        if n is None:
            uid = _CONSTANTS.setdefault((prim, attrs, tuple(self._const_id[a] for a in args)), len(_CONSTANTS))
            sig = self._sigs.get(("static", uid)) or self._signature(("static", uid), prim, attrs, args, False)
            n = self._append(sig, args, max(self.n_depth[a] for a in args) + 1)
            self.static.add(n)
            self._const_id[n] = uid
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
            uid = _CONSTANTS.setdefault(("param", param.uid), len(_CONSTANTS))
            sig = self._sigs.get(("param", uid)) or self._signature(("param", uid), PARAM, attrs, (), False, param)
            n = self._append(sig, (), 0, param.data)
            self.static.add(n)
            self._const_id[n] = uid
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
        rows = self.n_rows.get(n)
        return self.batches[b].out[p] if rows is None else self.batches[b].out[p:p + rows]

    def shape_of(self, n):
        """The full shape of node ``n``'s value (a sequence's starts with its row count)."""
        rows = self.n_rows.get(n)
        shape = self.n_sig[n].shape
        return shape if rows is None else (rows,) + shape

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
