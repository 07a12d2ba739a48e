"""Partition workers: evaluate their partitions of the book on every price change."""
