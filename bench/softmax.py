"""Issue 13's benchmark: the suite's LSTM language model (embedding 128, LSTM 256, ``bench/peers``) with each output
layer of ``autobatch/output_layers.py`` against the full softmax, and PyTorch's LM with the full softmax and with
``nn.AdaptiveLogSoftmaxWithLoss`` (the same cut-offs), all in ONE process on ONE thread, interleaved epoch by
epoch so that ratios hold on a shared machine. Not a test: a measurement.

    python -m bench.softmax                                          # synthetic Zipf text (vocabulary 10,000)
    python -m bench.softmax --data ../shared/data/ptb-lm --train 3000 --dev 400 --epochs 2

Every system trains on the same minibatches (length-sorted, batch order shuffled per epoch, as the suite's LM),
summed loss per minibatch, Adam (``--lr``), gradient norm clipped at 5; output biases start at the log unigram
distribution of the training counts (the adaptive softmax, as PyTorch's by default, has none). Reported per
minibatch size:
- training words/s (predicted tokens, the closing ``<s>`` included; evaluation not timed);
- dev perplexity after the same number of epochs, from the exact distribution (the sampled softmax evaluates
  with its full softmax);
- the perplexity at equal wall time: every system keeps training (up to ``--max-epochs``) until its training
  time reaches the autobatch full softmax's time for ``--epochs`` epochs; the perplexity after the last epoch
  that ended within that budget.
The vocabulary is PTB's whole training vocabulary (10,000 words, ids in descending frequency) even on a subset.
"""
import argparse
import json
import math
import os
import platform
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads: one BLAS thread, like every peer

import numpy as np  # noqa: E402

import autobatch as ab  # noqa: E402
from autobatch import data  # noqa: E402
from autobatch.examples import lm, split_file, subset  # noqa: E402
from bench.peers import tasks  # noqa: E402

KINDS = ("full", "class", "sampled", "adaptive")


class AutobatchLM:
    """The example's LanguageModel with output layer ``kind``, trained as the suite trains its systems."""

    def __init__(self, kind, words, counts, args):
        self.name = f"autobatch {kind}"
        self.model = lm.LanguageModel(words, embed=128, hidden=256, seed=args.seed, softmax=kind, counts=counts,
                                      n_classes=args.classes, samples=args.samples, proposal=args.proposal,
                                      cutoffs=args.cutoffs,
                                      div_value=args.div_value)
        self.opt = ab.Adam(self.model.pc, lr=args.lr)

    def train_batch(self, batch):
        ab.renew_cg()
        loss = ab.esum([ab.sum_elems(self.model.loss(targets[:-1])) for _, targets in batch])
        value = loss.value()
        loss.backward()
        ab.clip_grad_norm(self.model.pc, 5.0)
        self.opt.step()
        self.opt.zero_grad()
        return value

    def perplexity(self, dev):
        return self.model.perplexity([targets[:-1] for _, targets in dev])


def torch_lm(adaptive, n_words, counts, args):
    """PyTorch's LM of ``bench/peers`` (packed LSTM, sparse embedding), with a full or an adaptive softmax."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from bench.peers import torch_models as tm

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    class TorchLM(tm._System):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(n_words, 128, sparse=True)
            self.lstm = nn.LSTM(128, 256)
            self.out = (nn.AdaptiveLogSoftmaxWithLoss(256, n_words, args.cutoffs, div_value=args.div_value)
                        if adaptive else nn.Linear(256, n_words))
            self._init_training(True)
            if not adaptive:  # as the autobatch layers (set_unigram_bias); the adaptive softmax has no bias
                with torch.no_grad():
                    self.out.bias.copy_(torch.tensor(np.log((counts + 1) / (counts + 1).sum())))
            for opt in self.opts:
                for group in opt.param_groups:
                    group["lr"] = args.lr
            self.name = f"torch {'adaptive' if adaptive else 'full'}"

        def loss(self, batch):
            inputs = tm._pack_ids([x for x, _ in batch], "cpu")
            targets = tm._pack_ids([y for _, y in batch], "cpu").data
            h, _ = self.lstm(tm._embed_packed(self.embedding, inputs))  # one lookup over the packed ids
            if adaptive:
                return -self.out(h.data, targets).output.sum()
            return F.cross_entropy(self.out(h.data), targets, reduction="sum")

        def perplexity(self, dev):
            total, count = 0.0, 0
            with torch.no_grad():
                for i in range(0, len(dev), 128):
                    batch = dev[i:i + 128]
                    total += float(self.loss(batch))
                    count += sum(len(y) for _, y in batch)
            return math.exp(total / count)

    return TorchLM()


def load(args):
    """Train and dev items ((inputs, targets) as ``bench/peers/tasks``), the vocabulary and the training counts."""
    if args.data:
        text = data.read_lm(split_file(args.data, "ptb.train.txt"))
        train_text = subset(text, args.train)
        dev_text = subset(data.read_lm(split_file(args.data, "ptb.valid.txt")), args.dev)
        words = data.Vocab.build(text, specials=(lm.BOUNDARY,))
    else:
        text = data.synthetic_lm(args.train + args.dev, vocab_size=10000, seed=args.seed)
        train_text, dev_text = text[:args.train], text[args.train:]
        # every word type, in the generator's order: descending Zipf probability, as Vocab.build orders PTB's
        words = data.Vocab([f"w{i}" for i in range(10000)], specials=(lm.BOUNDARY,))
    s = words.index(lm.BOUNDARY)

    def items(sents):
        return [([s] + ids, ids + [s]) for ids in map(words.encode, sents)]

    train, dev = items(train_text), items(dev_text)
    counts = np.bincount([w for _, y in train for w in y], minlength=len(words))
    return train, dev, words, counts


def run(mb, systems, train, dev, args):
    """Interleaved epochs of every system at minibatch ``mb``; per system its epochs' (seconds, words, ppl)."""
    log = {sys.name: [] for sys in systems}
    words = sum(len(y) for _, y in train)

    def epoch(sys, k):
        batches = tasks.batches("lm", train, mb, seed=args.seed + k)
        t0 = time.perf_counter()
        for batch in batches:
            sys.train_batch(batch)
        seconds = time.perf_counter() - t0
        ppl = sys.perplexity(dev)
        log[sys.name].append({"seconds": seconds, "words": words, "ppl": ppl})
        print(f"  mb {mb} epoch {k + 1} {sys.name}: {words / seconds:,.0f} words/s, dev ppl {ppl:.1f}", flush=True)

    for k in range(args.epochs):
        for sys in systems:
            epoch(sys, k)
    budget = sum(r["seconds"] for r in log["autobatch full"]) if "autobatch full" in log else None
    for k in range(args.epochs, args.max_epochs if budget else args.epochs):
        behind = [s for s in systems if sum(r["seconds"] for r in log[s.name]) < budget]
        if not behind:
            break
        for sys in behind:
            epoch(sys, k)
    return log, budget


