"""Checks that run before any node: parameters, and the saved inputs a run will load."""

from __future__ import annotations


class PreflightHook:
    """Placeholder while the checks are written."""
