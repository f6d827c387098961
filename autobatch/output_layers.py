"""Output layers over a vocabulary, as PyTorch modules / DyNet softmax builders: the full softmax and three
faster ones for large vocabularies, behind one interface.

    out = ab.AdaptiveSoftmax(pc, 256, len(vocab), cutoffs=[2000, 6000])
    losses = out.loss(H, targets)   # H a sequence of T states, targets T word ids: a sequence of T losses
    loss = out.loss(h, w)           # one state vector and one word id: a scalar
    lp = out.log_probs(H)           # the exact log-distribution over the vocabulary, one row per state

- ``StandardSoftmax``: softmax(W h + b) (DyNet's StandardSoftmaxBuilder).
- ``ClassFactoredSoftmax`` (Goodman 2001; Mikolov et al. 2011): p(w) = p(class(w) | h) p(w | class(w), h),
  classes binned by frequency (``from_counts``) or read from a DyNet cluster file (``from_cluster_file``).
- ``AdaptiveSoftmax`` (Grave et al. 2017): a head for the frequent words plus tail clusters scored through
  smaller projections; the same function as PyTorch's ``nn.AdaptiveLogSoftmaxWithLoss`` given its weights.
- ``SampledSoftmax`` (Jean et al. 2015): in training, the target against a sample of the vocabulary shared by
  the whole graph (minibatch), importance-corrected; evaluation uses the exact full softmax.

``loss`` is the training objective, ``nll`` the exact negative log-likelihood (the same thing, except for the
sampled softmax in training mode) and ``log_probs`` the exact full distribution. Each call is ONE node for a
whole sentence; the batch runs all rows of all sentences through one kernel call.
"""
import math
import weakref

import numpy as np

from autobatch.kernels.big_softmax import Classes, Sample

from . import errors
from . import graph as _graph
from . import ops
from . import registry as R
from .regularize import training


class OutputLayer:
    """What every output layer offers over a vocabulary of ``vocab_size`` words, from states of size ``dim``.
    ``h`` is a state vector (then ``targets`` is one word id) or a sequence of them (then one id per row)."""

    def __init__(self, pc, dim, vocab_size):
        if int(dim) < 1 or int(vocab_size) < 2:
            raise ValueError(f"{type(self).__name__}: needs dim >= 1 and vocab_size >= 2, got {dim} and "
                             f"{vocab_size}")
        self.pc, self.dim, self.vocab_size = pc, int(dim), int(vocab_size)

    def loss(self, h, targets):
        """The training loss per row: -log p(target | h), or its sampled estimate (``SampledSoftmax``)."""
        return self.nll(h, targets)

    def nll(self, h, targets):
        """The exact negative log-likelihood -log p(target | h) per row."""
        raise NotImplementedError

    def log_probs(self, h):
        """The exact log p(w | h) for every word w of the vocabulary, per row."""
        raise NotImplementedError

    def parameters(self):
        """The layer's parameters."""
        return list(self._params)

    def set_unigram_bias(self, counts):
        """Start the biases at the log unigram distribution of the words' ``counts`` (add-one smoothed), so that
        training starts from the unigram model rather than the uniform one. The full softmax learns it within a
        few steps; a sampled softmax, whose negatives reach few words per step, needs it. A no-op without
        biases."""
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (self.vocab_size,) or (counts < 0).any():
            raise ValueError(f"{type(self).__name__}.set_unigram_bias: needs {self.vocab_size} non-negative counts")
        self._unigram_bias(np.log((counts + 1) / (counts + 1).sum()))

    def _unigram_bias(self, logp):
        if getattr(self, "b", None) is not None:
            self.b.set_value(logp)

    def _state(self, op, h):
        """The graph and node of state ``h``, checked to be a vector (or sequence of vectors) of ``dim``."""
        g = _graph._current[0]
        n = ops._node(g, h)
        shape = g.n_sig[n].shape
        if shape != (self.dim,):
            raise ValueError(errors.at(f"{type(self).__name__}.{op}: needs a state of shape ({self.dim},) (or a "
                                       f"sequence of them), got {'rows of ' if g.n_sig[n].ragged else ''}"
                                       f"shape {shape}"))
        return g, n

    def _targets(self, op, g, n, targets):
        """One word id (a vector state) or one per row (a sequence), checked against the vocabulary."""
        name = f"{type(self).__name__}.{op}"
        if not g.n_sig[n].ragged:
            return ops._index(name, targets, self.vocab_size)
        ids = ops._indices(name, targets, self.vocab_size)
        if len(ids) != g.n_rows[n]:
            raise ValueError(errors.at(f"{name}: {len(ids)} targets for a sequence of {g.n_rows[n]} rows"))
        return ids

    def _node(self, g, prim, n, attrs=(), aux=None):
        args = (n,) + tuple(g.param_node(p) for p in self._params)
        return ops.Expression(g, g.add(prim, args, attrs, aux))


