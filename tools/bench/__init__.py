"""Benchmarks for the Confab runtime (``python -m confab.tools.bench``)."""
