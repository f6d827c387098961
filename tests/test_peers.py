"""The peer systems of bench/peers: hand-derived NumPy gradients against finite differences (float64), NumPy
against PyTorch on the same weights, the shared data preparation, and for PyTorch and DyNet (skipped when not
installed) that one update runs and that repeated updates lower the loss. DyNet reads its configuration once per
process, so its tests run in subprocesses, one per auto-batching setting."""
import importlib.util
import io
import json
import math
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from autobatch import data
from bench.peers import padded_numpy, run, tasks

ROOT = Path(__file__).resolve().parents[1]
TINY = {"tagger": dict(embed=3, hidden=2, mlp=3), "tree": dict(embed=3, hidden=2), "lm": dict(embed=3, hidden=4)}
SMALL = {"tagger": dict(embed=16, hidden=8, mlp=8), "tree": dict(embed=16, hidden=8), "lm": dict(embed=16, hidden=16)}


def _tiny_batch(task):
    # Ragged on purpose: a one-word item (a single-leaf tree), the longest not first, repeated words.
    if task == "tagger":
        return [([1, 2, 3, 1], [0, 1, 2, 0]), ([4], [3]), ([2, 5, 6], [1, 1, 0])]
    if task == "lm":
        return [([0, 3, 4, 3], [3, 4, 3, 0]), ([0], [0]), ([0, 5, 1], [5, 1, 0])]
    return [tasks.encode_tree(data.parse_tree(s), data.Vocab([f"w{i}" for i in range(6)]))
            for s in ("(3 (2 (1 w1) (4 w2)) (2 w3))", "(1 w4)", "(0 (2 w5) (2 (3 w1) (1 (2 w0) (4 w2))))")]


def _sizes(task):
    return dict(tagger=(7, 4), tree=(8, 5), lm=(7, None))[task]


def _dense(g, shape):
    if isinstance(g, tuple):
        rows, vals = g
        assert len(np.unique(rows)) == len(rows), "sparse rows must be unique"
        out = np.zeros(shape)
        out[rows] = vals
        return out
    return g


@pytest.mark.parametrize("task", tasks.TASKS)
def test_numpy_gradients_match_finite_differences(task):
    n_words, n_labels = _sizes(task)
    model = padded_numpy.make(task, n_words, n_labels, seed=3, dtype=np.float64, **TINY[task])
    batch = _tiny_batch(task)
    loss, grads = model.loss_and_grads(batch)
    assert set(grads) == set(model.params)
    rng = np.random.default_rng(0)
    eps = 1e-5  # float64: round-off ~1e-16 * loss / eps and truncation ~eps**2 both stay near 1e-10
    for name, p in model.params.items():
        d = rng.standard_normal(p.shape)
        analytic = float(np.vdot(_dense(grads[name], p.shape), d))
        orig = p.copy()
        p[...] = orig + eps * d
        up = model.loss_and_grads(batch)[0]
        p[...] = orig - eps * d
        down = model.loss_and_grads(batch)[0]
        p[...] = orig
        assert (up - down) / (2 * eps) == pytest.approx(analytic, rel=1e-6, abs=1e-9), name
        # and one single entry, so a gradient that is right only along random directions still fails
        idx = tuple(int(rng.integers(s)) for s in p.shape)
        p[idx] += eps
        up = model.loss_and_grads(batch)[0]
        p[idx] -= 2 * eps
        down = model.loss_and_grads(batch)[0]
        p[...] = orig
        assert (up - down) / (2 * eps) == pytest.approx(_dense(grads[name], p.shape)[idx], rel=1e-6, abs=1e-8)
    assert loss == pytest.approx(model.loss_and_grads(batch)[0])


def test_adam_clips_the_global_norm_and_updates_only_used_rows():
    params = dict(E=np.ones((4, 2)), w=np.zeros(3))
    opt = padded_numpy.Adam(params, clip=5.0)
    g_rows = (np.array([1, 3]), np.array([[6.0, 0.0], [0.0, 0.0]]))
    opt.update(dict(E=g_rows, w=np.array([0.0, 8.0, 0.0])))  # norm 10: scaled by 1/2
    np.testing.assert_allclose(opt.m["w"], [0.0, 0.1 * 4.0, 0.0])
    np.testing.assert_allclose(opt.m["E"][1], [0.1 * 3.0, 0.0])
    assert (params["E"][[0, 2]] == 1).all() and (opt.m["E"][[0, 2]] == 0).all()
    assert params["E"][1, 0] < 1 and params["w"][1] < 0


