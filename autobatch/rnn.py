"""Recurrent blocks over one sentence (LSTM, GRU, Elman RNN, bidirectional pairs), batched across sentences
by the engine, with stacking, layer normalisation, learned initial states and the dropout family.

A step is a few fused nodes. The input's share of the gates, W_x x + b, depends on no earlier step, so the
agenda runs it for every position of every sentence as ONE matrix product before the recurrence starts (as
cuDNN does); each step then adds W_h h (one product for all gates, their weights stacked) and runs one fused
cell update. Weights and gate orders follow PyTorch (LSTM [i f g o], GRU [r z n]), so weights copy across.

Per layer and step:

    LSTM  x-part: affine(b, W_x, x)      gates = affine(x-part, W_h, h)   c = lstm_cell   h = lstm_hidden
    GRU   x-part: affine(b_x, W_x, x)    h-part = affine(b_h, W_h, h)     h = gru_hidden
    RNN   x-part: affine(b, W_x, x)      pre = affine(x-part, W_h, h)     h = rnn_hidden

With ``layer_norm`` each affine becomes a product and a ``layer_norm`` node whose bias input carries the
other term, LN(W_x x; a_x, b) and LN(W_h h; a_h, x-part). A zero initial state skips the first W_h h.
Recurrent dropout and zoneout add no node (they are attributes of the cell update); dropout adds one on x
(and, variational, one on h) per step; DropConnect two per sequence and layer (the masked weights). Given a
whole sequence, a cell runs as one scan node per layer, also under standard dropout (one dropout node on the
layer's input sequence, a mask per row). The LSTM's and GRU's scans also run recurrent dropout, zoneout and
variational dropout inside their loop, and the LSTM's layer norm; the GRU's layer norm and the Elman RNN's
regularisers run step by step, and so does DropConnect (whose masked weights differ per sequence) for every
cell.
"""
import numpy as np

from autobatch.kernels import backend

from . import errors
from . import graph as _graph
from .registry import (ADD, AFFINE, CONCAT, DROPOUT, ESUM, GRU_HIDDEN, GRU_SCAN, LAYER_NORM, LSTM_CELL, LSTM_HIDDEN,
    LSTM_LN_SCAN, LSTM_SCAN, MATMUL, RNN_HIDDEN, RNN_SCAN, ZEROS)  # globals: one cached look-up each, compiled
from .ops import Expression, _node, rows, sequence
from .regularize import check_p, given_noise, graph_noise, noise as _noise, p_attrs, training

_XVEC = (("xvec", True),)
_LN = (("eps", 1e-5),)
_AXIS0 = (("axis", 0),)


# ---- cell updates as functions (the blocks below build the same nodes directly) -----------------------------


def _cell_node(prim, op, args, width, rd, zo, noise, with_rd=True):
    g = _graph._current[0]
    rd, zo, train = check_p(op, "recurrent_dropout", rd), check_p(op, "zoneout", zo), training()
    rd, zt = (rd if train else 0.0), bool(zo) and train
    ids = tuple(_node(g, a) for a in args)
    need = width * (bool(rd) + zt)
    u = None
    if need:
        u = graph_noise(g, op).uniforms(need) if noise is None else given_noise(op, noise, need, g.n_sig[ids[0]].dtype)
    attrs = (("rd", rd), ("zo", zo), ("zt", zt)) if with_rd else (("zo", zo), ("zt", zt))
    return Expression(g, g.add(prim, ids, attrs, u))


def _width(op, x):
    g = _graph._current[0]
    shape = g.n_sig[_node(g, x)].shape
    if len(shape) != 1:  # the cell's shape rule would say so too, but the masks are sized from this first
        raise ValueError(errors.at(f"{op}: needs a vector, got shape {shape}"))
    return shape[0]


def _prev(op, h_prev, zoneout):
    if not zoneout:
        return ()
    if h_prev is None:
        raise ValueError(errors.at(f"{op}: zoneout needs h_prev"))
    return (h_prev,)


def lstm_cell(gates, c_prev, *, recurrent_dropout=0.0, zoneout=0.0, noise=None):
    """The LSTM memory from stacked gate pre-activations [i f g o]: c = f * c_prev + i * d(g) with d the
    recurrent dropout of the candidate g, then zoneout against c_prev. ``noise``: the uniforms, [d part | zoneout
    part], each of c's size (default: drawn from the graph's collection)."""
    return _cell_node(LSTM_CELL, "lstm_cell", (gates, c_prev), _width("lstm_cell", c_prev), recurrent_dropout,
                      zoneout, noise)


