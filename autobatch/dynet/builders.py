"""DyNet's RNN builders and softmax builders, with DyNet's parameter layout, gate order and bias conventions,
so weights read from DyNet give DyNet's numbers.

- ``VanillaLSTMBuilder`` (``LSTMBuilder``): per layer W_x (4H, X), W_h (4H, H), b (4H,) with gates [i f o g]
  and 1 added to the forget gate's pre-activation; optional layer norm (DyNet's: on W_x x, W_h h and c).
- ``CoupledLSTMBuilder``: peephole LSTM with f = 1 - i; 11 parameters per layer (x2i h2i c2i bi x2o h2o c2o bo
  x2c h2c bc). ``FastLSTMBuilder``: the same without the peepholes. ``SparseLSTMBuilder``: vanilla with
  weight masks. ``GRUBuilder``: h = (1 - z) h' + z tanh(b_h + W x + U (r * h')). ``SimpleRNNBuilder``:
  h = tanh(b + W x + U h').
- A first step starts from zeros, which is what DyNet's "no previous state" formulas compute.

Unbatched vanilla LSTM steps run on the engine's fused cell kernels: the gate blocks are permuted to the
engine's [i f g o] once per graph (a function of the parameters alone, so it is computed once and shared by
every example), the forget bias folded into the bias. Everything else is composed from DyNet ops.
"""
import numpy as np

from .. import graph as _graph
from .. import parameters as _core
from .. import registry as R
from . import ops as dy
from .expression import Expression, align, node, select
from .params import rng


def _current():
    return _graph._current[0]


class RNNState:
    """A builder's state after some inputs: per layer h (and c for LSTMs)."""

    def __init__(self, builder, hs, cs, prev=None, masks=None):
        self._b, self._hs, self._cs, self._prev, self._masks = builder, hs, cs, prev, masks

    def add_input(self, x):
        """The state after one more input."""
        return self._b._add(self, x)

    def add_inputs(self, xs):
        """The states after each input in turn (one scan node per layer where the cell has one)."""
        xs = list(xs)
        if self._b._scannable(self, xs):
            return self._b._add_many(self, xs)
        return self._steps(xs)

    def _steps(self, xs):
        out, s = [], self
        for x in xs:
            s = self._b._add(s, x)
            out.append(s)
        return out

    def transduce(self, xs):
        """The outputs after each input in turn."""
        return [s.output() for s in self.add_inputs(xs)]

    def output(self):
        """The top layer's h."""
        return self._hs[-1] if self._hs is not None else None

    def h(self):
        """Every layer's h."""
        return list(self._hs) if self._hs is not None else []

    def s(self):
        """Every layer's state: c's then h's for LSTMs, h's otherwise."""
        return (list(self._cs) if self._cs is not None else []) + self.h() if self._b._memory else self.h()

    def set_h(self, es=None):
        """A state with these h's (c kept, or zeros)."""
        es = list(es)
        return RNNState(self._b, es, self._cs if self._cs is not None else self._b._zeros(), self, self._masks)

    def set_s(self, es=None):
        """A state with these c's (and h's, if 2 x layers are given)."""
        es = list(es)
        L = self._b.layers
        if not self._b._memory:
            return RNNState(self._b, es, None, self, self._masks)
        if len(es) not in (L, 2 * L):
            raise ValueError(f"set_s expects {L} or {2 * L} expressions, got {len(es)}")
        hs = es[L:] if len(es) == 2 * L else (self._hs if self._hs is not None else self._b._zeros())
        return RNNState(self._b, hs, es[:L], self, self._masks)

    def prev(self):
        """The state before the last input."""
        return self._prev

    def b(self):
        """The builder."""
        return self._b


