"""Matrix products. A shared matrix W (no batch axis) against a batch of vectors X is one GEMM, X @ W.T;
its gradient sums over the batch inside the GEMM, G.T @ X."""
from . import backend


def matmul(a, x, *, xvec):
    """a @ x per item; ``a`` is (m, n) shared or (B, m, n); ``x`` a vector (n,) or matrix (n, k) per item."""
    if a.ndim == 2:  # shared matrix, batched x
        return x @ a.T if xvec else backend.xp.matmul(a, x)
    if xvec and x.ndim == 2:  # both batched
        return backend.xp.matmul(a, x[:, :, None])[:, :, 0]
    return backend.xp.matmul(a, x)


def rows_product(g, x):
    """G.T @ X: a shared matrix's gradient, summed over the rows of the output gradients G and of the row vectors X
    it multiplied. The VJPs call it for a batch of many rows; the engine calls it once per parameter and backward
    pass on the stacked rows of its batches of few rows (see the primitives' ``outer``). One row (a batch of one,
    under the "off" strategy) is an outer product, which NumPy's matmul computes in a scalar loop of its own
    instead of BLAS: 2.3 times slower than the broadcast product on a 200 x 50 matrix (ten times the
    instructions), which gives the same bits."""
    return g[0][:, None] * x[0] if len(g) == 1 else g.T @ x


def matmul_vjp(g, y, a, x, *, xvec, outer=True):
    """``outer=False``: the engine forms a shared matrix's gradient against row vectors itself (``rows_product``
    over all the batches that read it), and the VJP returns None for it."""
    xp = backend.xp
    if xvec:
        if a.ndim == 2:
            return (rows_product(g, x) if outer else None), g @ a
        if x.ndim == 2:
            return g[:, :, None] * x[:, None, :], xp.matmul(g[:, None, :], a)[:, 0, :]
        return g[:, :, None] * x, xp.einsum("bm,bmn->n", g, a)
    if a.ndim == 2:
        ga = xp.einsum("bmk,bnk->mn", g, x)
        return ga, xp.matmul(a.T, g)
    gx = xp.matmul(a.transpose(0, 2, 1), g)
    ga = xp.matmul(g, x.T if x.ndim == 2 else x.transpose(0, 2, 1))
    return ga, (gx.sum(0) if x.ndim == 2 else gx)


def _product_shared(a, x, xvec):
    return a.ndim == 2 and x.ndim == (1 if xvec else 2)


def affine(b, a, x, *, xvec):
    """b + a @ x as one kernel (the bias add fused into the product's output)."""
    y = matmul(a, x, xvec=xvec)
    if _product_shared(a, x, xvec):  # one product for the whole batch, a bias per example
        return b + y
    y += b
    return y


def affine_vjp(g, y, b, a, x, *, xvec, outer=True):
    """``outer``: as for ``matmul_vjp``."""
    gb = g if b.ndim == g.ndim else g.sum(0)
    if _product_shared(a, x, xvec):
        gs = g.sum(0)
        return gb, (backend.xp.outer(gs, x) if xvec else gs @ x.T), a.T @ gs
    ga, gx = matmul_vjp(g, y, a, x, xvec=xvec, outer=outer)
    return gb, ga, gx


def transpose(x):
    return x.transpose(0, 2, 1)


def transpose_vjp(g, y, x):
    return (g.transpose(0, 2, 1),)
