"""What one operation of the registry is: its shape rule, kernels and batching behaviour (``registry.py`` holds
the table of them). A class of its own so that the engine's compiled hot path reads its fields as C fields
(``primitive.pxd``): ``Graph.add`` consults ``seq``, ``shares`` and ``constant_foldable`` for every node."""


import itertools

_uids = itertools.count(1)


class Primitive:
    """One operation: ``shape(shapes, **attrs) -> out shape``, ``fwd``/``vjp`` kernels (see ``kernels``).

    - ``kind``: "leaf" | "elementwise" | "structural".
    - ``shares``: accepts shared (parameter) inputs without a batch axis.
    - ``aux``: per-node data batched as "index" (an int array) or "list" (None: none).
    - ``random``: draws random numbers, so it is never treated as a constant of the graph.
    - ``stacks``: its (many, same-shape) inputs arrive as ONE array, stacked on axis 1.
    - ``residual``: ``fwd`` returns (out, saved) and the VJP receives ``res=saved`` (no recomputation).
    - ``seq``: how it treats a *sequence* input (a value of T rows, T differing per example; see graph.py):
      "rows" applies it to each row (a sequence comes out); "keep"/"reduce" need each example's row count
      (``lengths=``) and give a sequence / one value back; "build" makes a sequence of its inputs; "none"
      refuses sequences.
    - ``must_share``: inputs that must be parameters (or computed from them alone): one for the batch.
    - ``keeps_int``: integer inputs give integer values (+, *, sums, selection). Without it an op's values are
      floats (tanh, /, sqrt), so integer inputs give the float default, as in NumPy and PyTorch (see
      ``Graph._new_signature``). A function of the attributes where they decide (x * 2 keeps integers, x * 0.5
      does not).
    - ``outer``: ``(w, x)`` when input ``w`` is a shared matrix applied to row vectors ``x`` (the batch's rows),
      so that the gradient with respect to it is G.T @ X, a sum over the rows. The engine then forms that once
      per parameter and backward pass, over the rows of every batch of few rows that read the parameter, and
      calls those batches' VJP with ``outer=False``: it returns None for ``w`` (see ``executor.run_backward``).
      On the CPU it also passes ``w`` to the forward kernel column-major from its second read in a pass (see
      ``executor.run_forward``).

    - ``uid``: a number of its own (from 1), for the graph's integer signature keys.

    Read-only once made (compiled; by convention in pure Python). Compared and hashed by identity."""

    __slots__ = ("name", "kind", "shape", "fwd", "vjp", "shares", "aux", "random", "stacks", "residual", "seq",
                 "must_share", "keeps_int", "outer", "constant_foldable", "builds", "uid")

    def __init__(self, name, kind, shape, fwd, vjp, shares=False, aux=None, random=False, stacks=False,
                 residual=False, seq="none", must_share=(), keeps_int=False, outer=None):
        self.name, self.kind, self.shape, self.fwd, self.vjp = name, kind, shape, fwd, vjp
        self.shares, self.aux, self.random, self.stacks, self.residual = shares, aux, random, stacks, residual
        self.seq, self.must_share, self.keeps_int, self.outer = seq, tuple(must_share), keeps_int, outer
        # Applied to parameters alone, the result is the same for every example (no per-node data, no
        # randomness), so it is computed once per graph.
        self.constant_foldable = aux is None and not random
        self.builds = seq == "build"  # (a flag: Graph.add tests it for every node)
        self.uid = next(_uids)

    def __repr__(self):
        return f"<primitive {self.name}>"
