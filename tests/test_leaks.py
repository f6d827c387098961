"""Dropped models are freed: the process-wide signature tables and the parameters' links to their last graph
hold nothing that keeps a model, or a finished graph, alive (ensembles, k-fold workers, sweeps, notebooks)."""
import gc
import os
import weakref

import numpy as np

import autobatch as ab
from autobatch import graph

V, D, C = 20, 8, 3


class Tagger:
    """A small model with a lookup table, dense parameters and a recurrent block (its own parameters)."""

    def __init__(self, seed):
        self.pc = ab.ParameterCollection(seed=seed)
        self.E = self.pc.add_lookup_parameters((V, D))
        self.rnn = ab.RNN(self.pc, D, D)
        self.W, self.b = self.pc.add_parameters((C, D)), self.pc.add_parameters(C)

    def loss(self, sentence):
        hs = self.rnn.transduce([self.E[w] for w in sentence])
        return [ab.pick_neg_log_softmax(self.W @ h + self.b, w % C) for h, w in zip(hs, sentence)]


def _data(seed, n=6):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(0, V, rng.integers(2, 5))) for _ in range(n)]


def _train_manually(model, seed):
    opt = ab.Adam(model.pc, lr=0.01)
    for _ in range(2):
        ab.renew_cg()
        loss = ab.esum([term for s in _data(seed) for term in model.loss(s)])
        loss.value()
        model.pc.zero_grad()
        loss.backward()
        opt.step()
    return loss


def _table_sizes():
    """How many shared signatures name a parameter or a constant computed from parameters, and how many such
    constants exist (signatures of kinds alone, e.g. an esum of 7 vectors of (8,), serve every model)."""
    def names_constant(key):
        return type(key[0]) is str or any(type(k) is int and k < 0 for k in key[2:])

    return sum(map(names_constant, graph._SIGNATURES)), len(graph._CONSTANTS), len(graph._OWNED)


def _dead_after_gc(*refs):
    gc.collect()
    return [r() is None for r in refs]


def test_a_model_dropped_after_training_is_collected():
    ab.renew_cg()
    gc.collect()
    before = _table_sizes()
    model = Tagger(0)
    trainer = ab.Trainer(model.pc, model.loss, batch_size=3, progress=False)
    trainer.fit(_data(1), epochs=2)
    refs = [weakref.ref(x) for x in (model, model.pc, model.E, model.W, trainer)]
    del model, trainer  # the current graph is still the last minibatch's: it must not hold the model
    assert _dead_after_gc(*refs) == [True] * len(refs)

    model = Tagger(1)
    loss = _train_manually(model, 2)  # an expression of the current graph survives the model
    refs = [weakref.ref(x) for x in (model, model.pc, model.E, model.W)]
    del model
    assert _dead_after_gc(*refs) == [True] * len(refs)
    assert np.isfinite(loss.value())
    ab.renew_cg()
    gc.collect()
    assert _table_sizes() == before  # every signature and constant naming its parameters is gone


def test_a_parameter_does_not_keep_its_last_graph_alive():
    model = Tagger(2)
    _train_manually(model, 3)
    last = weakref.ref(ab.current_graph())
    ab.renew_cg()
    assert _dead_after_gc(last) == [True]
    assert len(_train_manually(model, 4).g) > 0  # the parameters still work in new graphs


def test_backward_after_the_model_is_gone_adds_nowhere():
    model = Tagger(3)
    ab.renew_cg()
    loss = ab.esum(model.loss([1, 2, 3]))
    del model
    gc.collect()
    loss.backward()  # its parameters are gone: nothing to accumulate into, nothing to fail


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_flat_over_2000_create_train_drop_cycles():
    def cycle(k):
        pc = ab.ParameterCollection(seed=k)
        E, W, b = pc.add_lookup_parameters((V, D)), pc.add_parameters((C, D)), pc.add_parameters(C)
        opt = ab.Adam(pc, lr=0.01)
        ab.renew_cg()
        loss = ab.esum([ab.pick_neg_log_softmax(W @ ab.tanh(E[w]) + b, w % C) for w in range(4)])
        loss.value()
        loss.backward()
        opt.step()

    for k in range(100):  # warm up: the interned shapes, the allocator's arenas
        cycle(k)
    gc.collect()
    rss, sizes = _rss_mb(), _table_sizes()
    for k in range(2000):
        cycle(k)
    gc.collect()
    assert _table_sizes() == sizes
    # Before the fix the same loop grew by ~45 MB (a graph and four signatures kept per model).
    assert _rss_mb() - rss < 8.0


def test_a_finished_graph_is_freed_without_the_cycle_collector():
    """Dropping a graph frees it (and every array of its batches) at once, by reference counting: nothing the
    blocks build makes a reference cycle through it. A cycle leaves it to the collector's full passes, which
    run rarely: a Tree-LSTM with a character BiLSTM per word (thousands of scans per minibatch) grew by 12 GB
    before one ran, when a closure in the recurrent blocks' scan held itself and the graph."""
    pc = ab.ParameterCollection(seed=0)
    E = pc.add_lookup_parameters((V, D))
    blocks = [ab.BiRNN(ab.LSTM(pc, D, 4), ab.LSTM(pc, D, 4)), ab.GRU(pc, D, 4, learned_init=True),
              ab.LSTM(pc, D, 4, layer_norm=True, num_layers=2), ab.RNN(pc, D, 4, dropout=0.2)]
    tree = ab.TreeLSTM(pc, D, 4)
    opt = ab.Adam(pc, lr=0.01)
    gc.collect()
    gc.disable()
    try:
        for strategy in ("agenda", "depth", "off"):
            ab.renew_cg(strategy=strategy)
            terms = []
            for words in _data(1, n=4):
                xs = E[words]  # a sequence: each block's transduce is one scan node
                terms += [ab.sum_elems(b.transduce(xs)) for b in blocks]
                terms.append(ab.sum_elems(blocks[0].transduce([E[w] for w in words])[-1]))  # step by step
                t = ab.data.parse_tree("(1 (1 a) (1 (1 b) (1 c)))")
                terms.append(ab.sum_elems(tree.transduce(t, E[words[:3] + [0] * (3 - len(words))])))
            loss = ab.esum(terms)
            loss.value()
            pc.zero_grad()
            loss.backward()
            opt.step()
            ref = weakref.ref(graph.current())
            del terms, loss, xs
            ab.renew_cg()
            assert ref() is None, f"{strategy}: the graph outlived renew_cg (a reference cycle holds it)"
    finally:
        gc.enable()
