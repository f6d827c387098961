"""Run under mpirun by tests/test_distributed.py: ``autobatch.Trainer(parallel=DataParallel)`` with the example
BiLSTM tagger (a lookup table, LSTMs, an MLP) in float64 and Adam. Modes:
  equal — (a) each normalisation, step by step over minibatches of uneven sizes (one of a single example, so
          rank 1's shard is empty): the whole minibatch's loss, the gradient norm and every parameter match one
          process training on the whole minibatches (rank 0 trains that reference too), and the replicas are
          bit-identical after every step; (b) ``fit`` with shuffling and clipping, the same; (c) each rank has
          its own dropout stream.
  stop  — early stopping stops every rank at the same epoch on rank 0's metric (rank 1 never evaluates); only
          rank 0 writes checkpoints and the log; resuming (rank 1 has no copy of the file) continues
          bit-identically to an uninterrupted run and gives each rank back its own dropout stream.
Rank 0 prints "OK <mode>" when every check passed; a failed check aborts the job with the rank's traceback.
"""
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from autobatch import data  # noqa: E402
from autobatch.distributed import DataParallel, communicator  # noqa: E402
from autobatch.examples.tagger import Tagger  # noqa: E402
from autobatch.optim import Adam  # noqa: E402
from autobatch.train import NORMALIZE, Trainer  # noqa: E402

SENTS = data.synthetic_tagging(31, vocab_size=40, n_tags=6, seed=4, mean_len=6, max_len=12)
WORDS = data.Vocab.build([s.words for s in SENTS], min_count=2)
TAGS = data.Vocab.build([s.upos for s in SENTS], unk=None)


def make(comm=None, **trainer_kwargs):
    """A float64 tagger and its Trainer; data-parallel over ``comm`` when given, else one process."""
    model = Tagger(WORDS, TAGS, embed=6, hidden=4, mlp=5, seed=3, dtype=np.float64)
    dp = None if comm is None else DataParallel(model.pc, comm)
    kwargs = dict(batch_size=6, clip=0.5, progress=False, seed=7, parallel=dp)
    kwargs.update(trainer_kwargs)
    return model, Trainer(model.pc, model.loss, Adam(model.pc, lr=0.02), **kwargs)


def checksum(pc):
    return hashlib.sha256(b"".join(p.value().tobytes() for p in pc.parameters())).hexdigest()


def same_everywhere(comm, value, what):
    values = comm.gather_objects(value)
    assert len(set(values)) == 1, f"{what} differs between ranks: {values}"


def close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=what)


def examples():
    """The sentences as (word ids, tag ids)."""
    encoder = Tagger(WORDS, TAGS, embed=2, hidden=2, mlp=2, dtype=np.float64)
    return [encoder.encode(s) for s in SENTS]


def equal(comm):
    train = examples()
    batches, i = [], 0
    for size in (6, 1, 5, 3, 7, 2, 4):  # 1: rank 1's shard is empty; odd sizes: unequal shards
        batches.append(train[i:i + size])
        i += size
    clipped = 0
    for normalize in NORMALIZE:
        model, trainer = make(comm, normalize=normalize)
        if comm.rank == 0:
            ref_model, ref = make(normalize=normalize)
        for k, batch in enumerate(batches):
            loss, norm = trainer.train_batch(batch)
            same_everywhere(comm, checksum(model.pc), f"{normalize}: the parameters after step {k}")
            same_everywhere(comm, (loss, norm), f"{normalize}: the loss and gradient norm of step {k}")
            if comm.rank == 0:
                ref_loss, ref_norm = ref.train_batch(batch)
                close(loss, ref_loss, f"{normalize}: loss of step {k}")
                close(norm, ref_norm, f"{normalize}: gradient norm of step {k}")
                clipped += norm > 0.5
                for p, q in zip(model.pc.parameters(), ref_model.pc.parameters()):
                    close(p.value(), q.value(), f"{normalize}: {p.name} after step {k}")
    # (b) the whole loop: same shuffled minibatches on every rank, clipping, global losses in the history
    model, trainer = make(comm, batch_size=5)
    trainer.fit(train, epochs=2)
    same_everywhere(comm, checksum(model.pc), "the parameters after fit")
    if comm.rank == 0:
        assert clipped > 0, "no step was clipped: the clipping path went untested"
        ref_model, ref = make(batch_size=5)
        ref.fit(train, epochs=2)
        close(trainer.step_losses, ref.step_losses, "fit: the loss of every step")
        close(trainer.monitor.norms, ref.monitor.norms, "fit: the gradient norm of every step")
        for p, q in zip(model.pc.parameters(), ref_model.pc.parameters()):
            close(p.value(), q.value(), f"fit: {p.name}")
    # (c) dropout masks come from pc.rng: one stream per rank
    draws = comm.gather_objects(float(model.pc.rng.random()))
    assert len(set(draws)) == comm.size, f"the ranks share a dropout stream: {draws}"
    return f"{len(NORMALIZE)} normalisations x {len(batches)} steps + fit on {comm.size} ranks"


