"""BiLSTM part-of-speech tagger (UPOS), neulab/dynet-benchmark's bilstm-tagger written per sentence: word
embedding 128, one-layer LSTM with hidden 50 per direction, MLP 32 with tanh and no biases, Adam, gradient norm
clipped at 5. Adam's learning rate is 3e-3 rather than DyNet's 1e-3: the benchmark updates after every sentence,
here a minibatch of 32 sentences makes one step. Words seen fewer than ``--min-count`` (2) times in training map
to the unknown word, so its embedding is trained on the training set's singletons.

    python -m autobatch.examples.tagger                                        # synthetic tagged sentences
    python -m autobatch.examples.tagger --data ../shared/data/ud-english-ewt   # UD English EWT

``--char-dim N`` adds character-level word embeddings (the DyNet autobatching paper's "BiLSTM w/char"): a
character BiLSTM (``--char-hidden`` per direction) reads each word, and its last forward and first backward
states join the word embedding. A word's characters are one sequence, so its character BiLSTM is one scan node
and the engine runs those of every word of the minibatch as one kernel call. ``--dropout P`` drops units of the
BiLSTM's input and output (and ``--variational``, ``--recurrent-dropout``, ``--zoneout``, ``--dropconnect``, the
recurrent block's other flags, apply to the word-level BiLSTM; see ``--help``).

``--ensemble N`` trains N taggers (seeds ``--seed`` to ``--seed`` + N - 1) and also reports their ensemble, which
averages the members' tag probabilities. ``--max-train N`` / ``--max-dev N`` use a fixed random subset of the
sentences (the same for every ``--seed``).
``mpirun -n 4 python -m autobatch.examples.tagger --distributed ...`` trains data-parallel on 4 processes.

Prints one line per epoch, then a JSON object with dev_accuracy, the majority-tag baseline and the training speed.
"""
import argparse
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
from .chars import CharEncoder, add_char_flags, char_vocab, check_char_flags
from . import (add_ensemble_flag, add_recurrent_flags, check_args, common_parser, emit, recurrent, split_file,
               subset, train_ensemble)


def _lstm(pc, input_dim, hidden, name):
    return LSTM(pc, input_dim, hidden, name=name)


class Tagger:
    """tag scores at position t = O tanh(H d([f_t; b_t])), with [f_t; b_t] the BiLSTM's output over the word
    vectors and d dropout (``dropout``; off in eval mode). ``words`` and ``tags`` are ``data.Vocab``s (``words``
    with an unknown token). A word's vector is its embedding, and with ``char_dim`` > 0 also its characters'
    BiLSTM summary [last forward state; first backward state] (``chars``: a ``data.Vocab`` of characters with
    an unknown token; ``char_hidden`` per direction, default ``char_dim``). ``rnn(pc, input_dim, hidden,
    name)`` makes each direction of the word-level BiLSTM (default a plain LSTM; the command line's comes from
    the recurrent flags). An example is ``(x, tag ids)``, x the word ids, or with characters ``(word ids,
    char ids per word)``; ``encode`` makes one from a ``data.Sentence``."""

    def __init__(self, words, tags, *, embed=128, hidden=50, mlp=32, seed=0, dtype=np.float32, chars=None,
                 char_dim=0, char_hidden=None, rnn=None, dropout=0.0):
        if words.unk is None:
            raise ValueError("Tagger: the word vocabulary needs an unknown token for words unseen in training")
        self.words, self.tags, self.dropout = words, tags, float(dropout)
        self.pc = pc = ParameterCollection(seed=seed, dtype=dtype)
        self.E = pc.add_lookup_parameters((len(words), embed), name="E")
        self.char = None  # the character BiLSTM word vectors (``chars.CharEncoder``)
        self.chars = self.C = None
        width = embed
        if char_dim:
            self.char = CharEncoder(pc, chars, char_dim, char_hidden)
            self.chars, self.C = chars, self.char.C
            width += self.char.width
        rnn = rnn or _lstm
        self.bilstm = BiRNN(rnn(pc, width, hidden, "fwd"), rnn(pc, width, hidden, "bwd"))
        self.H = pc.add_parameters((mlp, 2 * hidden), name="H")
        self.O = pc.add_parameters((len(tags), mlp), name="O")

    def encode(self, sentence):
        """``(x, tag ids)`` of a ``data.Sentence`` (its UPOS tags): x the word ids, or with characters
        ``(word ids, char ids per word)``."""
        word_ids, tag_ids = self.words.encode(sentence.words), self.tags.encode(sentence.upos)
        if self.C is None:
            return word_ids, tag_ids
        return (word_ids, self.char.encode(sentence.words)), tag_ids

    def word_vectors(self, x):
        """The word vectors of a sentence ``x`` (see ``encode``), one sequence."""
        if self.C is None:
            return self.E[list(x)]
        word_ids, char_ids = x
        return ops.concat([self.E[list(word_ids)], self.char.vectors(char_ids)])

    def scores(self, x):
        """The tag scores (logits) at every position: one sequence; without the regularisers of the recurrent
        flags, the sentence's BiLSTM is one scan node."""
        H, O = self.H, self.O
        return O @ ops.tanh(H @ dropout(self.bilstm.transduce(self.word_vectors(x)), self.dropout))

    def loss(self, example):
        """The per-token losses -log p(tag | sentence) of one ``(x, tag ids)`` example (a sequence)."""
        x, tag_ids = example
        return ops.pick_neg_log_softmax(self.scores(x), tag_ids)

    def probs(self, x):
        """p(tag | sentence) at every position, a list of vectors (``autobatch.ensemble``'s protocol)."""
        return ops.rows(ops.softmax(self.scores(x)))

    def predict(self, x):
        """The most likely tag id at every position. Builds in the current graph and reads its values, so
        ``batch_map(model.predict, sentences)`` tags many sentences in one batched pass (see ``predict_all``)."""
        if not (x[0] if self.C is not None else x):
            return []
        # One value read per sentence: under batch_map every sentence waits once, and all run together.
        return self.scores(x).value().argmax(axis=1).tolist()

    def predict_all(self, sentences, batch_size=256):
        """``predict`` for every sentence (word ids), one graph per ``batch_size`` sentences; in ``eval_mode()``
        (dropout off), whatever the mode in force."""
        out = []
        sentences = list(sentences)
        with eval_mode():
            for i in range(0, len(sentences), batch_size):
                renew_cg()
                out += batch_map(self.predict, sentences[i:i + batch_size])
        return out

    def accuracy(self, examples, batch_size=256):
        """The fraction of tokens of ``(word ids, tag ids)`` examples whose tag is predicted right."""
        predicted = self.predict_all([w for w, _ in examples], batch_size)
        right = sum(p == t for ps, (_, ts) in zip(predicted, examples) for p, t in zip(ps, ts))
        return right / max(1, sum(len(ts) for _, ts in examples))


