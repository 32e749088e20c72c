"""Saved models are readable by the other users of a shared folder: files and folders get the modes the umask gives
new ones (0644 / 0755 under umask 022), not the 0600 of staged writes (issue 25)."""

from __future__ import annotations

import os
import stat

from kedro.io import Version

from flat_pipeline.io import HFModelDataset
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.training.fingerprint import FINGERPRINT_FILE, checkpoint_to_resume


def _modes(folder):
    return {
        path.relative_to(folder).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in [folder, *folder.rglob("*")]
    }


def test_a_saved_model_version_has_the_umasks_modes(tiny_model_dir, tmp_path):
    previous = os.umask(0o022)
    try:
        dataset = HFModelDataset(filepath=str(tmp_path / "model"), version=Version(None, "2026-12-07T00.00.00.000Z"))
        dataset.save(load_causal_lm(str(tiny_model_dir)))
        saved = tmp_path / "model" / "2026-12-07T00.00.00.000Z" / "model"
        modes = _modes(saved)
        # the weights (written 0600 by transformers) and the JSON files make_portable rewrites among them
        assert {"model.safetensors", "config.json", "tokenizer_config.json"} <= set(modes)
        assert {name: mode for name, mode in modes.items() if mode != (0o755 if name == "." else 0o644)} == {}

        os.umask(0o027)  # a stricter umask is kept, not widened
        checkpoint_to_resume(str(tmp_path / "run"), False, {"config": {}}, "unlearn")
        assert stat.S_IMODE((tmp_path / "run" / FINGERPRINT_FILE).stat().st_mode) == 0o640
    finally:
        os.umask(previous)
