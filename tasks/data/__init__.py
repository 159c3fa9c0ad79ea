"""Data in: loading, canonical columns, deterministic splits, content digests; the example data generator."""
