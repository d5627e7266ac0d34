"""Every setting is checked before anything is built: errors name the key, the value and what is accepted."""
import pytest

from openmix.train import ConfigError, compose_config, train
from openmix.train.settings import check_config_files, validate


@pytest.mark.parametrize("overrides,match", [
    (["trainer.clip_grad=-1"], r"trainer.clip_grad must be a finite number > 0.0, got -1"),
    (["data.train_size=0"], r"data.train_size must be an integer >= 1, got 0"),
    (["trainer.epochs=1.7"], r"trainer.epochs must be an integer >= 1, got 1.7"),
    (["trainer.threads=0"], r"trainer.threads must be auto, null or an integer >= 1, got 0"),
    (["trainer.threads=-2"], r"trainer.threads must be auto, null or an integer >= 1, got -2"),
    (["trainer.device=tpu"], r"trainer.device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["~trainer.epochs"], r"trainer.epochs is missing"),
    (["optim.lr=abc"], r"optim.lr must be a finite number > 0.0, got 'abc'"),
    (["+optim.lrr=0.1"], r"optim.lrr=0.1 is not a setting of optim=sgd; accepted keys: .*did you mean optim.lr\?"),
    (["+mix.alhpa=1"], r"mix.alhpa=1 is not a setting of mix=mixup;.*did you mean mix.alpha\?"),
    (["+data.foo=1"], r"data.foo=1 is not a setting of data=digits"),
    (["+loss.eta=0.1"], r"loss.eta=0.1 is not a setting of loss=soft_ce"),
    (["+seedx=1"], r"seedx=1 is not a setting of the trainer"),
    (["seed=-1"], r"seed must be an integer >= 0, got -1"),
    (["data.label_noise=1.5"], r"data.label_noise must be a finite number >= 0.0 and < 1.0, got 1.5"),
    (["data.label_noise_kind=asym"], r"data.label_noise_kind must be one of \['symmetric', 'pairflip'\], got 'asym'"),
    (["data.val_fraction=0"], r"trainer.select=best_val needs a validation split"),
    (["trainer.select=best"], r"trainer.select must be one of \['best_val', 'last_k', 'final'\], got 'best'"),
    (["data.split_seed=x"], r"data.split_seed must be an integer, got 'x'"),
    (["data=diabetes", "+data.per_class=5"], r"data.per_class applies to classification datasets"),
    (["trainer.ema.decay=1"], r"trainer.ema.decay must be a finite number > 0.0 and < 1.0, got 1"),
    (["optim=adamw", "optim.betas=[0.9]"], r"optim.betas must be a pair"),
    (["sched=multistep", "sched.milestones=[0]"], r"sched.milestones must be a list of epochs >= 1"),
    (["trainer.resume=true", "trainer.resume_from=x.pt"], r"both ask to resume"),
    (["data=diabetes", "loss=soft_ce"], r"loss.name='soft_ce' is a classification loss.*loss=mse"),
])
def test_bad_settings_fail_in_validate_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose_config(overrides))


def test_bad_settings_stop_before_any_file_is_written(tmp_path):
    with pytest.raises(ConfigError):
        train(compose_config([f"trainer.out_dir={tmp_path / 'run'}", "trainer.clip_grad=-1"]))
    assert not (tmp_path / "run").exists()


def test_valid_config_gives_typed_settings():
    s = validate(compose_config(["mix=cmixup", "data=diabetes", "mix.pairing.scope=dataset"]))
    assert s.trainer.epochs == 15 and s.trainer.select == "best_val" and s.loss.name == "mse"
    assert s.mix.policy_kwargs["pairing"] == "halves" and s.mix.dataset_pairing == {"sigma": 0.2, "sigma_units": "std"}
    assert s.data.val_fraction == 0.1 and s.data.builder_kwargs == {"test_fraction": 0.2, "split_seed": 0}


def test_alias_bomb_and_oversized_config_files_are_refused(tmp_path):
    (tmp_path / "ok.yaml").write_text("a: &x [1, 2]\nb: *x\n")
    check_config_files(tmp_path)
    levels = ["a: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 40)]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml uses 78 YAML aliases"):
        check_config_files(tmp_path)
    (tmp_path / "bomb.yaml").unlink()
    (tmp_path / "big.yaml").write_text("a: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml is \d+ bytes"):
        check_config_files(tmp_path)
