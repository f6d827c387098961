"""The binary Tree-LSTM block against a straightforward per-node reference of the same equations (PyTorch
autograd, float64: values and every gradient, input embeddings included), the same under every batching
strategy, batched across trees; and its errors."""
import numpy as np
import pytest

import autobatch as ab
from autobatch import data
from autobatch.tree import TreeLSTM, tree_lstm_cell, tree_lstm_hidden

try:
    import torch
except ImportError:  # a test-only reference: without it the comparison skips, the other tests still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch (the reference for this comparison) is missing")

D, H = 3, 4


def _leaf(word):
    return data.Tree(2, [], word)


def _trees():
    """Ragged binary trees: SST-like random ones, a lone leaf, and left- and right-branching chains."""
    trees = data.synthetic_trees(4, vocab_size=30, seed=3, mean_len=6, max_len=12)
    left = _leaf("w1")
    for w in ("w2", "w3", "w4"):
        left = data.Tree(1, [left, _leaf(w)])
    right = _leaf("w5")
    for w in ("w6", "w7"):
        right = data.Tree(3, [_leaf(w), right])
    return trees + [_leaf("w0"), left, right]


@pytest.fixture
def model():
    pc = ab.ParameterCollection(seed=1, dtype=np.float64)
    block = TreeLSTM(pc, D, H, forget_bias=0.5)
    rng = np.random.default_rng(0)
    for p in (block.b_x, block.b):  # non-zero biases, so a wrong bias slice cannot hide
        p.set_value(rng.normal(size=p.shape))
    X = pc.add_lookup_parameters((30, D), init=rng.normal(size=(30, D)), name="X")
    yield pc, block, X
    ab.ParameterCollection(dtype=np.float32)  # restore the float32 default for later tests


def _weights(trees, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=H) for _ in t.nodes()] for t in trees]


def run_ours(block, X, trees, weights, strategy="agenda"):
    """Every node's h, and the loss sum_nodes w . h + sum_roots sum(c), with its gradients accumulated."""
    ab.renew_cg(strategy=strategy)
    states = [block.transduce(t, [X[int(w[1:])] for w in t.leaves()]) for t in trees]
    terms = [ab.dot(s.h, ab.input_tensor(w)) for ss, ws in zip(states, weights) for s, w in zip(ss, ws)]
    terms += [ab.sum_elems(ss[-1].c) for ss in states]  # reach c directly too, not only through h
    loss = ab.esum(terms)
    loss.backward()
    return [np.stack([s.h.value() for s in ss]) for ss in states], loss.value()


def run_torch(block, X, trees, weights):
    """The same loss, node by node in PyTorch; returns every node's h, the loss and the gradients by name."""
    t = {p.name: torch.tensor(p.value(), requires_grad=True) for p in (block.W, block.b_x, block.U, block.b, X)}
    W, bx, U, b, E = (t[p.name] for p in (block.W, block.b_x, block.U, block.b, X))

    def node(tree, out):
        if not tree.children:
            g = W @ E[int(tree.word[1:])] + bx
            i, o, u = torch.sigmoid(g[:H]), torch.sigmoid(g[H:2 * H]), torch.tanh(g[2 * H:])
            c = i * u
        else:
            hl, cl = node(tree.children[0], out)
            hr, cr = node(tree.children[1], out)
            g = U @ torch.cat([hl, hr]) + b
            i, o, u = torch.sigmoid(g[:H]), torch.sigmoid(g[H:2 * H]), torch.tanh(g[2 * H:3 * H])
            fl, fr = torch.sigmoid(g[3 * H:4 * H]), torch.sigmoid(g[4 * H:])
            c = i * u + fl * cl + fr * cr
        h = o * torch.tanh(c)
        out.append(h)
        return h, c

    hs, loss = [], 0
    for tree, ws in zip(trees, weights):
        out = []
        _, c_root = node(tree, out)
        loss = loss + sum((h * torch.tensor(w)).sum() for h, w in zip(out, ws)) + c_root.sum()
        hs.append(torch.stack(out).detach().numpy())
    loss.backward()
    return hs, loss.item(), {k: v.grad.numpy() for k, v in t.items()}


@needs_torch
def test_values_and_gradients_match_the_reference(model):
    pc, block, X = model
    trees = _trees()
    weights = _weights(trees)
    hs, loss = run_ours(block, X, trees, weights)
    ref_hs, ref_loss, ref_grads = run_torch(block, X, trees, weights)
    for ours, ref in zip(hs, ref_hs):
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    for p in (block.W, block.b_x, block.U, block.b, X):
        np.testing.assert_allclose(p.grad, ref_grads[p.name], rtol=1e-9, atol=1e-12, err_msg=p.name)


