"""The computation graph of the current minibatch: nodes recorded lazily, one signature per node.

Storage is a set of parallel lists indexed by node id (no object per node), and everything a node's batch
needs to know — primitive, attributes, output shape, dtype, which inputs are shared — lives in its signature,
computed once per distinct signature. Building a node is therefore a tuple, a dict look-up and a few appends.

A node's value is either one array of its signature's shape, or a *sequence*: T rows of that shape, T differing
from example to example (a sentence's word vectors). Signatures ignore T, so sentences of any lengths share
kernels: a batch of sequences is their rows packed one after another, and an op applied row by row (a product
with a weight matrix, tanh, a loss per word) runs over all the words of all the sentences in one call.
"""
import itertools
import time
import weakref

import numpy as np

try:
    import cython

    COMPILED = cython.compiled  # True inside the compiled module
except ImportError:  # pure Python without Cython installed
    COMPILED = False

from autobatch.kernels import backend

from . import errors, executor, scheduler
from .executor import STRIDE
from .registry import PARAM, ShapeError
from .signature import Signature

STRATEGIES = ("off", "depth", "agenda")

# Signatures are shared by all graphs: a minibatch finds the ones it needs already made (shape rules run once
# per distinct signature per process, not per graph). Their keys therefore hold only global facts: interned
# (shape, dtype, sequence) kinds, and for shared inputs a global id of the constant (a parameter, or a value
# computed from parameters) rather than a node id.
_KINDS = {}
_SIGNATURES = {}
_CONSTANTS = {}  # a constant's recipe (param uid, or op and input constants) -> its global id
# A dead parameter's constant ids never come back, so every entry naming one is garbage: each live constant id
# lists the entries of the two tables above that name it, and they go when its parameter is collected (see
# ``release_parameter``). A constant id missing here is dead; signatures naming one stay local to their graph.
_OWNED = {}
_sig_ids, _const_ids = itertools.count(), itertools.count()  # never reused: entries are dropped

# The dtype of the most recently created ParameterCollection: what inputs and constants default to.
default_dtype = [np.dtype(np.float32)]
latest_collection = [None]  # a weak reference to the most recently created ParameterCollection


_BITS15, _BITS16, _BITS23, _BITS24, _BITS47 = 1 << 15, 1 << 16, 1 << 23, 1 << 24, 1 << 47  # Graph.add's fields


def _zigzag(x):
    """A signature key's entry as a non-negative code for ``Graph.add``'s int key: x -> 2x, -1 - c -> 2c + 1.
    Compiled, an inline C function (``graph.pxd``); only the compiled branches call it."""
    return x + x if x >= 0 else -x - x - 1


def _first_pending(n_loc, lo):
    """The id of the first node from ``lo`` on that has not run (``len(n_loc)`` if all have). Compiled, a C
    loop (graph.pxd): a loop in ``Graph.forward`` itself, over untyped values, cost 5% of a Tree-LSTM's forward
    pass."""
    size = len(n_loc)
    while lo < size and n_loc[lo] >= 0:
        lo += 1
    return lo


def _constant(key, inputs):
    """The global id of the constant ``key`` made from constants ``inputs``, made on first use; it is
    registered (shared by later graphs) only while all its inputs are alive."""
    cid = _CONSTANTS.get(key)
    if cid is None:
        cid = next(_const_ids)
        owners = [_OWNED.get(c) for c in inputs]  # (taken at once: the garbage collector may release one)
        if None not in owners:
            _CONSTANTS[key] = cid
            _OWNED[cid] = []
            for owner in owners:
                owner.append((_CONSTANTS, key))
    return cid


def _publish(key, sig):
    """Share a new signature with later graphs, unless it names a constant whose parameter is gone."""
    if type(key[0]) is str:  # ("param", id) or ("static", id)
        consts = (key[1],)
    else:  # shared inputs appear in the key as -1 - constant id
        consts = [-1 - k for k in key[2:] if type(k) is int and k < 0]
    owners = [_OWNED.get(c) for c in consts]
    if None not in owners:
        _SIGNATURES[key] = sig
        for owner in owners:
            owner.append((_SIGNATURES, key))


