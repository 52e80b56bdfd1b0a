"""calr-reid: CALR (Camera-aware Label Refinement) as a FastReID plugin.

Importing this package first applies the FastReID compatibility shims (once), then
imports the modules that register datasets, meta-architectures and heads with
FastReID's registries. Import it before anything imports ``fastreid.data``,
``fastreid.engine`` or ``fastreid.evaluation``.
"""
from . import compat

compat.apply()

from .config import add_calr_config, load_config  # noqa: E402
from .data import datasets  # noqa: E402,F401  (registers ReIDFolder, CALRSynthetic)
from . import meta_arch  # noqa: E402,F401  (registers the CALR meta-architecture)
from . import timm_backbone  # noqa: E402,F401  (registers build_timm_backbone)
from .errors import CalrError, ConfigError, DataError  # noqa: E402
from .trainer import CALRTrainer, setup_run  # noqa: E402

__all__ = ["add_calr_config", "load_config", "CALRTrainer", "setup_run", "CalrError", "ConfigError",
           "DataError"]