class _ScannedState(RNNState):
    """A state computed by a whole-sequence scan: its h's are rows of the scan's output. Anything else it is
    asked for (c, a further input, set_s) comes from the same inputs stepped one by one, built on demand."""

    def __init__(self, builder, seqs, t, chain):
        self._b, self._seqs, self._t, self._chain, self._out = builder, seqs, t, chain, None

    def _row(self, layer):
        g = _current()
        return Expression(g, g.add(R.PICK_ROW, (self._seqs[layer],), (), self._t))

    def output(self):
        """The top layer's h (a row of the scan's output)."""
        if self._out is None:
            self._out = self._row(-1)
        return self._out

    def h(self):
        """Every layer's h."""
        return [self._row(l) for l in range(len(self._seqs) - 1)] + [self.output()]

    def _stepped(self):
        chain = self._chain
        if chain[2] is None:
            chain[2] = chain[0]._steps(chain[1])
        return chain[2][self._t]

    _hs = property(lambda self: self._stepped()._hs)
    _cs = property(lambda self: self._stepped()._cs)
    _masks = property(lambda self: None)
    _prev = property(lambda self: self._chain[0] if self._t == 0 else self._stepped()._prev)


class _RNNBuilder:
    """Layers of one cell type; ``initial_state()`` starts a sequence in the current graph."""

    NAME = "rnn-builder"
    _memory = False

    def __init__(self, layers, input_dim, hidden_dim, model, *extra):
        self.layers, self.input_dim, self.hidden_dim = int(layers), int(input_dim), int(hidden_dim)
        self.spec = (layers, input_dim, hidden_dim) + extra
        self._pc = model.add_subcollection(self.NAME)
        self._params = [self._layer(self._pc, self.input_dim if l == 0 else self.hidden_dim)
                        for l in range(self.layers)]
        self._graph, self._exprs = None, None
        self.dropout_rate = self.dropout_rate_h = self.dropout_rate_c = 0.0

    @classmethod
    def from_spec(cls, spec, model):
        """Rebuild from ``spec`` (what ``dy.save`` stores)."""
        return cls(*spec[:3], model, *spec[3:])

    def param_collection(self):
        """The subcollection holding this builder's parameters."""
        return self._pc

    def get_parameters(self):
        """Per layer, the Parameters in DyNet's order."""
        return [list(ps) for ps in self._params]

    def get_parameter_expressions(self):
        """Per layer, the parameters as expressions of the current graph (after ``initial_state``)."""
        if self._graph is not _current():
            raise ValueError("Attempt to use a stale expression, renew CG and/or call initial_state before "
                             "accessing the builder's parameter expressions")
        return [list(es) for es in self._exprs]

    def set_dropout(self, d):
        """Dropout on each layer's input and recurrent state (one mask per sequence, DyNet's)."""
        self.dropout_rate = self.dropout_rate_h = self.dropout_rate_c = float(d)

    def set_dropouts(self, d, d_h):
        """Dropout rates on the input (``d``) and the recurrent h (``d_h``)."""
        self.dropout_rate, self.dropout_rate_h = float(d), float(d_h)

    def disable_dropout(self):
        """Turn dropout off."""
        self.dropout_rate = self.dropout_rate_h = self.dropout_rate_c = 0.0

    def new_graph(self, update=True):
        """Bind the parameters to the current graph (``update=False``: no gradient to them)."""
        g = _current()
        self._graph = g
        self._exprs = [[p.expr() if update else dy.const_parameter(p) for p in ps] for ps in self._params]
        self._prepared = {}

    def initial_state(self, vecs=None, update=True):
        """The start of a sequence (zeros, or the states ``vecs`` as for ``set_s``)."""
        if self._graph is not _current():
            self.new_graph(update)
        s = RNNState(self, None, None)
        return s.set_s(vecs) if vecs is not None else s

    def _zeros(self):
        return [dy.zeros(self.hidden_dim) for _ in range(self.layers)]

    _scan = None  # the engine's whole-sequence primitive for this cell, if it has one

    def _scannable(self, state, xs):
        """Whether ``xs`` can run as one scan per layer: a fresh state, no dropout, single (unbatched) inputs
        of one kind."""
        if self._scan is None or not self._plain() or state._hs is not None or state._cs is not None or len(xs) < 2:
            return False
        g = _current()
        sigs = [g.n_sig[node(g, x)] for x in xs]
        return not sigs[0].ragged and all(s.kp == sigs[0].kp for s in sigs)

    def _plain(self):
        return not (self.dropout_rate or self.dropout_rate_h)

    def _add_many(self, state, xs):
        if self._graph is not _current():
            raise ValueError("Using stale builder: call initial_state() after renew_cg()")
        g = _current()
        x = g.add(R.SEQUENCE, tuple(node(g, e) for e in xs))
        seqs = []
        for l in range(self.layers):
            Wx, b, Wh = (node(g, e) for e in self._scan_weights(l))
            gates = g.add(R.AFFINE, (b, Wx, x), (("xvec", True),))
            x = g.add(self._scan, (gates, Wh), (("dirs", (False,)),))
            seqs.append(x)
        chain = [state, xs, None]
        return [_ScannedState(self, seqs, t, chain) for t in range(len(xs))]

    def _masks(self, x):
        """Per layer (input mask, recurrent mask), drawn once per sequence at its first input."""
        if not (self.dropout_rate or self.dropout_rate_h):
            return None
        g = _current()
        B = g.n_rows[node(g, x)] if g.n_sig[node(g, x)].ragged else 1

        def mask(p, d):
            """An inverted-dropout mask of size ``d`` (one per batch element)."""
            if not p:
                return None
            return dy.inputTensor((rng().random((d, B)) >= p) / (1 - p), batched=True) if B > 1 else \
                dy.inputTensor((rng().random(d) >= p) / (1 - p))

        return [(mask(self.dropout_rate, self.input_dim if l == 0 else self.hidden_dim),
                 mask(self.dropout_rate_h, self.hidden_dim)) for l in range(self.layers)]

    def _add(self, state, x):
        if self._graph is not _current():
            raise ValueError("Using stale builder: call initial_state() after renew_cg()")
        masks = state._masks if state._hs is not None or state._masks is not None else self._masks(x)
        hs, cs = [], []
        for l in range(self.layers):
            h = state._hs[l] if state._hs is not None else None
            c = state._cs[l] if state._cs is not None else None
            if masks is not None:
                mx, mh = masks[l]
                x = dy.cmult(x, mx) if mx is not None else x
                h = dy.cmult(h, mh) if (mh is not None and h is not None) else h
            h, c = self._step(l, self._exprs[l], x, h, c)
            hs.append(h)
            cs.append(c)
            x = h
        return RNNState(self, hs, cs if self._memory else None, state, masks)


