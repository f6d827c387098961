"""Compiled or pure Python: which form of the engine's hot-path modules is imported.

``setup.py`` compiles ``HOT_PATH`` with Cython from the same ``.py`` files, leaving a ``.so`` beside each (an
editable install builds them in place). Python's import system prefers the ``.so``; this module's finder, put
first on ``sys.meta_path`` by ``autobatch/__init__.py``, loads the ``.py`` source instead when
- ``AUTOBATCH_PURE=1`` is set (the test suite runs once this way), or
- any hot-path module's build is missing or stale (its ``.py``, its ``.pxd`` or a ``.pxd`` that one cimports is
  newer than its ``.so``): a stale build must never hide an edit (a warning says to rebuild with
  ``pip install -e .``).
The choice is made once, at import, for all of them together: compiled modules read each other's C types
(``ops.pxd`` cimports ``graph.pxd``), so a compiled ops beside a pure-Python graph would not even import.
``autobatch.compiled`` reports it.
"""
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import warnings

HOT_PATH = ("autobatch.primitive", "autobatch.signature", "autobatch.graph", "autobatch.scheduler",
            "autobatch.executor", "autobatch.ops", "autobatch.rnn")
PURE = os.environ.get("AUTOBATCH_PURE", "") not in ("", "0")


def _built(folder, stem):
    """The compiled module ``stem`` in ``folder`` (a path), or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, stem + suffix)
        if os.path.exists(path):
            return path
    return None


def _inputs(folder, stem):
    """The files module ``stem``'s compiled form is made from: its .py, its .pxd, and the .pxd files that .pxd
    cimports (``from autobatch.graph cimport Graph``: ops.so must be rebuilt when graph.pxd changes)."""
    files = [os.path.join(folder, stem + ".py")]
    pxd = os.path.join(folder, stem + ".pxd")
    if os.path.exists(pxd):
        files.append(pxd)
        with open(pxd, encoding="utf-8") as f:
            cimported = re.findall(r"^from autobatch\.(\w+) cimport", f.read(), re.M)
        files += [os.path.join(folder, m + ".pxd") for m in cimported]
    return [p for p in files if os.path.exists(p)]


def _stale(folder):
    """The hot-path modules in ``folder`` whose compiled form is missing or older than its inputs; None when
    none is compiled (a pure-Python install)."""
    stale, built_any = [], False
    for name in HOT_PATH:
        stem = name.rpartition(".")[2]
        built = _built(folder, stem)
        built_any |= built is not None
        if built is None or max(os.path.getmtime(p) for p in _inputs(folder, stem)) > os.path.getmtime(built):
            stale.append(name)
    return stale if built_any else None


class SourceFinder:
    """Finds the hot-path modules' ``.py`` sources where their compiled forms must not be used (see the module
    doc); defers to the normal import otherwise."""

    decided = {}  # folder -> whether its hot-path modules load from source (decided at the first of them)

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        """The ``.py`` source's spec for a hot-path module to be run as Python, else None."""
        if name not in HOT_PATH:
            return None
        stem = name.rpartition(".")[2]
        for folder in path or ():
            source = os.path.join(folder, stem + ".py")
            if not os.path.exists(source):
                continue
            if folder not in cls.decided:
                stale = _stale(folder)
                if stale and not PURE:
                    warnings.warn(f"the compiled engine is incomplete or older than its sources ({', '.join(stale)}) "
                                  f"and is ignored: rebuild with `pip install -e .`", stacklevel=2)
                cls.decided[folder] = PURE or bool(stale)
            return importlib.util.spec_from_file_location(name, source) if cls.decided[folder] else None
        return None


def install():
    """Put the finder first on ``sys.meta_path`` (once)."""
    if SourceFinder not in sys.meta_path:
        sys.meta_path.insert(0, SourceFinder)


def compiled():
    """True when every hot-path module is (imported now if need be) in its compiled form."""
    return all(isinstance(importlib.import_module(m).__loader__, importlib.machinery.ExtensionFileLoader)
               for m in HOT_PATH)
