"""Non-recurrent sentence encoders: one node (one batched kernel call) per sentence and layer.

A sentence's vectors are stacked into a matrix zero-padded to a multiple of ``bucket`` rows, so sentences whose
lengths round up to the same bucket share one kernel call; each node carries its sentence's true length and the
kernels mask what lies past it. ``bucket=1`` groups equal lengths only (no padded work, more kernel calls).
"""
from . import errors
from . import graph as _graph
from . import registry as R
from .ops import Expression, _node
from .parameters import Parameter

ACTIVATIONS = ("relu", "tanh", "linear")


def pad_rows(xs, rows):
    """The vectors ``xs`` as the first rows of a (rows, dim) matrix of zeros, as one node."""
    if not xs:
        raise ValueError(errors.at("pad_rows: needs a non-empty list of vectors"))
    g = _graph._current[0]
    return Expression(g, g.add(R.PAD_ROWS, tuple(_node(g, x) for x in xs), (("rows", int(rows)),)))


def _length(op, shape, length):
    # A non-matrix is left to the primitive's shape rule, which says so.
    if type(length) is not int or (len(shape) == 2 and not 1 <= length <= shape[0]):
        raise ValueError(errors.at(f"{op}: length {length!r} must be an int in [1, rows] for a matrix of shape "
                                   f"{shape}"))
    return length


def _shared(op, weights):
    """The kernels take weights without a batch axis: parameters, one for the whole batch."""
    for w in weights:
        if not isinstance(w, Parameter):
            raise TypeError(errors.at(f"{op}: weights must be Parameters (one for the whole batch), got "
                                      f"{type(w).__name__}"))


def self_attention(X, Wq, Wk, Wv, length, causal=False):
    """Self-attention over the first ``length`` rows of the matrix ``X`` (see ``SelfAttention``); later rows
    are padding: never attended to, and zero in the result."""
    _shared("self_attention", (Wq, Wk, Wv))
    g = _graph._current[0]
    args = tuple(_node(g, a) for a in (X, Wq, Wk, Wv))
    length = _length("self_attention", g.n_sig[args[0]].shape, length)
    return Expression(g, g.add(R.SELF_ATTENTION, args, (("causal", bool(causal)),), length))


def dilated_conv(X, W, b, length, *, dilation=1, causal=False, activation="relu", residual=False):
    """One dilated convolution layer over the first ``length`` rows of ``X`` (see ``DilatedConv1D``); W is
    (out, width * dim), tap-major. Padding rows read as zeros and come out zero."""
    _shared("dilated_conv", (W, b))
    g = _graph._current[0]
    args = tuple(_node(g, a) for a in (X, W, b))
    shape_x, shape_w = g.n_sig[args[0]].shape, g.n_sig[args[1]].shape
    length = _length("dilated_conv", shape_x, length)
    if activation not in ACTIVATIONS:
        raise ValueError(errors.at(f"dilated_conv: activation must be one of {ACTIVATIONS}, got {activation!r}"))
    width = shape_w[1] // shape_x[1] if len(shape_w) == 2 and len(shape_x) == 2 else 0
    if width and shape_w[1] != width * shape_x[1]:
        raise ValueError(errors.at(f"dilated_conv: the weights' {shape_w[1]} columns are not a multiple of the "
                                   f"input width {shape_x[1]} (W is (out, kernel_size x dim))"))
    attrs = (("dilation", int(dilation)), ("width", width), ("causal", bool(causal)), ("act", activation),
             ("residual", bool(residual)))
    return Expression(g, g.add(R.DILATED_CONV, args, attrs, length))


def _positive(op, name, v):
    if int(v) != v or v < 1:
        raise ValueError(f"{op}: {name} must be a positive integer, got {v!r}")
    return int(v)


