"""bench/build_cost.py: it builds the suite's per-example models and counts what it built; under valgrind it
reads callgrind's instruction total (the parser is checked on callgrind's own summary line)."""
import shutil

import pytest

from bench import build_cost


@pytest.mark.parametrize("task, style, stage", [("tree", "prim", "build"), ("tagger", "agenda", "build"),
                                               ("tree", "prim", "forward"), ("tagger", "agenda", "backward")])
def test_counts_the_nodes_of_the_builds_and_their_time(task, style, stage, capsys):
    argv = ["--task", task, "--style", style, "--stage", stage, "--batch-size", "4", "--no-valgrind"]
    one = build_cost.main(argv)
    two = build_cost.main(argv + ["--repeats", "2"])
    assert one["nodes"] > 4 * 5 and two["nodes"] == 2 * one["nodes"]  # every graph the same, freshly built
    assert one["us_per_node"] > 0
    assert f"{task} {style} {stage}, minibatch 4" in capsys.readouterr().out


def test_each_stage_times_only_itself(monkeypatch):
    """The forward stage's counted thunk computes the value; the build before it runs uncounted."""
    seen = []
    d = build_cost.tasks.load("tree", 4, None, seed=0)
    system = build_cost.autobatch_systems.make("tree", d.n_words, d.n_labels, seed=0, style="prim")
    build_cost.run_stage(system, d.items[:4], "forward", lambda thunk: (seen.append(thunk), thunk()))
    assert len(seen) == 1 and not build_cost.ab.graph.current().has_pending()


def test_reads_callgrinds_instruction_total(monkeypatch):
    """The valgrind run is stubbed (a real one takes minutes): main must parse its stderr summary."""
    calls = []

    class Done:
        stderr = "==1== Events    : Ir\n==1== Collected : 123\n==1==\n==1== I   refs:      1,234,000\n"

    def fake_run(cmd, **kw):
        calls.append(cmd)
        out = next(c.split("=", 1)[1] for c in cmd if c.startswith("--callgrind-out-file="))
        open(out, "w").close()
        return Done()

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/valgrind")
    monkeypatch.setattr(build_cost.subprocess, "run", fake_run)
    result = build_cost.main(["--task", "tree", "--style", "prim", "--batch-size", "4"])
    assert calls and "--toggle-collect=functools_reduce" in calls[0] and "--no-valgrind" in calls[0]
    assert result["instructions_per_node"] == pytest.approx(1_234_000 / result["nodes"])
