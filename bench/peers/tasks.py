"""Data preparation shared by every peer system: read a corpus through ``autobatch.data`` (or generate its
synthetic stand-in), map tokens to ids once, and cut the same minibatches for everyone.

Items, per task:
- ``tagger``: ``(word_ids, tag_ids)``, two lists of equal length.
- ``tree``: a ``TreeItem`` of parallel int arrays over the tree's nodes in post-order (children before parents,
  root last): ``words`` (-1 at internal nodes), ``left``/``right`` (child positions, -1 at leaves), ``labels``
  (0-4) and ``heights`` (0 at leaves).
- ``lm``: ``(inputs, targets)``, two lists of ids: ``[<s>] + sentence`` and ``sentence + [<s>]``, as
  dynet-benchmark's rnnlm-batch feeds ``<s>`` first and predicts every word and the closing ``<s>``.

Vocabularies follow dynet-benchmark: the tagger keeps words seen more than 5 times in the training file
(``min_count=6``; the rest map to ``<unk>``), the Tree-LSTM and the LM keep every training word. With real data
the counts run over the whole training file, not only the sentences timed.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autobatch import data

TASKS = ("tagger", "tree", "lm")

#: dynet-benchmark's hyper-parameters (bilstm-tagger 128/50/32, treenn 128/128, rnnlm-batch with 128/256).
HYPER = {
    "tagger": dict(embed=128, hidden=50, mlp=32),
    "tree": dict(embed=128, hidden=128),
    "lm": dict(embed=128, hidden=256),
}

#: Minibatch order: random sentences for the tagger and trees; rnnlm-batch sorts by length so a minibatch
#: holds sentences of similar length (its padding and masks then cost little).
DEFAULT_ORDER = {"tagger": "shuffle", "tree": "shuffle", "lm": "sorted"}

N_TREE_LABELS = 5


@dataclass(frozen=True)
class TreeItem:
    """One binary tree as parallel arrays over its nodes in post-order (see the module docstring)."""

    words: np.ndarray
    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray
    heights: np.ndarray

    def __len__(self):
        return len(self.labels)


@dataclass
class TaskData:
    """A task's prepared items and the sizes a model needs (``n_labels`` is None for the LM)."""

    task: str
    items: list
    n_words: int
    n_labels: int | None


def _check_task(task):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def encode_tree(tree, vocab):
    """A ``data.Tree`` as a TreeItem (word ids through ``vocab``)."""
    nodes = tree.nodes()
    pos = {id(n): k for k, n in enumerate(nodes)}
    n = len(nodes)
    words = np.full(n, -1, np.int64)
    left = np.full(n, -1, np.int64)
    right = np.full(n, -1, np.int64)
    heights = np.zeros(n, np.int64)
    labels = np.array([nd.label for nd in nodes], np.int64)
    for k, nd in enumerate(nodes):
        if nd.children:
            a, b = pos[id(nd.children[0])], pos[id(nd.children[1])]
            left[k], right[k] = a, b
            heights[k] = 1 + max(heights[a], heights[b])
        else:
            words[k] = vocab.index(nd.word)
    return TreeItem(words, left, right, labels, heights)


def load(task, n, data_dir=None, seed=0):
    """The first ``n`` training items of ``task`` (from ``data_dir``, else synthetic), ids mapped once."""
    _check_task(task)
    if task == "tagger":
        if data_dir:
            sents = data.read_conllu_dir(data_dir)["train"]
        else:
            sents = data.synthetic_tagging(n, vocab_size=2000, seed=seed)
        words = data.Vocab.build([s.words for s in sents], min_count=6)
        tags = data.Vocab(data.UPOS_TAGS, unk=None)
        items = [(words.encode(s.words), tags.encode(s.upos)) for s in sents[:n]]
        return TaskData(task, items, len(words), len(tags))
    if task == "tree":
        if data_dir:
            trees = data.read_sst(Path(data_dir) / "train.txt")
        else:
            trees = data.synthetic_trees(n, vocab_size=2000, seed=seed)
        vocab = data.Vocab.build(t.leaves() for t in trees)
        items = [encode_tree(t, vocab) for t in trees[:n]]
        return TaskData(task, items, len(vocab), N_TREE_LABELS)
    if data_dir:
        sents = data.read_lm(Path(data_dir) / "ptb.train.txt")
    else:
        sents = data.synthetic_lm(n, vocab_size=2000, seed=seed)
    vocab = data.Vocab.build(sents, specials=("<s>",))  # PTB's own "<unk>" token becomes the unk id
    s = vocab.index("<s>")
    items = []
    for sent in sents[:n]:
        ids = vocab.encode(sent)
        items.append(([s] + ids, ids + [s]))
    return TaskData(task, items, len(vocab), None)


def n_words(task, item):
    """Words of one item: tokens (tagger), leaves (tree), predicted tokens including the final ``<s>`` (lm)."""
    if task == "tree":
        return int((item.words >= 0).sum())
    return len(item[0])


def n_losses(task, item):
    """Loss terms of one item: one per word (tagger), per node (tree), per predicted token (lm)."""
    if task == "tree":
        return len(item.labels)
    return len(item[0])


def batches(task, items, batch_size, seed=0, order=None):
    """The minibatches every system trains on: shuffled (``order="shuffle"``) or length-sorted with the batch
    order shuffled (``"sorted"``); the default is the task's ``DEFAULT_ORDER``."""
    order = order or DEFAULT_ORDER[task]
    if order == "shuffle":
        return list(data.minibatches(items, batch_size, rng=seed))
    if order == "sorted":
        return list(data.minibatches(items, batch_size, rng=seed, sort_by=lambda it: n_losses(task, it)))
    raise ValueError(f"unknown order {order!r}; expected 'shuffle' or 'sorted'")


@dataclass
class LevelPlan:
    """A minibatch of trees renumbered level-major (all leaves, then every node of height 1, ...), so each
    height is one contiguous range and one batched cell call.

    ``leaf_words`` are the word ids of the leaves (positions 0..n_leaves-1); ``levels[k-1] = (start, stop,
    left, right)`` for height k, with the children's new positions; ``labels`` in the new order.
    """

    n: int
    leaf_words: np.ndarray
    levels: list
    labels: np.ndarray


def level_plan(trees):
    """Renumber the nodes of ``trees`` (TreeItems) level-major; see LevelPlan."""
    sizes = [len(t) for t in trees]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    words = np.concatenate([t.words for t in trees])
    heights = np.concatenate([t.heights for t in trees])
    labels = np.concatenate([t.labels for t in trees])
    shift = np.repeat(offsets, sizes)
    left = np.concatenate([t.left for t in trees])
    right = np.concatenate([t.right for t in trees])
    left = np.where(left >= 0, left + shift, -1)
    right = np.where(right >= 0, right + shift, -1)
    order = np.argsort(heights, kind="stable")
    new_pos = np.empty_like(order)
    new_pos[order] = np.arange(len(order))
    h_sorted = heights[order]
    bounds = np.searchsorted(h_sorted, np.arange(h_sorted[-1] + 2))
    levels = []
    for k in range(1, len(bounds) - 1):
        start, stop = int(bounds[k]), int(bounds[k + 1])
        old = order[start:stop]
        levels.append((start, stop, new_pos[left[old]], new_pos[right[old]]))
    return LevelPlan(len(order), words[order[: bounds[1]]], levels, labels[order])
