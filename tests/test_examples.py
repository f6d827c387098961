"""The example programs (issue 4) end to end through ``main(argv)`` on tiny synthetic data: each prints its
metrics as one JSON object on its last line and learns (the tagger beats the majority tag, the Tree-LSTM's loss
falls, the language model beats a unigram model); on the real datasets, when present, a short run parses them and
finishes. Also the models' batched prediction, the SST reader's no-break spaces, checkpoints and resume, and
every error message the examples add."""
import argparse
import json
import math
import re

import numpy as np
import pytest

import autobatch as ab
from autobatch import data
from autobatch.examples import lm, tagger, treelstm
from autobatch.examples.chars import char_vocab

SMALL = ["--embed", "16", "--hidden", "16", "--seed", "0"]


@pytest.fixture(autouse=True)
def float32_default():
    yield
    ab.ParameterCollection(dtype=np.float32)  # the models make float32 collections; leave the default so


def run(module, argv, capsys):
    """``module.main(argv)``; checks that the last printed line is the returned metrics as JSON."""
    metrics = module.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == metrics
    assert any(re.match(r"(\[seed \d+\] )?epoch \d+: train loss", line) for line in lines)
    run.lines = lines
    return metrics


def test_tagger_learns_the_synthetic_task(capsys):
    m = run(tagger, SMALL + ["--max-train", "200", "--max-dev", "60", "--epochs", "4", "--batch-size", "8",
                             "--lr", "0.02", "--mlp", "16", "--vocab", "150"], capsys)
    assert {"dev_accuracy", "dev_majority_baseline", "train_sents_per_s", "train_seconds", "best_epoch",
            "epochs", "train_loss", "wall_seconds"} <= set(m)
    assert m["train_sentences"] == 200 and m["dev_sentences"] == 60 and m["data"] == "synthetic"
    assert m["dev_accuracy"] > m["dev_majority_baseline"] + 0.3
    assert m["train_sents_per_s"] > 0


def test_treelstm_loss_falls(capsys):
    m = run(treelstm, SMALL + ["--max-train", "60", "--max-dev", "20", "--epochs", "4", "--batch-size", "8",
                               "--lr", "0.01", "--vocab", "100"], capsys)
    assert {"dev_root_accuracy", "dev_majority_baseline", "train_trees_per_s", "best_epoch", "train_loss"} <= set(m)
    assert len(m["train_loss"]) == 4 and m["train_loss"][-1] < 0.85 * m["train_loss"][0]
    assert 0.0 <= m["dev_root_accuracy"] <= 1.0


def test_treelstm_leaf_lstm_puts_each_word_in_its_context_and_trains(capsys):
    """With ``--leaf-lstm`` the first word's leaf state changes when the last word does (the BiLSTM's backward
    direction carries it); without, the leaves see their own words only. And it trains end to end."""
    tree = data.parse_tree("(2 (3 (2 a) (1 b)) (4 c))")
    other = data.parse_tree("(2 (3 (2 a) (1 b)) (4 d))")
    words = data.Vocab.build([["a", "b", "c", "d"]])
    for leaf_lstm, moves in ((0, False), (4, True)):
        model = treelstm.TreeSentiment(words, embed=5, hidden=3, leaf_lstm=leaf_lstm)
        first = []
        for t in (tree, other):
            ab.renew_cg()
            first.append(ab.row(model.states(t), 0).value())
        assert (not np.allclose(first[0], first[1])) == moves
    assert {p.name.split(".")[0] for p in model.pc.parameters()} == {"E", "leaf_fwd", "leaf_bwd", "tree", "W", "b"}
    m = run(treelstm, SMALL + ["--max-train", "60", "--max-dev", "20", "--epochs", "4", "--batch-size", "8",
                               "--lr", "0.01", "--vocab", "100", "--leaf-lstm", "8"], capsys)
    assert len(m["train_loss"]) == 4 and m["train_loss"][-1] < 0.85 * m["train_loss"][0]


