"""The output layers of issue 13 (``autobatch/output_layers.py``) through their public interface: the adaptive
softmax against PyTorch's AdaptiveLogSoftmaxWithLoss, the class-factored softmax against its definition (classes
binned by frequency or read from a DyNet cluster file), the sampled softmax's shared sample and its importance
correction, every layer batched over ragged sentences under every strategy, word nodes against sentence nodes,
one kernel call per batch, the errors they raise, and the language model trained with each."""
import json
import math

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp

import autobatch as ab
from autobatch import data, output_layers as out
from autobatch.examples import lm
from autobatch.kernels import backend

H, V = 6, 23
SENTENCES = [[3, 0, 7, 22, 1], [5], [9, 9, 2, 14, 20, 11, 4, 0], [17, 6, 1]]  # ragged; targets below


def _targets(s):
    return [(w * 7 + 3) % V for w in s]


def _layers(pc):
    counts = np.arange(V, 0, -1) ** 2.0
    return {"full": out.StandardSoftmax(pc, H, V),
            "class": out.ClassFactoredSoftmax.from_counts(pc, H, counts, n_classes=5),
            "adaptive": out.AdaptiveSoftmax(pc, H, V, [4, 12], div_value=2.0, head_bias=True),
            "sampled": out.SampledSoftmax(pc, H, V, samples=8)}


@pytest.fixture
def model():
    """A float64 collection with an embedding table (the states' source) and every output layer."""
    pc = ab.ParameterCollection(seed=3, dtype=np.float64)
    E = pc.add_lookup_parameters((V, H), init="normal")
    layers = _layers(pc)
    for p in pc.parameters()[1:]:
        p.set_value(np.random.default_rng(len(p.name)).normal(size=p.shape))
    yield pc, E, layers
    ab.ParameterCollection(dtype=np.float32)


def _run(pc, E, build, strategy, seed=11):
    """Build every sentence's loss with ``build(states, targets)``, sum, run, differentiate: value and gradients.
    The collection's stream is reseeded so that a sampled softmax draws the same sample each time."""
    pc.rng = np.random.default_rng(seed)
    pc.zero_grad()
    ab.renew_cg(strategy=strategy)
    total = ab.esum([ab.sum_elems(build(ab.tanh(E[s]), _targets(s))) for s in SENTENCES])
    value = total.value()
    total.backward()
    return value, [p.grad for p in pc.parameters()]


@pytest.mark.parametrize("kind", ["full", "class", "adaptive", "sampled"])
def test_batched_over_ragged_sentences_equals_node_by_node(model, kind):
    pc, E, layers = model
    layer = layers[kind]
    ref = _run(pc, E, layer.loss, "off")
    for strategy in ("depth", "agenda"):
        got = _run(pc, E, layer.loss, strategy)
        assert got[0] == pytest.approx(ref[0], rel=1e-12)
        for a, b in zip(got[1], ref[1]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["full", "class", "adaptive", "sampled"])
