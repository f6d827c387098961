"""Arc-standard transition-based dependency parser with a BiLSTM feature extractor (Kiperwasser & Goldberg 2016),
trained with a static oracle and decoded greedily with ``batch_map``: ordinary per-sentence code that reads the
scores of each decision (``value()``) and branches on them, run for all sentences in lockstep so that their
operations still batch.

    python -m autobatch.examples.parser                                        # synthetic treebank
    python -m autobatch.examples.parser --data ../shared/data/ud-english-ewt   # UD English EWT (heads: column 7)

Prints a header with the data and a baseline (every word attached to its neighbour on the side that scores
better on the training set), one line per epoch, then a JSON object with the dev unlabelled attachment score
(every token counts, punctuation too), the baseline's, and greedy decoding speed three ways: one sentence per graph (``map``), all sentences in one
graph with value() calls as they come (DyNet's way: each call runs only that sentence's nodes) and
``batch_map``.
"""
import sys
import time

import numpy as np

from .. import data, ops
from ..batch_map import batch_map
from ..graph import renew_cg
from ..parameters import ParameterCollection
from ..rnn import LSTM, BiRNN
from . import check_args, common_parser, emit, split_file, train_model

SHIFT, LEFT, RIGHT = range(3)


def projective(heads):
    """True when no two arcs of the tree cross (heads[i - 1] is word i's head, 0 the root)."""
    arcs = [(min(h, d), max(h, d)) for d, h in enumerate(heads, start=1)]
    return not any(a < c < b < d for a, b in arcs for c, d in arcs)


class State:
    """A parser configuration: the stack (positions; 0 is the root), the next buffer position, the heads."""

    def __init__(self, n):
        self.n, self.stack, self.next, self.heads = n, [0], 1, [None] * (n + 1)

    def done(self):
        return self.next > self.n and self.stack == [0]

    def legal(self):
        """The legal actions: SHIFT while words remain; LEFT when the second item is a word; RIGHT when there
        are two items (onto the root only once the buffer is empty, so the tree has one root)."""
        two = len(self.stack) >= 2
        return [self.next <= self.n, two and self.stack[-2] != 0,
                two and (self.stack[-2] != 0 or self.next > self.n)]

    def apply(self, action):
        if action == SHIFT:
            self.stack.append(self.next)
            self.next += 1
        elif action == LEFT:  # s1 <- s0
            self.heads[self.stack.pop(-2)] = self.stack[-1]
        else:  # s1 -> s0
            dependent = self.stack.pop()
            self.heads[dependent] = self.stack[-1]

    def oracle(self, gold):
        """The static oracle's action for gold heads (``gold[i]`` for word i; a projective tree)."""
        if len(self.stack) >= 2:
            s0, s1 = self.stack[-1], self.stack[-2]
            if s1 != 0 and gold[s1] == s0:
                return LEFT
            if gold[s0] == s1 and all(self.heads[d] is not None for d in range(1, self.n + 1) if gold[d] == s0):
                return RIGHT
        return SHIFT


class Parser:
    """Scores of SHIFT/LEFT/RIGHT = W2 tanh(W1 [v(s2); v(s1); v(s0); v(b0)] + b1) + b2, where v(i) is the BiLSTM
    vector of word i over [word embedding; UPOS embedding] (a learned vector for the root and for empty slots).
    An example is ``(word ids, tag ids, heads)``; ``encode`` makes one from a ``data.Sentence``."""

    def __init__(self, words, tags, *, embed=100, pos=25, hidden=100, mlp=100, seed=0, dtype=np.float32):
        self.words, self.tags = words, tags
        self.pc = pc = ParameterCollection(seed=seed, dtype=dtype)
        self.E = pc.add_lookup_parameters((len(words), embed), name="E")
        self.P = pc.add_lookup_parameters((len(tags), pos), name="P")
        self.bilstm = BiRNN(LSTM(pc, embed + pos, hidden, name="fwd"), LSTM(pc, embed + pos, hidden, name="bwd"))
        self.root = pc.add_parameters((2 * hidden,), init="normal", name="root")
        self.empty = pc.add_parameters((2 * hidden,), init="normal", name="empty")
        self.W1 = pc.add_parameters((mlp, 8 * hidden), name="W1")
        self.b1 = pc.add_parameters((mlp,), name="b1")
        self.W2 = pc.add_parameters((3, mlp), name="W2")
        self.b2 = pc.add_parameters((3,), name="b2")

    def encode(self, sentence):
        """``(word ids, tag ids, heads)`` of a ``data.Sentence``."""
        return self.words.encode(sentence.words), self.tags.encode(sentence.upos), list(sentence.heads)

    def _vectors(self, word_ids, tag_ids):
        """Position i's feature vector (0: the root); the whole sentence's BiLSTM is one scan node."""
        X = ops.concat([self.E[list(word_ids)], self.P[list(tag_ids)]])
        return [ops.parameter(self.root)] + ops.rows(self.bilstm.transduce(X))

    def _scores(self, vectors, state):
        stack, empty = state.stack, ops.parameter(self.empty)
        slots = [vectors[stack[-k]] if len(stack) >= k else empty for k in (3, 2, 1)]
        slots.append(vectors[state.next] if state.next <= state.n else empty)
        hidden = ops.tanh(ops.affine(self.b1, self.W1, ops.concat(slots)))
        return ops.affine(self.b2, self.W2, hidden)

    def loss(self, example):
        """Per decision, -log p(oracle action): the oracle's transitions need no value, so training builds every
        decision of the minibatch in one graph."""
        word_ids, tag_ids, heads = example
        vectors, state = self._vectors(word_ids, tag_ids), State(len(word_ids))
        gold = [None] + list(heads)
        losses = []
        while not state.done():
            action = state.oracle(gold)
            losses.append(ops.pick_neg_log_softmax(self._scores(vectors, state), action))
            state.apply(action)
        return losses

    def parse(self, example):
        """Greedy decoding: the heads (word i's at index i - 1). Reads each decision's scores with ``value()``,
        so under ``batch_map`` the sentence waits there for the others."""
        word_ids, tag_ids = example[0], example[1]
        vectors, state = self._vectors(word_ids, tag_ids), State(len(word_ids))
        while not state.done():
            scores = self._scores(vectors, state).value()
            legal = state.legal()
            state.apply(max((a for a in range(3) if legal[a]), key=lambda a: scores[a]))
        return state.heads[1:]


