"""Reproducible quality/speed/memory benchmarks (not part of the installed package)."""
