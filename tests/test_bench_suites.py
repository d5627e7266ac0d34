"""The shipped suites: they load, cover the registered policies, and every entry composes
against the trainer's real configs."""
import functools

import pytest
from hydra import compose, initialize_config_dir

import openmix
from openmix.bench.app import bench_config_dir
from openmix.bench.runner import compose_train_config, config_hash, resolved_config
from openmix.bench.suite import load_suite

SUITES = sorted(p.stem for p in (bench_config_dir() / "suite").glob("*.yaml"))


def _suite(name):
    with initialize_config_dir(str(bench_config_dir()), version_base=None):
        cfg = compose("bench", overrides=[f"suite={name}"])
    return cfg.suite, load_suite(cfg.suite)


@functools.lru_cache(maxsize=None)
def _compose(overrides):
    return compose_train_config(overrides)


def _mix_name(overrides):
    return next(o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("mix="))


def test_the_expected_suites_ship():
    assert {"cpu-small", "tiny", "cifar100-r18", "cifar10-r18", "tiny-imagenet-r18"} <= set(SUITES)


@pytest.mark.parametrize("name", SUITES)
def test_suite_entries_compose_with_the_trainer_configs(name):
    raw, suite = _suite(name)
    assert suite.name == name
    seen, hashes = set(), set()
    for run in suite.runs:
        key = (run.dataset, run.model, run.policy, run.task)
        if key in seen:
            continue
        seen.add(key)
        cfg = _compose(run.overrides)
        assert cfg.data.task == run.task, run.label
        assert cfg.mix.name in openmix.list_policies(), run.label
        hashes.add(config_hash(resolved_config(cfg, ["trainer.out_dir"])))
    assert len(hashes) == len(seen)  # every entry is a different experiment


@pytest.mark.parametrize("name", ["cpu-small", "cifar100-r18", "cifar10-r18", "tiny-imagenet-r18"])
def test_suite_covers_every_registered_policy(name):
    raw, suite = _suite(name)
    first = {}
    for r in suite.runs:
        first.setdefault(r.policy, r)
    used = {_compose(r.overrides).mix.name for r in first.values()}
    skipped = set(raw.get("not_applicable") or {})
    missing = set(openmix.list_policies()) - used - skipped
    assert not missing, f"{name} neither runs nor lists as not applicable: {sorted(missing)}"


def test_cpu_small_has_dm_with_mixup_and_cutmix_and_cmixup_vs_mixup_vs_vanilla():
    raw, suite = _suite("cpu-small")
    assert len({r.seed for r in suite.runs}) == 3
    dm = {_mix_name(r.overrides) for r in suite.runs if "loss=decoupled" in r.overrides}
    assert dm == {"mixup", "cutmix"}
    for dataset in {r.dataset for r in suite.runs if r.task == "regression"}:
        policies = {r.policy for r in suite.runs if r.dataset == dataset}
        assert {"vanilla", "mixup", "cmixup"} <= policies, dataset
    assert {r.dataset for r in suite.runs if r.task == "classification"} == {"digits", "mnist1d"}


def test_gpu_suites_use_the_established_recipe():
    for name in ("cifar100-r18", "cifar10-r18", "tiny-imagenet-r18"):
        raw, suite = _suite(name)
        assert sorted({r.epochs for r in suite.runs}) == [200, 400, 800, 1200]
        cfg = _compose(suite.runs[0].overrides)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (
            "sgd", 0.1, 0.9, 1e-4)
        assert cfg.sched.name == "cosine" and cfg.trainer.batch_size == 100
        assert cfg.trainer.last_k == 10
        alpha = {r.policy: float(dict(o.split("=", 1) for o in r.overrides if "=" in o)
                                 .get("mix.alpha", "nan")) for r in suite.runs}
        assert alpha["mixup"] == 1.0 and alpha["cutmix"] == 0.2 and alpha["fmix"] == 0.2
        assert alpha["manifoldmix"] == 2.0 and alpha["puzzlemix"] == 1.0
        assert alpha["alignmix"] == 2.0