def test_treelstm_char_vectors_tell_unknown_words_apart_and_train(capsys):
    """With ``--char-dim`` two words unseen in training (both the unknown word's embedding) get different
    leaf states from their spellings, and a leaf equals the tagger's character vector joined to its embedding;
    without, they are the same. And it trains end to end."""
    trees = [data.parse_tree("(2 (3 (2 a) (1 zq)) (4 c))"), data.parse_tree("(2 (3 (2 a) (1 xy)) (4 c))")]
    words = data.Vocab.build([["a", "c"]])
    chars = char_vocab(["a", "c", "x", "y", "z"])
    for char_dim, differ in ((0, False), (3, True)):
        model = treelstm.TreeSentiment(words, embed=5, hidden=3, chars=chars, char_dim=char_dim, char_hidden=2,
                                       dtype=np.float64)
        second = []
        for t in trees:
            ab.renew_cg()
            second.append(ab.row(model.states(t), 1).value())
        assert (not np.allclose(second[0], second[1])) == differ
    ab.renew_cg()
    leaf = model.tree.transduce(trees[0], ab.concat([model.E[words.encode(["a", "zq", "c"])],
                                                     model.char.vectors(model.char.encode(["a", "zq", "c"]))]))
    np.testing.assert_allclose(ab.row(leaf, 1).value(), second[0], rtol=1e-12)
    assert {p.name.split(".")[0] for p in model.pc.parameters()} == {"E", "C", "cfwd", "cbwd", "tree", "W", "b"}
    m = run(treelstm, SMALL + ["--max-train", "60", "--max-dev", "20", "--epochs", "4", "--batch-size", "8",
                               "--lr", "0.01", "--vocab", "100", "--char-dim", "4", "--char-hidden", "3"], capsys)
    assert len(m["train_loss"]) == 4 and m["train_loss"][-1] < 0.85 * m["train_loss"][0]


def test_treelstm_ensemble_trains_members_of_different_seeds_and_averages_their_probabilities(capsys,
                                                                                               monkeypatch):
    trained = []
    real = treelstm.TreeSentiment

    def keep(*a, **k):  # the members, to recompute the ensemble's score by hand
        trained.append(real(*a, **k))
        return trained[-1]

    monkeypatch.setattr(treelstm, "TreeSentiment", keep)
    m = run(treelstm, SMALL + ["--max-train", "60", "--max-dev", "30", "--epochs", "2", "--batch-size", "8",
                               "--lr", "0.01", "--vocab", "100", "--ensemble", "3"], capsys)
    assert len(trained) == 3 and len(m["members"]) == 3
    assert not np.array_equal(trained[0].E.value(), trained[1].E.value())  # own seeds
    assert m["members"][0]["dev_root_accuracy"] == m["dev_root_accuracy"]
    assert all("dev_curve" in member and "test_accuracy" not in member for member in m["members"])
    _, dev = treelstm.load(argparse.Namespace(data=None, max_train=60, max_dev=30, vocab=100, seed=0))  # the run's
    mean = np.mean([ab.ensemble.model_probs(t, dev) for t in trained], axis=0)
    expected = np.mean([p.argmax() == t.label for p, t in zip(mean, dev)])
    assert m["ensemble_dev_root_accuracy"] == pytest.approx(expected)
    assert any(line.startswith("ensemble of 3: dev_root_accuracy") for line in run.lines)