def summary(log, budget, epochs):
    """Per system: words/s over the common epochs, ppl after them, ppl (and epochs) within the time budget."""
    rows = {}
    for name, recs in log.items():
        common = recs[:epochs]
        within, spent = None, 0.0
        for k, r in enumerate(recs):
            spent += r["seconds"]
            if budget is not None and spent <= budget * 1.001:
                within = (r["ppl"], k + 1)
        rows[name] = {"words_per_s": sum(r["words"] for r in common) / sum(r["seconds"] for r in common),
                      "ppl": common[-1]["ppl"], "ppl_at_budget": within}
    return rows


def table(mb, rows, epochs, budget):
    base = rows.get("autobatch full")
    lines = [f"minibatch {mb} (budget for equal wall time: {budget:.1f} s of training)" if budget else
             f"minibatch {mb}",
             f"| system | train words/s | x full | dev ppl after {epochs} epoch(s) | vs full | ppl at equal wall time "
             f"(epochs) |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        speed = f"{r['words_per_s'] / base['words_per_s']:.2f}" if base else "—"
        ppl = f"{100 * (r['ppl'] / base['ppl'] - 1):+.1f}%" if base else "—"
        at = f"{r['ppl_at_budget'][0]:.1f} ({r['ppl_at_budget'][1]})" if r["ppl_at_budget"] else "—"
        lines.append(f"| {name} | {r['words_per_s']:,.0f} | {speed} | {r['ppl']:.1f} | {ppl} | {at} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", metavar="DIR", help="PTB's folder (default: synthetic Zipf text, 10,000 words)")
    ap.add_argument("--train", type=int, default=2000, help="training sentences (a fixed random subset)")
    ap.add_argument("--dev", type=int, default=300, help="dev sentences (a fixed random subset)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs every system trains (default 1)")
    ap.add_argument("--max-epochs", type=int, default=4, help="at most this many epochs for the equal-time budget")
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--systems", default="autobatch:full,autobatch:class,autobatch:sampled,autobatch:adaptive,"
                                         "torch:full,torch:adaptive")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate, every system (default 2e-3)")
    ap.add_argument("--classes", type=int, default=None, help="class-factored: classes (default sqrt(V))")
    ap.add_argument("--samples", type=int, default=1024, help="sampled: words per sample (default 1024)")
    ap.add_argument("--proposal", default="log-uniform", help="sampled: log-uniform (default) or unigram")
    ap.add_argument("--cutoffs", default="1000,5000", help="adaptive (both systems): cut-offs (default 1000,5000)")
    ap.add_argument("--div-value", type=float, default=4.0, help="adaptive: dim / div**(i+1) per tail cluster")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.cutoffs = [int(c) for c in args.cutoffs.split(",")]
    train, dev, words, counts = load(args)
    print(f"{'PTB' if args.data else 'synthetic'}: {len(train)} train / {len(dev)} dev sentences, "
          f"{sum(len(y) for _, y in train)} train words, vocabulary {len(words)}; cut-offs {args.cutoffs}, "
          f"{args.samples} samples; {platform.python_version()}, load {os.getloadavg()[:2]}", flush=True)
    results = {}
    for mb in [int(b) for b in args.batch_sizes.split(",")]:
        systems = []
        for spec in args.systems.split(","):
            framework, kind = spec.split(":")
            systems.append(AutobatchLM(kind, words, counts, args) if framework == "autobatch"
                           else torch_lm(kind == "adaptive", len(words), counts, args))
        log, budget = run(mb, systems, train, dev, args)
        rows = summary(log, budget, args.epochs)
        print(table(mb, rows, args.epochs, budget), flush=True)
        results[mb] = {"rows": rows, "budget_s": budget, "log": log}
    print(json.dumps({"args": {k: v for k, v in vars(args).items()}, "load_avg": os.getloadavg()[:2],
                      "results": results}))


if __name__ == "__main__":
    main()