def test_word_nodes_equal_sentence_nodes_and_one_kernel_call_per_batch(model, kind):
    pc, E, layers = model
    layer = layers[kind]

    def per_word(hs, ts):
        return ab.esum([layer.loss(h, t) for h, t in zip(ab.rows(hs), ts)])

    seq = _run(pc, E, layer.loss, "agenda")
    report = ab.batching_report()
    words = _run(pc, E, per_word, "agenda")
    assert words[0] == pytest.approx(seq[0], rel=1e-12)
    for a, b in zip(words[1], seq[1]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    name = {"full": "pick_neg_log_softmax", "class": "class_softmax_nll", "adaptive": "adaptive_softmax_nll",
            "sampled": "sampled_softmax_nll"}[kind]
    g = ab.current_graph()
    runs = [b for b in g.batches if b.sig.prim.name == name]
    assert len(runs) == 1 and len(runs[0].nodes) == sum(map(len, SENTENCES))  # every word of every sentence
    assert name in str(report)


@pytest.mark.parametrize("kind", ["full", "class", "adaptive", "sampled"])
def test_log_probs_are_a_distribution_and_nll_reads_it(model, kind):
    pc, E, layers = model
    layer = layers[kind]
    ab.renew_cg()
    hs = [ab.tanh(E[s]) for s in SENTENCES]
    lps = [layer.log_probs(h) for h in hs]
    nlls = [layer.nll(h, _targets(s)) for h, s in zip(hs, SENTENCES)]
    single = layer.log_probs(ab.tanh(E[4]))
    ab.forward(*lps, *nlls, single)
    for lp, nll, s in zip(lps, nlls, SENTENCES):
        lp = lp.value()
        assert lp.shape == (len(s), V)
        np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(nll.value(), -lp[np.arange(len(s)), _targets(s)], rtol=1e-12)
    assert single.shape == (V,)  # a single state: one (V,) vector, the row its word has in a sentence
    np.testing.assert_allclose(single.value(), lps[2].value()[SENTENCES[2].index(4)], rtol=1e-12)


# ---- adaptive softmax: PyTorch's ---------------------------------------------------------------------------


@pytest.mark.parametrize("head_bias", [False, True])
def test_adaptive_softmax_equals_pytorch(head_bias):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    Hd, Vt, cutoffs = 16, 60, [8, 20, 41]
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(Hd, Vt, cutoffs, div_value=2.0, head_bias=head_bias).double()
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    try:
        layer = out.AdaptiveSoftmax(pc, Hd, Vt, cutoffs, div_value=2.0, head_bias=head_bias)
        mine = [layer.head] + ([layer.head_bias] if head_bias else []) + [p for t in layer.tails for p in t]
        theirs = [ref.head.weight] + ([ref.head.bias] if head_bias else []) + [
            lin.weight for t in ref.tail for lin in t]
        for a, b in zip(mine, theirs):
            a.set_value(b.detach().numpy())
        rng = np.random.default_rng(1)
        X = rng.normal(size=(40, Hd))
        T = np.concatenate([rng.integers(lo, hi, 10) for lo, hi in [(0, 8), (8, 20), (20, 41), (41, 60)]])
        Xt = torch.tensor(X, requires_grad=True)
        res = ref(Xt, torch.tensor(T))
        (res.loss * len(T)).backward()  # its loss is the mean; ours is summed
        E = pc.add_lookup_parameters((40, Hd), init=X)  # row i is state i: E's gradient is d loss / d X
        lengths = [1, 7, 12, 20]
        starts = np.cumsum([0] + lengths[:-1])
        for strategy in ("off", "agenda"):
            pc.zero_grad()
            ab.renew_cg(strategy=strategy)
            seqs = [E[list(range(a, a + n))] for a, n in zip(starts, lengths)]
            nll = [layer.nll(s, T[a:a + n]) for s, a, n in zip(seqs, starts, lengths)]
            lp = [layer.log_probs(s) for s in seqs]
            total = ab.esum([ab.sum_elems(x) for x in nll])
            total.backward()
            np.testing.assert_allclose(np.concatenate([x.value() for x in nll]), -res.output.detach().numpy(),
                                       rtol=1e-13, atol=1e-14)
            np.testing.assert_allclose(np.concatenate([x.value() for x in lp]),
                                       ref.log_prob(torch.tensor(X)).detach().numpy(), rtol=1e-13, atol=1e-14)
            np.testing.assert_allclose(E.grad, Xt.grad.numpy(), rtol=1e-12, atol=1e-14)
            for a, b in zip(mine, theirs):
                np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-12, atol=1e-14)
    finally:
        ab.ParameterCollection(dtype=np.float32)


def test_adaptive_softmax_absent_cluster_takes_no_gradient(model):
    pc, E, layers = model
    layer = layers["adaptive"]
    ab.renew_cg()
    pc.zero_grad()
    ab.sum_elems(layer.nll(ab.tanh(E[[1, 2]]), [0, 13])).backward()  # the head and tail cluster 1 only
    assert layer.tails[1][0].has_grad() and not layer.tails[0][0].has_grad() and not layer.tails[0][1].has_grad()


# ---- class-factored softmax --------------------------------------------------------------------------------


