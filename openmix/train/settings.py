"""``validate(cfg) -> Settings``: every key of the composed trainer config checked once, up front.

Each group is parsed against a schema: unknown keys, missing keys, wrong types and values out of
range are errors that name the full key, the value received and what is accepted, before any
dataset, model or file exists. Keys of the data, mix and loss groups are checked against the
signature of the dataset builder, policy or loss they configure (so a new dataset, policy or loss
needs no schema edit); optimiser and schedule keys have their own small schemas.
"""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

__all__ = ["ConfigError", "Settings", "TrainerSettings", "DataSettings", "ModelSettings", "MixSettings",
           "LossSettings", "OptimSettings", "SchedSettings", "EvalSettings", "validate", "check_config_files"]

TOP_LEVEL = ("data", "model", "mix", "loss", "optim", "sched", "trainer", "eval", "seed")
SELECT_RULES = ("best_val", "last_k", "final")
WHERE = ("collate", "device")
PAIRING_SCOPES = ("batch", "dataset")
NOISE_KINDS = ("symmetric", "pairflip")


class ConfigError(ValueError):
    """A setting (or combination of settings) that cannot work, found before training starts."""


# ----------------------------------------------------------------------------------- parsers
Parser = Callable[[Any, str], Any]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(low: Optional[int] = None, high: Optional[int] = None) -> Parser:
    bounds = f" >= {low}" if high is None and low is not None else f" in [{low}, {high}]" if low is not None else ""

    def parse(v, key):
        if not _is_int(v) or (low is not None and v < low) or (high is not None and v > high):
            raise ConfigError(f"{key} must be an integer{bounds}, got {v!r}")
        return int(v)
    return parse


def number(low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False,
           high_open: bool = False) -> Parser:
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
    accepted = "a finite number" + (f" {lo}" if lo else "") + (" and" if lo and hi else "") + (f" {hi}" if hi else "")

    def parse(v, key):
        ok = _is_number(v) and math.isfinite(v)
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if not ok:
            raise ConfigError(f"{key} must be {accepted}, got {v!r}")
        return float(v)
    return parse


