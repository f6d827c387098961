"""Helpers for structural kernels whose inputs may arrive shared (a parameter, or a value computed from
parameters alone: no batch axis). The kernel broadcasts such an input over the batch and sums its gradient
back over the batch, as the engine does for elementwise kernels."""
from . import backend


def batched(x, size, rank):
    """``x`` with a batch axis of ``size``: unchanged when it has one (``x.ndim > rank``, the item's rank),
    otherwise a broadcast view (no copy)."""
    return x if x.ndim > rank else backend.xp.broadcast_to(x, (size,) + x.shape)


def sum_to(g, x):
    """The gradient ``g`` (batched) for input ``x``: summed over the batch when ``x`` was shared."""
    return g.sum(axis=0) if g.ndim > x.ndim else g
