"""The Hydra trainer: ``openmix-train`` / ``python -m openmix.train``; ``train(cfg) -> summary``."""
from .app import CONFIG_DIR, ConfigError, compose_config, train

__all__ = ["train", "compose_config", "CONFIG_DIR", "ConfigError"]
