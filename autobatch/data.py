"""Dataset readers (CoNLL-U, SST trees, PTB language-model text) and seeded synthetic stand-ins.

Pure Python + NumPy; nothing here depends on the rest of autobatch. The synthetic generators
produce data of the same shape as the real corpora (token strings, tags, heads, labelled binary
trees) so demos and benchmarks run anywhere without downloads, and they are learnable so a model
trained on them shows a falling loss. ``UPOS_TAGS`` lists the 17 UD part-of-speech tags
(roughly by frequency in English), the tag set ``synthetic_tagging`` draws from.
"""
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from operator import index as _as_index
from pathlib import Path

import numpy as np

__all__ = [
    "Vocab",
    "Sentence",
    "read_conllu",
    "read_conllu_dir",
    "Tree",
    "parse_tree",
    "read_sst",
    "read_sst_dir",
    "read_lm",
    "read_lm_dir",
    "UPOS_TAGS",
    "sentence_lengths",
    "synthetic_tagging",
    "synthetic_trees",
    "synthetic_lm",
    "minibatches",
]


# --------------------------------------------------------------------------- vocabulary


class Vocab:
    """A bijection between tokens and the ints 0..len-1, with an optional unknown-token fallback.

    Ids are assigned in order: ``specials``, then ``unk`` (unless it is None), then ``tokens``;
    repeated tokens keep their first id. ``index`` maps tokens it has never seen to the unk id,
    or raises KeyError when the vocabulary has no unk token.
    """

    def __init__(self, tokens=(), unk="<unk>", specials=()):
        self._itos = []
        self._stoi = {}
        for tok in specials:
            self._add(tok)
        if unk is not None:
            self._add(unk)
        for tok in tokens:
            self._add(tok)
        self.unk = unk
        self.specials = tuple(specials)

    def _add(self, tok):
        if tok not in self._stoi:
            self._stoi[tok] = len(self._itos)
            self._itos.append(tok)

    @classmethod
    def build(cls, sequences, min_count=1, unk="<unk>", specials=()):
        """Count tokens over an iterable of token sequences and make a Vocab from them.

        Tokens seen fewer than ``min_count`` times get no id of their own (they encode to unk).
        The order is deterministic: specials, unk, then by descending count, ties by token.
        """
        counts = Counter()
        for seq in sequences:
            counts.update(seq)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(kept, unk=unk, specials=specials)

    @property
    def unk_id(self):
        """The id of the unknown token, or None when this vocabulary has none."""
        return None if self.unk is None else self._stoi[self.unk]

    def __len__(self):
        return len(self._itos)

    def __contains__(self, token):
        return token in self._stoi

    def __iter__(self):
        return iter(self._itos)

    def __repr__(self):
        return f"Vocab(size={len(self)}, unk={self.unk!r}, specials={self.specials!r})"

    def index(self, token):
        """The id of ``token``; the unk id when unknown, KeyError when there is no unk token."""
        i = self._stoi.get(token)
        if i is not None:
            return i
        if self.unk is None:
            raise KeyError(f"token {token!r} is not in the vocabulary (size {len(self)}) and it has no unk token")
        return self._stoi[self.unk]

    def token(self, i):
        """The token with id ``i`` (IndexError outside 0..len-1; negative ids are not wrapped)."""
        i = _as_index(i)
        if not 0 <= i < len(self._itos):
            raise IndexError(f"token id {i} out of range for a vocabulary of size {len(self)}")
        return self._itos[i]

    def encode(self, seq):
        """Map a sequence of tokens to a list of ids (see ``index``)."""
        return [self.index(t) for t in seq]

    def decode(self, ids):
        """Map a sequence of ids back to a list of tokens."""
        return [self.token(i) for i in ids]


# --------------------------------------------------------------------------- CoNLL-U


@dataclass
class Sentence:
    """One dependency-annotated sentence: parallel lists over its words.

    ``heads[i]`` is the 1-based position of word i's head, 0 for the root.
    """

    words: list[str] = field(default_factory=list)
    upos: list[str] = field(default_factory=list)
    xpos: list[str] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    rels: list[str] = field(default_factory=list)

    def __len__(self):
        return len(self.words)


