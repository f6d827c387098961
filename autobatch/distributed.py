"""Example-wise data parallelism: each process auto-batches its own share of a minibatch, gradients are summed
across processes once per step, and every replica applies the same update, so parameters stay identical.

The collectives go through a small communicator interface. ``Communicator`` (one process) makes every
collective the identity, so single-process runs need no MPI at all; ``MPICommunicator`` uses mpi4py (the
optional ``mpi`` extra, which also brings an MPI runtime from PyPI). Launch with
``mpirun -n 4 python -m autobatch.examples.tagger --distributed ...``.

Every collective has a deadline: a rank that stops answering (stopped with SIGSTOP, swapped out, stuck in a
loop) ends the job with "rank r of n did not answer within N s" instead of leaving the others waiting forever
(a rank that dies is already noticed by mpirun, and one that raises aborts the job through ``run``).
"""
import os
import sys
import time
import traceback

import numpy as np

from autobatch.kernels import backend

from . import regularize as _regularize


class Communicator:
    """A single process: rank 0 of 1; every collective returns its input."""

    rank, size = 0, 1

    def sum(self, array):
        """The elementwise sum of ``array`` over all ranks, identical on every rank."""
        return array

    def gather_bytes(self, data, sizes):
        """Every rank's uint8 vector ``data``, concatenated in rank order, on every rank; ``sizes`` (every
        rank's length, known to all) saves the exchange of lengths."""
        return data

    def broadcast(self, array, root=0):
        """``root``'s ``array`` (same shape on every rank), copied into ``array`` everywhere."""
        return array

    def broadcast_object(self, obj, root=0):
        """``root``'s picklable object, on every rank."""
        return obj

    def max(self, value):
        """The largest of every rank's Python number ``value``, on every rank."""
        return value

    def gather_objects(self, obj):
        """Every rank's picklable ``obj``, as a list in rank order, on every rank."""
        return [obj]

    def abort(self, message):
        """Stop the whole job (every rank) with an error message."""
        raise SystemExit(message)

    def run(self, main, *args, **kwargs):
        """Call ``main``; if it raises on any rank of a job of several, print the traceback with the rank and
        abort the whole job, so a failing rank never leaves the others waiting in a collective. A single
        process lets the exception through unchanged."""
        try:
            return main(*args, **kwargs)
        except BaseException:
            if self.size > 1:
                self.abort(failure_message(self))
            raise


TIMEOUT = 600.0  # seconds; long enough for rank 0 to evaluate a dev set while the others wait for its metric
_ARRIVED, _GO = 0x6162, 0x6163  # the point-to-point tags of the check before each collective


def collective_timeout(timeout=None):
    """The deadline of a collective in seconds, None for none: ``timeout`` if given, else the environment's
    ``AUTOBATCH_MPI_TIMEOUT`` (``0``, ``off`` or ``none`` turn it off), else ``TIMEOUT``."""
    if timeout is None:
        text = os.environ.get("AUTOBATCH_MPI_TIMEOUT", "").strip().lower()
        if not text:
            return TIMEOUT
        if text in ("0", "off", "none"):
            return None
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"AUTOBATCH_MPI_TIMEOUT must be a number of seconds, 0, off or none; got "
                             f"{text!r}") from None
    timeout = float(timeout)
    if not timeout >= 0:
        raise ValueError(f"the collective timeout must be >= 0 seconds (0: none), got {timeout}")
    return timeout or None


