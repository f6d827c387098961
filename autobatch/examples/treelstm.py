"""Binary Tree-LSTM sentiment classifier on the Stanford Sentiment Treebank, fine-grained (5 classes), as in
neulab/dynet-benchmark's treenn: word embedding 128, Tree-LSTM hidden 128 (``autobatch.TreeLSTM``: the word
enters at the leaves, internal nodes compose their children), a softmax layer on every node's h with a loss at
every node (leaves included, as in Tai et al. 2015), Adam, gradient norm clipped at 5. Words seen fewer than
``--min-count`` (2) times in training map to the unknown word. The metric is dev root accuracy.

    python -m autobatch.examples.treelstm                                   # synthetic sentiment trees
    python -m autobatch.examples.treelstm --data ../shared/data/sst-trees   # SST (train.txt, dev.txt)

``--dropout P`` drops units of the leaves' word embeddings and of every node's state before the softmax (Tai
et al.'s regularisation). ``--leaf-lstm N`` (0 = off) first reads the sentence's word embeddings with a BiLSTM of
N units per direction, and the leaves get its states [f_i; b_i], so that a word enters the tree in its context
(the "leaf LSTM" of Choi et al. 2018's and Teng and Zhang 2017's tree models); the sentence is one scan node.
``--char-dim N`` (0 = off) adds the tagger's character-level word vectors (``examples.chars``: a character
BiLSTM of ``--char-hidden`` units per direction over each word) to the leaves' embeddings.
``--ensemble N`` trains N models (seeds ``--seed`` to ``--seed`` + N - 1, each with its
own initialisation and shuffling, each stopped early on dev) and also reports their ensemble, which averages the
members' root probabilities (``autobatch.ensemble``). ``--max-train N`` / ``--max-dev N`` use a fixed random
subset of the trees (the same for every ``--seed``).

Prints one line per epoch, then a JSON object with dev_root_accuracy, the majority baseline and the speed.
"""
import sys
import time

import numpy as np

from .. import data
from .. import ops
from ..batch_map import batch_map
from ..graph import renew_cg
from ..parameters import ParameterCollection
from ..regularize import dropout, eval_mode
from ..rnn import LSTM, BiRNN
from ..tree import TreeLSTM
from .chars import CharEncoder, add_char_flags, char_vocab, check_char_flags
from . import add_ensemble_flag, check_args, common_parser, emit, split_file, subset, train_ensemble

# data.parse_tree splits tokens at any str.isspace() character, so a word holding a no-break space (SST's
# train.txt has three: "8\xa01/2") reads as two words and the line fails to parse; it is parsed with a stand-in.
class TreeSentiment:
    """Class scores at every node = W h + b, with h the node's Tree-LSTM output over the word embeddings at
    the leaves, under ``dropout`` on the embeddings and on h (off in eval mode). ``words`` is a ``data.Vocab``
    with an unknown token; with ``char_dim`` > 0 a leaf's vector also holds its word's character BiLSTM vector
    (``chars``, ``char_hidden``: see ``examples.chars.CharEncoder``), and with ``leaf_lstm`` > 0 a BiLSTM reads
    the sentence's vectors first. An example is a ``data.Tree`` (any binary tree whose leaves have ``word`` and
    whose nodes have an int ``label`` in [0, n_classes))."""

    def __init__(self, words, *, n_classes=5, embed=128, hidden=128, seed=0, dtype=np.float32, dropout=0.0,
                 leaf_lstm=0, chars=None, char_dim=0, char_hidden=None):
        if words.unk is None:
            raise ValueError("TreeSentiment: the word vocabulary needs an unknown token for words unseen in "
                             "training")
        self.words, self.n_classes, self.dropout = words, int(n_classes), float(dropout)
        self.pc = pc = ParameterCollection(seed=seed, dtype=dtype)
        self.E = pc.add_lookup_parameters((len(words), embed), name="E")
        # With char_dim > 0 a word's vector is its embedding and its character BiLSTM vector
        self.char = CharEncoder(pc, chars, char_dim, char_hidden) if char_dim else None
        width = embed + (self.char.width if char_dim else 0)
        self.leaf_lstm = None  # a BiLSTM over the sentence before the tree (``leaf_lstm`` units per direction)
        if leaf_lstm:
            self.leaf_lstm = BiRNN(LSTM(pc, width, leaf_lstm, name="leaf_fwd"),
                                   LSTM(pc, width, leaf_lstm, name="leaf_bwd"))
        self.tree = TreeLSTM(pc, 2 * leaf_lstm if leaf_lstm else width, hidden, name="tree")
        self.W = pc.add_parameters((self.n_classes, hidden), name="W")
        self.b = pc.add_parameters((self.n_classes,), name="b")

    def scores(self, tree):
        """The class scores (logits) of every node of ``tree``, in ``tree.nodes()`` order (the root last), as one
        sequence: the whole tree is one Tree-LSTM scan node, the leaves one lookup."""
        return ops.affine(self.b, self.W, self.states(tree))

    def states(self, tree):
        """Every node's Tree-LSTM h, in ``tree.nodes()`` order (one sequence), under ``dropout``."""
        words = tree.leaves()
        leaves = self.E[self.words.encode(words)]
        if self.char is not None:
            leaves = ops.concat([leaves, self.char.vectors(self.char.encode(words))])
        leaves = dropout(leaves, self.dropout)
        if self.leaf_lstm is not None:
            leaves = self.leaf_lstm.transduce(leaves)
        return dropout(self.tree.transduce(tree, leaves), self.dropout)

    def loss(self, tree):
        """The per-node losses -log p(label | subtree), every node of ``tree`` (a sequence)."""
        return ops.pick_neg_log_softmax(self.scores(tree), [node.label for node in tree.nodes()])

    def probs(self, tree):
        """p(class | tree) at the root, a vector (``autobatch.ensemble``'s protocol)."""
        return ops.softmax(ops.affine(self.b, self.W, ops.row(self.states(tree), -1)))

    def predict(self, tree):
        """The most likely class of the root. Builds in the current graph and reads its value, so
        ``batch_map(model.predict, trees)`` classifies many trees in one batched pass (see ``predict_all``)."""
        return int(np.argmax(ops.affine(self.b, self.W, ops.row(self.states(tree), -1)).value()))

    def predict_all(self, trees, batch_size=256):
        """``predict`` for every tree, one graph per ``batch_size`` trees; in ``eval_mode()`` (dropout off),
        whatever the mode in force."""
        out = []
        trees = list(trees)
        with eval_mode():
            for i in range(0, len(trees), batch_size):
                renew_cg()
                out += batch_map(self.predict, trees[i:i + batch_size])
        return out

    def root_accuracy(self, trees, batch_size=256):
        """The fraction of trees whose root label is predicted right."""
        trees = list(trees)
        return float(np.mean([p == t.label for p, t in zip(self.predict_all(trees, batch_size), trees)]))


