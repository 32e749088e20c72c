"""import_retain_logs pipeline: the retain reference (forget truth ratios, Min-K% AUC) from open-unlearning's
evaluation log of a retain model, checked against the forget split; `evaluate_external` then compares with it."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
