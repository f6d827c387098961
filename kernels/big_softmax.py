"""Output layers for large vocabularies: class-factored, adaptive and sampled softmax, over the packed rows of a
whole batch (one row per predicted word, from every sentence of the minibatch).

Rows whose targets fall in the same class (cluster) are sorted next to each other once, so each class costs one
product over a contiguous slice of the sorted rows, and only the classes that occur in the batch are computed.
The word-level parameters of the class-factored softmax are stored class by class (``Classes``), so a class's
weights are a contiguous slice too: no copies of weight matrices, only of the rows. Index bookkeeping is done on
the host (a few small int arrays per batch); everything of size rows x dim stays on the backend.
"""
import numpy as np

from . import backend
from .structure import SparseRows


def _softmax_lse(z):
    """Row-wise softmax of a (rows, n) array and each row's log normaliser."""
    xp = backend.xp
    m = z.max(axis=1, keepdims=True)
    e = xp.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    return e / s, (m + xp.log(s))[:, 0]


def _log_softmax(z):
    xp = backend.xp
    m = z.max(axis=1, keepdims=True)
    return z - (m + xp.log(xp.exp(z - m).sum(axis=1, keepdims=True)))


def _runs(keys):
    """Rows grouped by their host int ``keys``: the stable sorting permutation and, per key present,
    ``(key, start, stop)`` such that the sorted rows ``start:stop`` are that key's."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    cuts = np.flatnonzero(k[1:] != k[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(k)]])
    return order, [(int(k[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def _picked(z, cols):
    """``z[r, cols[r]]`` for every row r."""
    return z[backend.xp.arange(len(z)), cols]


# ---- class-factored softmax (Goodman 2001; Mikolov et al. 2011) ---------------------------------------------
# p(w | h) = softmax(Wc h + bc)[class(w)] * softmax(W_c h + b_c)[w], W_c the rows of W that belong to the class.


class Classes:
    """A partition of a vocabulary into classes, and the class-by-class order its word rows are stored in.

    ``classes[w]`` is word w's class (0 .. n_classes-1, every class used). Word w's row in the stored order is
    ``rank[w]``; ``order`` is the inverse permutation; class c owns the stored rows ``bounds[c]:bounds[c+1]``.
    An attribute of the primitives using it: compared by identity, so one instance serves a model's graphs."""

    def __init__(self, classes):
        classes = np.asarray(classes)
        if classes.ndim != 1 or not len(classes) or classes.dtype.kind not in "iu":
            raise ValueError(f"classes must be a non-empty 1-d int array (a class per word), got {classes!r:.80}")
        sizes = np.bincount(classes, minlength=int(classes.max()) + 1) if classes.min() >= 0 else None
        if sizes is None or not sizes.all():
            empty = "negative ids" if sizes is None else f"class {int(np.flatnonzero(sizes == 0)[0])} is empty"
            raise ValueError(f"classes must number 0 .. n_classes-1 with every class used ({empty})")
        self.size, self.n_classes = len(classes), len(sizes)
        self.order = np.argsort(classes, kind="stable")  # stored row -> word
        self.rank = np.empty_like(self.order)
        self.rank[self.order] = np.arange(self.size)  # word -> stored row
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        self.of_row = classes[self.order].astype(np.intp)  # stored row -> class (ascending)
        self.identity = bool((self.order == np.arange(self.size)).all())
        self._device = {}

    def permutations(self):
        """``rank`` and ``order`` as arrays of the current backend (uploaded once per backend)."""
        perms = self._device.get(backend.name)
        if perms is None:
            perms = self._device[backend.name] = (backend.xp.asarray(self.rank), backend.xp.asarray(self.order))
        return perms

    def __repr__(self):
        return f"Classes({self.n_classes} classes over {self.size} words)"


