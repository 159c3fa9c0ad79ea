"""The flows' steps as thin Prefect tasks: the shared run context, one module per task kind, comparison and torchrun launch."""
