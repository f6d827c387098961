"""BiLSTM part-of-speech tagger (UPOS), neulab/dynet-benchmark's bilstm-tagger written per sentence: word
embedding 128, one-layer LSTM with hidden 50 per direction, MLP 32 with tanh and no biases, Adam, gradient norm
clipped at 5. Adam's learning rate is 3e-3 rather than DyNet's 1e-3: the benchmark updates after every sentence,
here a minibatch of 32 sentences makes one step. Words seen fewer than ``--min-count`` (2) times in training map
to the unknown word, so its embedding is trained on the training set's singletons.

    python -m autobatch.examples.tagger                                        # synthetic tagged sentences
    python -m autobatch.examples.tagger --data ../shared/data/ud-english-ewt   # UD English EWT

``--max-train N`` / ``--max-dev N`` use a fixed random subset of the sentences (the same for every ``--seed``).
``mpirun -n 4 python -m autobatch.examples.tagger --distributed ...`` trains data-parallel on 4 processes.

Prints one line per epoch, then a JSON object with dev_accuracy, the majority-tag baseline and the training speed.
"""
import sys
import time

import numpy as np

from .. import data
from .. import ops
from ..batch_map import batch_map
from ..graph import renew_cg
from ..parameters import ParameterCollection
from ..rnn import LSTM, BiRNN
from . import check_args, common_parser, emit, split_file, subset, train_model


class Tagger:
    """tag scores at position t = O tanh(H [f_t; b_t]), with [f_t; b_t] the BiLSTM's output over the word
    embeddings. ``words`` and ``tags`` are ``data.Vocab``s (``words`` with an unknown token). An example is
    ``(word ids, tag ids)``; ``encode`` makes one from a ``data.Sentence``."""

    def __init__(self, words, tags, *, embed=128, hidden=50, mlp=32, seed=0, dtype=np.float32):
        if words.unk is None:
            raise ValueError("Tagger: the word vocabulary needs an unknown token for words unseen in training")
        self.words, self.tags = words, tags
        self.pc = pc = ParameterCollection(seed=seed, dtype=dtype)
        self.E = pc.add_lookup_parameters((len(words), embed), name="E")
        self.bilstm = BiRNN(LSTM(pc, embed, hidden, name="fwd"), LSTM(pc, embed, hidden, name="bwd"))
        self.H = pc.add_parameters((mlp, 2 * hidden), name="H")
        self.O = pc.add_parameters((len(tags), mlp), name="O")

    def encode(self, sentence):
        """``(word ids, tag ids)`` of a ``data.Sentence`` (its UPOS tags)."""
        return self.words.encode(sentence.words), self.tags.encode(sentence.upos)

    def scores(self, word_ids):
        """The tag scores (logits) at every position: one sequence, the sentence's BiLSTM one scan node."""
        E, H, O = self.E, self.H, self.O
        return O @ ops.tanh(H @ self.bilstm.transduce(E[list(word_ids)]))

    def loss(self, example):
        """The per-token losses -log p(tag | sentence) of one ``(word ids, tag ids)`` example (a sequence)."""
        word_ids, tag_ids = example
        return ops.pick_neg_log_softmax(self.scores(word_ids), tag_ids)

    def predict(self, word_ids):
        """The most likely tag id at every position. Builds in the current graph and reads its values, so
        ``batch_map(model.predict, sentences)`` tags many sentences in one batched pass (see ``predict_all``)."""
        if not word_ids:
            return []
        # One value read per sentence: under batch_map every sentence waits once, and all run together.
        return self.scores(word_ids).value().argmax(axis=1).tolist()

    def predict_all(self, sentences, batch_size=256):
        """``predict`` for every sentence (word ids), one graph per ``batch_size`` sentences."""
        out = []
        sentences = list(sentences)
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


def main(argv=None):
    """Train and evaluate the tagger; returns the metrics printed as the last line."""
    t0 = time.perf_counter()
    ap = common_parser(__doc__, epochs=5, batch_size=32, lr=3e-3, embed=128, hidden=50, max_train=400, max_dev=100)
    ap.add_argument("--mlp", type=int, default=32, help="MLP size (default 32)")
    ap.add_argument("--min-count", type=int, default=2, help="words seen fewer times map to the unknown word")
    ap.add_argument("--vocab", type=int, default=1000, help="synthetic vocabulary size (default 1000)")
    args = ap.parse_args(argv)
    check_args(ap, args)
    return args.comm.run(train_and_evaluate, args, t0)  # under mpirun a failing rank aborts the job, not hangs it


def train_and_evaluate(args, t0):
    """Everything ``main`` does after parsing the flags: load, train, evaluate, print the JSON metrics."""
    train_sents, dev_sents = load(args)
    words = data.Vocab.build([s.words for s in train_sents], min_count=args.min_count)
    tags = data.Vocab.build([s.upos for s in train_sents + dev_sents], unk=None)  # a dev-only tag: scored wrong
    model = Tagger(words, tags, embed=args.embed, hidden=args.hidden, mlp=args.mlp, seed=args.seed)
    train, dev = [model.encode(s) for s in train_sents], [model.encode(s) for s in dev_sents]
    counts = np.bincount([t for _, ts in train for t in ts], minlength=len(tags))
    majority = int(counts.argmax())
    baseline = float(np.mean([t == majority for _, ts in dev for t in ts]))
    print(f"{'EWT' if args.data else 'synthetic'}: {len(train)} train / {len(dev)} dev sentences, "
          f"{sum(map(len, (w for w, _ in train)))} train words, {len(words)} word types (min count "
          f"{args.min_count}), {len(tags)} tags; majority-tag dev accuracy {baseline:.4f}", flush=True)
    _, summary = train_model(model, train, dev, model.accuracy, args, metric="dev_accuracy", unit="sents")
    return emit({**summary, "dev_majority_baseline": baseline, "train_sentences": len(train),
                 "dev_sentences": len(dev), "vocab_size": len(words), "data": args.data or "synthetic",
                 "wall_seconds": round(time.perf_counter() - t0, 3)})


if __name__ == "__main__":
    main(sys.argv[1:])