def test_evaluation_methods_score_with_dropout_off_in_either_mode():
    """A test split is scored after training, in train mode: the models' own evaluation methods must switch
    dropout off themselves (the LM's test perplexity was once scored with its dropout on)."""
    text = data.synthetic_lm(12, vocab_size=20, seed=2, mean_len=4, max_len=8)
    words = data.Vocab.build(text, specials=(lm.BOUNDARY,))
    model = lm.LanguageModel(words, embed=6, hidden=5, dropout=0.5,
                             rnn=lambda pc, d, h, name: ab.LSTM(pc, d, h, dropout=0.5, name=name))
    ids = [words.encode(s) for s in text]
    sents = data.synthetic_tagging(12, vocab_size=30, seed=1)
    tagger_model = tagger.Tagger(data.Vocab.build([s.words for s in sents]), data.Vocab.build(
        [s.upos for s in sents], unk=None), embed=6, hidden=5, mlp=4, dropout=0.5)
    examples = [tagger_model.encode(s) for s in sents]
    trees = data.synthetic_trees(12, vocab_size=30, seed=1, mean_len=5, max_len=9)
    sentiment = treelstm.TreeSentiment(data.Vocab.build([t.leaves() for t in trees]), embed=6, hidden=5,
                                       dropout=0.5)
    scores = []
    for mode in (ab.train_mode, ab.eval_mode):
        mode()
        scores.append((model.perplexity(ids), tagger_model.accuracy(examples), sentiment.root_accuracy(trees)))
        assert ab.training() == (mode is ab.train_mode)  # the mode in force is left as it was
    ab.train_mode()
    assert scores[0] == scores[1]


def test_lm_perplexity_falls_below_the_unigram_one(capsys):
    m = run(lm, SMALL + ["--max-train", "150", "--max-dev", "40", "--epochs", "3", "--batch-size", "8",
                         "--lr", "0.02", "--vocab", "60"], capsys)
    assert {"dev_perplexity", "unigram_perplexity", "train_sents_per_s", "best_epoch"} <= set(m)
    assert m["dev_perplexity"] < 0.9 * m["unigram_perplexity"]
    # the loss per token (not per longest sentence) and its perplexity, logged and printed every epoch
    assert len(m["train_loss_per_token"]) == len(m["train_perplexity"]) == m["epochs"]
    for loss, per_token, ppl in zip(m["train_loss"], m["train_loss_per_token"], m["train_perplexity"]):
        assert per_token < loss / 3 and ppl == pytest.approx(math.exp(per_token), rel=1e-4)
    epochs = [line for line in run.lines if line.startswith("epoch ")]
    assert len(epochs) == m["epochs"]
    printed = re.search(r"train loss [\d.]+ per minibatch \(sum / longest example\), ([\d.]+) per token "
                        r"\(perplexity ([\d.]+)\)", epochs[-1])
    assert float(printed[1]) == pytest.approx(m["train_loss_per_token"][-1], abs=1e-4)
    assert float(printed[2]) == pytest.approx(m["train_perplexity"][-1], abs=0.01)


@pytest.mark.parametrize("module,folder,key", [(tagger, "ud-english-ewt", "dev_accuracy"),
                                               (treelstm, "sst-trees", "dev_root_accuracy"),
                                               (lm, "ptb-lm", "dev_perplexity")])
def test_real_data_parses_and_a_short_run_finishes(module, folder, key, capsys, real_data):
    path = real_data(folder)
    m = run(module, SMALL + ["--data", str(path), "--epochs", "1", "--max-train", "200",
                             "--max-dev", "50", "--batch-size", "50"], capsys)
    assert m["epochs"] == 1 and m["data"] == str(path) and math.isfinite(m[key])
    assert m.get("train_sentences", m.get("train_trees")) == 200


def test_lm_vocabulary_is_ptbs_whole_one_under_max_train(capsys, real_data):
    args = lm.common_parser("", epochs=1, batch_size=1, lr=1.0, embed=1, hidden=1, max_train=1, max_dev=1)
    args = args.parse_args(["--data", str(real_data("ptb-lm")), "--max-train", "3", "--max-dev", "2"])
    train, dev, vocab_text = lm.load(args)
    assert len(train) == 3 and len(dev) == 2 and len(vocab_text) == 42068
    assert all(s in vocab_text for s in train)
    # PTB's 10k words are 9,999 in the text (its tenth, the sentence end, is not written) and <s> here
    assert len(data.Vocab.build(vocab_text, specials=(lm.BOUNDARY,))) == 10000


def test_subsets_are_random_fixed_and_in_order():
    from autobatch.examples import subset

    items = list(range(100))  # sorted, as SST's files are by sentiment: the first N would be a biased sample
    picked = subset(items, 10)
    assert picked == sorted(picked) and len(set(picked)) == 10 and picked != items[:10]
    assert subset(items, 10) == picked and subset(items, None) == items and subset(items, 500) == items