def _affine(b, W, x, U=None, h=None):
    """b + W x (+ U h), as DyNet's affine_transform."""
    out = dy.affine_transform([b, W, x])
    return out if h is None else dy.affine_transform([out, U, h])


class SimpleRNNBuilder(_RNNBuilder):
    """h = tanh(b + W x + U h_prev); per layer [x2h, h2h, hb]."""

    NAME = "simple-rnn-builder"

    def _layer(self, pc, X):
        H = self.hidden_dim
        return [pc.add_parameters((H, X)), pc.add_parameters((H, H)), pc.add_parameters(H, init=0)]

    _scan = R.RNN_SCAN

    def _step(self, l, P, x, h, c):
        x2h, h2h, hb = P
        return dy.tanh(_affine(hb, x2h, x, h2h, h)), None

    def _scan_weights(self, l):
        x2h, h2h, hb = self._exprs[l]
        return x2h, hb, h2h


class GRUBuilder(_RNNBuilder):
    """DyNet's GRU; per layer [x2z, h2z, bz, x2r, h2r, br, x2h, h2h, bh]."""

    NAME = "gru-builder"

    def _layer(self, pc, X):
        H = self.hidden_dim
        return [p for _ in range(3) for p in (pc.add_parameters((H, X)), pc.add_parameters((H, H)),
                                              pc.add_parameters(H, init=0))]

    def _step(self, l, P, x, h, c):
        x2z, h2z, bz, x2r, h2r, br, x2h, h2h, bh = P
        z = dy.logistic(_affine(bz, x2z, x, h2z, h))
        if h is None:
            return dy.cmult(z, dy.tanh(_affine(bh, x2h, x))), None
        r = dy.logistic(_affine(br, x2r, x, h2r, h))
        ct = dy.tanh(_affine(bh, x2h, x, h2h, dy.cmult(r, h)))
        return dy.cmult(1 - z, h) + dy.cmult(z, ct), None


