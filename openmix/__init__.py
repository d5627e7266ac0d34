"""openmix: mixup-family data augmentation for PyTorch.

```python
policy = openmix.build_policy("cutmix", alpha=1.0, mode="elem")
mb = policy(x, y)                                   # -> MixedBatch(x, y, index, lam, mask)
loss = openmix.build_loss("soft_ce")(model(mb.x), mb)
```
"""
from .batch import MixedBatch, smoothed_one_hot
from .checks import LayoutWarning
from .data import DeviceMixer, DevicePrefetcher, MixCollate
from .losses import build_loss, list_losses, register_loss
from .pairing import build_pairing, list_pairings, register_pairing
from .policies import MixPolicy, RandomChoice, build_policy, list_policies, register_policy
from . import schedules

__version__ = "0.1.0"

__all__ = [
    "MixedBatch", "smoothed_one_hot", "MixPolicy", "RandomChoice", "build_policy", "list_policies",
    "register_policy", "build_pairing", "list_pairings", "register_pairing", "build_loss", "list_losses",
    "register_loss", "MixCollate", "DeviceMixer", "DevicePrefetcher", "LayoutWarning", "schedules", "__version__",
]
