"""The chaos run: the real daemons against faults, checked against an independent expectation
(``python -m benchmarks.chaos`` prints its figures; ``tests/test_chaos.py`` runs a short one)."""