def lstm_hidden(gates, c, h_prev=None, *, zoneout=0.0, noise=None):
    """The LSTM output h = o * tanh(c) from stacked gate pre-activations [i f g o], zoned out against h_prev."""
    args = (gates, c) + _prev("lstm_hidden", h_prev, zoneout)
    return _cell_node(LSTM_HIDDEN, "lstm_hidden", args, _width("lstm_hidden", c), 0.0, zoneout, noise, with_rd=False)


def gru_hidden(xpart, hpart, h_prev, *, recurrent_dropout=0.0, zoneout=0.0, noise=None):
    """PyTorch's GRU update from xpart = W_i x + b_i and hpart = W_h h + b_h, stacked [r z n]:
    r, z = sigmoid(x_rz + h_rz); n = tanh(x_n + r * h_n); h = (1 - z) * d(n) + z * h_prev, zoned out."""
    return _cell_node(GRU_HIDDEN, "gru_hidden", (xpart, hpart, h_prev), _width("gru_hidden", h_prev),
                      recurrent_dropout, zoneout, noise)


def rnn_hidden(pre, h_prev=None, *, recurrent_dropout=0.0, zoneout=0.0, noise=None):
    """The Elman update h = d(tanh(pre)), zoned out against h_prev."""
    args = (pre,) + _prev("rnn_hidden", h_prev, zoneout)
    return _cell_node(RNN_HIDDEN, "rnn_hidden", args, _width("rnn_hidden", pre), recurrent_dropout, zoneout, noise)


# ---- blocks -------------------------------------------------------------------------------------------------


def _stacked(g, lids, name):
    """The parameter ``name`` of the layers ``lids``: one layer's node, or their concatenation along axis 0 (a
    constant of the graph). A module function, not a closure: compiled, a closure's scope holds the closure
    itself, a cycle that kept every graph (and its arrays) alive until the cycle collector's rare full pass."""
    if len(lids) == 1:
        return getattr(lids[0], name)
    return g.add(CONCAT, tuple([getattr(lid, name) for lid in lids]), _AXIS0)


class _Layer:
    """One layer's parameters (absent ones None) and, per graph, their node ids."""

    __slots__ = ("dim", "Wx", "Wh", "bx", "bh", "ax", "ah", "h0", "c0")
    PARAMS = ("Wx", "Wh", "bx", "bh", "ax", "ah", "h0", "c0")

    def __init__(self, dim, **params):
        self.dim = dim
        for k in self.PARAMS:
            setattr(self, k, params.get(k))

    def ids(self, g):
        return _Layer(self.dim, **{k: g.param_node(getattr(self, k)) for k in self.PARAMS
                                  if getattr(self, k) is not None})


class _Sequence:
    """What one sequence keeps from its start: the mode, and per layer the variational masks' uniforms and the
    weight matrices' node ids (DropConnect-masked for this example, or the parameters)."""

    __slots__ = ("train", "xnoise", "hnoise", "Wx", "Wh")

    def __init__(self, train, xnoise, hnoise, Wx, Wh):
        self.train, self.xnoise, self.hnoise, self.Wx, self.Wh = train, xnoise, hnoise, Wx, Wh


