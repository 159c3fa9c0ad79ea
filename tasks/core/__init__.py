"""Shared ground every other package builds on: the typed config, contract names, state locations, errors, metrics and canonical JSON."""
