"""Layer normalisation (Ba et al. 2016) over each item's vector: y = gain * (x - mean) / sqrt(var + eps) + bias.
Any input may be shared or batched (vectors only, so an input is batched exactly when it is 2-d)."""
from . import backend
from .broadcast import sum_to


def layer_norm(x, gain, bias, *, eps):
    """Saves the normalised x and 1 / std for the VJP."""
    xp = backend.xp
    xc = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    xhat = xc * rstd
    return xhat * gain + bias, (xhat, rstd)


def layer_norm_vjp(g, y, x, gain, bias, *, eps, res):
    xhat, rstd = res
    gh = g * gain
    # d xhat -> d x: remove the components along 1 and along xhat (the mean and variance were taken over x).
    gx = rstd * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
    return sum_to(gx, x), sum_to(g * xhat, gain), sum_to(g, bias)
