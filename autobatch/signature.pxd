# C types for signature.py when Cython compiles it (setup.py); the .py stays the source of the logic. Every
# attribute must be declared here (`public`: readable and writable from Python as before).
from autobatch.primitive cimport Primitive

cdef class Signature:
    cdef public Py_ssize_t id, kp, const, lidx
    cdef public Primitive prim
    cdef public object attrs, kw, shape, dtype, shared, expand, param, seq_inputs, lref
    cdef public bint batchable, ragged
