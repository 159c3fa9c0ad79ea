"""Prefect flows (one file per flow) and the ``adaptrail`` CLI."""

import tasks  # noqa: F401  (applies environment defaults before prefect is imported)
