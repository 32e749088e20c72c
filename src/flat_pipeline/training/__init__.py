"""Trainers: a config dataclass plus the HF Trainer (subclass) per method, as in TRL."""
