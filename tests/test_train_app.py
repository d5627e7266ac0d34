"""The trainer in-process (Hydra compose API): outputs, engine dispatch, regression, bad input."""
import json

import pytest
import torch

import openmix
from openmix.batch import MixedBatch
from openmix.policies.base import MixPolicy
from openmix.train import ConfigError, compose_config, train

FAST = ["trainer.epochs=2", "trainer.batch_size=32", "trainer.progress=false", "trainer.summary=false",
        "trainer.tensorboard=false", "trainer.last_k=2", "model.width=8", "trainer.threads=1"]


def run(tmp_path, *overrides, name="run"):
    cfg = compose_config([*FAST, f"trainer.out_dir={tmp_path / name}", *overrides])
    return train(cfg)


def metrics_only(history):
    drop = {"train_seconds", "eval_seconds", "samples_per_second"}
    return [{k: v for k, v in h.items() if k not in drop} for h in history]


# --- test policies that ask the engine for a saliency map or feature maps --------------------
class _SaliencyRecorder(MixPolicy):
    """Mixes like mixup; records the saliency maps it is given."""
    needs = "saliency"
    seen: list = []

    def check_context(self, x, context):
        s = context["saliency"]
        assert s.shape == (x.shape[0], *x.shape[2:]) and (s >= 0).all() and s.sum() > 0
        type(self).seen.append(tuple(s.shape))

    def apply(self, x, params, **context):
        lam = params["lam"]
        return torch.lerp(x[params["index"]], x, lam.view(-1, *[1] * (x.ndim - 1))), None, lam


class _Plan:
    def __init__(self, stage, index, lam):
        self.stage, self.index, self.lam = stage, index, lam

    def mix_input(self, x):
        return torch.lerp(x[self.index], x, self.lam.view(-1, *[1] * (x.ndim - 1)))

    def batch(self, x_used, y):
        return MixedBatch(x=x_used, y=y, index=self.index, lam=self.lam)


class _FeatureRecorder(MixPolicy):
    """ManifoldMix-like: mixes the output of a random stage (0 = the input)."""
    needs = "features"
    stages_seen: set = set()

    def plan(self, x, y, num_stages, generator):
        stage = int(torch.randint(0, num_stages + 1, (1,), generator=generator))
        index = torch.randperm(x.shape[0], generator=generator).to(x.device)
        lam = torch.rand(x.shape[0], generator=generator).to(x.device)
        type(self).stages_seen.add((stage, num_stages))
        return _Plan(stage, index, lam)

    def mix_features(self, h, plan):
        return plan.mix_input(h)


@pytest.fixture
def recorder_policies():
    """Registers the two recording policies for one test only (the registry is global)."""
    from openmix.policies import POLICIES
    names = {"_test_saliency": _SaliencyRecorder, "_test_features": _FeatureRecorder}
    for name, cls in names.items():
        POLICIES.register(name)(cls)
    yield
    for name in names:
        POLICIES.unregister(name)


# --- tests ---------------------------------------------------------------------------------
def test_run_writes_outputs_and_summary(tmp_path):
    s = run(tmp_path, "data=synthetic", "mix=cutmix", "trainer.tensorboard=true")
    out = tmp_path / "run"
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / f).is_file(), f
    assert list((out / "tb").glob("events.out.tfevents.*"))
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]
    saved = json.loads((out / "summary.json").read_text())
    for key in ("task", "dataset", "model", "policy", "loss", "seed", "epochs", "final", "history",
                "seconds_per_epoch", "samples_per_second", "peak_memory_mb", "device", "versions"):
        assert key in saved, key
    assert saved["final"].keys() >= {"top1", "top5", "nll", "ece", "top1_median_last_k"}
    assert saved["history"] == lines and s["policy"] == "cutmix" and s["task"] == "classification"
    assert set(saved["versions"]) >= {"torch", "timm", "openmix", "python"}
    assert 0 <= saved["final"]["ece"] <= 1 and saved["final"]["top1"] > 40  # 4 classes, learnable
    assert "mix:\n  name: cutmix" in (out / "config.yaml").read_text()