class _Recurrent:
    GATES = 1  # gates stacked in one product
    _gate_bias = None  # (gate index, initial bias): the forget gate of an LSTM, the reset gate of a GRU
    _separate_recurrent_bias = False  # a bias inside the recurrent part (GRU's b_hn sits inside r * (...))
    _has_memory = False  # a memory cell c besides h

    def __init__(self, pc, input_dim, hidden_dim, *, num_layers=1, combine="last", layer_norm=False,
                 learned_init=False, dropout=0.0, variational=False, recurrent_dropout=0.0, zoneout=0.0,
                 dropconnect=0.0, name=None):
        op = type(self).__name__
        if int(num_layers) < 1:
            raise ValueError(f"{op}: num_layers must be at least 1, got {num_layers}")
        if combine not in ("last", "sum"):
            raise ValueError(f"{op}: combine must be 'last' or 'sum', got {combine!r}")
        for k, v in (("input_dim", input_dim), ("hidden_dim", hidden_dim)):
            if int(v) < 1:
                raise ValueError(f"{op}: {k} must be positive, got {v}")
        self.pc, self.input_dim, self.hidden_dim = pc, int(input_dim), int(hidden_dim)
        self.output_dim, self.num_layers, self.combine = self.hidden_dim, int(num_layers), combine
        self.layer_norm, self.learned_init, self.variational = bool(layer_norm), bool(learned_init), bool(variational)
        self.dropout, self.recurrent_dropout, self.zoneout, self.dropconnect = [
            check_p(op, k, v) for k, v in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout),
                                           ("zoneout", zoneout), ("dropconnect", dropconnect))]
        prefix = name or f"{op.lower()}{len(pc.parameters())}"
        self.layers = [self._make_layer(pc, f"{prefix}.l{k}", self.input_dim if k == 0 else self.hidden_dim)
                       for k in range(self.num_layers)]
        self.noise = _noise(pc)
        H, zo = self.hidden_dim, self.zoneout
        # Per mode: the cell's attributes and how many uniforms its node and (LSTM) its output node take.
        self._attrs = {}
        for train in (False, True):
            rd, zt = (self.recurrent_dropout if train else 0.0), bool(zo) and train
            self._attrs[train] = ((("rd", rd), ("zo", zo), ("zt", zt)), H * (bool(rd) + zt),
                                  (("zo", zo), ("zt", zt)), H * zt)
        self._zeros_attrs = (("shape", (H,)), ("dtype", pc.dtype))
        self._graph = None  # (a weak ref to) the graph the node ids below belong to

    def _make_layer(self, pc, prefix, dim):
        G, H = self.GATES, self.hidden_dim
        bias = np.zeros(G * H)
        if self._gate_bias is not None:
            gate, value = self._gate_bias
            bias[gate * H:(gate + 1) * H] = value
        p = dict(Wx=pc.add_parameters((G * H, dim), name=f"{prefix}.Wx"),
                 Wh=pc.add_parameters((G * H, H), name=f"{prefix}.Wh"),
                 bx=pc.add_parameters((G * H,), init=bias, name=f"{prefix}.b"))
        if self._separate_recurrent_bias:
            p["bh"] = pc.add_parameters((G * H,), init="zeros", name=f"{prefix}.bh")
        if self.layer_norm:
            p["ax"] = pc.add_parameters((G * H,), init="ones", name=f"{prefix}.ln_x")
            p["ah"] = pc.add_parameters((G * H,), init="ones", name=f"{prefix}.ln_h")
        if self.learned_init:
            p["h0"] = pc.add_parameters((H,), init="zeros", name=f"{prefix}.h0")
            if self._has_memory:
                p["c0"] = pc.add_parameters((H,), init="zeros", name=f"{prefix}.c0")
        return _Layer(dim, **p)

    # ---- building ------------------------------------------------------------------------------------------

    def _ids(self, g):
        if self._graph is not g.ref:  # weak: a block must not keep its last graph alive
            self._graph = g.ref
            self._layer_ids = [layer.ids(g) for layer in self.layers]
            self._zero = None if self.learned_init else g.add(ZEROS, (), self._zeros_attrs)
        return self._layer_ids

    def _start(self, g):
        """A new sequence: its masks (drawn now, in training) and its initial h and c per layer."""
        ids, train, noise = self._ids(g), training(), self.noise
        seqs = []
        for layer, lid in zip(self.layers, ids):
            xnoise = hnoise = None
            Wx, Wh = lid.Wx, lid.Wh
            if train and self.variational and self.dropout:
                xnoise, hnoise = noise.uniforms(layer.dim), noise.uniforms(self.hidden_dim)
            if train and self.dropconnect:
                attrs = p_attrs(self.dropconnect)
                Wx = g.add(DROPOUT, (Wx,), attrs, noise.uniforms(layer.Wx.data.size).reshape(layer.Wx.shape))
                Wh = g.add(DROPOUT, (Wh,), attrs, noise.uniforms(layer.Wh.data.size).reshape(layer.Wh.shape))
            seqs.append(_Sequence(train, xnoise, hnoise, Wx, Wh))
        if self.learned_init:
            return seqs, [lid.h0 for lid in ids], [lid.c0 for lid in ids]
        return seqs, [self._zero] * len(ids), [self._zero] * len(ids)

    def _input(self, g, x):
        n = _node(g, x)
        shape = g.n_sig[n].shape
        if shape != (self.input_dim,):
            raise ValueError(errors.at(f"{type(self).__name__}: input of shape {shape}, expected "
                                       f"({self.input_dim},)"))
        return n

    def _xpart(self, g, layer, lid, seq, x):
        """b + W_x x' (or LN(W_x x'; a_x, b)), x' = x under dropout."""
        if seq.xnoise is not None:
            x = g.add(DROPOUT, (x,), p_attrs(self.dropout), seq.xnoise)
        elif seq.train and self.dropout:
            x = g.add(DROPOUT, (x,), p_attrs(self.dropout), self.noise.uniforms(layer.dim))
        if self.layer_norm:
            return g.add(LAYER_NORM, (g.add(MATMUL, (seq.Wx, x), _XVEC), lid.ax, lid.bx), _LN)
        return g.add(AFFINE, (lid.bx, seq.Wx, x), _XVEC)

    def _hpart(self, g, lid, seq, h, fresh, bias):
        """bias + W_h h' (or LN(W_h h'; a_h, bias)), h' = h under the variational mask; bias alone for a zero
        initial h (also with layer norm: LN of a zero vector is its bias)."""
        if fresh and not self.learned_init:
            return bias
        hh = h if seq.hnoise is None else g.add(DROPOUT, (h,), p_attrs(self.dropout), seq.hnoise)
        if self.layer_norm:
            return g.add(LAYER_NORM, (g.add(MATMUL, (seq.Wh, hh), _XVEC), lid.ah, bias), _LN)
        if fresh and hh == h and seq.Wh == lid.Wh:
            # A learned h0 and W_h are both parameters: their product is computed once for the graph and added
            # (affine does not take a per-example bias with a shared matrix and a shared vector).
            return g.add(ADD, (bias, g.add(MATMUL, (seq.Wh, hh), _XVEC)))
        return g.add(AFFINE, (bias, seq.Wh, hh), _XVEC)

    def _uniforms(self, n):
        return self.noise.uniforms(n) if n else None

    def _run(self, g, seqs, h, c, fresh, xs):
        """Layer by layer over the input node ids ``xs``; returns every layer's outputs and last h, c."""
        layers, ids, step = self.layers, self._ids(g), self._step
        outs = []
        for k in range(len(layers)):
            hk, ck, hs = h[k], c[k], []
            layer, lid, seq = layers[k], ids[k], seqs[k]
            first = fresh
            for x in xs:
                hk, ck = step(g, layer, lid, seq, x, hk, ck, first)
                first = False
                hs.append(hk)
            outs.append(hs)
            h[k], c[k], xs = hk, ck, hs
        return outs

    def _combined(self, g, outs):
        if self.combine == "last" or len(outs) == 1:
            return outs[-1]
        return [g.add(ESUM, col) for col in zip(*outs)]

    def initial_state(self):
        """The state before the first input: zeros, or the learned initial state. Masks of the sequence
        (variational dropout, DropConnect) are drawn now, in the mode now in force."""
        g = _graph._current[0]
        seqs, h, c = self._start(g)
        return RNNState(self, g, seqs, h, c, True)

    def transduce(self, xs, reverse=False):
        """The outputs (top layer, or with ``combine="sum"`` the sum over layers) for the inputs ``xs``: a list
        of vectors gives a list; a sequence (see ``ab.sequence``, ``E[ids]``) gives a sequence, computed by one
        scan node per layer where the cell allows it. ``reverse``: read right to left (outputs stay aligned
        with the inputs)."""
        g = _graph._current[0]
        if isinstance(xs, Expression) and xs.is_sequence:
            return self._transduce_sequence(g, xs, reverse)
        if reverse:
            return self.transduce(list(xs)[::-1])[::-1]
        xs = [self._input(g, x) for x in xs]
        if not xs:
            return []
        seqs, h, c = self._start(g)
        return [Expression(g, n) for n in self._combined(g, self._run(g, seqs, h, c, True, xs))]

    def _scans(self):
        """True when this block can run a whole sequence as one scan per layer: the cell has a scan (with layer
        norm: the LSTM), and no regulariser is in force that the scan does not run. Standard dropout is outside
        the recurrence: a new mask per step on a layer's input is one dropout node on the input sequence, a mask
        per row. The LSTM's and GRU's scans run recurrent dropout, zoneout and variational dropout;
        DropConnect's masked weights differ per sequence, so it runs step by step."""
        if (self._ln_scan if self.layer_norm else self._scan) is None:
            return False
        train = training()
        if train and self.dropconnect:
            return False
        inside = self.zoneout or (train and (self.recurrent_dropout or (self.dropout and self.variational)))
        return not inside or self._scan_regularised

    _scan = None  # the whole-sequence primitive of the cell, if it has one
    _ln_scan = None  # and with layer norm (gain a_h after W_h)
    _scan_params = ()  # its parameters after W_h (the GRU's b_h, which r multiplies in part)
    _scan_regularised = False  # whether its scan runs recurrent dropout, zoneout and variational dropout
    _zones = 1  # the states zoneout acts on (h; the LSTM's c and h)

    def _scan_regularisers(self, g, seq, layer, x, reverse):
        """A layer's input under dropout, the scan node's attributes for the regularisers in force, and its
        per-node uniforms (see ``kernels/scan.py``'s ``lstm_scan``). The uniforms are drawn in the step path's
        order (per step: the input's mask, the candidate's, then the zoneout of c (LSTM) and h), so that one
        seed gives the same masks either way."""
        train, zo = training(), self.zoneout
        rd, zt = (self.recurrent_dropout if train else 0.0), bool(zo) and train
        vd = self.dropout if train and self.variational else 0.0
        H = self.hidden_dim
        wx = layer.dim if train and self.dropout and not self.variational else 0  # a new input mask per step
        width = wx + H * (bool(rd) + self._zones * zt)
        u = None
        if width:
            n_rows = g.shape_of(x)[0]
            u = self.noise.uniforms(n_rows * width).reshape(n_rows, width)
            if reverse:  # the step path reads the sentence backwards
                u = u[::-1]
        if wx:
            x = g.add(DROPOUT, (x,), p_attrs(self.dropout), u[:, :wx])
        elif vd:  # one mask for every row
            x = g.add(DROPOUT, (x,), p_attrs(vd), backend.xp.tile(seq.xnoise, (g.shape_of(x)[0], 1)))
        if not (rd or zo or vd):
            return x, (), None
        aux = (u[:, wx:] if width > wx else None, seq.hnoise if vd else None)
        return x, (("rd", rd), ("zo", zo), ("zt", zt), ("vd", vd)), aux

    def _input_rows(self, X):
        shape = X.shape[1:]
        if shape != (self.input_dim,):
            raise ValueError(errors.at(f"{type(self).__name__}: input rows of shape {shape}, expected "
                                       f"({self.input_dim},)"))

    def _transduce_sequence(self, g, X, reverse):
        self._input_rows(X)
        if not self._scans():  # step by step over the rows, then packed back into a sequence
            return sequence(self.transduce(rows(X), reverse))
        dirs = (("dirs", (bool(reverse),)),)
        x, outs = _node(g, X), []  # (refuses a sequence of an earlier graph)
        # The variational masks, drawn first as in the step path; nothing else of _start is needed here.
        variational = self.variational and self.dropout and training()
        seqs = self._start(g)[0] if variational else [None] * self.num_layers
        for layer, lid, seq in zip(self.layers, self._ids(g), seqs):
            x, attrs, aux = self._scan_regularisers(g, seq, layer, x, reverse)
            x = self._scan_layer(g, [lid], x, dirs + attrs, aux)
            outs.append(x)
        if self.combine == "sum":
            for layer_out in outs[:-1]:
                x = g.add(ADD, (x, layer_out))
        return Expression(g, x)

    def _scan_layer(self, g, lids, x, attrs, aux=None):
        """One scan node over sequence ``x`` for the layers ``lids`` (one per direction; several directions
        run side by side, their parameters stacked — constants of the graph, computed once)."""
        init = ((_stacked(g, lids, "h0"),) + ((_stacked(g, lids, "c0"),) if self._has_memory else ())
                if self.learned_init else ())
        if self.layer_norm:  # one direction (see BiRNN._one_scan): LN(W_x x; a_x, b), then LN(W_h h; a_h) inside
            lid, = lids
            gates = g.add(LAYER_NORM, (g.add(MATMUL, (lid.Wx, x), _XVEC), lid.ax, lid.bx), _LN)
            return g.add(self._ln_scan, (gates, lid.Wh, lid.ah) + init, attrs + _LN, aux)
        gates = g.add(AFFINE, (_stacked(g, lids, "bx"), _stacked(g, lids, "Wx"), x), _XVEC)
        params = tuple([_stacked(g, lids, name) for name in ("Wh",) + self._scan_params])
        return g.add(self._scan, (gates,) + params + init, attrs, aux)

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_dim} -> {self.hidden_dim}, layers={self.num_layers}, "
                f"combine={self.combine!r})")