def load(args):
    """Train and dev ``data.Sentence`` lists: EWT's from ``--data``, else synthetic EWT-like sentences."""
    if args.data:
        return (subset(data.read_conllu(split_file(args.data, "*-ud-train.conllu")), args.max_train),
                subset(data.read_conllu(split_file(args.data, "*-ud-dev.conllu")), args.max_dev))
    n_train, n_dev = args.max_train or 400, args.max_dev or 100
    sents = data.synthetic_tagging(n_train + n_dev, vocab_size=args.vocab, seed=args.seed)
    return sents[:n_train], sents[n_train:]


def parser():
    """The tagger's command line."""
    ap = common_parser(__doc__, epochs=5, batch_size=32, lr=3e-3, embed=128, hidden=50, max_train=400, max_dev=100)
    ap.add_argument("--mlp", type=int, default=32, help="MLP size (default 32)")
    ap.add_argument("--min-count", type=int, default=2, help="words seen fewer times map to the unknown word")
    ap.add_argument("--vocab", type=int, default=1000, help="synthetic vocabulary size (default 1000)")
    add_char_flags(ap)
    add_recurrent_flags(ap)
    add_ensemble_flag(ap)
    return ap


def main(argv=None):
    """Train and evaluate the tagger; returns the metrics printed as the last line."""
    t0 = time.perf_counter()
    ap = parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    check_char_flags(ap, args)
    return args.comm.run(train_and_evaluate, args, t0)  # under mpirun a failing rank aborts the job, not hangs it


def build(args, train_sents, dev_sents):
    """The Tagger the flags describe, its vocabularies built from ``train_sents`` (and the tags of both)."""
    words = data.Vocab.build([s.words for s in train_sents], min_count=args.min_count)
    tags = data.Vocab.build([s.upos for s in train_sents + dev_sents], unk=None)  # a dev-only tag: scored wrong
    chars = char_vocab(w for s in train_sents for w in s.words) if args.char_dim else None
    return Tagger(words, tags, embed=args.embed, hidden=args.hidden, mlp=args.mlp, seed=args.seed, chars=chars,
                  char_dim=args.char_dim, char_hidden=args.char_hidden, dropout=args.dropout,
                  rnn=lambda pc, input_dim, hidden, name: recurrent(args, pc, input_dim, hidden, name))


def train_and_evaluate(args, t0):
    """Everything ``main`` does after parsing the flags: load, train, evaluate, print the JSON metrics."""
    train_sents, dev_sents = load(args)
    model = build(args, train_sents, dev_sents)
    words, tags = model.words, model.tags
    train, dev = [model.encode(s) for s in train_sents], [model.encode(s) for s in dev_sents]
    counts = np.bincount([t for _, ts in train for t in ts], minlength=len(tags))
    majority = int(counts.argmax())
    baseline = float(np.mean([t == majority for _, ts in dev for t in ts]))
    chars = f", {len(model.chars)} characters" if model.chars is not None else ""
    print(f"{'EWT' if args.data else 'synthetic'}: {len(train)} train / {len(dev)} dev sentences, "
          f"{sum(len(ts) for _, ts in train)} train words, {len(words)} word types (min count "
          f"{args.min_count}), {len(tags)} tags{chars}; majority-tag dev accuracy {baseline:.4f}", flush=True)
    test = [model.encode(s) for s in data.read_conllu(split_file(args.data, "*-ud-test.conllu"))] if args.test else None

    def make_model(seed):  # the first member is the model built above (its vocabularies serve all)
        return model if seed == args.seed else build(argparse.Namespace(**{**vars(args), "seed": seed}),
                                                      train_sents, dev_sents)

    _, summary = train_ensemble(args, make_model, train, dev, lambda m, ex: m.accuracy(ex), metric="dev_accuracy",
                                unit="sents", scored_dev=dev, test=test)
    return emit({**summary, "dev_majority_baseline": baseline, "train_sentences": len(train),
                 "dev_sentences": len(dev), "vocab_size": len(words), "data": args.data or "synthetic",
                 "parameters": int(sum(p.data.size for p in model.pc.parameters())),
                 "wall_seconds": round(time.perf_counter() - t0, 3)})


if __name__ == "__main__":
    main(sys.argv[1:])