def test_every_strategy_gives_the_same_values_and_gradients(model):
    pc, block, X = model
    trees = _trees()
    weights = _weights(trees, seed=2)
    results = {}
    for strategy in ("off", "depth", "agenda"):
        pc.zero_grad()
        hs, loss = run_ours(block, X, trees, weights, strategy)
        results[strategy] = (hs, loss, [p.grad for p in pc.parameters()])
    hs0, loss0, grads0 = results["off"]
    for strategy in ("depth", "agenda"):
        hs, loss, grads = results[strategy]
        assert loss == pytest.approx(loss0, rel=1e-12)
        for a, b in zip(hs, hs0):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        for a, b in zip(grads, grads0):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_nodes_of_different_trees_batch(model):
    pc, block, X = model
    trees = data.synthetic_trees(8, vocab_size=30, seed=5, mean_len=8, max_len=16)
    ab.renew_cg()
    states = [block.transduce(t, [X[int(w[1:])] for w in t.leaves()]) for t in trees]
    ab.forward(*[ss[-1].h for ss in states])
    g = ab.current_graph()
    leaf_batches = {g.batch_of(s.c.i) for t, ss in zip(trees, states) for n, s in zip(t.nodes(), ss) if not n.children}
    assert len(leaf_batches) == 1  # every leaf cell of every tree in one kernel call
    cells = sum(t.size() for t in trees)
    cell_batches = {g.batch_of(s.c.i) for ss in states for s in ss}
    assert len(cell_batches) <= 1 + max(t.height() for t in trees) < cells / 4


def test_transduce_returns_post_order_and_the_root_last(model):
    pc, block, X = model
    tree = data.parse_tree("(3 (2 w1) (4 (1 w2) (0 w3)))")
    ab.renew_cg()
    states = block.transduce(tree, [X[1], X[2], X[3]])
    assert len(states) == tree.size() == 5
    root = block.compose(states[0], block.compose(block.leaf(X[2]), block.leaf(X[3])))
    np.testing.assert_allclose(states[-1].h.value(), root.h.value(), rtol=1e-14)
    np.testing.assert_allclose(states[1].h.value(), block.leaf(X[2]).h.value(), rtol=1e-14)


def test_parameters_and_forget_bias(model):
    pc, block, X = model
    fresh = TreeLSTM(pc, D, H, name="t")
    assert [p.name for p in (fresh.W, fresh.b_x, fresh.U, fresh.b)] == ["t.W", "t.b_x", "t.U", "t.b"]
    assert fresh.W.shape == (3 * H, D) and fresh.U.shape == (5 * H, 2 * H)
    np.testing.assert_array_equal(fresh.b.value(), np.r_[np.zeros(3 * H), np.ones(2 * H)])
    assert repr(fresh) == f"TreeLSTM({D} -> {H})"


def test_block_errors(model):
    pc, block, X = model
    with pytest.raises(ValueError, match="TreeLSTM: hidden_dim must be positive, got 0"):
        TreeLSTM(pc, D, 0)
    ab.renew_cg()
    with pytest.raises(ValueError, match=r"TreeLSTM: leaf input of shape \(2,\), expected \(3,\) \(at .*test_tree"):
        block.leaf(ab.input_tensor(np.zeros(2)))
    with pytest.raises(ValueError, match="the tree has 3 leaves but 2 inputs were given"):
        block.transduce(data.parse_tree("(1 (2 a) (1 (2 b) (3 c)))"), [X[0], X[1]])

    class Node:
        def __init__(self, *children):
            self.children = list(children)

    with pytest.raises(ValueError, match="a node has 3 children; a binary Tree-LSTM takes 0"):
        block.transduce(Node(Node(), Node(), Node()), [X[0]] * 3)
    old = block.leaf(X[0])
    ab.renew_cg()
    with pytest.raises(RuntimeError, match="earlier graph"):
        block.compose(old, block.leaf(X[1]))


def test_cell_errors(pc64):
    ab.renew_cg()
    gates5, gates3, c = ab.input_tensor(np.zeros(10)), ab.input_tensor(np.zeros(6)), ab.input_tensor(np.zeros(2))
    with pytest.raises(ValueError, match="tree_lstm_cell: give both children's cells .* or neither"):
        tree_lstm_cell(gates5, c)
    with pytest.raises(ValueError, match=r"a leaf's gates \[i o u\] must be a vector of 3 x the state's size, "
                                         r"got shape \(10,\)"):
        tree_lstm_cell(gates5)
    with pytest.raises(ValueError, match=r"children's cells differ in shape: \(2,\) and \(3,\)"):
        tree_lstm_cell(gates5, c, ab.input_tensor(np.zeros(3)))
    with pytest.raises(ValueError, match=r"gates shape \(6,\) must be 5 x the state's shape \(2,\)"):
        tree_lstm_cell(gates3, c, c)
    with pytest.raises(ValueError, match=r"gates shape \(8,\) must be 3 \(a leaf\) or 5 \(a node\) x the cell's "
                                         r"shape \(2,\)"):
        tree_lstm_hidden(ab.input_tensor(np.zeros(8)), c)
    g = ab.current_graph()
    from autobatch import registry as R
    with pytest.raises(ValueError, match="takes the gates alone .* got 2 inputs"):
        g.add(R.TREE_LSTM_CELL, (gates5.i, c.i))