class RNNState:
    """A point in a sequence: ``h`` (and ``c`` for an LSTM) of the top layer, ``output`` (top layer, or the sum
    over layers with ``combine="sum"``), ``hs``/``cs`` per layer; ``add_input(x)`` returns the next state."""

    __slots__ = ("block", "g", "seqs", "_h", "_c", "fresh", "_out")

    def __init__(self, block, g, seqs, h, c, fresh, out=None):
        self.block, self.g, self.seqs, self._h, self._c, self.fresh, self._out = block, g, seqs, h, c, fresh, out

    def add_input(self, x):
        """The state after reading ``x`` (a vector of the block's input_dim)."""
        g = self.g
        if g is not _graph._current[0]:
            raise RuntimeError(errors.at("add_input: this state belongs to an earlier graph: renew_cg() was called "
                                         "after initial_state(); start a new sequence"))
        block = self.block
        h, c = list(self._h), list(self._c)
        outs = block._run(g, self.seqs, h, c, self.fresh, [block._input(g, x)])
        return RNNState(block, g, self.seqs, h, c, False, block._combined(g, outs)[0])

    @property
    def h(self):
        """The top layer's hidden state."""
        return Expression(self.g, self._h[-1])

    @property
    def c(self):
        """The top layer's memory cell (LSTM only)."""
        if not self.block._has_memory:
            raise AttributeError(f"{type(self.block).__name__} states have no memory cell c")
        return Expression(self.g, self._c[-1])

    @property
    def hs(self):
        """Every layer's hidden state, bottom first."""
        return [Expression(self.g, n) for n in self._h]

    @property
    def cs(self):
        """Every layer's memory cell, bottom first (LSTM only)."""
        if not self.block._has_memory:
            raise AttributeError(f"{type(self.block).__name__} states have no memory cell c")
        return [Expression(self.g, n) for n in self._c]

    @property
    def output(self):
        """The block's output at this step (the initial state's is its top-layer h)."""
        return self.h if self._out is None else Expression(self.g, self._out)


