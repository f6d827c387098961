"""The batch_map demonstration: an arc-standard parser whose decoding reads values and branches on them."""
import json
import re

import numpy as np
import pytest

import autobatch as ab
from autobatch import data
from autobatch.batch_map import batch_map
from autobatch.examples import parser as P



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


def test_training_learns_the_dev_sets_language_and_main_reports(capsys):
    # The synthetic dev set is drawn from the training set's generator: a dev set of another seed is another
    # "language" (other tags head other tags), on which dev UAS fell below the baseline as the loss fell.
    out = P.main(["--epochs", "4", "--max-train", "120", "--max-dev", "30", "--embed", "16", "--hidden", "16",
                  "--decode-sentences", "5", "--batch-size", "8", "--lr", "0.01"])
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert last == out
    assert re.fullmatch(r"synthetic: 120 train \(0 non-projective left out\) / 30 dev sentences, \d+ train words, "
                        r"\d+ word types, \d+ tags; (left|right)-neighbour-head dev UAS 0\.\d{4}", lines[0])
    assert last["train_loss"][-1] < last["train_loss"][0]
    assert 0 < last["dev_neighbour_baseline"] < 1 and last["baseline_side"] in ("left", "right")
    assert last["dev_uas"] > last["dev_neighbour_baseline"] + 0.1
    assert last["same_trees"] is True and last["data"] == "synthetic"
    assert set(last["decode_sents_per_s"]) == {"map", "dynet_style", "batch_map"}


def test_synthetic_train_and_dev_come_from_one_generator():
    args = P.common_parser("", epochs=1, batch_size=1, lr=1.0, embed=1, hidden=1, max_train=1,
                           max_dev=1).parse_args(["--max-train", "30", "--max-dev", "10", "--seed", "3"])
    train, dev, dropped = P.load(args)
    whole = data.synthetic_tagging(40, vocab_size=1000, seed=3)
    assert dropped == 0 and train == whole[:30] and dev == whole[30:]


def test_the_neighbour_baseline():
    assert P.neighbour_heads(3, -1) == [0, 1, 2] and P.neighbour_heads(3, 1) == [2, 3, 0]
    train = [[2, 3, 0], [2, 0]]  # right-branching
    assert P.neighbour_baseline(train, [[2, 0, 2]]) == ("right", 1 / 3)


def test_runs_on_ewt(capsys, real_data):
    out = P.main(["--data", str(real_data("ud-english-ewt")), "--epochs", "1", "--max-train", "60", "--max-dev", "20", "--embed", "16",
                  "--hidden", "16", "--decode-sentences", "8"])
    assert out["train_sentences"] > 40 and out["dev_sentences"] == 20