def load(args):
    """Train and dev trees: SST's from ``--data``, else synthetic SST-like trees."""
    if args.data:
        return (subset(data.read_sst(split_file(args.data, "train.txt")), args.max_train),
                subset(data.read_sst(split_file(args.data, "dev.txt")), args.max_dev))
    n_train, n_dev = args.max_train or 300, args.max_dev or 100
    trees = data.synthetic_trees(n_train + n_dev, vocab_size=args.vocab, seed=args.seed)
    return trees[:n_train], trees[n_train:]


def main(argv=None):
    """Train and evaluate the Tree-LSTM classifier; returns the metrics printed as the last line."""
    t0 = time.perf_counter()
    ap = common_parser(__doc__, epochs=5, batch_size=32, lr=1e-3, embed=128, hidden=128, max_train=300,
                       max_dev=100)
    ap.add_argument("--min-count", type=int, default=2, help="words seen fewer times map to the unknown word")
    ap.add_argument("--vocab", type=int, default=500, help="synthetic vocabulary size (default 500)")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout on the embeddings and the node states "
                                                               "(default 0)")
    ap.add_argument("--leaf-lstm", type=int, default=0, help="a BiLSTM of N units per direction over the words "
                                                                "before the tree (0 = off, the default)")
    add_char_flags(ap)
    add_ensemble_flag(ap)
    args = ap.parse_args(argv)
    check_args(ap, args)
    check_char_flags(ap, args)
    train, dev = load(args)
    test = data.read_sst(split_file(args.data, "test.txt")) if args.test else None
    words = data.Vocab.build([t.leaves() for t in train], min_count=args.min_count)
    chars = char_vocab(w for t in train for w in t.leaves()) if args.char_dim else None
    labels = [n.label for t in train for n in t.nodes()]
    majority = int(np.bincount([t.label for t in train]).argmax())
    baseline = float(np.mean([t.label == majority for t in dev]))
    print(f"{'SST' if args.data else 'synthetic'}: {len(train)} train / {len(dev)} dev trees, {len(labels)} "
          f"train nodes, {len(words)} word types (min count {args.min_count}); majority-class dev root accuracy "
          f"{baseline:.4f}", flush=True)

    def make_model(seed):
        return TreeSentiment(words, n_classes=max(5, 1 + max(labels)), embed=args.embed, hidden=args.hidden,
                             seed=seed, dropout=args.dropout, leaf_lstm=args.leaf_lstm, chars=chars,
                             char_dim=args.char_dim, char_hidden=args.char_hidden)

    roots = [(t, t.label) for t in test] if test is not None else None  # a tree's label is its root's
    _, summary = train_ensemble(args, make_model, train, dev, lambda m, ex: m.root_accuracy(ex), unit="trees",
                                metric="dev_root_accuracy", scored_dev=[(t, t.label) for t in dev], test=roots,
                                test_metric="test_root_accuracy")
    return emit({**summary, "dev_majority_baseline": baseline, "train_trees": len(train), "dev_trees": len(dev),
                 "vocab_size": len(words), "data": args.data or "synthetic",
                 "wall_seconds": round(time.perf_counter() - t0, 3)})


if __name__ == "__main__":
    main(sys.argv[1:])