def test_level_plan_runs_children_before_parents():
    trees = _tiny_batch("tree")
    plan = tasks.level_plan(trees)
    assert plan.n == sum(len(t) for t in trees) == len(plan.labels)
    assert len(plan.leaf_words) == sum(int((t.words >= 0).sum()) for t in trees)
    prev = len(plan.leaf_words)
    for start, stop, left, right in plan.levels:
        assert start == prev and stop > start
        assert (left < start).all() and (right < start).all()
        assert len(set(left.tolist()) | set(right.tolist())) == 2 * (stop - start)  # one parent per node
        prev = stop
    assert prev == plan.n
    assert sorted(plan.labels.tolist()) == sorted(np.concatenate([t.labels for t in trees]).tolist())


@pytest.mark.parametrize("task", tasks.TASKS)
def test_synthetic_items_are_consistent(task):
    td = tasks.load(task, 12)
    assert len(td.items) == 12
    for it in td.items:
        assert tasks.n_words(task, it) >= 1 and tasks.n_losses(task, it) >= tasks.n_words(task, it) - (task == "lm")
    bs = tasks.batches(task, td.items, 5)
    assert sorted(len(b) for b in bs) == [2, 5, 5]


@pytest.mark.parametrize("system", ["numpy", "autobatch-seq"])
def test_runner_prints_one_json_line(system):
    out = io.StringIO()
    with redirect_stdout(out):
        run.main(["--task", "tagger", "--system", system, "--batch-size", "4", "--sentences", "12", "--warmup", "1",
                  "--check-updates", "2", "--window", "2"])
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["system"] == system and rec["updates"] == 3 and rec["sents_per_s"] > 0
    assert math.isfinite(rec["loss_last"]) and rec["loss_at"]["update"] == 2 and rec["peak_rss_mib"] > 0
    assert ("engine" in rec) == system.startswith("autobatch")  # autobatch reports its engine's counts


def test_runner_batches_the_primitive_tree_by_the_strategy_asked_for():
    recs = {}
    for strategy in ("agenda", "depth"):
        out = io.StringIO()
        with redirect_stdout(out):
            run.main(["--task", "tree", "--system", "autobatch-prim", "--strategy", strategy, "--batch-size", "4",
                      "--sentences", "8", "--warmup", "0", "--check-updates", "2", "--window", "2"])
        recs[strategy] = json.loads(out.getvalue())
    assert {s: r["strategy"] for s, r in recs.items()} == {"agenda": "agenda", "depth": "depth"}
    assert recs["agenda"]["loss_last"] == pytest.approx(recs["depth"]["loss_last"], rel=1e-4)  # same model, same data
    assert recs["agenda"]["engine"]["nodes"] == recs["depth"]["engine"]["nodes"]
    with pytest.raises(SystemExit):  # the other systems name their strategy
        run.main(["--task", "tagger", "--system", "autobatch-agenda", "--strategy", "depth"])


def test_runner_rejects_the_hand_batched_dynet_model_outside_the_lm():
    with pytest.raises(SystemExit):
        run.main(["--task", "tree", "--system", "dynet-batched"])


def _falls(losses):
    # Adam at lr 0.001 moves slowly, but on one repeated minibatch every step must lower the loss.
    return all(map(math.isfinite, losses)) and (np.diff(losses) < 0).all()


# --------------------------------------------------------------------------- PyTorch


@pytest.fixture
def torch1():
    """torch on one thread: with the second core busy (a shared machine), two OpenMP threads make these tiny
    models 10-20x slower, which the tests do not need to measure."""
    torch = pytest.importorskip("torch")
    from bench.peers import torch_models  # noqa: F401  (sets 2 threads at import; undone below)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("task", tasks.TASKS)