def _glorot(pc, shape, name):
    return pc.add_parameters(shape, init="glorot", name=name)


def _names(pc, name, kind):
    """A prefix for the layer's parameter names, unique in ``pc``."""
    if name is not None:
        return name
    taken = {p.name for p in pc.parameters()}
    k = 0
    while any(t.startswith(f"{kind}{k}.") for t in taken):
        k += 1
    return f"{kind}{k}"


class StandardSoftmax(OutputLayer):
    """The full softmax: p(w | h) = softmax(W h + b)[w] over the whole vocabulary."""

    _kind = "softmax"

    def __init__(self, pc, dim, vocab_size, bias=True, name=None):
        super().__init__(pc, dim, vocab_size)
        prefix = _names(pc, name, self._kind)
        self.W = self._weights(pc, f"{prefix}.W")
        self.b = pc.add_parameters((self.vocab_size,), name=f"{prefix}.b") if bias else None
        self._params = [self.W] + ([self.b] if bias else [])

    def _weights(self, pc, name):
        return _glorot(pc, (self.vocab_size, self.dim), name)

    def scores(self, h):
        """The logits W h + b per row."""
        return self.W @ h if self.b is None else ops.affine(self.b, self.W, h)

    def nll(self, h, targets):
        self._state("nll", h)
        return ops.pick_neg_log_softmax(self.scores(h), targets)

    def log_probs(self, h):
        self._state("log_probs", h)
        return ops.log_softmax(self.scores(h))


# ---- class-factored softmax --------------------------------------------------------------------------------


def frequency_classes(counts, n_classes=None):
    """A class per word from word counts, by Mikolov et al.'s frequency binning: words in descending order of
    count (ties by id) fill class after class, each class taking about 1/n_classes of the total count, so
    frequent words get small classes and rare ones share large ones. ``n_classes`` defaults to sqrt(V)."""
    counts = np.asarray(counts, dtype=np.float64)
    V = len(counts)
    C = int(n_classes) if n_classes is not None else max(1, round(math.sqrt(V)))
    if counts.ndim != 1 or V < 2 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("frequency_classes: needs a 1-d array of at least 2 non-negative counts, not all zero")
    if not 1 <= C <= V:
        raise ValueError(f"frequency_classes: n_classes must lie in [1, {V}], got {C}")
    order = np.argsort(-counts, kind="stable")
    mass = np.cumsum(counts[order]) / counts.sum()
    classes = np.empty(V, dtype=np.intp)
    c = 0
    for k, w in enumerate(order):  # sequential, once per model: a class closes once the mass passed its share,
        classes[w] = c  # or when only as many words are left as classes to fill
        if c < C - 1 and (mass[k] > (c + 1) / C or V - k - 1 == C - c - 1):
            c += 1
    return classes


def read_clusters(path, vocab):
    """Word classes from a cluster file in DyNet's format (``ClassFactoredSoftmaxBuilder``): one word per line,
    ``cluster<whitespace>word`` (further fields, e.g. a Brown-clustering count, are ignored), clusters numbered
    in order of first appearance. ``vocab`` is a ``data.Vocab`` or a list of tokens (id = position). Every
    vocabulary word must be listed once; listed words outside the vocabulary are skipped (a cluster file made on
    a larger corpus). Returns the class per word id and the cluster names."""
    ids = {tok: i for i, tok in enumerate(vocab)}
    classes = np.full(len(ids), -1, dtype=np.intp)
    names = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'cluster<TAB>word', got {line.rstrip()!r}")
            cluster, word = fields[0], fields[1]
            w = ids.get(word)
            if w is None:
                continue
            if classes[w] >= 0:
                raise ValueError(f"{path}:{lineno}: word {word!r} is listed twice")
            classes[w] = names.setdefault(cluster, len(names))
    missing = [tok for tok, i in ids.items() if classes[i] < 0]
    if missing:
        raise ValueError(f"{path}: {len(missing)} vocabulary words have no cluster, e.g. {missing[:5]}; add a line "
                         f"'cluster<TAB>word' for each")
    return classes, list(names)


