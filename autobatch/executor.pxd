# C types for executor.py when Cython compiles it (setup.py); the .py stays the source of the logic. Graph and
# Signature stay untyped here: cimporting autobatch.graph would make this module import the graph (the cycle
# that the graph's own top-level import of this module rules out).
cimport cython

cdef extern from *:  # what executor.py calls _runs: runs of rows copied from, or added onto, one batch's array
    """
    #ifndef AUTOBATCH_RUNS
    #define AUTOBATCH_RUNS
    #include <string.h>
    /* True when the elements of each row (everything past axis 0) are contiguous; rows may lie at any stride
       apart (a column slice such as concat's gradient). */
    static int autobatch_row_contiguous(const Py_buffer *v) {
        Py_ssize_t i, step = v->itemsize;
        for (i = v->ndim - 1; i >= 1; i--) {
            if (v->shape[i] > 1 && v->strides[i] != step) return 0;
            step *= v->shape[i];
        }
        return 1;
    }
    /* runs: a flat list of ints, p, q, d for each run. add = 0: rows [p, q) of src copied onto rows
       [d, d + q - p) of join (the joined input of a batch). add = 1 (float32 and float64): rows [d, d + q - p)
       of join (that input's gradient) added onto rows [p, q) of src (its source batch's gradient buffer), in
       order, so a row read twice gets both. The arrays share a format and a row shape. 1 when done; 0, with
       nothing written and no exception left, when they are not such buffers (another dtype, a device array):
       the caller then does it with NumPy. Strided buffers are asked for, so no NumPy array raises here (an
       exception costs more than the copy). Each element is one IEEE operation, as in NumPy. -1 with an
       exception: a malformed run. */
    static int autobatch_runs(PyObject *src, PyObject *join, PyObject *runs, int add) {
        Py_buffer a, b;
        Py_ssize_t i, k, r, n, row = 1, bytes, sa, sb, count = PyList_GET_SIZE(runs) / 3;
        int ok = 0, kind = 0;  /* 0 copy, 1 float, 2 double */
        if (PyObject_GetBuffer(src, &a, PyBUF_STRIDES | PyBUF_FORMAT | (add ? PyBUF_WRITABLE : 0)) < 0) {
            PyErr_Clear();
            return 0;
        }
        if (PyObject_GetBuffer(join, &b, PyBUF_STRIDES | PyBUF_FORMAT | (add ? 0 : PyBUF_WRITABLE)) < 0) {
            PyErr_Clear();
            PyBuffer_Release(&a);
            return 0;
        }
        if (a.ndim >= 1 && a.ndim == b.ndim && a.itemsize == b.itemsize && strcmp(a.format, b.format) == 0
                && autobatch_row_contiguous(&a) && autobatch_row_contiguous(&b)) {
            ok = 1;
            for (i = 1; i < a.ndim; i++) {
                ok &= a.shape[i] == b.shape[i];
                row *= a.shape[i];
            }
            if (add) {
                kind = strcmp(a.format, "f") == 0 ? 1 : strcmp(a.format, "d") == 0 ? 2 : 0;
                ok &= kind != 0;
            }
        }
        for (k = 0; ok && k < count; k++) {  /* every run in bounds before anything is written */
            Py_ssize_t p = PyLong_AsSsize_t(PyList_GET_ITEM(runs, 3 * k));
            Py_ssize_t q = PyLong_AsSsize_t(PyList_GET_ITEM(runs, 3 * k + 1));
            Py_ssize_t d = PyLong_AsSsize_t(PyList_GET_ITEM(runs, 3 * k + 2));
            if (PyErr_Occurred()) {
                ok = -1;
            } else if (p < 0 || q < p || q > a.shape[0] || d < 0 || d + q - p > b.shape[0]) {
                PyErr_SetString(PyExc_IndexError, "autobatch: a run of rows out of its arrays' bounds");
                ok = -1;
            }
        }
        bytes = row * a.itemsize;
        sa = a.strides[0];
        sb = b.strides[0];
        for (k = 0; ok == 1 && k < count; k++) {
            Py_ssize_t p = PyLong_AsSsize_t(PyList_GET_ITEM(runs, 3 * k));
            Py_ssize_t q = PyLong_AsSsize_t(PyList_GET_ITEM(runs, 3 * k + 1));
            Py_ssize_t d = PyLong_AsSsize_t(PyList_GET_ITEM(runs, 3 * k + 2)), m = row, size = bytes;
            char *x = (char *)a.buf + p * sa, *y = (char *)b.buf + d * sb;
            n = q - p;
            if (sa == bytes && sb == bytes) {  /* the run is one block */
                m *= n;
                size *= n;
                n = 1;
            }
            for (r = 0; r < n; r++, x += sa, y += sb) {
                if (kind == 0) {
                    memmove(y, x, (size_t)size);
                } else if (kind == 1) {
                    float *restrict u = (float *)x;
                    const float *restrict w = (const float *)y;
                    for (i = 0; i < m; i++) u[i] += w[i];
                } else {
                    double *restrict u = (double *)x;
                    const double *restrict w = (const double *)y;
                    for (i = 0; i < m; i++) u[i] += w[i];
                }
            }
        }
        PyBuffer_Release(&b);
        PyBuffer_Release(&a);
        return ok;
    }
    #endif
    """
    int _runs "autobatch_runs" (object src, object join, list runs, bint add) except -1