def boolean(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def text(v: Any, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{key} must be a non-empty string, got {v!r}")
    return v


def choice(*options: Any) -> Parser:
    def parse(v, key):
        if isinstance(v, bool) and not any(isinstance(o, bool) for o in options) or v not in options:
            raise ConfigError(f"{key} must be one of {list(options)}, got {v!r}")
        return v
    return parse


def optional(parser: Parser) -> Parser:
    def parse(v, key):
        return None if v is None else parser(v, key)
    return parse


def either(*parsers: Parser, accepted: str) -> Parser:
    def parse(v, key):
        for p in parsers:
            try:
                return p(v, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {accepted}, got {v!r}")
    return parse


def mapping(v: Any, key: str) -> dict:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{key} must be a mapping, got {v!r}")
    return dict(v)


def parse_group(node: Any, path: str, schema: Mapping[str, Parser], what: str = "") -> dict:
    """Parse ``node`` (a mapping) with ``schema``: every key present, none unknown."""
    node = mapping(node, path)
    unknown = sorted(set(node) - set(schema))
    if unknown:
        raise ConfigError(unknown_key_message(path, unknown[0], node[unknown[0]], schema, what))
    missing = sorted(set(schema) - set(node))
    if missing:
        raise ConfigError(f"{path}.{missing[0]} is missing; the {what or path} settings are {sorted(schema)} "
                          f"(restore it in the config or with +{path}.{missing[0]}=<value>)")
    return {k: schema[k](node[k], f"{path}.{k}") for k in schema}


def unknown_key_message(path: str, key: str, value: Any, accepted: Any, what: str = "") -> str:
    close = difflib.get_close_matches(key, list(accepted), n=1)
    hint = f"; did you mean {path}.{close[0]}?" if close else ""
    return (f"{path}.{key}={value!r} is not a setting of {what or path}; accepted keys: "
            f"{sorted(accepted)}{hint}")


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class TrainerSettings:
    epochs: int
    batch_size: int
    eval_batch_size: int
    num_workers: int
    drop_last: bool
    device: str
    amp: Any                    # "auto" | True | False
    amp_dtype: str
    channels_last: bool
    compile: bool
    clip_grad: Optional[float]
    ema: dict                   # {enabled, decay, eval}
    deterministic: bool
    threads: Any                # "auto" | None | int >= 1
    last_k: int
    select: str
    out_dir: Optional[str]
    resume: bool
    resume_from: Optional[str]
    allow_config_change: bool
    save_checkpoints: bool
    tensorboard: bool
    progress: bool
    summary: bool


def _device(v: Any, key: str) -> str:
    import re
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        raise ConfigError(f"{key} must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
    return v


EMA_SCHEMA = {"enabled": boolean, "decay": number(0.0, 1.0, low_open=True, high_open=True), "eval": boolean}

TRAINER_SCHEMA: dict[str, Parser] = {
    "epochs": integer(1), "batch_size": integer(1), "eval_batch_size": integer(1), "num_workers": integer(0),
    "drop_last": boolean, "device": _device, "amp": choice("auto", True, False),
    "amp_dtype": choice("bfloat16", "float16"), "channels_last": boolean, "compile": boolean,
    "clip_grad": optional(number(0.0, low_open=True)),
    "ema": lambda v, key: parse_group(v, key, EMA_SCHEMA),
    "deterministic": boolean,
    "threads": either(choice("auto"), optional(integer(1)), accepted="auto, null or an integer >= 1"),
    "last_k": integer(1), "select": choice(*SELECT_RULES), "out_dir": optional(text), "resume": boolean,
    "resume_from": optional(text), "allow_config_change": boolean, "save_checkpoints": boolean,
    "tensorboard": boolean, "progress": boolean, "summary": boolean,
}


@dataclass(frozen=True)
class DataSettings:
    name: str
    task: str
    builder_kwargs: dict          # the dataset builder's own arguments
    val_fraction: float
    train_size: Optional[int]
    test_size: Optional[int]
    per_class: Optional[int]
    label_noise: float
    label_noise_kind: str


# keys every dataset takes, handled by openmix.train.splits rather than the dataset builder
SPLIT_SCHEMA: dict[str, Parser] = {
    "val_fraction": number(0.0, 1.0, high_open=True),
    "train_size": optional(integer(1)),
    "test_size": optional(integer(1)),
    "per_class": optional(integer(1)),
    "label_noise": number(0.0, 1.0, high_open=True),
    "label_noise_kind": choice(*NOISE_KINDS),
}
SPLIT_DEFAULTS = {"val_fraction": 0.1, "train_size": None, "test_size": None, "per_class": None,
                  "label_noise": 0.0, "label_noise_kind": "symmetric"}


@dataclass(frozen=True)
class ModelSettings:
    name: str
    width: Optional[int]
    drop_rate: float
    pretrained: bool
    cifar_stem: Any              # "auto" | bool
    kwargs: dict


MODEL_SCHEMA: dict[str, Parser] = {
    "name": text, "width": optional(integer(1)), "drop_rate": number(0.0, 1.0, high_open=True),
    "pretrained": boolean, "cifar_stem": choice("auto", True, False), "kwargs": mapping,
}


@dataclass(frozen=True)
class MixSettings:
    name: str
    where: str
    policy_kwargs: dict           # the policy constructor's arguments (pairing scope removed)
    dataset_pairing: Optional[dict] = None   # C-Mixup kernel arguments when mix.pairing.scope=dataset


@dataclass(frozen=True)
class LossSettings:
    name: str                     # resolved: "auto" is replaced by the task's default loss
    kwargs: dict


@dataclass(frozen=True)
class OptimSettings:
    name: str
    kwargs: dict


OPTIM_SCHEMAS: dict[str, dict[str, Parser]] = {
    "sgd": {"lr": number(0.0, low_open=True), "momentum": number(0.0, 1.0, high_open=True), "nesterov": boolean,
            "weight_decay": number(0.0), "decay_norm_and_bias": boolean},
    "adamw": {"lr": number(0.0, low_open=True), "betas": lambda v, key: _betas(v, key), "weight_decay": number(0.0),
              "decay_norm_and_bias": boolean},
}
OPTIM_OPTIONAL = {"adamw": {"eps": 1e-8}}


def _betas(v: Any, key: str) -> tuple:
    if (isinstance(v, (str, bytes)) or not isinstance(v, typing.Sequence) or len(v) != 2
            or not all(_is_number(b) and 0.0 <= b < 1.0 for b in v)):
        raise ConfigError(f"{key} must be a pair [beta1, beta2] of numbers in [0, 1), got {v!r}")
    return tuple(float(b) for b in v)


@dataclass(frozen=True)
class SchedSettings:
    name: str
    kwargs: dict


_WARMUP = {"warmup_epochs": number(0.0), "warmup_start_ratio": number(0.0, 1.0)}
SCHED_SCHEMAS: dict[str, dict[str, Parser]] = {
    "cosine": {**_WARMUP, "min_lr_ratio": number(0.0, 1.0)},
    "multistep": {**_WARMUP, "milestones": lambda v, key: _milestones(v, key), "gamma": number(0.0, low_open=True)},
    "constant": dict(_WARMUP),
}


def _milestones(v: Any, key: str) -> tuple:
    if isinstance(v, (str, bytes)) or not isinstance(v, typing.Sequence) or not all(_is_int(m) and m >= 1 for m in v):
        raise ConfigError(f"{key} must be a list of epochs >= 1, got {v!r}")
    return tuple(sorted(int(m) for m in v))


@dataclass(frozen=True)
class EvalSettings:
    calibration: bool             # raw and temperature-scaled NLL/ECE/Brier of the selected model
    robustness: dict              # corruption -> levels, e.g. {"gaussian": (0.1, 0.3)}


def _levels(kind: str) -> Parser:
    check = number(0.0, 1.0, low_open=True, high_open=True) if kind == "occlusion" else number(0.0, low_open=True)

    def parse(v, key):
        if v is None:
            return ()
        if isinstance(v, (str, bytes)) or not isinstance(v, typing.Sequence):
            raise ConfigError(f"{key} must be a list of levels (empty: skip), got {v!r}")
        return tuple(check(level, f"{key}[{i}]") for i, level in enumerate(v))
    return parse


ROBUSTNESS_SCHEMA = {kind: _levels(kind) for kind in ("gaussian", "occlusion", "fgsm")}


def _eval_settings(node: Any) -> EvalSettings:
    node = mapping(node, "eval")
    parsed = parse_group(node, "eval", {"calibration": boolean, "robustness": mapping})
    robustness = parsed["robustness"]
    check_keys(robustness, list(ROBUSTNESS_SCHEMA), "eval.robustness", "eval.robustness")
    levels = {k: ROBUSTNESS_SCHEMA[k](v, f"eval.robustness.{k}") for k, v in robustness.items()}
    return EvalSettings(calibration=parsed["calibration"], robustness={k: v for k, v in levels.items() if v})


@dataclass(frozen=True)
class Settings:
    """The validated trainer config: what ``build`` needs, nothing unchecked."""
    seed: int
    trainer: TrainerSettings
    data: DataSettings
    model: ModelSettings
    mix: MixSettings
    loss: LossSettings
    optim: OptimSettings
    sched: SchedSettings
    eval: EvalSettings
    config: dict = field(repr=False, default_factory=dict)     # the resolved config, for records


# ---------------------------------------------------------------------------------- validate
def validate(cfg: Any) -> Settings:
    """Check the composed config (DictConfig or dict) and return typed ``Settings``."""
    tree = _plain(cfg)
    unknown = sorted(set(tree) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(unknown_key_message("config", unknown[0], tree[unknown[0]], TOP_LEVEL, "the trainer")
                          .replace("config.", "", 1))
    for group in TOP_LEVEL:
        if group not in tree:
            raise ConfigError(f"{group} is missing from the config; the trainer needs {list(TOP_LEVEL)}")
    seed = integer(0)(tree["seed"], "seed")
    trainer = TrainerSettings(**parse_group(tree["trainer"], "trainer", TRAINER_SCHEMA))
    data = _data_settings(tree["data"])
    mix = _mix_settings(tree["mix"], data.task)
    settings = Settings(seed=seed, trainer=trainer, data=data, model=ModelSettings(**parse_group(
        tree["model"], "model", MODEL_SCHEMA)), mix=mix, loss=_loss_settings(tree["loss"], data.task, mix.name),
        optim=_named_group(tree["optim"], "optim", OPTIM_SCHEMAS, OptimSettings, OPTIM_OPTIONAL),
        sched=_named_group(tree["sched"], "sched", SCHED_SCHEMAS, SchedSettings), eval=_eval_settings(tree["eval"]),
        config=tree)
    _check_combinations(settings)
    return settings


def _plain(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(cfg, DictConfig):
            try:
                cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            except Exception as exc:  # an interpolation or ??? that cannot resolve
                raise ConfigError(f"the config cannot be resolved: {' '.join(str(exc).split())}") from None
    except ImportError:  # pragma: no cover - the trainer extra brings omegaconf
        pass
    return mapping(cfg, "config")


def _data_settings(node: Any) -> DataSettings:
    from .datasets import dataset_info, list_datasets
    node = mapping(node, "data")
    name = node.get("name")
    if name not in list_datasets():
        close = difflib.get_close_matches(str(name), list_datasets(), n=1)
        raise ConfigError(f"data.name must be one of {list_datasets()}, got {name!r}"
                          + (f"; did you mean {close[0]}?" if close else ""))
    info = dataset_info(name)
    task = node.get("task", info.task)
    if task != info.task:
        raise ConfigError(f"data.task={task!r} but data.name={name!r} is a {info.task} dataset; "
                          f"remove the data.task override")
    split = {k: node.get(k, SPLIT_DEFAULTS[k]) for k in SPLIT_SCHEMA}
    split = {k: SPLIT_SCHEMA[k](v, f"data.{k}") for k, v in split.items()}
    rest = {k: v for k, v in node.items() if k not in ("name", "task", *SPLIT_SCHEMA)}
    kwargs = check_signature_kwargs(info.builder, rest, "data", f"data={name}")
    if task == "regression" and (split["label_noise"] > 0 or split["per_class"] is not None):
        key = "label_noise" if split["label_noise"] > 0 else "per_class"
        raise ConfigError(f"data.{key} applies to classification datasets; data.name={name!r} is a regression "
                          f"dataset (remove data.{key})")
    return DataSettings(name=name, task=task, builder_kwargs=kwargs, **split)


def check_signature_kwargs(fn: Callable, kwargs: dict, path: str, what: str) -> dict:
    """Reject keys ``fn`` does not take; type-check values against its annotations (int, float,
    bool, str, optional forms and sequences); return the kwargs."""
    check_keys(kwargs, accepted_arguments(fn), path, what)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
        hints = {}
    for key, value in kwargs.items():
        expected = hints.get(key)
        if expected is not None and not _fits(value, expected):
            raise ConfigError(f"{path}.{key} must be {_describe(expected)}, got {value!r}")
    return dict(kwargs)


def _fits(value: Any, expected: Any) -> bool:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if expected is type(None):
        return value is None
    if expected is Any:
        return True
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return _is_int(value)
    if expected is float:
        return _is_number(value) and math.isfinite(value)
    if expected is str:
        return isinstance(value, str)
    if origin in (tuple, list, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    return True


def _describe(expected: Any) -> str:
    args = typing.get_args(expected)
    if args:
        return " or ".join(_describe(a) for a in args)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(expected, getattr(expected, "__name__", str(expected)))


def _mix_settings(node: Any, task: str) -> MixSettings:
    import openmix
    node = mapping(node, "mix")
    name = node.get("name")
    if name not in openmix.list_policies():
        close = difflib.get_close_matches(str(name), openmix.list_policies(), n=1)
        raise ConfigError(f"mix.name must be one of {openmix.list_policies()}, got {name!r}"
                          + (f"; did you mean {close[0]}?" if close else ""))
    where = choice(*WHERE)(node.get("where", "collate"), "mix.where")
    kwargs = {k: v for k, v in node.items() if k not in ("name", "where")}
    # values are the policy's to check (its errors name the argument); keys are checked here
    check_keys(kwargs, accepted_arguments(openmix.policies.POLICIES.get(name)), "mix", f"mix={name}")
    dataset_pairing = None
    pairing = kwargs.get("pairing")
    if isinstance(pairing, Mapping) and "scope" in pairing:
        scope = choice(*PAIRING_SCOPES)(pairing["scope"], "mix.pairing.scope")
        pairing = {k: v for k, v in pairing.items() if k != "scope"}
        if scope == "dataset":
            if pairing.get("name") != "cmixup":
                raise ConfigError(f"mix.pairing.scope=dataset needs mix.pairing.name=cmixup, got {pairing.get('name')!r}")
            dataset_pairing = {k: pairing[k] for k in ("sigma", "sigma_units", "truncation") if k in pairing}
            pairing = "halves"   # whole-dataset partners arrive in the second half of each batch
        kwargs["pairing"] = pairing
    return MixSettings(name=name, where=where, policy_kwargs=kwargs, dataset_pairing=dataset_pairing)


def accepted_arguments(obj: Any) -> list[str]:
    """The keyword arguments a registered class or factory accepts. A constructor that passes
    ``**kwargs`` on to its base class accepts the base's arguments too (e.g. FMix -> MixPolicy)."""
    callables = [k.__dict__["__init__"] for k in obj.__mro__ if "__init__" in k.__dict__] if inspect.isclass(obj) else [obj]
    names: list[str] = []
    for fn in callables:
        params = list(inspect.signature(fn).parameters.values())
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name not in ("self", *names)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def check_keys(kwargs: Mapping[str, Any], accepted: list[str], path: str, what: str) -> None:
    for key, value in kwargs.items():
        if key not in accepted:
            raise ConfigError(unknown_key_message(path, key, value, accepted, what))


def _loss_settings(node: Any, task: str, mix_name: str) -> LossSettings:
    import openmix
    node = mapping(node, "loss")
    name = node.get("name")
    kwargs = {k: v for k, v in node.items() if k != "name"}
    if name == "auto":
        name = "mse" if task == "regression" else "soft_ce"
        if task == "regression":
            kwargs.pop("smoothing", None)
    if name not in openmix.list_losses():
        raise ConfigError(f"loss.name must be one of {['auto', *openmix.list_losses()]}, got {node.get('name')!r}")
    factory = openmix.losses.LOSSES.get(name)
    check_keys(kwargs, accepted_arguments(factory), "loss", f"loss={name}")
    loss_task = getattr(factory, "task", None)
    if loss_task is not None and loss_task != task:
        fix = "loss=mse" if task == "regression" else "loss=soft_ce (or bce, decoupled)"
        raise ConfigError(f"loss.name={name!r} is a {loss_task} loss but the dataset is a {task} dataset; "
                          f"use {fix}, or loss=auto")
    if task == "classification" and mix_name != "vanilla" and not getattr(factory, "needs_soft_targets", True):
        raise ConfigError(f"loss.name={name!r} uses only each row's own label, so mix.name={mix_name!r} would lose "
                          f"the partner's share; use loss=soft_ce (or bce, decoupled), or mix=vanilla")
    return LossSettings(name=name, kwargs=kwargs)


def _named_group(node: Any, path: str, schemas: Mapping[str, Mapping[str, Parser]], cls: type,
                 optional_keys: Optional[Mapping[str, Mapping[str, Any]]] = None):
    node = mapping(node, path)
    name = node.get("name")
    if name not in schemas:
        raise ConfigError(f"{path}.name must be one of {list(schemas)}, got {name!r}")
    rest = {k: v for k, v in node.items() if k != "name"}
    extra = dict((optional_keys or {}).get(name, {}))
    schema = dict(schemas[name])
    for k, default in extra.items():
        schema[k] = number(0.0, low_open=True)
        rest.setdefault(k, default)
    return cls(name=name, kwargs=parse_group(rest, path, schema, f"{path}={name}"))


def _check_combinations(s: Settings) -> None:
    t = s.trainer
    if t.select == "best_val" and s.data.val_fraction == 0.0:
        raise ConfigError("trainer.select=best_val needs a validation split, but data.val_fraction=0; set "
                          "data.val_fraction in (0, 1) or trainer.select=last_k (median of the last k test "
                          "epochs) or trainer.select=final")
    if t.resume and t.resume_from:
        raise ConfigError(f"trainer.resume=true and trainer.resume_from={t.resume_from!r} both ask to resume; "
                          f"keep one (resume: <out_dir>/checkpoints/last.pt; resume_from: that file)")
    if s.mix.dataset_pairing is not None and t.batch_size % 2:
        raise ConfigError(f"mix.pairing.scope=dataset needs an even trainer.batch_size (half anchors, half "
                          f"partners), got {t.batch_size}")
    if t.device.startswith("cuda") or t.device == "mps":
        import torch
        available = torch.cuda.is_available() if t.device.startswith("cuda") else torch.backends.mps.is_available()
        if not available:
            raise ConfigError(f"trainer.device={t.device!r} but {t.device.split(':')[0].upper()} is not available on "
                              f"this machine; use trainer.device=cpu or auto")


# ------------------------------------------------------------------------------ config files
MAX_YAML_ALIASES = 64
MAX_YAML_BYTES = 1 << 20


def check_config_files(root: str | os.PathLike) -> None:
    """Refuse config files that could blow up when composed: YAML alias bombs (many ``*alias``
    references that expand exponentially) and oversized files. Raises ConfigError naming the file."""
    import yaml
    from pathlib import Path
    for path in sorted(Path(root).rglob("*.yaml")):
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"config file {path} is {size} bytes; openmix refuses config files over "
                              f"{MAX_YAML_BYTES} bytes")
        try:
            aliases = sum(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
        if aliases > MAX_YAML_ALIASES:
            raise ConfigError(f"config file {path} uses {aliases} YAML aliases (*name); openmix refuses more than "
                              f"{MAX_YAML_ALIASES} (an alias bomb expands exponentially); write the values out")