def read_conllu(path, max_sentences=None):
    """Read a CoNLL-U file into a list of Sentence.

    Comment lines, multiword-token ranges (``1-2``) and empty nodes (``8.1``) are skipped.
    Raises ValueError naming ``file:line`` for a line without 10 tab-separated columns, a
    non-integer or out-of-sequence word id, or a non-integer or out-of-range head.
    """
    path = Path(path)
    sentences = []
    cur = Sentence()
    head_lines = []

    def finish():
        nonlocal cur, head_lines
        n = len(cur.words)
        for h, ln in zip(cur.heads, head_lines):
            if not 0 <= h <= n:
                raise ValueError(f"{path}:{ln}: head {h} out of range for a sentence of {n} words")
        sentences.append(cur)
        cur = Sentence()
        head_lines = []

    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if cur.words:
                    finish()
                    if max_sentences is not None and len(sentences) >= max_sentences:
                        return sentences
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise ValueError(f"{path}:{lineno}: expected 10 tab-separated columns, got {len(cols)}")
            wid = cols[0]
            if "-" in wid or "." in wid:
                continue
            try:
                wid = int(wid)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: word id {cols[0]!r} is not an integer") from None
            if wid != len(cur.words) + 1:
                raise ValueError(f"{path}:{lineno}: word id {wid} out of sequence (expected {len(cur.words) + 1})")
            try:
                head = int(cols[6])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: head {cols[6]!r} is not an integer") from None
            cur.words.append(cols[1])
            cur.upos.append(cols[3])
            cur.xpos.append(cols[4])
            cur.heads.append(head)
            cur.rels.append(cols[7])
            head_lines.append(lineno)
    if cur.words and (max_sentences is None or len(sentences) < max_sentences):
        finish()
    return sentences


def _find_split_files(folder, patterns):
    # patterns: split -> glob; a split is absent when nothing matches, ambiguous when several do.
    folder = Path(folder)
    found = {}
    for split, pattern in patterns.items():
        matches = sorted(folder.glob(pattern))
        if len(matches) > 1:
            raise ValueError(f"{folder}: several files match {pattern!r}: {[m.name for m in matches]}")
        if matches:
            found[split] = matches[0]
    return found


def read_conllu_dir(folder):
    """Read the UD splits in ``folder``: {'train', 'dev', 'test'} -> sentences of ``*-ud-<split>.conllu``.

    A split with no file is left out of the dict.
    """
    files = _find_split_files(folder, {s: f"*-ud-{s}.conllu" for s in ("train", "dev", "test")})
    return {split: read_conllu(p) for split, p in files.items()}


# --------------------------------------------------------------------------- SST trees


@dataclass(repr=False)
class Tree:
    """A labelled binary tree node (Stanford Sentiment Treebank style).

    Internal nodes have exactly two ``children`` and ``word`` None; leaves (the SST preterminals
    ``(label word)``) have no children and carry both ``label`` and ``word``. A tree over n words
    therefore has n leaves and n-1 internal nodes.
    """

    label: int
    children: list["Tree"] = field(default_factory=list)
    word: str | None = None

    def is_leaf(self):
        """True for a leaf (a word-carrying preterminal)."""
        return not self.children

    def nodes(self):
        """All nodes in post-order: children before parents, left before right, root last."""
        out = []
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded or not node.children:
                out.append(node)
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(node.children))
        return out

    def leaves(self):
        """The words at the leaves, left to right."""
        return [n.word for n in self.nodes() if not n.children]

    def size(self):
        """The number of nodes (leaves included)."""
        return len(self.nodes())

    def height(self):
        """The number of edges on the longest root-to-leaf path (a leaf has height 0)."""
        h = {}
        for n in self.nodes():
            h[id(n)] = 1 + max(h[id(c)] for c in n.children) if n.children else 0
        return h[id(self)]

    def __str__(self):
        parts = []
        stack = [self]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                parts.append(item)
            elif not item.children:
                parts.append(f"({item.label} {item.word})")
            else:
                parts.append(f"({item.label}")
                stack.append(")")
                for c in reversed(item.children):
                    stack.append(c)
                    stack.append(" ")
        return "".join(parts)

    def __repr__(self):
        return f"parse_tree({str(self)!r})"


