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
    assert {"cpu-small", "cpu-vit", "tiny", "cifar100-r18", "cifar10-r18", "tiny-imagenet-r18"} <= set(SUITES)
    vit_only = {"transmix", "smmix"}        # cpu-small lists them as not applicable; cpu-vit runs them
    assert vit_only <= {_mix_name(r.overrides) for r in _suite("cpu-vit")[1].runs}


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
    assert len({r.seed for r in suite.runs}) == 5
    dm = {_mix_name(r.overrides) for r in suite.runs if "loss=decoupled" in r.overrides}
    assert dm == {"mixup", "cutmix"}
    for dataset in {r.dataset for r in suite.runs if r.task == "regression"}:
        policies = {r.policy for r in suite.runs if r.dataset == dataset}
        assert {"vanilla", "mixup", "cmixup"} <= policies, dataset
    assert {r.dataset for r in suite.runs if r.task == "classification"} == {"digits", "mnist1d"}


# OpenMixup's per-method alpha for ResNet-18 (Li et al., 2022): CIFAR-10/100 and Tiny-ImageNet
# tables (docs/en/mixup_benchmarks/Mixup_cifar.md, Mixup_imagenet.md)
OPENMIXUP_ALPHA = {
    "cifar100-r18": {"mixup": 1.0, "cutmix": 0.2, "fmix": 0.2, "manifoldmix": 2.0,
                     "puzzlemix": 1.0, "alignmix": 2.0, "saliencymix": 0.2},
    "cifar10-r18": {"mixup": 1.0, "cutmix": 0.2, "fmix": 0.2, "manifoldmix": 2.0,
                    "puzzlemix": 1.0, "alignmix": 2.0, "saliencymix": 0.2},
    "tiny-imagenet-r18": {"mixup": 1.0, "cutmix": 1.0, "fmix": 1.0, "manifoldmix": 0.2,
                          "puzzlemix": 1.0, "alignmix": 2.0, "saliencymix": 1.0},
}


def test_gpu_suites_use_the_established_recipe():
    for name, expected in OPENMIXUP_ALPHA.items():
        raw, suite = _suite(name)
        assert sorted({r.epochs for r in suite.runs}) == [200, 400, 800, 1200]
        cfg = _compose(suite.runs[0].overrides)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (
            "sgd", 0.1, 0.9, 1e-4)
        assert cfg.sched.name == "cosine" and cfg.trainer.batch_size == 100
        assert cfg.trainer.last_k == 10
        first = {}
        for r in suite.runs:
            first.setdefault(r.policy, r)
        alpha = {p: _compose(r.overrides).mix.get("alpha") for p, r in first.items()}
        assert {p: alpha[p] for p in expected} == expected, name


@pytest.mark.parametrize("name", ["cpu-small", "cifar100-r18", "cifar10-r18", "tiny-imagenet-r18"])
def test_dm_uses_openmixups_setting_of_its_base_mix(name):
    """OpenMixup's CIFAR-100 DM configs: mixup a0.2 eta 0.01 'more', CutMix a0.2 eta 0.1 'less',
    both weighted by lam^0.5."""
    raw, suite = _suite(name)
    first = {}
    for r in suite.runs:
        first.setdefault(r.policy, r)
    for label, (mix, eta, mode) in {"mixup+DM": ("mixup", 0.01, "more"),
                                    "cutmix+DM": ("cutmix", 0.1, "less")}.items():
        cfg = _compose(first[label].overrides)
        assert (cfg.mix.name, cfg.mix.alpha, cfg.loss.name) == (mix, 0.2, "decoupled"), label
        assert (cfg.loss.eta, cfg.loss.mode, cfg.loss.t) == (eta, mode, 0.5), label


@pytest.mark.parametrize("name", SUITES)
def test_suite_headers_state_wall_time_and_cite_sources_that_exist(name):
    header = (bench_config_dir() / "suite" / f"{name}.yaml").read_text().split("\nname:")[0]
    assert "wall time" in header.lower(), f"{name} states no wall time"
    assert "REFERENCE.md" not in header  # not shipped: cite the papers and tables directly
    raw, suite = _suite(name)
    if any(o == "trainer.device=cpu" for o in raw.get("common", [])) and name != "tiny":
        assert len(raw.seeds) >= 5, f"{name}: CPU suites run at least 5 seeds"


def test_the_tuned_suite_gives_every_alpha_policy_the_same_trials():
    raw, suite = _suite("cpu-small-tuned")
    assert dict(suite.tune.metric) == {"classification": "selected.val.top1",
                                       "regression": "selected.val.rmse"}
    untuned = {r.policy for r in suite.runs if not r.tune_keys}
    assert untuned == {"vanilla", "resizemix", "gridmix", "smoothmix", "attentivemix",
                       "automix", "samix", "adautomix"}  # no mix.alpha
    per_cell = {}
    for trial in suite.trials:
        per_cell.setdefault(trial.cell, []).append(dict(trial.trial)["mix.alpha"])
    assert set(map(tuple, per_cell.values())) == {(0.2, 0.5, 1.0, 2.0)}
    assert {r.cell for r in suite.runs if r.tune_keys} == set(per_cell)
    for cell in ("digits/small_cnn/20ep/cutmix+DM", "diabetes/mlp/30ep/cmixup"):
        trial = next(t for t in suite.trials if t.cell == cell)
        cfg = _compose(trial.overrides)
        assert cfg.mix.alpha == 0.2 and cfg.seed == 0
