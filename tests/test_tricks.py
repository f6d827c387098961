"""The tricks study's machinery (bench/tricks.py, issue 14): its verdicts follow the numbers, and its smoke
version on tiny synthetic data writes TRICKS.md with a row per claim, verdicts recomputable from the cached
runs, and the plots."""
import re

import pytest

from bench import tricks


def test_verdicts_follow_the_numbers():
    assert tricks.verdict([0.80, 0.81, 0.79], [0.85, 0.86, 0.84]).startswith("helps (+5.00 points")
    assert tricks.verdict([0.80, 0.81, 0.79], [0.75, 0.76, 0.74]).startswith("hurts (-5.00 points")
    assert tricks.verdict([0.80, 0.82, 0.78], [0.81, 0.79, 0.83]).startswith("no effect (+1.00 points, within")
    # lower is better (a perplexity): a drop helps
    assert tricks.verdict([120.0, 121.0, 119.0], [110.0, 111.0, 109.0], higher_better=False, scale=1.0,
                          unit="").startswith("helps (-10.00")
    assert tricks.verdict([0.8, 0.8, 0.8], [float("nan")] * 3) == "hurts (diverged)"
    assert tricks.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert tricks.fmt([0.5, 0.7]) == "60.00 ± 14.14"


def test_at_time_reads_the_best_within_the_budget():
    run = {"log": [{"seconds": 2.0, "dev_metric": 0.5}, {"seconds": 2.0, "dev_metric": 0.7},
                   {"seconds": 2.0, "dev_metric": 0.6}]}
    assert tricks.at_time(run, 4.0) == 0.7 and tricks.at_time(run, 3.9) == 0.5
    assert tricks.at_time(run, 1.0) != tricks.at_time(run, 1.0)  # NaN: no epoch finished
    assert tricks.at_time(run, 6.0, higher_better=False) == 0.5


def test_smoke_study_writes_rows_verdicts_and_plots(tmp_path):
    out, work = tmp_path / "TRICKS.md", tmp_path / "work"
    study = tricks.main(["--smoke", "--out", str(out), "--work", str(work)])
    text = out.read_text()
    keys = [r.key for r in study.rows]
    assert keys == ["optimizer", "clipping", "early_stopping", "cell", "layer_norm", "stacking", "learned_init",
                    "gate_bias", "dropout", "dropout_lm", "ensembles", "normalisation"]
    summary = text[text.index("| claim | experiment | result | verdict on this data |"):].split("\n\n")[0]
    assert len(summary.splitlines()) == 2 + len(keys)  # the header, its rule and one row per claim
    for row in study.rows:
        assert f"## {row.key.replace('_', ' ')}" in text and row.verdict in text
        assert re.search(r"helps|hurts|no effect|as claimed|no gain", row.verdict), row.verdict
        for plot in row.plots:
            png = tmp_path / plot
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot})" in text
    assert len(list(tmp_path.glob("tricks_*.png"))) >= 12
    # the verdicts come from the runs: recompute one from the cached results of its runs
    again = tricks.Study(tricks.SCALES["smoke"], "unused", tricks.Runner(work, echo=False), out)
    base, sgd = again.runs(keep_epochs=True), again.runs("--optimizer", "sgd", "--lr", "0.1")
    assert again.runner.runs == 0 and again.runner.cached == 2 * len(tricks.SCALES["smoke"].seeds)
    expected = tricks.verdict([tricks.dev(r) for r in base], [tricks.dev(r) for r in sgd])
    assert study.rows[0].verdict == f"SGD lr 0.1: {expected}"
    assert "synthetic tagging data" in text and "python -m autobatch.examples.tagger --data" in text
    # the full-data runs, recorded by hand in bench/full_runs.md, are carried into every report
    full = tricks.FULL_RUNS.read_text().rstrip()
    assert full.startswith("## Full runs toward published quality") and text.rstrip().endswith(full)
    assert "[Full runs](#full-runs-toward-published-quality)" in text


def test_curves_read_each_members_epochs_from_an_examples_output(tmp_path):
    from bench import curves

    lines = ["EWT: 10 train / 5 dev sentences",
             "epoch 1: train loss 5.3 per minibatch (sum / longest example), 0.51 per token, 171 sents/s; "
             "dev_accuracy 0.91",
             "epoch 2: train loss 1.7 per minibatch (sum / longest example), 0.16 per token, 198 sents/s; "
             "dev_accuracy 0.93; lr x 0.5",
             "epoch 1: train loss 5.1 per minibatch (sum / longest example), 0.50 per token, 170 sents/s; "
             "dev_accuracy 0.90",
             "ensemble of 2: dev_accuracy 0.9400 (members 0.9300, 0.9000)"]
    assert curves.curves(lines, "dev_accuracy") == {1: [0.91, 0.93], 2: [0.90]}
    assert curves.curves(lines, "dev_perplexity") == {}
    log = tmp_path / "run.log"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "curves.png"
    assert curves.main([str(log), "--metric", "dev_accuracy", "--target", "0.95", "--out", str(out)]) == {
        1: [0.91, 0.93], 2: [0.90]}
    assert out.read_bytes()[:4] == b"\x89PNG"
    tagged = ["[seed 3] " + lines[1], "[seed 4] " + lines[3], "[seed 3] " + lines[2]]  # --jobs: interleaved
    assert curves.curves(tagged, "dev_accuracy") == {"seed 3": [0.91, 0.93], "seed 4": [0.90]}