def test_collate_and_device_mixing_give_the_same_run(tmp_path):
    a = run(tmp_path, "data=synthetic", "mix=mixup", "mix.where=collate", name="a")
    b = run(tmp_path, "data=synthetic", "mix=mixup", "mix.where=device", name="b")
    assert metrics_only(a["history"]) == metrics_only(b["history"])
    c = run(tmp_path, "data=synthetic", "mix=mixup", "seed=1", name="c")
    assert metrics_only(a["history"]) != metrics_only(c["history"])


def test_engine_serves_saliency_and_feature_policies(tmp_path, recorder_policies):
    _SaliencyRecorder.seen.clear()
    s = run(tmp_path, "data=synthetic", "mix=vanilla", "mix.name=_test_saliency", name="sal")
    # one saliency map per training step: 2 epochs x full batches of 32 (plus the small pre-training dry run)
    assert _SaliencyRecorder.seen.count((32, 8, 8)) == 2 * (s["info"]["train_samples"] // 32) == 14
    _FeatureRecorder.stages_seen.clear()
    s = run(tmp_path, "data=synthetic", "mix=vanilla", "mix.name=_test_features", "trainer.epochs=3", name="feat")
    assert {n for _, n in _FeatureRecorder.stages_seen} == {3}          # small_cnn: 3 stages
    assert len({st for st, _ in _FeatureRecorder.stages_seen}) >= 3     # input and inner stages used
    assert s["where"] == "engine"


def test_regression_run(tmp_path):
    s = run(tmp_path, "data=diabetes", "mix=mixup", "trainer.epochs=3", "optim=adamw", "optim.lr=0.01")
    assert s["task"] == "regression" and s["loss"] == "mse" and s["model"] == "mlp"
    assert s["final"].keys() >= {"rmse", "mape", "rmse_median_last_k"}
    assert 20 < s["final"]["rmse"] < 120 and s["final"]["mape"] > 0   # target std is ~77


@pytest.mark.parametrize("overrides,match", [
    (["mix.name=nope"], r"mix.name must be one of .*cutmix.*mixup.*got 'nope'"),
    (["data.name=nope"], r"data.name must be one of .*digits.*got 'nope'"),
    (["model.name=resnet181"], r"model.name='resnet181'.*resnet18"),
    (["optim.name=lbfgs"], r"optim.name must be one of \['sgd', 'adamw'\], got 'lbfgs'"),
    (["data=diabetes", "loss=soft_ce"], r"loss.name='soft_ce' is a classification loss.*regression.*loss=mse"),
    (["data=synthetic", "trainer.batch_size=1000"], r"batch_size=1000 is larger.*230 samples"),
    (["data=synthetic", "mix.where=gpu"], r"mix.where must be"),
    (["data=sine1d", "model=small_cnn"], r"small_cnn needs image inputs"),
    (["data=synthetic", "loss=ce"], r"loss.name='ce' uses only each row's own label.*soft_ce"),
])
def test_bad_input_fails_before_training(tmp_path, overrides, match):
    with pytest.raises((ValueError, TypeError), match=match):
        run(tmp_path, *overrides)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_feature_policy_with_unsplittable_model_fails(monkeypatch, tmp_path, recorder_policies):
    import openmix.features as features
    monkeypatch.setattr(features, "split_model", lambda model: None)
    with pytest.raises(ConfigError, match="cannot be split into stages.*use a model"):
        run(tmp_path, "data=synthetic", "mix=vanilla", "mix.name=_test_features")


@pytest.mark.parametrize("policy", ["puzzlemix", "alignmix", "manifoldmix"])
def test_dynamic_policies_plug_in(tmp_path, policy):
    if policy not in openmix.list_policies():
        pytest.skip(f"{policy} not registered")
    s = run(tmp_path, "data=synthetic", f"mix={policy}", "trainer.epochs=1")
    assert s["policy"] == policy and s["where"] == "engine" and s["final"]["top1"] >= 0


def test_cmixup_regression(tmp_path):
    s = run(tmp_path, "data=sine1d", "mix=cmixup", "trainer.epochs=1")
    assert s["task"] == "regression" and s["loss"] == "mse"


@pytest.mark.parametrize("where,model", [("collate", "small_cnn"), ("device", "resnet18")])
def test_cifar_files_end_to_end(tmp_path, where, model):
    """uint8 CIFAR batches: mixed in the collate (uint8 fast path) or on the device, then normalised."""
    from test_train_data import _write_cifar10
    _write_cifar10(tmp_path / "data", n_per_batch=8)
    s = run(tmp_path, "data=cifar10", f"data.root={tmp_path / 'data'}", f"model.name={model}", "mix=cutmix",
            f"mix.where={where}", "trainer.epochs=1", "trainer.batch_size=8", "model.width=null")
    # 40 training images: the last 10% (4) are the validation split
    assert s["dataset"] == "cifar10" and s["model"] == model and s["history"][0]["train_samples"] == 32
    assert s["info"]["val_samples"] == 4
    assert s["info"]["input_shape"] == [3, 32, 32]


def test_every_registered_policy_has_a_mix_yaml_that_builds():
    from openmix.train.app import CONFIG_DIR
    from openmix.train.settings import validate
    yamls = sorted(p.stem for p in (CONFIG_DIR / "mix").glob("*.yaml"))
    registered = [n for n in openmix.list_policies() if not n.startswith("_test")]
    assert set(registered) <= set(yamls), set(registered) - set(yamls)
    for stem in yamls:
        settings = validate(compose_config([f"mix={stem}"]))
        assert settings.mix.where in ("collate", "device")
        policy = openmix.build_policy(settings.mix.name, **settings.mix.policy_kwargs)
        assert policy.needs in ("input", "saliency", "features", "step")


def _constructor_defaults(cls):
    """Defaults of every keyword a policy class accepts, following **kwargs to its bases."""
    import inspect
    defaults = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.default is not inspect.Parameter.empty:
                defaults.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return defaults


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def test_every_mix_yaml_default_equals_its_constructor_default():
    """A policy's YAML (configs/mix/<name>.yaml) states the constructor's defaults, so the CLI and
    the Python API behave the same; presets under other names (cmixup.yaml) are exempt."""
    from omegaconf import OmegaConf
    from openmix.policies import POLICIES
    from openmix.train.app import CONFIG_DIR
    checked = 0
    for path in sorted((CONFIG_DIR / "mix").glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path))
        if node["name"] != path.stem:
            continue
        defaults = _constructor_defaults(POLICIES.get(node["name"]))
        for key, value in node.items():
            if key in ("name", "where") or key not in defaults:
                continue
            assert _plain(value) == _plain(defaults[key]), f"{path.name}: {key}={value!r}, constructor default {defaults[key]!r}"
            checked += 1
    assert checked >= 30


