"""adaptrail's work, by concern: ``core`` <- ``data`` <- ``training`` <- ``gates`` <- ``governance`` <- ``steps``.

Importing any of it has no side effects; the entry points (the CLI, the flows, ``serve``) apply the environment
defaults once (:func:`tasks.core.state.apply_environment_defaults`). docs/architecture.md is the map.
"""
