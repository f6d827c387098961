"""DyNet 2.2's Python API with DyNet's semantics, computed by the autobatch engine: ``import autobatch.dynet as
dy`` runs DyNet programs unchanged, batched by default (the engine's agenda strategy, DyNet's own).

    m = dy.ParameterCollection(); W = m.add_parameters((8, 4)); trainer = dy.SimpleSGDTrainer(m)
    dy.renew_cg(); loss = dy.pickneglogsoftmax(W * dy.inputVector([1, 2, 3, 4]), 2)
    loss.value(); loss.backward(); trainer.update()

Files: ``expression.py`` (Expression, DyNet's layouts and broadcasting), ``ops.py`` (the functions),
``params.py`` (collections, initialisers, DyNet's file format), ``trainers.py``, ``builders.py``.
"""
from .. import graph as _graph
from . import ops as _ops
from .builders import (BiRNNBuilder, ClassFactoredSoftmaxBuilder, CompactVanillaLSTMBuilder, CoupledLSTMBuilder,
                       FastLSTMBuilder, GRUBuilder, LSTMBuilder, RNNState, SimpleRNNBuilder, SoftmaxBuilder,
                       SparseLSTMBuilder, StandardSoftmaxBuilder, VanillaLSTMBuilder)
from .expression import Expression, cg
from .ops import *  # noqa: F401,F403 - DyNet's flat namespace of functions
from .ops import pick, pow  # noqa: F401
from .params import (ConstInitializer, FromFileInitializer, GlorotInitializer, IdentityInitializer, LookupParameters,
                     Model, NormalInitializer, NumpyInitializer, ParameterCollection, Parameters, PyInitializer,
                     SaxeInitializer, UniformInitializer, load, load_generator, read_dynet_file, reset_random_seed,
                     save)
from .trainers import (AdadeltaTrainer, AdagradTrainer, AdamTrainer, AmsgradTrainer, CyclicalSGDTrainer,
                       MomentumSGDTrainer, RMSPropTrainer, SimpleSGDTrainer, Trainer)

_version = [0]


def renew_cg(immediate_compute=False, check_validity=False, autobatching=None):
    """Start a new graph. Batching is on unless ``autobatching=False`` (then node by node, the reference);
    ``check_validity`` names the first node that computes a NaN or an infinity."""
    _version[0] += 1
    strategy = "off" if autobatching is False else "agenda"
    _graph.renew_cg(strategy=strategy, check_finite=bool(check_validity))
    return cg()


def cg_version():
    """A number that changes with every ``renew_cg``."""
    return _version[0]


def forward(exps, recalculate=False):
    """Compute several expressions in one batched pass."""
    g = cg()
    g.forward(*[e.i for e in exps])


def npvalues(exps, recalculate=False):
    """The values of several expressions (one batched pass) as NumPy arrays."""
    forward(exps)
    return [e.npvalue() for e in exps]


def values(exps, recalculate=False):
    """The values of several expressions (one batched pass)."""
    forward(exps)
    return [e.value() for e in exps]


class DynetParams:
    """DyNet's process settings; accepted for compatibility. The engine needs no memory pool, so ``mem``,
    ``autobatch``, ``weight_decay`` etc. have no effect, except ``random_seed`` which seeds initialisers."""

    def __init__(self):
        self.settings = {}

    def from_args(self, shared_parameters=None):
        """Accept DyNet's command-line flags (they need nothing here)."""
        return self

    def init(self):
        """Apply the settings (only the random seed has an effect)."""
        if self.settings.get("random_seed"):
            reset_random_seed(self.settings["random_seed"])

    def __getattr__(self, name):
        if name.startswith("set_"):
            return lambda v: self.settings.__setitem__(name[4:], v)
        raise AttributeError(name)


class _Config:
    """``dynet_config``: DyNet's flags before import; accepted, the seed honoured."""

    def set(self, mem=None, random_seed=0, autobatch=None, profiling=None, weight_decay=None,
            shared_parameters=None, requested_gpus=None, gpu_mask=None):
        """Accept DyNet's settings; the random seed seeds initialisers and masks."""
        if random_seed:
            reset_random_seed(random_seed)

    def set_gpu(self, flag=True):
        """Accepted; choose the engine's backend with autobatch.use_backend."""
        pass

    def get(self):
        """The settings (none are kept)."""
        return {}


dynet_config = _Config()


def init(shared_parameters=None):
    """DyNet's explicit initialisation: nothing to do."""


def init_from_params(params):
    """DyNet's initialisation from DynetParams: applies its seed."""
    params.init()
