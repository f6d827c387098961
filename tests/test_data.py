"""Tests for autobatch.data: vocabulary, corpus readers, synthetic generators, minibatching."""
import importlib.util
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    from autobatch import data
except Exception:  # the rest of the package may be mid-edit; data.py stands alone
    _path = Path(__file__).resolve().parents[1] / "autobatch" / "data.py"
    _spec = importlib.util.spec_from_file_location("autobatch_data_standalone", _path)
    data = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = data  # dataclasses look their module up here
    _spec.loader.exec_module(data)

# --------------------------------------------------------------------------- Vocab


def test_vocab_order_and_lookup():
    v = data.Vocab(["a", "b", "a"], unk="<unk>", specials=["<pad>", "<s>"])
    assert list(v) == ["<pad>", "<s>", "<unk>", "a", "b"]
    assert len(v) == 5
    assert v.index("a") == 3 and v.index("zzz") == 2 == v.unk_id
    assert "a" in v and "<unk>" in v and "zzz" not in v
    assert v.token(4) == "b"
    assert v.token(np.int64(0)) == "<pad>"
    with pytest.raises(IndexError):
        v.token(5)
    with pytest.raises(IndexError):
        v.token(-1)
    assert v.encode(["b", "q", "a"]) == [4, 2, 3]
    assert v.decode([4, 2, 3]) == ["b", "<unk>", "a"]


def test_vocab_without_unk_raises_clear_keyerror():
    v = data.Vocab(["x", "y"], unk=None)
    assert len(v) == 2 and v.unk_id is None
    assert v.encode(["y", "x"]) == [1, 0]
    with pytest.raises(KeyError, match="'nope'.*no unk"):
        v.index("nope")


def test_vocab_build_min_count_and_deterministic_order():
    seqs = [["b", "a", "c"], ["a", "b", "d"], ["a", "e"]]
    v = data.Vocab.build(seqs, min_count=2, specials=["<pad>"])
    # a:3, b:2 kept (by count); c, d, e (count 1) fall to unk
    assert list(v) == ["<pad>", "<unk>", "a", "b"]
    assert v.encode(["c", "a"]) == [1, 2]
    v1 = data.Vocab.build(seqs)
    assert list(v1) == ["<unk>", "a", "b", "c", "d", "e"]  # ties broken by token
    assert list(data.Vocab.build(reversed(seqs))) == list(v1)


def test_vocab_build_counts_unk_token_once():
    v = data.Vocab.build([["<unk>", "x", "<unk>"]])
    assert list(v) == ["<unk>", "x"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.text(min_size=1, max_size=3), max_size=6), max_size=6))
def test_vocab_encode_decode_round_trip(seqs):
    v = data.Vocab.build(seqs, unk=None)
    for s in seqs:
        assert v.decode(v.encode(s)) == s
    assert sorted(v.encode(list(v))) == list(range(len(v)))


# --------------------------------------------------------------------------- CoNLL-U

CONLLU = """\
# newdoc id = doc1
# sent_id = s1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t3:aux\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t3:advmod\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t0:root\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t3:punct\t_

# sent_id = s2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t0:root\t_
"""


