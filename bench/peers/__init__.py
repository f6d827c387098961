"""The peer systems of issue 5's benchmark suite: PyTorch, DyNet (autobatch off and on) and hand-batched NumPy
implementations of dynet-benchmark's BiLSTM tagger, Tree-LSTM and LSTM language model.

Every system has the same interface: ``make(task, n_words, n_labels, seed) -> system`` with
``system.train_batch(batch) -> float`` (one update on one minibatch; the summed loss of the minibatch, as
dynet-benchmark minimises it) and ``system.name``. ``tasks`` prepares the data once for all of them; ``run``
times one system in its own process and prints one JSON line; ``measure`` runs the grid of them.

This package imports neither torch nor dynet: DyNet must be configured before its first import, so each
DyNet configuration runs in a process of its own (see ``dynet_models.configure``).
"""
