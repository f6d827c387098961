"""Checkpoints: a ParameterCollection (by parameter name), optimiser state and any extra training state in
one ``.npz``, written atomically, so that a crash mid-save never leaves a corrupt file in place of the last
good one.

Layout: the arrays are stored as ``a0, a1, ...``; ``__meta__`` is a JSON document that names the parameters
and holds every non-array value (counters, RNG states, history), with ``{"__array__": "aN"}`` where an array
was. Loading never unpickles anything.

A writer killed outright (SIGKILL, power loss) leaves its temporary file behind: the next save to the same
folder, or ``remove_stale_temps``, deletes it. A file that cannot be read as a checkpoint raises
``CheckpointError`` naming the file and what is wrong with it.
"""
import json
import os
import re
import time
import uuid
import zipfile
import zlib

import numpy as np

from autobatch.kernels import backend

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a temporary file's owner is then judged by its process id
    fcntl = None

FORMAT = "autobatch-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that cannot be read as a checkpoint (empty, cut short, corrupt, not an ``.npz`` or not written
    by autobatch); the message names the file and why."""


# ---- atomic writing ---------------------------------------------------------------------------------------

# .<target name>.<writer's pid>.<random>.tmp, in the target's folder (a rename never crosses file systems)
_TEMP = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _abandoned(tmp, pid):
    """True when no living writer holds the temporary file ``tmp``. A writer holds an advisory lock on its
    file while it writes, and the system drops the lock when the writer dies however it dies, so this is
    right even when a later process got the dead writer's pid (restarted containers often do); such a file is
    then only kept until it is ``_GAP_S`` old."""
    if fcntl is None:
        return not _alive(pid)
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Unlocked, but a writer creates its file a moment before it locks it: a file that young whose writer's
        # pid is alive may be in that gap (a reused pid only delays the cleaning of a dead writer's file).
        return not (time.time() - os.fstat(fd).st_mtime < _GAP_S and _alive(pid))
    except OSError:  # held: its writer is alive
        return False
    finally:
        os.close(fd)


_GAP_S = 60.0  # seconds: far longer than the gap between creating a temporary file and locking it


def _alive(pid):
    """Whether a process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temps(folder, target=None):
    """Delete the temporary files that killed writers left in ``folder`` (those of the file named ``target``
    only, when given); returns their paths. Files that a living writer is still writing are left alone."""
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        if m is None or (target is not None and m["target"] != target):
            continue
        tmp = os.path.join(folder, name)
        if _abandoned(tmp, int(m["pid"])):
            try:
                os.unlink(tmp)
                removed.append(tmp)
            except FileNotFoundError:  # another process cleaned it first
                pass
    return removed


def _atomic_write(path, write, previous=None):
    """Call ``write(f)`` on a temporary file in ``path``'s folder, fsync it, then rename it over ``path``.
    ``os.replace`` is atomic on POSIX and Windows: readers see the old file or the new one, never a mix. With
    ``previous``, the file at ``path`` (if any) is first renamed to ``previous``, so one older version stays.
    Temporary files abandoned by killed writers of ``path`` are removed first."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temps(folder, os.path.basename(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        f = open(tmp, "xb")
        try:
            if fcntl is not None:  # held until the file is closed or this process dies: see _abandoned
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is None:  # Windows renames no open file (and has no lock to keep)
                f.close()
            if previous is not None and os.path.exists(path):
                # A crash between the renames leaves ``previous`` and no ``path``: resuming finds ``previous``.
                os.replace(path, previous)
            os.replace(tmp, path)  # still locked, so no cleaner takes it for abandoned before it is in place
        finally:
            f.close()
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not every platform lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text):
    """Replace the file at ``path`` with ``text`` (UTF-8) atomically."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _write_npz(f, arrays):
    np.savez(f, **arrays)


# ---- encoding a state tree ----------------------------------------------------------------------------------


