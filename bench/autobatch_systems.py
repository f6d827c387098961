"""autobatch's side of the issue-5 benchmark: the three dynet-benchmark models written per example, behind the
same interface as the peers of ``bench/peers`` (``name``, ``train_batch(batch) -> summed loss``) and trained
the same way (DyNet's Adam: lr 1e-3, global gradient norm clipped at 5, embedding rows updated sparsely).

Two ways to write each model:
- "steps": word by word (tree node by tree node), as one writes for DyNet; the engine batches the steps.
  Run under the strategies ``off``, ``depth`` and ``agenda``.
- "seq": on the whole sentence (tree) as a sequence: a BiLSTM / LSTM / Tree-LSTM is one scan node per
  example, per-word layers and losses one node each (agenda).
- "prim" (tree only): the Tree-LSTM written from primitives per tree node, as a DyNet user writes it
  (dynet-benchmark's treenn: ``affine``, ``logistic``, ``tanh``, ``cmult`` per gate), with the parameters of
  the DyNet peer (``bench/peers/dynet_models.py``): one forget gate per child reading that child's h. No fused
  cell: this is the code every tree model without a hand-written block runs at (agenda).
"""
import time

import numpy as np

import autobatch as ab
from bench.peers import tasks


class System:
    """One model for ``task`` in one writing style (``seq`` or steps under ``strategy``)."""

    def __init__(self, task, n_words, n_labels, seed=0, strategy="agenda", seq=True, prim=False):
        dims = tasks.HYPER[task]
        self.task, self.strategy, self.seq, self.prim = task, strategy, seq, prim
        self.name = "autobatch-seq" if seq else "autobatch-prim" if prim else f"autobatch-{strategy}"
        self.pc = pc = ab.ParameterCollection(seed=seed)
        E, H = dims["embed"], dims["hidden"]
        self.E = pc.add_lookup_parameters((n_words, E))
        if task == "tagger":
            self.rnn = ab.BiRNN(ab.LSTM(pc, E, H), ab.LSTM(pc, E, H))
            self.Hm = pc.add_parameters((dims["mlp"], 2 * H))
            self.O = pc.add_parameters((n_labels, dims["mlp"]))
        elif task == "tree" and prim:
            self.W = [pc.add_parameters((H, E)) for _ in "iou"]  # a leaf's gates read its word
            self.U = [pc.add_parameters((H, 2 * H)) for _ in "iou"]  # an internal node's read [h_left; h_right]
            self.F = [pc.add_parameters((H, H)) for _ in "lr"]  # the forget gate of each child reads its h
            self.b = [pc.add_parameters((H,)) for _ in "iouf"]
            self.O = pc.add_parameters((n_labels, H))
        elif task == "tree":
            self.tree = ab.TreeLSTM(pc, E, H)
            self.O = pc.add_parameters((n_labels, H))  # no output bias, as the peers and dynet-benchmark
        else:
            self.rnn = ab.LSTM(pc, E, H)
            self.O, self.b = pc.add_parameters((n_words, H)), pc.add_parameters((n_words,))
        self.opt = ab.Adam(pc, lr=1e-3)
        self.history = []  # per minibatch: graph_stats' counts and seconds, and the update's seconds

    def loss(self, item):
        """One example's summed loss."""
        return getattr(self, f"_{self.task}_{'seq' if self.seq else 'prim' if self.prim else 'steps'}")(item)

    def _tagger_seq(self, item):
        words, tags = item
        hs = self.rnn.transduce(self.E[words])
        return ab.sum_elems(ab.pick_neg_log_softmax(self.O @ ab.tanh(self.Hm @ hs), tags))

    def _tagger_steps(self, item):
        words, tags = item
        hs = self.rnn.transduce([self.E[w] for w in words])
        return ab.esum([ab.pick_neg_log_softmax(self.O @ ab.tanh(self.Hm @ h), t) for h, t in zip(hs, tags)])

    def _tree_seq(self, item):
        leaves = np.flatnonzero(item.words >= 0)
        number = np.full(len(item), -1)
        number[leaves] = np.arange(len(leaves))
        shape = np.stack([item.left, item.right, item.heights, number], axis=1)
        hs = self.tree.scan(shape, self.E[item.words[leaves]])
        return ab.sum_elems(ab.pick_neg_log_softmax(self.O @ hs, item.labels))

    def _tree_steps(self, item):
        states, losses = [], []
        for w, left, right, label in zip(item.words, item.left, item.right, item.labels):
            s = self.tree.leaf(self.E[int(w)]) if left < 0 else self.tree.compose(states[left], states[right])
            states.append(s)
            losses.append(ab.pick_neg_log_softmax(self.O @ s.h, int(label)))
        return ab.esum(losses)

    def _tree_prim(self, item):
        (Wi, Wo, Wu), (Ui, Uo, Uu), (Fl, Fr), (bi, bo, bu, bf) = self.W, self.U, self.F, self.b
        h, c, losses = [], [], []
        for w, left, right, label in zip(item.words.tolist(), item.left.tolist(), item.right.tolist(),
                                         item.labels.tolist()):
            if w >= 0:  # a leaf
                x = self.E[w]
                i, o, u = ab.logistic(ab.affine(bi, Wi, x)), ab.logistic(ab.affine(bo, Wo, x)), ab.tanh(
                    ab.affine(bu, Wu, x))
                c.append(ab.cmult(i, u))
            else:
                e = ab.concat([h[left], h[right]])
                i, o, u = ab.logistic(ab.affine(bi, Ui, e)), ab.logistic(ab.affine(bo, Uo, e)), ab.tanh(
                    ab.affine(bu, Uu, e))
                fl, fr = ab.logistic(ab.affine(bf, Fl, h[left])), ab.logistic(ab.affine(bf, Fr, h[right]))
                c.append(ab.cmult(i, u) + ab.cmult(fl, c[left]) + ab.cmult(fr, c[right]))
            h.append(ab.cmult(o, ab.tanh(c[-1])))
            losses.append(ab.pick_neg_log_softmax(self.O @ h[-1], label))
        return ab.esum(losses)

    def _lm_seq(self, item):
        inputs, targets = item
        hs = self.rnn.transduce(self.E[inputs])
        return ab.sum_elems(ab.pick_neg_log_softmax(ab.affine(self.b, self.O, hs), targets))

    def _lm_steps(self, item):
        inputs, targets = item
        hs = self.rnn.transduce([self.E[w] for w in inputs])
        return ab.esum([ab.pick_neg_log_softmax(ab.affine(self.b, self.O, h), t) for h, t in zip(hs, targets)])

    def train_batch(self, batch):
        """One update on ``batch``; the summed loss of the minibatch before the update."""
        ab.renew_cg(strategy=self.strategy)
        loss = ab.esum([self.loss(item) for item in batch])
        value = loss.value()
        loss.backward()
        t0 = time.perf_counter()
        ab.clip_grad_norm(self.pc, 5.0)
        self.opt.step()
        self.opt.zero_grad()
        s = ab.graph_stats()
        self.history.append({k: s[k] for k in ("nodes", "forward_batches", "backward_batches", "build_s",
                                               "schedule_s", "execute_s", "backward_s")}
                            | {"update_s": time.perf_counter() - t0})
        return value

    def report(self):
        """Per-minibatch means of the engine's counts and seconds over the updates so far."""
        return {k: sum(h[k] for h in self.history) / len(self.history) for k in self.history[0]}


def make(task, n_words, n_labels=None, seed=0, style="seq", strategy="agenda"):
    """``style``: "seq", "prim" (tree: the Tree-LSTM from primitives, batched by ``strategy``), or a strategy
    ("off", "depth", "agenda") for the step-by-step code."""
    if style == "seq":
        return System(task, n_words, n_labels, seed, "agenda", True)
    if style == "prim":
        if task != "tree":
            raise ValueError(f"autobatch-prim is the tree task's; the {task} task's per-word code is autobatch-agenda")
        return System(task, n_words, n_labels, seed, strategy, False, prim=True)
    return System(task, n_words, n_labels, seed, style, False)
