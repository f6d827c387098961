"""Hand-batched NumPy peers, each with a backward pass derived by hand: the BiLSTM tagger and the LSTM language
model pad every sentence of a minibatch to the longest and mask the loss; the Tree-LSTM runs all nodes of one
height across the minibatch's trees as one batched cell (``tasks.level_plan``). Training is DyNet's Adam: global
gradient norm clipped at 5, embedding rows updated lazily (only the rows a minibatch used). Initialisation is
DyNet's too: Glorot-uniform matrices, lookup tables and biases (a bias of d as d x d), LSTM biases 0 but
the forget gate's 1.

Gate layout of the LSTMs: one (4H, in) input matrix, one (4H, H) recurrent matrix and one bias, gates
``i, f, o, g`` in that order. The models compute in the dtype they are made with (float64 for the gradient
checks in tests/test_peers.py).
"""
import numpy as np

from bench.peers import tasks


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # never overflows, unlike 1 / (1 + exp(-x))


def _log_softmax(s):
    s = s - s.max(-1, keepdims=True)
    return s - np.log(np.exp(s).sum(-1, keepdims=True))


def _glorot(rng, shape, dtype):
    # DyNet's default initialiser: uniform in +-sqrt(6 / (rows + cols)); a vector of d (a bias made with
    # add_parameters) counts as d x d, so +-sqrt(3 / d).
    scale = np.sqrt(6.0 / (sum(shape) if len(shape) == 2 else 2 * shape[0]))
    return rng.uniform(-scale, scale, shape).astype(dtype)


def _embeddings(rng, rows, dim, dtype):
    return _glorot(rng, (rows, dim), dtype)  # DyNet initialises a lookup table as one (rows, dim) matrix


def _lstm_bias(H, dtype):
    # DyNet's VanillaLSTMBuilder adds 1 to the forget gate's pre-activation; a bias that starts at 1 is the same.
    b = np.zeros(4 * H, dtype)
    b[H : 2 * H] = 1.0
    return b


def sparse_rows(ids, vals):
    """Sum the rows of ``vals`` that share an id: ``(unique ids, summed rows)``, an embedding's sparse gradient."""
    rows, inverse = np.unique(ids, return_inverse=True)
    out = np.zeros((len(rows), vals.shape[1]), vals.dtype)
    np.add.at(out, inverse, vals)
    return rows, out


# --------------------------------------------------------------------------- LSTM over a padded batch


def lstm_forward(G, U):
    """Run an LSTM over ``G`` (T, B, 4H), the input projections W x_t + b. Returns ``hs``, ``cs`` (T+1, B, H),
    index 0 the zero initial state, and the gate activations (T, B, 4H) that the backward pass needs."""
    T, B, H4 = G.shape
    H = H4 // 4
    hs = np.zeros((T + 1, B, H), G.dtype)
    cs = np.zeros((T + 1, B, H), G.dtype)
    acts = np.empty_like(G)
    for t in range(T):
        a = G[t] + hs[t] @ U.T if t else G[t]  # the initial state is zero: skip its product
        act = acts[t]
        act[:, : 3 * H] = _sigmoid(a[:, : 3 * H])
        act[:, 3 * H :] = np.tanh(a[:, 3 * H :])
        i, f, o, g = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        cs[t + 1] = f * cs[t] + i * g
        hs[t + 1] = o * np.tanh(cs[t + 1])
    return hs, cs, acts


def lstm_backward(dH, hs, cs, acts, U):
    """Backpropagate ``dH`` (T, B, H), the loss gradient of every output, through ``lstm_forward``: returns the
    gradient of the gate pre-activations (T, B, 4H) (that is, of G) and of U.

    Padding at the end of a sequence needs no masking here: outputs there get no gradient, and nothing flows
    backwards from a padded step into a real one because every later step is padding too.
    """
    T, B, H = dH.shape
    dA = np.empty_like(acts)
    dh = np.zeros((B, H), dH.dtype)
    dc = np.zeros((B, H), dH.dtype)
    for t in range(T - 1, -1, -1):
        act = acts[t]
        i, f, o, g = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        tc = np.tanh(cs[t + 1])
        dh = dH[t] + dh
        dc = dc + dh * o * (1 - tc * tc)
        da = dA[t]
        da[:, :H] = dc * g * i * (1 - i)
        da[:, H : 2 * H] = dc * cs[t] * f * (1 - f)
        da[:, 2 * H : 3 * H] = dh * tc * o * (1 - o)
        da[:, 3 * H :] = dc * i * (1 - g * g)
        dc = dc * f
        dh = da @ U
    dU = dA[1:].reshape(-1, 4 * H).T @ hs[1:-1].reshape(-1, H)  # step 0 read the zero state
    return dA, dU


