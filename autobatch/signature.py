"""What nodes must share to run in one kernel call (see ``graph.py``). A module of its own, compiled, so that
the scheduler and the graph read a signature's fields as C fields (``signature.pxd``) without the scheduler
importing the graph (which imports the scheduler)."""


class Signature:
    """What nodes must share to run in one kernel call: op, attributes, input shapes, dtypes and whether they
    are sequences, and the identity of shared inputs. ``kp`` numbers the (shape, dtype, sequence) triple;
    consumers put it in their own keys. ``shape`` is a sequence's row shape. ``param`` is a weak reference to
    the parameter a parameter's signature reads (None for other signatures): signatures outlive models.
    ``lref`` and ``lidx`` are the weak reference of the graph that registered the signature last and its index
    there: the scheduler reads a node's local signature index from them without a dict look-up per node.
    ``const`` is the global id of the constant that the nodes of a parameter's or a static signature hold (-1
    for every other signature): a node is computed from parameters alone exactly when its signature's
    ``const`` is set, so ``Graph.add`` reads that from the signature it fetches anyway."""

    __slots__ = ("id", "prim", "attrs", "kw", "shape", "dtype", "kp", "shared", "expand", "batchable", "param",
                 "ragged", "seq_inputs", "const", "lref", "lidx")

    def __init__(self, sid, prim, attrs, shape, dtype, kp, shared, expand, batchable, param=None, ragged=False,
                 seq_inputs=(), const=-1):
        self.id, self.prim, self.attrs, self.kw = sid, prim, attrs, dict(attrs)
        self.shape, self.dtype, self.kp = shape, dtype, kp
        self.shared, self.expand, self.batchable, self.param = shared, expand, batchable, param
        self.ragged, self.seq_inputs = ragged, seq_inputs  # output is a sequence; which inputs are
        self.const = const
        self.lref, self.lidx = None, -1

    def describe(self):
        """A short human-readable form, e.g. ``matmul, xvec=True -> (64,)`` (``[T] x`` for sequences)."""
        kw = "".join(f", {k}={v}" for k, v in self.attrs if k not in ("shape", "dtype"))
        return f"{self.prim.name}{kw} -> {'[T] x ' if self.ragged else ''}{self.shape}"
