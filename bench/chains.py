"""Variable-length tanh-RNN language-model training: autobatch strategies off/depth/agenda on word-by-word
code, and the same model written on whole sentences ("sequences"), against a hand-padded NumPy implementation
of the same model, at several minibatch sizes.

    python -m bench.chains                      # synthetic Zipf sentences (the embedded default)
    python -m bench.chains --data ../shared/data/ptb-lm --sentences 1280

Prints sentences/s (median of --repeats runs, systems interleaved so they see the same machine noise),
forward/backward batches per minibatch, and microseconds per node spent building and scheduling.
"""
import argparse
import json
import statistics
import time

import numpy as np

import autobatch as ab
from autobatch import data
from bench.padded_rnn import PaddedRNN


def load_sentences(args):
    if args.data:
        sents = data.read_lm_dir(args.data)["train"][: args.sentences]
    else:
        sents = data.synthetic_lm(args.sentences, vocab_size=args.vocab, seed=args.seed)
    vocab = data.Vocab.build(sents, unk="<unk>")
    ids = [vocab.encode(s) for s in sents]
    ids = [[w if w < args.vocab else 0 for w in s] for s in ids]  # cap the softmax at --vocab words
    return [s for s in ids if len(s) >= 2]


class Model:
    """The autobatch model: per-sentence code, no padding."""

    def __init__(self, vocab, hidden, seed, dtype=np.float32, sequences=False):
        self.pc = ab.ParameterCollection(seed=seed, dtype=dtype)
        self.E = self.pc.add_lookup_parameters((vocab, hidden))
        if sequences:  # the same recurrence with W = [W_x | W_h] kept as the two blocks ab.RNN holds
            self.rnn = ab.RNN(self.pc, hidden, hidden)
        else:
            self.W = self.pc.add_parameters((hidden, 2 * hidden))
            self.b = self.pc.add_parameters((hidden,))
        self.V = self.pc.add_parameters((vocab, hidden))
        self.hidden = hidden

    def sequence_loss(self, words):
        """The same model on the sentence as a sequence: the recurrence is one scan node (``ab.RNN`` over
        ``E[words]``, h = tanh(W_x x + W_h h + b): W split in two), the output layer and losses one node each."""
        hs = self.rnn.transduce(self.E[list(words[:-1])])
        return ab.sum_elems(ab.pick_neg_log_softmax(self.V @ hs, list(words[1:])))

    def sentence_loss(self, words):
        h = ab.zeros(self.hidden)
        losses = []
        for w, nxt in zip(words[:-1], words[1:]):
            h = ab.tanh(self.W @ ab.concat([self.E[w], h]) + self.b)
            losses.append(ab.pick_neg_log_softmax(self.V @ h, nxt))
        return losses

    def step(self, batch, strategy, lr):
        ab.renew_cg(strategy="agenda" if strategy == "sequences" else strategy)
        if strategy == "sequences":
            losses = [self.sequence_loss(words) for words in batch]
        else:
            losses = [l for words in batch for l in self.sentence_loss(words)]
        loss = ab.esum(losses) / len(batch)
        value = loss.value()
        loss.backward()
        for p in self.pc.parameters():  # plain SGD; embedding rows updated sparsely
            if p.is_lookup:
                rows, g = p.sparse_grad()
                p.data[rows] -= lr * g
            else:
                p.data -= lr * p.grad_data()
        self.pc.zero_grad()
        return value, ab.graph_stats()


def run_autobatch(sents, mb, strategy, args):
    model = Model(args.vocab, args.hidden, args.seed, sequences=strategy == "sequences")
    totals = dict(nodes=0, fwd=0, bwd=0, build=0.0, sched=0.0, steps=0)
    t0 = time.perf_counter()
    for i in range(0, len(sents), mb):
        _, s = model.step(sents[i:i + mb], strategy, args.lr)
        totals["nodes"] += s["nodes"]
        totals["fwd"] += s["forward_batches"]
        totals["bwd"] += s["backward_batches"]
        totals["build"] += s["build_s"]
        totals["sched"] += s["schedule_s"]
        totals["steps"] += 1
    elapsed = time.perf_counter() - t0
    n = totals["nodes"]
    return dict(sents_per_s=len(sents) / elapsed, fwd_per_mb=totals["fwd"] / totals["steps"],
                bwd_per_mb=totals["bwd"] / totals["steps"], nodes_per_mb=n / totals["steps"],
                us_per_node_build=1e6 * totals["build"] / n, us_per_node_schedule=1e6 * totals["sched"] / n)


def run_padded(sents, mb, args):
    model = Model(args.vocab, args.hidden, args.seed)
    params = [p.data for p in model.pc.parameters()]
    padded = PaddedRNN(*params)
    t0 = time.perf_counter()
    for i in range(0, len(sents), mb):
        _, grads = padded.loss_and_grads(sents[i:i + mb])
        for p, g in zip(params, grads):
            p -= args.lr * g
    return dict(sents_per_s=len(sents) / (time.perf_counter() - t0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder with ptb.train.txt (default: synthetic Zipf sentences)")
    ap.add_argument("--sentences", type=int, default=640)
    ap.add_argument("--vocab", type=int, default=1000, help="softmax size (rarer words map to <unk>)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--strategies", default="off,depth,agenda,sequences",
                    help="strategies for the word-by-word code, and 'sequences' (sentence-level code, agenda)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    sents = load_sentences(args)
    words = sum(len(s) - 1 for s in sents)
    print(f"{len(sents)} sentences, {words} predicted words, mean length {words / len(sents) + 1:.1f}, "
          f"vocab {args.vocab}, hidden {args.hidden}, medians of {args.repeats} runs")
    results = []
    for mb in [int(x) for x in args.batch_sizes.split(",")]:
        runs = {}
        for _ in range(args.repeats):  # interleave systems so each sees the same machine noise
            runs.setdefault("padded", []).append(run_padded(sents, mb, args))
            for strategy in args.strategies.split(","):
                runs.setdefault(strategy, []).append(run_autobatch(sents, mb, strategy, args))
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
        base = med["padded"]["sents_per_s"]
        print(f"\nminibatch {mb}")
        print(f"{'system':10s} {'sents/s':>9s} {'vs padded':>9s} {'vs off':>7s} {'fwd/mb':>7s} {'bwd/mb':>7s} "
              f"{'nodes/mb':>9s} {'build us/node':>14s} {'sched us/node':>14s}")
        for name, m in med.items():
            off = med.get("off", {}).get("sents_per_s")
            row = f"{name:10s} {m['sents_per_s']:9.0f} {m['sents_per_s'] / base:9.2f}"
            row += f" {m['sents_per_s'] / off:7.1f}" if off else f" {'':7s}"
            if "fwd_per_mb" in m:
                row += (f" {m['fwd_per_mb']:7.0f} {m['bwd_per_mb']:7.0f} {m['nodes_per_mb']:9.0f}"
                        f" {m['us_per_node_build']:14.2f} {m['us_per_node_schedule']:14.2f}")
            print(row)
            results.append(dict(minibatch=mb, system=name, **m))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
