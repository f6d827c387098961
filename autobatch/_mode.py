"""Compiled or pure Python: which form of the engine's hot-path modules is imported.

``setup.py`` compiles ``HOT_PATH`` with Cython from the same ``.py`` files, leaving a ``.so`` beside each (an
editable install builds them in place). Python's import system prefers the ``.so``; this module's finder, put
first on ``sys.meta_path`` by ``autobatch/__init__.py``, loads the ``.py`` source instead when
- ``AUTOBATCH_PURE=1`` is set (the test suite runs once this way), or
- the ``.py`` or its ``.pxd`` is newer than the ``.so``: a stale build must never hide an edit (a warning says to
  rebuild with ``pip install -e .``).
The choice is made once, at import; ``autobatch.compiled`` reports it.
"""
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings

HOT_PATH = ("autobatch.graph", "autobatch.scheduler", "autobatch.executor", "autobatch.ops", "autobatch.rnn")
PURE = os.environ.get("AUTOBATCH_PURE", "") not in ("", "0")


def _built(folder, stem):
    """The compiled module ``stem`` in ``folder`` (a path), or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, stem + suffix)
        if os.path.exists(path):
            return path
    return None


class SourceFinder:
    """Finds a hot-path module's ``.py`` source where its compiled form must not be used (see the module doc);
    defers to the normal import otherwise."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        """The ``.py`` source's spec for a hot-path module to be run as Python, else None."""
        if name not in HOT_PATH:
            return None
        stem = name.rpartition(".")[2]
        for folder in path or ():
            source = os.path.join(folder, stem + ".py")
            if not os.path.exists(source):
                continue
            built = _built(folder, stem)
            if built is None:
                return None  # nothing compiled: the normal import finds the .py anyway
            if not PURE:
                newest = max(os.path.getmtime(p) for p in (source, source[:-3] + ".pxd") if os.path.exists(p))
                if newest <= os.path.getmtime(built):
                    return None  # the compiled module is up to date: use it
                warnings.warn(f"{name}: the compiled module is older than its source and is ignored; rebuild "
                              f"with `pip install -e .`", stacklevel=2)
            return importlib.util.spec_from_file_location(name, source)
        return None


def install():
    """Put the finder first on ``sys.meta_path`` (once)."""
    if SourceFinder not in sys.meta_path:
        sys.meta_path.insert(0, SourceFinder)


def compiled():
    """True when every hot-path module is (imported now if need be) in its compiled form."""
    return all(isinstance(importlib.import_module(m).__loader__, importlib.machinery.ExtensionFileLoader)
               for m in HOT_PATH)