def test_checkpoints_log_and_resume(tmp_path, capsys):
    argv = SMALL + ["--max-train", "30", "--max-dev", "10", "--checkpoint-dir", str(tmp_path / "ck"),
                    "--log", str(tmp_path / "log.jsonl")]
    first = run(tagger, argv + ["--epochs", "1"], capsys)
    assert (tmp_path / "ck" / "last.npz").is_file() and first["epochs"] == 1
    second = run(tagger, argv + ["--epochs", "2", "--resume"], capsys)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert second["epochs"] == 2 and [r["epoch"] for r in records] == [1, 2]
    assert second["train_loss"][0] == first["train_loss"][0]  # the first epoch came from the checkpoint
    printed = [float(re.search(r"train loss (\S+) per minibatch", line)[1]) for line in run.lines
               if line.startswith("epoch ")]
    assert printed == [pytest.approx(second["train_loss"][1], abs=1e-4)]  # the resumed epoch's own steps only


def _tagging_model(seed=0):
    sents = data.synthetic_tagging(12, vocab_size=40, seed=seed, mean_len=6, max_len=12)
    words = data.Vocab.build([s.words for s in sents])
    tags = data.Vocab.build([s.upos for s in sents], unk=None)
    model = tagger.Tagger(words, tags, embed=8, hidden=6, mlp=5, seed=seed)
    return model, [model.encode(s) for s in sents]


def test_batched_prediction_equals_one_sentence_at_a_time():
    model, examples = _tagging_model()
    sentences = [w for w, _ in examples] + [[]]
    alone = []
    for s in sentences:
        ab.renew_cg()
        alone.append(model.predict(s))
    assert model.predict_all(sentences, batch_size=5) == alone
    assert model.accuracy(examples) == pytest.approx(
        np.mean([p == t for s, (_, ts) in zip(alone, examples) for p, t in zip(s, ts)]))

    trees = data.synthetic_trees(7, vocab_size=30, seed=1, mean_len=5, max_len=9)
    sentiment = treelstm.TreeSentiment(data.Vocab.build([t.leaves() for t in trees]), embed=6, hidden=5)
    alone = []
    for t in trees:
        ab.renew_cg()
        alone.append(sentiment.predict(t))
    assert sentiment.predict_all(trees, batch_size=3) == alone
    assert sentiment.root_accuracy(trees) == pytest.approx(np.mean([p == t.label for p, t in zip(alone, trees)]))

    text = data.synthetic_lm(5, vocab_size=20, seed=2, mean_len=4, max_len=8)
    model = lm.LanguageModel(data.Vocab.build(text, specials=(lm.BOUNDARY,)), embed=4, hidden=5)
    ids = [model.words.encode(s) for s in text]
    ab.renew_cg()
    preds = ab.batch_map(model.predict, ids)
    assert [len(p) for p in preds] == [len(s) + 1 for s in ids]
    ab.renew_cg()
    assert preds[0] == model.predict(ids[0])
    nll = []
    for s in ids:
        ab.renew_cg()
        nll += list(model.loss(s).value())  # a sequence: one loss per prediction
    assert model.perplexity(ids, batch_size=2) == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)


def test_unigram_perplexity_by_hand():
    # counts over train (+1 smoothing, vocab 3): word 1 twice, word 2 once, boundary 0 twice -> 3, 2, 3 of 8
    got = lm.unigram_perplexity([[1, 2], [1]], [[2, 1]], vocab_size=3, boundary=0)
    assert got == pytest.approx(math.exp(-(math.log(2 / 8) + math.log(3 / 8) + math.log(3 / 8)) / 3))


