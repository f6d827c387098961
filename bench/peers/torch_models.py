"""PyTorch peers: the BiLSTM tagger and the LSTM language model run ``nn.LSTM`` over packed sequences
(``pack_sequence(enforce_sorted=False)``, no padding computed); the Tree-LSTM runs all nodes of one height across
the minibatch's trees as one batched cell call (``tasks.level_plan``).

Training matches DyNet's trainer: Adam (lr 0.001, betas 0.9/0.999, eps 1e-8), the global gradient norm clipped
at 5, and so does the initialisation (``_dynet_init``). With ``sparse=True`` (the default) the embedding is
``nn.Embedding(sparse=True)`` updated by ``SparseAdam`` (only the rows a minibatch used, like DyNet's lazy
updates) and the rest by ``Adam``; with ``sparse=False`` one dense Adam updates every row. Uses 2 threads (the
machine's cores) unless told otherwise (``torch.set_num_threads`` after import). ``make(..., device="cuda")``
runs a model on the GPU (cuDNN's LSTM for the packed sequences); ids are built on the host and sent per batch.
"""
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_sequence

from bench.peers import tasks

torch.set_num_threads(2)

CLIP = 5.0


def _pack_ids(seqs, device):
    return pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted=False).to(device)


def _embed_packed(embedding, packed):
    # One lookup over the packed ids; the result keeps the packing (batch sizes and sort order).
    return PackedSequence(embedding(packed.data), packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)


class _System(nn.Module):
    """Optimiser, clipping and ``train_batch`` shared by the three models; subclasses define ``loss(batch)``."""

    def _init_training(self, sparse, gate_blocks=()):
        self._dynet_init(gate_blocks)
        self.sparse = sparse
        self.name = "torch" if sparse else "torch-dense"
        emb = [self.embedding.weight]
        rest = [p for p in self.parameters() if p is not self.embedding.weight]
        if sparse:
            self.opts = [torch.optim.SparseAdam(emb, lr=1e-3, eps=1e-8), torch.optim.Adam(rest, lr=1e-3, eps=1e-8)]
        else:
            self.opts = [torch.optim.Adam(emb + rest, lr=1e-3, eps=1e-8)]

    def _dynet_init(self, gate_blocks):
        # DyNet's initialisation, so every system starts alike: Glorot-uniform matrices and lookup tables
        # (+-sqrt(6 / (rows + cols)); a stacked parameter named in gate_blocks as three per-gate ones), biases
        # too, a bias of d as d x d (+-sqrt(3 / d)); LSTM biases 0 but the forget gate's 1 (DyNet's
        # VanillaLSTMBuilder adds 1 to that pre-activation).
        with torch.no_grad():
            for name, p in self.named_parameters():
                rows = p.shape[0] // (3 if name in gate_blocks else 1)
                cols = p.shape[1] if p.dim() == 2 else rows
                bound = math.sqrt(6.0 / (rows + cols))
                p.uniform_(-bound, bound)
                if name.startswith("lstm.bias"):
                    p.zero_()
                if name.startswith("lstm.bias_ih"):
                    H = p.shape[0] // 4
                    p[H : 2 * H] = 1.0  # torch's gate order is i, f, g, o

    @property
    def device(self):
        """Where the parameters live."""
        return self.embedding.weight.device

    def _clip(self):
        # clip_grad_norm_ rejects sparse gradients, so the global norm is summed here; a sparse gradient is
        # coalesced first (its duplicate rows summed), which SparseAdam would do anyway. Summed where the
        # gradients are: one value read per step, not one per parameter.
        sq = 0.0
        grads = []
        for p in self.parameters():
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                g = p.grad = g.coalesce()
                sq = sq + g._values().pow(2).sum()
            else:
                sq = sq + g.pow(2).sum()
            grads.append(g)
        norm = math.sqrt(float(sq))
        if norm > CLIP:
            for g in grads:
                g.mul_(CLIP / norm)

    def train_batch(self, batch):
        """One update on ``batch``; the summed loss of the minibatch before the update."""
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        self._clip()
        for opt in self.opts:
            opt.step()
        return float(loss.detach())


class Tagger(_System):
    """BiLSTM tagger: scores O tanh(H [f_t; b_t]) (no biases), cross-entropy summed over words and sentences."""

    def __init__(self, n_words, n_tags, embed=128, hidden=50, mlp=32, sparse=True):
        super().__init__()
        self.embedding = nn.Embedding(n_words, embed, sparse=sparse)
        self.lstm = nn.LSTM(embed, hidden, bidirectional=True)
        self.H = nn.Linear(2 * hidden, mlp, bias=False)
        self.O = nn.Linear(mlp, n_tags, bias=False)
        self._init_training(sparse)

    def loss(self, batch):
        """The summed cross-entropy of ``batch`` (list of (word ids, tag ids))."""
        words = _pack_ids([w for w, _ in batch], self.device)
        tags = _pack_ids([t for _, t in batch], self.device)  # same lengths, so the same packing order as the words
        out, _ = self.lstm(_embed_packed(self.embedding, words))
        return F.cross_entropy(self.O(torch.tanh(self.H(out.data))), tags.data, reduction="sum")


