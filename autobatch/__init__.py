"""autobatch: write model code for one example; the engine batches operations across examples.

    pc = ParameterCollection(seed=1); W = pc.add_parameters((64, 128))
    renew_cg(); loss = esum([...per-example losses...]); loss.value(); loss.backward()
"""
from . import _mode

_mode.install()  # before the engine's modules load: it picks their compiled or pure-Python form

from autobatch.kernels import backend  # noqa: E402  (the imports below must follow install())

from . import checkpoint, data, ensemble, optim, train
from .batch_map import ExampleError, batch_map
from .checkpoint import load_checkpoint, save_checkpoint
from .encoders import DilatedConv1D, SelfAttention
from .ensemble import Ensemble
from .graph import Graph, current as current_graph, renew_cg
from .inspect import batching_report, draw_batches, graph_stats, to_networkx
from .ops import (Expression, affine, cdiv, cmult, concat, dot, esum, exp, forward, input_tensor, layer_norm, log,
                  log_softmax, logistic, lookup, matmul, mean_elems, parameter, pick, pick_neg_log_softmax, relu,
                  reshape, row, rows, sequence, softmax, sqrt, square, sum_elems, tanh, transpose, zeros)
from .ops import (abs_ as abs, argmax, cos, dot_rows, logsumexp, max_ as max, min_ as min, ones, pick_range,
                  pow_ as pow, select_cols, select_rows, sigmoid, sin, softmax_rows, stack, tan,
                  weighted_sum_rows)  # issues 10 and 11 (abs, max, min, pow: as NumPy's, shadowing the builtins here)
from .optim import SGD, Adam, GradNormMonitor, clip_grad_norm
from .output_layers import AdaptiveSoftmax, ClassFactoredSoftmax, SampledSoftmax, StandardSoftmax  # issue 13
from .parameters import LookupParameter, Parameter, ParameterCollection
from .regularize import dropout, eval_mode, train_mode, training
from .rnn import GRU, LSTM, RNN, BiRNN
from .train import EarlyStopping, Trainer, fit


def use_backend(name):
    """Compute with ``"numpy"`` (default), ``"cupy"`` (GPU) or ``"strict"`` (a test backend that refuses implicit
    host/device moves); call before creating parameters."""
    return backend.use(name)


__version__ = "0.1.0"
compiled = _mode.compiled()  # True when the engine's hot path runs compiled (False: pure Python, AUTOBATCH_PURE=1)
from .tree import TreeLSTM
