"""The batch_map demonstration: an arc-standard parser whose decoding reads values and branches on them."""
import json
from pathlib import Path

import numpy as np
import pytest

import autobatch as ab
from autobatch import data
from autobatch.batch_map import batch_map
from autobatch.examples import parser as P

EWT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ud-english-ewt"


def test_projectivity():
    assert P.projective([2, 0, 2])  # 1 <- 2 -> 3
    assert not P.projective([3, 4, 0, 3])  # arcs 1-3 and 2-4 cross


def test_static_oracle_rebuilds_every_projective_tree():
    for s in data.synthetic_tagging(200, vocab_size=100, seed=4):
        assert P.projective(s.heads)
        gold, state = [None] + s.heads, P.State(len(s.words))
        while not state.done():
            action = state.oracle(gold)
            assert state.legal()[action]
            state.apply(action)
        assert state.heads[1:] == s.heads


@pytest.fixture(scope="module")
def model():
    train = data.synthetic_tagging(60, vocab_size=200, seed=0)
    words = data.Vocab.build([s.words for s in train], min_count=1)
    tags = data.Vocab.build([s.upos for s in train], unk=None)
    m = P.Parser(words, tags, embed=16, pos=4, hidden=8, mlp=16, seed=1, dtype=np.float64)
    return m, [m.encode(s) for s in data.synthetic_tagging(40, vocab_size=200, seed=5)]


def test_batch_map_parses_exactly_as_map(model):
    m, examples = model
    one_by_one = []
    for x in examples:
        ab.renew_cg()
        one_by_one.append(m.parse(x))
    ab.renew_cg()
    assert batch_map(m.parse, examples) == one_by_one
    assert all(len(h) == len(x[0]) and all(0 <= v <= len(h) for v in h) for h, x in zip(one_by_one, examples))


def test_decoding_batches_bounded_by_the_longest_sentence(model):
    m, examples = model
    ab.renew_cg()
    batch_map(m.parse, examples)
    decisions = 2 * max(len(x[0]) for x in examples)  # arc-standard: n shifts and n reductions
    per_decision = 5  # concat, affine, tanh, affine, and the rows first read
    assert ab.graph_stats()["forward_batches"] <= per_decision * decisions + 20


def test_training_lowers_the_loss_and_main_reports(capsys):
    out = P.main(["--epochs", "3", "--max-train", "80", "--max-dev", "20", "--embed", "16", "--hidden", "16",
                  "--decode-sentences", "10", "--batch-size", "16"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == out
    assert last["train_loss"][-1] < last["train_loss"][0]
    assert 0 <= last["dev_uas"] <= 1 and last["same_trees"] is True
    assert set(last["decode_sents_per_s"]) == {"map", "dynet_style", "batch_map"}


@pytest.mark.skipif(not EWT.exists(), reason="UD English EWT not found beside the repository")
def test_runs_on_ewt(capsys):
    out = P.main(["--data", str(EWT), "--epochs", "1", "--max-train", "60", "--max-dev", "20", "--embed", "16",
                  "--hidden", "16", "--decode-sentences", "8"])
    assert out["train_sentences"] > 40 and out["dev_sentences"] == 20
