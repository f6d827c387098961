"""DyNet peers, written per sentence (per tree) the way neulab/dynet-benchmark's scripts are: bilstm-tagger
(two ``VanillaLSTMBuilder``s, MLP without biases), treenn (one affine transform per gate, loss at every node)
and, for the LM, both styles of its scripts: per sentence (``dynet``, for DyNet's auto-batching to batch) and
rnnlm-batch's hand-batched ``lookup_batch`` + mask (``dynet-batched``).

A minibatch is one computation graph holding all its sentences, one summed loss, one ``backward`` and one
``AdamTrainer.update`` (DyNet's defaults: lr 0.001, global gradient norm clipped at 5, sparse updates of lookup
rows). dynet-benchmark's own scripts turn clipping off (``set_clip_threshold(-1)``); issue 5 keeps DyNet's default
so every system trains the same way.

DyNet reads its configuration (auto-batching, memory, seed) once, at its first import: call ``configure`` first,
and run each configuration in a process of its own (``python -m bench.peers.run --system dynet --autobatch 1``).
"""
import sys

from bench.peers import tasks

dy = None  # the dynet module, once configure() has imported it


#: DyNet's memory in MiB (one total, or "forward,backward,parameters,scratch" pools). Auto-batching cannot grow
#: its pools on demand, and the LM's 10,000-way softmax over 64 long sentences needs far more than 512.
MEM = {"tagger": "512", "tree": "512", "lm": "1536,1536,512,256"}


def configure(autobatch=0, seed=0, mem="512"):
    """Set DyNet's options and import it; returns the module. ``autobatch``: 0 off, 1 on (agenda-based);
    ``mem``: see ``MEM``.

    Raises RuntimeError when DyNet was already imported with another auto-batching setting: DyNet cannot be
    reconfigured inside a process.
    """
    global dy
    import dynet_config

    if "dynet" in sys.modules:
        current = (dynet_config.get() or {}).get("autobatch", 0)
        if int(current) != int(autobatch):
            raise RuntimeError(f"DyNet is already imported with autobatch={current}; it reads its configuration "
                               f"once per process, so run autobatch={autobatch} in a new process")
    else:
        # DyNet takes random_seed=0 as "pick a random seed", so shift by one to keep every seed deterministic.
        dynet_config.set(mem=mem, random_seed=seed + 1, autobatch=int(autobatch))
    import dynet

    dy = dynet
    return dynet


class _System:
    """The trainer and ``train_batch`` shared by the models; subclasses define ``losses(batch)``."""

    def __init__(self, autobatch):
        self.pc = dy.ParameterCollection()
        self.name = f"dynet-ab{autobatch}"

    def _init_training(self):
        self.trainer = dy.AdamTrainer(self.pc)  # defaults: alpha 0.001, clip 5, sparse updates on

    def train_batch(self, batch):
        """One update on ``batch``; the summed loss of the minibatch before the update."""
        dy.renew_cg()
        loss = self.loss(batch)
        value = loss.value()  # runs the forward pass: this is where auto-batching plans the graph
        loss.backward()
        self.trainer.update()
        return value


class Tagger(_System):
    """bilstm-tagger: two 1-layer VanillaLSTMs over the sentence, scores O tanh(H [f_t; b_t])."""

    def __init__(self, n_words, n_tags, embed=128, hidden=50, mlp=32, autobatch=0):
        super().__init__(autobatch)
        self.E = self.pc.add_lookup_parameters((n_words, embed))
        self.fwd = dy.VanillaLSTMBuilder(1, embed, hidden, self.pc)
        self.bwd = dy.VanillaLSTMBuilder(1, embed, hidden, self.pc)
        self.pH = self.pc.add_parameters((mlp, 2 * hidden))
        self.pO = self.pc.add_parameters((n_tags, mlp))
        self._init_training()

    def loss(self, batch):
        """The summed per-word loss of ``batch`` (list of (word ids, tag ids)) as one expression."""
        H, O = self.pH, self.pO  # Parameters join the graph where used (expr() would default to update=False)
        losses = []
        for words, tags in batch:
            embs = [self.E[w] for w in words]
            f = self.fwd.initial_state().transduce(embs)
            b = self.bwd.initial_state().transduce(embs[::-1])[::-1]
            for fh, bh, t in zip(f, b, tags):
                losses.append(dy.pickneglogsoftmax(O * dy.tanh(H * dy.concatenate([fh, bh])), t))
        return dy.esum(losses)


