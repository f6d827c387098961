"""The regularisation switch and the random stream behind every mask.

``eval_mode()`` switches dropout and its relatives off (zoneout uses its expectation), ``train_mode()`` back on
(the default); model code and blocks read ``training()`` when they build nodes. Masks are drawn when a node is
built, from the seeded ``rng`` of a ParameterCollection, so a run is reproducible from its seed and the same
under every batching strategy; each node carries its own uniforms, so masks differ per example yet batch.
"""
import weakref

import numpy as np

from autobatch.kernels import backend

from . import errors
from . import graph as _graph
from . import registry as R
from .ops import Expression, _node

_training = [True]


def training():
    """True unless ``eval_mode()`` is in force."""
    return _training[0]


class _Mode:
    """The switch made by ``eval_mode()``/``train_mode()``: already in force when the call returns, and, used
    as a context manager, undone on leaving the block (also when it raises), back to the mode before it."""

    def __init__(self, on):
        self.previous = _training[0]
        _training[0] = on

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _training[0] = self.previous
        return False


def eval_mode():
    """Switch regularisation off for the nodes built from now on: dropout variants become the identity and
    zoneout uses its expectation p * previous + (1 - p) * new. A plain call switches until ``train_mode()``;
    ``with eval_mode(): ...`` switches for the block only."""
    return _Mode(False)


def train_mode():
    """Switch regularisation back on (the default); ``with train_mode(): ...`` for the block only."""
    return _Mode(True)


class Noise:
    """Uniforms in [0, 1) from one seeded generator, handed out as slices of a pre-drawn block: a mask for a
    node costs a slice, not a call into the generator."""

    BLOCK = 1 << 16

    def __init__(self, rng, dtype):
        self.rng, self.dtype = rng, np.dtype(dtype)
        self.block, self.pos = None, self.BLOCK

    def uniforms(self, n):
        """``n`` fresh uniforms (a backend vector; reshape it for a matrix)."""
        pos = self.pos
        if pos + n > self.BLOCK:
            if n > self.BLOCK // 8:  # a whole weight matrix (DropConnect): draw it on its own
                return backend.to_device(self.rng.random(n, dtype=self.dtype))
            self.block = backend.to_device(self.rng.random(self.BLOCK, dtype=self.dtype))
            pos = 0
        self.pos = pos + n
        return self.block[pos:pos + n]


    def reset(self):
        """Forget the uniforms drawn ahead: the next ones come from the generator's current state."""
        self.block, self.pos = None, self.BLOCK


_streams = weakref.WeakKeyDictionary()


def reset_noise(pc):
    """After re-seeding ``pc.rng``: drop the uniforms ``pc``'s mask stream drew ahead from the old state (blocks
    holding the stream see it too)."""
    stream = _streams.get(pc)
    if stream is not None:
        stream.reset()


def noise(pc):
    """The mask stream of ParameterCollection ``pc``, drawn from ``pc.rng``."""
    stream = _streams.get(pc)
    if stream is None:
        stream = _streams[pc] = Noise(pc.rng, pc.dtype)
    return stream


def graph_noise(g, op):
    """The stream of the collection whose parameters graph ``g`` reads (else the latest created one)."""
    pc = g.collection()
    if pc is None:
        raise ValueError(errors.at(f"{op}: no ParameterCollection exists, so there is no seeded stream to draw "
                                   f"the mask from; pass noise="))
    return noise(pc)


def check_p(op, name, p):
    """``p`` as a float in [0, 1)."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(errors.at(f"{op}: {name} must lie in [0, 1), got {p}"))
    return p


def given_noise(op, noise_, size, dtype):
    """Caller-supplied uniforms as a backend array of ``size`` elements (``op`` names the caller in errors)."""
    u = backend.xp.asarray(noise_, dtype=dtype)
    if u.size != size:
        raise ValueError(errors.at(f"{op}: noise has {u.size} values, needs {size}"))
    return u


_P_ATTRS = {}


def p_attrs(p):
    """The (cached) attribute tuple of a dropout node with rate ``p``."""
    attrs = _P_ATTRS.get(p)
    if attrs is None:
        attrs = _P_ATTRS[p] = (("p", p),)
    return attrs


def dropout(x, p, noise=None):
    """Inverted dropout: x * m / (1 - p), m ~ Bernoulli(1 - p) per unit and per example (so it batches); the
    identity in eval mode. ``noise``: uniforms in [0, 1) of x's shape (unit kept where u >= p): pass the same
    ones at every time step for a variational mask; by default drawn from the seeded stream of the collection
    whose parameters the graph uses. ``x`` may be a Parameter: a weight mask per example (DropConnect). For a
    sequence every row gets its own mask (``noise`` then has the sequence's whole shape, rows first)."""
    p = check_p("dropout", "p", p)
    g = _graph._current[0]
    n = _node(g, x)
    if p == 0.0 or not _training[0]:
        return Expression(g, n)
    shape = g.shape_of(n)  # a sequence's starts with its row count: the node carries every row's uniforms,
    size = int(np.prod(shape))  # and the executor packs them row after row, as it packs the rows themselves
    if noise is None:
        u = graph_noise(g, "dropout").uniforms(size)
    else:
        u = given_noise("dropout", noise, size, g.n_sig[n].dtype)
    return Expression(g, g.add(R.DROPOUT, (n,), p_attrs(p), u.reshape(shape)))