def stop(comm):
    root = comm.broadcast_object(tempfile.mkdtemp(prefix="ab-dp-") if comm.rank == 0 else None)
    result = stop_in(comm, root)
    comm.gather_objects(None)  # every rank is done with the folder before rank 0 removes it
    if comm.rank == 0:
        shutil.rmtree(root)  # kept when a check fails, for a look at what was written
    return result


def stop_in(comm, root):
    """Early stopping, the checkpoints it writes (rank 0 only) and resuming, all inside ``root``."""
    train = examples()
    calls = []
    script = {0: [0.5, 0.7, 0.6, 0.65, 0.9, 0.95], 1: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}[comm.rank]

    def evaluate(dev):
        calls.append(len(calls))
        return script[len(calls) - 1]

    mine = os.path.join(root, f"rank{comm.rank}")  # a folder per rank: only rank 0's may come to exist
    model, trainer = make(comm, evaluate=evaluate, patience=2, checkpoint_dir=os.path.join(mine, "ckpt"),
                          keep_epochs=True, log_path=os.path.join(mine, "log.jsonl"))
    trainer.fit(train, dev=train[:3], epochs=6)
    same_everywhere(comm, (trainer.epoch, trainer.stopped, trainer.stopper.best_epoch), "where training stopped")
    assert (trainer.epoch, trainer.stopped, trainer.stopper.best_epoch) == (4, True, 2), trainer.history
    assert len(calls) == (4 if comm.rank == 0 else 0), f"rank {comm.rank} evaluated {len(calls)} times"
    same_everywhere(comm, checksum(model.pc), "the restored best parameters")
    written = comm.gather_objects(sorted(os.listdir(mine)) if os.path.isdir(mine) else None)
    assert written == [["ckpt", "log.jsonl"], None], f"what each rank wrote: {written}"
    if comm.rank == 0:
        assert sorted(os.listdir(os.path.join(mine, "ckpt"))) == [
            "epoch_001.npz", "epoch_002.npz", "epoch_003.npz", "epoch_004.npz", "last.npz", "previous.npz"]

    # resume: 1 epoch, then a fresh Trainer continues to 3; rank 1 has no copy of the checkpoint
    straight_model, straight = make(comm)
    straight.fit(train, epochs=3)
    folder = os.path.join(mine, "resume")
    first_model, first = make(comm, checkpoint_dir=folder)
    for _ in range(comm.rank + 1):  # each rank's dropout stream somewhere of its own before the save
        first_model.pc.rng.random()
    first.fit(train, epochs=1)
    saved_stream = first_model.pc.rng.bit_generator.state
    probe_model, probe = make(comm, checkpoint_dir=folder)
    probe.resume(os.path.join(folder, "last.npz"))
    assert probe_model.pc.rng.bit_generator.state == saved_stream, f"rank {comm.rank}: dropout stream not restored"
    later_model, later = make(comm, checkpoint_dir=folder, log_path=os.path.join(mine, "resumed.jsonl"))
    later.fit(train, epochs=3, resume=True)
    assert later.epoch == 3 and len(later.history) == 3
    same_everywhere(comm, checksum(later_model.pc), "the parameters after resuming")
    assert checksum(later_model.pc) == checksum(straight_model.pc), "resuming changed the result"
    assert later.step_losses == straight.step_losses
    if comm.rank == 0:
        with open(os.path.join(mine, "resumed.jsonl")) as f:
            assert len(f.readlines()) == 3
    return f"stopped at epoch 4 on {comm.size} ranks; resumed identically"


if __name__ == "__main__":
    mode = sys.argv[1]
    comm = communicator(True)
    result = comm.run({"equal": equal, "stop": stop}[mode], comm)
    if comm.rank == 0:
        print(f"OK {mode}: {result}", flush=True)
