"""openmix-train: the Hydra app (``main``) and the programmatic entry point (``train``).

    openmix-train mix=cutmix data=digits trainer.epochs=10 seed=1
    python -m openmix.train -m mix=mixup,cutmix,fmix
    torchrun --nproc_per_node=2 -m openmix.train data=digits

``train(cfg) -> summary dict`` runs one training run in ``cfg.trainer.out_dir`` (or Hydra's run
directory) and writes there: config.yaml (resolved), metrics.jsonl, summary.json,
checkpoints/{last,best}.pt and TensorBoard event files under tb/. Only rank 0 writes.
"""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = ["train", "main", "compose_config", "CONFIG_DIR", "ConfigError"]

from ..paths import config_dir

# OPENMIX_CONFIG_DIR, else the repository's configs/, else the copy inside the installed package
CONFIG_DIR = config_dir()
ENGINE_MIX_KEYS = ("where",)          # mix config keys for the engine, not the policy constructor
CHECKPOINT_FORMAT = "openmix-checkpoint"


class ConfigError(ValueError):
    """An incompatible combination of config choices, found before training starts."""


def compose_config(overrides: Sequence[str] = (), config_dir: str | os.PathLike | None = None) -> DictConfig:
    """The trainer's config composed with Hydra's compose API (no run directory, no logging)."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


# ------------------------------------------------------------------------------------ set-up
def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name!r} but CUDA is not available; use trainer.device=cpu or auto")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    elif dev.type != "cpu":
        raise ConfigError(f"trainer.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return dev


def _amp_dtype(cfg_t: DictConfig, device: torch.device) -> Optional[torch.dtype]:
    amp = cfg_t.amp
    if amp not in ("auto", True, False):
        raise ConfigError(f"trainer.amp must be auto, true or false, got {amp!r}")
    if amp == "auto":
        amp = device.type == "cuda"
    if not amp:
        return None
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    if cfg_t.amp_dtype not in dtypes:
        raise ConfigError(f"trainer.amp_dtype must be one of {list(dtypes)}, got {cfg_t.amp_dtype!r}")
    dtype = dtypes[cfg_t.amp_dtype]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    return dtype


def _seed_everything(seed: int) -> None:
    import random
    import numpy as np
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _out_dir(cfg: DictConfig) -> Path:
    if cfg.trainer.get("out_dir"):
        return Path(os.path.expanduser(str(cfg.trainer.out_dir)))
    try:
        from hydra.core.hydra_config import HydraConfig
        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # hydra not running
        pass
    raise ConfigError("trainer.out_dir is not set and no Hydra run directory exists; "
                      "set trainer.out_dir=<folder> when calling openmix.train.app.train directly")


PAIRING_SCOPES = ("batch", "dataset")


def _dataset_pairing(cfg_mix: DictConfig) -> dict | None:
    """The C-Mixup kernel arguments when ``mix.pairing.scope=dataset`` (partners drawn from the
    whole training set by ``KernelPartnerSampler``), else None."""
    pairing = OmegaConf.to_container(cfg_mix, resolve=True).get("pairing")
    if not isinstance(pairing, dict) or pairing.get("scope", "batch") == "batch":
        return None
    scope = pairing.get("scope")
    if scope not in PAIRING_SCOPES:
        raise ConfigError(f"mix.pairing.scope must be one of {list(PAIRING_SCOPES)}, got {scope!r}")
    if pairing.get("name") != "cmixup":
        raise ConfigError(f"mix.pairing.scope=dataset needs mix.pairing.name=cmixup, got {pairing.get('name')!r}")
    return {k: pairing[k] for k in ("sigma", "truncation") if k in pairing}


def _policy_kwargs(cfg_mix: DictConfig) -> dict:
    kwargs = OmegaConf.to_container(cfg_mix, resolve=True)
    for k in ("name", *ENGINE_MIX_KEYS):
        kwargs.pop(k, None)
    pairing = kwargs.get("pairing")
    if isinstance(pairing, dict):
        # whole-dataset partners arrive in the second half of each batch (KernelPartnerSampler)
        kwargs["pairing"] = "halves" if _dataset_pairing(cfg_mix) else {k: v for k, v in pairing.items() if k != "scope"}
    return kwargs


def _build_policy(cfg: DictConfig, rank: int, bundle):
    import openmix
    name = cfg.mix.name
    if name not in openmix.list_policies():
        raise ValueError(f"unknown policy mix.name={name!r}; choose one of {openmix.list_policies()}")
    kwargs = _policy_kwargs(cfg.mix)
    # policies that compare pixels on [0, 1] (PuzzleMix) get the dataset's normalisation if unset
    if ("mean" in kwargs and "std" in kwargs and kwargs["mean"] is None and kwargs["std"] is None
            and bundle.mean is not None):
        kwargs["mean"], kwargs["std"] = list(bundle.mean), list(bundle.std)
    # the policy's own generator (saliency/feature policies) differs per rank
    kwargs["seed"] = int(kwargs.get("seed") if kwargs.get("seed") is not None else cfg.seed) * 1024 + rank
    return openmix.build_policy(name, **kwargs)


def _build_loss(cfg: DictConfig, task: str, dataset: str):
    import openmix
    kwargs = OmegaConf.to_container(cfg.loss, resolve=True)
    name = kwargs.pop("name")
    if name == "auto":
        name = "mse" if task == "regression" else "soft_ce"
        if task == "regression":
            kwargs.pop("smoothing", None)
    if name not in openmix.list_losses():
        raise ValueError(f"unknown loss loss.name={name!r}; choose one of {['auto', *openmix.list_losses()]}")
    loss_fn = openmix.build_loss(name, **kwargs)
    loss_task = getattr(loss_fn, "task", None)
    if loss_task is not None and loss_task != task:
        fix = "loss=mse" if task == "regression" else "loss=soft_ce (or bce, decoupled)"
        raise ConfigError(f"loss.name={name!r} is a {loss_task} loss but data.name={dataset!r} is a {task} dataset "
                          f"(data.task={task}); use {fix}, or loss=auto")
    return name, loss_fn


def _check_policy_on_batch(policy, name: str, batch_shape: tuple, task: str, num_classes: int, dataset: str):
    """Dry-run the policy on a zero batch of the real shape, so a bad combination fails now."""
    needs = getattr(policy, "needs", "input")
    if needs == "features":
        return
    x = torch.zeros(batch_shape)
    y = torch.zeros(batch_shape[0]) if task == "regression" else torch.arange(batch_shape[0]) % max(num_classes, 1)
    context = {"saliency": torch.ones(batch_shape[:1] + batch_shape[2:])} if needs == "saliency" else {}
    state = policy.state_dict() if hasattr(policy, "state_dict") else None
    try:
        policy(x, y, generator=torch.Generator().manual_seed(0), **context)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"mix.name={name!r} cannot mix batches of data.name={dataset!r} with shape "
                          f"{tuple(batch_shape)}: {exc}") from exc
    finally:
        if state is not None:
            policy.load_state_dict(state)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    import openmix
    try:
        timm_version = version("timm")  # no import: timm pulls in torchvision (seconds)
    except PackageNotFoundError:
        timm_version = None
    return {"torch": torch.__version__, "timm": timm_version, "openmix": getattr(openmix, "__version__", "?"),
            "python": platform.python_version()}


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "cpu_max_rss"


# ------------------------------------------------------------------------------------- train
def train(cfg: DictConfig) -> dict:
    """Run one training run; returns the summary dict (also written to <out_dir>/summary.json)."""
    from torch.utils.data import DataLoader, default_collate
    from tqdm.auto import tqdm

    import openmix
    from .checkpoint import (CheckpointError, capture_rng_state, load_checkpoint, restore_rng_state,
                             save_checkpoint)
    from .datasets import Augmented, ImageFiles, build_dataset
    from .distributed import ShardedSampler, all_gather_objects, barrier, init_distributed
    from .engine import Engine, ModelEma
    from .metrics import median_last_k
    from .models import SMALL_MODELS, MixNet, build_model
    from .optim import build_optimizer, build_scheduler
    from .outputs import TensorBoardLogger, format_summary, write_json_atomic, write_metrics_jsonl, write_text_atomic

    t_start = time.perf_counter()
    tcfg = cfg.trainer
    out_dir = _out_dir(cfg)
    dev_name = str(tcfg.device)
    pre_device = _resolve_device(dev_name, int(os.environ.get("LOCAL_RANK", "0")))
    dist_info = init_distributed(pre_device.type)
    device = _resolve_device(dev_name, dist_info.local_rank)
    if dist_info.enabled:  # Hydra's timestamped run dir may differ by a second between ranks
        out_dir = Path(all_gather_objects(str(out_dir), dist_info)[0])
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    threads_before = torch.get_num_threads()
    try:
        if tcfg.deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
            torch.backends.cudnn.benchmark = False
        seed = int(cfg.seed)
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        _seed_everything(seed)

        # ---- data
        data_kwargs = OmegaConf.to_container(cfg.data, resolve=True)
        data_name = data_kwargs.pop("name")
        cfg_task = data_kwargs.pop("task", None)
        if data_name in ("cifar10", "cifar100", "imagefolder"):
            data_kwargs.setdefault("seed", seed)  # seeds the per-sample augmentation generators
        if dist_info.enabled and not dist_info.is_main and data_kwargs.get("download"):
            barrier(dist_info)  # rank 0 downloads first
        bundle = build_dataset(data_name, **data_kwargs)
        if dist_info.enabled and dist_info.is_main and data_kwargs.get("download"):
            barrier(dist_info)
        task = bundle.task
        if cfg_task is not None and cfg_task != task:
            raise ConfigError(f"data.task={cfg_task!r} but data.name={data_name!r} is a {task} dataset; "
                              f"remove the data.task override")

        # ---- checks before anything heavy
        batch_size = int(tcfg.batch_size)
        epochs = int(tcfg.epochs)
        if epochs < 1:
            raise ConfigError(f"trainer.epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ConfigError(f"trainer.batch_size must be >= 1, got {batch_size}")
        where = str(cfg.mix.get("where", "collate"))
        if where not in ("collate", "device"):
            raise ConfigError(f"mix.where must be 'collate' or 'device', got {where!r}")
        n_train = len(bundle.train)
        per_rank = -(-n_train // dist_info.world_size)
        if batch_size > per_rank:
            raise ConfigError(f"trainer.batch_size={batch_size} is larger than the training set of data.name="
                              f"{data_name!r} ({n_train} samples{f', {per_rank} per rank' if dist_info.enabled else ''}); "
                              f"set trainer.batch_size <= {per_rank}")
        loss_name, loss_fn = _build_loss(cfg, task, data_name)
        policy = _build_policy(cfg, dist_info.rank, bundle)
        needs = getattr(policy, "needs", "input")
        if hasattr(policy, "check_loss"):
            try:
                policy.check_loss(loss_fn)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"mix.name={cfg.mix.name!r} with loss.name={loss_name!r}: {exc}") from exc
        if (task == "classification" and cfg.mix.name != "vanilla"
                and not getattr(loss_fn, "needs_soft_targets", True)):
            raise ConfigError(f"loss.name={loss_name!r} uses only each row's own label, so mix.name="
                              f"{cfg.mix.name!r} would lose the partner's share; use loss=soft_ce (or bce, decoupled), "
                              f"or mix=vanilla")
        # a small batch of the same parity is enough to catch shape and parity problems
        dry_batch = min(batch_size, 8 + batch_size % 2)
        _check_policy_on_batch(policy, cfg.mix.name, (dry_batch, *bundle.input_shape), task, bundle.num_classes,
                               data_name)

        # ---- model
        m = cfg.model
        num_outputs = bundle.num_classes if task == "classification" else bundle.target_dim
        model = build_model(m.name, bundle.input_shape, num_outputs, width=m.get("width"),
                            drop_rate=float(m.get("drop_rate", 0.0)), pretrained=bool(m.get("pretrained", False)),
                            cifar_stem=m.get("cifar_stem", "auto"), default=bundle.default_model,
                            kwargs=OmegaConf.to_container(m.kwargs, resolve=True) if m.get("kwargs") else {})
        model_name = bundle.default_model if m.name == "auto" else m.name
        threads = tcfg.get("threads")
        if threads == "auto":
            # the small default networks gain nothing from intra-op threads on CPU, and lose a lot
            # to thread synchronisation when the cores are shared
            threads = 1 if (device.type == "cpu" and model_name in SMALL_MODELS) else None
        if threads:
            torch.set_num_threads(int(threads))
        net = MixNet(model)
        if needs == "features" and net.split is None:
            raise ConfigError(f"mix.name={cfg.mix.name!r} mixes feature maps, but model.name={model_name!r} "
                              f"({type(model).__name__}) cannot be split into stages and a head; use a model with "
                              f"forward_features/forward_head (any timm model) or one of small_cnn, conv1d, mlp")
        net.to(device)
        if tcfg.channels_last:
            net.to(memory_format=torch.channels_last)
        ema = ModelEma(net.model, float(tcfg.ema.decay)) if tcfg.ema.enabled else None
        # per-rank randomness (dropout) after an identical initialisation
        _seed_everything(seed + 1009 * dist_info.rank)
        train_module: torch.nn.Module = net
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel
            train_module = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        if tcfg.compile:
            train_module = torch.compile(train_module)

        # ---- loaders
        mix_seed = seed * 1024 + dist_info.rank  # each rank mixes its own shard with its own draws
        collate_mixer = None
        device_mixer = None
        if needs == "input" and where == "collate":
            collate_mixer = openmix.MixCollate(policy, seed=mix_seed)
        elif needs == "input":
            device_mixer = openmix.DeviceMixer(policy, device=device, mean=bundle.mean, std=bundle.std, seed=mix_seed,
                                               channels_last=bool(tcfg.channels_last))
        dataset_pairing = _dataset_pairing(cfg.mix)
        if dataset_pairing is None:
            sampler = ShardedSampler(n_train, dist_info.rank, dist_info.world_size, seed=seed, shuffle=True)
        else:
            labels = getattr(bundle.train, "y", None)
            if labels is None:
                raise ConfigError(f"mix.pairing.scope=dataset needs a dataset with its labels in memory; "
                                  f"data={bundle.name} has none, use mix.pairing.scope=batch")
            if batch_size % 2:
                raise ConfigError(f"mix.pairing.scope=dataset needs an even trainer.batch_size (half anchors, "
                                  f"half partners), got {batch_size}")
            sampler = openmix.data.KernelPartnerSampler(labels, batch_size, seed=seed, rank=dist_info.rank,
                                                        world_size=dist_info.world_size, **dataset_pairing)
        test_sampler = ShardedSampler(len(bundle.test), dist_info.rank, dist_info.world_size, shuffle=False, pad=False)
        workers = int(tcfg.num_workers)
        pin = device.type == "cuda"

        def train_loader(epoch: int):
            sampler.set_epoch(epoch)
            if isinstance(bundle.train, (Augmented, ImageFiles)):
                bundle.train.set_epoch(epoch)
            if collate_mixer is not None:
                collate_mixer.set_epoch(epoch)
            if device_mixer is not None:
                device_mixer.set_epoch(epoch)
            if hasattr(policy, "set_epoch"):
                policy.set_epoch(epoch)
            return DataLoader(bundle.train, batch_size=batch_size, sampler=sampler, num_workers=workers,
                              collate_fn=collate_mixer or default_collate, drop_last=bool(tcfg.drop_last),
                              pin_memory=pin, generator=torch.Generator().manual_seed(seed * 7919 + epoch),
                              persistent_workers=False)

        test_loader = DataLoader(bundle.test, batch_size=int(tcfg.eval_batch_size), sampler=test_sampler,
                                 num_workers=workers, pin_memory=pin)
        steps_per_epoch = len(train_loader(0))
        if steps_per_epoch == 0:
            raise ConfigError(f"no full batch of trainer.batch_size={batch_size} per epoch; lower it")

        # ---- optimisation
        o = OmegaConf.to_container(cfg.optim, resolve=True)
        optimizer = build_optimizer(o.pop("name"), net, **o)
        s = OmegaConf.to_container(cfg.sched, resolve=True)
        scheduler = build_scheduler(s.pop("name"), optimizer, epochs, steps_per_epoch, **s)
        amp_dtype = _amp_dtype(tcfg, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

        engine = Engine(net=net, train_module=train_module, policy=policy, loss_fn=loss_fn, optimizer=optimizer,
                        scheduler=scheduler, scaler=scaler, device=device, task=task, mean=bundle.mean,
                        std=bundle.std, device_mixer=device_mixer, amp_dtype=amp_dtype,
                        channels_last=bool(tcfg.channels_last),
                        clip_grad=float(tcfg.clip_grad) if tcfg.clip_grad else None, ema=ema,
                        eval_ema=bool(tcfg.ema.eval), target_mean=bundle.target_mean,
                        target_std=bundle.target_std, num_classes=bundle.num_classes, dist_info=dist_info)

        # ---- resume
        ckpt_dir = out_dir / "checkpoints"
        history: list[dict] = []
        best: dict = {}
        start_epoch = 0
        resume_path = None
        if tcfg.get("resume_from"):
            resume_path = Path(os.path.expanduser(str(tcfg.resume_from)))
            if not resume_path.is_file():
                raise CheckpointError(f"trainer.resume_from={resume_path} does not exist")
        elif tcfg.resume:
            if (ckpt_dir / "last.pt").is_file():
                resume_path = ckpt_dir / "last.pt"
            elif dist_info.is_main:
                print(f"openmix-train: trainer.resume=true but no checkpoint in {ckpt_dir}; starting from scratch "
                      f"(set trainer.out_dir to the run directory to resume it)", file=sys.stderr)
        if resume_path is not None:
            state = load_checkpoint(resume_path, map_location="cpu")
            try:
                net.model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                scaler.load_state_dict(state["scaler"])
                if ema is not None and state.get("ema") is not None:
                    ema.load_state_dict(state["ema"])
            except (RuntimeError, KeyError, ValueError) as exc:
                raise CheckpointError(
                    f"checkpoint {resume_path} does not fit this run's model/optimiser (was it written with "
                    f"another model, data or optim config?): {' '.join(str(exc).split())[:300]}. Resume with the config "
                    f"it was written with (saved in it and in {resume_path.parent.parent / 'config.yaml'}), "
                    f"or use another trainer.out_dir") from exc
            per_rank_states = state["per_rank"]
            mine = per_rank_states[dist_info.rank] if len(per_rank_states) == dist_info.world_size else per_rank_states[0]
            restore_rng_state(mine["rng"])
            if mine.get("policy") is not None and hasattr(policy, "load_state_dict"):
                policy.load_state_dict(mine["policy"])
            history = list(state["history"])
            best = dict(state.get("best", {}))
            start_epoch = int(state["epoch"])

        # ---- outputs (rank 0 only)
        is_main = dist_info.is_main
        if is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        tb = TensorBoardLogger(out_dir / "tb", enabled=is_main and bool(tcfg.tensorboard),
                               purge_step=start_epoch + 1 if start_epoch else None)
        show_bar = bool(tcfg.progress) and is_main and sys.stderr.isatty()
        primary, better = ("top1", lambda a, b: a > b) if task == "classification" else ("rmse", lambda a, b: a < b)
        last_k = int(tcfg.last_k)
        if last_k < 1:
            raise ConfigError(f"trainer.last_k must be >= 1, got {last_k}")

        train_seconds = sum(h.get("train_seconds", 0.0) for h in history)
        train_samples = sum(h.get("train_samples", 0) for h in history)
        for epoch in range(start_epoch, epochs):
            loader = train_loader(epoch)
            bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", disable=not show_bar,
                       leave=True, dynamic_ncols=True, file=sys.stderr)
            stats = engine.train_epoch(loader, progress=bar)
            bar.close()
            t_eval = time.perf_counter()
            metrics = engine.evaluate(test_loader)
            eval_seconds = time.perf_counter() - t_eval
            row = {"epoch": epoch + 1, "train_loss": stats.train_loss, **metrics, "lr": stats.lr,
                   "train_seconds": stats.seconds, "eval_seconds": eval_seconds, "train_samples": stats.samples,
                   "samples_per_second": stats.samples / max(stats.seconds, 1e-9)}
            history.append(row)
            train_seconds += stats.seconds
            train_samples += stats.samples
            is_best = not best or better(row[primary], best["value"])
            if is_best:
                best = {"epoch": epoch + 1, "metric": primary, "value": row[primary]}
            # every rank's random states go into the checkpoint (rank 0 writes it)
            per_rank = all_gather_objects({"rng": capture_rng_state(),
                                           "policy": policy.state_dict() if hasattr(policy, "state_dict") else None},
                                          dist_info)
            if is_main:
                if tcfg.save_checkpoints:
                    state = {"format": CHECKPOINT_FORMAT, "version": 1, "epoch": epoch + 1,
                             "model": net.model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             "ema": ema.state_dict() if ema is not None else None,
                             "sampler": sampler.state_dict(), "per_rank": per_rank, "history": history,
                             "best": best, "config": OmegaConf.to_yaml(cfg, resolve=True)}
                    save_checkpoint(state, ckpt_dir / "last.pt")
                    if is_best:
                        save_checkpoint(state, ckpt_dir / "best.pt", keep_previous=False)
                write_metrics_jsonl(out_dir / "metrics.jsonl", history)
                tb.log(row, epoch + 1)
                msg = (f"epoch {epoch + 1}/{epochs}  loss {stats.train_loss:.4f}  "
                       + "  ".join(f"{k} {row[k]:.4f}" for k in metrics) + f"  {stats.seconds:.1f}s")
                (tqdm.write(msg, file=sys.stderr) if show_bar else print(msg, flush=True))
            barrier(dist_info)
        tb.close()

        # ---- summary
        if task == "classification":
            final = {k: history[-1][k] for k in ("top1", "top5", "nll", "ece")}
            final["top1_median_last_k"] = median_last_k(history, "top1", last_k)
        else:
            final = {k: history[-1][k] for k in ("rmse", "mape")}
            final["rmse_median_last_k"] = median_last_k(history, "rmse", last_k)
        peak_mb, peak_kind = _peak_memory_mb(device)
        summary = {
            "task": task, "dataset": data_name, "model": model_name, "policy": str(cfg.mix.name), "loss": loss_name,
            "seed": seed, "epochs": epochs, "final": final, "history": history,
            "seconds_per_epoch": sum(h["train_seconds"] + h["eval_seconds"] for h in history) / len(history),
            "samples_per_second": train_samples / max(train_seconds, 1e-9),
            "peak_memory_mb": peak_mb, "peak_memory_kind": peak_kind, "device": str(device),
            "versions": _versions(), "world_size": dist_info.world_size, "last_k": last_k, "best": best,
            "where": where if needs == "input" else "engine", "out_dir": str(out_dir),
            "resumed_from_epoch": start_epoch if resume_path is not None else None,
            "total_seconds": time.perf_counter() - t_start,
            "info": {"train_samples": n_train, "test_samples": len(bundle.test),
                     "input_shape": list(bundle.input_shape), "params": sum(p.numel() for p in net.parameters()),
                     "where": where if needs == "input" else f"engine ({needs})"},
        }
        if is_main:
            write_json_atomic(out_dir / "summary.json", summary)
            if tcfg.get("summary", True):
                print(format_summary(summary, str(out_dir)), flush=True)
        return summary
    finally:
        torch.use_deterministic_algorithms(deterministic_before)  # train() may run inside a larger program
        torch.set_num_threads(threads_before)
        if dist_info.initialized_here:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


# -------------------------------------------------------------------------------------- CLI
def _hydra_entry(cfg: DictConfig) -> None:
    from .checkpoint import CheckpointError
    try:
        train(cfg)
    except (ValueError, TypeError, FileNotFoundError, CheckpointError) as exc:
        if os.environ.get("OPENMIX_FULL_ERROR"):
            raise
        print(f"openmix-train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Console script ``openmix-train`` / ``python -m openmix.train``."""
    import hydra
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise SystemExit(f"openmix-train: error: no train.yaml in {CONFIG_DIR}; set OPENMIX_CONFIG_DIR to a folder "
                         f"laid out like the repository's configs/ (or reinstall openmix: its wheel ships them)")
    if int(os.environ.get("RANK", "0")) > 0:
        # DDP ranks > 0 write nothing: no .hydra/ folder, no log file
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")(_hydra_entry)()


if __name__ == "__main__":
    main()
