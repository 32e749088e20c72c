"""What produced a result, as tags of its MLflow run: the versions of the packages that decide results and a hash of
the whole installed set, the hardware, the numeric settings (dtype, attention, deterministic flags), and the sha256 of
each input artifact. Two runs that differ in any of these differ in a tag, which MLflow's compare view shows."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECORD_PREFIX = "record."
SHA256_PREFIX = "sha256/"
# the source and the selection of a run (hooks/run_tags.py writes them, flat_pipeline.reproduce reads them)
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own key (its UI shows it on the run page)
DIFF_TAG = "source.diff_sha256"  # which uncommitted changes, when the commit is `-dirty`
RUN_FILTERS_TAG = "kedro_run_filters"  # `--namespaces`, `--nodes`, ... as JSON
# the packages whose versions decide the numbers (the rest is in the installed set's hash)
RESULT_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "datasets",
    "kedro",
    "kedro-datasets",
    "kedro-mlflow",
    "mlflow",
    "optuna",
    "flat_pipeline",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in RESULT_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache  # half a second of metadata reading; what is installed is fixed for the life of a process
def installed_set_sha256() -> str:
    """sha256 of every installed distribution's `name==version`, sorted: equal when the environments are equal."""
    installed = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in importlib.metadata.distributions()})
    return hashlib.sha256("\n".join(installed).encode()).hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, str]:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = [torch.cuda.get_device_name(i) for i in range(count)]
    return {
        "cpu": cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "gpu_count": str(len(gpus)),
        "gpus": ", ".join(gpus) or "none",
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def numerics(model_params: Mapping[str, Any]) -> dict[str, str]:
    """The settings besides the parameters that change the numbers: dtype, attention, determinism."""
    import torch

    return {
        "dtype": str(model_params.get("dtype")),
        "attn_implementation": str(model_params.get("attn_implementation")),
        "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()),
        "cudnn_deterministic": str(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": str(torch.backends.cudnn.benchmark),
    }


def record_tags(model_params: Mapping[str, Any]) -> dict[str, str]:
    """Every tag of the record but the input hashes: `record.<package>`, `record.installed_sha256`, `record.cpu`..."""
    record = {**package_versions(), "installed_sha256": installed_set_sha256(), **hardware(), **numerics(model_params)}
    return {f"{RECORD_PREFIX}{key}": value[:5000] for key, value in record.items()}


def artifact_sha256(path: Path) -> str:
    """sha256 of a file's bytes; of a folder, over its files' relative paths and bytes, in sorted order. Hugging Face
    datasets' `cache-*.arrow` files are left out: `Dataset.map` on a loaded dataset writes them into its folder, after
    it was saved and hashed, and they are derived from the files that are hashed."""
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    digest = hashlib.sha256()
    files = (p for p in path.rglob("*") if p.is_file() and not (p.name.startswith("cache-") and p.suffix == ".arrow"))
    for file in sorted(files):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + _file_sha256(file).encode() + b"\n")
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
