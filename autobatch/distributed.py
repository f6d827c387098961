"""Example-wise data parallelism: each process auto-batches its own share of a minibatch, gradients are summed
across processes once per step, and every replica applies the same update, so parameters stay identical.

The collectives go through a small communicator interface. ``Communicator`` (one process) makes every
collective the identity, so single-process runs need no MPI at all; ``MPICommunicator`` uses mpi4py (the
optional ``mpi`` extra, which also brings an MPI runtime from PyPI). Launch with
``mpirun -n 4 python -m autobatch.examples.tagger --distributed ...``.
"""
import os
import sys
import traceback

import numpy as np

from kernels import backend


class Communicator:
    """A single process: rank 0 of 1; every collective returns its input."""

    rank, size = 0, 1

    def sum(self, array):
        """The elementwise sum of ``array`` over all ranks, identical on every rank."""
        return array

    def gather_all(self, array):
        """Every rank's ``array`` (any first-axis length), concatenated in rank order, on every rank."""
        return array

    def broadcast(self, array, root=0):
        """``root``'s ``array`` (same shape on every rank), copied into ``array`` everywhere."""
        return array

    def broadcast_object(self, obj, root=0):
        """``root``'s picklable object, on every rank."""
        return obj

    def abort(self, message):
        """Stop the whole job (every rank) with an error message."""
        raise SystemExit(message)


class MPICommunicator(Communicator):
    """The MPI world of this job (mpi4py). Sums reduce to rank 0 and broadcast back, so every replica receives
    bit-identical gradients whatever the number of ranks (an all-reduce may round differently per rank)."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def sum(self, array):
        host = np.ascontiguousarray(backend.asnumpy(array))
        total = np.empty_like(host) if self.rank == 0 else None
        self.comm.Reduce(host, total, op=self.MPI.SUM, root=0)
        if self.rank != 0:
            total = np.empty_like(host)
        self.comm.Bcast(total, root=0)
        return backend.xp.asarray(total)

    def gather_all(self, array):
        host = np.ascontiguousarray(backend.asnumpy(array))
        counts = self.comm.allgather(host.shape[0])
        row = int(np.prod(host.shape[1:], dtype=np.int64))
        out = np.empty((sum(counts),) + host.shape[1:], dtype=host.dtype)
        self.comm.Allgatherv(host, [out, [c * row for c in counts]])
        return backend.xp.asarray(out)

    def broadcast(self, array, root=0):
        host = np.ascontiguousarray(backend.asnumpy(array))
        self.comm.Bcast(host, root=root)
        return backend.xp.asarray(host)

    def broadcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def abort(self, message):
        print(message, file=sys.stderr, flush=True)
        self.comm.Abort(1)


def launched_by_mpi():
    """True when this process was started by mpirun/mpiexec (Open MPI, MPICH, PMIx or Slurm launchers)."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"))


def communicator(distributed=None):
    """The communicator for this process: MPI when asked (``distributed=True``) or launched by mpirun,
    otherwise the single-process one. Asking for MPI without mpi4py installed is an error that says how to
    install it."""
    if distributed is None:
        distributed = launched_by_mpi()
    if not distributed:
        return Communicator()
    try:
        return MPICommunicator()
    except ImportError as e:
        raise ImportError("distributed training needs mpi4py and an MPI runtime: pip install -e '.[mpi]'") from e


class DataParallel:
    """Keeps the replicas of one ParameterCollection identical across the ranks of ``comm``.

    On creation every parameter is broadcast from rank 0. After each local ``backward()``, ``sync_gradients()``
    sums the gradients over ranks in few messages: all dense gradients flattened into ONE buffer (one collective
    per step, not one per parameter), and for each lookup table only the rows this step touched (gathered,
    never the whole table). ``volume`` holds the bytes each rank sent in the last sync.
    """

    def __init__(self, pc, comm=None):
        self.pc, self.comm = pc, comm or communicator()
        self.volume = 0
        for p in pc.parameters():
            p.data[...] = self.comm.broadcast(p.data)

    @property
    def rank(self):
        """This process's rank."""
        return self.comm.rank

    @property
    def size(self):
        """The number of processes."""
        return self.comm.size

    @property
    def is_root(self):
        """True on rank 0 (the rank that writes checkpoints and logs)."""
        return self.comm.rank == 0

    def shard(self, items):
        """This rank's share of ``items`` (every size-th item, starting at the rank)."""
        return items[self.comm.rank::self.comm.size]

    def rank_seed(self, seed):
        """A seed for this rank's own random stream (dropout masks differ per rank; parameters do not)."""
        return None if seed is None else (int(seed) * 1_000_003 + self.comm.rank) % 2**63

    def sync_gradients(self):
        """Sum every parameter's gradient over all ranks (in place; call before clipping and the step)."""
        xp = backend.xp
        dense = [p for p in self.pc.parameters() if not p.is_lookup]
        self.volume = 0
        if dense:
            flat = xp.concatenate([p.grad_data().reshape(-1) for p in dense])
            self.volume += flat.nbytes
            total = self.comm.sum(flat)
            offset = 0
            for p in dense:
                n = p.data.size
                p.zero_grad()
                p.accumulate(total[offset:offset + n].reshape(p.shape))
                offset += n
        for p in self.pc.parameters():
            if p.is_lookup:
                rows, grads = p.sparse_grad()
                self.volume += rows.nbytes + grads.nbytes
                all_rows, all_grads = self.comm.gather_all(rows), self.comm.gather_all(grads)
                p.zero_grad()
                if len(all_rows):
                    p.accumulate_rows(all_rows, all_grads)

    def agree(self, obj):
        """Rank 0's value of ``obj`` on every rank (for decisions such as early stopping)."""
        return self.comm.broadcast_object(obj)

    def run(self, main, *args, **kwargs):
        """Call ``main``; if it raises on any rank, print the traceback with the rank and abort the whole job,
        so a failing rank never leaves the others waiting in a collective."""
        try:
            return main(*args, **kwargs)
        except BaseException:
            self.comm.abort(f"rank {self.comm.rank} of {self.comm.size} failed:\n{traceback.format_exc()}")
            raise
