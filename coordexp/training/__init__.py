"""The training entry (``python -m coordexp train``): YAML config, data, trainer assembly."""

from coordexp.training.config import TrainConfig, load_config, parse_config
from coordexp.training.run import RunResult, build_trainer, demo_config, train

__all__ = ["RunResult", "TrainConfig", "build_trainer", "demo_config", "load_config", "parse_config", "train"]
