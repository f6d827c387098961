"""The executor's read plans and the graph's integer signature keys, on the cases they special-case: an input
column read from several batches with rows repeated (read per source batch through index arrays, or compiled on
the CPU run by run in C; the gradient added back with repeats), and signature keys that share their numbers but
not their attributes, or do not fit the int."""
import collections

import numpy as np

import autobatch as ab
from autobatch import executor as executor_module, graph as graph_module
from autobatch.executor import ROWS, RUNS, SLICE
from autobatch.kernels import linalg

H = 3


def _repeated_rows(strategy):
    """Six logistic nodes reading, in one batch, rows of two earlier batches with repeats (a0 three times)."""
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    W, E = pc.add_parameters((H, H)), pc.add_lookup_parameters((4, H))
    ab.renew_cg(strategy=strategy)
    a = [W @ E[i] for i in range(2)]  # one batch (matmul)
    b = [ab.tanh(E[i + 2]) for i in range(2)]  # another (tanh), the same kind of value
    outs = [ab.logistic(x) for x in (a[0], b[0], a[0], b[1], a[1], a[0])]
    loss = ab.esum([ab.sum_elems(o * float(k + 1)) for k, o in enumerate(outs)])
    value = loss.value()
    loss.backward()
    return value, W.grad.copy(), E.grad.copy(), ab.graph.current()


def test_rows_repeated_across_batches_read_and_differentiate_as_node_by_node():
    value, gW, gE, g = _repeated_rows("agenda")
    plans = [p for batch in g.batches for p in batch.plans if p[0] in (RUNS, ROWS)]
    assert plans, "the logistic batch did not read its input from several batches: the case went untested"
    if ab.compiled and ab.backend.name == "numpy":  # compiled on the CPU: runs copied in C, per source batch
        assert {p[0] for p in plans} == {ROWS}
        read = [[r for k in range(0, len(runs), 3) for r in range(runs[k], runs[k + 1])]  # (start, stop, where)*
                for p in plans for runs in p[1].values()]
    else:  # through index arrays
        assert {p[0] for p in plans} == {RUNS}
        read = [ab.backend.asnumpy(src).tolist() for p in plans for _, src, _, _ in p[1] if not isinstance(src, slice)]
    assert any(len(set(rows)) < len(rows) for rows in read), "no source batch was read with repeats"
    ref_value, ref_gW, ref_gE, _ = _repeated_rows("off")
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(gW, ref_gW, rtol=1e-12)
    np.testing.assert_allclose(gE, ref_gE, rtol=1e-12)


def _joined_into_a_concat(strategy):
    """Rows of two batches, repeated and out of order, read by one concat batch whose gradient with respect to
    each part is a column slice of its own (rows apart by a stride: the compiled CPU path adds such rows in C)."""
    pc = ab.ParameterCollection(seed=2, dtype=np.float64)
    W, E = pc.add_parameters((H, H)), pc.add_lookup_parameters((4, H))
    ab.renew_cg(strategy=strategy)
    a = [W @ E[i] for i in range(3)]
    b = [ab.tanh(E[i]) for i in range(3)]
    parts = [(a[2], b[0]), (b[1], a[0]), (a[0], b[2]), (b[1], a[1])]
    outs = [ab.logistic(ab.concat([x, y])) * float(k + 1) for k, (x, y) in enumerate(parts)]
    loss = ab.esum([ab.sum_elems(o) for o in outs])
    value = loss.value()
    loss.backward()
    return value, W.grad.copy(), E.grad.copy(), ab.graph.current()


def test_rows_joined_into_a_concat_take_its_strided_gradients_back_as_node_by_node():
    value, gW, gE, g = _joined_into_a_concat("agenda")
    assert any(p[0] in (RUNS, ROWS) for batch in g.batches for p in batch.plans), "no input joined: untested"
    ref_value, ref_gW, ref_gE, _ = _joined_into_a_concat("off")
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(gW, ref_gW, rtol=1e-12)
    np.testing.assert_allclose(gE, ref_gE, rtol=1e-12)


