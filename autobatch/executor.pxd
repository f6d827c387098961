# C types for executor.py when Cython compiles it (setup.py); the .py stays the source of the logic. Graph and
# Signature stay untyped here: cimporting autobatch.graph would make this module import the graph (the cycle
# that the graph's own top-level import of this module rules out).
cimport cython

@cython.locals(n_loc=list, j=Py_ssize_t, latest="long long", i=Py_ssize_t, loc="long long", keys=list,
               k=Py_ssize_t, order=list)
cpdef tuple _order(graph, list nodes, list args, sig)

@cython.locals(n_loc=list, stride="long long", first="long long", size=Py_ssize_t, k=Py_ssize_t,
               b0="long long", p0="long long", base="long long", rows=list, one=bint, rising=bint, last="long long",
               locs=list, loc="long long", runs=list, start=Py_ssize_t, b="long long", p="long long")
cpdef tuple _gather(graph, list src)

@cython.locals(parts=dict, total=Py_ssize_t, p=Py_ssize_t, q=Py_ssize_t, d=Py_ssize_t, r=Py_ssize_t, mine=list,
               groups=list, batches=list, unique=bint, n=Py_ssize_t)
cpdef tuple _joined(graph, list runs)

@cython.locals(n_sig=list, n_args=list, n_loc=list, batches=list, nodes=list, args=list, build=bint,
               size=Py_ssize_t, inputs=list, plans=list, j=Py_ssize_t, a=Py_ssize_t, b="long long",
               pos="long long", col=list, bid=Py_ssize_t, base="long long", k=Py_ssize_t, n=Py_ssize_t,
               c=Py_ssize_t, total=Py_ssize_t)
cpdef run_forward(graph, list plan)
