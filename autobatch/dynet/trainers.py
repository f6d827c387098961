"""DyNet's trainers, with DyNet's update rules: one global step count (Adam's bias correction uses it), the
gradient clipped to a global L2 norm of 5 by default, every parameter updated at every step (its gradient
may be zero: moments still decay), lookup tables only in the rows their gradient touched, and the gradients
cleared by ``update()``. Parameters excluded with ``set_updated(False)`` are neither updated nor cleared, nor
counted in the norm. The rules (as DyNet's training.cc states them; s is the clipping scale):

- SimpleSGD: p -= lr * s * g
- MomentumSGD: v = mom * v - lr * s * g; p += v
- Adagrad: g' = s g; G += g'^2; p -= lr * g' / sqrt(G + eps)
- Adadelta: g' = s g; G = rho G + (1-rho) g'^2; d = -g' sqrt(D + eps) / sqrt(G + eps); D = rho D + (1-rho) d^2;
  p += d
- RMSProp: g' = s g; G = rho G + (1-rho) g'^2; p -= lr * g' / sqrt(G + eps)
- Adam: m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2; p -= lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps),
  t = updates + 1; Amsgrad uses vhat = max(vhat, v) in place of v.
"""
import sys

import numpy as np

from autobatch.kernels import backend

from .params import LookupParameters


class Trainer:
    """The shared machinery: clipping, the step count, which rows to update, clearing the gradients."""

    def __init__(self, m, learning_rate):
        self.model = m
        self.learning_rate = float(learning_rate)
        self.clipping_enabled, self.clip_threshold = True, 5.0
        self.updates = self.clips = 0
        self._last = (0, 0)  # clips and updates at the last status()
        self._sparse = True
        self._state = {}

    # DyNet's settings
    def set_clip_threshold(self, thr):
        """Clip the global gradient norm to ``thr``; a value <= 0 disables clipping."""
        self.clipping_enabled = thr > 0
        self.clip_threshold = float(thr)

    def get_clip_threshold(self):
        """The clipping threshold."""
        return self.clip_threshold

    def set_sparse_updates(self, su):
        """Update lookup tables only in the rows that got a gradient (default) or whole."""
        self._sparse = bool(su)

    def set_learning_rate(self, lr):
        """Set the learning rate."""
        self.learning_rate = float(lr)

    def restart(self, learning_rate=None):
        """Forget the optimiser's state (moments, accumulators), optionally with a new learning rate."""
        self._state = {}
        if learning_rate is not None:
            self.learning_rate = float(learning_rate)

    def status(self):
        """Print DyNet's status line: the clips and updates since the last status."""
        print(f"[lr={self.learning_rate:g} clips={self.clips - self._last[0]} updates={self.updates - self._last[1]}] ",
              end="", file=sys.stderr)
        self._last = (self.clips, self.updates)

    def update_epoch(self, r=1.0):
        """Deprecated in DyNet; does nothing."""

    # the step
    def _pieces(self):
        """(parameter, rows or None) for every parameter to update: rows for a lookup table, else None."""
        out = []
        for p in self.model.parameters_list() + self.model.lookup_parameters_list():
            if not p.is_updated():
                continue
            if type(p) is LookupParameters and self._sparse:
                rows, _ = p._p.sparse_grad()
                out.append((p, rows))
            else:
                out.append((p, None))
        return out

    def update(self):
        """One step for every updated parameter, then clear their gradients."""
        pieces = self._pieces()
        grads = []
        for p, rows in pieces:
            if rows is None:
                grads.append(p._p.grad_data())
            else:
                _, g = p._p.sparse_grad()
                grads.append(g)
        scale = 1.0
        if self.clipping_enabled:
            # Summed on the device: one scalar downloaded, not one per parameter.
            norm = float(np.sqrt(backend.asnumpy(sum((g * g).sum() for g in grads))))
            if not np.isfinite(norm):
                raise RuntimeError(f"Magnitude of gradient is bad: {norm}")
            if norm > self.clip_threshold:
                self.clips += 1
                scale = self.clip_threshold / norm
        for (p, rows), g in zip(pieces, grads):
            data = p._p.data
            state = self._state.setdefault(id(p._p), {})
            if rows is None:
                self._rule(data, g, scale, state, None)
            elif len(rows):
                self._rule(data, g, scale, state, rows)
            p._p.zero_grad()
        self.updates += 1

    @staticmethod
    def _slot(state, name, data):
        """The parameter-sized optimiser state ``name`` (zeros at first)."""
        full = state.get(name)
        if full is None:
            full = state[name] = backend.xp.zeros_like(data)
        return full

    def _rule(self, data, g, s, state, rows):
        raise NotImplementedError


def _apply(data, rows, delta):
    if rows is None:
        data += delta
    else:
        data[rows] += delta


def _get(arr, rows):
    return arr if rows is None else arr[rows]


def _put(arr, rows, value):
    if rows is None:
        arr[...] = value
    else:
        arr[rows] = value