def _read_whole(strategy):
    """A batch of three tanh nodes read whole, in order, by one add batch (v + v: the add's VJP hands one array to
    both inputs), and one row of it again by a scaling."""
    pc = ab.ParameterCollection(seed=3, dtype=np.float64)
    W, E = pc.add_parameters((H, H)), pc.add_lookup_parameters((3, H))
    ab.renew_cg(strategy=strategy)
    x = [ab.tanh(W @ E[i]) for i in range(3)]
    loss = ab.esum([ab.sum_elems(x[1] * 3.0)] + [ab.sum_elems(ab.logistic(v + v) * float(k + 1))
                                                 for k, v in enumerate(x)])
    value = loss.value()
    loss.backward()
    return value, W.grad.copy(), E.grad.copy(), ab.graph.current()


def test_a_batch_whose_first_gradient_covers_it_takes_a_copy_as_its_buffer():
    """The backward pass gives a batch the first gradient that reaches it, copied, when that gradient covers
    it whole (no buffer of zeros to add it to); later gradients add onto the copy, not onto the array the VJP
    returned (here the same array for both inputs of the add)."""
    value, gW, gE, g = _read_whole("agenda")
    tanh = next(b for b, batch in enumerate(g.batches) if batch.sig.prim.name == "tanh")
    readers = [(c, p) for c, batch in enumerate(g.batches) for p in batch.plans if p[0] == SLICE and p[1] == tanh]
    last = max(c for c, _ in readers)  # the backward pass meets the latest reader first
    assert [p for c, p in readers if c == last] == [(SLICE, tanh, 0)] * 2, "the add does not read it whole"
    assert len(g.batches[last].nodes) == len(g.batches[tanh].nodes) == 3
    ref_value, ref_gW, ref_gE, _ = _read_whole("off")
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(gW, ref_gW, rtol=1e-12)
    np.testing.assert_allclose(gE, ref_gE, rtol=1e-12)


