"""autobatch: write model code for one example; the engine batches operations across examples.

    pc = ParameterCollection(seed=1); W = pc.add_parameters((64, 128))
    renew_cg(); loss = esum([...per-example losses...]); loss.value(); loss.backward()
"""
from kernels import backend

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
from .optim import SGD, Adam, GradNormMonitor, clip_grad_norm
from .parameters import LookupParameter, Parameter, ParameterCollection
from .regularize import dropout, eval_mode, train_mode, training
from .rnn import GRU, LSTM, RNN, BiRNN
from .train import EarlyStopping, Trainer, fit


def use_backend(name):
    """Compute with ``"numpy"`` (default) or ``"cupy"`` (GPU); call before creating parameters."""
    return backend.use(name)


__version__ = "0.1.0"
from .tree import TreeLSTM
