"""The three sequence operations attention is made of, each over the packed rows of every example at once
(example k owns ``lengths[k]`` rows): the rows' dot products with one query per example, a softmax over each
example's rows, and each example's rows summed with weights. Rows stay packed: no sentence is padded to
another's length (only the device version of ``segments.seg_max`` fills a block inside its kernel), so a batch
of sentences of many lengths is one call of each."""
from . import backend
from . import segments as seg


def dot_rows(S, q, *, lengths):
    """Per row, its dot product with its example's query: ``q`` is (batch, d), or (d,) when shared."""
    if q.ndim == 1:
        return S @ q
    return (S * seg.expand(q, lengths)).sum(axis=1)


def dot_rows_vjp(g, y, S, q, *, lengths):
    if q.ndim == 1:
        return g[:, None] * q, g @ S
    return g[:, None] * seg.expand(q, lengths), seg.seg_sum(g[:, None] * S, lengths)


def softmax_rows(x, *, lengths):
    """Per example, the softmax over its rows (elementwise when rows are vectors), shifted by its maximum."""
    xp = backend.xp
    e = xp.exp(x - seg.expand(seg.seg_max(x, lengths), lengths))
    return e / seg.expand(seg.seg_sum(e, lengths), lengths)


def softmax_rows_vjp(g, y, x, *, lengths):
    return (y * (g - seg.expand(seg.seg_sum(g * y, lengths), lengths)),)


def _per_row(w, S):
    """Row weights (n,) shaped to broadcast against rows S (n, ...)."""
    return w.reshape((len(w),) + (1,) * (S.ndim - 1))


def weighted_sum_rows(S, w, *, lengths):
    """Per example, the sum of its rows ``S`` weighted by its row weights ``w`` (one scalar per row)."""
    return seg.seg_sum(S * _per_row(w, S), lengths)


def weighted_sum_rows_vjp(g, y, S, w, *, lengths):
    gy = seg.expand(g, lengths)
    return gy * _per_row(w, S), (gy * S).reshape(len(S), -1).sum(axis=1)
