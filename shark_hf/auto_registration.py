"""Registration of SHARK with transformers' Auto classes, done when transformers loads them.

`from transformers import AutoConfig` imports torch (about 2 s and 250 MB), so `import shark_hf` cannot
register eagerly without making every import of the package (and every `shark-hf --help`) that slow.
Instead `install()` (called by `shark_hf/__init__.py`) registers at once with whatever transformers modules
are already loaded, and puts an import hook on `sys.meta_path` for the others: as soon as
`transformers.models.auto.configuration_auto` finishes loading, `SharkConfig` is registered with
`AutoConfig`; as soon as `transformers.models.auto.modeling_auto` does, `SharkForDiagnosisPrediction` is
registered with `AutoModel` and `AutoModelForSequenceClassification`; as soon as `transformers.pipelines`
does, the "diagnosis-prediction" task is registered with its `PIPELINE_REGISTRY` (`shark_hf.pipelines`). So
after `import shark_hf`, `AutoModel.from_pretrained(a_shark_model)` works without `trust_remote_code` and
`pipeline("diagnosis-prediction", model=a_shark_model)` works, whichever is imported first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from types import ModuleType


def register_config(configuration_auto: ModuleType) -> None:
    """Register `SharkConfig` with `AutoConfig` (model type "shark")."""
    from .configuration_shark import SharkConfig

    configuration_auto.AutoConfig.register(SharkConfig.model_type, SharkConfig, exist_ok=True)


def register_models(modeling_auto: ModuleType) -> None:
    """Register `SharkForDiagnosisPrediction` with `AutoModel` and `AutoModelForSequenceClassification`."""
    from .configuration_shark import SharkConfig
    from .modeling_shark import SharkForDiagnosisPrediction

    for auto_class in (modeling_auto.AutoModel, modeling_auto.AutoModelForSequenceClassification):
        auto_class.register(SharkConfig, SharkForDiagnosisPrediction, exist_ok=True)


def register_pipeline(pipelines: ModuleType) -> None:
    """Register the "diagnosis-prediction" task with `PIPELINE_REGISTRY`: `shark_hf.pipelines` does so when
    it is imported, so this imports it unless it is loaded, or loading (the module whose `from transformers
    import Pipeline` is importing `transformers.pipelines` now: it registers at its end)."""
    if f"{__package__}.pipelines" not in sys.modules:
        importlib.import_module(".pipelines", __package__)


REGISTRATIONS: dict[str, Callable[[ModuleType], None]] = {
    "transformers.models.auto.configuration_auto": register_config,
    "transformers.models.auto.modeling_auto": register_models,
    "transformers.pipelines": register_pipeline,
}
"""Module name -> the registration to run once that module is loaded."""


class _RegisterAfterLoading(importlib.abc.Loader):
    """Wraps a module's loader: runs the module, then `register(module)`; anything else goes to `loader`."""

    def __init__(self, loader: importlib.abc.Loader, register: Callable[[ModuleType], None]):
        self.loader, self.register = loader, register

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.register(module)

    def __getattr__(self, name: str):  # get_source, get_resource_reader, ... of the real loader
        return getattr(self.loader, name)


class RegistrationFinder(importlib.abc.MetaPathFinder):
    """A `sys.meta_path` entry that finds nothing itself: it wraps the loaders of `REGISTRATIONS`' modules."""

    def find_spec(self, name, path, target=None):
        register = REGISTRATIONS.get(name)
        if register is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisterAfterLoading(spec.loader, register)
                return spec
        return None


def install() -> None:
    """Register with the Auto classes already loaded, and hook the import of the others (idempotent)."""
    for name, register in REGISTRATIONS.items():
        module = sys.modules.get(name)
        if module is not None:
            register(module)
    if not any(isinstance(finder, RegistrationFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, RegistrationFinder())


__all__ = [
    "REGISTRATIONS",
    "RegistrationFinder",
    "install",
    "register_config",
    "register_models",
    "register_pipeline",
]