class LSTM(_Recurrent):
    """Long short-term memory: [i f g o] = W_x x + W_h h + b (each product over the four gates' stacked weights),
    c = sigmoid(f) * c + sigmoid(i) * tanh(g), h = sigmoid(o) * tanh(c); the forget gate's bias starts at
    ``forget_bias``. Nodes per step: 4 (3 on the recurrent path).

    Options: ``num_layers`` stacked layers whose ``transduce`` output is the top layer's (``combine="last"``) or
    the sum of every layer's (``"sum"``); ``layer_norm`` on both linear maps; ``learned_init`` trainable h0, c0
    (zeros otherwise); ``dropout`` p on each layer's input, a new mask per step, or with ``variational`` one mask
    per sequence on the input and one on the recurrent h; ``recurrent_dropout`` on the candidate g only;
    ``zoneout`` on h and c; ``dropconnect`` on W_x and W_h, one mask per sequence. ``name`` prefixes the
    parameters' names. Every regulariser is off in ``eval_mode()`` (zoneout then uses its expectation)."""

    GATES = 4
    _has_memory = True
    _scan = LSTM_SCAN
    _ln_scan = LSTM_LN_SCAN
    _scan_regularised = True
    _zones = 2

    def __init__(self, pc, input_dim, hidden_dim, *, forget_bias=1.0, **options):
        self._gate_bias = (1, float(forget_bias))
        super().__init__(pc, input_dim, hidden_dim, **options)

    def _step(self, g, layer, lid, seq, x, h, c, fresh):
        gates = self._hpart(g, lid, seq, h, fresh, self._xpart(g, layer, lid, seq, x))
        cell, ncell, hidden, nhidden = self._attrs[seq.train]
        c = g.add(LSTM_CELL, (gates, c), cell, self._uniforms(ncell))
        return g.add(LSTM_HIDDEN, (gates, c, h) if self.zoneout else (gates, c), hidden,
                     self._uniforms(nhidden)), c