class CoupledLSTMBuilder(_RNNBuilder):
    """DyNet's peephole LSTM with coupled gates (f = 1 - i)."""

    NAME = "lstm-builder"
    _memory = True
    _peephole = True

    def _layer(self, pc, X):
        H, c_cols = self.hidden_dim, (self.hidden_dim if self._peephole else 1)
        ps = []
        for gate in "ioc":
            ps += [pc.add_parameters((H, X)), pc.add_parameters((H, H))]
            if gate != "c":
                ps.append(pc.add_parameters((H, c_cols)))
            ps.append(pc.add_parameters(H, init=0))
        return ps

    def _step(self, l, P, x, h, c):
        x2i, h2i, c2i, bi, x2o, h2o, c2o, bo, x2c, h2c, bc = P
        pre_i = _affine(bi, x2i, x, h2i, h)
        if self._peephole and c is not None:
            pre_i = pre_i + c2i * c
        i = dy.logistic(pre_i)
        w = dy.tanh(_affine(bc, x2c, x, h2c, h))
        c_new = dy.cmult(i, w) if c is None else dy.cmult(1 - i, c) + dy.cmult(i, w)
        pre_o = _affine(bo, x2o, x, h2o, h)
        if self._peephole:
            pre_o = pre_o + c2o * c_new
        return dy.cmult(dy.logistic(pre_o), dy.tanh(c_new)), c_new


class FastLSTMBuilder(CoupledLSTMBuilder):
    """DyNet's FastLSTM: the coupled LSTM whose peephole weights (H, 1) are not used."""

    NAME = "fast-lstm-builder"
    _peephole = False


