"""LSTM language model on the Penn Treebank, as neulab/dynet-benchmark's rnnlm-batch: word embedding 128,
one-layer LSTM with hidden 256, a softmax over the vocabulary, Adam (learning rate 3e-3, not DyNet's 1e-3:
a minibatch of 32 sentences makes one step), gradient norm clipped at 5. Every
sentence is read from the boundary symbol ``<s>`` and predicts its words and then ``<s>`` again; the metric is
dev perplexity over those predictions (the boundaries included), next to an add-one unigram model's.

    python -m autobatch.examples.lm                                # synthetic bigram-structured text
    python -m autobatch.examples.lm --data ../shared/data/ptb-lm   # PTB (ptb.train.txt, ptb.valid.txt)
    python -m autobatch.examples.lm --data ../shared/data/ptb-lm --softmax sampled --samples 1024

``--softmax`` picks the output layer (``autobatch/output_layers.py``): ``full`` (default), ``class``
(class-factored: ``--classes N`` frequency-binned classes from the training counts, or ``--clusters FILE`` in
DyNet's cluster-file format), ``sampled`` (``--samples N`` from the ``--proposal`` distribution) or ``adaptive``
(``--cutoffs 2000,5000``, ``--div-value``). Dev perplexity is always computed from the exact distribution.

The recurrent block's flags (``--cell``, ``--layers``, ``--layer-norm``, ``--learned-init``, ``--dropout`` with
``--variational``, ``--recurrent-dropout``, ``--zoneout``, ``--dropconnect``, gate biases; see ``--help``) pick
the LM's recurrence and its regularisers; ``--test`` also reports the test perplexity (ptb.test.txt).

``--max-train N`` / ``--max-dev N`` use a fixed random subset of the sentences (the same for every ``--seed``).

Prints one line per epoch, then a JSON object with dev_perplexity, unigram_perplexity and the training speed.
"""
import math
import sys
import time

import numpy as np

from .. import data
from .. import ops
from .. import output_layers as out
from ..graph import renew_cg
from ..parameters import ParameterCollection
from ..regularize import dropout, eval_mode
from ..rnn import LSTM
from . import add_recurrent_flags, check_args, common_parser, emit, recurrent, split_file, subset, train_model

BOUNDARY = "<s>"
SOFTMAXES = ("full", "class", "sampled", "adaptive")