def test_torch_trains(task, sparse, torch1):
    from bench.peers import torch_models

    td = tasks.load(task, 8)
    system = torch_models.make(task, td.n_words, td.n_labels, seed=0, sparse=sparse, **SMALL[task])
    assert system.name == ("torch" if sparse else "torch-dense")
    losses = [system.train_batch(td.items) for _ in range(20)]
    assert isinstance(losses[0], float) and _falls(losses), losses


@pytest.mark.parametrize("task", tasks.TASKS)
def test_numpy_trains(task):
    td = tasks.load(task, 8)
    system = padded_numpy.make(task, td.n_words, td.n_labels, seed=0, **SMALL[task])
    losses = [system.train_batch(td.items) for _ in range(20)]
    assert isinstance(losses[0], float) and _falls(losses), losses


def _numpy_into_torch(task, npm, tm):
    # Copy the NumPy model's weights into the torch one (NumPy gates i,f,o,g; torch's i,f,g,o; one bias).
    import torch

    p = {k: torch.from_numpy(v) for k, v in npm.params.items()}

    def lstm(W, U, b, suffix=""):
        H = U.shape[1]
        perm = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
        getattr(tm.lstm, "weight_ih_l0" + suffix).copy_(W[perm])
        getattr(tm.lstm, "weight_hh_l0" + suffix).copy_(U[perm])
        getattr(tm.lstm, "bias_ih_l0" + suffix).copy_(b[perm])
        getattr(tm.lstm, "bias_hh_l0" + suffix).zero_()

    with torch.no_grad():
        tm.embedding.weight.copy_(p["E"])
        if task == "tagger":
            lstm(p["Wf"], p["Uf"], p["bf"])
            lstm(p["Wb"], p["Ub"], p["bb"], "_reverse")
            tm.H.weight.copy_(p["Hm"])
            tm.O.weight.copy_(p["O"])
        elif task == "lm":
            lstm(p["W"], p["U"], p["b"])
            tm.out.weight.copy_(p["V"])
            tm.out.bias.copy_(p["c"])
        else:
            tm.W.weight.copy_(p["W"])
            tm.W.bias.copy_(p["b"])
            tm.U.weight.copy_(p["U"])
            tm.Fl.weight.copy_(p["Fl"])
            tm.Fl.bias.copy_(p["bf"])
            tm.Fr.weight.copy_(p["Fr"])
            tm.S.weight.copy_(p["S"])


@pytest.mark.parametrize("task", tasks.TASKS)
def test_numpy_and_torch_compute_the_same_loss_and_gradients(task, torch1):
    from bench.peers import torch_models

    n_words, n_labels = _sizes(task)
    npm = padded_numpy.make(task, n_words, n_labels, seed=1, dtype=np.float64, **TINY[task])
    tm = torch_models.make(task, n_words, n_labels, sparse=False, **TINY[task]).double()
    _numpy_into_torch(task, npm, tm)
    batch = _tiny_batch(task)
    loss, grads = npm.loss_and_grads(batch)
    t_loss = tm.loss(batch)
    t_loss.backward()
    assert t_loss.item() == pytest.approx(loss, rel=1e-10)
    E = npm.params["E"]
    np.testing.assert_allclose(tm.embedding.weight.grad.numpy(), _dense(grads["E"], E.shape), atol=1e-10)


# --------------------------------------------------------------------------- DyNet (one process per setting)

_DYNET_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, "tests")
from test_peers import TINY, _sizes, _tiny_batch
from bench.peers import dynet_models, padded_numpy, tasks
autobatch = int(sys.argv[1])
dy = dynet_models.configure(autobatch, seed=0)
small = json.loads(sys.argv[2])
out = {}


def lstm_from_numpy(builder, W, U, b):
    px, ph, pb = builder.get_parameters()[0]
    H = U.shape[1]
    px.set_value(W)
    ph.set_value(U)
    pb.set_value(b - np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])  # DyNet adds the forget bias of 1 itself


