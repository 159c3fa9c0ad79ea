"""The data validation gate: a Great Expectations suite over all splits, run before training.

Import ``validation.suite`` for the gate itself (it loads Great Expectations, which takes a few seconds).
"""
