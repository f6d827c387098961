"""Run under mpirun by tests/test_distributed.py. Modes:
  equal  — ranks train on their shards; rank 0 also trains one process on the whole minibatch and checks the
           parameters agree step for step; all ranks check their replicas are bit-identical.
  fail   — rank 1 raises at step 2; the job must stop with a clear error instead of hanging.
  freeze — rank 1 stops itself (SIGSTOP) at step 2, as a frozen machine would; rank 0 must end the job within
           the collective deadline (AUTOBATCH_MPI_TIMEOUT) instead of waiting forever.
"""
import hashlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

import autobatch as ab  # noqa: E402
from autobatch.distributed import DataParallel, communicator  # noqa: E402

H, VOCAB, TAGS, STEPS, LR = 5, 20, 4, 12, 0.2


def make_model():
    pc = ab.ParameterCollection(seed=11, dtype=np.float64)
    # F: a second, narrower table (the touched rows of both travel in one message); U: never used, so it must
    # come out of every sync without a gradient
    return pc, dict(E=pc.add_lookup_parameters((VOCAB, H)), W=pc.add_parameters((H, 2 * H)),
                    b=pc.add_parameters((H,)), V=pc.add_parameters((TAGS, H)),
                    F=pc.add_lookup_parameters((7, TAGS)), U=pc.add_parameters((3,)))


def loss_of(m, sentence, total):
    h, losses = ab.zeros(H), []
    for w in sentence:
        h = ab.tanh(m["W"] @ ab.concat([m["E"][w], h]) + m["b"])
        logits = m["V"] @ h + m["F"][w % 7] if w % 3 == 0 else m["V"] @ h  # F: on a third of the words
        losses.append(ab.pick_neg_log_softmax(logits, w % TAGS))
    return ab.esum(losses) / total  # normalised by the GLOBAL example count


def step(pc, m, sentences, total, dp=None):
    ab.renew_cg()
    if sentences:
        ab.esum([loss_of(m, s, total) for s in sentences]).backward()
    if dp is not None:
        dp.sync_gradients()
        assert not m["U"].has_grad(), "a parameter no rank used came out of the sync with a gradient"
    for p in pc.parameters():
        if p.is_lookup:
            rows, g = p.sparse_grad()
            p.data[rows] -= LR * g
        else:
            p.data -= LR * p.grad_data()
    pc.zero_grad()


def checksum(pc):
    return hashlib.sha256(b"".join(p.value().tobytes() for p in pc.parameters())).hexdigest()


def main(mode):
    comm = communicator(True)
    pc, m = make_model()
    dp = DataParallel(pc, comm)
    rng = np.random.default_rng(0)
    batches = [[list(rng.integers(0, VOCAB, rng.integers(1, 9))) for _ in range(6)] for _ in range(STEPS)]
    if dp.is_root:
        ref_pc, ref_m = make_model()
    for k, batch in enumerate(batches):
        if mode == "fail" and k == 2 and dp.rank == 1:
            raise ValueError("rank 1 met a bad example")
        if mode == "freeze" and k == 2 and dp.rank == 1:
            os.kill(os.getpid(), signal.SIGSTOP)
        step(pc, m, dp.shard(batch), len(batch), dp)
        sums = comm.comm.allgather(checksum(pc))
        assert len(set(sums)) == 1, f"replicas differ after step {k}"
        if dp.is_root:
            step(ref_pc, ref_m, batch, len(batch))
            for p, q in zip(pc.parameters(), ref_pc.parameters()):
                np.testing.assert_allclose(p.value(), q.value(), rtol=1e-12, atol=1e-14)
    if dp.is_root:
        print(f"OK {STEPS} steps on {dp.size} ranks, last sync volume {dp.volume} bytes")


if __name__ == "__main__":
    mode = sys.argv[1]
    comm = communicator(True)
    DataParallel(ab.ParameterCollection(), comm).run(main, mode)