class ClassFactoredSoftmax(OutputLayer):
    """p(w | h) = softmax(Wc h + bc)[c] * softmax(W_c h + b_c)[w], c = class(w), W_c the weights of class c's
    words: a word costs its class's softmax, not the vocabulary's (about 2 sqrt(V) scores with sqrt(V)
    frequency-binned classes). ``classes[w]`` is word w's class (0 .. C-1, every class used). The exact full
    distribution is available too (``log_probs``). Word weights are stored class by class (``classes.rank``)."""

    def __init__(self, pc, dim, classes, name=None):
        classes = Classes(classes)
        super().__init__(pc, dim, classes.size)
        self.classes = classes
        self._attrs = (("classes", classes),)
        prefix = _names(pc, name, "cfsm")
        C, V = classes.n_classes, classes.size
        self.Wc = _glorot(pc, (C, self.dim), f"{prefix}.Wc")
        self.bc = pc.add_parameters((C,), name=f"{prefix}.bc")
        self.W = _glorot(pc, (V, self.dim), f"{prefix}.W")  # row classes.rank[w] belongs to word w
        self.b = pc.add_parameters((V,), name=f"{prefix}.b")
        self._params = [self.Wc, self.bc, self.W, self.b]

    @classmethod
    def from_counts(cls, pc, dim, counts, n_classes=None, name=None):
        """Classes binned by frequency from training counts (``frequency_classes``)."""
        return cls(pc, dim, frequency_classes(counts, n_classes), name)

    @classmethod
    def from_cluster_file(cls, pc, dim, path, vocab, name=None):
        """Classes read from a DyNet cluster file (``read_clusters``)."""
        return cls(pc, dim, read_clusters(path, vocab)[0], name)

    def _unigram_bias(self, logp):
        stored = logp[self.classes.order]  # per stored row
        cls = self.classes
        lpc = np.array([np.logaddexp.reduce(stored[lo:hi]) for lo, hi in zip(cls.bounds[:-1], cls.bounds[1:])])
        self.bc.set_value(lpc)
        self.b.set_value(stored - lpc[cls.of_row])

    def nll(self, h, targets):
        g, n = self._state("nll", h)
        ids = self._targets("nll", g, n, targets)
        stored = self.classes.rank[ids]
        return self._node(g, R.CLASS_NLL, n, self._attrs, stored if g.n_sig[n].ragged else int(stored))

    def log_probs(self, h):
        g, n = self._state("log_probs", h)
        return self._node(g, R.CLASS_LOG_PROBS, n, self._attrs)


# ---- adaptive softmax ----------------------------------------------------------------------------------------


