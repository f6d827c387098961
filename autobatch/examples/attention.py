"""Attention encoder-decoder (Luong et al. 2015: "general" scores, input feeding) on a synthetic task with
ragged lengths: reverse (default) or copy a random string of 3 to 8 symbols. The encoder is a BiLSTM over the
source (one scan node per sentence); each decoder step is an LSTM step, then attention over the source rows as
three sequence nodes that batch across sentences of every length in one kernel call each, with no padding:

    scores = dot_rows(K, h)            K = W_a H: the source rows' keys, one node per sentence
    a      = softmax_rows(scores)      over the source positions
    c      = weighted_sum_rows(H, a)   the context vector
    h~     = tanh(W_c [c; h]),  p(y_t) = softmax(W_o h~ + b_o),  h~ fed to the next step

so a minibatch's forward batches do not grow with the number of distinct source lengths.

    python -m autobatch.examples.attention                   # reverse strings of 3..8 symbols out of 10
    python -m autobatch.examples.attention --task copy --min-len 5 --max-len 12

The output has as many symbols as the input (no end symbol: the task fixes the length). Prints one line per
epoch, then a JSON object with dev_accuracy (symbols right, greedy decoding with batch_map),
dev_sequence_accuracy (whole strings right), the chance level and the forward batches of one minibatch.
"""
import sys
import time

import numpy as np

from .. import ops
from ..batch_map import batch_map
from ..graph import renew_cg
from ..inspect import graph_stats
from ..parameters import ParameterCollection
from ..rnn import LSTM, BiRNN
from ..train import normalize_loss
from . import check_args, common_parser, emit, train_model

TASKS = ("reverse", "copy")