def test_class_factored_equals_its_definition(model):
    pc, E, layers = model
    layer = layers["class"]
    cls = layer.classes
    ab.renew_cg()
    lp = layer.log_probs(ab.tanh(E[SENTENCES[2]])).value()
    X = np.tanh(E.value()[SENTENCES[2]])
    lpc = log_softmax(X @ layer.Wc.value().T + layer.bc.value(), axis=1)
    classes = cls.of_row[cls.rank]  # per word id
    for w in range(V):
        mates = np.flatnonzero(classes == classes[w])  # w's class, in id order
        rows = cls.rank[mates]
        within = log_softmax(X @ layer.W.value()[rows].T + layer.b.value()[rows], axis=1)
        np.testing.assert_allclose(lp[:, w], lpc[:, classes[w]] + within[:, list(mates).index(w)], rtol=1e-12)


def test_frequency_classes_bin_by_mass():
    counts = np.array([1, 50, 3, 20, 0, 7, 2, 12, 5], dtype=float)
    classes = out.frequency_classes(counts, 3)
    assert sorted(set(classes)) == [0, 1, 2]
    assert classes[1] == 0 and classes[4] == 2  # the most frequent word opens class 0, an unseen one is in the last
    order = np.argsort(-counts, kind="stable")
    assert (np.diff(classes[order]) >= 0).all()  # classes follow descending frequency
    assert len(set(out.frequency_classes(np.ones(5), 5))) == 5  # one word each when words == classes
    assert len(set(out.frequency_classes(np.array([100.0, 1, 1, 1]), 4))) == 4  # not starved by one heavy word
    with pytest.raises(ValueError, match="n_classes must lie in"):
        out.frequency_classes(counts, 10)


def test_cluster_file_in_dynets_format(tmp_path):
    vocab = data.Vocab(["the", "cat", "sat", "dog", "on"], specials=("<s>",))
    path = tmp_path / "clusters.txt"
    path.write_text("0110\tthe\t93\n10\tcat\n0110 on\n\n10\tdog\n111\t<s>\n111\t<unk>\n0\tsat\n0\tzebra\n")
    classes, names = out.read_clusters(path, vocab)
    assert names == ["0110", "10", "111", "0"]  # numbered in order of first appearance, as DyNet's Dict
    assert dict(zip(vocab, classes)) == {"<s>": 2, "<unk>": 2, "the": 0, "cat": 1, "sat": 3, "dog": 1, "on": 0}
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    try:
        layer = out.ClassFactoredSoftmax.from_cluster_file(pc, 3, path, vocab)
        assert layer.classes.n_classes == 4  # "sat" alone: a singleton class, p(w | class) = 1
        ab.renew_cg()
        h = ab.input_tensor([0.3, -1.0, 0.5])
        lp = layer.log_probs(h).value()
        assert np.exp(lp).sum() == pytest.approx(1.0)
        lpc = log_softmax(layer.Wc.value() @ [0.3, -1.0, 0.5] + layer.bc.value())
        assert lp[vocab.index("sat")] == pytest.approx(lpc[3])
        assert layer.nll(h, vocab.index("sat")).value() == pytest.approx(-lpc[3])
    finally:
        ab.ParameterCollection(dtype=np.float32)
    path.write_text("0\tthe\n1\tcat\n")
    with pytest.raises(ValueError, match=r"5 vocabulary words have no cluster, e.g. \['<s>', '<unk>', 'sat'"):
        out.read_clusters(path, vocab)
    path.write_text("0\tthe\n1\tthe\n")
    with pytest.raises(ValueError, match=r"clusters.txt:2: word 'the' is listed twice"):
        out.read_clusters(path, vocab)
    path.write_text("0\tthe\nlonely\n")
    with pytest.raises(ValueError, match=r"clusters.txt:2: expected 'cluster<TAB>word'"):
        out.read_clusters(path, vocab)


# ---- sampled softmax ---------------------------------------------------------------------------------------


def test_one_sample_per_graph_from_the_seeded_stream(model):
    pc, E, layers = model
    layer = layers["sampled"]
    pc.rng = np.random.default_rng(5)
    ab.renew_cg()
    first = layer.sample()
    nodes = [layer.loss(ab.tanh(E[s]), _targets(s)) for s in SENTENCES]
    assert layer.sample() is first and all(ab.current_graph().n_aux[n.i][1] is first for n in nodes)
    ab.renew_cg()
    assert layer.sample() is not first
    pc.rng = np.random.default_rng(5)
    ab.renew_cg()
    again = layer.sample()
    np.testing.assert_array_equal(again.ids, first.ids)
    assert len(first.ids) <= 8 and (np.diff(first.ids) > 0).all()