class SimpleSGDTrainer(Trainer):
    """Stochastic gradient descent (DyNet default lr 0.1)."""

    def __init__(self, m, learning_rate=0.1):
        super().__init__(m, learning_rate)

    def _rule(self, data, g, s, state, rows):
        _apply(data, rows, -(self.learning_rate * s) * g)


class CyclicalSGDTrainer(SimpleSGDTrainer):
    """SGD whose learning rate cycles between two bounds (Smith 2017)."""

    def __init__(self, m, learning_rate_min=0.01, learning_rate_max=0.1, step_size=2000, gamma=1.0, edecay=0.0):
        super().__init__(m, learning_rate_min)
        self.lr_min, self.lr_max, self.step_size, self.gamma = learning_rate_min, learning_rate_max, step_size, gamma

    def update(self):
        """One SGD step, then the learning rate of the cycle's next step."""
        super().update()
        cycle = np.floor(1 + self.updates / (2 * self.step_size))
        x = abs(self.updates / self.step_size - 2 * cycle + 1)
        self.learning_rate = self.lr_min + (self.lr_max - self.lr_min) * max(0.0, 1 - x) * self.gamma ** self.updates


class MomentumSGDTrainer(Trainer):
    """SGD with momentum (DyNet defaults lr 0.01, mom 0.9)."""

    def __init__(self, m, learning_rate=0.01, mom=0.9):
        super().__init__(m, learning_rate)
        self.momentum = float(mom)

    def _rule(self, data, g, s, state, rows):
        v = self._slot(state, "v", data)
        nv = _get(v, rows) * self.momentum - g * (self.learning_rate * s)
        _put(v, rows, nv)
        _apply(data, rows, nv)


class AdagradTrainer(Trainer):
    """Adagrad (DyNet defaults lr 0.1, eps 1e-20)."""

    def __init__(self, m, learning_rate=0.1, eps=1e-20):
        super().__init__(m, learning_rate)
        self.epsilon = float(eps)

    def _rule(self, data, g, s, state, rows):
        G = self._slot(state, "G", data)
        g = g * s
        nG = _get(G, rows) + g * g
        _put(G, rows, nG)
        _apply(data, rows, -self.learning_rate * g / backend.xp.sqrt(nG + self.epsilon))


class AdadeltaTrainer(Trainer):
    """Adadelta (DyNet defaults eps 1e-6, rho 0.95; no learning rate in the rule)."""

    def __init__(self, m, eps=1e-6, rho=0.95):
        super().__init__(m, 1.0)
        self.epsilon, self.rho = float(eps), float(rho)

    def _rule(self, data, g, s, state, rows):
        G, D = self._slot(state, "G", data), self._slot(state, "D", data)
        g = g * s
        nG = self.rho * _get(G, rows) + (1 - self.rho) * g * g
        d = -g * backend.xp.sqrt(_get(D, rows) + self.epsilon) / backend.xp.sqrt(nG + self.epsilon)
        _put(G, rows, nG)
        _put(D, rows, self.rho * _get(D, rows) + (1 - self.rho) * d * d)
        _apply(data, rows, d)


class RMSPropTrainer(Trainer):
    """RMSProp (DyNet defaults lr 0.001, eps 1e-8, rho 0.9)."""

    def __init__(self, m, learning_rate=0.001, eps=1e-08, rho=0.9):
        super().__init__(m, learning_rate)
        self.epsilon, self.rho = float(eps), float(rho)

    def _rule(self, data, g, s, state, rows):
        G = self._slot(state, "G", data)
        g = g * s
        nG = self.rho * _get(G, rows) + (1 - self.rho) * g * g
        _put(G, rows, nG)
        _apply(data, rows, -self.learning_rate * g / backend.xp.sqrt(nG + self.epsilon))


class AdamTrainer(Trainer):
    """Adam (DyNet defaults alpha 0.001, beta_1 0.9, beta_2 0.999, eps 1e-8), bias-corrected by the global
    step count."""

    _ams = False

    def __init__(self, m, alpha=0.001, beta_1=0.9, beta_2=0.999, eps=1e-8):
        super().__init__(m, alpha)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(eps)

    def _rule(self, data, g, s, state, rows):
        M, V = self._slot(state, "m", data), self._slot(state, "v", data)
        g = g * s
        m = self.beta_1 * _get(M, rows) + (1 - self.beta_1) * g
        v = self.beta_2 * _get(V, rows) + (1 - self.beta_2) * g * g
        _put(M, rows, m)
        _put(V, rows, v)
        if self._ams:
            H = self._slot(state, "vhat", data)
            v = backend.xp.maximum(_get(H, rows), v)
            _put(H, rows, v)
        t = self.updates + 1
        lr_t = self.learning_rate * np.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        _apply(data, rows, -lr_t * m / (backend.xp.sqrt(v) + self.epsilon))


class AmsgradTrainer(AdamTrainer):
    """AMSGrad (Reddi et al. 2018): Adam with the running max of the second moment."""

    _ams = True