def test_the_weight_gradient_of_a_one_row_batch_is_the_products_own_value():
    """A shared matrix's gradient over a batch of one row is an outer product, which the VJP computes by
    broadcasting (NumPy's matmul has a slow scalar loop for it): the same values, bit for bit, as the product
    over several rows computes for each row, for row-major and strided gradients."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        wide = rng.standard_normal((1, 11)).astype(dtype)
        for g in (wide[:, :7].copy(), wide[:, 2:9]):  # row-major, and a column slice (a strided view)
            x, a = rng.standard_normal((1, 5)).astype(dtype), rng.standard_normal((7, 5)).astype(dtype)
            ga, gx = linalg.matmul_vjp(g, None, a, x, xvec=True)
            assert ga.dtype == dtype and ga.shape == (7, 5)
            np.testing.assert_array_equal(ga, np.outer(g[0], x[0]))
            two = linalg.matmul_vjp(np.concatenate([g, g]), None, a, np.concatenate([x, 0 * x]), xvec=True)[0]
            np.testing.assert_array_equal(ga, two)  # the GEMM over two rows, the second adding zeros
            np.testing.assert_allclose(gx, g @ a, rtol=1e-6)
            gb, ga2, _ = linalg.affine_vjp(g, None, np.zeros(7, dtype), a, x, xvec=True)
            np.testing.assert_array_equal(ga2, ga)


D = 10  # weights of 10 x 10: a batch of fewer than 10 * 10 / (10 + 10) = 5 rows joins the stacked product


def _chains_loss(W, b, V, S, E, lengths):
    """Chains of affine steps, one per length, with one weight W, so that it is read by batches of 1 to 4 rows
    (the longest chain runs alone at its end), every other step a product with S * 0.5 (a function of a
    parameter, not a parameter: each batch's product goes through its node), and a loss per step through V."""
    terms = []
    for k, n in enumerate(lengths):
        h = E[k]
        for step in range(n):
            h = ab.tanh(ab.affine(b, W, h)) if step % 2 == 0 else ab.tanh((S * 0.5) @ h)
            terms.append(ab.sum_elems(V @ h) * float(step + 1))
    return ab.esum(terms)


def _chains_model(rows=4):
    pc = ab.ParameterCollection(seed=3, dtype=np.float64)
    return pc, (pc.add_parameters((D, D)), pc.add_parameters((D,), init="normal"), pc.add_parameters((D, D)),
                pc.add_parameters((D, D)), pc.add_lookup_parameters((rows, D)))


def _chains(strategy, lengths=(1, 4, 2, 6)):
    """``_chains_loss``' value and gradients under ``strategy``, and the rows of each weight product the backward
    pass formed after the pass."""
    _, params = _chains_model(len(lengths))
    ab.renew_cg(strategy=strategy)
    loss = _chains_loss(*params, lengths)
    value = loss.value()
    calls = []
    real = executor_module.rows_product
    executor_module.rows_product = lambda g, x: calls.append(len(g)) or real(g, x)
    try:
        loss.backward()
    finally:
        executor_module.rows_product = real
    return value, [p.grad.copy() for p in params], calls


def test_a_weights_gradient_from_batches_of_few_rows_is_one_product_after_the_pass():
    """Batched, W is read by batches of 4, 2 and 1 rows: its gradient is one product over their 7 stacked rows.
    Node by node ("off", the reference), every batch keeps its own product. The gradients equal the
    node-by-node ones and central differences."""
    ref_value, ref_grads, ref_calls = _chains("off")
    assert ref_calls == [], ref_calls
    value, grads, calls = _chains("agenda")
    assert 7 in calls and len(calls) <= 2, calls
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    for got, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    W0 = _chains_model()[1][0].value().copy()
    eps, fd = 1e-6, np.zeros((D, D))
    for i, j in [(0, 0), (3, 7), (9, 2), (5, 5)]:
        loss_at = []
        for step in (eps, -eps):
            _, params = _chains_model()
            w = W0.copy()
            w[i, j] += step
            params[0].set_value(w)
            ab.renew_cg()
            loss_at.append(_chains_loss(*params, (1, 4, 2, 6)).value())
        fd[i, j] = (loss_at[0] - loss_at[1]) / (2 * eps)
        np.testing.assert_allclose(grads[0][i, j], fd[i, j], rtol=1e-6, atol=1e-8)


def test_a_matrix_read_again_in_a_pass_is_multiplied_column_major(monkeypatch):
    """On the CPU a shared matrix is passed to the forward product as a column-major copy from its second read
    in a pass on (OpenBLAS multiplies X @ W.T faster so): one copy per matrix read more than once (W, S * 0.5 and
    V under "off", each read by several batches of one row), none for one read once; every batch keeps the
    matrix's own row-major array for its backward pass, and the values are those of the product as written."""
    copies = []
    real = np.asfortranarray
    monkeypatch.setattr(np, "asfortranarray", lambda a: copies.append(a.flags.c_contiguous) or real(a))
    for strategy in ("off", "agenda"):
        copies.clear()
        _, params = _chains_model(4)
        ab.renew_cg(strategy=strategy)
        loss = _chains_loss(*params, (1, 4, 2, 6))
        once = params[3] @ params[4][0]  # S, read by one batch: passed as it is
        value = (loss + ab.sum_elems(once)).value()
        g = ab.graph.current()
        products = [b for b in g.batches if b.sig.prim.outer is not None]
        assert products and all(b.inputs[b.sig.prim.outer[0]].flags.c_contiguous for b in products)
        reads = collections.Counter(b.plans[b.sig.prim.outer[0]][1] for b in products)
        assert len(reads) == 4 and sorted(reads.values())[0] == 1  # W, S * 0.5, V, and S read once
        if ab.backend.name == "numpy":
            assert copies == [True] * sum(1 for r in reads.values() if r > 1), (strategy, copies, reads)
            assert strategy == "agenda" or len(copies) == 3
        W, b, V, S, E = (p.value() for p in params)
        ref = float(np.sum(S @ E[0]))
        for k, n in enumerate((1, 4, 2, 6)):
            h = E[k]
            for step in range(n):
                h = np.tanh(b + W @ h) if step % 2 == 0 else np.tanh((S * 0.5) @ h)
                ref += float(np.sum(V @ h)) * (step + 1)
        np.testing.assert_allclose(value, ref, rtol=1e-12)


def test_a_large_matrix_is_multiplied_as_it_is(monkeypatch):
    """A matrix past COPY_MAX elements (an output layer over a vocabulary) read by several batches is not copied:
    its copy would cost more than the products gain."""
    copies = []
    real = np.asfortranarray
    monkeypatch.setattr(np, "asfortranarray", lambda a: copies.append(a.shape) or real(a))
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    n = executor_module.COPY_MAX // 16 + 1
    O, E = pc.add_parameters((n, 16)), pc.add_lookup_parameters((3, 16))
    ab.renew_cg(strategy="off")
    value = ab.esum([ab.sum_elems(O @ E[i]) for i in range(3)]).value()
    assert copies == []
    np.testing.assert_allclose(value, float(np.sum(O.value() @ E.value().T)), rtol=1e-10)


def test_a_batch_of_many_rows_keeps_its_own_weight_product():
    """Twelve chains of one step: W's batch has 12 rows, more than 10 * 10 / 20, and keeps its own product (the
    VJP's); V's losses likewise. The gradients equal the node-by-node ones."""
    value, grads, calls = _chains("agenda", (1,) * 12)
    assert calls == [], calls
    ref_value, ref_grads, ref_calls = _chains("off", (1,) * 12)
    assert ref_calls == []
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    for got, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_the_vjp_leaves_a_weight_it_is_told_the_engine_forms():
    rng = np.random.default_rng(1)
    g, a, x = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    ga, gx = linalg.matmul_vjp(g, None, a, x, xvec=True, outer=False)
    assert ga is None
    np.testing.assert_array_equal(gx, linalg.matmul_vjp(g, None, a, x, xvec=True)[1])
    gb, ga, gx2 = linalg.affine_vjp(g, None, np.zeros(3), a, x, xvec=True, outer=False)
    assert ga is None
    np.testing.assert_array_equal(gx2, gx)
    np.testing.assert_array_equal(linalg.rows_product(g, x), g.T @ x)


def test_same_numbers_other_attributes_are_other_signatures():
    """x * 2 and x * 3 share op and input kind (the int key) but not their attributes: alternating them in one
    graph must give each its own constant."""
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    E = pc.add_lookup_parameters((5, H))
    ab.renew_cg()
    outs = [E[i] * (2.0 if i % 2 else 3.0) for i in range(5)]
    got = [o.value() for o in outs]
    for i, v in enumerate(got):
        np.testing.assert_allclose(v, E.value()[i] * (2.0 if i % 2 else 3.0), rtol=1e-12)


def test_kinds_beyond_the_int_key_fall_back_to_the_tuple_key():
    """Inputs numbered past the int key's bit fields (a long-running process makes many kinds) still get
    their signatures, and the same values, through the tuple key."""
    for k in range(1 << 16):  # push the next kinds' numbers past the 3-input key's 15-bit field
        graph_module._KINDS.setdefault(("test_executor_plans", k), len(graph_module._KINDS))
    pc = ab.ParameterCollection(seed=1, dtype=np.float64)
    n = next(n for n in range(29, 10_000) if ((n,), np.dtype(np.float64), False) not in graph_module._KINDS)
    b, W, E = pc.add_parameters((n,), init="normal"), pc.add_parameters((n, n)), pc.add_lookup_parameters((3, n))
    ab.renew_cg()
    outs = [ab.tanh(ab.affine(b, W, E[i])) * ab.logistic(E[i]) for i in range(3)]
    assert graph_module._KINDS[((n,), np.dtype(np.float64), False)] >= 1 << 16
    for i, o in enumerate(outs):
        x = E.value()[i]
        np.testing.assert_allclose(o.value(), np.tanh(b.value() + W.value() @ x) / (1 + np.exp(-x)),
                                   rtol=1e-12)


def test_an_input_read_thousands_of_times_by_one_node_grows_the_agendas_edge_arrays():
    """The agenda keeps room for two consumers' edges per node and doubles it when full: a sum that reads one
    value 5,000 times (5,000 edges over three nodes) and a few nodes reading it twice must all run, with the
    gradient counting every read."""
    pc = ab.ParameterCollection(seed=0)
    W = pc.add_parameters((3, 3))
    for strategy in ("agenda", "depth"):
        ab.renew_cg(strategy=strategy)
        pc.zero_grad()
        x = ab.input_tensor(np.arange(3.0))
        h = ab.tanh(W @ x)
        y = ab.sum_elems(ab.esum([h] * 5000) + ab.cmult(h, h))
        expected = np.tanh(W.value() @ np.arange(3.0))
        np.testing.assert_allclose(y.value(), 5000 * expected.sum() + (expected ** 2).sum(), rtol=1e-5)
        y.backward()
        dh = 5000 + 2 * expected
        np.testing.assert_allclose(W.grad, np.outer(dh * (1 - expected ** 2), np.arange(3.0)), rtol=1e-4)