def _pad(seqs, dtype=np.intp):
    # (T, B) ids padded with 0 and the (T, B) boolean mask of real positions.
    lengths = np.array([len(s) for s in seqs])
    T, B = int(lengths.max()), len(seqs)
    out = np.zeros((T, B), dtype)
    for j, s in enumerate(seqs):
        out[: len(s), j] = s
    return out, np.arange(T)[:, None] < lengths[None, :], lengths


# --------------------------------------------------------------------------- Adam


class Adam:
    """DyNet's AdamTrainer: lr 0.001, betas 0.9/0.999, eps 1e-8, the global gradient norm clipped at ``clip``;
    a gradient given as ``(rows, values)`` updates only those rows and their moments (sparse updates)."""

    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, clip=5.0):
        self.params, self.lr, self.b1, self.b2, self.eps, self.clip, self.t = params, lr, b1, b2, eps, clip, 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    def update(self, grads):
        """One step from ``grads`` (name -> dense array or (rows, values))."""
        self.t += 1
        norm = np.sqrt(sum(float(np.vdot(g[1], g[1]) if isinstance(g, tuple) else np.vdot(g, g))
                           for g in grads.values()))
        scale = min(1.0, self.clip / max(norm, 1e-12))
        lr = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        b1, b2 = self.b1, self.b2
        for k, g in grads.items():
            p, m, v = self.params[k], self.m[k], self.v[k]
            if isinstance(g, tuple):
                rows, g = g
                g = g * scale
                m[rows] = b1 * m[rows] + (1 - b1) * g
                v[rows] = b2 * v[rows] + (1 - b2) * g * g
                p[rows] -= lr * m[rows] / (np.sqrt(v[rows]) + self.eps)
            else:
                g = g * scale
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p -= lr * m / (np.sqrt(v) + self.eps)


class _System:
    """``train_batch`` for a model with ``loss_and_grads``: one Adam update, returns the minibatch loss."""

    name = "numpy"

    def train_batch(self, batch):
        """One update on ``batch``; the summed loss of the minibatch before the update."""
        loss, grads = self.loss_and_grads(batch)
        self.opt.update(grads)
        return loss


# --------------------------------------------------------------------------- the three models


class PaddedTagger(_System):
    """BiLSTM tagger: tag scores O tanh(H [f_t; b_t]) (no biases), loss summed over words and sentences.

    The backward LSTM reads each sentence reversed in place (its own length), so both directions keep their
    padding at the end; ``rev`` maps positions between the two orders (a permutation per column).
    """

    def __init__(self, n_words, n_tags, seed=0, embed=128, hidden=50, mlp=32, dtype=np.float32):
        rng = np.random.default_rng(seed)
        H = hidden
        self.params = p = dict(
            E=_embeddings(rng, n_words, embed, dtype),
            Wf=_glorot(rng, (4 * H, embed), dtype), Uf=_glorot(rng, (4 * H, H), dtype), bf=_lstm_bias(H, dtype),
            Wb=_glorot(rng, (4 * H, embed), dtype), Ub=_glorot(rng, (4 * H, H), dtype), bb=_lstm_bias(H, dtype),
            Hm=_glorot(rng, (mlp, 2 * H), dtype), O=_glorot(rng, (n_tags, mlp), dtype),
        )  # fmt: skip
        self.opt = Adam(p)

    def loss_and_grads(self, batch):
        """The summed loss of ``batch`` (list of (word ids, tag ids)) and the gradients (E's as sparse rows)."""
        p = self.params
        X, M, lengths = _pad([w for w, _ in batch])
        Y, _, _ = _pad([t for _, t in batch])
        T, B = X.shape
        H = p["Uf"].shape[1]
        tt = np.arange(T)[:, None]
        cols = np.broadcast_to(np.arange(B)[None, :], (T, B))
        rev = np.where(M, lengths[None, :] - 1 - tt, tt)
        Xf = p["E"][X]
        Xb = Xf[rev, cols]
        hf, cf, af = lstm_forward(Xf @ p["Wf"].T + p["bf"], p["Uf"])
        hb, cb, ab = lstm_forward(Xb @ p["Wb"].T + p["bb"], p["Ub"])
        Z = np.concatenate([hf[1:], hb[1:][rev, cols]], axis=2)
        A = np.tanh(Z @ p["Hm"].T)
        logp = _log_softmax(A @ p["O"].T)
        loss = float(-(logp[tt, cols, Y] * M).sum())

        dS = np.exp(logp)
        dS[tt, cols, Y] -= 1
        dS *= M[..., None]
        nt, mlp = dS.shape[-1], A.shape[-1]
        dO = dS.reshape(-1, nt).T @ A.reshape(-1, mlp)
        dA = (dS @ p["O"]) * (1 - A * A)
        dHm = dA.reshape(-1, mlp).T @ Z.reshape(-1, 2 * H)
        dZ = dA @ p["Hm"]
        dhb = np.empty_like(dZ[..., H:])
        dhb[rev, cols] = dZ[..., H:]
        dGf, dUf = lstm_backward(dZ[..., :H], hf, cf, af, p["Uf"])
        dGb, dUb = lstm_backward(dhb, hb, cb, ab, p["Ub"])
        emb = Xf.shape[-1]
        dX = dGf @ p["Wf"]
        dX[rev, cols] += dGb @ p["Wb"]
        grads = dict(
            E=sparse_rows(X[M], dX[M]),
            Wf=dGf.reshape(-1, 4 * H).T @ Xf.reshape(-1, emb), Uf=dUf, bf=dGf.sum((0, 1)),
            Wb=dGb.reshape(-1, 4 * H).T @ Xb.reshape(-1, emb), Ub=dUb, bb=dGb.sum((0, 1)),
            Hm=dHm, O=dO,
        )  # fmt: skip
        return loss, grads