class TreeLSTM(_System):
    """treenn: one weight matrix per gate, affine transforms per node, loss at every node.

    (dynet-benchmark's treenn passes the input gate's bias to the output gate, a slip; here o has its own.)
    """

    def __init__(self, n_words, n_labels=5, embed=128, hidden=128, autobatch=0):
        super().__init__(autobatch)
        pc = self.pc
        self.E = pc.add_lookup_parameters((n_words, embed))
        self.pW = [pc.add_parameters((hidden, embed)) for _ in "iou"]
        self.pU = [pc.add_parameters((hidden, 2 * hidden)) for _ in "iou"]
        self.pF = [pc.add_parameters((hidden, hidden)) for _ in "lr"]
        self.pb = [pc.add_parameters(hidden) for _ in "iouf"]
        self.pS = pc.add_parameters((n_labels, hidden))
        self._init_training()

    def loss(self, batch):
        """The summed per-node loss of ``batch`` (list of TreeItem) as one expression."""
        Wi, Wo, Wu = self.pW
        Ui, Uo, Uu = self.pU
        Fl, Fr = self.pF
        bi, bo, bu, bf = self.pb
        S = self.pS
        losses = []
        for tree in batch:
            h, c = [None] * len(tree), [None] * len(tree)
            for k, (w, l, r, label) in enumerate(zip(tree.words.tolist(), tree.left.tolist(),
                                                     tree.right.tolist(), tree.labels.tolist())):
                if w >= 0:
                    x = self.E[w]
                    i = dy.logistic(dy.affine_transform([bi, Wi, x]))
                    o = dy.logistic(dy.affine_transform([bo, Wo, x]))
                    u = dy.tanh(dy.affine_transform([bu, Wu, x]))
                    c[k] = dy.cmult(i, u)
                else:
                    e = dy.concatenate([h[l], h[r]])
                    i = dy.logistic(dy.affine_transform([bi, Ui, e]))
                    o = dy.logistic(dy.affine_transform([bo, Uo, e]))
                    u = dy.tanh(dy.affine_transform([bu, Uu, e]))
                    fl = dy.logistic(dy.affine_transform([bf, Fl, h[l]]))
                    fr = dy.logistic(dy.affine_transform([bf, Fr, h[r]]))
                    c[k] = dy.cmult(i, u) + dy.cmult(fl, c[l]) + dy.cmult(fr, c[r])
                h[k] = dy.cmult(o, dy.tanh(c[k]))
                losses.append(dy.pickneglogsoftmax(S * h[k], label))
        return dy.esum(losses)


class LM(_System):
    """LSTM language model, one sentence at a time: full softmax affine(b, W, h_t) after each input."""

    def __init__(self, n_words, embed=128, hidden=256, autobatch=0):
        super().__init__(autobatch)
        self.E = self.pc.add_lookup_parameters((n_words, embed))
        self.rnn = dy.VanillaLSTMBuilder(1, embed, hidden, self.pc)
        self.pW = self.pc.add_parameters((n_words, hidden))
        self.pb = self.pc.add_parameters(n_words)
        self._init_training()

    def loss(self, batch):
        """The summed per-token loss of ``batch`` (list of (inputs, targets)) as one expression."""
        W, b = self.pW, self.pb
        losses = []
        for inputs, targets in batch:
            outs = self.rnn.initial_state().transduce([self.E[x] for x in inputs])
            losses.extend(dy.pickneglogsoftmax(dy.affine_transform([b, W, h]), y) for h, y in zip(outs, targets))
        return dy.esum(losses)


class BatchedLM(LM):
    """rnnlm-batch: the minibatch as one DyNet batch per time step (``lookup_batch``), sentences shorter than
    the longest padded with ``<s>`` and their losses masked to zero."""

    def __init__(self, n_words, pad=0, embed=128, hidden=256, autobatch=0):
        super().__init__(n_words, embed=embed, hidden=hidden, autobatch=autobatch)
        self.pad = pad
        self.name = f"dynet-batched-ab{autobatch}"

    def loss(self, batch):
        """The summed, masked per-token loss of ``batch`` (list of (inputs, targets)) as one expression."""
        W, b = self.pW, self.pb
        steps = max(len(x) for x, _ in batch)
        s = self.rnn.initial_state()
        losses = []
        for t in range(steps):
            x = [inp[t] if t < len(inp) else self.pad for inp, _ in batch]
            y = [tgt[t] if t < len(tgt) else self.pad for _, tgt in batch]
            s = s.add_input(dy.lookup_batch(self.E, x))
            loss = dy.pickneglogsoftmax_batch(dy.affine_transform([b, W, s.output()]), y)
            mask = [1.0 if t < len(inp) else 0.0 for inp, _ in batch]
            if min(mask) == 0.0:
                loss = loss * dy.reshape(dy.inputVector(mask), (1,), len(batch))
            losses.append(loss)
        return dy.sum_batches(dy.esum(losses))


def make(task, n_words, n_labels=None, seed=0, autobatch=0, batched=False, **dims):
    """The DyNet peer for ``task`` (``configure`` is called first if it was not); ``batched`` picks the
    hand-batched LM of rnnlm-batch; ``dims`` override ``tasks.HYPER``."""
    tasks._check_task(task)
    configure(autobatch, seed, MEM[task])
    dims = {**tasks.HYPER[task], **dims}
    if batched and task != "lm":
        raise ValueError(f"the hand-batched DyNet model exists for the lm task only, not {task!r}")
    if task == "tagger":
        return Tagger(n_words, n_labels, autobatch=autobatch, **dims)
    if task == "tree":
        return TreeLSTM(n_words, n_labels or tasks.N_TREE_LABELS, autobatch=autobatch, **dims)
    if batched:
        return BatchedLM(n_words, autobatch=autobatch, **dims)
    return LM(n_words, autobatch=autobatch, **dims)
