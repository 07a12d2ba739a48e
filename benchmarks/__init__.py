"""Benchmark scripts that print figures and the machine's load (never timed tests)."""