class GRU(_Recurrent):
    """Gated recurrent unit, PyTorch's formulation: r, z = sigmoid(W_x x + b_x + W_h h + b_h) (their parts),
    n = tanh(W_xn x + b_xn + r * (W_hn h + b_hn)), h = (1 - z) * n + z * h. The reset gate's input bias starts
    at ``reset_bias``. Options as for LSTM (no c: zoneout on h; recurrent dropout on n). Nodes per step: 3 (2 on
    the recurrent path)."""

    GATES = 3
    _separate_recurrent_bias = True
    _scan = GRU_SCAN
    _scan_params = ("bh",)
    _scan_regularised = True

    def __init__(self, pc, input_dim, hidden_dim, *, reset_bias=-1.0, **options):
        self._gate_bias = (0, float(reset_bias))
        super().__init__(pc, input_dim, hidden_dim, **options)

    def _step(self, g, layer, lid, seq, x, h, c, fresh):
        xpart = self._xpart(g, layer, lid, seq, x)
        hpart = self._hpart(g, lid, seq, h, fresh, lid.bh)
        cell, ncell = self._attrs[seq.train][:2]
        return g.add(GRU_HIDDEN, (xpart, hpart, h), cell, self._uniforms(ncell)), None


class RNN(_Recurrent):
    """Elman RNN: h = tanh(W_x x + W_h h + b). Options as for LSTM (recurrent dropout on the new tanh value,
    zoneout on h). Nodes per step: 3 (2 on the recurrent path)."""

    _scan = RNN_SCAN

    def _step(self, g, layer, lid, seq, x, h, c, fresh):
        pre = self._hpart(g, lid, seq, h, fresh, self._xpart(g, layer, lid, seq, x))
        cell, ncell = self._attrs[seq.train][:2]
        return g.add(RNN_HIDDEN, (pre, h) if self.zoneout else (pre,), cell, self._uniforms(ncell)), None


