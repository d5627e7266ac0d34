"""Faults a run must refuse or survive: damaged checkpoints, crashes between renames, a changed
config on resume, NaN data, a diverging loss, Ctrl-C."""
import shutil
import zipfile

import pytest
import torch

from openmix.train import ConfigError, compose_config, train
from openmix.train.checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint, save_checkpoint

ARGS = ["data=digits", "data.train_size=320", "mix=cutmix", "model.width=8", "trainer.epochs=3",
        "trainer.batch_size=64", "trainer.deterministic=true", "trainer.progress=false", "trainer.summary=false",
        "trainer.tensorboard=false", "seed=5", "trainer.threads=1"]
DROP = {"train_seconds", "eval_seconds", "samples_per_second"}


def _metrics(history):
    return [{k: v for k, v in h.items() if k not in DROP} for h in history]


def _run(out, *extra):
    return train(compose_config([*ARGS, f"trainer.out_dir={out}", *extra]))


def _flip_a_bit_in_tensor_data(path):
    with zipfile.ZipFile(path) as z:
        member = max(z.infolist(), key=lambda i: i.file_size)     # the largest tensor
    data = bytearray(path.read_bytes())
    data[member.header_offset + 200 + member.file_size // 2] ^= 0x04
    path.write_bytes(bytes(data))


def test_flipped_bits_are_refused_pointing_to_the_previous_checkpoint(tmp_path):
    p = tmp_path / "last.pt"
    for v in (1, 2):
        save_checkpoint({"format": "openmix-checkpoint", "epoch": v, "w": torch.arange(4096.0) * v}, p)
    _flip_a_bit_in_tensor_data(p)
    with pytest.raises(CheckpointError, match=r"CRC-32 .* does not match.*last.prev.pt is intact"):
        load_checkpoint(p)
    assert load_checkpoint(tmp_path / "last.prev.pt")["epoch"] == 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return _run(out), out


def test_crash_between_the_renames_resumes_from_the_newest_intact_checkpoint(tmp_path, reference):
    ref, ref_out = reference
    out = tmp_path / "crashed"
    shutil.copytree(ref_out, out)
    (out / "summary.json").unlink()
    ck = out / "checkpoints"
    # killed after the new file was complete and last.pt had become last.prev.pt: no last.pt at all
    (ck / "last.pt").rename(ck / ".last.pt.999.new")
    assert find_resume_checkpoint(ck) == ck / ".last.pt.999.new"
    (ck / ".last.pt.999.new").write_bytes(b"half a file")            # ... or the new file was unfinished
    assert find_resume_checkpoint(ck) == ck / "last.prev.pt"
    resumed = _run(out, "trainer.resume=true")
    assert resumed["resumed_from_epoch"] == 2 and resumed["resumed_from"].endswith("last.prev.pt")
    assert _metrics(resumed["history"]) == _metrics(ref["history"])


def test_resume_with_another_config_is_refused_unless_allowed(tmp_path, reference, capsys):
    _, ref_out = reference
    out = tmp_path / "changed"
    shutil.copytree(ref_out, out)
    with pytest.raises(CheckpointError, match=r"another config \(2 keys differ: mix.alpha: 1.0 -> 0.2; seed: 5 -> 6\)"
                                              r".*trainer.allow_config_change=true"):
        _run(out, "trainer.resume=true", "mix.alpha=0.2", "seed=6", "trainer.epochs=3")
    before = (out / "config.yaml").read_text()
    s = _run(out, "trainer.resume=true", "trainer.epochs=4", "trainer.allow_config_change=true")
    assert s["resumed_from_epoch"] == 3 and len(s["history"]) == 4 and s["config_changes_on_resume"] == 1
    assert "epochs: 4" in (out / "config.yaml").read_text()
    previous = (out / "config.previous-1.yaml").read_text()
    assert previous.startswith("# used until epoch 3") and before.strip() in previous
    assert "resuming after epoch 3 of 4 from" in capsys.readouterr().err


def test_nan_in_the_data_is_refused_naming_the_sample(tmp_path, monkeypatch):
    import openmix.train.datasets as datasets
    real = datasets.dataset_info("synthetic").builder

    def with_nan(num_train: int = 256, num_test: int = 128, num_classes: int = 4, channels: int = 3,
                 size: int = 8, split_seed: int = 0):
        bundle = real(num_train, num_test, num_classes, channels, size, split_seed)
        bundle.train.x[7, 0, 1, 1] = float("nan")
        return bundle
    monkeypatch.setitem(datasets._DATASETS, "synthetic", datasets.DatasetInfo("synthetic", "classification", with_nan))
    with pytest.raises(ConfigError, match=r"the (train|val) split holds NaN or inf values .*row 7 of the dataset"):
        train(compose_config(["data=synthetic", "trainer.epochs=1", f"trainer.out_dir={tmp_path}"]))


def test_diverging_loss_stops_with_the_batch_index(tmp_path):
    from openmix.train.engine import NonFiniteLossError
    with pytest.raises(NonFiniteLossError, match=r"not finite at epoch 1, batch \d+ although its inputs and labels "
                                                  r"are finite: the model diverged; lower optim.lr"):
        _run(tmp_path, "optim.lr=1e30", "sched=constant", "mix=vanilla", "loss=ce")


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, monkeypatch, capsys):
    from openmix.train.callbacks import Evaluator
    real = Evaluator.on_epoch_end

    def interrupt_in_epoch_two(self, record):
        if record.epoch == 2:
            raise KeyboardInterrupt
        real(self, record)
    monkeypatch.setattr(Evaluator, "on_epoch_end", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    err = capsys.readouterr().err
    assert f"interrupted during epoch 2; the last checkpoint is {tmp_path / 'checkpoints' / 'last.pt'} (epoch 1)" in err
    assert f"trainer.resume=true trainer.out_dir={tmp_path}" in err
