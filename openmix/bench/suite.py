"""Suites: the matrix of datasets x models x policies x seeds, expanded into runs.

A suite is a YAML file under ``configs/bench/suite/`` (selected with ``suite=NAME``)::

    name: cpu-small
    seeds: [0, 1, 2, 3, 4]
    seed_key: seed                 # trainer config key that receives the seed
    baseline: vanilla              # policy label that costs and deltas are relative to
    headline:                      # per task: a dotted path into the trainer's summary, or a
      classification: selected.test.top1   # plain name meaning a key of its ``final`` dict
      regression: selected.test.rmse
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
      cmixup: {tasks: [regression], overrides: [mix=cmixup, mix.alpha=2.0], tune: false}
    tune:                          # optional: equal-budget tuning (see below)
      seed: 0
      grid: {mix.alpha: [0.2, 0.5, 1.0, 2.0]}
      metric: {classification: selected.val.top1, regression: selected.val.rmse}

A policy entry may restrict itself with ``tasks`` (default: classification) and ``datasets``,
and add overrides for one task with ``by_task``.
``not_applicable`` (policy name -> reason) documents registered policies a suite leaves out.
``claims`` (see ``openmix.bench.claims``) are checked against the suite's datasets and policies
when it loads.
Every run is then just a list of trainer overrides: common + dataset recipe + epochs + model +
policy (+ tuned values) + seed, in that order (later ones win).

Tuning. With ``tune``, each policy is tuned on the grid keys its own overrides set (a policy
that sets none of them, e.g. vanilla, is not tuned); a policy may give its own grid
(``tune: {mix.alpha: [...]}``) or opt out (``tune: false``). Every tuned policy must get the
same number of trials (equal budget). For each dataset x model x epochs x policy the grid runs
once with ``tune.seed`` (the *trials*), the value with the best validation metric is stored,
and that value runs on every seed. The metric must be a validation metric
(``selected.val.*``): selection never reads test metrics.

Names (suite, datasets, models, policy labels) become folder names and table cells, so they
are restricted to letters, digits and ``._+-``.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..metrics_direction import LOWER_IS_BETTER, lower_is_better  # noqa: F401 (re-exported)

TASKS = ("classification", "regression")
DEFAULT_HEADLINE = {"classification": "selected.test.top1", "regression": "selected.test.rmse"}
DEFAULT_TUNE_METRIC = {"classification": "selected.val.top1", "regression": "selected.val.rmse"}
# Whether a larger value is better is decided in one place: openmix/metrics_direction.py.
LOWER_IS_BETTER_PREFIXES = LOWER_IS_BETTER
SUITE_KEYS = (
    "name", "description", "seeds", "seed_key", "epochs_key", "baseline", "headline", "common",
    "datasets", "models", "policies", "not_applicable", "data_root", "tune", "claims",
)
DATASET_KEYS = ("task", "recipe", "models", "epochs", "note")
POLICY_KEYS = ("overrides", "tasks", "datasets", "by_task", "note", "tune")
TUNE_KEYS = ("seed", "grid", "metric")
MAX_RUNS = 20_000             # runs + trials of one suite
MAX_CONFIG_NODES = 50_000     # values in a suite config (refuses YAML alias bombs)
MAX_TRIALS = 64               # grid points per policy

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_NAME_RULE = "a name of 1 to 64 letters, digits and '._+-' starting with a letter or digit"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PATH = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_GRID_TEXT = re.compile(r"[A-Za-z0-9._+-]{1,64}")


class SuiteConfigError(ValueError):
    """A suite (or a bench setting) that cannot be run; the message names the key."""


def summary_value(summary: Mapping[str, Any], metric: str) -> Any:
    """The value at ``metric`` in a trainer summary (or a results row): a dotted path
    (``selected.test.top1``, ``reports.robustness.occlusion_0.5.top1``: keys that themselves hold
    dots are matched whole), or a plain name meaning ``summary["final"][name]``; None if absent."""
    if "." not in metric:
        final = summary.get("final") if isinstance(summary, Mapping) else None
        return final.get(metric) if isinstance(final, Mapping) else None
    return resolve_path(summary, metric)


def resolve_path(node: Any, path: str) -> Any:
    """``node`` followed along the dotted ``path``; at each level the longest key that matches a
    prefix of what is left of the path is taken, so keys may contain dots. None if absent."""
    while isinstance(node, Mapping):
        if path in node:
            return node[path]
        keys = [k for k in node if isinstance(k, str) and path.startswith(k + ".")]
        if not keys:
            return None
        key = max(keys, key=len)
        node, path = node[key], path[len(key) + 1:]
    return None


# ---- the parsed suite --------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetEntry:
    name: str
    task: str
    recipe: tuple[str, ...]
    models: tuple[str, ...]
    epochs: tuple[int | None, ...]


@dataclass(frozen=True)
class PolicyEntry:
    label: str
    tasks: tuple[str, ...]
    overrides: Mapping[str, tuple[str, ...]]            # per task
    datasets: tuple[str, ...] | None                     # None: every dataset of its tasks
    grid: Mapping[str, Mapping[str, tuple]] = field(default_factory=dict)  # per task; {}: untuned


@dataclass(frozen=True)
class TuneConfig:
    seed: int
    grid: Mapping[str, tuple]
    metric: Mapping[str, str]


@dataclass(frozen=True)
class SuiteConfig:
    """A validated suite config (see the module docstring); ``expand`` turns it into runs."""

    name: str
    seeds: tuple[int, ...]
    seed_key: str
    epochs_key: str
    baseline: str | None
    headline: Mapping[str, str]
    common: tuple[str, ...]
    datasets: tuple[DatasetEntry, ...]
    models: Mapping[str, tuple[str, ...]]
    policies: tuple[PolicyEntry, ...]
    tune: TuneConfig | None = None
    claims: tuple = ()        # openmix.bench.claims.ClaimSpec records


@dataclass(frozen=True)
class RunSpec:
    """One run of a suite: its labels and the trainer overrides that define it.

    ``role`` is ``"run"`` (a result) or ``"trial"`` (a tuning run; ``trial`` holds its grid
    values). A run with ``tune_keys`` waits for its cell's tuned values (``with_choice``)."""

    suite: str
    dataset: str
    model: str
    policy: str
    seed: int
    task: str
    overrides: tuple[str, ...]
    epochs: int | None = None
    role: str = "run"
    tune_keys: tuple[str, ...] = ()
    trial: tuple[tuple[str, Any], ...] = ()
    chosen: tuple[tuple[str, Any], ...] = ()

    @property
    def cell(self) -> str:
        """dataset/model[/epochs]/policy: what tuning chooses a value for."""
        epochs = "" if self.epochs is None else f"/{self.epochs}ep"
        return f"{self.dataset}/{self.model}{epochs}/{self.policy}"

    @property
    def label(self) -> str:
        tune = ("/tune:" + ",".join(f"{k}={v}" for k, v in self.trial)) if self.trial else ""
        return f"{self.cell}{tune}/seed{self.seed}"

    @property
    def needs_choice(self) -> bool:
        return bool(self.tune_keys) and not self.chosen

    def with_choice(self, choice: Mapping[str, Any]) -> "RunSpec":
        """This run with the tuned values, inserted before the seed override (always last)."""
        missing = [k for k in self.tune_keys if k not in choice]
        if missing:
            raise ValueError(f"choice must give {list(self.tune_keys)}, got {dict(choice)!r}")
        values = tuple((k, choice[k]) for k in self.tune_keys)
        extra = tuple(f"{k}={_override_value(v)}" for k, v in values)
        overrides = self.overrides[:-1] + extra + self.overrides[-1:]
        return replace(self, overrides=overrides, chosen=values)


