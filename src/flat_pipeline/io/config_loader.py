"""The project's config loader (settings.CONFIG_LOADER_CLASS): Kedro's OmegaConfigLoader with a `params` resolver.

`${params:model.dtype}` in the catalog is the run's parameter: the environment's `parameters*.yml` with `--params`
applied, as nodes get it. The model entries of `catalog.yml` take their `load_args` from the `model` block this way,
so a model loads with the run's dtype, attention and gradient checkpointing wherever the catalog is used, in a
notebook's `catalog.load` too, where no dataset hook runs.
"""

from __future__ import annotations

from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

_MISSING = object()


class ConfigLoader(OmegaConfigLoader):
    """OmegaConfigLoader whose configs (the catalog above all) may read parameters: `${params:<dotted name>}`."""

    _parameters: Any = None

    def __getitem__(self, key: str) -> dict[str, Any]:
        if key != "parameters":
            # OmegaConf's resolvers are global: registered again for each config, as Kedro does `runtime_params`, so
            # that the loader reading a config is the one whose parameters it gets; read once per config
            self._parameters = None
            OmegaConf.register_new_resolver("params", self._parameter, replace=True)
        return super().__getitem__(key)

    def _parameter(self, name: str) -> Any:
        if self._parameters is None:
            self._parameters = OmegaConf.create(self["parameters"])
        value = OmegaConf.select(self._parameters, name, default=_MISSING)
        if value is _MISSING:
            raise InterpolationResolutionError(
                f"${{params:{name}}}: no parameter '{name}' in the parameters of environment "
                f"'{self.env or self.default_run_env}' (parameters*.yml of base and of the environment, --params)"
            )
        return value