cdef extern from *:  # what executor.py calls _sorted: a batch's nodes and their inputs in the order of keys
    """
    #ifndef AUTOBATCH_SORTED
    #define AUTOBATCH_SORTED
    #include <stdlib.h>
    typedef struct { Py_ssize_t key; Py_ssize_t at; } autobatch_keyed;
    static int autobatch_keyed_cmp(const void *x, const void *y) {
        const autobatch_keyed *a = (const autobatch_keyed *)x, *b = (const autobatch_keyed *)y;
        if (a->key != b->key) return a->key < b->key ? -1 : 1;
        return (a->at > b->at) - (a->at < b->at);  /* ties keep their order: a stable sort */
    }
    /* (nodes, args), two lists as long as keys (a list of ints), reordered by keys, stably: a new tuple of two
       new lists; NULL with an exception on failure. */
    static PyObject *autobatch_sorted(PyObject *keys, PyObject *nodes, PyObject *args) {
        Py_ssize_t i, n = PyList_GET_SIZE(keys);
        autobatch_keyed small[64], *v = small;
        PyObject *a = NULL, *b = NULL, *out = NULL;
        if (PyList_GET_SIZE(nodes) != n || PyList_GET_SIZE(args) != n) {
            PyErr_SetString(PyExc_ValueError, "autobatch: keys, nodes and inputs of unequal lengths");
            return NULL;
        }
        if (n > 64 && (v = (autobatch_keyed *)PyMem_Malloc((size_t)n * sizeof *v)) == NULL) return PyErr_NoMemory();
        for (i = 0; i < n; i++) {
            /* (not PyLong_AsLongLong: CPython 3.11 converts a location of two digits through a byte array) */
            v[i].key = PyLong_AsSsize_t(PyList_GET_ITEM(keys, i));
            v[i].at = i;
        }
        if (!PyErr_Occurred()) {
            qsort(v, (size_t)n, sizeof *v, autobatch_keyed_cmp);
            a = PyList_New(n);
            b = PyList_New(n);
        }
        if (a != NULL && b != NULL) {
            for (i = 0; i < n; i++) {
                PyObject *x = PyList_GET_ITEM(nodes, v[i].at), *y = PyList_GET_ITEM(args, v[i].at);
                Py_INCREF(x);
                Py_INCREF(y);
                PyList_SET_ITEM(a, i, x);
                PyList_SET_ITEM(b, i, y);
            }
            out = PyTuple_Pack(2, a, b);
        }
        Py_XDECREF(a);
        Py_XDECREF(b);
        if (v != small) PyMem_Free(v);
        return out;
    }
    #endif
    """
    object _sorted "autobatch_sorted" (list keys, list nodes, list args)

cdef bint COMPILED  # executor.py's mode flag as a C int (tested per join and per backward pass)

cdef inline bint _rows_in_c()

@cython.locals(mine=list)
cdef inline void _add_run(dict parts, long long b, long long p, long long q, Py_ssize_t where)

@cython.locals(p=Py_ssize_t, q=Py_ssize_t, d=Py_ssize_t)
cdef inline void _move_runs(src, join, list runs, bint add)

@cython.locals(n_loc=list, j=Py_ssize_t, latest="long long", i=Py_ssize_t, loc="long long", keys=list,
               k=Py_ssize_t, order=list, rising=bint, last="long long", a=Py_ssize_t)
cpdef tuple _order(graph, list nodes, list args, sig)

@cython.locals(n_loc=list, stride="long long", first="long long", size=Py_ssize_t, k=Py_ssize_t,
               b0="long long", p0="long long", base="long long", rows=list, one=bint, rising=bint, last="long long",
               loc="long long", parts=dict, total=Py_ssize_t, start="long long", b="long long", p="long long",
               n="long long", a=Py_ssize_t)
cpdef tuple _gather(graph, list src)

@cython.locals(p=Py_ssize_t, q=Py_ssize_t, d=Py_ssize_t, r=Py_ssize_t, mine=list, groups=list, batches=list,
               unique=bint, n=Py_ssize_t)
cpdef tuple _joined(graph, dict parts, Py_ssize_t total)

@cython.locals(n_sig=list, n_args=list, n_loc=list, batches=list, nodes=list, args=list, build=bint,
               size=Py_ssize_t, inputs=list, plans=list, j=Py_ssize_t, a=Py_ssize_t, b="long long",
               pos="long long", col=list, bid=Py_ssize_t, base="long long", k=Py_ssize_t, n=Py_ssize_t,
               c=Py_ssize_t, total=Py_ssize_t)
cpdef run_forward(graph, list plan)