@dataclass(frozen=True)
class Suite:
    name: str
    runs: tuple[RunSpec, ...]
    baseline: str | None
    headline: Mapping[str, str]
    trials: tuple[RunSpec, ...] = ()
    tune: TuneConfig | None = None
    claims: tuple = ()        # openmix.bench.claims.ClaimSpec records


# ---- checks ------------------------------------------------------------------------------
def check_name(value: Any, key: str) -> str:
    """``value`` if it is a safe name (it becomes a folder name and a table cell)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SuiteConfigError(f"{key} must be {_NAME_RULE}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (so this module also takes dicts)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def count_nodes(value: Any, limit: int) -> int:
    """Values in a nested dict/list, counting shared (aliased) parts every time they occur;
    stops as soon as the count passes ``limit`` (so an alias bomb costs nothing)."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return count


def _mapping(value: Any, key: str, what: str) -> Mapping:
    if not isinstance(value, Mapping) or not value:
        raise SuiteConfigError(f"{key} must be a non-empty mapping {what}, got {value!r}")
    return value


def _unknown(raw: Mapping, allowed: tuple[str, ...], key: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - set(allowed))
    if unknown:
        raise SuiteConfigError(f"{key} must have keys among {list(allowed)}, got {unknown}")


def _int(value: Any, key: str, what: str = "an int") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SuiteConfigError(f"{key} must be {what}, got {value!r}")
    return value


