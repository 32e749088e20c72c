"""benchmark pipeline: FLAT's four divergences and the baselines on one forget split, one namespace per method, each
unlearned from the same original model on the same budget and evaluated against the same retain reference, then a
leaderboard."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
