"""Throughput benchmarks of certification: ``python -m benchmarks.certify`` (see README, "Benchmarks")."""