def test_sst_reader_keeps_a_no_break_space_inside_a_word(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("(3 (2 Film) (4 (2 8\xa01\\/2) (3 rocks)))\n\n(1 (1 bad) (2 .))\n", encoding="utf-8")
    trees = data.read_sst(path)
    assert [t.leaves() for t in trees] == [["Film", "8\xa01\\/2", "rocks"], ["bad", "."]]
    assert [t.label for t in trees] == [3, 1] and trees[0].children[1].label == 4
    assert len(data.read_sst(path, max_trees=1)) == 1
    path.write_text("(3 (2 a) (2 b))\n(3 (2 a) (2 b)\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.txt:2: .*unbalanced"):
        data.read_sst(path)


def test_flag_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tagger.main(["--epochs", "0"])
    assert e.value.code == 2 and "--epochs must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lm.main(["--max-train", "-3"])
    assert "--max-train must be at least 1, got -3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tagger.main(["--mlp", "0"])
    assert "--mlp must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lm.main(["--lr", "0"])
    assert "--lr must be positive, got 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        treelstm.main(["--clip", "-1"])
    assert "--clip must be positive, got -1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        treelstm.main(["--resume"])
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"no file matching '\*-ud-train.conllu'; --data must be the "
                                                r"dataset's folder"):
        tagger.main(["--data", str(tmp_path)])
    for name in ("a-ud-train.conllu", "b-ud-train.conllu"):
        (tmp_path / name).write_text("")
    with pytest.raises(FileNotFoundError, match=r"2 files \(a-ud-train.conllu, b-ud-train.conllu\) matching"):
        tagger.main(["--data", str(tmp_path)])


def test_model_errors():
    no_unk = data.Vocab(["a", "b"], unk=None)
    with pytest.raises(ValueError, match="Tagger: the word vocabulary needs an unknown token"):
        tagger.Tagger(no_unk, no_unk)
    with pytest.raises(ValueError, match="TreeSentiment: the word vocabulary needs an unknown token"):
        treelstm.TreeSentiment(no_unk)
    with pytest.raises(ValueError, match=r"LanguageModel: the vocabulary has no boundary symbol '<s>'; build it "
                                         r"with Vocab.build\(..., specials=\('<s>',\)\)"):
        lm.LanguageModel(data.Vocab(["a"]))


# ---- the training tricks as flags (issue 14) -----------------------------------------------------------------

TINY = SMALL + ["--max-train", "24", "--max-dev", "8", "--epochs", "1", "--batch-size", "8", "--vocab", "60"]
_plain = {}


def _tiny_run(module, flags, capsys, tmp_path):
    """A one-epoch run with ``flags`` and its --trace; the flagless run of the same module is kept to compare."""
    tiny = TINY + (["--mlp", "8"] if module is tagger else [])
    if module not in _plain:
        _plain[module] = run(module, tiny, capsys)
    trace = tmp_path / "trace.json"
    m = run(module, tiny + flags + ["--trace", str(trace)], capsys)
    return m, json.loads(trace.read_text()), _plain[module]


