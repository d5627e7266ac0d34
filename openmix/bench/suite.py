"""Suites: the matrix of datasets x models x policies x seeds, expanded into runs.

A suite is a YAML file under ``configs/bench/suite/`` (selected with ``suite=NAME``)::

    name: cpu-small
    seeds: [0, 1, 2]
    seed_key: seed                 # trainer config key that receives the seed
    baseline: vanilla              # policy label that costs are relative to
    headline:                      # metric of the trainer's ``final`` dict, per task
      classification: top1_median_last_k
      regression: rmse_median_last_k
    common: [trainer.device=cpu]   # overrides given to every run
    datasets:                      # each dataset with its fixed recipe
      digits:
        task: classification
        models: [mlp]              # names from ``models`` (default: all of them)
        epochs: 20                 # or a list: one run of each (e.g. [200, 400, 800, 1200])
        recipe: [data=digits, optim=sgd, optim.lr=0.1]
    models:
      mlp: [model=mlp]
    policies:                      # each entry a policy with its alpha and loss
      vanilla: {tasks: [classification, regression], overrides: [mix=vanilla]}
      mixup: {tasks: [classification, regression], overrides: [mix=mixup, mix.alpha=1.0],
              by_task: {regression: [mix.alpha=2.0]}}
      mixup+DM: {overrides: [mix=mixup, mix.alpha=1.0, loss=decoupled]}
      cmixup: {tasks: [regression], overrides: [mix=cmixup, mix.alpha=2.0]}

A policy entry may restrict itself with ``tasks`` (default: classification) and ``datasets``,
and add overrides for one task with ``by_task``.
``not_applicable`` (policy name -> reason) documents registered policies a suite leaves out.
Every run is then just a list of trainer overrides: common + dataset recipe + epochs + model +
policy + seed, in that order (later ones win).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..metrics_direction import LOWER_IS_BETTER, lower_is_better  # noqa: F401 (re-exported)

TASKS = ("classification", "regression")
DEFAULT_HEADLINE = {"classification": "top1_median_last_k", "regression": "rmse_median_last_k"}
# Whether a larger headline value is better is decided in one place: openmix/metrics_direction.py.
LOWER_IS_BETTER_PREFIXES = LOWER_IS_BETTER
SUITE_KEYS = {
    "name", "description", "seeds", "seed_key", "epochs_key", "baseline", "headline", "common",
    "datasets", "models", "policies", "not_applicable", "data_root",
}


@dataclass(frozen=True)
class RunSpec:
    """One run of a suite: its labels and the trainer overrides that define it."""

    suite: str
    dataset: str
    model: str
    policy: str
    seed: int
    task: str
    overrides: tuple[str, ...]
    epochs: int | None = None

    @property
    def label(self) -> str:
        epochs = "" if self.epochs is None else f"/{self.epochs}ep"
        return f"{self.dataset}/{self.model}{epochs}/{self.policy}/seed{self.seed}"


@dataclass(frozen=True)
class Suite:
    name: str
    runs: tuple[RunSpec, ...]
    baseline: str | None
    headline: Mapping[str, str]


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (so this module also takes dicts)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


def _overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{where}: got {value!r}, expected a list of override strings")
    for item in value:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"{where}: got {item!r}, expected an override 'key=value'")
    return list(value)


def _names(value: Any, where: str, allowed: Any = None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{where}: got {value!r}, expected a list of names")
    for item in value:
        if allowed is not None and item not in allowed:
            raise ValueError(f"{where}: got {item!r}, expected one of {sorted(allowed)}")
    return list(value)


def load_suite(cfg: Any) -> Suite:
    """Validate a suite config (DictConfig or dict) and expand it into its runs."""
    cfg = _plain(cfg)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"suite: got {type(cfg).__name__}, expected a mapping")
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"suite.name: got {name!r}, expected a non-empty string")

    seeds = cfg.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    ):
        raise ValueError(f"suite.seeds: got {seeds!r}, expected a non-empty list of ints")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"suite.seeds: got {seeds!r}, expected distinct seeds")
    unknown = set(cfg) - SUITE_KEYS
    if unknown:
        raise ValueError(f"suite: got keys {sorted(unknown)}, expected keys among {sorted(SUITE_KEYS)}")
    seed_key = cfg.get("seed_key", "seed")
    if not isinstance(seed_key, str) or not seed_key:
        raise ValueError(f"suite.seed_key: got {seed_key!r}, expected a config key such as 'seed'")
    epochs_key = cfg.get("epochs_key", "trainer.epochs")
    if not isinstance(epochs_key, str) or not epochs_key:
        raise ValueError(
            f"suite.epochs_key: got {epochs_key!r}, expected a config key such as 'trainer.epochs'"
        )

    headline = dict(DEFAULT_HEADLINE)
    headline.update(cfg.get("headline") or {})
    for task in headline:
        if task not in TASKS:
            raise ValueError(f"suite.headline: got task {task!r}, expected one of {TASKS}")

    common = _overrides(cfg.get("common"), "suite.common")

    models = cfg.get("models") or {}
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"suite.models: got {models!r}, expected a mapping name -> overrides")
    models = {m: _overrides(o, f"suite.models.{m}") for m, o in models.items()}

    datasets = cfg.get("datasets") or {}
    if not isinstance(datasets, Mapping) or not datasets:
        raise ValueError(f"suite.datasets: got {datasets!r}, expected a mapping name -> recipe")

    policies = cfg.get("policies") or {}
    if not isinstance(policies, Mapping) or not policies:
        raise ValueError(f"suite.policies: got {policies!r}, expected a mapping label -> entry")

    baseline = cfg.get("baseline")
    if baseline is not None and baseline not in policies:
        raise ValueError(
            f"suite.baseline: got {baseline!r}, expected one of the policies {sorted(policies)}"
        )

    parsed_policies = {}
    for label, entry in policies.items():
        where = f"suite.policies.{label}"
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where}: got {entry!r}, expected a mapping with 'overrides'")
        unknown = set(entry) - {"overrides", "tasks", "datasets", "by_task", "note"}
        if unknown:
            raise ValueError(f"{where}: got keys {sorted(unknown)}, expected overrides, tasks, "
                             "datasets, by_task, note")
        tasks = _names(entry.get("tasks"), f"{where}.tasks", TASKS) or ["classification"]
        only = _names(entry.get("datasets"), f"{where}.datasets", datasets)
        by_task = entry.get("by_task") or {}
        if not isinstance(by_task, Mapping) or not set(by_task) <= set(tasks):
            raise ValueError(f"{where}.by_task: got {by_task!r}, expected a mapping from its "
                             f"tasks {tasks} to extra overrides")
        per_task = {
            t: _overrides(entry.get("overrides"), f"{where}.overrides")
            + _overrides(by_task.get(t), f"{where}.by_task.{t}")
            for t in tasks
        }
        parsed_policies[label] = (per_task, tasks, only)

    runs: list[RunSpec] = []
    for ds_name, ds in datasets.items():
        where = f"suite.datasets.{ds_name}"
        if not isinstance(ds, Mapping):
            raise TypeError(f"{where}: got {ds!r}, expected a mapping with task, recipe, models")
        task = ds.get("task", "classification")
        if task not in TASKS:
            raise ValueError(f"{where}.task: got {task!r}, expected one of {TASKS}")
        unknown = set(ds) - {"task", "recipe", "models", "epochs", "note"}
        if unknown:
            raise ValueError(
                f"{where}: got keys {sorted(unknown)}, expected task, recipe, models, epochs, note"
            )
        recipe = _overrides(ds.get("recipe"), f"{where}.recipe")
        ds_models = _names(ds.get("models"), f"{where}.models", models) or list(models)
        epochs = ds.get("epochs")
        epoch_list = [epochs] if epochs is None or isinstance(epochs, int) else epochs
        if not isinstance(epoch_list, (list, tuple)) or not epoch_list or not all(
            e is None or (isinstance(e, int) and not isinstance(e, bool) and e > 0)
            for e in epoch_list
        ):
            raise ValueError(
                f"{where}.epochs: got {epochs!r}, expected a positive int or a list of them"
            )
        for n_epochs in epoch_list:
            epoch_override = [] if n_epochs is None else [f"{epochs_key}={n_epochs}"]
            for model in ds_models:
                for label, (pol_overrides, tasks, only) in parsed_policies.items():
                    if task not in tasks or (only is not None and ds_name not in only):
                        continue
                    for seed in seeds:
                        overrides = (common + recipe + epoch_override + models[model]
                                     + pol_overrides[task] + [f"{seed_key}={seed}"])
                        runs.append(RunSpec(name, ds_name, model, label, int(seed), task,
                                            tuple(overrides), n_epochs))
    if not runs:
        raise ValueError(f"suite {name!r}: the matrix is empty (no policy applies to any dataset)")
    return Suite(name=name, runs=tuple(runs), baseline=baseline, headline=headline)


def shard_runs(runs: tuple[RunSpec, ...] | list[RunSpec], shard: int, shards: int) -> list[RunSpec]:
    """The runs of one shard (stride split, so every shard gets a mix of datasets)."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards: got {shards!r}, expected an int >= 1")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < shards:
        raise ValueError(f"shard: got {shard!r}, expected an int in [0, {shards})")
    return list(runs)[shard::shards]