def attachment_score(model, examples):
    """Unlabelled attachment score of greedy ``batch_map`` decoding (every token counts)."""
    renew_cg()
    predicted = batch_map(model.parse, examples)
    right = sum(int(p == g) for (_, _, gold), heads in zip(examples, predicted) for p, g in zip(heads, gold))
    return right / sum(len(e[0]) for e in examples)


def decoding_speed(model, examples, repeats=3):
    """Sentences/s of greedy decoding (best of ``repeats``): one graph per sentence (``map``), one graph with
    value() calls as they come (DyNet's way) and ``batch_map``; returns them and the heads each produced."""
    def one_graph_each():
        out = []
        for x in examples:
            renew_cg()
            out.append(model.parse(x))
        return out

    def one_graph():
        renew_cg()
        return [model.parse(x) for x in examples]

    def lockstep():
        renew_cg()
        return batch_map(model.parse, examples)

    speeds, heads = {}, {}
    for name, run in (("map", one_graph_each), ("dynet_style", one_graph), ("batch_map", lockstep)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            heads[name] = run()
            best = min(best, time.perf_counter() - t0)
        speeds[name] = round(len(examples) / best, 1)
    return speeds, heads


def load(args):
    """Train and dev sentences (projective training trees only: the static oracle needs them), and how many
    non-projective training trees were left out. Synthetic train and dev sentences come from ONE generator:
    a seed makes a "language" (which tags head which), so a dev set of another seed is another language."""
    if args.data:
        train = data.read_conllu(split_file(args.data, "*-ud-train.conllu"), max_sentences=args.max_train)
        dev = data.read_conllu(split_file(args.data, "*-ud-dev.conllu"), max_sentences=args.max_dev)
    else:
        n_train, n_dev = args.max_train or 400, args.max_dev or 100
        sents = data.synthetic_tagging(n_train + n_dev, vocab_size=1000, seed=args.seed)
        train, dev = sents[:n_train], sents[n_train:]
    kept = [s for s in train if projective(s.heads)]
    return kept, dev, len(train) - len(kept)


def neighbour_heads(n, side):
    """Every word's head is its neighbour on ``side`` (-1: left, +1: right); the word at that end heads the
    sentence (head 0)."""
    return [i + side if 1 <= i + side <= n else 0 for i in range(1, n + 1)]


def neighbour_baseline(train, dev):
    """The adjacent-head baseline: the side (``"left"`` or ``"right"``) whose neighbour is more often the
    head in ``train``, and the dev attachment score of attaching every word there (lists of heads each)."""
    def score(trees, side):
        right = sum(int(p == g) for heads in trees for p, g in zip(neighbour_heads(len(heads), side), heads))
        return right / max(1, sum(map(len, trees)))

    side = max((-1, 1), key=lambda k: score(train, k))
    return ("left" if side < 0 else "right"), score(dev, side)


def main(argv=None):
    ap = common_parser(__doc__, epochs=10, batch_size=32, lr=1e-3, embed=100, hidden=100, max_train=400,
                       max_dev=100)
    ap.add_argument("--decode-sentences", type=int, default=64, help="dev sentences for the speed comparison")
    args = ap.parse_args(argv)
    check_args(ap, args)
    train, dev, dropped = load(args)
    words = data.Vocab.build([s.words for s in train], min_count=2)
    tags = data.Vocab.build([s.upos for s in train + dev], unk=None)
    model = Parser(words, tags, embed=args.embed, hidden=args.hidden, seed=args.seed)
    train_x, dev_x = [model.encode(s) for s in train], [model.encode(s) for s in dev]
    side, baseline = neighbour_baseline([s.heads for s in train], [s.heads for s in dev])
    print(f"{'EWT' if args.data else 'synthetic'}: {len(train)} train ({dropped} non-projective left out) / "
          f"{len(dev)} dev sentences, {sum(len(s.words) for s in train)} train words, {len(words)} word types, "
          f"{len(tags)} tags; {side}-neighbour-head dev UAS {baseline:.4f}", flush=True)
    _, summary = train_model(model, train_x, dev_x, lambda xs: attachment_score(model, xs), args, metric="dev_uas",
                             unit="sents")
    speeds, heads = decoding_speed(model, dev_x[:args.decode_sentences])
    summary.update(decode_sents_per_s=speeds, batch_map_vs_map=round(speeds["batch_map"] / speeds["map"], 2),
                   same_trees=heads["batch_map"] == heads["map"] == heads["dynet_style"],
                   dev_neighbour_baseline=baseline, baseline_side=side, train_sentences=len(train_x),
                   dev_sentences=len(dev_x), non_projective_left_out=dropped, data=args.data or "synthetic")
    return emit(summary)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