def test_read_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    p = tmp_path / "x-ud-dev.conllu"
    p.write_text(CONLLU, encoding="utf-8")
    sents = data.read_conllu(p)
    assert len(sents) == 2  # the second has no trailing blank line
    s = sents[0]
    assert s.words == ["Do", "n't", "go", "."]
    assert s.upos == ["AUX", "PART", "VERB", "PUNCT"]
    assert s.xpos == ["VBP", "RB", "VB", "."]
    assert s.heads == [3, 3, 0, 3]
    assert s.rels == ["aux", "advmod", "root", "punct"]
    assert len(s) == 4
    assert sents[1].words == ["Hi"] and sents[1].heads == [0]
    assert len(data.read_conllu(str(p), max_sentences=1)) == 1


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t3:aux", "expected 10 tab-separated columns, got 9"),
        ("1\tDo\tdo\tAUX\tVBP\t_\tX\taux\t3:aux\t_", "head 'X' is not an integer"),
        ("1\tDo\tdo\tAUX\tVBP\t_\t7\taux\t3:aux\t_", "head 7 out of range"),
        ("one\tDo\tdo\tAUX\tVBP\t_\t0\taux\t3:aux\t_", "word id 'one' is not an integer"),
    ],
)
def test_read_conllu_errors_name_file_and_line(tmp_path, bad_line, message):
    p = tmp_path / "bad.conllu"
    p.write_text("# c\n1\tA\ta\tX\tX\t_\t0\troot\t_\t_\n\n# c2\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as ei:
        data.read_conllu(p)
    assert f"bad.conllu:5: {message}" in str(ei.value)


def test_read_conllu_dir(tmp_path):
    (tmp_path / "en_x-ud-train.conllu").write_text(CONLLU, encoding="utf-8")
    (tmp_path / "en_x-ud-test.conllu").write_text(CONLLU, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignore me")
    splits = data.read_conllu_dir(tmp_path)
    assert sorted(splits) == ["test", "train"]
    assert len(splits["train"]) == 2


# --------------------------------------------------------------------------- SST trees

SST_LINE = "(3 (2 (2 The) (2 Rock)) (4 (3 (2 is) (4 (2 -LRB-) (3 \\/))) (2 .)))"


def test_parse_tree_round_trip_and_shape():
    t = data.parse_tree(SST_LINE)
    assert str(t) == SST_LINE
    assert t.label == 3 and not t.is_leaf() and t.word is None
    assert t.leaves() == ["The", "Rock", "is", "-LRB-", "\\/", "."]
    nodes = t.nodes()
    assert len(nodes) == t.size() == 11  # 6 leaves + 5 internal
    assert sum(n.is_leaf() for n in nodes) == 6
    assert nodes[-1] is t
    seen = set()
    for n in nodes:  # post-order: children before parents
        assert all(id(c) in seen for c in n.children)
        assert len(n.children) in (0, 2)
        seen.add(id(n))
    assert [n.word for n in nodes if n.is_leaf()] == t.leaves()
    assert t.height() == 4
    assert data.parse_tree("(1 word)").height() == 0
    assert data.parse_tree("  (2   (1 a)\t(3 b) ) \n") == data.parse_tree("(2 (1 a) (3 b))")
    assert eval(repr(t), {"parse_tree": data.parse_tree}) == t


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "empty"),
        ("(2 (2 a) (2 b)", "position 0 is never closed"),
        ("(2 (2 a) (2 b)))", "position 15 after the end"),
        ("(2 (2 a))", "1 children"),
        ("(2 (2 a) (2 b) (2 c))", "3 children"),
        ("(2 a b)", "second word 'b' at position 5"),
        ("(x a)", "label 'x' at position 1"),
        ("(2 a (2 b))", "position 5 follows the word"),
        ("(2 (2 a) b)", "word 'b' at position 9"),
        ("(2)", "0 children"),
        ("a", "expected '(' at position 0"),
        ("((2 a))", "expected a label after '(' at position 0"),
    ],
)
def test_parse_tree_malformed(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        data.parse_tree(bad)


def test_read_sst_and_dir(tmp_path):
    (tmp_path / "dev.txt").write_text(SST_LINE + "\n\n(1 (2 a) (0 b))\n", encoding="utf-8")
    (tmp_path / "train.txt").write_text("(1 ok)\n(2 (2 a) (2 b)\n", encoding="utf-8")
    trees = data.read_sst(tmp_path / "dev.txt")
    assert [str(t) for t in trees] == [SST_LINE, "(1 (2 a) (0 b))"]
    assert len(data.read_sst(tmp_path / "dev.txt", max_trees=1)) == 1
    with pytest.raises(ValueError, match=r"train\.txt:2: unbalanced"):
        data.read_sst_dir(tmp_path)
    (tmp_path / "train.txt").write_text("(1 ok)\n", encoding="utf-8")
    splits = data.read_sst_dir(tmp_path)
    assert sorted(splits) == ["dev", "train"] and len(splits["train"]) == 1


def test_deep_tree_has_no_recursion_limit():
    depth = 5000
    s = "(2 " * depth + "(1 x)" + " (3 y))" * depth
    t = data.parse_tree(s)
    assert str(t) == s and t.height() == depth and t.size() == 2 * depth + 1


# --------------------------------------------------------------------------- LM text


def test_read_lm_and_dir(tmp_path):
    (tmp_path / "ptb.valid.txt").write_text(" a b  <unk>\n\n c N \n", encoding="utf-8")
    assert data.read_lm(tmp_path / "ptb.valid.txt") == [["a", "b", "<unk>"], ["c", "N"]]
    assert data.read_lm(tmp_path / "ptb.valid.txt", max_sentences=1) == [["a", "b", "<unk>"]]
    assert list(data.read_lm_dir(tmp_path)) == ["dev"]


# --------------------------------------------------------------------------- synthetic


def test_sentence_lengths_shape_and_mean():
    rng = np.random.default_rng(0)
    lens = data.sentence_lengths(20000, rng, mean=16.3, max_len=60)
    assert lens.shape == (20000,) and lens.min() >= 1 and lens.max() <= 60
    assert abs(lens.mean() - 16.3) < 0.3
    assert np.array_equal(data.sentence_lengths(50, 3), data.sentence_lengths(50, 3))
    assert set(data.sentence_lengths(100, 0, mean=1, max_len=5).tolist()) == {1}
    with pytest.raises(ValueError):
        data.sentence_lengths(5, 0, mean=70, max_len=60)


def _is_projective_tree(heads):
    n = len(heads)
    if sum(h == 0 for h in heads) != 1 or not all(0 <= h <= n for h in heads):
        return False
    for d in range(1, n + 1):  # acyclic: every word reaches the root
        seen, x = set(), d
        while x != 0:
            if x in seen:
                return False
            seen.add(x)
            x = heads[x - 1]
    arcs = [(min(d, h), max(d, h)) for d, h in enumerate(heads, 1) if h]
    root = heads.index(0) + 1
    for a, b in arcs:
        if a < root < b:
            return False
        for c, d in arcs:
            if a < c < b < d:
                return False
    return True


def test_synthetic_tagging_shapes_and_determinism():
    sents = data.synthetic_tagging(200, vocab_size=300, n_tags=12, seed=1)
    assert sents == data.synthetic_tagging(200, vocab_size=300, n_tags=12, seed=1)
    assert sents != data.synthetic_tagging(200, vocab_size=300, n_tags=12, seed=2)
    assert len(sents) == 200
    tags = set()
    for s in sents:
        n = len(s.words)
        assert 1 <= n <= 60
        assert len(s.upos) == len(s.xpos) == len(s.heads) == len(s.rels) == n
        assert all(w.startswith("w") and 0 <= int(w[1:]) < 300 for w in s.words)
        assert _is_projective_tree(s.heads)
        assert [r == "root" for r in s.rels] == [h == 0 for h in s.heads]
        tags.update(s.upos)
    assert tags <= set(data.UPOS_TAGS[:12]) and len(tags) > 6
    assert 10 < np.mean([len(s) for s in sents]) < 23
    # learnable: the word alone predicts the tag most of the time
    by_word = {}
    for s in sents:
        for w, t in zip(s.words, s.upos):
            by_word.setdefault(w, []).append(t)
    majority = sum(max(ts.count(t) for t in set(ts)) for ts in by_word.values())
    assert majority / sum(map(len, by_word.values())) > 0.85
    assert data.synthetic_tagging(0) == []


def test_synthetic_trees_shapes_and_determinism():
    trees = data.synthetic_trees(150, vocab_size=200, seed=4)
    assert [str(t) for t in trees] == [str(t) for t in data.synthetic_trees(150, vocab_size=200, seed=4)]
    assert [str(t) for t in trees] != [str(t) for t in data.synthetic_trees(150, vocab_size=200, seed=5)]
    assert len(trees) == 150
    labels = set()
    for t in trees:
        nodes = t.nodes()
        n = len(t.leaves())
        assert len(nodes) == 2 * n - 1
        assert all(len(x.children) in (0, 2) for x in nodes)
        assert all((x.word is None) != x.is_leaf() for x in nodes)
        labels.update(x.label for x in nodes)
        assert data.parse_tree(str(t)) == t
    assert labels == {0, 1, 2, 3, 4}
    # learnable: a word always carries the same leaf label
    leaf_label = {}
    for t in trees:
        for x in t.nodes():
            if x.is_leaf():
                assert leaf_label.setdefault(x.word, x.label) == x.label


def test_synthetic_lm_shapes_determinism_and_structure():
    sents = data.synthetic_lm(300, vocab_size=500, seed=7)
    assert sents == data.synthetic_lm(300, vocab_size=500, seed=7)
    assert sents != data.synthetic_lm(300, vocab_size=500, seed=8)
    assert len(sents) == 300 and all(1 <= len(s) <= 60 for s in sents)
    assert all(0 <= int(w[1:]) < 500 for s in sents for w in s)
    # local structure: the plug-in estimate of H(next | previous) is well below that of the same
    # generator with the bigram switched off (same sample size, so the same estimation bias)
    control = data.synthetic_lm(300, vocab_size=500, seed=7, p_bigram=0.0)
    assert _conditional_entropy(sents) < _conditional_entropy(control) - 0.5


def _conditional_entropy(sents):
    follow = defaultdict(Counter)
    for s in sents:
        for a, b in zip(s, s[1:]):
            follow[a][b] += 1
    total, h = 0, 0.0
    for c in follow.values():
        cnt = np.array(list(c.values()), dtype=float)
        h -= (cnt * np.log(cnt / cnt.sum())).sum()
        total += cnt.sum()
    return h / total


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_synthetic_trees_round_trip_any_seed(seed):
    for t in data.synthetic_trees(3, vocab_size=50, seed=seed, mean_len=8, max_len=20):
        assert str(data.parse_tree(str(t))) == str(t)


# --------------------------------------------------------------------------- minibatches


def test_minibatches_plain_and_shuffled():
    items = list(range(10))
    assert list(data.minibatches(items, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = list(data.minibatches(items, 3, rng=np.random.default_rng(0)))
    assert [len(b) for b in shuffled] == [3, 3, 3, 1]
    flat = [x for b in shuffled for x in b]
    assert sorted(flat) == items and flat != items
    assert shuffled == list(data.minibatches(items, 3, rng=0))
    assert list(data.minibatches([], 3)) == []
    with pytest.raises(ValueError):
        next(data.minibatches(items, 0))


def test_minibatches_sort_by_groups_similar_items():
    rng = np.random.default_rng(1)
    seqs = [["x"] * int(n) for n in rng.integers(1, 50, size=100)]
    batches = list(data.minibatches(seqs, 10, sort_by=len))
    lens = [len(s) for b in batches for s in b]
    assert lens == sorted(lens)
    batches = list(data.minibatches(seqs, 10, rng=rng, sort_by=len))
    assert sorted(len(s) for b in batches for s in b) == sorted(len(s) for s in seqs)
    spans = [max(map(len, b)) - min(map(len, b)) for b in batches]
    assert max(spans) < 15  # sorted batches stay homogeneous after the batch-order shuffle
    firsts = [min(map(len, b)) for b in batches]
    assert firsts != sorted(firsts)


# --------------------------------------------------------------------------- real data (dev splits only)


def test_real_ewt_dev_counts(real_data):
    sents = data.read_conllu(real_data("ud-english-ewt", "en_ewt-ud-dev.conllu"))
    assert len(sents) == 2001
    assert sum(len(s) for s in sents) == 25147
    assert len({t for s in sents for t in s.upos}) == 17
    for s in sents:  # EWT has non-projective trees, so only check single root and range
        assert sum(h == 0 for h in s.heads) == 1 and all(0 <= h <= len(s) for h in s.heads)


def test_real_sst_dev_counts_and_round_trip(real_data):
    path = real_data("sst-trees", "dev.txt")
    trees = data.read_sst(path)
    assert len(trees) == 1101
    assert sum(len(t.leaves()) for t in trees) == 21274
    assert all(t.size() == 2 * len(t.leaves()) - 1 for t in trees)
    assert {n.label for t in trees for n in t.nodes()} == {0, 1, 2, 3, 4}
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert [str(t) for t in trees] == lines


def test_real_ptb_valid_counts(real_data):
    path = real_data("ptb-lm", "ptb.valid.txt")
    sents = data.read_lm(path)
    text = path.read_text(encoding="utf-8")
    assert len(sents) == 3370
    assert sum(len(s) for s in sents) == len(text.split()) == 70390


def test_autobatch_data_points_the_tests_at_the_data(monkeypatch, tmp_path):
    conftest = Path(__file__).with_name("conftest.py")

    def data_root():
        spec = importlib.util.spec_from_file_location("conftest_probe", conftest)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.DATA

    monkeypatch.setenv("AUTOBATCH_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("AUTOBATCH_DATA")  # the default: ../shared/data beside the repository
    assert data_root() == Path(__file__).resolve().parents[2] / "shared" / "data"
