# C types for ops.py when Cython compiles it (setup.py); the .py stays the source of the logic. Typing the graph
# makes each op's `g.add(...)` a direct C call and its attribute reads C field reads (ops already imports the
# graph: no cycle).
cimport cython

from autobatch.graph cimport Graph
from autobatch.signature cimport Signature

# Compiled, an expression is a C struct (graph, node id): made and read without Python attribute dictionaries.
cdef class Operators:
    pass

cdef class Expression(Operators):
    cdef public object g
    cdef public Py_ssize_t i

# A parameter's base: its node in the latest graph that read it, as a C field.
cdef class Leaf(Operators):
    cdef public tuple _node

@cython.locals(g=Graph)
cpdef _arith(a, b, prim, scale_shift)

@cython.locals(e=Expression)
cpdef Expression _expr(Graph g, Py_ssize_t i)

@cython.locals(node=tuple, e=Expression, p=Leaf)
cpdef Py_ssize_t _node(Graph g, x) except -1

@cython.locals(g=Graph)
cpdef _apply(prim, xs, attrs=*, aux=*)

@cython.locals(g=Graph)
cpdef _unary(prim, x, attrs=*)

@cython.locals(g=Graph, m=Py_ssize_t, n=Py_ssize_t, sig=Signature)
cpdef matmul(a, x)

@cython.locals(g=Graph, nb=Py_ssize_t, nw=Py_ssize_t, n=Py_ssize_t, sig=Signature)
cpdef affine(b, W, x)

@cython.locals(g=Graph, node=tuple, p=Leaf, n=Py_ssize_t)
cpdef lookup(table, i)
