"""Per-example reductions over packed sequence rows. A batch of sequences arrives as their rows one after
another, example k owning ``lengths[k]`` consecutive rows (every sequence has at least one row); these helpers
reduce each example's rows without padding them to a common length."""
import numpy as np

from . import backend


def starts(lengths):
    """The index of each example's first row (a host array)."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.intp)


def ids(lengths):
    """Per row, the index of the example it belongs to (a backend array)."""
    return backend.xp.asarray(np.repeat(np.arange(len(lengths)), lengths))


def expand(v, lengths):
    """A per-example array repeated for each of the example's rows."""
    return v[ids(lengths)]


def seg_sum(x, lengths):
    """Per example, the sum of its rows."""
    if backend.name == "numpy":
        return np.add.reduceat(x, starts(lengths), axis=0)
    out = backend.xp.zeros((len(lengths),) + x.shape[1:], x.dtype)
    backend.scatter_add(out, ids(lengths), x)
    return out


def seg_max(x, lengths):
    """Per example, the elementwise maximum over its rows."""
    if backend.name == "numpy":
        return np.maximum.reduceat(x, starts(lengths), axis=0)
    # Device libraries lack a segmented max: place the rows in a (batch, longest, ...) block filled with -inf
    # and reduce that. The padding lives inside this kernel only; the graph and the signatures never see it.
    xp, n = backend.xp, len(lengths)
    longest = int(max(lengths))
    pos = np.repeat(np.arange(n) * longest - starts(lengths), lengths) + np.arange(int(sum(lengths)))
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    block = xp.full((n * longest,) + x.shape[1:], lowest, dtype=x.dtype)
    block[xp.asarray(pos)] = x
    return block.reshape((n, longest) + x.shape[1:]).max(axis=1)


def first_max(x, y, lengths):
    """A 0/1 mask of the rows holding each example's maximum ``y`` (elementwise), the first row where tied:
    the subgradient of a max over rows that ``argmax`` would pick."""
    xp = backend.xp
    hit = (x == expand(y, lengths)).astype(np.intp)
    seen = xp.cumsum(hit, axis=0)  # hits so far, counted from the first row of the batch
    before = xp.concatenate([xp.zeros((1,) + x.shape[1:], np.intp), seen])[xp.asarray(starts(lengths))]
    return (hit == 1) & (seen - expand(before, lengths) == 1)
