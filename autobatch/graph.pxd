# C types for graph.py when Cython compiles it (setup.py); the .py stays the source of the logic. Compiled,
# Signature and Graph are extension types: every attribute must be declared here (a new attribute in graph.py
# needs its line below, else the build fails and the package falls back to pure Python). `public` keeps each
# readable and writable from Python as before.
cimport cython

from autobatch.primitive cimport Primitive

cdef class Signature:
    cdef public Py_ssize_t id, kp, const
    cdef public Primitive prim
    cdef public object attrs, kw, shape, dtype, shared, expand, param, seq_inputs
    cdef public bint batchable, ragged

cdef class Graph:
    cdef public object strategy, ref, transfers_at
    cdef public bint check_finite
    cdef public list n_sig, n_args, n_depth, n_loc, n_site, signatures, batches
    cdef public dict n_aux, n_rows, weak, _weak_of, _retyped, _sigs, local, _param_node, _cse, times
    cdef public Py_ssize_t first_pending, backward_batches
    cdef public double _mark
    cdef object __weakref__

    @cython.locals(n_sig=list, n_depth=list, k=Py_ssize_t, a=Py_ssize_t, b=Py_ssize_t,
                   sa=Signature, sb=Signature, depth=Py_ssize_t, sig=Signature,
                   n_static=Py_ssize_t, shares=bint, parts=list)
    cpdef Py_ssize_t add(self, Primitive prim, args, attrs=*, aux=*, rows=*) except -1

    @cython.locals(n=Py_ssize_t)
    cpdef Py_ssize_t _append(self, Signature sig, args, Py_ssize_t depth, aux=*) except -1
