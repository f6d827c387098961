"""Optimisers over a ParameterCollection (PyTorch names and update rules), global-norm gradient clipping, and a
monitor that records the gradient norm at every step and can pick the clipping threshold from what it saw.

Lookup tables are updated sparsely by default: only the rows a minibatch touched have their value and their
optimiser state (momentum, Adam moments) changed, as in DyNet and ``torch.optim.SparseAdam``; an embedding
table of 100k rows then costs per step what the minibatch's few hundred words cost. ``sparse=False`` gives the
dense semantics instead (every row updated, untouched rows seeing a zero gradient).
"""
import math

import numpy as np

from autobatch.kernels import backend

from .plots import line_plot


def _param_list(params):
    """The parameters of a ParameterCollection (read at every step, so parameters added later are included)
    or of an explicit iterable of parameters."""
    if hasattr(params, "parameters"):
        return params.parameters
    fixed = list(params)
    names = [p.name for p in fixed]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"parameters named {dup} appear more than once; optimiser state is kept by name")
    return lambda: fixed


def _check(cond, message):
    if not cond:
        raise ValueError(message)


class Optimizer:
    """Base class: holds the parameters, per-parameter state by name, and the shared ``step``/``zero_grad``.
    A subclass names its state arrays in ``_slots`` and defines ``_update(value, grad, moments, t)``, which
    updates ``value`` and the arrays of ``moments`` in place (rows of them, for a sparse lookup update)."""

    _hyper = ("lr", "weight_decay", "sparse")
    _slots = ()  # names of the per-parameter state arrays

    def __init__(self, params, lr, weight_decay=0.0, sparse=True):
        _check(lr >= 0.0, f"{type(self).__name__}: learning rate must be >= 0, got {lr}")
        _check(weight_decay >= 0.0, f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay}")
        self._params = _param_list(params)
        self.lr, self.weight_decay, self.sparse = float(lr), float(weight_decay), bool(sparse)
        self.state = {}  # parameter name -> {"step": int, slot: backend array}

    def parameters(self):
        """The parameters this optimiser updates."""
        return self._params()

    def zero_grad(self):
        """Clear the gradients of every parameter."""
        for p in self._params():
            p.zero_grad()

    def step(self):
        """Apply one update from the accumulated gradients. Parameters without a gradient are skipped (as in
        PyTorch, where their ``.grad`` is None), and their state does not advance."""
        for p in self._params():
            if not p.has_grad():
                continue
            st = self.state.get(p.name)
            if st is None:
                xp = backend.xp
                st = self.state[p.name] = {"step": 0, **{s: xp.zeros_like(p.data) for s in self._slots}}
            st["step"] += 1
            if p.is_lookup and self.sparse:
                rows, g = p.sparse_grad()
                if len(rows) == 0:
                    continue
                value = p.data[rows]
                moments = {s: st[s][rows] for s in self._slots}
                self._update(value, g, moments, st["step"])
                p.data[rows] = value
                for s in self._slots:
                    st[s][rows] = moments[s]
            else:
                self._update(p.data, p.grad_data(), st, st["step"])

    def state_dict(self):
        """The optimiser's state as host (NumPy) arrays and plain values: what a checkpoint stores."""
        return {
            "type": type(self).__name__,
            "hyper": {h: _plain(getattr(self, h)) for h in self._hyper},
            "state": {name: {k: (v if k == "step" else np.array(backend.asnumpy(v))) for k, v in st.items()}
                      for name, st in self.state.items()},
        }

    def load_state_dict(self, sd):
        """Restore the state (and the hyper-parameters, as PyTorch does) saved by ``state_dict``."""
        if sd.get("type") != type(self).__name__:
            raise ValueError(f"optimiser state is for {sd.get('type')}, not {type(self).__name__}")
        shapes = {p.name: p.shape for p in self._params()}
        unknown = sorted(set(sd["state"]) - set(shapes))
        if unknown:
            raise ValueError(f"optimiser state names parameters {unknown} that this optimiser does not have")
        for h, v in sd["hyper"].items():
            setattr(self, h, tuple(v) if isinstance(v, list) else v)
        xp = backend.xp
        dtypes = {p.name: p.dtype for p in self._params()}
        self.state = {
            name: {k: (int(v) if k == "step" else xp.asarray(v, dtype=dtypes[name])) for k, v in st.items()}
            for name, st in sd["state"].items()
        }


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD`` (dampening 0):
    ``g += weight_decay * p; buf = momentum * buf + g; p -= lr * (g + momentum * buf if nesterov else buf)``.
    With ``momentum=0`` the buffer is skipped: ``p -= lr * g``."""

    _hyper = Optimizer._hyper + ("momentum", "nesterov")

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, sparse=True):
        super().__init__(params, lr, weight_decay, sparse)
        _check(momentum >= 0.0, f"SGD: momentum must be >= 0, got {momentum}")
        _check(not nesterov or momentum > 0, "SGD: nesterov needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    @property
    def _slots(self):
        return ("momentum_buffer",) if self.momentum else ()

    def _update(self, value, grad, moments, t):
        if self.weight_decay:
            grad = grad + self.weight_decay * value
        if self.momentum:
            buf = moments["momentum_buffer"]
            buf *= self.momentum
            buf += grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        value -= self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with PyTorch's arithmetic: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``; ``weight_decay`` adds ``wd * p`` to ``g``
    (L2, not AdamW). ``t`` counts the steps at which the parameter had a gradient. For a lookup table with
    ``sparse=True`` only touched rows' moments and values change, bias-corrected by the table's ``t``."""

    _hyper = Optimizer._hyper + ("betas", "eps")
    _slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, sparse=True):
        super().__init__(params, lr, weight_decay, sparse)
        b1, b2 = betas
        _check(0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0, f"Adam: betas must lie in [0, 1), got {tuple(betas)}")
        _check(eps >= 0.0, f"Adam: eps must be >= 0, got {eps}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)

    def _update(self, value, grad, moments, t):
        b1, b2 = self.betas
        if self.weight_decay:
            grad = grad + self.weight_decay * value
        m, v = moments["exp_avg"], moments["exp_avg_sq"]
        # One scratch array for every intermediate, each step written in place: the same operations in the same
        # order as a new array per step (the same bits), at one allocation instead of seven.
        xp = backend.xp
        tmp = xp.multiply(grad, 1.0 - b1)
        m *= b1
        m += tmp
        xp.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - b2
        v *= b2
        v += tmp
        xp.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - b2 ** t)
        tmp += self.eps
        xp.divide(m, tmp, out=tmp)
        tmp *= self.lr / (1.0 - b1 ** t)
        value -= tmp