for task in tasks.TASKS:  # the same weights give the same loss as the NumPy peer
    npm = padded_numpy.make(task, *_sizes(task), seed=2, **TINY[task])
    dm = dynet_models.make(task, *_sizes(task), autobatch=autobatch, **TINY[task])
    p = npm.params
    dm.E.init_from_array(p["E"])
    if task == "tagger":
        lstm_from_numpy(dm.fwd, p["Wf"], p["Uf"], p["bf"])
        lstm_from_numpy(dm.bwd, p["Wb"], p["Ub"], p["bb"])
        dm.pH.set_value(p["Hm"])
        dm.pO.set_value(p["O"])
    elif task == "lm":
        lstm_from_numpy(dm.rnn, p["W"], p["U"], p["b"])
        dm.pW.set_value(p["V"])
        dm.pb.set_value(p["c"])
    else:
        for q, w in zip(dm.pW, np.split(p["W"], 3)):
            q.set_value(w)
        for q, u in zip(dm.pU, np.split(p["U"], 3)):
            q.set_value(u)
        for q, b in zip(dm.pb, np.split(p["b"], 3) + [p["bf"]]):
            q.set_value(b)
        dm.pF[0].set_value(p["Fl"])
        dm.pF[1].set_value(p["Fr"])
        dm.pS.set_value(p["S"])
    dy.renew_cg()
    out["same_weights:" + task] = [dm.loss(_tiny_batch(task)).value(), npm.loss_and_grads(_tiny_batch(task))[0]]
for task in tasks.TASKS:
    td = tasks.load(task, 8)
    systems = [dynet_models.make(task, td.n_words, td.n_labels, seed=0, autobatch=autobatch, batched=batched,
                                 **small[task]) for batched in ([False, True] if task == "lm" else [False])]
    if len(systems) == 2:  # the hand-batched LM starts from the per-sentence LM's weights
        a, b = systems[0].pc, systems[1].pc
        for p, q in zip(a.parameters_list(), b.parameters_list()):
            q.set_value(p.as_array())
        for p, q in zip(a.lookup_parameters_list(), b.lookup_parameters_list()):
            q.init_from_array(p.as_array())
    for system in systems:
        key = system.name.replace("-ab%d" % autobatch, "") + ":" + task
        out[key] = [system.train_batch(td.items) for _ in range(20)]
try:
    dynet_models.configure(1 - autobatch)
except RuntimeError as e:
    out["reconfigure_error"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def dynet_runs():
    if importlib.util.find_spec("dynet") is None:
        pytest.skip("dynet is not installed (pip install dynet38)")
    runs = {}
    for autobatch in (0, 1):
        proc = subprocess.run([sys.executable, "-c", _DYNET_SCRIPT, str(autobatch), json.dumps(SMALL)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[autobatch] = json.loads(proc.stdout.strip().splitlines()[-1])
    return runs


@pytest.mark.parametrize("autobatch", [0, 1])
def test_dynet_trains(dynet_runs, autobatch):
    run_ = dynet_runs[autobatch]
    for key in ("dynet:tagger", "dynet:tree", "dynet:lm", "dynet-batched:lm"):
        assert isinstance(run_[key][0], float) and _falls(run_[key]), (key, run_[key])
    assert "already imported with autobatch" in run_["reconfigure_error"]


@pytest.mark.parametrize("autobatch", [0, 1])
def test_dynet_and_numpy_compute_the_same_loss_from_the_same_weights(dynet_runs, autobatch):
    for task in tasks.TASKS:
        dynet_loss, numpy_loss = dynet_runs[autobatch]["same_weights:" + task]
        assert dynet_loss == pytest.approx(numpy_loss, rel=1e-5), task


def test_dynet_gives_the_same_losses_with_and_without_autobatching(dynet_runs):
    for key, losses in dynet_runs[0].items():
        if key.startswith("dynet"):
            np.testing.assert_allclose(dynet_runs[1][key], losses, rtol=1e-4, err_msg=key)
    # rnnlm-batch's padded and masked minibatch computes the per-sentence model's loss
    np.testing.assert_allclose(dynet_runs[0]["dynet-batched:lm"][0], dynet_runs[0]["dynet:lm"][0], rtol=1e-5)
