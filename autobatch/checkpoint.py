"""Checkpoints: a ParameterCollection (by parameter name), optimiser state and any extra training state in
one ``.npz``, written atomically, so that a crash mid-save never leaves a corrupt file in place of the last
good one.

Layout: the arrays are stored as ``a0, a1, ...``; ``__meta__`` is a JSON document that names the parameters
and holds every non-array value (counters, RNG states, history), with ``{"__array__": "aN"}`` where an array
was. Loading never unpickles anything.
"""
import json
import os
import uuid

import numpy as np

from kernels import backend

FORMAT = "autobatch-checkpoint"
VERSION = 1


# ---- atomic writing ---------------------------------------------------------------------------------------


def _atomic_write(path, write):
    """Call ``write(f)`` on a temporary file in ``path``'s folder, fsync it, then rename it over ``path``.
    ``os.replace`` is atomic on POSIX and Windows: readers see the old file or the new one, never a mix."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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


def save_checkpoint(path, pc, optimizer=None, **extra):
    """Write ``pc``'s parameters (by name), ``optimizer.state_dict()`` if given, and the keyword arguments
    (nested dicts/lists of numbers, strings, None and arrays) to ``path`` as one ``.npz``, atomically."""
    arrays = {}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "params": {p.name: _encode(p.data, arrays, p.name) for p in pc.parameters()},
        "optimizer": None if optimizer is None else _encode(optimizer.state_dict(), arrays, "optimizer"),
        "extra": _encode(extra, arrays, "extra"),
    }
    arrays["__meta__"] = np.array(json.dumps(meta))
    _atomic_write(path, lambda f: _write_npz(f, arrays))
    return path


def read_checkpoint(path):
    """Everything in a checkpoint, as ``{"params": {name: array}, "optimizer": state or None, "extra": {...}}``."""
    with np.load(path, allow_pickle=False) as z:
        if "__meta__" not in z.files:
            raise ValueError(f"{path} is not an autobatch checkpoint (no __meta__ entry)")
        meta = json.loads(str(z["__meta__"]))
        if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
            raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format')!r} "
                             f"version {meta.get('version')!r}")
        return {k: _decode(meta[k], z) for k in ("params", "optimizer", "extra")}


def load_checkpoint(path, pc, optimizer=None, strict=True):
    """Load the parameters saved in ``path`` into ``pc`` by name (and the optimiser state if ``optimizer`` is
    given); returns the extra state saved with them. Everything is checked before anything is changed, so a
    mismatch leaves ``pc`` as it was. ``strict=False`` ignores parameters present on one side only."""
    ck = read_checkpoint(path)
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
    if optimizer is not None:
        if ck["optimizer"] is None:
            raise ValueError(f"{path} holds no optimiser state")
        optimizer.load_state_dict(ck["optimizer"])  # checks its own input before changing anything
    for n in common:
        mine[n].set_value(saved[n])
    return ck["extra"]
