"""Losses on a MixedBatch: ``loss_fn(logits, mb) -> scalar``, registered by name."""
import importlib
import pkgutil

from ..registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register


def build_loss(name: str, **kwargs):
    """A registered loss, e.g. ``build_loss("decoupled", eta=0.1)``."""
    return LOSSES.build(name, **kwargs)


def list_losses():
    return LOSSES.names()


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
