"""Judging an adapter: evaluation, bias and regression gates, LM probes, baselines, typed gate decisions and their reports."""