def _overrides(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SuiteConfigError(f"{key} must be a list of overrides 'key=value', got {value!r}")
    for item in value:
        if not isinstance(item, str) or "=" not in item or "\n" in item or "\r" in item:
            raise SuiteConfigError(f"{key} must hold overrides 'key=value' on one line, "
                                   f"got {item!r}")
    return tuple(value)


def _names(value: Any, key: str, allowed: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise SuiteConfigError(f"{key} must be a non-empty list of names, got {value!r}")
    for item in value:
        if item not in allowed:
            raise SuiteConfigError(f"{key} must hold names among {sorted(allowed)}, got {item!r}")
    return tuple(value)


def _config_key(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise SuiteConfigError(f"{key} must be a config key such as 'trainer.epochs', "
                               f"got {value!r}")
    return value


def _override_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# ---- parsing -----------------------------------------------------------------------------
def parse_suite(cfg: Any) -> SuiteConfig:
    """Validate a suite config (DictConfig or dict); every error names the full key."""
    shallow = _plain_shallow(cfg)
    if not isinstance(shallow, Mapping):
        raise SuiteConfigError(f"suite must be a mapping, got {type(cfg).__name__}")
    if count_nodes(shallow, MAX_CONFIG_NODES) > MAX_CONFIG_NODES:
        raise SuiteConfigError(f"suite must hold at most {MAX_CONFIG_NODES} values (aliases "
                               "counted each time they are used), got more")
    cfg = _plain(cfg)
    _unknown(cfg, SUITE_KEYS, "suite")
    name = check_name(cfg.get("name"), "suite.name")
    seeds = _parse_seeds(cfg.get("seeds", [0]))
    models = _mapping(cfg.get("models"), "suite.models", "of model name -> overrides")
    models = {check_name(m, "suite.models key"): _overrides(o, f"suite.models.{m}")
              for m, o in models.items()}
    raw_datasets = _mapping(cfg.get("datasets"), "suite.datasets", "of dataset name -> entry")
    datasets = tuple(_parse_dataset(n, d, models) for n, d in raw_datasets.items())
    tune = None if cfg.get("tune") is None else _parse_tune(cfg["tune"])
    raw_policies = _mapping(cfg.get("policies"), "suite.policies", "of policy label -> entry")
    names = [d.name for d in datasets]
    policies = tuple(_parse_policy(label, e, names, tune) for label, e in raw_policies.items())
    baseline = cfg.get("baseline")
    if baseline is not None and baseline not in raw_policies:
        raise SuiteConfigError(
            f"suite.baseline must be one of the policies {sorted(raw_policies)}, got {baseline!r}")
    if tune is not None:
        _check_equal_budget(policies)
    claims = _parse_claims(cfg.get("claims"), baseline, names, list(raw_policies))
    return SuiteConfig(
        name=name, seeds=seeds, seed_key=_config_key(cfg.get("seed_key", "seed"), "suite.seed_key"),
        epochs_key=_config_key(cfg.get("epochs_key", "trainer.epochs"), "suite.epochs_key"),
        baseline=baseline, headline=_parse_headline(cfg.get("headline")),
        common=_overrides(cfg.get("common"), "suite.common"), datasets=datasets, models=models,
        policies=policies, tune=tune, claims=claims,
    )


def _plain_shallow(cfg: Any) -> Any:
    """The suite as plain data without resolving it (OmegaConf) or as given (dict)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=False)
    return cfg


def _parse_claims(raw: Any, baseline: str | None, datasets: list[str],
                  policies: list[str]) -> tuple:
    if raw is None:
        return ()
    from .claims import parse_claims  # statistics (scipy) only for suites that state claims

    try:
        return parse_claims(raw, baseline, datasets, policies)
    except ValueError as err:
        raise SuiteConfigError(str(err)) from err


def _parse_seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    ):
        raise SuiteConfigError(f"suite.seeds must be a non-empty list of ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SuiteConfigError(f"suite.seeds must be distinct seeds, got {seeds!r}")
    return tuple(seeds)


def _parse_headline(raw: Any) -> dict[str, str]:
    headline = dict(DEFAULT_HEADLINE)
    if raw is None:
        return headline
    for task, metric in _mapping(raw, "suite.headline", "of task -> metric").items():
        if task not in TASKS:
            raise SuiteConfigError(f"suite.headline keys must be tasks among {TASKS}, got {task!r}")
        if not isinstance(metric, str) or not _PATH.fullmatch(metric):
            raise SuiteConfigError(f"suite.headline.{task} must be a metric name or dotted path "
                                   f"such as 'selected.test.top1', got {metric!r}")
        headline[task] = metric
    return headline


def _parse_dataset(name: Any, raw: Any, models: Mapping) -> DatasetEntry:
    key = f"suite.datasets.{check_name(name, 'suite.datasets key')}"
    if not isinstance(raw, Mapping):
        raise SuiteConfigError(f"{key} must be a mapping with task, recipe, models, epochs, "
                               f"got {raw!r}")
    _unknown(raw, DATASET_KEYS, key)
    task = raw.get("task", "classification")
    if task not in TASKS:
        raise SuiteConfigError(f"{key}.task must be one of {TASKS}, got {task!r}")
    epochs = raw.get("epochs")
    epoch_list = [epochs] if epochs is None or isinstance(epochs, int) else epochs
    if not isinstance(epoch_list, (list, tuple)) or not epoch_list or not all(
        e is None or (isinstance(e, int) and not isinstance(e, bool) and e > 0) for e in epoch_list
    ):
        raise SuiteConfigError(f"{key}.epochs must be a positive int or a list of them, "
                               f"got {epochs!r}")
    return DatasetEntry(
        name=name, task=task, recipe=_overrides(raw.get("recipe"), f"{key}.recipe"),
        models=_names(raw.get("models"), f"{key}.models", models) or tuple(models),
        epochs=tuple(epoch_list),
    )


def _parse_policy(label: Any, raw: Any, datasets: list[str],
                  tune: TuneConfig | None) -> PolicyEntry:
    key = f"suite.policies.{check_name(label, 'suite.policies key')}"
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise SuiteConfigError(f"{key} must be a mapping with 'overrides', got {raw!r}")
    _unknown(raw, POLICY_KEYS, key)
    tasks = _names(raw.get("tasks"), f"{key}.tasks", TASKS) or ("classification",)
    by_task = raw.get("by_task") or {}
    if not isinstance(by_task, Mapping) or not set(by_task) <= set(tasks):
        raise SuiteConfigError(f"{key}.by_task must be a mapping from its tasks {list(tasks)} "
                               f"to extra overrides, got {by_task!r}")
    overrides = {
        t: _overrides(raw.get("overrides"), f"{key}.overrides")
        + _overrides(by_task.get(t), f"{key}.by_task.{t}")
        for t in tasks
    }
    if tune is None and raw.get("tune") is not None:
        raise SuiteConfigError(f"{key}.tune needs a suite.tune section (seed, grid, metric), "
                               f"got {raw['tune']!r} without one")
    grid = {} if tune is None else {
        t: _policy_grid(raw.get("tune"), tune, overrides[t], f"{key}.tune") for t in tasks
    }
    return PolicyEntry(label=label, tasks=tasks, overrides=overrides,
                       datasets=_names(raw.get("datasets"), f"{key}.datasets", datasets),
                       grid={t: g for t, g in grid.items() if g})


def _parse_tune(raw: Any) -> TuneConfig:
    raw = _mapping(raw, "suite.tune", "with seed, grid and metric")
    _unknown(raw, TUNE_KEYS, "suite.tune")
    metric = dict(DEFAULT_TUNE_METRIC)
    for task, path in (raw.get("metric") or {}).items():
        if task not in TASKS:
            raise SuiteConfigError(f"suite.tune.metric keys must be tasks among {TASKS}, "
                                   f"got {task!r}")
        valid = isinstance(path, str) and _PATH.fullmatch(path) is not None
        if not (valid and path.startswith("selected.val.")):
            raise SuiteConfigError(
                f"suite.tune.metric.{task} must be a validation metric 'selected.val.<name>' "
                f"(tuning never reads test metrics), got {path!r}")
        metric[task] = path
    grid = parse_grid(raw.get("grid"), "suite.tune.grid")
    return TuneConfig(seed=_int(raw.get("seed", 0), "suite.tune.seed"), grid=grid, metric=metric)


def parse_grid(raw: Any, key: str) -> dict[str, tuple]:
    """``{config.key: [values]}`` (nested mappings are flattened to dotted keys)."""
    flat: dict[str, Any] = {}
    stack = [("", _mapping(raw, key, "of config key -> list of values"))]
    while stack:
        prefix, node = stack.pop()
        for k, v in node.items():
            if isinstance(v, Mapping):
                stack.append((f"{prefix}{k}.", v))
            else:
                flat[f"{prefix}{k}"] = v
    grid = {}
    for name, values in flat.items():
        _config_key(name, f"{key} key")
        if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
            raise SuiteConfigError(f"{key}.{name} must be a non-empty list of values, "
                                   f"got {values!r}")
        for v in values:
            text_ok = isinstance(v, str) and _GRID_TEXT.fullmatch(v)
            number_ok = isinstance(v, (bool, int)) or (isinstance(v, float) and math.isfinite(v))
            if not (text_ok or number_ok):
                raise SuiteConfigError(f"{key}.{name} must hold finite numbers, booleans or simple "
                                       f"words, got {v!r}")
        if len(set(map(repr, values))) != len(values):
            raise SuiteConfigError(f"{key}.{name} must hold distinct values, got {values!r}")
        grid[name] = tuple(values)
    if math.prod(len(v) for v in grid.values()) > MAX_TRIALS:
        raise SuiteConfigError(f"{key} must give at most {MAX_TRIALS} trials per policy, got "
                               f"{math.prod(len(v) for v in grid.values())}")
    return grid


def _sets_key(overrides: tuple[str, ...], key: str) -> bool:
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in overrides)


def _policy_grid(own: Any, tune: TuneConfig, overrides: tuple[str, ...], key: str) -> dict:
    """A policy's grid: its own, none (``tune: false``), or the suite grid's keys it sets."""
    if own is False:
        return {}
    if own is not None and own is not True:
        return parse_grid(own, key)
    return {k: v for k, v in tune.grid.items() if _sets_key(overrides, k)}


def _check_equal_budget(policies: tuple[PolicyEntry, ...]) -> None:
    trials = {f"{p.label} ({t})": math.prod(len(v) for v in g.values())
              for p in policies for t, g in p.grid.items()}
    if len(set(trials.values())) > 1:
        raise SuiteConfigError("suite.tune must give every tuned policy the same number of "
                               f"trials (an equal budget), got {trials}")


# ---- expansion ---------------------------------------------------------------------------
def _cells(config: SuiteConfig):
    """(dataset, epochs, model, policy) in the suite's order, applicable ones only."""
    for ds in config.datasets:
        for n_epochs in ds.epochs:
            for model in ds.models:
                for policy in config.policies:
                    if ds.task in policy.tasks and (policy.datasets is None
                                                    or ds.name in policy.datasets):
                        yield ds, n_epochs, model, policy


def count_runs(config: SuiteConfig) -> int:
    """Runs plus tuning trials of the suite, without building them."""
    total = 0
    for ds, _, _, policy in _cells(config):
        grid = policy.grid.get(ds.task) or {}
        total += len(config.seeds) + (math.prod(len(v) for v in grid.values()) if grid else 0)
    return total


def expand(config: SuiteConfig) -> tuple[tuple[RunSpec, ...], tuple[RunSpec, ...]]:
    """The suite's runs and its tuning trials (empty without ``tune``)."""
    total = count_runs(config)
    if total > MAX_RUNS:
        raise SuiteConfigError(f"suite {config.name!r} must expand to at most {MAX_RUNS} runs "
                               f"and trials, got {total}")
    runs, trials = [], []
    for ds, n_epochs, model, policy in _cells(config):
        epoch_override = () if n_epochs is None else (f"{config.epochs_key}={n_epochs}",)
        base = (config.common + ds.recipe + epoch_override + config.models[model]
                + policy.overrides[ds.task])
        grid = policy.grid.get(ds.task) or {}
        spec = RunSpec(config.name, ds.name, model, policy.label, 0, ds.task, (), n_epochs,
                       tune_keys=tuple(grid))
        for seed in config.seeds:
            runs.append(replace(spec, seed=seed, overrides=base + (f"{config.seed_key}={seed}",)))
        for values in itertools.product(*grid.values()) if grid else ():
            trial = tuple(zip(grid, values))
            extra = tuple(f"{k}={_override_value(v)}" for k, v in trial)
            seed = config.tune.seed
            trials.append(replace(spec, seed=seed, role="trial", tune_keys=(), trial=trial,
                                  overrides=base + extra + (f"{config.seed_key}={seed}",)))
    if not runs:
        raise SuiteConfigError(f"suite {config.name!r} must have runs, got an empty matrix "
                               "(no policy applies to any dataset)")
    return tuple(runs), tuple(trials)


def load_suite(cfg: Any) -> Suite:
    """Validate a suite config (DictConfig or dict) and expand it into its runs and trials."""
    config = parse_suite(cfg)
    runs, trials = expand(config)
    return Suite(name=config.name, runs=runs, baseline=config.baseline,
                 headline=dict(config.headline), trials=trials, tune=config.tune,
                 claims=config.claims)


def shard_runs(runs: tuple[RunSpec, ...] | list[RunSpec], shard: Any, shards: Any) -> list[RunSpec]:
    """The runs of one shard (stride split, so every shard gets a mix of datasets)."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise SuiteConfigError(f"shards must be an int >= 1, got {shards!r}")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < shards:
        raise SuiteConfigError(f"shard must be an int in [0, {shards}) (shards={shards}), "
                               f"got {shard!r}")
    return list(runs)[shard::shards]


# ---- YAML size (alias bombs) -------------------------------------------------------------
def yaml_value_count(text: str, limit: int = MAX_CONFIG_NODES) -> int:
    """Values a YAML document expands to, counting an aliased part every time it is used,
    computed on the node graph (nothing is expanded); ``limit + 1`` for a recursive alias."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return 0
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _yaml_children(node)
        if children_done or not children:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            open_nodes.discard(id(node))
            continue
        if id(node) in sizes:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                return limit + 1  # an alias to one of its own ancestors: infinite
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _yaml_children(node: Any) -> list:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_yaml_files(folder: Any, limit: int = MAX_CONFIG_NODES) -> None:
    """Refuse any ``*.yaml`` under ``folder`` that expands to more than ``limit`` values (a
    YAML alias bomb would otherwise exhaust memory while Hydra composes it)."""
    from pathlib import Path

    for path in sorted(Path(folder).rglob("*.yaml")):
        try:
            count = yaml_value_count(path.read_text(encoding="utf-8"), limit)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise SuiteConfigError(f"config file {path} must be readable YAML, got {err}") from err
        if count > limit:
            got = "a recursive alias" if count == limit + 1 else count
            raise SuiteConfigError(
                f"config file {path} must expand to at most {limit} values (YAML aliases are "
                f"counted each time they are used), got {got}")
