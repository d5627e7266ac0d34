"""``build(settings, env) -> Run``: the parts of a training run, created and nothing else.

Phases, each a function: data (splits, checks that need the data), policy and loss (a dry run on
a batch of the real shape), model (EMA, DDP, compile), loaders and mixers, optimisation, the
engine, the callbacks, and the resumed state. Checks that need no tensors happened before, in
``openmix.train.settings.validate``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from .settings import ConfigError, Settings

__all__ = ["Environment", "Run", "build"]


@dataclass
class Environment:
    """Where a run executes: process group, device and output folder (see ``app.environment``)."""
    dist: Any
    device: torch.device
    out_dir: Path


@dataclass
class Run:
    """Everything ``fit`` and the callbacks touch."""
    settings: Settings
    dist: Any
    device: torch.device
    out_dir: Path
    data: Any = None                 # DataBundle with train/val/test splits
    policy: Any = None
    loss_fn: Any = None
    net: Any = None                  # MixNet(model)
    train_module: Any = None         # net, DDP-wrapped and/or compiled
    model_name: str = ""
    ema: Any = None
    collate_mixer: Any = None
    device_mixer: Any = None
    sampler: Any = None
    loaders: Any = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    amp_dtype: Optional[torch.dtype] = None
    engine: Any = None
    selector: Any = None
    callbacks: list = field(default_factory=list)
    history: list = field(default_factory=list)
    start_epoch: int = 0
    resumed_from: Optional[Path] = None
    reports: dict = field(default_factory=dict)
    config_yaml: str = ""
    previous_configs: list = field(default_factory=list)


def build(settings: Settings, env: Environment) -> Run:
    """Create every part of the run described by ``settings`` in ``env``."""
    run = Run(settings=settings, dist=env.dist, device=env.device, out_dir=env.out_dir)
    run.config_yaml = _yaml(settings.config)
    _seed_everything(settings.seed)
    build_data(run)
    build_policy_and_loss(run)
    build_model(run)
    build_loaders(run)
    build_optimisation(run)
    from .engine import Engine
    run.engine = Engine(run)
    build_callbacks(run)
    resume(run)
    return run


# ----------------------------------------------------------------------------------- phases
def build_data(run: Run) -> None:
    from .datasets import build_dataset
    from .splits import make_splits
    s, dist = run.settings, run.dist
    d = s.data
    downloads = bool(d.builder_kwargs.get("download"))
    if dist.enabled and not dist.is_main and downloads:
        _barrier(dist)  # rank 0 downloads first
    bundle = build_dataset(d.name, **d.builder_kwargs)
    if dist.enabled and dist.is_main and downloads:
        _barrier(dist)
    run.data = make_splits(bundle, d, s.seed, split_seed=int(d.builder_kwargs.get("split_seed", 0)))
    _check_finite_tensors(run.data)
    n_train, batch = len(run.data.train), s.trainer.batch_size
    per_rank = -(-n_train // dist.world_size)
    if batch > per_rank:
        raise ConfigError(f"trainer.batch_size={batch} is larger than the training set of data.name={d.name!r} "
                          f"({n_train} samples{f', {per_rank} per rank' if dist.enabled else ''}); "
                          f"set trainer.batch_size <= {per_rank}")


def _check_finite_tensors(data: Any) -> None:
    """In-memory datasets with NaN/inf inputs or labels are refused here, naming the first sample."""
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name)
        base = getattr(split, "base", None)
        x = getattr(base, "x", None)
        if x is None or not x.is_floating_point():
            continue
        rows = split.indices
        bad = ~torch.isfinite(x[rows].flatten(1)).all(dim=1)
        if split.y.is_floating_point():
            bad |= ~torch.isfinite(split.y)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ConfigError(f"data.name={data.name!r}: the {split_name} split holds NaN or inf values "
                              f"(first at sample {i} of the split, row {int(rows[i])} of the dataset)")


def build_policy_and_loss(run: Run) -> None:
    import openmix
    s = run.settings
    kwargs = dict(s.mix.policy_kwargs)
    # policies that compare pixels on [0, 1] (PuzzleMix) get the dataset's normalisation if unset
    if kwargs.get("mean", 0) is None and kwargs.get("std", 0) is None and run.data.mean is not None:
        kwargs["mean"], kwargs["std"] = list(run.data.mean), list(run.data.std)
    # the policy's own generator (saliency/feature policies) differs per rank
    kwargs["seed"] = int(kwargs["seed"] if kwargs.get("seed") is not None else s.seed) * 1024 + run.dist.rank
    try:
        run.policy = openmix.build_policy(s.mix.name, **kwargs)
        run.loss_fn = openmix.build_loss(s.loss.name, **s.loss.kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"mix={s.mix.name} / loss={s.loss.name}: {exc}") from exc
    check_loss = getattr(run.policy, "check_loss", None)
    if callable(check_loss):
        try:
            check_loss(run.loss_fn)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"mix.name={s.mix.name!r} with loss.name={s.loss.name!r}: {exc}") from exc
    batch = s.trainer.batch_size
    _dry_run(run.policy, s.mix.name, (min(batch, 8 + batch % 2), *run.data.input_shape), run.data)


def _dry_run(policy: Any, name: str, shape: tuple, data: Any) -> None:
    """Mix a zero batch of the real shape (and batch parity), so a bad combination fails now."""
    needs = getattr(policy, "needs", "input")
    if needs in ("features", "step"):     # these run inside the model's forward / their own step
        return
    x = torch.zeros(shape)
    y = torch.zeros(shape[0]) if data.task == "regression" else torch.arange(shape[0]) % max(data.num_classes, 1)
    context = {"saliency": torch.ones(shape[:1] + shape[2:])} if needs == "saliency" else {}
    state = policy.state_dict() if callable(getattr(policy, "state_dict", None)) else None
    try:
        policy(x, y, generator=torch.Generator().manual_seed(0), **context)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"mix.name={name!r} cannot mix batches of data.name={data.name!r} with shape "
                          f"{tuple(shape)}: {exc}") from exc
    finally:
        if state is not None:
            policy.load_state_dict(state)


def build_model(run: Run) -> None:
    from .engine import ModelEma
    from .models import SMALL_MODELS, MixNet, build_model as make_model
    s, data, device = run.settings, run.data, run.device
    m, t = s.model, s.trainer
    outputs = data.num_classes if data.task == "classification" else data.target_dim
    model = make_model(m.name, data.input_shape, outputs, width=m.width, drop_rate=m.drop_rate,
                       pretrained=m.pretrained, cifar_stem=m.cifar_stem, default=data.default_model, kwargs=m.kwargs)
    run.model_name = data.default_model if m.name == "auto" else m.name
    threads = t.threads
    if threads == "auto":
        # the small default networks gain nothing from intra-op threads on the CPU, and lose a lot to
        # thread synchronisation when the cores are shared
        threads = 1 if (device.type == "cpu" and run.model_name in SMALL_MODELS) else None
    if threads:
        torch.set_num_threads(int(threads))
    run.net = MixNet(model)
    if getattr(run.policy, "needs", "input") == "features" and run.net.split is None:
        raise ConfigError(f"mix.name={s.mix.name!r} mixes feature maps, but model.name={run.model_name!r} "
                          f"({type(model).__name__}) cannot be split into stages and a head; use a model with "
                          f"forward_features/forward_head (any timm model) or one of small_cnn, conv1d, mlp")
    run.net.to(device)
    if t.channels_last:
        run.net.to(memory_format=torch.channels_last)
    run.ema = ModelEma(run.net.model, t.ema["decay"]) if t.ema["enabled"] else None
    _seed_everything(s.seed + 1009 * run.dist.rank)  # per-rank randomness (dropout) after one initialisation
    run.train_module = run.net
    if run.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel
        run.train_module = DistributedDataParallel(run.net, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        run.train_module = torch.compile(run.train_module)


class Loaders:
    """The train loader of the current epoch (``set_epoch`` then ``train()``), and the fixed
    validation and test loaders (sharded across ranks, not padded)."""

    def __init__(self, run: Run, collate: Any):
        from torch.utils.data import DataLoader
        from .distributed import ShardedSampler
        t, dist, data = run.settings.trainer, run.dist, run.data
        self.run, self.collate, self.epoch = run, collate, 0
        pin = run.device.type == "cuda"

        def eval_loader(split):
            if split is None:
                return None
            sampler = ShardedSampler(len(split), dist.rank, dist.world_size, shuffle=False, pad=False)
            return DataLoader(split, batch_size=t.eval_batch_size, sampler=sampler, num_workers=t.num_workers,
                              pin_memory=pin)
        self.val, self.test = eval_loader(data.val), eval_loader(data.test)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def train(self):
        from torch.utils.data import DataLoader
        run, t = self.run, self.run.settings.trainer
        return DataLoader(run.data.train, batch_size=t.batch_size, sampler=run.sampler, num_workers=t.num_workers,
                          collate_fn=self.collate, drop_last=t.drop_last, pin_memory=run.device.type == "cuda",
                          generator=torch.Generator().manual_seed(run.settings.seed * 7919 + self.epoch),
                          persistent_workers=False)


def build_loaders(run: Run) -> None:
    import openmix
    from torch.utils.data import default_collate
    from .distributed import ShardedSampler
    s, dist, data = run.settings, run.dist, run.data
    mix_seed = s.seed * 1024 + dist.rank  # each rank mixes its own shard with its own draws
    if getattr(run.policy, "needs", "input") == "input":
        if s.mix.where == "collate":
            run.collate_mixer = openmix.MixCollate(run.policy, seed=mix_seed)
        else:
            run.device_mixer = openmix.DeviceMixer(run.policy, device=run.device, mean=data.mean, std=data.std,
                                                   seed=mix_seed, channels_last=s.trainer.channels_last)
    if s.mix.dataset_pairing is None:
        run.sampler = ShardedSampler(len(data.train), dist.rank, dist.world_size, seed=s.seed, shuffle=True)
    else:
        run.sampler = openmix.data.KernelPartnerSampler(data.train.y, s.trainer.batch_size, seed=s.seed,
                                                        rank=dist.rank, world_size=dist.world_size,
                                                        **s.mix.dataset_pairing)
    run.loaders = Loaders(run, run.collate_mixer or default_collate)


def build_optimisation(run: Run) -> None:
    from .optim import build_optimizer, build_scheduler
    s, device = run.settings, run.device
    steps_per_epoch = len(run.loaders.train())
    if steps_per_epoch == 0:
        raise ConfigError(f"no full batch of trainer.batch_size={s.trainer.batch_size} per epoch; lower it")
    run.optimizer = build_optimizer(s.optim.name, run.net, **s.optim.kwargs)
    run.scheduler = build_scheduler(s.sched.name, run.optimizer, s.trainer.epochs, steps_per_epoch, **s.sched.kwargs)
    run.amp_dtype = _amp_dtype(s.trainer.amp, s.trainer.amp_dtype, device)
    run.scaler = torch.amp.GradScaler(device.type, enabled=run.amp_dtype == torch.float16)


def _amp_dtype(amp: Any, amp_dtype: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "auto":
        amp = device.type == "cuda"
    if not amp:
        return None
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[amp_dtype]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    return dtype


def build_callbacks(run: Run) -> None:
    from .callbacks import CheckpointWriter, EpochSetter, Evaluator, History, MetricsWriter, Selector, primary_metric
    from .reports import FinalReports, SelectedWeights
    t, e = run.settings.trainer, run.settings.eval
    run.selector = Selector(t.select, primary_metric(run.data.task), t.last_k)
    run.callbacks = [
        EpochSetter(run.sampler, run.data.train, run.collate_mixer, run.device_mixer, run.policy, run.loaders),
        Evaluator(run.engine, run.loaders.val, run.loaders.test),
        run.selector,
    ]
    if e.calibration or e.robustness:
        selected = SelectedWeights(run.engine, t.select)
        run.callbacks += [selected, FinalReports(run, selected)]
    run.callbacks += [History(run.history), CheckpointWriter(run, t.save_checkpoints), MetricsWriter(run)]


# ----------------------------------------------------------------------------------- resume
def resume(run: Run) -> None:
    """Load the checkpoint ``trainer.resume``/``resume_from`` names into the parts, after checking
    that it was written by the same config (or that ``trainer.allow_config_change`` says so)."""
    from .checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint
    t = run.settings.trainer
    folder = run.out_dir / "checkpoints"
    path = None
    if t.resume_from:
        path = Path(os.path.expanduser(t.resume_from))
        if not path.is_file():
            raise CheckpointError(f"trainer.resume_from={path} does not exist")
    elif t.resume:
        path = find_resume_checkpoint(folder)
        if path is None:
            _say(run, f"openmix-train: trainer.resume=true but no checkpoint in {folder}; starting from scratch "
                      f"(set trainer.out_dir to the run directory to resume it)")
    if path is None:
        return
    state = load_checkpoint(path, map_location="cpu")
    _check_same_config(run, state, path)
    _load_parts(run, state, path)
    run.resumed_from = path
    _say(run, f"openmix-train: resuming after epoch {run.start_epoch} of {t.epochs} from {path}")


def _check_same_config(run: Run, state: dict, path: Path) -> None:
    import yaml
    from .checkpoint import CheckpointError, config_changes
    saved = yaml.safe_load(state.get("config") or "{}") or {}
    changes = config_changes(saved, run.settings.config)
    if not changes:
        run.previous_configs = list(state.get("previous_configs", []))
        return
    listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:8])
    if not run.settings.trainer.allow_config_change:
        raise CheckpointError(f"checkpoint {path} was written with another config ({len(changes)} keys differ: "
                              f"{listed}). Resume with the config it was written with, use another trainer.out_dir, "
                              f"or pass trainer.allow_config_change=true to continue with the new one (both "
                              f"configs are then recorded)")
    run.previous_configs = [*state.get("previous_configs", []),
                            {"until_epoch": int(state["epoch"]), "config": state.get("config", "")}]
    _say(run, f"openmix-train: trainer.allow_config_change=true: continuing with {len(changes)} changed keys "
              f"({listed})")


def _load_parts(run: Run, state: dict, path: Path) -> None:
    from .checkpoint import CheckpointError, restore_rng_state
    try:
        run.net.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
        if run.ema is not None and state.get("ema") is not None:
            run.ema.load_state_dict(state["ema"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit this run's model/optimiser: {' '.join(str(exc).split())[:300]}. "
            f"Resume with the config it was written with (saved in it), or use another trainer.out_dir") from exc
    per_rank = state["per_rank"]
    mine = per_rank[run.dist.rank] if len(per_rank) == run.dist.world_size else per_rank[0]
    restore_rng_state(mine["rng"])
    if mine.get("policy") is not None and callable(getattr(run.policy, "load_state_dict", None)):
        run.policy.load_state_dict(mine["policy"])
    run.history[:] = list(state["history"])
    saved_callbacks = state.get("callbacks") or {}
    for cb in run.callbacks:
        if type(cb).__name__ in saved_callbacks:
            cb.load_state_dict(saved_callbacks[type(cb).__name__])
    run.start_epoch = int(state["epoch"])


# ---------------------------------------------------------------------------------- helpers
def _seed_everything(seed: int) -> None:
    import random
    import numpy as np
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _barrier(dist: Any) -> None:
    from .distributed import barrier
    barrier(dist)


def _say(run: Run, message: str) -> None:
    if run.dist.is_main:
        print(message, file=sys.stderr, flush=True)


def _yaml(config: dict) -> str:
    from omegaconf import OmegaConf
    return OmegaConf.to_yaml(OmegaConf.create(config))
