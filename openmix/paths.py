"""Where openmix finds its Hydra configs.

``configs/`` lives at the top of the repository (users browse it there) and ships inside the
wheel as ``openmix/configs`` (``setup.py`` maps it at build time). Lookup order:

1. ``OPENMIX_CONFIG_DIR`` (a user's own copy);
2. the repository's ``configs/`` next to the ``openmix`` package (a source checkout or an
   editable install);
3. ``openmix/configs`` inside the installed package (a wheel).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["config_dir"]

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The directory that holds ``train.yaml`` and ``bench/bench.yaml``."""
    env = os.environ.get("OPENMIX_CONFIG_DIR")
    if env:
        return Path(os.path.expanduser(env)).resolve()
    checkout = _PACKAGE.parent / "configs"
    if (checkout / "train.yaml").is_file():
        return checkout
    return _PACKAGE / "configs"