class BiRNN:
    """Bidirectional transduction: ``fwd`` reads the sequence left to right, ``bwd`` right to left; the output at
    position i is [f_i; b_i]."""

    def __init__(self, fwd, bwd):
        if fwd.input_dim != bwd.input_dim:
            raise ValueError(f"BiRNN: forward input_dim {fwd.input_dim} differs from backward input_dim "
                             f"{bwd.input_dim}")
        self.fwd, self.bwd = fwd, bwd
        self.input_dim, self.output_dim = fwd.input_dim, fwd.output_dim + bwd.output_dim

    def _one_scan(self):
        f, b = self.fwd, self.bwd
        # Under a regulariser each direction draws its own masks, and layer norm normalises each direction's
        # gates on their own, so then the two run as scans of their own.
        train = training()
        own = any(r.layer_norm or r.zoneout or (train and (r.dropout or r.recurrent_dropout)) for r in (f, b))
        return (type(f) is type(b) and f._scans() and b._scans() and f.num_layers == b.num_layers == 1
                and f.hidden_dim == b.hidden_dim and f.learned_init == b.learned_init and not own)

    def transduce(self, xs):
        """[f_i; b_i] for every position i of ``xs`` (a list, or a sequence: then one sequence comes back)."""
        g = _graph._current[0]
        if not (isinstance(xs, Expression) and xs.is_sequence):
            xs = list(xs)
        elif self._one_scan():  # both directions in one scan node: one product per step for the two
            fwd, bwd = self.fwd, self.bwd
            lids = [fwd._ids(g)[0], bwd._ids(g)[0]]
            fwd._input_rows(xs)
            return Expression(g, fwd._scan_layer(g, lids, _node(g, xs), (("dirs", (False, True)),)))
        f, b = self.fwd.transduce(xs), self.bwd.transduce(xs, reverse=True)
        if isinstance(f, Expression):
            return Expression(g, g.add(CONCAT, (f.i, b.i), _AXIS0))
        return [Expression(g, g.add(CONCAT, (fi.i, bi.i), _AXIS0)) for fi, bi in zip(f, b)]