@pytest.mark.parametrize("flags,check", [
    (["--char-dim", "4", "--char-hidden", "3"], "more_params"),
    (["--cell", "gru", "--reset-bias", "0"], "fewer_params"),
    (["--layers", "2", "--combine", "sum"], "more_params"),
    (["--layer-norm"], "more_params"),
    (["--learned-init"], "more_params"),
    (["--forget-bias", "0"], "other_loss"),
    (["--dropout", "0.3"], "other_loss"),
    (["--dropout", "0.3", "--variational"], "other_loss"),
    (["--recurrent-dropout", "0.3"], "other_loss"),
    (["--zoneout", "0.2"], "other_loss"),
    (["--dropconnect", "0.3"], "other_loss"),
    (["--optimizer", "sgd", "--lr", "0.5", "--momentum", "0.5"], "other_loss"),
    (["--normalize", "sum"], "larger_loss"),
    (["--normalize", "batch"], "larger_loss"),
    (["--clip", "none"], "no_clip"),
    (["--clip", "auto"], "no_clip"),  # auto clips after 100 warm-up steps; this run has 3
    (["--clip", "auto", "--clip-warmup", "2"], "auto_clip"),
    (["--clip", "0.01"], "clipped"),
])
def test_every_tagger_trick_flag_trains_end_to_end(flags, check, capsys, tmp_path):
    m, trace, plain = _tiny_run(tagger, flags, capsys, tmp_path)
    assert math.isfinite(m["dev_accuracy"]) and m["epochs"] == 1 and len(m["dev_curve"]) == 1
    assert len(trace["step_losses"]) == len(trace["grad_norms"]) == trace["epoch_steps"][-1] == 3
    if check == "more_params":
        assert m["parameters"] > plain["parameters"]
    elif check == "fewer_params":
        assert m["parameters"] < plain["parameters"]
    elif check == "other_loss":  # the flag reached the model: the same seed trains differently
        assert m["parameters"] == plain["parameters"] and m["train_loss"] != plain["train_loss"]
    elif check == "larger_loss":  # a sum over a minibatch, or per sentence, exceeds the sum / longest sentence
        assert m["train_loss"][0] > plain["train_loss"][0]
    elif check == "auto_clip":  # the threshold: the 95th percentile of the first 2 steps' norms
        assert trace["clip"] == pytest.approx(float(np.percentile(trace["grad_norms"][:2], 95)))
    elif check == "no_clip":
        assert trace["clip"] is None and m["train_loss"] == plain["train_loss"]  # norms here stay below 5
    else:
        assert trace["clip"] == 0.01 and max(trace["grad_norms"]) > 0.01 and m["train_loss"] != plain["train_loss"]


@pytest.mark.parametrize("module,flags", [
    (lm, ["--dropout", "0.3", "--variational", "--cell", "gru", "--layers", "2"]),
    (lm, ["--zoneout", "0.1", "--learned-init", "--optimizer", "sgd", "--normalize", "batch", "--clip", "auto"]),
    (treelstm, ["--dropout", "0.3", "--optimizer", "sgd", "--normalize", "sum", "--clip", "none"]),
])
def test_lm_and_treelstm_trick_flags_train_end_to_end(module, flags, capsys, tmp_path):
    m, trace, plain = _tiny_run(module, flags, capsys, tmp_path)
    key = "dev_perplexity" if module is lm else "dev_root_accuracy"
    assert math.isfinite(m[key]) and m["train_loss"] != plain["train_loss"] and len(trace["step_losses"]) == 3


def _char_tagger(dtype=np.float64):
    sents = data.synthetic_tagging(8, vocab_size=40, seed=3, mean_len=6, max_len=12)
    sents[0].words[0] = "wé"  # a character never seen in training maps to the unknown character
    words = data.Vocab.build([s.words for s in sents[1:]])
    tags = data.Vocab.build([s.upos for s in sents], unk=None)
    chars = data.Vocab.build([list(w) for s in sents[1:] for w in s.words])
    model = tagger.Tagger(words, tags, embed=5, hidden=4, mlp=5, chars=chars, char_dim=3, char_hidden=2,
                          dtype=dtype)
    return model, sents, [model.encode(s) for s in sents]


@pytest.mark.parametrize("strategy", ["off", "depth", "agenda"])
def test_char_word_vectors_equal_a_per_word_reference_and_share_one_scan(strategy):
    model, sents, examples = _char_tagger()
    (word_ids, char_ids), _ = examples[0]
    assert char_ids[0] == [model.chars.encode(["w"])[0], model.chars.index(model.chars.unk)]
    fwd, bwd = model.char.bilstm.fwd, model.char.bilstm.bwd
    reference = []
    for s in sents:  # each word alone: its characters as a list of vectors, read step by step (no scan node)
        for w in s.words:
            ab.renew_cg(strategy="off")
            xs = [model.C[c] for c in (model.chars.encode(list(w)))]
            last_fwd, first_bwd = fwd.transduce(xs)[-1], bwd.transduce(xs, reverse=True)[0]
            reference.append(np.concatenate([last_fwd.value(), first_bwd.value()]))
    ab.renew_cg(strategy=strategy)
    vectors = [model.char.vector(c) for (_, cs), _ in examples for c in cs]
    ab.esum([ab.sum_elems(v) for v in vectors]).value()  # every word in one pass
    np.testing.assert_allclose([v.value() for v in vectors], reference, rtol=1e-10, atol=1e-12)
    if strategy != "off":  # the character BiLSTMs of all words: one scan node each, one kernel call for all
        scans = [v for k, v in ab.graph_stats()["by_signature"].items() if k.startswith("lstm_scan")]
        assert len(scans) == 1 and scans[0] == {"batches": 1, "nodes": len(reference), "mean_size": len(reference)}