def _release(cid):
    for table, key in _OWNED.pop(cid, ()):
        dropped = table.pop(key, None)
        if table is _CONSTANTS and dropped is not None:  # a constant computed from this one goes too
            _release(dropped)


def release_parameter(uid):
    """Forget the signatures and constants of the parameter numbered ``uid`` and of everything computed from
    it; called when the parameter is garbage-collected, so that dropped models free their memory."""
    cid = _CONSTANTS.pop(("param", uid), None)
    if cid is not None:
        _release(cid)


def keeps_int(prim, kw):
    """Whether ``prim`` with attributes ``kw`` gives integers for integer inputs (see ``Primitive.keeps_int``)."""
    keeps = prim.keeps_int
    return keeps(**kw) if callable(keeps) else keeps


class _Retype(Exception):
    """Raised inside ``Graph.add`` when a node's inputs must first be converted (see ``Graph._unify``)."""

    def __init__(self, args):
        super().__init__()
        self.args = args


class Graph:
    """One minibatch's graph. Created by ``renew_cg``; expressions of an older graph are rejected.

    Compiled (setup.py), Graph and Signature are extension types whose attributes ``graph.pxd`` declares: a new
    attribute needs its line there too."""

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
        self.weak = {}  # leaves built without a dtype (they take the dtype of the values they meet: _unify) ->
        # the numbers given, where the leaf's dtype rounded them (else None)
        self._weak_of, self._retyped = {}, {}  # whether a node derives from weak leaves only; its copy per dtype
        self._sigs, self.signatures, self.local = {}, [], {}  # signatures used here; their index here
        self._fast = {}  # the same signatures under int keys (see ``add``)
        self._param_node, self._cse = {}, {}  # parameter uid -> node (the graph holds no Parameter)
        self.ref = weakref.ref(self)  # what parameters remember as their last graph
        self.batches = []
        self.backward_batches = 0
        self.times = dict(build_s=0.0, schedule_s=0.0, execute_s=0.0, backward_s=0.0)
        self.transfers_at = dict(backend.transfers)  # host/device moves before this graph (graph_stats subtracts)
        self._mark = time.perf_counter()

    def __len__(self):
        return len(self.n_sig)

    # ---- building ----------------------------------------------------------------------------------------

    def _signature(self, key, prim, attrs, args, batchable=True, param=None, rows=None):
        """The signature of ``key``, made on first use in this process, registered in this graph."""
        sig = _SIGNATURES.get(key) or self._new_signature(key, prim, attrs, args, batchable, param, rows)
        self._sigs[key] = sig
        self.local[sig] = sig.lidx = len(self.signatures)
        sig.lref = self.ref
        self.signatures.append(sig)
        return sig

    def _new_signature(self, key, prim, attrs, args, batchable=True, param=None, rows=None):
        n_sig = self.n_sig
        shapes = [n_sig[a].shape for a in args]
        dtypes = {n_sig[a].dtype for a in args}
        if len(dtypes) > 1:
            raise _Retype(self._unify(prim, args))
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
        promoted = False  # (an if, not `and`: see the note on Cython below)
        if args and dtype.kind != "f" and not keeps_int(prim, kw):  # tanh, / or sqrt of integers are floats, as
            dtype, promoted = default_dtype[0], True  # in NumPy and PyTorch: the float default
        elementwise = prim.kind == "elementwise"  # bool(): compiled, Cython 3.3 miscompiles `object and bint`
        expand = tuple(bool(elementwise) and not sh and len(s) < len(shape) for s, sh in zip(shapes, shared))
        kp = _KINDS.setdefault((shape, dtype, ragged), len(_KINDS))
        const = key[1] if type(key[0]) is str else -1  # ("param", id) or ("static", id): a constant's nodes
        sig = Signature(next(_sig_ids), prim, attrs, shape, dtype, kp, shared, expand, batchable,
                        None if param is None else weakref.ref(param), ragged, seq_inputs, const)
        if not promoted:  # the default may change, so a promotion stays local to this graph
            _publish(key, sig)
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
        n_sig, n_depth = self.n_sig, self.n_depth
        if prim.builds:
            return self._add_sequence(prim, args, attrs)
        k = len(args)
        # The common cases first, unrolled: this is the hottest code of model code (typed locals when compiled).
        # An input computed from parameters alone (its signature's const is set) enters the key as its constant
        # (-1 - const) where the op shares it (a weight matrix: one for the batch), else as its kind. With up to
        # three inputs the key is first tried as one int, ``fast``: the primitive's uid and each entry
        # zigzagged to a non-negative code (x -> 2x, -1 - c -> 2c + 1) in bit fields, -1 where they do not fit.
        # An int is hashed and compared in a few instructions, where the tuple key is made, hashed (its
        # attributes tuple again for every node), compared and freed. (Only compiled: in pure Python the
        # arithmetic costs more than the tuple, so it makes the tuple at once and skips every step of the int key.)
        if COMPILED:
            fast, ka, kb, kc = -1, 0, 0, 0  # (all set: the C compiler cannot see which k reads which)
        if k == 1:
            a = args[0]
            sa = n_sig[a]
            depth = n_depth[a] + 1
            if sa.const >= 0 and prim.constant_foldable:
                return self._add_static(prim, args, attrs)
            ka = -1 - sa.const if sa.const >= 0 and prim.shares else sa.kp
            if COMPILED:
                ca = _zigzag(ka)
                if ca < _BITS47:
                    fast = prim.uid | ca << 16
            else:
                key = (prim, attrs, ka)
        elif k == 2:
            a, b = args[0], args[1]
            sa, sb = n_sig[a], n_sig[b]
            depth, da = n_depth[a], n_depth[b]  # (compiled, C ints compared: no objects)
            if da > depth:
                depth = da
            depth += 1
            if sa.const >= 0 and sb.const >= 0 and prim.constant_foldable:
                return self._add_static(prim, args, attrs)
            if prim.shares:
                ka = sa.kp if sa.const < 0 else -1 - sa.const
                kb = sb.kp if sb.const < 0 else -1 - sb.const
            else:
                ka, kb = sa.kp, sb.kp
            if COMPILED:
                ca = _zigzag(ka)
                cb = _zigzag(kb)
                if ca < _BITS24 and cb < _BITS23:
                    fast = prim.uid | ca << 16 | cb << 40
            else:
                key = (prim, attrs, ka, kb)
        else:  # no input, or 3 or more: one loop counts the static ones, another makes the key
            n_static, depth = 0, -1
            for a in args:
                sa = n_sig[a]
                if sa.const >= 0:
                    n_static += 1
                da = n_depth[a]
                if da > depth:
                    depth = da
            if k and n_static == k and prim.constant_foldable:
                return self._add_static(prim, args, attrs)
            depth += 1
            shares = False  # a shared parameter (or constant) input is passed once; its identity joins the key
            if n_static and prim.shares:
                shares = True
            if k == 3:  # affine(b, W, x), the commonest op of the recurrent cells
                a, b, c = args[0], args[1], args[2]  # (compiled, C ints: n_sig is read without an index object)
                sa, sb, sc = n_sig[a], n_sig[b], n_sig[c]
                ka = -1 - sa.const if shares and sa.const >= 0 else sa.kp
                kb = -1 - sb.const if shares and sb.const >= 0 else sb.kp
                kc = -1 - sc.const if shares and sc.const >= 0 else sc.kp
                if COMPILED:
                    ca = _zigzag(ka)
                    cb = _zigzag(kb)
                    cc = _zigzag(kc)
                    if ca < _BITS16 and cb < _BITS16 and cc < _BITS15:
                        fast = prim.uid | ca << 16 | cb << 32 | cc << 48
                else:
                    key = (prim, attrs, ka, kb, kc)
            else:
                parts = [prim, attrs]
                for a in args:
                    sa = n_sig[a]
                    parts.append(-1 - sa.const if shares and sa.const >= 0 else sa.kp)
                key = tuple(parts)
        sig = None
        if COMPILED:
            if rows is not None or prim.uid >= _BITS16:
                fast = -1
            elif fast >= 0:
                sig = self._fast.get(fast)
                if sig is not None and sig.attrs is not attrs and sig.attrs != attrs:
                    sig = None  # the same op and inputs with other attributes: the tuple key decides
            if sig is None and 0 < k < 4:  # a miss: now the tuple (no input or more than three: made above)
                key = (prim, attrs, ka) if k == 1 else (prim, attrs, ka, kb) if k == 2 else (prim, attrs, ka, kb, kc)
        if sig is None:
            if rows is not None:
                key += ("rows",)
            try:
                sig = self._sigs.get(key) or self._signature(key, prim, attrs, args, rows=rows)
            except _Retype as r:  # inputs of several dtypes, some weakly typed: those now take the explicit one
                return self.add(prim, r.args, attrs, aux, rows)
            if COMPILED and fast >= 0:
                self._fast[fast] = sig
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
        if len({n_sig[a].dtype for a in args}) > 1:
            args = self._unify(prim, args)
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
            inputs = tuple([self.n_sig[a].const for a in args])
            uid = _constant((prim, attrs, inputs), inputs)
            sig = self._sigs.get(("static", uid)) or self._signature(("static", uid), prim, attrs, args, False)
            n = self._append(sig, args, max(self.n_depth[a] for a in args) + 1)
            self._cse[key] = n
        return n

    def _append(self, sig, args, depth, aux=None):
        n = len(self.n_sig)
        self.n_sig.append(sig)
        # Compiled, a tuple of ids leaves the cycle collector's lists (``_untrack``: PyObject_GC_UnTrack, declared
        # in graph.pxd; pure Python cannot). Ints make no cycles, and the collector untracks such a tuple itself,
        # but only at the first collection that meets it: until then every collection of the young objects walked
        # each node's tuple (of a tree minibatch's build, the collector took 13% of the instructions, and this
        # gives back a third of that; the young collections' seconds went from 4.2 to 0.8 ms per graph).
        if COMPILED and type(args) is tuple:
            _untrack(args)  # noqa: F821
        self.n_args.append(args)
        self.n_depth.append(depth)
        if aux is not None:
            self.n_aux[n] = aux
        if self.n_site is not None:
            self.n_site.append(errors.user_site())
        return n

    # ---- weakly typed leaves -----------------------------------------------------------------------------
    # An input or zeros built without a dtype takes the default (the latest ParameterCollection's), which may not
    # be the dtype of the model it meets: a float64 model next to a stray float32 collection. As in JAX, such
    # leaves are weakly typed: a node combining them with an explicitly typed value gets copies of them (and of
    # anything computed from them alone) in that value's dtype. The work happens only on a mismatch, when the
    # signature look-up misses anyway, so the hot path pays nothing; explicit dtypes that mix still raise.

    def _is_weak(self, n):
        """True when node ``n`` is a weak leaf or is computed from weak leaves alone (no parameter)."""
        memo, n_args = self._weak_of, self.n_args
        stack = [n]
        while stack:  # iterative: a running sum over many inputs is a deep chain
            m = stack[-1]
            if m in memo:
                stack.pop()
            elif m in self.weak or self.n_sig[m].const >= 0 or not n_args[m]:
                memo[m] = m in self.weak
                stack.pop()
            else:
                todo = [a for a in n_args[m] if a not in memo]
                if todo:
                    stack.extend(todo)
                else:
                    memo[m] = all(memo[a] for a in n_args[m])
                    stack.pop()
        return memo[n]

    def _unify(self, prim, args):
        """``args`` with every weakly typed input replaced by its copy in the explicit dtype among them (the
        widest float when all are weak); a TypeError where explicit dtypes mix."""
        n_sig = self.n_sig
        strong = {n_sig[a].dtype for a in args if not self._is_weak(a)}
        if len(strong) > 1 or (strong and next(iter(strong)).kind != "f"):
            dtypes = sorted({str(n_sig[a].dtype) for a in args})
            raise TypeError(errors.at(f"{prim.name}: inputs mix dtypes {dtypes}; convert with "
                                      f"input_tensor(..., dtype=) so all match"))
        target = strong.pop() if strong else np.result_type(*{n_sig[a].dtype for a in args})
        return tuple(a if n_sig[a].dtype == target else self._retype(a, target) for a in args)

    def _retype(self, n, dtype):
        """The copy of weak node ``n`` in ``dtype``: its leaves converted, the nodes over them recorded again."""
        memo, n_sig, n_args = self._retyped, self.n_sig, self.n_args
        stack = [n]
        while stack:
            m = stack[-1]
            if (m, dtype) in memo or n_sig[m].dtype == dtype:
                stack.pop()
                continue
            todo = [a for a in n_args[m] if (a, dtype) not in memo and n_sig[a].dtype != dtype]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            sig = n_sig[m]
            aux = self.n_aux.get(m)
            if not n_args[m]:  # a leaf: the same value in the new dtype
                attrs = tuple((k, dtype if k == "dtype" else v) for k, v in sig.attrs)
                source = self.weak[m] if self.weak[m] is not None else aux
                copy = self.add(sig.prim, (), attrs, None if source is None else source.astype(dtype))
                self.weak[copy] = self.weak[m]
            else:
                args = tuple(memo.get((a, dtype), a) for a in n_args[m])
                # A sequence keeps its row count, which its inputs' need not give (a slice, a tree's nodes).
                rows = None if sig.prim.builds else self.n_rows.get(m)
                copy = self.add(sig.prim, args, sig.attrs, aux, rows)
            memo[(m, dtype)] = copy
        return memo.get((n, dtype), n)

    def param_node(self, param):
        """The node reading ``param`` in this graph (one per parameter, however often it is used)."""
        n = self._param_node.get(param.uid)
        if n is None:
            attrs = (("shape", param.shape), ("dtype", param.dtype))
            uid = _constant(("param", param.uid), ())
            sig = self._sigs.get(("param", uid)) or self._signature(("param", uid), PARAM, attrs, (), False, param)
            n = self._append(sig, (), 0, param.data)
            self._param_node[param.uid] = n
        param._node = (self.ref, n)  # weak: a parameter must not keep the last graph that read it alive
        return n

    # ---- running -----------------------------------------------------------------------------------------

    def forward(self, *targets):
        """Execute every not-yet-run node that the ``targets`` (node ids) need, batched by the strategy."""
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
        self.first_pending = _first_pending(self.n_loc, self.first_pending)
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

    def is_static(self, n):
        """Whether node ``n`` is computed from parameters alone (the same value for every example)."""
        return self.n_sig[n].const >= 0

    def shape_of(self, n):
        """The full shape of node ``n``'s value (a sequence's starts with its row count)."""
        rows = self.n_rows.get(n)
        shape = self.n_sig[n].shape
        return shape if rows is None else (rows,) + shape

    def collection(self):
        """The ParameterCollection this graph reads (that of its first parameter; else the latest created)."""
        for n in self._param_node.values():
            param = self.n_sig[n].param()
            if param is not None:
                return param.collection
        latest = latest_collection[0]
        return None if latest is None else latest()

    def batch_of(self, n):
        """The id of the batch node ``n`` ran in (-1 if it has not run)."""
        return self.n_loc[n] // STRIDE if n < len(self.n_loc) and self.n_loc[n] >= 0 else -1

    def invalidate(self):
        """Forget every value this graph has computed, so that the next request recomputes it (an input was set,
        or parameters changed, since: DyNet's static-graph style). The nodes stay."""
        self.batches.clear()
        self.n_loc.clear()  # grown back to "not run" (-1) by the next forward
        self.first_pending = 0

    def has_pending(self):
        """True when some node has not run yet: one built since the last forward pass (past the end of
        ``n_loc``), or one before ``first_pending``'s end that the last pass did not need (``first_pending`` is
        the first such node; searching ``n_loc`` for one cost 0.7% of a tree minibatch's training step, from
        ``graph_stats`` once per minibatch)."""
        return len(self.n_loc) < len(self.n_sig) or self.first_pending < len(self.n_loc)

    def backward(self, target):
        """Accumulate d target / d parameter into every parameter's ``.grad``."""
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