def class_nll(idx, h, Wc, bc, W, b, *, classes):
    """-log p(w | h) per row; ``idx`` holds each row's target as its stored row (``classes.rank[w]``)."""
    xp = backend.xp
    pos = backend.asnumpy(idx)
    cls = classes.of_row[pos]
    zc = h @ Wc.T + bc
    pc, lse = _softmax_lse(zc)
    cls_d = xp.asarray(cls)
    nll = lse - _picked(zc, cls_d)
    order, runs = _runs(cls)
    order_d = xp.asarray(order)
    hs = h[order_d]
    local = xp.asarray(pos[order] - classes.bounds[cls[order]])  # target's place within its class, sorted rows
    word = xp.zeros(len(h), dtype=nll.dtype)
    parts = []
    for c, a, e in runs:
        lo, hi = int(classes.bounds[c]), int(classes.bounds[c + 1])
        if hi - lo == 1:  # a singleton class: p(w | class) = 1, nothing to compute (DyNet skips it too)
            continue
        z = hs[a:e] @ W[lo:hi].T + b[lo:hi]
        p, l = _softmax_lse(z)
        word[a:e] = l - _picked(z, local[a:e])
        parts.append((lo, hi, a, e, p))
    nll[order_d] += word
    return nll, (pc, cls_d, order_d, hs, local, parts)


def class_nll_vjp(g, y, idx, h, Wc, bc, W, b, *, classes, res):
    xp = backend.xp
    pc, cls_d, order_d, hs, local, parts = res
    dzc = pc * g[:, None]
    dzc[xp.arange(len(g)), cls_d] -= g
    dh = dzc @ Wc
    dW, db = xp.zeros_like(W), xp.zeros_like(b)  # rows of classes absent from the batch get no gradient
    if parts:
        gs = g[order_d]
        dhs = xp.zeros_like(hs)
        for lo, hi, a, e, p in parts:
            dz = p * gs[a:e, None]
            dz[xp.arange(e - a), local[a:e]] -= gs[a:e]
            dhs[a:e] = dz @ W[lo:hi]
            dW[lo:hi] = dz.T @ hs[a:e]
            db[lo:hi] = dz.sum(axis=0)
        dh[order_d] += dhs
    return dh, dzc.T @ h, dzc.sum(axis=0), dW, db


def class_log_probs(h, Wc, bc, W, b, *, classes):
    """log p(w | h) for every word, in word-id order: the exact full distribution."""
    xp = backend.xp
    lpc = _log_softmax(h @ Wc.T + bc)
    z = h @ W.T + b
    out = xp.empty_like(z)
    for c in range(classes.n_classes):
        lo, hi = int(classes.bounds[c]), int(classes.bounds[c + 1])
        out[:, lo:hi] = _log_softmax(z[:, lo:hi]) + lpc[:, c:c + 1]
    return (out if classes.identity else out[:, classes.permutations()[0]]), lpc


def class_log_probs_vjp(g, y, h, Wc, bc, W, b, *, classes, res):
    xp = backend.xp
    lpc = res
    if not classes.identity:  # back to the stored (class-sorted) column order
        order = classes.permutations()[1]
        g, y = g[:, order], y[:, order]
    gc = xp.empty_like(lpc)
    dz = xp.empty_like(g)
    for c in range(classes.n_classes):
        lo, hi = int(classes.bounds[c]), int(classes.bounds[c + 1])
        gc[:, c] = g[:, lo:hi].sum(axis=1)
        dz[:, lo:hi] = g[:, lo:hi] - xp.exp(y[:, lo:hi] - lpc[:, c:c + 1]) * gc[:, c:c + 1]
    dzc = gc - xp.exp(lpc) * gc.sum(axis=1, keepdims=True)
    return dz @ W + dzc @ Wc, dzc.T @ h, dzc.sum(axis=0), dz.T @ h, dz.sum(axis=0)


# ---- adaptive softmax (Grave et al. 2017), PyTorch's AdaptiveLogSoftmaxWithLoss ------------------------------
# ``cutoffs`` = (c_0, ..., c_n = vocabulary size). The head scores words 0 .. c_0-1 and one entry per tail
# cluster i (words c_i .. c_(i+1)-1), whose words are scored through a projection to a smaller dimension:
# log p(w) = log softmax(head h)[c_0 + i] + log softmax(O_i P_i h)[w - c_i]. Parameters: the head, its bias
# when ``head_bias``, then (P_i, O_i) per cluster.


