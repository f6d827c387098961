# C types for primitive.py when Cython compiles it (setup.py); the .py stays the source of the logic. Compiled,
# a Primitive is an extension type whose fields the graph reads as C fields (graph.pxd cimports it).
cdef class Primitive:
    cdef readonly str name, kind, seq
    cdef readonly object shape, fwd, vjp, aux, keeps_int, outer
    cdef readonly tuple must_share
    cdef readonly bint shares, random, stacks, residual, constant_foldable, builds
    cdef readonly long long uid