def synthetic(n, *, vocab, min_len, max_len, task="reverse", seed=0):
    """``n`` examples ``(source ids, target ids)``: random strings of symbols ``0 .. vocab-1``, lengths uniform
    in ``[min_len, max_len]``; the target is the source reversed, or copied."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")
    rng = np.random.default_rng(seed)
    out = []
    for length in rng.integers(min_len, max_len + 1, size=n):
        src = rng.integers(0, vocab, size=int(length)).tolist()
        out.append((src, src[::-1] if task == "reverse" else list(src)))
    return out


class Seq2Seq:
    """A BiLSTM encoder and an LSTM decoder with Luong attention over the encoder's rows. An example is
    ``(source ids, target ids)``; symbols are ``0 .. vocab-1`` on both sides, the decoder starts from a
    begin symbol of its own."""

    def __init__(self, vocab, *, embed=32, hidden=64, seed=0, dtype=np.float32):
        self.vocab, self.bos = vocab, vocab
        self.pc = pc = ParameterCollection(seed=seed, dtype=dtype)
        self.E_src = pc.add_lookup_parameters((vocab, embed), name="E_src")
        self.E_tgt = pc.add_lookup_parameters((vocab + 1, embed), name="E_tgt")
        self.encoder = BiRNN(LSTM(pc, embed, hidden, name="enc_fwd"), LSTM(pc, embed, hidden, name="enc_bwd"))
        self.decoder = LSTM(pc, embed + hidden, hidden, name="dec")
        self.W_a = pc.add_parameters((hidden, 2 * hidden), name="W_a")
        self.W_c = pc.add_parameters((hidden, 3 * hidden), name="W_c")
        self.W_o = pc.add_parameters((vocab, hidden), name="W_o")
        self.b_o = pc.add_parameters((vocab,), name="b_o")
        self.hidden = hidden

    def _encode(self, src):
        """The source rows H (a sequence of 2 x hidden) and their attention keys W_a H (one node each)."""
        H = self.encoder.transduce(self.E_src[list(src)])
        return H, self.W_a @ H

    def _step(self, H, K, state, prev, h_att):
        """One decoder step from symbol ``prev``: the next state, attentional vector h~ and logits."""
        state = state.add_input(ops.concat([self.E_tgt[prev], h_att]))
        h = state.output
        context = ops.weighted_sum_rows(H, ops.softmax_rows(ops.dot_rows(K, h)))
        h_att = ops.tanh(self.W_c @ ops.concat([context, h]))
        return state, h_att, ops.affine(self.b_o, self.W_o, h_att)

    def _start(self, src):
        H, K = self._encode(src)
        return H, K, self.decoder.initial_state(), ops.zeros(self.hidden)

    def loss(self, example):
        """The per-symbol losses -log p(y_t | y_<t, source) with teacher forcing (a list of scalars)."""
        src, tgt = example
        H, K, state, h_att = self._start(src)
        losses, prev = [], self.bos
        for y in tgt:
            state, h_att, logits = self._step(H, K, state, prev, h_att)
            losses.append(ops.pick_neg_log_softmax(logits, y))
            prev = y
        return losses

    def translate(self, src):
        """Greedy decoding of ``len(src)`` symbols. It reads a value per step, so
        ``batch_map(model.translate, sources)`` decodes all sources in lockstep, each step one batched pass."""
        H, K, state, h_att = self._start(src)
        out, prev = [], self.bos
        for _ in src:
            state, h_att, logits = self._step(H, K, state, prev, h_att)
            prev = int(logits.value().argmax())
            out.append(prev)
        return out

    def translate_all(self, sources, batch_size=256):
        """``translate`` for every source, one graph per ``batch_size`` sources."""
        out, sources = [], list(sources)
        for i in range(0, len(sources), batch_size):
            renew_cg()
            out += batch_map(self.translate, sources[i:i + batch_size])
        return out

    def accuracies(self, examples):
        """(symbols right, whole targets right), as fractions, of greedy decoding."""
        predicted = self.translate_all([s for s, _ in examples])
        symbols = sum(p == t for ps, (_, ts) in zip(predicted, examples) for p, t in zip(ps, ts))
        whole = sum(ps == ts for ps, (_, ts) in zip(predicted, examples))
        return symbols / max(1, sum(len(t) for _, t in examples)), whole / max(1, len(examples))

    def accuracy(self, examples):
        """The fraction of target symbols that greedy decoding gets right."""
        return self.accuracies(examples)[0]


def forward_batches(model, examples, strategy="agenda"):
    """The forward batches (kernel calls) of one minibatch's training loss as the Trainer builds it, in a fresh
    graph."""
    renew_cg(strategy=strategy)
    normalize_loss([model.loss(ex) for ex in examples]).value()
    return graph_stats()["forward_batches"]


def main(argv=None):
    """Train and evaluate the attention model; returns the metrics printed as the last line."""
    t0 = time.perf_counter()
    ap = common_parser(__doc__, epochs=10, batch_size=32, lr=5e-3, embed=32, hidden=64, max_train=2000,
                       max_dev=200)
    ap.add_argument("--task", choices=TASKS, default="reverse", help="reverse (default) or copy the source")
    ap.add_argument("--vocab", type=int, default=10, help="number of symbols (default 10)")
    ap.add_argument("--min-len", type=int, default=3, help="shortest source (default 3)")
    ap.add_argument("--max-len", type=int, default=8, help="longest source (default 8)")
    args = ap.parse_args(argv)
    check_args(ap, args)
    if args.data:
        ap.error("--data: this example trains on synthetic strings only (see --task, --vocab, --min-len, --max-len)")
    if args.vocab < 2 or not 1 <= args.min_len <= args.max_len:
        ap.error(f"needs --vocab >= 2 and 1 <= --min-len <= --max-len, got {args.vocab}, {args.min_len}, "
                 f"{args.max_len}")
    return args.comm.run(train_and_evaluate, args, t0)


def train_and_evaluate(args, t0):
    """Everything ``main`` does after parsing the flags: make the data, train, evaluate, print the JSON."""
    n_train, n_dev = args.max_train or 2000, args.max_dev or 200
    # One generator for both splits: dev strings come from the same distribution as the training ones.
    examples = synthetic(n_train + n_dev, vocab=args.vocab, min_len=args.min_len, max_len=args.max_len,
                         task=args.task, seed=args.seed)
    train, dev = examples[:n_train], examples[n_train:]
    model = Seq2Seq(args.vocab, embed=args.embed, hidden=args.hidden, seed=args.seed)
    batch = train[:args.batch_size]
    per_minibatch = forward_batches(model, batch, args.strategy)
    print(f"synthetic {args.task}: {len(train)} train / {len(dev)} dev strings of {args.min_len}..{args.max_len} "
          f"symbols out of {args.vocab}; chance accuracy {1 / args.vocab:.4f}; one minibatch of {len(batch)} "
          f"({len({len(s) for s, _ in batch})} distinct lengths) runs in {per_minibatch} forward batches",
          flush=True)
    _, summary = train_model(model, train, dev, model.accuracy, args, metric="dev_accuracy", unit="strings")
    symbols, whole = model.accuracies(dev)
    return emit({**summary, "dev_sequence_accuracy": whole, "chance_accuracy": 1 / args.vocab,
                 "forward_batches_per_minibatch": per_minibatch, "task": args.task, "train_strings": len(train),
                 "dev_strings": len(dev), "wall_seconds": round(time.perf_counter() - t0, 3)})


if __name__ == "__main__":
    main(sys.argv[1:])
