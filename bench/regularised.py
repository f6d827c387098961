"""What a regulariser costs in training speed: a BiLSTM tagger (the EWT tagger's shape) trained under each member
of the dropout family and with layer norm, given each sentence as one sequence (one scan node per direction
where the cell's scan runs the regulariser) and, for comparison, as a list of word vectors (the step-by-step
path every regulariser took before the scans ran them). Prints training sentences/s and the slowdown against
no regulariser.

    OPENBLAS_NUM_THREADS=1 python -m bench.regularised                      # synthetic EWT-like sentences
    OPENBLAS_NUM_THREADS=1 python -m bench.regularised --data ../shared/data/ud-english-ewt

Rounds alternate the variants, and each cell is the median over rounds, so machine noise hits all alike.
"""
import argparse
import statistics
import time

import numpy as np

import autobatch as ab
from autobatch import data
from autobatch.examples import split_file

REGULARISERS = {  # name: the LSTM's options (p = 0.3 everywhere, as in the tricks study)
    "none": {},
    "dropout": dict(dropout=0.3),
    "variational": dict(dropout=0.3, variational=True),
    "recurrent": dict(recurrent_dropout=0.3),
    "zoneout": dict(zoneout=0.3),
    "dropconnect": dict(dropconnect=0.3),
    "layer norm": dict(layer_norm=True),
    "layer norm + dropout": dict(layer_norm=True, dropout=0.3),
}


class Tagger:
    """Embeddings, a BiLSTM under ``options``, a linear layer; ``steps``: feed a list of vectors (step path)."""

    def __init__(self, vocab, tags, options, steps, embed=128, hidden=50, seed=0):
        self.pc = pc = ab.ParameterCollection(seed=seed)
        self.E = pc.add_lookup_parameters((vocab, embed))
        self.bilstm = ab.BiRNN(ab.LSTM(pc, embed, hidden, **options), ab.LSTM(pc, embed, hidden, **options))
        self.O = pc.add_parameters((tags, 2 * hidden))
        self.steps = steps

    def loss(self, example):
        words, tags = example
        if self.steps:
            hs = self.bilstm.transduce([self.E[w] for w in words])
            return ab.esum([ab.pick_neg_log_softmax(self.O @ h, t) for h, t in zip(hs, tags)])
        return ab.sum_elems(ab.pick_neg_log_softmax(self.O @ self.bilstm.transduce(self.E[list(words)]), tags))


def examples(args):
    """``(word ids, tag ids)`` of the first ``--sentences`` sentences, and the vocabulary and tag set sizes."""
    if args.data:
        sents = data.read_conllu(split_file(args.data, "*-ud-train.conllu"))[:args.sentences]
    else:
        sents = data.synthetic_tagging(args.sentences, vocab_size=2000, seed=0)
    words = data.Vocab.build([s.words for s in sents], min_count=1)
    tags = data.Vocab.build([s.upos for s in sents], unk=None)
    return [(words.encode(s.words), tags.encode(s.upos)) for s in sents], len(words), len(tags)


def train_speed(model, exs, batch_size):
    """Training sentences/s over ``exs``: one Adam step per minibatch of summed losses."""
    opt = ab.Adam(model.pc, lr=1e-3)
    t0 = time.perf_counter()
    for i in range(0, len(exs), batch_size):
        ab.renew_cg()
        loss = ab.esum([model.loss(e) for e in exs[i:i + batch_size]])
        loss.backward()
        opt.step()
    return len(exs) / (time.perf_counter() - t0)


def main(argv=None):
    """Run the comparison; returns {(regulariser, step path): [sentences/s per round]}."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="UD EWT's folder (default: synthetic sentences)")
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    exs, vocab, tags = examples(args)
    speeds = {(r, s): [] for r in REGULARISERS for s in (False, True)}
    for _ in range(args.rounds):
        for (reg, steps), out in speeds.items():
            model = Tagger(vocab, tags, REGULARISERS[reg], steps)
            train_speed(model, exs[:args.batch_size], args.batch_size)  # warm-up
            out.append(train_speed(model, exs, args.batch_size))
    base = statistics.median(speeds["none", False])
    print(f"training sentences/s, BiLSTM tagger, minibatch {args.batch_size}, {len(exs)} sentences "
          f"({'EWT' if args.data else 'synthetic'}), compiled={ab.compiled}, median of {args.rounds} rounds")
    print("| regulariser | whole sentence | slowdown | word by word (step path) | slowdown |")
    print("|---|---:|---:|---:|---:|")
    for reg in REGULARISERS:
        seq, step = statistics.median(speeds[reg, False]), statistics.median(speeds[reg, True])
        print(f"| {reg} | {seq:.0f} | {base / seq:.2f}x | {step:.0f} | {base / step:.2f}x |")
    return speeds


if __name__ == "__main__":
    main()
