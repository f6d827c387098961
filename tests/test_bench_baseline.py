"""The hand-padded baseline computes the same model as the autobatch code it is compared with."""
import numpy as np

import autobatch as ab
from bench.chains import Model
from bench.padded_rnn import PaddedRNN


def test_padded_baseline_equals_autobatch():
    model = Model(vocab=30, hidden=5, seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    batch = [list(rng.integers(0, 30, n)) for n in (1, 4, 2, 7)]
    ab.renew_cg()
    loss = ab.esum([l for s in batch for l in model.sentence_loss(s)]) / len(batch)
    value = loss.value()
    loss.backward()
    padded_value, padded_grads = PaddedRNN(*[p.value() for p in model.pc.parameters()]).loss_and_grads(batch)
    assert np.isclose(value, padded_value, rtol=1e-12)
    for p, g in zip(model.pc.parameters(), padded_grads):
        np.testing.assert_allclose(p.grad, g, rtol=1e-10, atol=1e-14)
    ab.ParameterCollection(dtype=np.float32)
