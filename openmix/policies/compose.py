"""Switching between policies with given probabilities, once per batch."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from ..batch import MixedBatch
from .base import MixPolicy, POLICIES, new_generator, register_policy


def as_policy(spec: Any) -> MixPolicy:
    """A policy object, or a mapping ``{"name": ..., **kwargs}`` built from the registry."""
    if isinstance(spec, MixPolicy):
        return spec
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"a policy mapping needs a 'name' key, got keys {sorted(spec)}")
        return POLICIES.build(spec.pop("name"), **spec)
    raise TypeError(f"policies must be MixPolicy objects or mappings with 'name', got {type(spec).__name__}")


@register_policy("choice")
class RandomChoice:
    """Each batch, one of ``policies`` drawn with probabilities ``probs`` (timm's mixup/CutMix
    switch, with any number of policies). ``policies``: objects or ``{"name": ..., ...}`` mappings.
    """

    def __init__(self, policies: Sequence[Any], probs: Optional[Sequence[float]] = None,
                 seed: Optional[int] = None) -> None:
        if not isinstance(policies, Sequence) or isinstance(policies, (str, bytes)) or len(policies) == 0:
            raise ValueError(f"policies must be a non-empty list, got {policies!r}")
        self.policies = [as_policy(p) for p in policies]
        needs = {p.needs for p in self.policies}
        if needs != {"input"}:
            raise ValueError(f"choice can only switch between input-level policies, got needs {sorted(needs)}")
        probs = [1.0] * len(self.policies) if probs is None else list(probs)
        if len(probs) != len(self.policies) or any(q < 0 for q in probs) or sum(probs) <= 0:
            raise ValueError(f"probs must be {len(self.policies)} non-negative weights with a positive sum, "
                             f"got {probs!r}")
        self.probs = torch.tensor(probs, dtype=torch.float64) / sum(probs)
        self.generator = new_generator(seed)
        self.needs = "input"
        self.uses_mask = any(p.uses_mask for p in self.policies)

    def set_epoch(self, epoch: int) -> None:
        for p in self.policies:
            p.set_epoch(epoch)

    def state_dict(self):
        return {"generator": self.generator.get_state(), "policies": [p.state_dict() for p in self.policies]}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        for p, s in zip(self.policies, state["policies"]):
            p.load_state_dict(s)

    def _choose(self, generator: torch.Generator) -> MixPolicy:
        # the draw is on the CPU so the choice costs no device sync
        u = torch.rand(1, generator=generator, device=generator.device).cpu().double()
        choice = int(torch.searchsorted(self.probs.cumsum(0), u, right=True).clamp(max=len(self.policies) - 1))
        return self.policies[choice]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: Optional[torch.Generator] = None,
                 **context: Any) -> MixedBatch:
        generator = self.generator if generator is None else generator
        return self._choose(generator)(x, y, generator=generator, **context)

    def mix_uint8(self, x: torch.Tensor, y: torch.Tensor, generator: Optional[torch.Generator] = None,
                  overwrite: bool = False) -> MixedBatch:
        """uint8 images: the chosen policy's ``mix_uint8`` (the same draw as ``__call__``)."""
        generator = self.generator if generator is None else generator
        return self._choose(generator).mix_uint8(x, y, generator=generator, overwrite=overwrite)

    def __repr__(self) -> str:
        return f"RandomChoice({self.policies}, probs={self.probs.tolist()})"
