"""The training entry (``python -m coordexp train``): YAML config, data, trainer assembly."""

from coordexp.launch.config import TrainConfig, load_config, parse_config
from coordexp.launch.run import RunResult, build_trainer, demo_config, train

__all__ = ["RunResult", "TrainConfig", "build_trainer", "demo_config", "load_config", "parse_config", "train"]