def test_char_tagger_batched_equals_one_sentence_at_a_time_with_gradients():
    model, _, examples = _char_tagger()
    xs = [x for x, _ in examples]
    alone = []
    for x in xs:
        ab.renew_cg()
        alone.append(model.predict(x))
    assert model.predict_all(xs, batch_size=3) == alone
    grads = {}
    for strategy in ("off", "agenda"):
        ab.renew_cg(strategy=strategy)
        model.pc.zero_grad()
        loss = ab.esum([ab.sum_elems(model.loss(e)) for e in examples])
        loss.backward()
        grads[strategy] = (loss.value(), model.C.grad.copy(), model.E.grad.copy())
    assert grads["off"][0] == pytest.approx(grads["agenda"][0], rel=1e-12)
    for a, b in zip(grads["off"][1:], grads["agenda"][1:]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert np.abs(grads["agenda"][1]).sum() > 0  # the loss reaches the character embeddings


def test_trick_flag_errors(capsys):
    for argv, message in [(["--clip", "abc"], "--clip expects a number, 'auto' or 'none', got 'abc'"),
                          (["--dropout", "1.5"], "--dropout must lie in [0, 1), got 1.5"),
                          (["--zoneout", "-0.1"], "--zoneout must lie in [0, 1), got -0.1"),
                          (["--variational"], "--variational needs --dropout P > 0"),
                          (["--layers", "0"], "--layers must be at least 1, got 0"),
                          (["--test"], "--test needs --data"),
                          (["--keep-epochs"], "--keep-epochs needs --checkpoint-dir"),
                          (["--char-dim", "-1"], "--char-dim must be at least 0")]:
        with pytest.raises(SystemExit) as e:
            tagger.main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err, argv
    with pytest.raises(ValueError, match="char_dim > 0 needs chars"):
        tagger.Tagger(data.Vocab(["a"]), data.Vocab(["X"], unk=None), char_dim=4)


def test_test_split_scores_on_real_data(capsys, real_data):
    path = real_data("ud-english-ewt")
    m = run(tagger, SMALL + ["--data", str(path), "--epochs", "1", "--max-train", "100", "--max-dev", "30",
                             "--batch-size", "50", "--char-dim", "4", "--test"], capsys)
    assert 0.0 < m["test_accuracy"] < 1.0 and "characters" in run.lines[0]


def test_ensemble_members_trained_in_processes_equal_those_trained_in_turn(capfd, tmp_path):
    """``--jobs 2`` trains the members in two forked processes and sends their parameters back: the same
    members, so the same scores, as one after another; each member checkpoints into its own folder. (capfd:
    the workers print to the inherited file descriptor.)"""
    argv = SMALL + ["--max-train", "80", "--max-dev", "30", "--epochs", "2", "--batch-size", "8", "--lr", "0.02",
                    "--mlp", "16", "--vocab", "100", "--ensemble", "3", "--dropout", "0.2"]
    in_turn = run(tagger, argv, capfd)
    parallel = run(tagger, argv + ["--jobs", "2", "--checkpoint-dir", str(tmp_path)], capfd)
    for key in ("dev_accuracy", "ensemble_dev_accuracy", "train_loss", "dev_curve"):
        assert parallel[key] == in_turn[key]
    assert [m["dev_accuracy"] for m in parallel["members"]] == [m["dev_accuracy"] for m in in_turn["members"]]
    assert all(line.startswith("[seed ") for line in run.lines if "train loss" in line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed_0", "seed_1", "seed_2"]
    assert all((tmp_path / f"seed_{s}" / "last.npz").exists() for s in range(3))