class MPICommunicator(Communicator):
    """The MPI world of this job (mpi4py). Sums reduce to rank 0 and broadcast back, so every replica receives
    bit-identical gradients whatever the number of ranks (an all-reduce may round differently per rank).

    ``timeout`` (seconds; default ``collective_timeout()``: ``AUTOBATCH_MPI_TIMEOUT`` or 600; 0 for none) is
    the deadline of every collective. Before each one, every rank tells rank 0 it has arrived and waits for
    rank 0's go (two small messages per rank, polled without spinning the CPU). Rank 0 waits ``timeout``
    seconds for the others and the others twice as long for rank 0, so that rank 0, which knows which rank is
    missing, speaks first; then the job is aborted with "rank r of n did not answer within N s"."""

    def __init__(self, comm=None, timeout=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = collective_timeout(timeout)
        self._round = 0

    def _all_arrived(self):
        """Return once every rank has reached the same collective; abort the job if one has not within the
        deadline. Point-to-point messages keep their order per pair and tag, so round k's messages match."""
        if self.timeout is None or self.size == 1:
            return
        self._round += 1
        token = np.array([self._round], dtype=np.int64)
        if self.rank == 0:
            others = list(range(1, self.size))
            got = [np.empty(1, dtype=np.int64) for _ in others]
            self._wait([self.comm.Irecv(buf, source=r, tag=_ARRIVED) for r, buf in zip(others, got)], others,
                       self.timeout)
            self.MPI.Request.Waitall([self.comm.Isend(token, dest=r, tag=_GO) for r in others])
        else:
            sent = self.comm.Isend(token, dest=0, tag=_ARRIVED)
            got = [np.empty(1, dtype=np.int64)]
            self._wait([self.comm.Irecv(got[0], source=0, tag=_GO)], [0], 2 * self.timeout)
            sent.Wait()
        if any(int(buf[0]) != self._round for buf in got):  # a bug, not a late rank: say so
            self.abort(f"rank {self.rank} of {self.size}: the ranks disagree on how many collectives they ran "
                       f"({self._round} here, {[int(b[0]) for b in got]} there)")

    def _wait(self, requests, ranks, seconds):
        """Wait for ``requests`` (one per rank of ``ranks``) for at most ``seconds``; aborts the job naming
        the first rank whose request is still open. Polls without pause for the first millisecond (the ranks
        of a step usually arrive together: a sleep would add its whole length to every collective), then
        sleeps between polls, up to 2 ms, so that a long wait costs no CPU."""
        now = time.monotonic()
        deadline, spin_until, pause = now + seconds, now + 1e-3, 5e-5
        while not self.MPI.Request.Testall(requests):
            now = time.monotonic()
            if now > deadline:
                late = [r for r, req in zip(ranks, requests) if not req.Test()]
                if late:
                    self.abort(f"rank {late[0]} of {self.size} did not answer within {seconds:g} s (rank "
                               f"{self.rank} waited for it in a collective; AUTOBATCH_MPI_TIMEOUT sets the "
                               f"deadline)")
            if now > spin_until:
                time.sleep(pause)
                pause = min(2 * pause, 2e-3)

    def sum(self, array):
        self._all_arrived()
        host = np.ascontiguousarray(backend.asnumpy(array))
        total = np.empty_like(host) if self.rank == 0 else None
        self.comm.Reduce(host, total, op=self.MPI.SUM, root=0)
        if self.rank != 0:
            total = np.empty_like(host)
        self.comm.Bcast(total, root=0)
        return backend.xp.asarray(total)

    def gather_bytes(self, data, sizes):
        self._all_arrived()
        out = np.empty(sum(sizes), dtype=np.uint8)
        self.comm.Allgatherv(np.ascontiguousarray(data, dtype=np.uint8), [out, list(sizes)])
        return out

    def broadcast(self, array, root=0):
        self._all_arrived()
        host = np.ascontiguousarray(backend.asnumpy(array))
        self.comm.Bcast(host, root=root)
        return backend.xp.asarray(host)

    def broadcast_object(self, obj, root=0):
        self._all_arrived()
        return self.comm.bcast(obj, root=root)

    def max(self, value):
        self._all_arrived()
        return self.comm.allreduce(value, op=self.MPI.MAX)

    def gather_objects(self, obj):
        self._all_arrived()
        return self.comm.allgather(obj)

    def abort(self, message):
        print(message, file=sys.stderr, flush=True)
        self.comm.Abort(1)


def failure_message(comm, error=None):
    """What a failing rank prints before it aborts the job: its rank, the job's size and the traceback of
    ``error`` (default: the exception being handled)."""
    text = traceback.format_exc() if error is None else "".join(traceback.format_exception(error))
    return f"rank {comm.rank} of {comm.size} failed:\n{text}"


def launched_by_mpi():
    """True when this process was started by mpirun/mpiexec (Open MPI, MPICH, PMIx or Slurm launchers)."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"))


def communicator(distributed=None, timeout=None):
    """The communicator for this process: MPI when asked (``distributed=True``) or launched by mpirun,
    otherwise the single-process one. ``timeout``: the deadline of every collective (see ``MPICommunicator``).
    Asking for MPI without mpi4py installed is an error that says how to install it."""
    if distributed is None:
        distributed = launched_by_mpi()
    if not distributed:
        return Communicator()
    try:
        return MPICommunicator(timeout=timeout)
    except ImportError as e:
        raise ImportError("distributed training needs mpi4py and an MPI runtime: pip install -e '.[mpi]'") from e


class DataParallel:
    """Keeps the replicas of one ParameterCollection identical across the ranks of ``comm``.

    On creation every parameter is broadcast from rank 0, then (with several ranks) each rank's ``pc.rng``, the
    stream dropout masks are drawn from, is re-seeded with ``rank_seed(pc.seed)`` so masks differ per rank.
    Create it after the model's parameters: one added later would start from this rank's own stream.

    After each local ``backward()``, ``sync_gradients()`` sums the gradients over ranks in two messages: all
    dense gradients flattened into ONE buffer (not one collective per parameter), and of every lookup table
    only the rows this step touched, all tables in ONE gather (never a whole table). ``volume`` holds the bytes
    this rank sent in the last sync (``dense_bytes`` + ``sparse_bytes``); ``bytes_per_sync()`` the mean so far.

    ``Trainer(..., parallel=dp)`` does all of this per step; launch with ``mpirun -n N python script.py`` and
    wrap the script's main in ``dp.run`` (or ``comm.run``) so that one failing rank aborts the job.
    """

    def __init__(self, pc, comm=None):
        self.pc, self.comm = pc, comm or communicator()
        self.volume = self.dense_bytes = self.sparse_bytes = 0
        self.syncs, self.bytes_sent = 0, 0
        self.broadcast_parameters()
        if self.comm.size > 1:
            # In place, so that anything holding pc.rng sees the new stream; the mask stream built on it may
            # hold uniforms drawn before, identical on every rank: drop them, the next dropout starts afresh.
            pc.rng.bit_generator.state = np.random.default_rng(self.rank_seed(pc.seed)).bit_generator.state
            _regularize.reset_noise(pc)

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

    def broadcast_parameters(self):
        """Copy rank 0's value of every parameter to every rank (at creation, and after rank 0 loads a
        checkpoint)."""
        for p in self.pc.parameters():
            p.data[...] = self.comm.broadcast(p.data)

    def shard(self, items):
        """This rank's share of ``items`` (every size-th item, starting at the rank); empty when there are
        fewer items than ranks past this one."""
        return items[self.comm.rank::self.comm.size]

    def rank_seed(self, seed):
        """A seed for this rank's own random stream (dropout masks differ per rank; parameters do not)."""
        return None if seed is None else (int(seed) * 1_000_003 + self.comm.rank) % 2**63

    def sync_gradients(self, *values):
        """Sum every parameter's gradient over all ranks (in place; call before clipping and the step), and
        the numbers ``values`` (e.g. this rank's share of the loss) with them; returns those sums as a NumPy
        vector, computed in the parameters' dtype.

        Two messages per step, however many parameters and tables: every dense gradient in ONE flattened
        buffer, summed; then the rows of every lookup table that this step touched, gathered from all ranks in
        ONE message (never the whole table). The dense buffer also carries ``values``, each rank's count of
        touched rows per table (so the gather needs no size exchange of its own), and a flag per dense
        parameter: one that no rank's backward reached keeps no gradient, as in one process, where the
        optimiser then skips it and its Adam step count stays put. A rank with no examples this step (an empty
        shard) contributes zeros and no rows."""
        xp = backend.xp
        size, rank = self.comm.size, self.comm.rank
        params = self.pc.parameters()
        dense = [p for p in params if not p.is_lookup]
        tables = [p for p in params if p.is_lookup]
        dtype = dense[0].dtype if dense else self.pc.dtype
        sparse = [tuple(np.ascontiguousarray(backend.asnumpy(a)) for a in p.sparse_grad()) for p in tables]
        counts = np.zeros((len(tables), size))
        counts[:, rank] = [len(rows) for rows, _ in sparse]
        if counts.max(initial=0) >= 2 ** (np.finfo(dtype).nmant + 1):
            raise OverflowError(f"sync_gradients: {int(counts.max())} touched rows cannot be counted exactly in "
                                f"{np.dtype(dtype).name}")
        tail = np.concatenate([[float(p.has_grad()) for p in dense], [float(v) for v in values],
                               counts.reshape(-1)]).astype(dtype)
        flat = xp.concatenate([p.grad_data().reshape(-1) for p in dense] + [xp.asarray(tail)])
        total = self.comm.sum(flat)
        n_dense = sum(p.data.size for p in dense)
        reached = backend.asnumpy(total[n_dense:n_dense + len(dense)]) > 0
        offset = 0
        for p, any_rank in zip(dense, reached):
            n = p.data.size
            p.zero_grad()
            if any_rank:
                p.accumulate(total[offset:offset + n].reshape(p.shape))
            offset += n
        offset = n_dense + len(dense)
        sums = np.array(backend.asnumpy(total[offset:offset + len(values)]), dtype=np.float64)
        counts = np.rint(backend.asnumpy(total[offset + len(values):])).astype(np.int64).reshape(len(tables), size)
        self.dense_bytes = flat.nbytes
        self.sparse_bytes = sum(rows.nbytes + grads.nbytes for rows, grads in sparse)
        if counts.any():
            self._gather_rows(tables, sparse, counts)
        else:
            for p in tables:
                p.zero_grad()
        self.volume = self.dense_bytes + self.sparse_bytes
        self.syncs += 1
        self.bytes_sent += self.volume
        return sums

    def _gather_rows(self, tables, sparse, counts):
        """Every rank's touched rows of every table in one byte message (per rank: each table's row indices
        as int64, then its row gradients), added into the tables' gradients in rank order."""
        local = [np.asarray(a, dtype=np.int64 if i == 0 else None).reshape(-1).view(np.uint8)
                 for rows, grads in sparse for i, a in enumerate((rows, grads))]
        row_bytes = [8 + int(np.prod(p.shape[1:])) * p.dtype.itemsize for p in tables]
        sizes = [int(sum(counts[t, r] * row_bytes[t] for t in range(len(tables)))) for r in range(self.size)]
        data = self.comm.gather_bytes(np.concatenate(local) if local else np.zeros(0, np.uint8), sizes)
        pieces = [([], []) for _ in tables]
        offset = 0
        for r in range(self.size):
            for t, p in enumerate(tables):
                k = int(counts[t, r])
                pieces[t][0].append(np.frombuffer(data, np.int64, k, offset))
                offset += 8 * k
                n = k * int(np.prod(p.shape[1:]))
                pieces[t][1].append(np.frombuffer(data, p.dtype, n, offset).reshape((k,) + p.shape[1:]))
                offset += n * p.dtype.itemsize
        xp = backend.xp
        for p, (rows, grads) in zip(tables, pieces):
            p.zero_grad()
            rows, grads = np.concatenate(rows), np.concatenate(grads)
            if len(rows):
                p.accumulate_rows(xp.asarray(rows.astype(np.intp)), xp.asarray(grads))

    def bytes_per_sync(self):
        """The mean number of bytes this rank sent per ``sync_gradients`` so far (0 before the first)."""
        return self.bytes_sent / self.syncs if self.syncs else 0.0

    def agree(self, obj):
        """Rank 0's value of ``obj`` on every rank (for decisions such as early stopping)."""
        return self.comm.broadcast_object(obj)

    def run(self, main, *args, **kwargs):
        """Call ``main``; if it raises on any rank, print the traceback with the rank and abort the whole job,
        so a failing rank never leaves the others waiting in a collective (see ``Communicator.run``)."""
        return self.comm.run(main, *args, **kwargs)
