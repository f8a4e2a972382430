"""What vision-language training needs beyond the base install, checked before anything loads.

ms-swift's Qwen-VL model types need ``qwen_vl_utils`` (>= 0.0.14), which imports ``torchvision``;
torchvision must be the build made for the installed torch (a CUDA torchvision beside a CPU-only
torch fails at import with "operator torchvision::nms does not exist"). The ``vl`` extra brings
both; README "Vision-language" says how to install it.
"""

from __future__ import annotations

import importlib

from coordexp.config import ConfigError

VL_INSTALL_HINT = "install the vl extra: pip install -e '.[vl]' (README, \"Vision-language\")"
_VL_MODULES = ("torchvision", "qwen_vl_utils")


def missing_vl_dependency() -> str | None:
    """Why the VL dependencies cannot be used here (one line), or None when they import."""
    for name in _VL_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken torchvision raises RuntimeError, not ImportError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return f"{name} failed to import ({type(exc).__name__}: {first})"
    return None


def is_multimodal_model_type(model_type: str | None) -> bool:
    """True for ms-swift model types registered as multimodal (qwen3_vl, qwen2_5_vl, ...)."""
    if not model_type:
        return False
    from swift.model import MODEL_MAPPING

    meta = MODEL_MAPPING.get(model_type)
    return bool(meta is not None and meta.is_multimodal)


def require_vl_dependencies(what: str) -> None:
    """Raise a one-line ``ConfigError`` naming ``what`` needs them when they do not import."""
    problem = missing_vl_dependency()
    if problem is not None:
        raise ConfigError(
            f"{what} is vision-language and needs torchvision and qwen_vl_utils: {problem}; {VL_INSTALL_HINT}"
        )
