"""Mixing policies, one file each, registered by name.

Every module in this package is imported here, so a new policy is just a new file.
"""
import importlib
import pkgutil

from .base import MixPolicy, POLICIES, build_policy, list_policies, register_policy, sample_beta

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .compose import RandomChoice  # noqa: E402

__all__ = ["MixPolicy", "POLICIES", "build_policy", "list_policies", "register_policy", "sample_beta", "RandomChoice"]
