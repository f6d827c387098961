"""A binary Tree-LSTM block (Tai et al. 2015, the N-ary variant with N = 2), written per tree and batched across
the nodes of many trees by the engine.

Gate pre-activations are stacked [i o u f_l f_r], with one forget gate per child:

    leaf      [i o u]           = W x + b_x                 c = i * u                          h = o * tanh(c)
    internal  [i o u f_l f_r]   = U [h_l; h_r] + b          c = i * u + f_l * c_l + f_r * c_r  h = o * tanh(c)

(sigmoid on i, o, f; tanh on u). Leaves take their input through their own transform (as in Tai et al.'s
constituency Tree-LSTM and dynet-benchmark's treenn: the word enters at the leaves only) and have no forget gates,
since they have no children. Nodes per tree node: a leaf 3 (affine, cell, output), an internal node 4 (concat,
ONE affine over [h_l; h_r], cell, output). Under the agenda, leaves of every tree in a minibatch run as one batch
per node kind, and internal nodes batch by their readiness, whatever the trees' shapes.
"""
import numpy as np

from . import errors
from . import graph as _graph
from . import registry as R
from .ops import Expression, _node

_XVEC = (("xvec", True),)
_AXIS0 = (("axis", 0),)


def tree_lstm_cell(gates, c_l=None, c_r=None):
    """The memory of a Tree-LSTM node from its gate pre-activations: a leaf's ``gates`` = [i o u] (3H) give
    c = sigmoid(i) * tanh(u); an internal node's [i o u f_l f_r] (5H) with its children's cells ``c_l``, ``c_r``
    give c = sigmoid(i) * tanh(u) + sigmoid(f_l) * c_l + sigmoid(f_r) * c_r. One node."""
    if (c_l is None) != (c_r is None):
        raise ValueError(errors.at("tree_lstm_cell: give both children's cells (an internal node) or neither "
                                   "(a leaf)"))
    g = _graph._current[0]
    args = (gates,) if c_l is None else (gates, c_l, c_r)
    return Expression(g, g.add(R.TREE_LSTM_CELL, tuple(_node(g, a) for a in args)))


def tree_lstm_hidden(gates, c):
    """The output of a Tree-LSTM node, h = sigmoid(o) * tanh(c), with o the second block of either gate layout.
    One node."""
    g = _graph._current[0]
    return Expression(g, g.add(R.TREE_LSTM_HIDDEN, (_node(g, gates), _node(g, c))))


class TreeState:
    """One tree node's state: its output ``h`` and memory cell ``c`` (Expressions of the current graph)."""

    __slots__ = ("h", "c")

    def __init__(self, h, c):
        self.h, self.c = h, c

    def __repr__(self):
        return f"TreeState(h={self.h!r}, c={self.c!r})"


