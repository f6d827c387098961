"""batch_map runs value-reading, branching per-example code in lockstep: same results as map, far fewer
batches, exceptions re-raised with the example's index."""
import numpy as np
import pytest

import autobatch as ab
from autobatch.batch_map import ExampleError, batch_map

H = 6


@pytest.fixture
def model():
    pc = ab.ParameterCollection(seed=3, dtype=np.float64)
    m = dict(W=pc.add_parameters((H, H)), U=pc.add_parameters((3, H)), b=pc.add_parameters((H,), init="normal"))
    yield m
    ab.ParameterCollection(dtype=np.float32)


def program(m, example):
    """A decoder-like loop: each step reads scores, picks an action by argmax, and the action decides what to
    build next; it stops on action 0 or after the example's step budget."""
    seed, budget = example
    rng = np.random.default_rng(seed)
    h = ab.input_tensor(rng.normal(size=H))
    actions, scores = [], []
    for _ in range(budget):
        s = m["U"] @ h
        values = s.value()  # suspends here under batch_map
        a = int(np.argmax(values))
        actions.append(a)
        scores.append(float(values[a]))
        if a == 0:
            break
        h = ab.tanh(m["W"] @ h + m["b"]) if a == 1 else ab.logistic(m["W"] @ h) * 2 - 1
    return actions, scores


def _examples(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(int(s), int(b)) for s, b in zip(rng.integers(0, 10**6, n), rng.integers(1, 30, n))]


def test_same_results_as_map(model):
    examples = _examples(40)
    ab.renew_cg()
    expected = [program(model, x) for x in examples]
    ab.renew_cg()
    got = batch_map(lambda x: program(model, x), examples)
    assert [a for a, _ in got] == [a for a, _ in expected]
    for (_, s1), (_, s2) in zip(got, expected):
        np.testing.assert_allclose(s1, s2, rtol=1e-12)


def test_batches_bounded_by_longest_example_not_by_count(model):
    examples = _examples(64, seed=1)
    ab.renew_cg()
    results = batch_map(lambda x: program(model, x), examples)
    longest = max(len(a) for a, _ in results)
    batches = ab.graph_stats()["forward_batches"]
    ops_per_decision = 7  # U @ h, then 3 ops on either of two branches
    assert batches <= ops_per_decision * longest + 10
    ab.renew_cg()
    for x in examples:
        program(model, x)
    assert ab.graph_stats()["forward_batches"] > 4 * batches  # one example at a time


def test_very_different_lengths(model):
    examples = [(1, 1), (2, 29), (3, 2), (4, 25)]
    ab.renew_cg()
    expected = [program(model, x) for x in examples]
    ab.renew_cg()
    assert [a for a, _ in batch_map(lambda x: program(model, x), examples)] == [a for a, _ in expected]


def test_exception_names_the_example_and_leaves_the_graph_usable(model):
    def fn(x):
        actions, _ = program(model, x)
        if x[0] == 7:
            raise KeyError("bad example")
        return actions

    ab.renew_cg()
    with pytest.raises(ExampleError) as info:
        batch_map(fn, [(1, 5), (2, 5), (7, 5), (3, 5)])
    assert info.value.index == 2 and "KeyError" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)
    after = ab.sum_elems(model["W"] @ ab.input_tensor(np.ones(H)))  # the graph still builds and runs
    assert after.value() == pytest.approx(model["W"].value().sum())
    assert batch_map(lambda x: x * 2, [1, 2]) == [2, 4]  # and batch_map works again


def test_training_through_batch_map(model):
    def loss_of(x):
        actions, _ = program(model, x)
        h = ab.input_tensor(np.full(H, 0.1 * len(actions)))
        return ab.pick_neg_log_softmax(model["U"] @ ab.tanh(model["W"] @ h), actions[-1] % 3)

    examples = _examples(12, seed=2)
    grads = []
    for runner in (lambda f, xs: [f(x) for x in xs], batch_map):
        for p in (model["W"], model["U"], model["b"]):
            p.zero_grad()
        ab.renew_cg()
        loss = ab.esum(runner(loss_of, examples))
        loss.backward()
        grads.append(model["W"].grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-10)


def test_nesting_is_refused(model):
    ab.renew_cg()
    with pytest.raises(ExampleError) as info:
        batch_map(lambda x: batch_map(lambda y: y, [x]), [1])
    assert "cannot be nested" in str(info.value)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_ctrl_c_and_exit_pass_through_unwrapped(model, stop):
    """``except Exception`` around batch_map must not swallow Ctrl-C: only an Exception becomes ExampleError."""
    started = []

    def fn(x):
        started.append(x)
        program(model, (x, 5))  # suspends: the others are mid-flight when example 2 stops
        if x == 2:
            raise stop()
        return x

    ab.renew_cg()
    with pytest.raises(stop) as info:
        batch_map(fn, [1, 2, 3, 4])
    assert type(info.value) is stop and started == [1, 2, 3, 4]
    assert batch_map(lambda x: x + 1, [1, 2]) == [2, 3]  # the hook was restored and the others abandoned
