"""Launch counts: 64 chains of lengths 1..40 with the same step ops run in about (max length x ops per step)
batches, forward and backward — not one per sentence."""
import numpy as np
import pytest

import autobatch as ab

H, VOCAB, OPS_PER_STEP, SLACK = 8, 50, 6, 12


def _build(strategy):
    pc = ab.ParameterCollection(seed=0)
    E, W, b = pc.add_lookup_parameters((VOCAB, H)), pc.add_parameters((H, 2 * H)), pc.add_parameters((H,))
    V = pc.add_parameters((VOCAB, H))
    rng = np.random.default_rng(0)
    lengths = np.concatenate([np.arange(1, 41), rng.integers(1, 41, 24)])
    ab.renew_cg(strategy=strategy)
    losses = []
    for n in lengths:
        h = ab.zeros(H)
        words = rng.integers(0, VOCAB, n + 1)
        for w, nxt in zip(words[:-1], words[1:]):
            # six ops per step: lookup, concat, matmul, add, tanh, and the loss (matmul + pick_neg_log_softmax)
            h = ab.tanh(W @ ab.concat([E[w], h]) + b)
            losses.append(ab.pick_neg_log_softmax(V @ h, nxt))
    loss = ab.esum(losses) / len(lengths)
    loss.value()
    loss.backward()
    return ab.graph_stats()


@pytest.mark.parametrize("strategy", ["depth", "agenda"])
def test_launches_bounded_by_length_not_sentences(strategy):
    stats = _build(strategy)
    bound = 40 * OPS_PER_STEP + SLACK
    assert stats["forward_batches"] <= bound
    assert stats["backward_batches"] <= bound
    assert stats["nodes"] > 10 * bound  # the bound is far below node-by-node execution


def test_agenda_runs_losses_as_one_batch():
    stats = _build("agenda")
    by_sig = stats["by_signature"]
    losses = [v for k, v in by_sig.items() if k.startswith("pick_neg_log_softmax")]
    assert len(losses) == 1 and losses[0]["batches"] == 1
    assert stats["forward_batches"] <= 40 * 4 + SLACK  # the chain's four ops per step, then the losses
    assert stats["forward_batches"] < _build("depth")["forward_batches"]
    ab.ParameterCollection(dtype=np.float32)


def test_recurrent_inputs_are_views_not_copies():
    """Along a chain, step t reads step t-1's output in the order it was written: a slice, no gather."""
    from autobatch.executor import SLICE

    pc = ab.ParameterCollection(seed=0)
    E, W = pc.add_lookup_parameters((VOCAB, H)), pc.add_parameters((H, 2 * H))
    ab.renew_cg()
    outs = []
    for s in range(16):
        h = ab.zeros(H)
        for t in range(10):
            h = ab.tanh(W @ ab.concat([E[(s + t) % VOCAB], h]))
        outs.append(ab.sum_elems(h))
    ab.esum(outs).value()
    g = ab.current_graph()
    concats = [b for b in g.batches if b.sig.prim.name == "concat"]
    assert len(concats) == 10 and all(len(b.nodes) == 16 for b in concats)
    recurrent_reads = [b.plans[1][0] for b in concats[1:]]
    assert recurrent_reads == [SLICE] * 9
    tanh_reads = [b.plans[0][0] for b in g.batches if b.sig.prim.name == "tanh"]
    assert tanh_reads == [SLICE] * 10


def test_agenda_runs_both_directions_of_a_bilstm_in_one_cell_batch_per_step():
    """Word-by-word BiLSTM: each direction has its own gate product (two weight matrices, two signatures), but
    the cell and output updates are one signature. The agenda runs the second direction's product before the
    cell, so each step's cells run as ONE batch; by the mean-depth rule alone the cell ran once per direction."""
    pc = ab.ParameterCollection(seed=0)
    E, O = pc.add_lookup_parameters((VOCAB, H)), pc.add_parameters((5, 2 * H))
    birnn = ab.BiRNN(ab.LSTM(pc, H, H), ab.LSTM(pc, H, H))
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 21, 16)
    values = {}
    for strategy in ("agenda", "off"):
        ab.renew_cg(strategy=strategy)
        rng = np.random.default_rng(1)
        losses = []
        for n in lengths:
            hs = birnn.transduce([E[int(w)] for w in rng.integers(0, VOCAB, n)])
            losses += [ab.pick_neg_log_softmax(O @ h, int(t)) for h, t in zip(hs, rng.integers(0, 5, n))]
        loss = ab.esum(losses)
        values[strategy] = loss.value()
        loss.backward()
        if strategy == "agenda":
            by_sig = ab.graph_stats()["by_signature"]
    cells = [v for k, v in by_sig.items() if k.startswith(("lstm_cell", "lstm_hidden"))]
    assert [v["batches"] for v in cells] == [lengths.max()] * 2
    losses = [v for k, v in by_sig.items() if k.startswith("pick_neg_log_softmax")]
    assert len(losses) == 1 and losses[0]["batches"] == 1  # the losses still wait for the chains' end
    np.testing.assert_allclose(values["agenda"], values["off"], rtol=1e-5)