class TreeLSTM:
    """Binary Tree-LSTM over ``input_dim``-vectors at the leaves with ``hidden_dim`` units (see the module's
    equations). Parameters: ``W`` (3H, input_dim) and ``b_x`` (3H) for leaves, ``U`` (5H, 2H) and ``b`` (5H) for
    internal nodes; the forget gates' biases start at ``forget_bias``. ``name`` prefixes the parameters' names.

    ``leaf(x)`` and ``compose(left, right)`` build one node each; ``transduce(tree, xs)`` builds a whole tree."""

    def __init__(self, pc, input_dim, hidden_dim, *, forget_bias=1.0, name=None):
        for k, v in (("input_dim", input_dim), ("hidden_dim", hidden_dim)):
            if int(v) < 1:
                raise ValueError(f"TreeLSTM: {k} must be positive, got {v}")
        self.pc, self.input_dim, self.hidden_dim = pc, int(input_dim), int(hidden_dim)
        self.output_dim = self.hidden_dim
        H = self.hidden_dim
        prefix = name or f"treelstm{len(pc.parameters())}"
        bias = np.zeros(5 * H)
        bias[3 * H:] = float(forget_bias)
        self.W = pc.add_parameters((3 * H, self.input_dim), name=f"{prefix}.W")
        self.b_x = pc.add_parameters((3 * H,), init="zeros", name=f"{prefix}.b_x")
        self.U = pc.add_parameters((5 * H, 2 * H), name=f"{prefix}.U")
        self.b = pc.add_parameters((5 * H,), init=bias, name=f"{prefix}.b")
        self._graph = None  # (a weak ref to) the graph the parameter node ids below belong to

    def _ids(self, g):
        if self._graph is not g.ref:  # weak: a block must not keep its last graph alive
            self._graph = g.ref
            self._pids = tuple(g.param_node(p) for p in (self.W, self.b_x, self.U, self.b))
        return self._pids

    def leaf(self, x):
        """The state of a leaf reading ``x`` (a vector of ``input_dim``)."""
        g = _graph._current[0]
        W, b_x = self._ids(g)[:2]
        n = _node(g, x)
        shape = g.n_sig[n].shape
        if shape != (self.input_dim,):
            raise ValueError(errors.at(f"TreeLSTM: leaf input of shape {shape}, expected ({self.input_dim},)"))
        gates = g.add(R.AFFINE, (b_x, W, n), _XVEC)
        c = g.add(R.TREE_LSTM_CELL, (gates,))
        return TreeState(Expression(g, g.add(R.TREE_LSTM_HIDDEN, (gates, c))), Expression(g, c))

    def compose(self, left, right):
        """The state of an internal node over its children's states ``left`` and ``right``."""
        g = _graph._current[0]
        U, b = self._ids(g)[2:]
        hl, hr = _node(g, left.h), _node(g, right.h)
        gates = g.add(R.AFFINE, (b, U, g.add(R.CONCAT, (hl, hr), _AXIS0)), _XVEC)
        c = g.add(R.TREE_LSTM_CELL, (gates, _node(g, left.c), _node(g, right.c)))
        return TreeState(Expression(g, g.add(R.TREE_LSTM_HIDDEN, (gates, c))), Expression(g, c))

    def transduce(self, tree, xs):
        """The states of every node of ``tree`` in post-order (children before parents, left before right, the
        root last; ``data.Tree.nodes()``'s order), the leaves reading ``xs`` left to right. ``tree`` is any
        object whose ``children`` is a list of 0 or 2 subtrees.

        With ``xs`` a list of vectors: a list of ``TreeState`` (h and c), a few nodes per tree node. With ``xs``
        a sequence (``E[ids]``): the sequence of every node's h, the whole tree ONE node (a Tree-LSTM scan that
        runs every tree of the batch together, level by level)."""
        if isinstance(xs, Expression) and xs.is_sequence:
            return self.scan(tree_shape(tree), xs)
        xs = list(xs)
        order, leaves = _post_order(tree)
        if len(xs) != leaves:
            raise ValueError(errors.at(f"TreeLSTM: the tree has {leaves} leaves but {len(xs)} inputs were given"))
        states, inputs, stack = [], iter(xs), []
        for node in order:
            if node.children:
                right, left = stack.pop(), stack.pop()
                state = self.compose(left, right)
            else:
                state = self.leaf(next(inputs))
            stack.append(state)
            states.append(state)
        return states

    def scan(self, shape, X):
        """Every node's h (a sequence, post-order) of the tree whose ``shape`` is given (``tree_shape``'s array)
        and whose leaves read the rows of the sequence ``X``: the whole tree as one node."""
        g = _graph._current[0]
        shape = np.asarray(shape, dtype=np.intp)
        leaves = int((shape[:, 0] < 0).sum())
        if X.shape != (leaves, self.input_dim):
            raise ValueError(errors.at(f"TreeLSTM: the tree has {leaves} leaves of input ({self.input_dim},), got "
                                       f"a sequence of shape {X.shape}"))
        return Expression(g, g.add(R.TREE_LSTM_SCAN, (_node(g, X),) + self._ids(g), (), shape, rows=len(shape)))

    def __repr__(self):
        return f"TreeLSTM({self.input_dim} -> {self.hidden_dim})"


def tree_shape(tree):
    """The tree's shape as the Tree-LSTM scan reads it: per node in post-order, its left and right children's
    post-order positions (-1 for a leaf), its height (a leaf's is 0) and its leaf number (-1 for an inner node)."""
    order, _ = _post_order(tree)
    index = {id(node): k for k, node in enumerate(order)}
    shape = np.full((len(order), 4), -1, np.intp)
    leaf = 0
    for k, node in enumerate(order):
        if node.children:
            left, right = index[id(node.children[0])], index[id(node.children[1])]
            shape[k, :3] = left, right, 1 + max(shape[left, 2], shape[right, 2])
        else:
            shape[k, 2:] = 0, leaf
            leaf += 1
    return shape


def _post_order(tree):
    """The nodes of ``tree`` children first, and its number of leaves; iterative, so depth is unbounded."""
    out, leaves, stack = [], 0, [(tree, False)]
    while stack:
        node, expanded = stack.pop()
        kids = node.children or ()
        if expanded or not kids:
            out.append(node)
            leaves += not kids
            continue
        if len(kids) != 2:
            raise ValueError(errors.at(f"TreeLSTM: a node has {len(kids)} children; a binary Tree-LSTM takes 0 "
                                       f"(a leaf) or 2"))
        stack.append((node, True))
        stack.append((kids[1], False))
        stack.append((kids[0], False))
    return out, leaves