class VanillaLSTMBuilder(_RNNBuilder):
    """DyNet's standard LSTM: per layer [W_x, W_h, b] with gates [i f o g]; ``ln_lstm`` adds layer norm
    (per layer [g_h, b_h, g_x, b_x, g_c, b_c], listed after the weights); ``forget_bias`` (1) is added to f."""

    NAME = "vanilla-lstm-builder"
    _memory = True

    def __init__(self, layers, input_dim, hidden_dim, model, ln_lstm=False, forget_bias=1.0):
        self.ln_lstm, self.forget_bias = bool(ln_lstm), float(forget_bias)
        super().__init__(layers, input_dim, hidden_dim, model, ln_lstm, forget_bias)
        if self.ln_lstm:
            H = self.hidden_dim
            self._ln = [[self._pc.add_parameters(d, init=v) for d, v in
                         ((4 * H, 1), (4 * H, 0), (4 * H, 1), (4 * H, 0), (H, 1), (H, 0))] for _ in range(self.layers)]
        # The forget bias as a constant the engine shares like a parameter, never trained.
        H = self.hidden_dim
        self._fb = _core.ParameterCollection(dtype=np.float32).add_parameters(
            (4 * H,), init=np.r_[np.zeros(H), np.full(H, self.forget_bias), np.zeros(2 * H)])

    def _layer(self, pc, X):
        H = self.hidden_dim
        return [pc.add_parameters((4 * H, X)), pc.add_parameters((4 * H, H)), pc.add_parameters(4 * H, init=0)]

    def get_parameters(self):
        """Per layer, the Parameters in DyNet's order (layer norm's after the weights)."""
        return [list(ps) + (list(self._ln[l]) if self.ln_lstm else []) for l, ps in enumerate(self._params)]

    def get_parameter_expressions(self):
        """Per layer, the parameter expressions (after ``initial_state``)."""
        out = super().get_parameter_expressions()
        return [es + (self._ln_exprs[l] if self.ln_lstm else []) for l, es in enumerate(out)]

    def new_graph(self, update=True):
        """Bind the parameters to the current graph (``update=False``: no gradient to them)."""
        super().new_graph(update)
        if self.ln_lstm:
            self._ln_exprs = [[p.expr() if update else dy.const_parameter(p) for p in ps] for ps in self._ln]

    _scan = R.LSTM_SCAN

    def _weights(self, l, P):
        return P

    def _plain(self):
        return super()._plain() and not self.ln_lstm

    def _scan_weights(self, l):
        Wx, Wh, b = self._fused(l, self._exprs[l])
        return Wx, b, Wh

    def _fused(self, l, P):
        """This layer's weights with the gate blocks in the engine's order [i f g o] and the forget bias in b;
        functions of parameters only, so the engine computes them once per graph."""
        got = self._prepared.get(l)
        if got is None:
            H = self.hidden_dim
            perm = tuple(np.r_[np.arange(2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])
            Wx, Wh, b = (select(e, [("take", perm)]) for e in self._weights(l, P))
            g = _current()
            fb = Expression(g, g.param_node(self._fb))
            got = self._prepared[l] = (Wx, Wh, b + fb)
        return got

    def _step(self, l, P, x, h, c):
        g = _current()
        if not self.ln_lstm:  # the fused cell: 4 nodes a step
            Wx, Wh, b = self._fused(l, P)
            gn = node(g, _affine(b, Wx, x, Wh, h))
            cn = node(g, c) if c is not None else g.add(R.ZEROS, (), (("shape", (self.hidden_dim,)),
                                                                     ("dtype", np.dtype(np.float32))))
            if g.n_sig[gn].ragged or g.n_sig[cn].ragged:  # a minibatch: the per-row twins
                gn, cn = align(g, (gn, cn))
                c = g.add(R.LSTM_CELL_ROWS, (gn, cn))
                h = g.add(R.LSTM_HIDDEN_ROWS, (gn, c))
            else:
                c = g.add(R.LSTM_CELL, (gn, cn), (("rd", 0.0), ("zo", 0.0), ("zt", False)))
                h = g.add(R.LSTM_HIDDEN, (gn, c), (("zo", 0.0), ("zt", False)))
            return Expression(g, h), Expression(g, c)
        Wx, Wh, b = self._weights(l, P)
        H = self.hidden_dim
        if self.ln_lstm:
            gh, bh, gx, bx, gc, bc = self._ln_exprs[l]
            pre = b + dy.layer_norm(Wx * x, gx, bx)
            if h is not None:
                pre = pre + dy.layer_norm(Wh * h, gh, bh)
        else:
            pre = _affine(b, Wx, x, Wh, h)
        i = dy.logistic(dy.pick_range(pre, 0, H))
        f = dy.logistic(dy.pick_range(pre, H, 2 * H) + self.forget_bias)
        o = dy.logistic(dy.pick_range(pre, 2 * H, 3 * H))
        gg = dy.tanh(dy.pick_range(pre, 3 * H, 4 * H))
        c = dy.cmult(i, gg) if c is None else dy.cmult(f, c) + dy.cmult(i, gg)
        ct = dy.layer_norm(c, gc, bc) if self.ln_lstm else c
        return dy.cmult(o, dy.tanh(ct)), c


LSTMBuilder = VanillaLSTMBuilder


class CompactVanillaLSTMBuilder(VanillaLSTMBuilder):
    """DyNet's compact vanilla LSTM: the same cell and layout."""

    NAME = "compact-vanilla-lstm-builder"

    def __init__(self, layers, input_dim, hidden_dim, model):
        super().__init__(layers, input_dim, hidden_dim, model)


class SparseLSTMBuilder(VanillaLSTMBuilder):
    """The vanilla LSTM with fixed weight masks: per layer [W_x, W_h, b, mask_x, mask_h]."""

    NAME = "vanilla-lstm-builder"

    def _layer(self, pc, X):
        H = self.hidden_dim
        Wx, Wh = pc.add_parameters((4 * H, X)), pc.add_parameters((4 * H, H))
        mx, mh = pc.add_parameters((4 * H, X), init=1), pc.add_parameters((4 * H, H), init=1)
        return [Wx, Wh, pc.add_parameters(4 * H, init=0), mx, mh]

    def _weights(self, l, P):
        Wx, Wh, b, mx, mh = P
        return dy.cmult(Wx, dy.nobackprop(mx)), dy.cmult(Wh, dy.nobackprop(mh)), b


class BiRNNBuilder:
    """Layers of a forward and a backward RNN whose outputs are concatenated (hidden_dim split evenly)."""

    def __init__(self, num_layers, input_dim, hidden_dim, model, rnn_builder_factory, builder_layers=None):
        self.spec = num_layers, input_dim, hidden_dim, rnn_builder_factory, None
        self.model = model.add_subcollection("birnn")
        if builder_layers is None:
            if num_layers <= 0 or hidden_dim % 2:
                raise ValueError(f"BiRNN needs layers > 0 and an even hidden dim, got {num_layers}, {hidden_dim}")
            half = int(hidden_dim) // 2
            builder_layers = [(rnn_builder_factory(1, input_dim if k == 0 else hidden_dim, half, self.model),
                               rnn_builder_factory(1, input_dim if k == 0 else hidden_dim, half, self.model))
                              for k in range(num_layers)]
        self.builder_layers = builder_layers

    @classmethod
    def from_spec(cls, spec, model):
        """Rebuild from ``spec`` (what ``dy.save`` stores)."""
        num_layers, input_dim, hidden_dim, factory, _ = spec
        return cls(num_layers, input_dim, hidden_dim, model, factory)

    def param_collection(self):
        """The subcollection holding the parameters."""
        return self.model

    def set_dropout(self, p):
        """Dropout ``p`` in every direction and layer."""
        for f, b in self.builder_layers:
            f.set_dropout(p)
            b.set_dropout(p)

    def disable_dropout(self):
        """Turn dropout off."""
        for f, b in self.builder_layers:
            f.disable_dropout()
            b.disable_dropout()

    def add_inputs(self, es):
        """Per input, the (forward state, backward state) pair of the last layer."""
        es = list(es)
        for f, b in self.builder_layers[:-1]:
            es = self._layer(f, b, es)
        f, b = self.builder_layers[-1]
        fs = f.initial_state().add_inputs(es)
        bs = b.initial_state().add_inputs(reversed(es))
        return list(zip(fs, reversed(bs)))

    def transduce(self, es):
        """Per input, the concatenated outputs of the last layer."""
        es = list(es)
        for f, b in self.builder_layers:
            es = self._layer(f, b, es)
        return es

    @staticmethod
    def _layer(f, b, es):
        fs = f.initial_state().transduce(es)
        bs = b.initial_state().transduce(reversed(es))
        return [dy.concatenate([x, y]) for x, y in zip(fs, reversed(bs))]


# ---- softmax builders -----------------------------------------------------------------------------------------


class SoftmaxBuilder:
    """The interface of DyNet's softmax builders."""

    def param_collection(self):
        """The subcollection holding the parameters."""
        return self.pc

    def neg_log_softmax_batch(self, rep, classidxs, update=True):
        """Per batch element b, -log p(classidxs[b] | rep_b)."""
        return dy.concatenate_to_batch([self.neg_log_softmax(dy.pick_batch_elem(rep, b), c, update)
                                        for b, c in enumerate(classidxs)])


class StandardSoftmaxBuilder(SoftmaxBuilder):
    """softmax(W r + b) over ``num_classes``."""

    def __init__(self, rep_dim, num_classes, model, bias=True):
        self.spec = (rep_dim, num_classes, bias)
        self.pc = model.add_subcollection("standard-softmax-builder")
        self.W = self.pc.add_parameters((num_classes, rep_dim))
        self.b = self.pc.add_parameters(num_classes, init=0) if bias else None

    def full_logits(self, rep, update=True):
        """The logits W r + b."""
        W = self.W.expr(update)
        return dy.affine_transform([self.b.expr(update), W, rep]) if self.b is not None else W * rep

    def full_log_distribution(self, rep, update=True):
        """log p(. | rep) over every class, in class order."""
        return dy.log_softmax(self.full_logits(rep, update))

    def neg_log_softmax(self, rep, classidx, update=True):
        """-log p(classidx | rep)."""
        return dy.pickneglogsoftmax(self.full_logits(rep, update), classidx)

    def neg_log_softmax_batch(self, rep, classidxs, update=True):
        """Per batch element b, -log p(classidxs[b] | rep_b)."""
        return dy.pickneglogsoftmax_batch(self.full_logits(rep, update), classidxs)

    def sample(self, rep):
        """A class drawn from p(. | rep)."""
        p = dy.softmax(self.full_logits(rep)).npvalue()
        return int(rng().choice(len(p), p=p / p.sum()))


class ClassFactoredSoftmaxBuilder(SoftmaxBuilder):
    """p(w) = p(class(w)) p(w | class(w)) (Goodman 2001). ``cluster_file``: lines ``cluster word``;
    ``word_dict`` maps each word to its id."""

    def __init__(self, rep_dim, cluster_file, word_dict, model, bias=True):
        self.spec = (rep_dim, cluster_file, word_dict, bias)
        self.pc = model.add_subcollection("class-factored-softmax-builder")
        clusters, self.cluster_of, self.index_in = {}, {}, {}
        with open(cluster_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 2:
                    continue
                c, w = parts[0], parts[1]
                members = clusters.setdefault(c, [])
                wid = word_dict[w]
                self.cluster_of[wid], self.index_in[wid] = list(clusters).index(c), len(members)
                members.append(wid)
        self.clusters = list(clusters.values())
        self.r2c = self.pc.add_parameters((len(self.clusters), rep_dim))
        self.cbias = self.pc.add_parameters(len(self.clusters), init=0)
        self.r2w = [self.pc.add_parameters((len(m), rep_dim)) if len(m) > 1 else None for m in self.clusters]
        self.wbias = [self.pc.add_parameters(len(m), init=0) if len(m) > 1 and bias else None
                      for m in self.clusters]

    def class_logits(self, rep, update=True):
        """The cluster logits."""
        return dy.affine_transform([self.cbias.expr(update), self.r2c.expr(update), rep])

    def subclass_logits(self, rep, c, update=True):
        """The logits of the words of cluster ``c``."""
        W, b = self.r2w[c].expr(update), self.wbias[c]
        return dy.affine_transform([b.expr(update), W, rep]) if b is not None else W * rep

    def neg_log_softmax(self, rep, wordidx, update=True):
        """-log p(classidx | rep)."""
        c = self.cluster_of[wordidx]
        loss = dy.pickneglogsoftmax(self.class_logits(rep, update), c)
        if self.r2w[c] is None:
            return loss
        return loss + dy.pickneglogsoftmax(self.subclass_logits(rep, c, update), self.index_in[wordidx])

    def full_log_distribution(self, rep, update=True):
        """log p(. | rep) over every class, in class order."""
        lc = dy.log_softmax(self.class_logits(rep, update))
        parts = {}
        for c, members in enumerate(self.clusters):
            lw = dy.pick(lc, c)
            if self.r2w[c] is not None:
                sub = dy.log_softmax(self.subclass_logits(rep, c, update))
                for k, w in enumerate(members):
                    parts[w] = lw + dy.pick(sub, k)
            else:
                parts[members[0]] = lw
        return dy.concatenate([parts[w] for w in sorted(parts)])

    def sample(self, rep):
        """A class drawn from p(. | rep)."""
        p = np.exp(self.full_log_distribution(rep).npvalue())
        return int(sorted(self.cluster_of)[rng().choice(len(p), p=p / p.sum())])