def test_sampled_gradient_touches_only_sampled_and_target_rows(model):
    pc, E, layers = model
    layer = layers["sampled"]
    _run(pc, E, layer.loss, "agenda")
    touched = set(np.flatnonzero(np.abs(layer.W.grad).sum(axis=1)))
    allowed = set(layer.sample().ids) | {t for s in SENTENCES for t in _targets(s)}
    assert touched and touched <= allowed
    rows, _ = layer.W.sparse_grad()
    assert set(backend.asnumpy(rows).tolist()) <= allowed  # kept as sparse rows: the optimiser updates only these


def test_sampled_estimate_is_corrected_and_eval_mode_is_exact(model):
    pc, E, layers = model
    layer = layers["sampled"]
    ab.renew_cg()
    h = ab.tanh(E[[2, 5]])
    exact = layer.nll(h, [0, 9]).value()
    with ab.eval_mode():
        np.testing.assert_allclose(layer.loss(h, [0, 9]).value(), exact, rtol=1e-12)
    # The sample estimates the partition function without bias: the mean of exp(loss) over many draws is the
    # exact exp(nll), e.g. Z / exp(s_t); with a proposal far from the model's distribution this needs the log-q
    # correction (without it the mean would be off by a factor of about K / V).
    pc.rng = np.random.default_rng(0)
    ratios = []
    for _ in range(3000):
        ab.renew_cg()
        ratios.append(np.exp(layer.loss(ab.tanh(E[[2, 5]]), [0, 9]).value()))
    np.testing.assert_allclose(np.mean(ratios, axis=0), np.exp(exact), rtol=0.03)


def test_proposals():
    q = out.proposal_distribution("log-uniform", 1000)
    assert q.sum() == pytest.approx(1.0) and (np.diff(q) < 0).all()
    q = out.proposal_distribution("unigram", 3, counts=[2, 0, 6])
    np.testing.assert_allclose(q, [0.25, 0.0, 0.75])
    with pytest.raises(ValueError, match="unknown proposal 'zipf'"):
        out.proposal_distribution("zipf", 3)
    with pytest.raises(ValueError, match="needs the words' counts"):
        out.proposal_distribution("unigram", 3)


# ---- errors ------------------------------------------------------------------------------------------------


def test_bad_input_is_refused_where_it_is_built(model):
    pc, E, layers = model
    for layer in layers.values():
        ab.renew_cg()
        with pytest.raises(ValueError, match=r"needs a state of shape \(6,\).*got shape \(4,\) \(at .*test_softmax"):
            layer.loss(ab.input_tensor(np.zeros(4)), 1)
        with pytest.raises(IndexError, match=r"index 23 out of range for size 23 \(at "):
            layer.loss(ab.tanh(E[[1, 2]]), [0, 23])
        with pytest.raises(ValueError, match=r"1 targets for a sequence of 2 rows \(at "):
            layer.loss(ab.tanh(E[[1, 2]]), [0])
    with pytest.raises(ValueError, match="cutoffs must be distinct increasing ints in"):
        out.AdaptiveSoftmax(pc, H, V, [5, 5])
    with pytest.raises(ValueError, match="leaves tail cluster 1 no dimensions"):
        out.AdaptiveSoftmax(pc, H, V, [5, 10], div_value=4.0)
    with pytest.raises(ValueError, match="class 1 is empty"):
        out.ClassFactoredSoftmax(pc, H, [0, 2, 2])


# ---- the language model with each output layer -------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--softmax", "full"], ["--softmax", "class", "--classes", "8"],
                                  ["--softmax", "sampled", "--samples", "40"],
                                  ["--softmax", "adaptive", "--cutoffs", "10,30"]])
def test_language_model_learns_with_each_output_layer(argv, capsys):
    m = lm.main(["--embed", "16", "--hidden", "16", "--max-train", "150", "--max-dev", "40", "--epochs", "3",
                 "--batch-size", "8", "--lr", "0.02", "--vocab", "60"] + argv)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == m
    assert m["softmax"] == argv[1] and m["dev_perplexity"] < 0.9 * m["unigram_perplexity"]


