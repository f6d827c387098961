"""Elementwise kernels. Inputs broadcast like NumPy (the engine aligns batched inputs first); their
gradients come back at the broadcast shape and the engine sums them down to each input's shape."""
from . import backend

# Kernels work in place on the one array they allocate where they can: on a batch of a few rows, each NumPy call
# costs about a microsecond whatever its size, and a new array costs another.


def tanh(x):
    return backend.xp.tanh(x)


def tanh_vjp(g, y, x):
    d = y * y
    backend.xp.subtract(1, d, out=d)
    d *= g
    return (d,)


def _sigmoid_from_half(y):
    """0.5 * (tanh(y) + 1) in place, for y = x / 2: the logistic sigmoid of x, which this form computes without
    overflow (1 / (1 + exp(-x)) overflows below x = -88 in float32)."""
    backend.xp.tanh(y, out=y)
    y += 1
    y *= 0.5
    return y


def sigmoid_(v):
    """The logistic sigmoid of the float array (or view) ``v``, in place; returns ``v``."""
    v *= 0.5
    return _sigmoid_from_half(v)


def logistic(x):
    """1 / (1 + exp(-x)), in a new array (a float one for integer x)."""
    return _sigmoid_from_half(x * 0.5)


def logistic_vjp(g, y, x):
    d = 1 - y
    d *= y
    d *= g
    return (d,)


def relu(x):
    return backend.xp.maximum(x, 0)


def relu_vjp(g, y, x):
    return (g * (x > 0),)


def exp(x):
    return backend.xp.exp(x)


def exp_vjp(g, y, x):
    return (g * y,)


def log(x):
    return backend.xp.log(x)


def log_vjp(g, y, x):
    return (g / x,)


def square(x):
    return x * x


def square_vjp(g, y, x):
    return (2 * g * x,)


def sqrt(x):
    return backend.xp.sqrt(x)


def sqrt_vjp(g, y, x):
    return (g / (2 * y),)


def scale_shift(x, *, a, b):
    """a * x + b for Python-float constants a and b (x + 1, 2 * x, 1 - x, x / 4 ...)."""
    if b == 0:
        return x * a if a != 1 else x.copy()
    return x * a + b


def scale_shift_vjp(g, y, x, *, a, b):
    return (g * a if a != 1 else g,)


def rdiv(x, *, c):
    """c / x for a Python-float constant c."""
    return c / x


def rdiv_vjp(g, y, x, *, c):
    return (-g * y / x,)


def add(a, b):
    return a + b


def add_vjp(g, y, a, b):
    return g, g


def sub(a, b):
    return a - b


def sub_vjp(g, y, a, b):
    return g, -g


def mul(a, b):
    return a * b


def mul_vjp(g, y, a, b):
    return g * b, g * a


def div(a, b):
    return a / b


def div_vjp(g, y, a, b):
    gb = g / b
    return gb, -gb * y


# ---- issue 10: abs, powers, trigonometric functions --------------------------------------------------------


def abs_(x):
    return backend.xp.abs(x)


def abs_vjp(g, y, x):
    return (g * backend.xp.sign(x),)


def pow_const(x, *, p):
    """x ** p for a Python-number constant p."""
    return x ** p


def pow_const_vjp(g, y, x, *, p):
    return (g * p * x ** (p - 1),)


def pow_(x, p):
    """x ** p elementwise, both inputs expressions."""
    return x ** p


def pow_vjp(g, y, x, p):
    # d/dp x**p = x**p log x, taken as 0 at x = 0 for p >= 0 (the limit; PyTorch's choice too). For x < 0 it is
    # undefined and comes out NaN, which check_finite reports, rather than a made-up number.
    xp = backend.xp
    gp = g * y * xp.log(xp.where(x == 0, 1, x))
    return g * p * x ** (p - 1), xp.where((x == 0) & (p >= 0), 0, gp)


def sin(x):
    return backend.xp.sin(x)


def sin_vjp(g, y, x):
    return (g * backend.xp.cos(x),)


def cos(x):
    return backend.xp.cos(x)


def cos_vjp(g, y, x):
    return (-g * backend.xp.sin(x),)


def tan(x):
    return backend.xp.tan(x)


def tan_vjp(g, y, x):
    return (g * (1 + y * y),)