class AdaptiveSoftmax(OutputLayer):
    """Grave et al.'s adaptive softmax, parameterised as PyTorch's ``nn.AdaptiveLogSoftmaxWithLoss(dim,
    vocab_size, cutoffs, div_value, head_bias)``: word ids are in descending frequency (as ``data.Vocab.build``
    gives them); the head scores words ``0 .. cutoffs[0]-1`` and one entry per tail cluster; tail cluster i
    (words ``cutoffs[i] .. cutoffs[i+1]-1``) is scored through a projection to ``dim // div_value**(i+1)``
    dimensions. Parameters ``head`` (and ``head_bias``), ``tails[i] = (projection, weights)``: PyTorch's
    ``head.weight``, ``tail[i][0].weight``, ``tail[i][1].weight``."""

    def __init__(self, pc, dim, vocab_size, cutoffs, div_value=4.0, head_bias=False, name=None):
        super().__init__(pc, dim, vocab_size)
        cut = [int(c) for c in cutoffs]
        if not cut or cut != sorted(set(cut)) or cut[0] < 1 or cut[-1] >= self.vocab_size:
            raise ValueError(f"AdaptiveSoftmax: cutoffs must be distinct increasing ints in [1, {self.vocab_size - 1}],"
                             f" got {list(cutoffs)}")
        self.cutoffs = tuple(cut) + (self.vocab_size,)
        prefix = _names(pc, name, "adaptive")
        n = len(cut)
        self.head = _glorot(pc, (cut[0] + n, self.dim), f"{prefix}.head")
        self.head_bias = pc.add_parameters((cut[0] + n,), name=f"{prefix}.head_bias") if head_bias else None
        self.tails = []
        for i in range(n):
            d = int(self.dim // (div_value ** (i + 1)))
            if d < 1:
                raise ValueError(f"AdaptiveSoftmax: div_value {div_value} leaves tail cluster {i} no dimensions "
                                 f"(dim {self.dim})")
            size = self.cutoffs[i + 1] - self.cutoffs[i]
            self.tails.append((_glorot(pc, (d, self.dim), f"{prefix}.tail{i}.proj"),
                               _glorot(pc, (size, d), f"{prefix}.tail{i}.out")))
        self._params = [self.head] + ([self.head_bias] if head_bias else []) + [p for t in self.tails for p in t]
        self._attrs = (("cutoffs", self.cutoffs), ("head_bias", bool(head_bias)))

    def _unigram_bias(self, logp):
        if self.head_bias is not None:  # the head's words, then each tail cluster's total (tails have no bias)
            c = self.cutoffs
            self.head_bias.set_value(np.concatenate([logp[:c[0]], [np.logaddexp.reduce(logp[a:b])
                                                                    for a, b in zip(c[:-1], c[1:])]]))

    def nll(self, h, targets):
        g, n = self._state("nll", h)
        return self._node(g, R.ADAPTIVE_NLL, n, self._attrs, self._targets("nll", g, n, targets))

    def log_probs(self, h):
        g, n = self._state("log_probs", h)
        return self._node(g, R.ADAPTIVE_LOG_PROBS, n, self._attrs)


# ---- sampled softmax ---------------------------------------------------------------------------------------

PROPOSALS = ("log-uniform", "unigram")


def proposal_distribution(kind, vocab_size, counts=None):
    """The proposal distribution q over word ids: "log-uniform" (Zipfian in the id, for ids in descending
    frequency: q(w) = log((w + 2) / (w + 1)) / log(V + 1), as TensorFlow's sampler) or "unigram" (q proportional
    to ``counts``)."""
    if kind == "log-uniform":
        w = np.arange(vocab_size, dtype=np.float64)
        return np.log((w + 2) / (w + 1)) / math.log(vocab_size + 1)
    if kind != "unigram":
        raise ValueError(f"unknown proposal {kind!r}: expected one of {PROPOSALS}")
    if counts is None:
        raise ValueError("proposal 'unigram' needs the words' counts")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (vocab_size,) or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"unigram counts must be {vocab_size} non-negative numbers, not all zero")
    return counts / counts.sum()


class SampledSoftmax(StandardSoftmax):
    """The full softmax's parameters (W, b), trained by Jean et al.'s sampled softmax: each graph draws
    ``samples`` words from the proposal (with replacement, from the collection's seeded stream, when its first
    loss node is built), and every row scores its target against that shared sample with the log-q correction
    (``kernels/big_softmax.py``). In ``eval_mode()`` ``loss`` is the exact loss; ``nll`` and ``log_probs`` are
    always exact. W is a lookup table: a step touches the sampled and target rows only, and is updated so."""

    _kind = "sampled"

    def __init__(self, pc, dim, vocab_size, samples=512, proposal="log-uniform", counts=None, name=None):
        if int(samples) < 1:
            raise ValueError(f"SampledSoftmax: samples must be >= 1, got {samples}")
        self.samples = int(samples)
        self.q = proposal_distribution(proposal, int(vocab_size), counts)
        self._cdf = np.cumsum(self.q)
        super().__init__(pc, dim, vocab_size, bias=True, name=name)
        self._drawn = (lambda: None, None)  # (weak reference to the graph, its sample)

    def _weights(self, pc, name):
        return pc.add_lookup_parameters((self.vocab_size, self.dim), init="glorot", name=name)

    def sample(self):
        """The current graph's sample (drawn on first use in each graph)."""
        g = _graph._current[0]
        ref, sample = self._drawn
        if ref() is not g:
            u = self.pc.rng.random(self.samples)
            sample = Sample.draw(u, self._cdf, self.samples, self.pc.dtype)
            self._drawn = (weakref.ref(g), sample)
        return sample

    def loss(self, h, targets):
        """The sampled loss in training mode, the exact one in ``eval_mode()``."""
        if not training():
            return self.nll(h, targets)
        g, n = self._state("loss", h)
        ids = self._targets("loss", g, n, targets)
        return self._node(g, R.SAMPLED_NLL, n, (), (np.atleast_1d(ids), self.sample()))


__all__ = ["OutputLayer", "StandardSoftmax", "ClassFactoredSoftmax", "AdaptiveSoftmax", "SampledSoftmax",
           "frequency_classes", "read_clusters", "proposal_distribution"]
