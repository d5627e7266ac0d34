"""MixCollate: a drop-in ``collate_fn`` that mixes in the DataLoader workers."""
from __future__ import annotations

import inspect
import io
import pickle
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from ..batch import MixedBatch


def derive_generator(seed: int, worker_id: int, epoch: int, device: Any = "cpu") -> torch.Generator:
    """A generator seeded from (seed, worker id, epoch) through numpy's SeedSequence, so that
    runs repeat exactly, workers differ and every epoch draws new mixes."""
    for name, value in (("seed", seed), ("worker_id", worker_id), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    state = np.random.SeedSequence([int(seed), int(worker_id), int(epoch)]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


def _rebuild_generator(device: str, state: bytes) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator


class _GeneratorPickler(pickle.Pickler):
    """Pickles torch.Generator objects as their state bytes.

    torch pickles a Generator with a temporary state tensor; DataLoader's multiprocessing
    pickler moves that tensor to shared memory, which is freed before a spawn or forkserver
    worker opens it (the worker dies with "unable to resize file"). Bytes have no such life.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Generator):
            return _rebuild_generator, (str(obj.device), obj.get_state().numpy().tobytes())
        return NotImplemented


def pickle_with_generators(obj: Any) -> bytes:
    """``pickle.dumps(obj)``, with every torch.Generator inside stored as its state bytes."""
    buffer = io.BytesIO()
    _GeneratorPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def check_input_policy(policy: Any, where: str) -> None:
    if not callable(policy):
        raise TypeError(f"policy must be a mixing policy (see openmix.build_policy), got {type(policy).__name__}")
    needs = getattr(policy, "needs", "input")
    if needs != "input":
        raise ValueError(f"{type(policy).__name__} needs {needs} from the model, which {where} cannot provide; "
                         f"let the trainer's engine apply it (openmix-train handles this)")


class MixCollate:
    """``DataLoader(ds, batch_size=..., collate_fn=MixCollate(policy, seed=0))``.

    Collates (input, label) samples with ``collate`` (default: torch's ``default_collate``) and
    returns the policy's ``MixedBatch``. uint8 images take timm's fast path: they are mixed in
    float32 and rounded back to uint8, so normalisation can happen later on the device (valid
    because normalising is affine and the mixing weights sum to 1).

    Randomness: each worker draws from a generator derived from ``(seed, worker id, epoch)``;
    call ``set_epoch(epoch)`` before each epoch (it also reaches persistent workers, through a
    shared-memory counter). The same seed gives the same batches under every worker start
    method (fork, spawn, forkserver): a MixCollate pickles its policy with the policy's
    generators as plain state bytes. ``keep_mask=False`` drops the (B, 1, *spatial) mask to
    save inter-process traffic.
    """

    def __init__(self, policy: Callable, seed: int = 0, keep_mask: bool = False,
                 collate: Callable[[Sequence[Any]], Any] = default_collate) -> None:
        check_input_policy(policy, "MixCollate")
        derive_generator(seed, 0, 0)    # validates seed
        self.policy = policy
        self.seed = int(seed)
        self.keep_mask = keep_mask
        self.collate = collate
        # a batch that default_collate has just stacked is scratch: box policies may paste into it
        mix_uint8 = getattr(policy, "mix_uint8", None)
        self._overwrite = collate is default_collate and mix_uint8 is not None \
            and "overwrite" in inspect.signature(mix_uint8).parameters
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self._generators: dict = {}
        self._policy_epoch: Optional[int] = None

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))
        if hasattr(self.policy, "set_epoch"):
            self.policy.set_epoch(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def generator(self) -> torch.Generator:
        """This worker's generator for the current epoch (worker 0 in the main process)."""
        info = get_worker_info()
        worker = 0 if info is None else info.id
        epoch = self.epoch
        key = (worker, epoch)
        if key not in self._generators:
            self._generators = {key: derive_generator(self.seed, worker, epoch)}
            if hasattr(self.policy, "set_epoch") and self._policy_epoch != epoch:
                self.policy.set_epoch(epoch)     # persistent workers hold their own policy copy
                self._policy_epoch = epoch
        return self._generators[key]

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        # the epoch counter stays a tensor: DataLoader's pickler shares it with the workers
        state["policy"] = pickle_with_generators(self.policy)
        state["_generators"], state["_policy_epoch"] = {}, None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        state["policy"] = pickle.loads(state["policy"])
        self.__dict__.update(state)

    def __call__(self, samples: Sequence[Any]) -> MixedBatch:
        batch = self.collate(samples)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError("MixCollate expects samples of (input, label); the collated batch has "
                             f"{len(batch) if isinstance(batch, (tuple, list)) else type(batch).__name__} parts")
        x, y = batch
        y = torch.as_tensor(y)
        if x.dtype == torch.uint8:   # mixed in float, rounded back to uint8 (timm's fast-collate rule)
            mix_uint8 = getattr(self.policy, "mix_uint8", None)
            if mix_uint8 is not None:  # openmix policies: block-wise, no float copy of the batch
                mb = mix_uint8(x, y, generator=self.generator(), **({"overwrite": True} if self._overwrite else {}))
            else:
                mb = self.policy(x.float(), y, generator=self.generator())
                mb.x = mb.x.round_().clamp_(0, 255).to(torch.uint8)
        else:
            mb = self.policy(x, y, generator=self.generator())
        if not self.keep_mask:
            mb.mask = None
        return mb

    def __repr__(self) -> str:
        return f"MixCollate({self.policy!r}, seed={self.seed})"