_ASCII_SPACE = " \t\r\n\f\v"


def _tree_tokens(line):
    # Yields (token, start position); a token is "(", ")" or a maximal run of other characters up to ASCII
    # whitespace. Only ASCII whitespace separates: SST has words with a no-break space inside ("8\xa01/2").
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in _ASCII_SPACE:
            i += 1
        elif c in "()":
            yield c, i
            i += 1
        else:
            j = i
            while j < n and line[j] not in _ASCII_SPACE and line[j] not in "()":
                j += 1
            yield line[i:j], i
            i = j


def parse_tree(line):
    """Parse one bracketed tree such as ``(3 (2 (2 The) (2 Rock)) (4 ...))``.

    Every node is ``(label word)`` (a leaf) or ``(label left right)`` with an integer label.
    Raises ValueError with the character position on unbalanced or malformed input.
    """
    toks = list(_tree_tokens(line))
    if not toks:
        raise ValueError("empty tree string")
    # Stack of [label, children, word, open position]; parsed iteratively so depth is unbounded.
    stack = []
    root = None
    k = 0
    while k < len(toks):
        tok, pos = toks[k]
        if root is not None:
            raise ValueError(f"unexpected {tok!r} at position {pos} after the end of the tree")
        if tok == "(":
            if k + 1 >= len(toks) or toks[k + 1][0] in "()":
                raise ValueError(f"expected a label after '(' at position {pos}")
            lab, lpos = toks[k + 1]
            try:
                label = int(lab)
            except ValueError:
                raise ValueError(f"label {lab!r} at position {lpos} is not an integer") from None
            if stack and stack[-1][2] is not None:
                raise ValueError(f"'(' at position {pos} follows the word of a leaf")
            stack.append([label, [], None, pos])
            k += 2
            continue
        if not stack:
            raise ValueError(f"expected '(' at position {pos}, got {tok!r}")
        top = stack[-1]
        if tok == ")":
            label, children, word, opos = stack.pop()
            if word is None and len(children) != 2:
                raise ValueError(
                    f"node opened at position {opos} has {len(children)} children; "
                    "expected a word or exactly 2 subtrees"
                )
            node = Tree(label, children, word)
            if stack:
                stack[-1][1].append(node)
            else:
                root = node
        else:
            if top[1]:
                raise ValueError(f"word {tok!r} at position {pos} in a node that already has subtrees")
            if top[2] is not None:
                raise ValueError(f"second word {tok!r} at position {pos} in a leaf")
            top[2] = tok
        k += 1
    if stack:
        raise ValueError(f"unbalanced tree: '(' at position {stack[-1][3]} is never closed")
    return root


def read_sst(path, max_trees=None):
    """Read one tree per non-empty line; parse errors are re-raised as ValueError naming ``file:line``."""
    path = Path(path)
    trees = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if max_trees is not None and len(trees) >= max_trees:
                break
            if not line.strip():
                continue
            try:
                trees.append(parse_tree(line))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return trees


def read_sst_dir(folder):
    """Read train.txt / dev.txt / test.txt in ``folder`` into {'train', 'dev', 'test'} (missing files left out)."""
    files = _find_split_files(folder, {s: f"{s}.txt" for s in ("train", "dev", "test")})
    return {split: read_sst(p) for split, p in files.items()}


# --------------------------------------------------------------------------- language-model text


