# C types for scheduler.py when Cython compiles it (setup.py); the .py stays the source of the logic.
# The graph is not typed: cimporting autobatch.graph would make this module import the graph, the cycle that
# graph.py's top-level import of this one rules out. The few attribute reads per call cost nothing. Signatures
# (their own module) are typed: the agenda reads one per node.
cimport cython

from autobatch.signature cimport Signature

@cython.locals(n_loc=list, n_args=list, lo=Py_ssize_t, need="unsigned char[:]", found=list, stack=list,
               t=Py_ssize_t, a=Py_ssize_t)
cpdef list pending(graph, list targets)

cpdef list schedule(graph, list targets)

cpdef list _off(graph, list nodes)

@cython.locals(n_sig=list, n_depth=list, groups=dict, n=Py_ssize_t, key=Py_ssize_t, group=list)
cpdef list _depth(graph, list nodes)

@cython.locals(n_sig=list, n_args=list, n_depth=list, n_loc=list, local=dict, sigs=list, nsig=Py_ssize_t,
               count="long long[:]", depth_sum="long long[:]", lo=Py_ssize_t, size=Py_ssize_t,
               need="unsigned char[:]", waiting="int[:]", sid_of="int[:]", first="int[:]",
               last="int[:]", nxt="int[:]", grown="int[:]", dst=list, e=Py_ssize_t, cap=Py_ssize_t, stack=list,
               leaves=list, t=Py_ssize_t, left=Py_ssize_t, ni=Py_ssize_t, sid=Py_ssize_t, k=Py_ssize_t,
               ai=Py_ssize_t, i=Py_ssize_t, ready=list, active=list, r=list,
               unbatchable="unsigned char[:]", mean="double[:]", plan=list, best=Py_ssize_t, pick=Py_ssize_t,
               j=Py_ssize_t, batch=list, ci=Py_ssize_t, released=list, sig=Signature, opened="long long[:]",
               ran="long long[:]", alt=Py_ssize_t, alt_pick=Py_ssize_t)
cpdef list _agenda(graph, list targets)

@cython.locals(ni=Py_ssize_t, e=Py_ssize_t, ci=Py_ssize_t)
cdef bint _releases(n, Py_ssize_t sid, int[:] first, int[:] nxt, list dst, int[:] waiting, int[:] sid_of,
                    Py_ssize_t lo)
