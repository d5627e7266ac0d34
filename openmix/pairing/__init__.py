"""Pairing strategies: who mixes with whom.

A pairing is a callable ``pairing(batch_size, generator, y=None, involution=False)``
returning ``index`` (B,) long on ``generator.device``: row ``i`` mixes with row ``index[i]``.
``involution=True`` (needed by ``mode="pair"``) asks for ``index[index[i]] == i``.
"""
from __future__ import annotations

from typing import Any, Mapping, Union

from ..registry import Registry

PAIRINGS = Registry("pairing")
register_pairing = PAIRINGS.register


def list_pairings():
    return PAIRINGS.names()


def build_pairing(spec: Union[str, Mapping[str, Any], Any] = "random", **kwargs: Any):
    """A pairing from a registered name, a mapping ``{"name": ..., **kwargs}`` or a ready object."""
    if isinstance(spec, str):
        return PAIRINGS.build(spec, **kwargs)
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"pairing mapping needs a 'name' key, got keys {sorted(spec)}")
        return PAIRINGS.build(spec.pop("name"), **spec, **kwargs)
    if callable(spec):
        return spec
    raise TypeError(f"pairing must be a name ({', '.join(list_pairings())}), a mapping with 'name', "
                    f"or a callable, got {type(spec).__name__}")


import importlib  # noqa: E402
import pkgutil  # noqa: E402

# every module here registers its pairings, so a new strategy is just a new file
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
