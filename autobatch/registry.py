"""The one table of primitives: each declares its shape rule, batched forward, VJP and batching behaviour.

Batching behaviour comes from a primitive's kind, as in JAX: an ``elementwise`` primitive broadcasts, so it
takes shared (parameter) inputs without a batch axis and the engine sums their gradients over the batch; a
``structural`` one says with ``shares`` whether it accepts shared inputs (a product with a weight matrix does);
a ``leaf`` makes values from per-node data. Adding an op is adding a record here and its kernels in ``kernels/``;
the registry-driven tests then demand a reference and a gradient check for it.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from kernels import elementwise as ew
from kernels import linalg, softmax as sm, structure as st


class ShapeError(ValueError):
    """A shape rule rejected its inputs (the engine adds the op name and the user's file:line)."""


@dataclass(frozen=True, eq=False)
class Primitive:
    """One operation: ``shape(shapes, **attrs) -> out shape``, ``fwd``/``vjp`` kernels (see ``kernels``)."""

    name: str
    kind: str  # "leaf" | "elementwise" | "structural"
    shape: Callable
    fwd: Callable
    vjp: Optional[Callable]
    shares: bool = False  # accepts shared (parameter) inputs without a batch axis
    aux: Optional[str] = None  # per-node data batched as "index" (an int array) or "list"
    random: bool = False  # draws random numbers: never treated as a constant of the graph
    stacks: bool = False  # its (many, same-shape) inputs arrive as ONE array, stacked on axis 1
    residual: bool = False  # fwd returns (out, saved) and the VJP receives ``res=saved`` (no recomputation)

    @property
    def constant_foldable(self):
        """Applied to parameters alone, the result is the same for every example (no per-node data, no
        randomness), so it is computed once per graph."""
        return self.aux is None and not self.random

    def __repr__(self):
        return f"<primitive {self.name}>"


REGISTRY = {}


def primitive(name, kind, shape, fwd, vjp, **kw):
    """Declare and register a primitive."""
    if name in REGISTRY:
        raise ValueError(f"primitive {name!r} declared twice")
    kw.setdefault("shares", kind == "elementwise")
    REGISTRY[name] = p = Primitive(name, kind, shape, fwd, vjp, **kw)
    return p


# ---- shape rules -----------------------------------------------------------------------------------------


def same_shape(shapes):
    return shapes[0]


def broadcast(shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(f"shapes {' and '.join(map(str, shapes))} do not broadcast") from None


def _matmul_shape(shapes, xvec):
    a, x = shapes
    if len(a) != 2 or len(x) not in (1, 2):
        raise ShapeError(f"needs a matrix @ a vector or matrix, got {a} @ {x}")
    if a[1] != x[0]:
        raise ShapeError(f"inner dimensions differ: {a} @ {x}")
    return (a[0],) + x[1:]


def _affine_shape(shapes, xvec):
    out = _matmul_shape(shapes[1:], xvec)
    if shapes[0] != out:
        raise ShapeError(f"bias shape {shapes[0]} differs from the product's shape {out} (W {shapes[1]} @ x {shapes[2]})")
    return out


def _vector(shapes):
    if len(shapes[0]) != 1:
        raise ShapeError(f"needs a vector, got shape {shapes[0]}")
    return ()


def _pick_shape(shapes):
    if len(shapes[0]) < 1:
        raise ShapeError("cannot pick from a scalar")
    return shapes[0][1:]


def _lookup_shape(shapes):
    return shapes[0][1:]


def _concat_shape(shapes, axis):
    first = shapes[0]
    if not 0 <= axis < len(first):
        raise ShapeError(f"axis {axis} out of range for shape {first}")
    for s in shapes[1:]:
        if len(s) != len(first) or s[:axis] + s[axis + 1:] != first[:axis] + first[axis + 1:]:
            raise ShapeError(f"shapes {', '.join(map(str, shapes))} differ off axis {axis}")
    return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]


def _esum_shape(shapes):
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"all terms need one shape, got {', '.join(map(str, shapes))}")
    return shapes[0]