def _adaptive_parts(params, head_bias):
    head, bias = params[0], (params[1] if head_bias else None)
    rest = params[1 + bool(head_bias):]
    return head, bias, list(zip(rest[0::2], rest[1::2]))


def _head_scores(h, head, bias):
    z = h @ head.T
    return z if bias is None else z + bias


def adaptive_nll(idx, h, *params, cutoffs, head_bias):
    """-log p(w | h) per row (targets ``idx`` are word ids); each tail cluster is computed for its rows only."""
    xp = backend.xp
    head, bias, tails = _adaptive_parts(params, head_bias)
    zh = _head_scores(h, head, bias)
    ph, lse = _softmax_lse(zh)
    t = backend.asnumpy(idx)
    where = np.searchsorted(np.asarray(cutoffs[:-1]), t, side="right")  # 0: the head; k: tail cluster k-1
    col = xp.asarray(np.where(where == 0, t, cutoffs[0] + where - 1))
    nll = lse - _picked(zh, col)
    order, runs = _runs(where)
    parts, order_d, hs, local = [], None, None, None
    if runs[-1][0] > 0:
        order_d = xp.asarray(order)
        hs = h[order_d]
        starts = np.asarray((0,) + tuple(cutoffs[:-1]))
        local = xp.asarray(t[order] - starts[where[order]])
        word = xp.zeros(len(h), dtype=nll.dtype)
        for k, a, e in runs:
            if k == 0:
                continue
            P, O = tails[k - 1]
            u = hs[a:e] @ P.T
            z = u @ O.T
            p, l = _softmax_lse(z)
            word[a:e] = l - _picked(z, local[a:e])
            parts.append((k - 1, a, e, u, p))
        nll[order_d] += word
    return nll, (ph, col, order_d, hs, local, parts)


def adaptive_nll_vjp(g, y, idx, h, *params, cutoffs, head_bias, res):
    xp = backend.xp
    head, bias, tails = _adaptive_parts(params, head_bias)
    ph, col, order_d, hs, local, parts = res
    dzh = ph * g[:, None]
    dzh[xp.arange(len(g)), col] -= g
    dh = dzh @ head
    tail_grads = [None] * (2 * len(tails))  # None: a cluster absent from the batch takes no gradient (PyTorch)
    if parts:
        gs = g[order_d]
        dhs = xp.zeros_like(hs)
        for i, a, e, u, p in parts:
            P, O = tails[i]
            dz = p * gs[a:e, None]
            dz[xp.arange(e - a), local[a:e]] -= gs[a:e]
            du = dz @ O
            tail_grads[2 * i], tail_grads[2 * i + 1] = du.T @ hs[a:e], dz.T @ u
            dhs[a:e] = du @ P
        dh[order_d] += dhs
    head_grads = [dzh.T @ h] + ([dzh.sum(axis=0)] if head_bias else [])
    return (dh, *head_grads, *tail_grads)


def adaptive_log_probs(h, *params, cutoffs, head_bias):
    """log p(w | h) for every word (PyTorch's ``log_prob``)."""
    xp = backend.xp
    head, bias, tails = _adaptive_parts(params, head_bias)
    lph = _log_softmax(_head_scores(h, head, bias))
    c0 = cutoffs[0]
    out = xp.empty((len(h), cutoffs[-1]), dtype=lph.dtype)
    out[:, :c0] = lph[:, :c0]
    us = []
    for i, (P, O) in enumerate(tails):
        u = h @ P.T
        out[:, cutoffs[i]:cutoffs[i + 1]] = _log_softmax(u @ O.T) + lph[:, c0 + i:c0 + i + 1]
        us.append(u)
    return out, (lph, us)


