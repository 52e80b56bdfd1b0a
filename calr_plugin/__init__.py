"""calr-reid: CALR (Camera-aware Label Refinement) as a FastReID plugin.

Importing this package first applies the FastReID compatibility shims (once), then
imports the modules that register datasets, meta-architectures and heads with
FastReID's registries. Import it before anything imports ``fastreid.data``,
``fastreid.engine`` or ``fastreid.evaluation``.

The modules live in folders named as in FastReID (README.md, "Layout"): ``modeling/``,
``engine/``, ``data/``, ``labels/``, ``auto/``, ``deploy/``, ``weights/``, ``report/`` and
``utils/``. The old flat paths (``calr_plugin.trainer``, ``calr_plugin.features``, ...) still
import, for one release, as the same module objects with a DeprecationWarning naming the new
path (``MOVED``).
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from . import compat

compat.apply()

from .config import add_calr_config, load_config  # noqa: E402
from .data import datasets  # noqa: E402,F401  (registers ReIDFolder, CALRSynthetic)
from .modeling import meta_arch  # noqa: E402,F401  (registers the CALR meta-architecture)
from .modeling import timm_backbone  # noqa: E402,F401  (registers build_timm_backbone)
from .modeling import build  # noqa: E402,F401  (adds the CUDA and domain-head checks to load_config)
from .errors import CalrError, ConfigError, DataError  # noqa: E402
from .engine.run_setup import setup_run  # noqa: E402
from .engine.trainer import CALRTrainer  # noqa: E402
from .deploy.tracker import CALRReID  # noqa: E402  (a trained model as a tracker's embedder)

__all__ = ["add_calr_config", "load_config", "CALRTrainer", "setup_run", "CalrError", "ConfigError",
           "DataError", "CALRReID"]

# Old module path -> new one. Remove after one release.
MOVED = {
    "calr_plugin.analysis": "calr_plugin.report.analysis",
    "calr_plugin.auto_settings": "calr_plugin.auto.settings",
    "calr_plugin.camera_style": "calr_plugin.auto.camera_style",
    "calr_plugin.checkpoint": "calr_plugin.engine.checkpoint",
    "calr_plugin.chunk_bn": "calr_plugin.modeling.chunk_bn",
    "calr_plugin.convert": "calr_plugin.weights.convert",
    "calr_plugin.convert_effnet": "calr_plugin.weights.convert_effnet",
    "calr_plugin.domain_head": "calr_plugin.modeling.domain_head",
    "calr_plugin.export": "calr_plugin.deploy.export",
    "calr_plugin.features": "calr_plugin.engine.features",
    "calr_plugin.hooks": "calr_plugin.engine.hooks",
    "calr_plugin.memory": "calr_plugin.modeling.memory",
    "calr_plugin.meta_arch": "calr_plugin.modeling.meta_arch",
    "calr_plugin.search": "calr_plugin.deploy.search",
    "calr_plugin.stage1": "calr_plugin.engine.stage1",
    "calr_plugin.timm_backbone": "calr_plugin.modeling.timm_backbone",
    "calr_plugin.trainer": "calr_plugin.engine.trainer",
}


def _importer_stacklevel():
    """warnings.warn's stacklevel of the first frame outside importlib and this file."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                 or frame.f_code.co_filename in (__file__, importlib.__file__)):
        level, frame = level + 1, frame.f_back
    return level


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path of ``MOVED`` as the module at its new path, with a DeprecationWarning.

    ``import calr_plugin.trainer``, ``from calr_plugin import features`` and mock.patch
    strings naming an old path all get the new module object itself (its functions, its
    globals), so patching through the old path patches the code that runs.
    """

    def __init__(self):
        self._specs = {}  # alias name -> the new module's own spec, while importlib loads the alias

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed in the next release",
                      DeprecationWarning, stacklevel=_importer_stacklevel())
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # importlib set the module's __spec__ to the alias's; the module keeps its own.
        module.__spec__ = self._specs.pop(module.__spec__.name)


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())
