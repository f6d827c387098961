"""autobatch: write model code for one example; the engine batches operations across examples.

    pc = ParameterCollection(seed=1); W = pc.add_parameters((64, 128))
    renew_cg(); loss = esum([...per-example losses...]); loss.value(); loss.backward()
"""
from kernels import backend

from .graph import Graph, current as current_graph, renew_cg
from .inspect import batching_report, draw_batches, graph_stats, to_networkx
from .ops import (Expression, affine, cdiv, cmult, concat, dot, esum, exp, input_tensor, log, log_softmax,
                  logistic, lookup, matmul, mean_elems, parameter, pick, pick_neg_log_softmax, relu, reshape,
                  softmax, sqrt, square, sum_elems, tanh, transpose, zeros)
from .parameters import LookupParameter, Parameter, ParameterCollection


def use_backend(name):
    """Compute with ``"numpy"`` (default) or ``"cupy"`` (GPU); call before creating parameters."""
    return backend.use(name)


__version__ = "0.1.0"
