"""The hand-padded NumPy baseline of bench/chains.py: the same tanh-RNN language model, written the way one
batches by hand — pad every sentence to the longest, run time step by time step over the whole minibatch, mask
the loss — with its backward pass derived by hand (BPTT)."""
import numpy as np


class PaddedRNN:
    """h_t = tanh(W [E[w_t]; h_{t-1}] + b); loss = sum_t -log softmax(V h_t)[w_{t+1}], summed over sentences
    and divided by the minibatch size. Parameters are plain arrays (copied from an autobatch model)."""

    def __init__(self, E, W, b, V):
        self.E, self.W, self.b, self.V = E, W, b, V

    def loss_and_grads(self, sentences):
        """The minibatch loss and the gradients (dense dE) for ``sentences`` (lists of word ids)."""
        E, W, b, V = self.E, self.W, self.b, self.V
        B, H = len(sentences), W.shape[0]
        steps = max(len(s) for s in sentences) - 1
        if steps < 1:
            return 0.0, [np.zeros_like(p) for p in (E, W, b, V)]
        X = np.zeros((steps, B), np.intp)
        Y = np.zeros((steps, B), np.intp)
        M = np.zeros((steps, B), W.dtype)
        for j, s in enumerate(sentences):
            n = len(s) - 1
            X[:n, j], Y[:n, j], M[:n, j] = s[:-1], s[1:], 1
        xs = np.empty((steps, B, E.shape[1] + H), W.dtype)
        hs = np.empty((steps, B, H), W.dtype)
        h = np.zeros((B, H), W.dtype)
        for t in range(steps):
            xs[t, :, :E.shape[1]] = E[X[t]]
            xs[t, :, E.shape[1]:] = h
            h = hs[t] = np.tanh(xs[t] @ W.T + b)
        logits = hs.reshape(-1, H) @ V.T
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        rows = np.arange(len(p))
        weight = M.reshape(-1) / B
        loss = float(-(np.log(p[rows, Y.reshape(-1)]) * weight).sum())
        p[rows, Y.reshape(-1)] -= 1
        p *= weight[:, None]
        dV = p.T @ hs.reshape(-1, H)
        dH = (p @ V).reshape(steps, B, H)
        dW, db, dE = np.zeros_like(W), np.zeros_like(b), np.zeros_like(E)
        dh = np.zeros((B, H), W.dtype)
        for t in range(steps - 1, -1, -1):
            da = (dH[t] + dh) * (1 - hs[t] ** 2)
            dW += da.T @ xs[t]
            db += da.sum(0)
            dx = da @ W
            np.add.at(dE, X[t], dx[:, :E.shape[1]] * M[t][:, None])
            dh = dx[:, E.shape[1]:]
        return loss, [dE, dW, db, dV]
