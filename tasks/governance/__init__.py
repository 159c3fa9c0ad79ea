"""The record: MLflow registry, approval ledger, decision rules, signatures, verified loading and the compliance audit."""
