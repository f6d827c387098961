"""Inverted dropout with masks drawn before execution: each node brings its own uniforms in [0, 1) (``aux``,
one array per node, drawn at build time), so the mask of an example never depends on how it was batched. A batch
of sequences brings one array: every row's uniforms, packed like the rows (see ``executor.run_forward``)."""
from . import backend


def keep_mask(u, p, dtype):
    """1 / (1 - p) where ``u >= p`` (kept, probability 1 - p), else 0: E[mask] = 1."""
    return (u >= p).astype(dtype) * (1.0 / (1.0 - p))


def dropout(noise, x, *, p):
    """x * mask per item; ``x`` may be shared (DropConnect on a weight matrix), the result is batched."""
    u = noise if hasattr(noise, "shape") else backend.xp.stack(noise)
    mask = keep_mask(u, p, x.dtype)
    return x * mask, mask


def dropout_vjp(g, y, noise, x, *, p, res):
    return (g * res,)  # the engine sums it over the batch for a shared x
