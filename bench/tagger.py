"""The BiLSTM tagger of neulab/dynet-benchmark (word embedding 128, LSTM hidden 50 per direction, one layer,
MLP 32 with tanh and no biases, Adam), written per sentence and trained with strategy agenda vs off, and written
on the sentence as a sequence (its BiLSTM one scan node: "sequences").

    python -m bench.tagger                                   # synthetic EWT-like sentences (the default)
    python -m bench.tagger --data ../shared/data/ud-english-ewt --sentences 1000

Prints training sentences/s (median of --repeats runs, systems interleaved so they see the same machine
noise), nodes per word, batches per minibatch and microseconds per node spent building and scheduling.
Adam is DyNet's: global gradient norm clipped at 5, embedding rows updated lazily (only the rows used).
"""
import argparse
import json
import statistics
import time

import numpy as np

import autobatch as ab
from autobatch import data
from autobatch.kernels import backend


def load(args):
    if args.data:
        sents = data.read_conllu_dir(args.data)["train"][: args.sentences]
    else:
        sents = data.synthetic_tagging(args.sentences, vocab_size=args.vocab, seed=args.seed)
    words = data.Vocab.build([s.words for s in sents], min_count=1)
    tags = data.Vocab.build([s.upos for s in sents], unk=None)
    return [(words.encode(s.words), tags.encode(s.upos)) for s in sents], len(words), len(tags)


class Tagger:
    """dynet-benchmark's bilstm-tagger: tag_t = softmax(O tanh(H [f_t; b_t]))."""

    def __init__(self, n_words, n_tags, seed, embed=128, hidden=50, mlp=32):
        self.pc = pc = ab.ParameterCollection(seed=seed)
        self.E = pc.add_lookup_parameters((n_words, embed))
        self.bilstm = ab.BiRNN(ab.LSTM(pc, embed, hidden), ab.LSTM(pc, embed, hidden))
        self.H = pc.add_parameters((mlp, 2 * hidden))
        self.O = pc.add_parameters((n_tags, mlp))

    def losses(self, words, tags):
        """Word by word: the per-word losses, a few nodes per word and step."""
        outs = self.bilstm.transduce([self.E[w] for w in words])
        return [ab.pick_neg_log_softmax(self.O @ ab.tanh(self.H @ h), t) for h, t in zip(outs, tags)]

    def sequence_losses(self, words, tags):
        """The same model on the sentence as a sequence: a handful of nodes per sentence, the BiLSTM one scan."""
        return [ab.sum_elems(ab.pick_neg_log_softmax(self.O @ ab.tanh(self.H @ self.bilstm.transduce(self.E[words])),
                                                     tags))]


class Adam:
    """DyNet's AdamTrainer defaults: lr 0.001, betas 0.9/0.999, eps 1e-8, gradient norm clipped at 5; a lookup
    table's moments and rows are updated only where it was used (sparse updates)."""

    def __init__(self, pc, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, clip=5.0):
        self.pc, self.lr, self.b1, self.b2, self.eps, self.clip, self.t = pc, lr, b1, b2, eps, clip, 0
        self.state = [(p, backend.xp.zeros_like(p.data), backend.xp.zeros_like(p.data)) for p in pc.parameters()]

    def update(self):
        self.t += 1
        grads = [p.sparse_grad() if p.is_lookup else (None, p.grad_data()) for p, _, _ in self.state]
        norm = float(np.sqrt(sum(float((g * g).sum()) for _, g in grads)))
        scale = min(1.0, self.clip / max(norm, 1e-12))
        lr = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        b1, b2, xp = self.b1, self.b2, backend.xp
        for (p, m, v), (rows, g) in zip(self.state, grads):
            g = g * scale
            if rows is None:
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p.data -= lr * m / (xp.sqrt(v) + self.eps)
            else:
                m[rows] = b1 * m[rows] + (1 - b1) * g
                v[rows] = b2 * v[rows] + (1 - b2) * g * g
                p.data[rows] -= lr * m[rows] / (xp.sqrt(v[rows]) + self.eps)
        self.pc.zero_grad()


def train(sents, n_words, n_tags, mb, system, args):
    """One pass over ``sents`` in minibatches of ``mb``: sentences/s and per-node statistics. ``system``: a
    strategy (word-by-word code) or "sequences" (sentence-level code, agenda)."""
    model = Tagger(n_words, n_tags, args.seed)
    opt = Adam(model.pc)
    losses = model.sequence_losses if system == "sequences" else model.losses
    tot = dict(nodes=0, fwd=0, bwd=0, build=0.0, sched=0.0, loss=0.0, steps=0)
    t0 = time.perf_counter()
    for i in range(0, len(sents), mb):
        ab.renew_cg(strategy="agenda" if system == "sequences" else system)
        loss = ab.esum([l for words, tags in sents[i:i + mb] for l in losses(words, tags)])
        tot["loss"] += loss.value()
        loss.backward()
        opt.update()
        s = ab.graph_stats()
        tot["nodes"] += s["nodes"]
        tot["fwd"] += s["forward_batches"]
        tot["bwd"] += s["backward_batches"]
        tot["build"] += s["build_s"]
        tot["sched"] += s["schedule_s"]
        tot["steps"] += 1
    elapsed = time.perf_counter() - t0
    words = sum(len(w) for w, _ in sents)
    n = tot["nodes"]
    return dict(sents_per_s=len(sents) / elapsed, nodes_per_word=n / words, fwd_per_mb=tot["fwd"] / tot["steps"],
                bwd_per_mb=tot["bwd"] / tot["steps"], us_per_node_build=1e6 * tot["build"] / n,
                us_per_node_schedule=1e6 * tot["sched"] / n, loss_per_word=tot["loss"] / words)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder with *-ud-train.conllu (default: synthetic tagged sentences)")
    ap.add_argument("--sentences", type=int, default=320)
    ap.add_argument("--vocab", type=int, default=5000, help="synthetic vocabulary size")
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--strategies", default="agenda,off,sequences",
                    help="systems: strategies for the word-by-word code, and 'sequences' (sentence-level code)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    sents, n_words, n_tags = load(args)
    words = sum(len(w) for w, _ in sents)
    print(f"{len(sents)} sentences, {words} words (mean {words / len(sents):.1f}), {n_words} word types, "
          f"{n_tags} tags; medians of {args.repeats} runs")
    print(f"{'mb':>3s} {'strategy':8s} {'sents/s':>8s} {'vs off':>7s} {'nodes/word':>10s} {'fwd/mb':>7s} "
          f"{'bwd/mb':>7s} {'build us/node':>13s} {'sched us/node':>13s}")
    results = []
    for mb in [int(x) for x in args.batch_sizes.split(",")]:
        runs = {}
        for _ in range(args.repeats):  # interleaved, so every system sees the same machine noise
            for strategy in args.strategies.split(","):
                runs.setdefault(strategy, []).append(train(sents, n_words, n_tags, mb, strategy, args))
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
        for strategy, m in med.items():
            off = med.get("off", {}).get("sents_per_s")
            ratio = f"{m['sents_per_s'] / off:7.2f}" if off else " " * 7
            print(f"{mb:3d} {strategy:8s} {m['sents_per_s']:8.0f} {ratio} {m['nodes_per_word']:10.2f} "
                  f"{m['fwd_per_mb']:7.0f} {m['bwd_per_mb']:7.0f} {m['us_per_node_build']:13.2f} "
                  f"{m['us_per_node_schedule']:13.2f}")
            results.append(dict(minibatch=mb, strategy=strategy, **m))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