def test_language_model_reads_a_cluster_file(tmp_path, capsys):
    text = data.synthetic_lm(60, vocab_size=30, seed=0)
    words = data.Vocab.build(text, specials=(lm.BOUNDARY,))
    path = tmp_path / "c.txt"
    path.write_text("".join(f"c{i % 4}\t{w}\n" for i, w in enumerate(words)))
    model = lm.LanguageModel(words, embed=4, hidden=5, softmax="class", clusters=str(path))
    ids = [words.encode(s) for s in text[:5]]
    ab.renew_cg()
    nll = model.nll(ids[0]).value()
    ab.renew_cg()
    lp = model.out.log_probs(model.states(ids[0])).value()
    np.testing.assert_allclose(nll, -lp[np.arange(len(ids[0]) + 1), ids[0] + [model.boundary]], rtol=1e-5)
    assert model.perplexity(ids) == pytest.approx(math.exp(np.mean(np.concatenate(
        [_nll(model, s) for s in ids]))), rel=1e-5)
    assert model.out.classes.n_classes == 4
    ab.ParameterCollection(dtype=np.float32)
    assert logsumexp(lp, axis=1) == pytest.approx(0.0, abs=1e-5)


def _nll(model, s):
    ab.renew_cg()
    return model.nll(s).value()


def test_class_factored_loss_equals_dynets_builder(tmp_path):
    dy = pytest.importorskip("dynet")
    words = ["the", "cat", "sat", "on", "mat", "dog"]
    path = tmp_path / "clusters.txt"  # a cluster's words in id order, so DyNet's rows are ours
    path.write_text("a\tthe\na\tcat\nb\tsat\nc\ton\nc\tmat\nc\tdog\n")
    dpc = dy.ParameterCollection()
    builder = dy.ClassFactoredSoftmaxBuilder(3, str(path), {w: i for i, w in enumerate(words)}, dpc, True)
    pc = ab.ParameterCollection(seed=0, dtype=np.float64)
    try:
        layer = out.ClassFactoredSoftmax.from_cluster_file(pc, 3, path, words)
        theirs = builder.param_collection().parameters_list()  # r2c, cbias, then (W, b) per non-singleton class
        layer.Wc.set_value(theirs[0].as_array())
        layer.bc.set_value(theirs[1].as_array())
        W, b = layer.W.value(), layer.b.value()
        for (lo, hi), (Wk, bk) in zip([(0, 2), (3, 6)], [(theirs[2], theirs[3]), (theirs[4], theirs[5])]):
            W[lo:hi], b[lo:hi] = Wk.as_array(), bk.as_array()
        layer.W.set_value(W)
        layer.b.set_value(b)
        x = [0.3, -1.0, 0.5]
        ab.renew_cg()
        ours = layer.nll(ab.sequence([ab.input_tensor(x)] * 6), list(range(6))).value()
        dy.renew_cg()
        ref = [builder.neg_log_softmax(dy.inputVector(x), w).value() for w in range(6)]
        np.testing.assert_allclose(ours, ref, rtol=1e-5)
    finally:
        ab.ParameterCollection(dtype=np.float32)


def test_unigram_bias_makes_the_untrained_layer_a_unigram_model(model):
    pc, E, layers = model
    counts = np.arange(V) % 5 * 3.0
    logp = np.log((counts + 1) / (counts + 1).sum())
    layers["adaptive, no bias"] = out.AdaptiveSoftmax(pc, H, V, [4, 12], div_value=2.0)  # the fixture's has one
    for kind, layer in layers.items():
        for p in layer.parameters():
            p.set_value(np.zeros(p.shape))
        layer.set_unigram_bias(counts)
        ab.renew_cg()
        lp = layer.log_probs(ab.tanh(E[3])).value()
        if kind.startswith("adaptive"):  # the head's words and each cluster's mass (tails have no bias)
            got = [lp[:4], [logsumexp(lp[4:12]), logsumexp(lp[12:])]]
            want = [logp[:4], [logsumexp(logp[4:12]), logsumexp(logp[12:])]] if kind == "adaptive" else [
                np.full(4, -np.log(6)), np.full(2, -np.log(6))]
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-12)
        else:
            np.testing.assert_allclose(lp, logp, rtol=1e-12)