# ---- gradient norms and clipping ---------------------------------------------------------------------------


def _grad_arrays(params):
    """(parameter, gradient array) for every parameter with a gradient; lookup tables give their touched rows.
    The arrays are the stored gradients (scaling them in place scales the gradient), except for a table that
    was both looked up and used whole, whose dense gradient is assembled on demand (see ``_scale``)."""
    out = []
    for p in params:
        if not p.has_grad():
            continue
        out.append((p, p.sparse_grad()[1] if p.is_lookup else p.grad_data()))
    return out


def grad_norm(params):
    """The global L2 norm of all gradients (lookup tables: over their touched rows), as a Python float."""
    params = params.parameters() if hasattr(params, "parameters") else list(params)
    return _norm(_grad_arrays(params))


def _norm(arrays):
    # Summed on the device, then ONE scalar downloaded: the one sync per step that clipping needs.
    xp = backend.xp
    if not arrays:
        return 0.0
    # Each sum of squares is a dot product of the array with itself in float64: one copy (none for float64) and
    # one BLAS pass, where squaring into a second array and summing it made two copies and three passes.
    total = xp.stack([_sum_squares(g.astype(np.float64, copy=False).ravel()) for _, g in arrays]).sum()
    return math.sqrt(float(backend.asnumpy(total)))


def _sum_squares(flat):
    return backend.xp.dot(flat, flat)