def adaptive_log_probs_vjp(g, y, h, *params, cutoffs, head_bias, res):
    xp = backend.xp
    head, bias, tails = _adaptive_parts(params, head_bias)
    lph, us = res
    c0 = cutoffs[0]
    glh = xp.zeros_like(lph)
    glh[:, :c0] = g[:, :c0]
    dh = xp.zeros_like(h)
    tail_grads = []
    for i, (P, O) in enumerate(tails):
        lo, hi = cutoffs[i], cutoffs[i + 1]
        s = g[:, lo:hi].sum(axis=1, keepdims=True)
        glh[:, c0 + i:c0 + i + 1] = s
        dz = g[:, lo:hi] - xp.exp(y[:, lo:hi] - lph[:, c0 + i:c0 + i + 1]) * s
        du = dz @ O
        tail_grads += [du.T @ h, dz.T @ us[i]]
        dh += du @ P
    dzh = glh - xp.exp(lph) * glh.sum(axis=1, keepdims=True)
    dh += dzh @ head
    head_grads = [dzh.T @ h] + ([dzh.sum(axis=0)] if head_bias else [])
    return (dh, *head_grads, *tail_grads)


# ---- sampled softmax (Jean et al. 2015), for training ----------------------------------------------------------
# Every row scores its own target exactly and K words drawn from a proposal q, one sample shared by the whole
# batch (so its weights are read once). The partition function's part over the other words is estimated by
# importance sampling: a sampled word drawn n times enters with its logit + log(n / (K q)), and a sample equal to
# a row's own target is dropped from that row (its exact term is already there). The loss is
# log(exp(s_t) + sum_k n_k exp(s_k) / (K q_k)) - s_t.


class Sample:
    """One draw of K candidates from a proposal: the distinct word ids (ascending; host and backend copies) and
    each one's log-correction log(count) - log(K q). Every node of a graph carries the same instance."""

    __slots__ = ("ids", "d_ids", "corr")

    def __init__(self, ids, corr):
        self.ids = np.asarray(ids, dtype=np.intp)
        self.d_ids = backend.xp.asarray(self.ids)
        self.corr = corr  # a backend array in the parameters' dtype

    @classmethod
    def draw(cls, uniforms, cdf, k, dtype):
        """``k`` draws with replacement from the distribution whose cumulative probabilities are ``cdf``, made
        from ``k`` uniforms in [0, 1)."""
        q = np.diff(cdf, prepend=0.0)
        raw = np.minimum(np.searchsorted(cdf, np.asarray(uniforms) * cdf[-1], side="right"), len(cdf) - 1)
        ids, counts = np.unique(raw, return_counts=True)
        return cls(ids, backend.xp.asarray(np.log(counts) - np.log(k * q[ids] / cdf[-1]), dtype=dtype))


def _shared_sample(aux):
    sample = aux[0][1]
    for a in aux:
        if a[1] is not sample:  # the block draws one per graph; a batch never spans graphs
            raise RuntimeError("sampled_softmax_nll: nodes batched together carry different samples")
    return sample


def sampled_nll(aux, h, W, b, *, lengths=None):
    """The sampled-softmax loss per row; ``aux`` per node: (its rows' target ids, the graph's Sample). A
    target's exact logit is kept apart (column 0); sampled copies of it are masked for its row."""
    xp = backend.xp
    sample = _shared_sample(aux)
    t = np.concatenate([a[0] for a in aux])
    t_d = xp.asarray(t)
    Wt = W[t_d]
    st = (h * Wt).sum(axis=1) + b[t_d]
    WS = W[sample.d_ids]
    z = h @ WS.T + (b[sample.d_ids] + sample.corr)
    pos = np.minimum(np.searchsorted(sample.ids, t), len(sample.ids) - 1)
    hit = np.flatnonzero(sample.ids[pos] == t)
    if len(hit):
        z[xp.asarray(hit), xp.asarray(pos[hit])] = -np.inf
    p, lse = _softmax_lse(xp.concatenate([st[:, None], z], axis=1))
    return lse - st, (p, t_d, Wt, WS, sample.d_ids)


def sampled_nll_vjp(g, y, aux, h, W, b, *, res, lengths=None):
    xp = backend.xp
    p, t_d, Wt, WS, ids = res
    dst = g * (p[:, 0] - 1)
    dz = p[:, 1:] * g[:, None]
    dh = dst[:, None] * Wt + dz @ WS
    rows = xp.concatenate([ids, t_d])  # only the sampled and the target words' rows have a gradient
    return (dh, SparseRows(rows, xp.concatenate([dz.T @ h, dst[:, None] * h])),
            SparseRows(rows, xp.concatenate([dz.sum(axis=0), dst])))