def _encode(value, arrays, where):
    """A JSON-able copy of ``value`` with each array moved into ``arrays``."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"checkpoint: {where} has a key {k!r} of type {type(k).__name__}; keys must be str")
            out[k] = _encode(v, arrays, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(backend.asnumpy(value))
        return {"__array__": key}
    raise TypeError(f"checkpoint: cannot store {where} of type {type(value).__name__}")


def _decode(value, z):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return z[value["__array__"]]
        return {k: _decode(v, z) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, z) for v in value]
    return value


# ---- save / load ------------------------------------------------------------------------------------------


def save_checkpoint(path, pc, optimizer=None, *, previous=None, **extra):
    """Write ``pc``'s parameters (by name), ``optimizer.state_dict()`` if given, and the keyword arguments
    (nested dicts/lists of numbers, strings, None and arrays) to ``path`` as one ``.npz``, atomically. With
    ``previous`` (a path), the checkpoint ``path`` held until now is kept there."""
    arrays = {}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "params": {p.name: _encode(p.data, arrays, p.name) for p in pc.parameters()},
        "optimizer": None if optimizer is None else _encode(optimizer.state_dict(), arrays, "optimizer"),
        "extra": _encode(extra, arrays, "extra"),
    }
    arrays["__meta__"] = np.array(json.dumps(meta))
    _atomic_write(path, lambda f: _write_npz(f, arrays), previous=previous)
    return path


_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive


def _why_unreadable(error):
    """What a reading error says about the file, in words."""
    text = str(error)
    if isinstance(error, zipfile.BadZipFile):
        m = re.match(r"Bad CRC-32 for file '(.+?)(\.npy)?'", text)
        if m:
            return f"its entry {m[1]!r} fails its CRC-32 check: the bytes were changed after it was written"
        if "not a zip file" in text:
            return "its end (the zip archive's directory) is missing: the file was cut short"
    if isinstance(error, EOFError):
        return "it ends in the middle of an entry: the file was cut short"
    if isinstance(error, zlib.error):
        return f"a compressed entry is corrupt ({text})"
    if isinstance(error, ValueError) and "pickle" in text:
        return "it holds pickled Python objects, which a checkpoint never does"
    return f"{type(error).__name__}: {text}"


def read_checkpoint(path):
    """Everything in a checkpoint, as ``{"params": {name: array}, "optimizer": state or None, "extra": {...}}``.
    Raises ``CheckpointError`` (naming the file and what is wrong) when ``path`` is not a readable
    checkpoint, and FileNotFoundError when there is no such file."""
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise CheckpointError(f"{path} is not a readable checkpoint: the file is empty")
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a checkpoint: it is not an .npz (zip) archive (it starts with "
                              f"{head!r})")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__meta__" not in z.files:
                raise CheckpointError(f"{path} is not an autobatch checkpoint (no __meta__ entry)")
            meta = json.loads(str(z["__meta__"]))
            if not isinstance(meta, dict):  # any JSON parses: a list or a number here is not our layout
                raise CheckpointError(f"{path} is not an autobatch checkpoint (its __meta__ is not a JSON object)")
            version = meta.get("version", 0)
            if meta.get("format") != FORMAT or type(version) is not int or version > VERSION:
                raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r} "
                                      f"version {meta.get('version')!r}")
            # Every entry is read here, inside the guard: an .npz reads lazily, and a bad entry must fail now
            return {k: _decode(meta[k], z) for k in ("params", "optimizer", "extra")}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {_why_unreadable(e)}") from e


def apply_checkpoint(path, ck, pc, optimizer=None, strict=True, check=None):
    """Load ``ck`` (what ``read_checkpoint(path)`` returned) into ``pc`` and ``optimizer`` as
    ``load_checkpoint`` does; ``check(extra)``, when given, may raise to refuse the checkpoint before anything
    is changed. Returns the extra state."""
    saved, mine = ck["params"], {p.name: p for p in pc.parameters()}
    if strict:
        missing, unexpected = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
        if missing or unexpected:
            raise ValueError(f"{path}: parameters missing from the checkpoint {missing}, "
                             f"in the checkpoint but not in the collection {unexpected}")
    common = [n for n in mine if n in saved]
    for n in common:
        if tuple(saved[n].shape) != tuple(mine[n].shape):
            raise ValueError(f"{path}: parameter {n!r} has shape {tuple(saved[n].shape)} in the checkpoint, "
                             f"{tuple(mine[n].shape)} in the collection")
    if optimizer is not None and ck["optimizer"] is None:
        raise ValueError(f"{path} holds no optimiser state")
    if check is not None:
        check(ck["extra"])
    if optimizer is not None:
        optimizer.load_state_dict(ck["optimizer"])  # checks its own input before changing anything
    for n in common:
        mine[n].set_value(saved[n])
    return ck["extra"]


def load_checkpoint(path, pc, optimizer=None, strict=True):
    """Load the parameters saved in ``path`` into ``pc`` by name (and the optimiser state if ``optimizer`` is
    given); returns the extra state saved with them. Everything is checked before anything is changed, so a
    mismatch leaves ``pc`` as it was. ``strict=False`` ignores parameters present on one side only."""
    return apply_checkpoint(path, read_checkpoint(path), pc, optimizer, strict)