def test_ema_amp_clip_options_run_and_resume(tmp_path):
    opts = ["data=synthetic", "trainer.ema.enabled=true", "trainer.ema.decay=0.99", "trainer.clip_grad=1.0",
            "trainer.amp=true", "trainer.channels_last=true", "optim=adamw", "optim.lr=0.01", "sched=multistep",
            "sched.milestones=[1]"]
    full = run(tmp_path, *opts, "trainer.epochs=2", name="full")
    assert full["final"]["top1"] > 40          # EMA weights with warm-up are evaluated, not the initial ones
    run(tmp_path, *opts, "trainer.epochs=1", name="part")
    resumed = run(tmp_path, *opts, "trainer.epochs=2", "trainer.resume=true", "trainer.allow_config_change=true",
                  name="part")
    assert resumed["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_imagefolder_pngs_end_to_end(tmp_path):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for c in ("a", "b", "c"):
            d = tmp_path / "imgs" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (18, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    s = run(tmp_path, "data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.image_size=16",
            "model=small_cnn", "mix=resizemix", "trainer.epochs=1", "trainer.batch_size=8", "trainer.num_workers=1")
    # 24 training images: 10% (2, stratified) are the validation split
    assert s["info"]["train_samples"] == 22 and s["info"]["val_samples"] == 2 and s["info"]["test_samples"] == 9
    assert s["history"][0]["train_samples"] == 16          # two full batches of 8
