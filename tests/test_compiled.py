"""The engine's two forms: its hot-path modules compiled by Cython (``pip install -e .``) or run as the same
``.py`` sources (no compiler, ``AUTOBATCH_PURE=1``, or a build older than its source). Both give the same results;
the suite itself runs in both modes (.ci/run)."""
import importlib.machinery
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import autobatch as ab
from autobatch import _mode

ROOT = Path(__file__).resolve().parents[1]

# A small model run in a fresh process: its loss and gradients, and which form of the engine computed them.
SCRIPT = """
import json, sys, numpy as np, autobatch as ab
pc = ab.ParameterCollection(seed=3, dtype=np.float64)
E, W, b = pc.add_lookup_parameters((20, 6)), pc.add_parameters((6, 12)), pc.add_parameters((6,))
out = {}
for strategy in ("off", "depth", "agenda"):
    ab.renew_cg(strategy=strategy)
    losses = []
    for sent in ([1, 4, 2, 9], [3, 3], [5, 7, 11, 2, 8, 1]):
        h = ab.zeros(6)
        for w in sent:
            h = ab.tanh(W @ ab.concat([E[w], h]) + b)
            losses.append(ab.pick_neg_log_softmax(h, w % 6))
    loss = ab.esum(losses)
    out[strategy] = [loss.value()] + [float(p.grad.sum()) for p in (W, b)]
    loss.backward()
    out[strategy] += [float(np.abs(p.grad).sum()) for p in (W, b)]
    pc.zero_grad()
import autobatch.graph as g
print(json.dumps(dict(compiled=ab.compiled, graph=g.__file__, results=out)))
"""


def run(pure):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("AUTOBATCH_PURE", None)
    if pure:
        env["AUTOBATCH_PURE"] = "1"
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def fresh_build():
    """True when every hot-path module has a compiled form at least as new as its sources."""
    folder = ROOT / "autobatch"
    for name in _mode.HOT_PATH:
        stem = name.rpartition(".")[2]
        built = _mode._built(str(folder), stem)
        if built is None or max(map(os.path.getmtime, _mode._inputs(str(folder), stem))) > os.path.getmtime(built):
            return False
    return True


def test_pure_mode_runs_the_python_sources():
    r = run(pure=True)
    assert r["compiled"] is False and r["graph"].endswith("graph.py")


@pytest.mark.skipif(not fresh_build(), reason="the hot path is not compiled (pip install -e . with Cython)")
def test_compiled_mode_gives_the_pure_results():
    pure, compiled = run(pure=True), run(pure=False)
    assert compiled["compiled"] is True and not compiled["graph"].endswith(".py")
    for strategy, values in pure["results"].items():
        assert compiled["results"][strategy] == pytest.approx(values, rel=1e-12, abs=1e-12)


def test_the_strategies_agree_in_this_process_mode():
    r = run(pure=os.environ.get("AUTOBATCH_PURE") == "1")
    off = r["results"]["off"]
    for strategy in ("depth", "agenda"):
        assert r["results"][strategy] == pytest.approx(off, rel=1e-10, abs=1e-12)


def test_this_process_reports_its_mode():
    loaders = [type(sys.modules[m].__loader__) for m in _mode.HOT_PATH]
    assert ab.compiled == all(issubclass(t, importlib.machinery.ExtensionFileLoader) for t in loaders)
    if os.environ.get("AUTOBATCH_PURE") == "1":
        assert ab.compiled is False


def fake_package(tmp_path, monkeypatch, source_age, built_age):
    """A folder holding every hot-path module's .py and an (empty) compiled module, with the given ages in
    seconds; the finder forgets its earlier decisions and honours AUTOBATCH_PURE=0."""
    now = time.time()
    for name in _mode.HOT_PATH:
        stem = name.rpartition(".")[2]
        for path, age in ((tmp_path / f"{stem}.py", source_age),
                          (tmp_path / (stem + importlib.machinery.EXTENSION_SUFFIXES[0]), built_age)):
            path.write_text("X = 1\n")
            os.utime(path, (now - age, now - age))
    monkeypatch.setattr(_mode.SourceFinder, "decided", {})
    monkeypatch.setattr(_mode, "PURE", False)
    return str(tmp_path)


def test_a_build_older_than_its_source_is_ignored_with_a_warning(tmp_path, monkeypatch):
    folder = fake_package(tmp_path, monkeypatch, source_age=100, built_age=50)
    os.utime(tmp_path / "scheduler.py")  # one module edited since the build: none is used compiled
    with pytest.warns(UserWarning, match="autobatch.scheduler.*rebuild"):
        spec = _mode.SourceFinder.find_spec("autobatch.graph", [folder])
    assert spec.origin.endswith("graph.py")


def test_a_build_older_than_a_pxd_it_cimports_is_ignored(tmp_path, monkeypatch):
    folder = fake_package(tmp_path, monkeypatch, source_age=100, built_age=50)
    (tmp_path / "ops.pxd").write_text("from autobatch.other cimport Other\n")
    os.utime(tmp_path / "ops.pxd", (time.time() - 100, time.time() - 100))  # ops' own .pxd is older
    (tmp_path / "other.pxd").write_text("cdef class Other:\n    pass\n")  # newer than the build
    with pytest.warns(UserWarning, match="autobatch.ops"):
        assert _mode.SourceFinder.find_spec("autobatch.ops", [folder]).origin.endswith("ops.py")


def test_an_incomplete_build_is_ignored(tmp_path, monkeypatch):
    folder = fake_package(tmp_path, monkeypatch, source_age=100, built_age=50)
    os.remove(_mode._built(folder, "rnn"))  # (a module the compiler failed on)
    with pytest.warns(UserWarning, match="autobatch.rnn"):
        assert _mode.SourceFinder.find_spec("autobatch.graph", [folder]).origin.endswith("graph.py")


def test_an_up_to_date_build_is_left_to_the_normal_import(tmp_path, monkeypatch):
    folder = fake_package(tmp_path, monkeypatch, source_age=100, built_age=10)
    (tmp_path / "unrelated.pxd").write_text("cdef class Unrelated:\n    pass\n")  # newer, but not cimported
    assert _mode.SourceFinder.find_spec("autobatch.graph", [folder]) is None
    assert _mode.SourceFinder.find_spec("autobatch.ops", [folder]) is None
    assert _mode.SourceFinder.find_spec("autobatch.data", [folder]) is None  # not a hot-path module


def test_autobatch_pure_loads_the_sources_even_of_an_up_to_date_build(tmp_path, monkeypatch):
    folder = fake_package(tmp_path, monkeypatch, source_age=100, built_age=10)
    monkeypatch.setattr(_mode, "PURE", True)
    assert _mode.SourceFinder.find_spec("autobatch.graph", [folder]).origin.endswith("graph.py")


def test_a_pure_python_install_is_left_to_the_normal_import(tmp_path, monkeypatch):
    folder = fake_package(tmp_path, monkeypatch, source_age=100, built_age=10)
    for name in _mode.HOT_PATH:
        os.remove(_mode._built(folder, name.rpartition(".")[2]))
    assert _mode.SourceFinder.find_spec("autobatch.graph", [folder]) is None  # no warning: nothing was built