def output_layer(kind, pc, dim, words, counts, *, n_classes=None, clusters=None, samples=512,
                 proposal="log-uniform", cutoffs=None, div_value=4.0):
    """The output layer ``kind`` (one of SOFTMAXES) over ``words`` (a Vocab whose ids are in descending frequency,
    as Vocab.build makes them) from states of size ``dim``; ``counts`` are the training counts per word id (the
    class-factored softmax's frequency bins, the unigram proposal). ``cutoffs`` default to V/5 and V/2."""
    V = len(words)
    if kind == "full":
        return out.StandardSoftmax(pc, dim, V, name="out")
    if kind == "class":
        if clusters:
            return out.ClassFactoredSoftmax.from_cluster_file(pc, dim, clusters, words, name="out")
        return out.ClassFactoredSoftmax.from_counts(pc, dim, counts, n_classes, name="out")
    if kind == "sampled":
        return out.SampledSoftmax(pc, dim, V, samples, proposal, counts, name="out")
    if kind == "adaptive":
        return out.AdaptiveSoftmax(pc, dim, V, cutoffs or sorted({max(1, V // 5), max(2, V // 2)}),
                                   div_value=div_value, name="out")
    raise ValueError(f"unknown softmax {kind!r}: expected one of {SOFTMAXES}")


class LanguageModel:
    """p(w_t | w_<t) = the output layer's distribution given h_t, the LSTM's output after reading ``<s>`` w_1 ..
    w_(t-1); the output layer is ``softmax`` (see ``output_layer``: a full softmax by default; ``counts`` and
    ``softmax_options`` are what the others need). ``words`` is a ``data.Vocab`` that holds the boundary symbol
    ``<s>``; an example is a list of word ids. The output biases start at the log unigram distribution of
    ``counts``. ``rnn(pc, input_dim, hidden, name)`` makes the recurrent block (default a plain LSTM; the command
    line's comes from the recurrent flags); ``dropout`` drops units of its outputs (off in eval mode)."""

    def __init__(self, words, *, embed=128, hidden=256, seed=0, dtype=np.float32, softmax="full", counts=None,
                 rnn=None, dropout=0.0, **softmax_options):
        if BOUNDARY not in words:
            raise ValueError(f"LanguageModel: the vocabulary has no boundary symbol {BOUNDARY!r}; build it with "
                             f"Vocab.build(..., specials=({BOUNDARY!r},))")
        self.words, self.boundary = words, words.index(BOUNDARY)
        self.pc = pc = ParameterCollection(seed=seed, dtype=dtype)
        self.E = pc.add_lookup_parameters((len(words), embed), name="E")
        self.lstm = rnn(pc, embed, hidden, "lstm") if rnn is not None else LSTM(pc, embed, hidden, name="lstm")
        self.dropout = float(dropout)
        if counts is None:
            counts = np.ones(len(words))
        self.out = output_layer(softmax, pc, hidden, words, counts, **softmax_options)
        self.out.set_unigram_bias(counts)  # start from the unigram model: the sampled softmax needs it

    def states(self, word_ids):
        """The LSTM's outputs after ``<s>`` and after each word, under ``dropout``: one sequence of
        len(word_ids) + 1 rows (the LSTM over the sentence is one scan node, without the recurrent flags'
        regularisers)."""
        return dropout(self.lstm.transduce(self.E[[self.boundary] + list(word_ids)]), self.dropout)

    def loss(self, word_ids):
        """The per-prediction training losses of one sentence, its closing ``<s>`` included (a sequence):
        -log p(w_t | w_<t), or its sampled estimate for the sampled softmax."""
        return self.out.loss(self.states(word_ids), list(word_ids) + [self.boundary])

    def nll(self, word_ids):
        """The exact -log p(w_t | w_<t) of each prediction of one sentence (a sequence)."""
        return self.out.nll(self.states(word_ids), list(word_ids) + [self.boundary])

    def predict(self, word_ids):
        """The most likely next word id after ``<s>`` and after each word (len(word_ids) + 1 ids). Builds in the
        current graph and reads its values, so ``batch_map(model.predict, sentences)`` runs batched."""
        return self.out.log_probs(self.states(word_ids)).value().argmax(axis=1).tolist()

    def perplexity(self, sentences, batch_size=128):
        """exp(mean negative log-likelihood per prediction) over ``sentences`` (word id lists), one graph per
        ``batch_size`` sentences; in ``eval_mode()`` (dropout off), whatever the mode in force."""
        sentences = list(sentences)
        total, count = 0.0, 0
        with eval_mode():
            for i in range(0, len(sentences), batch_size):
                renew_cg()
                batch = sentences[i:i + batch_size]
                total += ops.esum([ops.sum_elems(self.nll(s)) for s in batch]).value()
                count += sum(len(s) + 1 for s in batch)
        return math.exp(total / max(1, count))


def unigram_perplexity(train, dev, vocab_size, boundary):
    """The dev perplexity of an add-one unigram model estimated on ``train`` (word id lists; every sentence
    also predicts one ``boundary``): the bar a model that uses context must clear."""
    counts = np.bincount([w for s in train for w in s] + [boundary] * len(train), minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    nll = -sum(logp[s].sum() for s in dev if s) - logp[boundary] * len(dev)
    return math.exp(nll / (sum(map(len, dev)) + len(dev)))


def load(args):
    """Train and dev sentences (token lists), and the text the vocabulary is built from: PTB's from ``--data``
    (the vocabulary from all of ptb.train.txt, also under ``--max-train``, so that it stays PTB's 10k words and
    perplexities stay comparable), else synthetic bigram-model text."""
    if args.data:
        text = data.read_lm(split_file(args.data, "ptb.train.txt"))
        return subset(text, args.max_train), subset(data.read_lm(split_file(args.data, "ptb.valid.txt")),
                                                    args.max_dev), text
    n_train, n_dev = args.max_train or 400, args.max_dev or 100
    sents = data.synthetic_lm(n_train + n_dev, vocab_size=args.vocab, seed=args.seed)
    return sents[:n_train], sents[n_train:], sents[:n_train]


def main(argv=None):
    """Train and evaluate the language model; returns the metrics printed as the last line."""
    t0 = time.perf_counter()
    ap = common_parser(__doc__, epochs=3, batch_size=32, lr=3e-3, embed=128, hidden=256, max_train=400,
                       max_dev=100)
    ap.add_argument("--min-count", type=int, default=1, help="words seen fewer times map to <unk> (default 1: "
                                                             "PTB's text already has its <unk>)")
    ap.add_argument("--vocab", type=int, default=200, help="synthetic vocabulary size (default 200)")
    ap.add_argument("--softmax", choices=SOFTMAXES, default="full", help="the output layer (default full)")
    ap.add_argument("--classes", type=int, metavar="N", help="class: N frequency-binned classes (default sqrt(V))")
    ap.add_argument("--clusters", metavar="FILE", help="class: read the classes from FILE, DyNet's cluster format "
                                                       "(lines 'cluster<TAB>word')")
    ap.add_argument("--samples", type=int, default=512, metavar="N", help="sampled: words per sample (default 512)")
    ap.add_argument("--proposal", choices=out.PROPOSALS, default="log-uniform", help="sampled: the proposal")
    ap.add_argument("--cutoffs", metavar="C1,C2,..", help="adaptive: the clusters' first word ids (default V/5,V/2)")
    ap.add_argument("--div-value", type=float, default=4.0, help="adaptive: tail i has dim / div**(i+1) dims")
    add_recurrent_flags(ap)
    args = ap.parse_args(argv)
    check_args(ap, args)
    for flag in ("classes", "samples"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            ap.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    try:
        cutoffs = [int(c) for c in args.cutoffs.split(",")] if args.cutoffs else None
    except ValueError:
        ap.error(f"--cutoffs must be comma-separated ints, got {args.cutoffs!r}")
    train_text, dev_text, vocab_text = load(args)
    words = data.Vocab.build(vocab_text, min_count=args.min_count, specials=(BOUNDARY,))
    train, dev = [words.encode(s) for s in train_text], [words.encode(s) for s in dev_text]
    counts = np.bincount([w for s in train for w in s] + [words.index(BOUNDARY)] * len(train), minlength=len(words))
    model = LanguageModel(words, embed=args.embed, hidden=args.hidden, seed=args.seed, softmax=args.softmax,
                          counts=counts, n_classes=args.classes, clusters=args.clusters, samples=args.samples,
                          proposal=args.proposal, cutoffs=cutoffs, div_value=args.div_value, dropout=args.dropout,
                          rnn=lambda pc, input_dim, hidden, name: recurrent(args, pc, input_dim, hidden, name))
    unigram = unigram_perplexity(train, dev, len(words), model.boundary)
    print(f"{'PTB' if args.data else 'synthetic'}: {len(train)} train / {len(dev)} dev sentences, "
          f"{sum(map(len, train))} train words, vocabulary {len(words)}; unigram dev perplexity {unigram:.1f}",
          flush=True)
    _, summary = train_model(model, train, dev, model.perplexity, args, metric="dev_perplexity", mode="min",
                             unit="sents")
    if args.test:  # the best epoch's parameters, restored by the Trainer; the exact distribution, as on dev
        test = [words.encode(s) for s in data.read_lm(split_file(args.data, "ptb.test.txt"))]
        summary["test_perplexity"] = model.perplexity(test)
    return emit({**summary, "unigram_perplexity": unigram, "train_sentences": len(train),
                 "dev_sentences": len(dev), "vocab_size": len(words), "data": args.data or "synthetic",
                 "softmax": args.softmax, "parameters": int(sum(p.data.size for p in model.pc.parameters())),
                 "wall_seconds": round(time.perf_counter() - t0, 3)})


if __name__ == "__main__":
    main(sys.argv[1:])
