"""Benchmarks: training/evaluation throughput, export runtimes, and the Keras tutorial as a peer.

Never imported by product code (an architecture test checks it). ``python -m tumorcls.bench`` runs the
throughput benchmark; ``python -m tumorcls.bench.export`` and ``python -m tumorcls.bench.peer`` the others.
"""
