"""adaptrail's work: plain typed functions with thin Prefect ``@task`` wrappers."""

from tasks.state import apply_environment_defaults

# Prefect reads PREFECT_HOME when it is first imported; set our defaults before any task module imports it.
apply_environment_defaults()
