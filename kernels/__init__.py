"""Batched array kernels: pure functions over a leading batch axis, with no knowledge of graphs.

Contract shared by every kernel (``autobatch.registry`` wires them to primitives):
``fwd(*inputs, **attrs) -> out`` and ``vjp(g, out, *inputs, **attrs) -> tuple of input gradients``; ops with
per-node data (an index) take it as a first argument ``aux`` in both. A batched input has the batch on axis 0;
a *shared* input (one parameter serving the whole batch) comes without it, and its gradient must be summed over
the batch. Every kernel computes through ``backend.xp`` so NumPy and CuPy run the same code.
"""
from . import backend  # noqa: F401