class LM(_System):
    """LSTM language model with a full softmax (with bias), cross-entropy summed over predicted tokens."""

    def __init__(self, n_words, embed=128, hidden=256, sparse=True):
        super().__init__()
        self.embedding = nn.Embedding(n_words, embed, sparse=sparse)
        self.lstm = nn.LSTM(embed, hidden)
        self.out = nn.Linear(hidden, n_words)
        self._init_training(sparse)

    def loss(self, batch):
        """The summed cross-entropy of ``batch`` (list of (inputs, targets))."""
        inputs = _pack_ids([x for x, _ in batch], self.device)
        targets = _pack_ids([y for _, y in batch], self.device)
        out, _ = self.lstm(_embed_packed(self.embedding, inputs))
        return F.cross_entropy(self.out(out.data), targets.data, reduction="sum")


class TreeLSTM(_System):
    """dynet-benchmark's binary Tree-LSTM (see padded_numpy.LevelTreeLSTM for the equations), one batched cell
    call per height; cross-entropy summed over every node of every tree.

    The states of all nodes live in one (nodes, 2H) buffer of [h, c] that each level writes into its own
    contiguous slice; autograd tracks the in-place writes, and the gathers of children only save indices.
    """

    def __init__(self, n_words, n_labels=5, embed=128, hidden=128, sparse=True):
        super().__init__()
        self.hidden = hidden
        self.embedding = nn.Embedding(n_words, embed, sparse=sparse)
        self.W = nn.Linear(embed, 3 * hidden)  # leaf i, o, u
        self.U = nn.Linear(2 * hidden, 3 * hidden, bias=False)  # internal i, o, u: its bias is W's, as in DyNet
        self.Fl = nn.Linear(hidden, hidden)
        self.Fr = nn.Linear(hidden, hidden, bias=False)  # one forget bias shared by both children, as in DyNet
        self.S = nn.Linear(hidden, n_labels, bias=False)
        self._init_training(sparse, gate_blocks=("W.weight", "W.bias", "U.weight"))

    def _cell(self, i, o, u, c):
        c = torch.sigmoid(i) * torch.tanh(u) + c
        return torch.cat([torch.sigmoid(o) * torch.tanh(c), c], dim=1)

    def loss(self, batch):
        """The summed cross-entropy over all nodes of ``batch`` (list of TreeItem)."""
        plan = tasks.level_plan(batch)
        H, dev = self.hidden, self.device
        hc = torch.zeros(plan.n, 2 * H, dtype=self.S.weight.dtype, device=dev)
        leaves = len(plan.leaf_words)
        i, o, u = self.W(self.embedding(torch.from_numpy(plan.leaf_words).to(dev))).chunk(3, dim=1)
        hc[:leaves] = self._cell(i, o, u, 0.0)
        for start, stop, left, right in plan.levels:
            m = stop - start
            kids = hc.index_select(0, torch.from_numpy(np.concatenate([left, right])).to(dev))
            hl, hr = kids[:m, :H], kids[m:, :H]
            i, o, u = F.linear(torch.cat([hl, hr], dim=1), self.U.weight, self.W.bias).chunk(3, dim=1)
            fl = torch.sigmoid(self.Fl(hl))
            fr = torch.sigmoid(F.linear(hr, self.Fr.weight, self.Fl.bias))
            hc[start:stop] = self._cell(i, o, u, fl * kids[:m, H:] + fr * kids[m:, H:])
        return F.cross_entropy(self.S(hc[:, :H]), torch.from_numpy(plan.labels).to(dev), reduction="sum")


def make(task, n_words, n_labels=None, seed=0, sparse=True, device="cpu", **dims):
    """The PyTorch peer for ``task`` (seeded with ``seed``) on ``device``; ``dims`` override ``tasks.HYPER``."""
    tasks._check_task(task)
    torch.manual_seed(seed)
    dims = {**tasks.HYPER[task], **dims}
    if task == "tagger":
        model = Tagger(n_words, n_labels, sparse=sparse, **dims)
    elif task == "tree":
        model = TreeLSTM(n_words, n_labels or tasks.N_TREE_LABELS, sparse=sparse, **dims)
    else:
        model = LM(n_words, sparse=sparse, **dims)
    return model.to(device)  # in place: the optimisers made in __init__ keep their parameters