def clip_grad_norm(params, max_norm, eps=1e-6):
    """Scale all gradients by ``max_norm / (norm + eps)`` when that is below 1 (as
    ``torch.nn.utils.clip_grad_norm_``); returns the global norm before clipping. Lookup tables are clipped
    on their touched rows only. A non-finite norm is returned and the gradients are left as they are."""
    _check(max_norm is not None and max_norm > 0, f"clip_grad_norm: max_norm must be > 0, got {max_norm}")
    params = params.parameters() if hasattr(params, "parameters") else list(params)
    arrays = _grad_arrays(params)
    norm = _norm(arrays)
    coef = max_norm / (norm + eps)
    if coef < 1.0 and math.isfinite(norm):  # scaling by 0 or NaN would poison every parameter
        for p, g in arrays:
            _scale(p, g, coef)
    return norm


def _scale(p, g, coef):
    g *= coef
    if p.is_lookup and len(g) == len(p.data):
        # A table used whole (E.expr()) as well as looked up hands out a fresh dense copy: store it back.
        p.zero_grad()
        p.accumulate(g)


class GradNormMonitor:
    """Records the global gradient norm at every step and clips to a threshold.

    ``max_norm``: None (record only), a number (clip above it), or ``"auto"``: record the first ``warmup``
    steps unclipped, then clip at the ``percentile`` of what was seen (the deck's "print the gradient norm,
    see its range, scale down what exceeds it"). Call it once per step, after ``backward``::

        monitor = GradNormMonitor("auto", percentile=95, warmup=50)
        norm = monitor(pc)          # the norm before clipping; gradients are clipped in place
        print(monitor.summary())    # {'steps':, 'min':, 'median':, 'p90':, 'p99':, 'max':, 'threshold':}
    """

    def __init__(self, max_norm=None, percentile=95.0, warmup=100):
        auto = isinstance(max_norm, str)
        _check(max_norm is None or (auto and max_norm == "auto") or (not auto and max_norm > 0),
               f"GradNormMonitor: max_norm must be None, 'auto' or a number > 0, got {max_norm!r}")
        _check(0.0 < percentile <= 100.0, f"GradNormMonitor: percentile must lie in (0, 100], got {percentile}")
        _check(int(warmup) >= 1, f"GradNormMonitor: warmup must be >= 1 step, got {warmup}")
        self.auto = auto
        self.percentile, self.warmup = float(percentile), int(warmup)
        self.norms = []  # one per step, before clipping
        self._threshold = None if auto or max_norm is None else float(max_norm)

    @property
    def threshold(self):
        """The clipping threshold in force (None while recording only or still warming up)."""
        return self._threshold

    def __call__(self, params):
        """Record this step's gradient norm, clip if a threshold is in force; returns the norm before clipping."""
        if self._threshold is None:
            norm = grad_norm(params)
        else:
            norm = clip_grad_norm(params, self._threshold)
        self.norms.append(norm)
        if self.auto and self._threshold is None and len(self.norms) >= self.warmup:
            seen = np.array(self.norms[: self.warmup])
            seen = seen[np.isfinite(seen)]
            if len(seen):
                self._threshold = float(np.percentile(seen, self.percentile))
        return norm

    def summary(self):
        """The range of the norms seen so far: steps, min, median, p90, p99, max, and the threshold."""
        a = np.array(self.norms, dtype=float)
        a = a[np.isfinite(a)]
        stats = dict(steps=len(self.norms), threshold=self._threshold)
        if len(a):
            p = np.percentile(a, [0, 50, 90, 99, 100])
            stats.update(zip(("min", "median", "p90", "p99", "max"), map(float, p)))
        return stats

    def plot(self, path):
        """Save the norm per step, with the threshold, as a PNG at ``path``."""
        line_plot(path, {"grad norm": (range(1, len(self.norms) + 1), self.norms)}, "gradient norm", "step",
                   "L2 norm", hline=self._threshold, log=True)
        return path

    def state_dict(self):
        """Everything needed to continue identically after a resume."""
        return {"auto": self.auto, "percentile": self.percentile, "warmup": self.warmup,
                "threshold": self._threshold, "norms": np.array(self.norms, dtype=float)}

    def load_state_dict(self, sd):
        """Restore what ``state_dict`` returned."""
        self.auto, self.percentile, self.warmup = bool(sd["auto"]), float(sd["percentile"]), int(sd["warmup"])
        self._threshold = None if sd["threshold"] is None else float(sd["threshold"])
        self.norms = [float(x) for x in np.asarray(sd["norms"]).reshape(-1)]
