"""tune pipeline: every method tuned by one rule with Optuna, several seeds, then the tuned leaderboard."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