class _Encoder:
    def __init__(self, op, input_dim, bucket):
        self.op = op
        self.input_dim, self.bucket = _positive(op, "input_dim", input_dim), _positive(op, "bucket", bucket)
        self._rows = {}

    def _matrix(self, g, xs):
        """The pad_rows node of ``xs`` and the sentence length."""
        ids = []
        for x in xs:
            n = _node(g, x)
            if g.n_sig[n].shape != (self.input_dim,):
                raise ValueError(errors.at(f"{self.op}: input of shape {g.n_sig[n].shape}, expected "
                                           f"({self.input_dim},)"))
            ids.append(n)
        if not ids:
            raise ValueError(errors.at(f"{self.op}: needs a non-empty list of vectors"))
        T = len(ids)
        rows = -(-T // self.bucket) * self.bucket
        attrs = self._rows.get(rows)
        if attrs is None:
            attrs = self._rows[rows] = (("rows", rows),)
        return g.add(R.PAD_ROWS, tuple(ids), attrs), T

    @staticmethod
    def _vectors(g, m, T):
        return [Expression(g, g.add(R.PICK, (m,), (), t)) for t in range(T)]


class SelfAttention(_Encoder):
    """Scaled dot-product self-attention over a sentence: out_i = sum_j softmax_j(q_i . k_j / sqrt(key_dim)) v_j
    with q, k, v = W_q x, W_k x, W_v x (no biases); ``causal`` masks j > i. One node per sentence; outputs have
    ``value_dim`` (default input_dim) entries."""

    def __init__(self, pc, input_dim, key_dim=None, value_dim=None, *, causal=False, bucket=8, name=None):
        super().__init__("SelfAttention", input_dim, bucket)
        self.key_dim = _positive(self.op, "key_dim", key_dim or self.input_dim)
        self.output_dim = _positive(self.op, "value_dim", value_dim or self.input_dim)
        self.causal = bool(causal)
        prefix = name or f"attention{len(pc.parameters())}"
        self.Wq = pc.add_parameters((self.key_dim, self.input_dim), name=f"{prefix}.Wq")
        self.Wk = pc.add_parameters((self.key_dim, self.input_dim), name=f"{prefix}.Wk")
        self.Wv = pc.add_parameters((self.output_dim, self.input_dim), name=f"{prefix}.Wv")
        self._attrs = (("causal", self.causal),)

    def transduce(self, xs):
        """The attention output at every position of the sentence ``xs``."""
        g = _graph._current[0]
        m, T = self._matrix(g, xs)
        ws = tuple(g.param_node(w) for w in (self.Wq, self.Wk, self.Wv))
        return self._vectors(g, g.add(R.SELF_ATTENTION, (m,) + ws, self._attrs, T), T)


class DilatedConv1D(_Encoder):
    """A stack of dilated 1-d convolutions (Kalchbrenner et al. 2016): layer k computes
    y_t = act(b + sum_j W_j x_{t + o_j}) with taps o_j spaced by ``dilations[k]`` (centred, or ending at t when
    ``causal``), plus x_t when ``residual`` and the widths agree; positions outside the sentence read zeros.
    One node per sentence and layer."""

    def __init__(self, pc, input_dim, hidden_dim, dilations=(1, 2, 4), *, kernel_size=3, causal=False,
                 activation="relu", residual=True, bucket=8, name=None):
        super().__init__("DilatedConv1D", input_dim, bucket)
        self.output_dim = _positive(self.op, "hidden_dim", hidden_dim)
        self.dilations = [_positive(self.op, "each dilation", d) for d in dilations]
        if not self.dilations:
            raise ValueError(f"{self.op}: needs at least one dilation rate")
        width = _positive(self.op, "kernel_size", kernel_size)
        if activation not in ACTIVATIONS:
            raise ValueError(f"{self.op}: activation must be one of {ACTIVATIONS}, got {activation!r}")
        prefix = name or f"dilated{len(pc.parameters())}"
        self.layers = []
        dim = self.input_dim
        for k, d in enumerate(self.dilations):
            W = pc.add_parameters((self.output_dim, width * dim), name=f"{prefix}.l{k}.W")
            b = pc.add_parameters((self.output_dim,), name=f"{prefix}.l{k}.b")
            attrs = (("dilation", d), ("width", width), ("causal", bool(causal)), ("act", activation),
                     ("residual", bool(residual) and dim == self.output_dim))
            self.layers.append((W, b, attrs))
            dim = self.output_dim

    def transduce(self, xs):
        """The top layer's output at every position of the sentence ``xs``."""
        g = _graph._current[0]
        m, T = self._matrix(g, xs)
        for W, b, attrs in self.layers:
            m = g.add(R.DILATED_CONV, (m, g.param_node(W), g.param_node(b)), attrs, T)
        return self._vectors(g, m, T)