def _transpose_shape(shapes):
    if len(shapes[0]) != 2:
        raise ShapeError(f"needs a matrix, got shape {shapes[0]}")
    return shapes[0][::-1]


def _reshape_shape(shapes, shape):
    if int(np.prod(shapes[0])) != int(np.prod(shape)):
        raise ShapeError(f"cannot reshape {shapes[0]} into {shape}")
    return shape


def _leaf_shape(shapes, shape, dtype):
    return shape


# ---- the primitives --------------------------------------------------------------------------------------

PARAM = primitive("param", "leaf", _leaf_shape, st.param, None, aux="list")
INPUT = primitive("input", "leaf", _leaf_shape, st.input_, None, aux="list")
ZEROS = primitive("zeros", "leaf", _leaf_shape, st.zeros, None, aux="list")
LOOKUP = primitive("lookup", "structural", _lookup_shape, st.lookup, st.lookup_vjp, shares=True, aux="index")

TANH = primitive("tanh", "elementwise", same_shape, ew.tanh, ew.tanh_vjp)
LOGISTIC = primitive("logistic", "elementwise", same_shape, ew.logistic, ew.logistic_vjp)
RELU = primitive("relu", "elementwise", same_shape, ew.relu, ew.relu_vjp)
EXP = primitive("exp", "elementwise", same_shape, ew.exp, ew.exp_vjp)
LOG = primitive("log", "elementwise", same_shape, ew.log, ew.log_vjp)
SQUARE = primitive("square", "elementwise", same_shape, ew.square, ew.square_vjp)
SQRT = primitive("sqrt", "elementwise", same_shape, ew.sqrt, ew.sqrt_vjp)
SCALE_SHIFT = primitive("scale_shift", "elementwise", lambda s, a, b: s[0], ew.scale_shift, ew.scale_shift_vjp)
RDIV = primitive("rdiv", "elementwise", lambda s, c: s[0], ew.rdiv, ew.rdiv_vjp)
ADD = primitive("add", "elementwise", broadcast, ew.add, ew.add_vjp)
SUB = primitive("sub", "elementwise", broadcast, ew.sub, ew.sub_vjp)
MUL = primitive("mul", "elementwise", broadcast, ew.mul, ew.mul_vjp)
DIV = primitive("div", "elementwise", broadcast, ew.div, ew.div_vjp)

MATMUL = primitive("matmul", "structural", _matmul_shape, linalg.matmul, linalg.matmul_vjp, shares=True)
AFFINE = primitive("affine", "structural", _affine_shape, linalg.affine, linalg.affine_vjp, shares=True)
TRANSPOSE = primitive("transpose", "structural", _transpose_shape, linalg.transpose, linalg.transpose_vjp)

SOFTMAX = primitive("softmax", "structural", same_shape, sm.softmax, sm.softmax_vjp)
LOG_SOFTMAX = primitive("log_softmax", "structural", same_shape, sm.log_softmax, sm.log_softmax_vjp)
PICK_NLS = primitive("pick_neg_log_softmax", "structural", _vector, sm.pick_neg_log_softmax,
                     sm.pick_neg_log_softmax_vjp, aux="index", residual=True)

PICK = primitive("pick", "structural", _pick_shape, st.pick, st.pick_vjp, aux="index")
CONCAT = primitive("concat", "structural", _concat_shape, st.concat, st.concat_vjp)
ESUM = primitive("esum", "structural", _esum_shape, st.esum, st.esum_vjp, stacks=True)
SUM_ELEMS = primitive("sum_elems", "structural", lambda s: (), st.sum_elems, st.sum_elems_vjp)
RESHAPE = primitive("reshape", "structural", _reshape_shape, st.reshape, st.reshape_vjp)