def read_lm(path, max_sentences=None):
    """Read whitespace-tokenised text: one token list per non-empty line (no ``<eos>`` is added)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if max_sentences is not None and len(out) >= max_sentences:
                break
            toks = line.split()
            if toks:
                out.append(toks)
    return out


def read_lm_dir(folder):
    """Read ptb.train.txt / ptb.valid.txt / ptb.test.txt into {'train', 'dev', 'test'} (missing files left out)."""
    files = _find_split_files(folder, {"train": "ptb.train.txt", "dev": "ptb.valid.txt", "test": "ptb.test.txt"})
    return {split: read_lm(p) for split, p in files.items()}


# --------------------------------------------------------------------------- synthetic data

UPOS_TAGS = (
    "NOUN", "PUNCT", "VERB", "PRON", "ADP", "DET", "PROPN", "ADJ", "AUX",
    "ADV", "CCONJ", "PART", "NUM", "SCONJ", "X", "INTJ", "SYM",
)  # fmt: skip
_RELS = (
    "nsubj", "obj", "iobj", "obl", "advmod", "amod", "nmod", "det", "case", "mark",
    "cc", "conj", "compound", "aux", "cop", "punct", "nummod", "acl", "advcl", "xcomp",
)  # fmt: skip

# Log-length standard deviations measured on the real corpora: EWT ~0.94, PTB and SST ~0.58.
_SIGMA_TEXT = 0.6
_SIGMA_EWT = 0.9


def _phi(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@lru_cache(maxsize=64)
def _length_pmf(mean, max_len, sigma):
    # Rounded, clipped lognormal on 1..max_len, with mu solved by bisection so the
    # distribution's exact mean (after rounding and clipping) equals `mean`.
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not 1 <= mean <= max_len:
        raise ValueError(f"mean length must lie in [1, max_len={max_len}], got {mean}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    ks = np.arange(1, max_len + 1, dtype=np.float64)
    upper = np.log(ks[:-1] + 0.5)

    def pmf(mu):
        cdf = np.array([_phi((u - mu) / sigma) for u in upper] + [1.0])
        return np.diff(cdf, prepend=0.0)

    lo, hi = -10.0, math.log(max_len) + 10.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if pmf(mid) @ ks < mean:
            lo = mid
        else:
            hi = mid
    p = np.clip(pmf(0.5 * (lo + hi)), 0.0, None)
    return p / p.sum()


def sentence_lengths(n, rng, mean=16.3, max_len=60, sigma=_SIGMA_TEXT):
    """Draw ``n`` sentence lengths shaped like real text, as an int64 array in [1, max_len].

    A lognormal (the usual fit to English sentence lengths), rounded and clipped to
    [1, max_len], whose location is solved so the mean after clipping is exactly ``mean``.
    ``sigma`` is the spread of log-length (~0.6 for PTB/SST news and reviews, ~0.9 for
    web text such as EWT). ``rng`` is a numpy Generator or a seed.
    """
    rng = np.random.default_rng(rng)
    p = _length_pmf(float(mean), int(max_len), float(sigma))
    return rng.choice(np.arange(1, int(max_len) + 1), size=int(n), p=p)


def _zipf_probs(vocab_size, s=1.0, offset=2.7):
    # Zipf-Mandelbrot over ranks 1..V; id 0 is the most frequent word.
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    w = 1.0 / (np.arange(1, vocab_size + 1) + offset) ** s
    return w / w.sum()


def _check_count(name, n):
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return int(n)


def synthetic_tagging(n_sentences, vocab_size=5000, n_tags=17, seed=0, mean_len=16.3, max_len=60):
    """Generate tagged, dependency-parsed sentences of Zipf-distributed tokens ``w<id>``.

    Tags are a learnable function of the words: every word type has a main tag, and about a
    fifth of the types take an alternative tag when the previous word's main tag is one of a
    fixed set (so context helps). UPOS names are the real UD tags (first ``n_tags`` of them,
    ``T<i>`` beyond 17); XPOS refines the UPOS with a word-dependent suffix. Heads form a
    projective tree with one root: each span's head is the word whose tag ranks highest
    (a fixed tag ranking, random tie-break) and the rest splits into contiguous chunks that
    attach to it, so most arcs are short. ``rels`` is a fixed function of (dependent tag,
    head tag), ``root`` for the root. Lengths follow ``sentence_lengths`` with an EWT-like spread.
    """
    n_sentences = _check_count("n_sentences", n_sentences)
    if n_tags < 1:
        raise ValueError(f"n_tags must be >= 1, got {n_tags}")
    rng = np.random.default_rng(seed)
    probs = _zipf_probs(vocab_size)
    names = list(UPOS_TAGS[:n_tags]) if n_tags <= len(UPOS_TAGS) else [f"T{i}" for i in range(n_tags)]
    # Per-type tables first, so the language does not depend on n_sentences.
    main = rng.integers(n_tags, size=vocab_size)
    alt = (main + rng.integers(1, n_tags, size=vocab_size)) % n_tags if n_tags > 1 else main.copy()
    ambiguous = rng.random(vocab_size) < 0.2
    trigger = rng.random(n_tags) < 0.5
    priority = rng.permutation(n_tags).astype(np.float64)
    rel_of = rng.integers(len(_RELS), size=(n_tags, n_tags))
    struct = random.Random(int(rng.integers(2**63)))

    lengths = sentence_lengths(n_sentences, rng, mean_len, max_len, sigma=_SIGMA_EWT)
    ids = rng.choice(vocab_size, size=int(lengths.sum()), p=probs)
    starts = np.zeros(len(ids), dtype=bool)
    starts[np.cumsum(lengths)[:-1]] = True
    if len(ids):
        starts[0] = True
    prev_main = np.roll(main[ids], 1)
    use_alt = ambiguous[ids] & ~starts & trigger[prev_main]
    tags = np.where(use_alt, alt[ids], main[ids])
    keys = (priority[tags] + rng.random(len(ids))).tolist()  # fractional part breaks ties

    out = []
    pos = 0
    for n in lengths.tolist():
        w = ids[pos : pos + n].tolist()
        t = tags[pos : pos + n].tolist()
        heads = _projective_heads(keys[pos : pos + n], struct)
        out.append(
            Sentence(
                words=[f"w{i}" for i in w],
                upos=[names[x] for x in t],
                xpos=[f"{names[x]}-{i % 3}" for x, i in zip(t, w)],
                heads=heads,
                rels=["root" if h == 0 else _RELS[rel_of[t[d], t[h - 1]]] for d, h in enumerate(heads)],
            )
        )
        pos += n
    return out


def _projective_heads(keys, r, p_split=0.4):
    # Span [lo, hi) attached to `parent` (1-based, 0 = root): its head is the max-key word, and
    # each side of the head is cut into contiguous chunks that become its dependents' subtrees.
    # Every subtree is a contiguous span, so the tree is projective.
    n = len(keys)
    heads = [0] * n
    stack = [(0, n, 0)]
    while stack:
        lo, hi, parent = stack.pop()
        h = max(range(lo, hi), key=keys.__getitem__)
        heads[h] = parent
        for a, b in ((lo, h), (h + 1, hi)):
            if a >= b:
                continue
            start = a
            for i in range(a + 1, b):
                if r.random() < p_split:
                    stack.append((start, i, h + 1))
                    start = i
            stack.append((start, b, h + 1))
    return heads


def synthetic_trees(n_trees, vocab_size=2000, seed=0, mean_len=19.3, max_len=60):
    """Generate random binary sentiment trees over Zipf tokens ``w<id>``, labels 0-4 on every node.

    Labels are learnable: a leaf's label is fixed by its word (mostly neutral 2, like SST); an
    internal node's label is 2 + the summed deviations from 2 of its children, clipped to
    [0, 4], except that a few frequent "negator" words (themselves neutral) flip their
    sibling's label (x -> 4 - x). Split points are uniform; mean length ~19.3 like SST.
    """
    n_trees = _check_count("n_trees", n_trees)
    rng = np.random.default_rng(seed)
    probs = _zipf_probs(vocab_size)
    word_label = rng.choice(5, size=vocab_size, p=[0.04, 0.12, 0.68, 0.12, 0.04])
    n_neg = max(1, min(3, vocab_size // 100))
    negators = set(rng.choice(min(vocab_size, 50), size=min(n_neg, vocab_size, 50), replace=False).tolist())
    word_label[list(negators)] = 2

    lengths = sentence_lengths(n_trees, rng, mean_len, max_len)
    ids = rng.choice(vocab_size, size=int(lengths.sum()), p=probs).tolist()
    split_u = iter(rng.random(int(lengths.sum())).tolist())  # one per internal node, n-1 per tree
    wl = word_label.tolist()
    out = []
    pos = 0
    for n in lengths.tolist():
        root = Tree(0)
        stack = [(root, pos, pos + n)]
        pos += n
        internal = []  # in creation order: parents before children
        leaf_id = {}
        while stack:
            node, lo, hi = stack.pop()
            if hi - lo == 1:
                node.word = f"w{ids[lo]}"
                node.label = wl[ids[lo]]
                leaf_id[id(node)] = ids[lo]
                continue
            k = lo + 1 + int(next(split_u) * (hi - lo - 1))
            left, right = Tree(0), Tree(0)
            node.children = [left, right]
            internal.append(node)
            stack.append((left, lo, k))
            stack.append((right, k, hi))
        for node in reversed(internal):
            left, right = node.children
            if leaf_id.get(id(left), -1) in negators:
                node.label = 4 - right.label
            elif leaf_id.get(id(right), -1) in negators:
                node.label = 4 - left.label
            else:
                node.label = min(4, max(0, left.label + right.label - 2))
        out.append(root)
    return out


def synthetic_lm(n_sentences, vocab_size=2000, seed=0, mean_len=20.9, max_len=60, p_bigram=0.7, n_successors=8):
    """Generate sentences of Zipf tokens ``w<id>`` from a random sparse bigram model.

    With probability ``p_bigram`` the next word is one of the previous word's ``n_successors``
    fixed successors (geometrically weighted), otherwise a fresh Zipf draw, so a model that uses
    context reaches a perplexity well below the unigram one. Mean length ~20.9 like PTB.
    """
    n_sentences = _check_count("n_sentences", n_sentences)
    if not 0.0 <= p_bigram <= 1.0:
        raise ValueError(f"p_bigram must lie in [0, 1], got {p_bigram}")
    if n_successors < 1:
        raise ValueError(f"n_successors must be >= 1, got {n_successors}")
    rng = np.random.default_rng(seed)
    probs = _zipf_probs(vocab_size)
    succ = rng.choice(vocab_size, size=(vocab_size, n_successors), p=probs)
    succ_p = 0.5 ** np.arange(n_successors)
    succ_p /= succ_p.sum()

    lengths = sentence_lengths(n_sentences, rng, mean_len, max_len)
    width = int(lengths.max()) if n_sentences else 0
    toks = np.zeros((n_sentences, width), dtype=np.int64)
    if width:
        toks[:, 0] = rng.choice(vocab_size, size=n_sentences, p=probs)
    # Vectorised over sentences, sequential over positions (the only real dependency).
    for t in range(1, width):
        follow = rng.random(n_sentences) < p_bigram
        j = rng.choice(n_successors, size=n_sentences, p=succ_p)
        fresh = rng.choice(vocab_size, size=n_sentences, p=probs)
        toks[:, t] = np.where(follow, succ[toks[:, t - 1], j], fresh)
    return [[f"w{i}" for i in row[:n]] for row, n in zip(toks.tolist(), lengths.tolist())]


# --------------------------------------------------------------------------- batching


def minibatches(items, batch_size, rng=None, sort_by=None):
    """Yield lists of up to ``batch_size`` items covering ``items`` once (the last may be short).

    ``rng`` (a numpy Generator or a seed) shuffles; without it the order is kept. ``sort_by``
    is a key function (e.g. ``len``): items are sorted by it before batching so each batch holds
    similar items; with ``rng`` too, ties are shuffled and the batch order is shuffled.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = list(items)
    if rng is not None:
        rng = np.random.default_rng(rng)
        items = [items[i] for i in rng.permutation(len(items))]
    if sort_by is not None:
        items.sort(key=sort_by)  # stable: shuffled ties stay shuffled
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if rng is not None and sort_by is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    yield from batches
