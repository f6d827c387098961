"""2-d convolution and max pooling over (H, W, C) images, as DyNet's ``conv2d`` and ``maxpooling2d`` define them:
filters (kh, kw, C_in, C_out), strides (sh, sw), VALID padding or SAME (TensorFlow's: out = ceil(in / stride),
the padding split with the extra row/column after). Products are one GEMM over all windows of the batch
(im2col); a shared filter (a parameter) has no batch axis.
"""
import numpy as np

from . import backend


def _out_and_pad(size, k, s, valid):
    if valid:
        return (size - k) // s + 1, 0
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2


def geometry(shape, kh, kw, stride, valid):
    """Output (H', W') and the top/left padding of a (H, W, C) image."""
    (oh, ph), (ow, pw) = _out_and_pad(shape[0], kh, stride[0], valid), _out_and_pad(shape[1], kw, stride[1], valid)
    return oh, ow, ph, pw


def _windows(x, kh, kw, stride, valid, fill):
    """All windows: (N, H', W', kh, kw, C), from x (N, H, W, C) padded with ``fill``; and the padded shape."""
    xp = backend.xp
    oh, ow, ph, pw = geometry(x.shape[1:], kh, kw, stride, valid)
    sh, sw = stride
    H = max((oh - 1) * sh + kh, x.shape[1] + ph)
    W = max((ow - 1) * sw + kw, x.shape[2] + pw)
    padded = xp.full((x.shape[0], H, W, x.shape[3]), fill, dtype=x.dtype)
    padded[:, ph:ph + x.shape[1], pw:pw + x.shape[2]] = x
    # The window offsets are host arithmetic, uploaded once each (they index device arrays, here and in _scatter).
    idx_h = backend.to_device((np.arange(oh) * sh)[:, None] + np.arange(kh)[None])
    idx_w = backend.to_device((np.arange(ow) * sw)[:, None] + np.arange(kw)[None])
    win = padded[:, idx_h[:, None, :, None], idx_w[None, :, None, :]]  # (N, oh, ow, kh, kw, C)
    return win, (ph, pw, idx_h, idx_w, padded.shape)


def _scatter(gwin, x_shape, geo):
    """The adjoint of ``_windows``: window gradients summed back into an image gradient."""
    ph, pw, idx_h, idx_w, pshape = geo
    g = backend.xp.zeros(pshape, dtype=gwin.dtype)
    backend.scatter_add(g, (slice(None), idx_h[:, None, :, None], idx_w[None, :, None, :]), gwin)
    return g[:, ph:ph + x_shape[1], pw:pw + x_shape[2]]


def conv2d(x, f, *, stride, valid):
    """Per image, sum over the window and input channels of x times the filter: (N, H', W', C_out)."""
    kh, kw = f.shape[-4:-2]
    win, _ = _windows(x, kh, kw, stride, valid, 0)
    if f.ndim == 4:  # one filter for the batch: one GEMM
        return backend.xp.tensordot(win, f, axes=([3, 4, 5], [0, 1, 2]))
    return backend.xp.einsum("nabijc,nijco->nabo", win, f)


def conv2d_vjp(g, y, x, f, *, stride, valid):
    xp = backend.xp
    kh, kw = f.shape[-4:-2]
    win, geo = _windows(x, kh, kw, stride, valid, 0)
    if f.ndim == 4:
        gf = xp.tensordot(win, g, axes=([0, 1, 2], [0, 1, 2]))
        gwin = xp.tensordot(g, f, axes=([3], [3]))
    else:
        gf = xp.einsum("nabijc,nabo->nijco", win, g)
        gwin = xp.einsum("nabo,nijco->nabijc", g, f)
    return _scatter(gwin, x.shape, geo), gf


def maxpool2d(x, *, ksize, stride, valid):
    """Per image and channel, the max of each window (padding never wins)."""
    win, _ = _windows(x, ksize[0], ksize[1], stride, valid, -np.inf)
    return win.max(axis=(3, 4))


def maxpool2d_vjp(g, y, x, *, ksize, stride, valid):
    win, geo = _windows(x, ksize[0], ksize[1], stride, valid, -np.inf)
    # The gradient goes to the first maximum of each window, as a max's subgradient.
    n, oh, ow, kh, kw, c = win.shape
    flat = win.reshape(n, oh, ow, kh * kw, c)
    first = flat.argmax(axis=3)
    onehot = backend.xp.arange(kh * kw)[None, None, None, :, None] == first[:, :, :, None, :]
    gwin = onehot.astype(g.dtype) * g[:, :, :, None, :]
    return (_scatter(gwin.reshape(win.shape), x.shape, geo),)