class PaddedLM(_System):
    """LSTM language model with a full softmax (V h + c); loss summed over predicted tokens and sentences."""

    def __init__(self, n_words, seed=0, embed=128, hidden=256, dtype=np.float32):
        rng = np.random.default_rng(seed)
        H = hidden
        self.params = p = dict(
            E=_embeddings(rng, n_words, embed, dtype),
            W=_glorot(rng, (4 * H, embed), dtype), U=_glorot(rng, (4 * H, H), dtype), b=_lstm_bias(H, dtype),
            V=_glorot(rng, (n_words, H), dtype), c=_glorot(rng, (n_words,), dtype),
        )  # fmt: skip
        self.opt = Adam(p)

    def loss_and_grads(self, batch):
        """The summed loss of ``batch`` (list of (inputs, targets)) and the gradients (E's as sparse rows)."""
        p = self.params
        X, M, _ = _pad([x for x, _ in batch])
        Y, _, _ = _pad([y for _, y in batch])
        T, B = X.shape
        H = p["U"].shape[1]
        Xe = p["E"][X]
        hs, cs, acts = lstm_forward(Xe @ p["W"].T + p["b"], p["U"])
        Hh = hs[1:].reshape(-1, H)
        logp = _log_softmax(Hh @ p["V"].T + p["c"])
        rows, y, m = np.arange(T * B), Y.reshape(-1), M.reshape(-1)
        loss = float(-(logp[rows, y] * m).sum())

        dS = np.exp(logp, out=logp)  # the log-probabilities are no longer needed: reuse their memory
        dS[rows, y] -= 1
        dS *= m[:, None]
        dV = dS.T @ Hh
        dc = dS.sum(0)
        dG, dU = lstm_backward((dS @ p["V"]).reshape(T, B, H), hs, cs, acts, p["U"])
        dX = dG @ p["W"]
        grads = dict(E=sparse_rows(X[M], dX[M]), W=dG.reshape(-1, 4 * H).T @ Xe.reshape(-1, Xe.shape[-1]),
                     U=dU, b=dG.sum((0, 1)), V=dV, c=dc)
        return loss, grads


