# C types for graph.py when Cython compiles it (setup.py); the .py stays the source of the logic. Compiled,
# Graph is an extension type (Signature is one too, in signature.pxd): every attribute must be declared here (a
# new attribute in graph.py needs its line below, else the build fails and the package falls back to pure
# Python). `public` keeps each readable and writable from Python as before.
cimport cython

from autobatch.primitive cimport Primitive
from autobatch.signature cimport Signature

cdef extern from *:  # what graph.py calls _untrack (a wrapper: the C API takes a void pointer)
    """
    #ifndef AUTOBATCH_UNTRACK
    #define AUTOBATCH_UNTRACK
    static CYTHON_INLINE void autobatch_untrack(PyObject *o) { PyObject_GC_UnTrack(o); }
    #endif
    """
    void _untrack "autobatch_untrack" (object)

cdef inline long long _zigzag(long long x)

@cython.locals(size=Py_ssize_t)
cpdef Py_ssize_t _first_pending(list n_loc, Py_ssize_t lo) except -1

cdef bint COMPILED  # graph.py's mode flag as a C int: Graph.add tests it several times per node
# Graph.add's bit-field bounds as C constants (as module objects, each test boxed a C int and compared objects)
cdef long long _BITS15, _BITS16, _BITS23, _BITS24, _BITS47

cdef class Graph:
    cdef public object strategy, ref, transfers_at
    cdef public bint check_finite
    cdef public list n_sig, n_args, n_depth, n_loc, n_site, signatures, batches
    cdef public dict n_aux, n_rows, weak, _weak_of, _retyped, _sigs, _fast, local, _param_node, _cse, times
    cdef public Py_ssize_t first_pending, backward_batches
    cdef public double _mark
    cdef object __weakref__

    @cython.locals(n_sig=list, n_depth=list, k=Py_ssize_t, a=Py_ssize_t, b=Py_ssize_t,
                   sa=Signature, sb=Signature, sc=Signature, depth=Py_ssize_t, sig=Signature,
                   n_static=Py_ssize_t, shares=bint, parts=list, fast="long long", ka="long long",
                   kb="long long", kc="long long", ca="long long", cb="long long", cc="long long", c=Py_ssize_t,
                   da=Py_ssize_t)
    cpdef Py_ssize_t add(self, Primitive prim, args, attrs=*, aux=*, rows=*) except -1

    @cython.locals(n=Py_ssize_t)
    cpdef Py_ssize_t _append(self, Signature sig, args, Py_ssize_t depth, aux=*) except -1
