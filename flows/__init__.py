"""Prefect flows (one file per flow) and the ``adaptrail`` CLI."""

from tasks.core.state import apply_environment_defaults

# The flows are the entry points (the CLI, `serve`, a Prefect worker importing a flow file): environment defaults
# (PREFECT_HOME, offline Hugging Face, no telemetry) must be in place before Prefect or transformers is imported.
apply_environment_defaults()