class LevelTreeLSTM(_System):
    """dynet-benchmark's binary Tree-LSTM, level-batched by height; loss -log softmax(S h)[label] at every node.

    Leaf:     [i; o; u] = [sig; sig; tanh](W x + b),                      c = i*u,                   h = o*tanh(c)
    Internal: [i; o; u] = [sig; sig; tanh](U [h_l; h_r] + b), f_k = sig(F_k h_k + b_f),
              c = i*u + f_l*c_l + f_r*c_r,                                                         h = o*tanh(c)
    """

    def __init__(self, n_words, n_labels=5, seed=0, embed=128, hidden=128, dtype=np.float32):
        rng = np.random.default_rng(seed)
        H = hidden
        self.params = p = dict(
            E=_embeddings(rng, n_words, embed, dtype),
            # one Glorot parameter per gate, as treenn makes them, stacked
            W=np.concatenate([_glorot(rng, (H, embed), dtype) for _ in "iou"]),
            U=np.concatenate([_glorot(rng, (H, 2 * H), dtype) for _ in "iou"]),
            b=np.concatenate([_glorot(rng, (H,), dtype) for _ in "iou"]),
            Fl=_glorot(rng, (H, H), dtype), Fr=_glorot(rng, (H, H), dtype), bf=_glorot(rng, (H,), dtype),
            S=_glorot(rng, (n_labels, H), dtype),
        )  # fmt: skip
        self.opt = Adam(p)

    @staticmethod
    def _gates(a, H):
        return _sigmoid(a[:, :H]), _sigmoid(a[:, H : 2 * H]), np.tanh(a[:, 2 * H :])

    def loss_and_grads(self, batch):
        """The summed loss of ``batch`` (list of TreeItem) and the gradients (E's as sparse rows)."""
        p = self.params
        plan = tasks.level_plan(batch)
        H = p["Fl"].shape[0]
        h = np.empty((plan.n, H), p["W"].dtype)
        c = np.empty_like(h)
        n0 = len(plan.leaf_words)
        x = p["E"][plan.leaf_words]
        i, o, u = self._gates(x @ p["W"].T + p["b"], H)
        c[:n0] = i * u
        h[:n0] = o * np.tanh(c[:n0])
        saved = [(i, o, u)]
        for start, stop, left, right in plan.levels:
            hlr = np.concatenate([h[left], h[right]], axis=1)
            i, o, u = self._gates(hlr @ p["U"].T + p["b"], H)
            fl = _sigmoid(hlr[:, :H] @ p["Fl"].T + p["bf"])
            fr = _sigmoid(hlr[:, H:] @ p["Fr"].T + p["bf"])
            c[start:stop] = i * u + fl * c[left] + fr * c[right]
            h[start:stop] = o * np.tanh(c[start:stop])
            saved.append((i, o, u, fl, fr, hlr))
        logp = _log_softmax(h @ p["S"].T)
        rows = np.arange(plan.n)
        loss = float(-logp[rows, plan.labels].sum())

        dS = np.exp(logp)
        dS[rows, plan.labels] -= 1
        g = {k: np.zeros_like(v) for k, v in p.items() if k != "E"}
        g["S"] = dS.T @ h
        dh = dS @ p["S"]
        dc = np.zeros_like(c)
        # Top level first: when a level runs, every parent above it has added into its dh and dc.
        for (start, stop, left, right), (i, o, u, fl, fr, hlr) in zip(plan.levels[::-1], saved[:0:-1]):
            tc = np.tanh(c[start:stop])
            dhk = dh[start:stop]
            dck = dc[start:stop] + dhk * o * (1 - tc * tc)
            da = np.concatenate([dck * u * i * (1 - i), dhk * tc * o * (1 - o), dck * i * (1 - u * u)], axis=1)
            dfl = dck * c[left] * fl * (1 - fl)
            dfr = dck * c[right] * fr * (1 - fr)
            # A node has one parent, so within a level left and right hold distinct positions: plain += is exact.
            dc[left] += dck * fl
            dc[right] += dck * fr
            g["U"] += da.T @ hlr
            g["b"] += da.sum(0)
            g["Fl"] += dfl.T @ hlr[:, :H]
            g["Fr"] += dfr.T @ hlr[:, H:]
            g["bf"] += dfl.sum(0) + dfr.sum(0)
            dhlr = da @ p["U"]
            dh[left] += dhlr[:, :H] + dfl @ p["Fl"]
            dh[right] += dhlr[:, H:] + dfr @ p["Fr"]
        i, o, u = saved[0]
        tc = np.tanh(c[:n0])
        dck = dc[:n0] + dh[:n0] * o * (1 - tc * tc)
        da = np.concatenate([dck * u * i * (1 - i), dh[:n0] * tc * o * (1 - o), dck * i * (1 - u * u)], axis=1)
        g["W"] = da.T @ x
        g["b"] += da.sum(0)
        g["E"] = sparse_rows(plan.leaf_words, da @ p["W"])
        return loss, g


def make(task, n_words, n_labels=None, seed=0, dtype=np.float32, **dims):
    """The NumPy peer for ``task``; ``dims`` override ``tasks.HYPER`` (embed, hidden, mlp)."""
    tasks._check_task(task)
    dims = {**tasks.HYPER[task], **dims}
    if task == "tagger":
        return PaddedTagger(n_words, n_labels, seed=seed, dtype=dtype, **dims)
    if task == "tree":
        return LevelTreeLSTM(n_words, n_labels or tasks.N_TREE_LABELS, seed=seed, dtype=dtype, **dims)
    return PaddedLM(n_words, seed=seed, dtype=dtype, **dims)
