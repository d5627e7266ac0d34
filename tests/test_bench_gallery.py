"""openmix-show: the gallery PNG on the embedded digits and on a folder of images."""
import pytest
import torch

import openmix

from openmix.bench.gallery import gradient_saliency, main, mix_with, show_policies

PNG = b"\x89PNG\r\n\x1a\n"


def test_gallery_on_digits(tmp_path):
    out = show_policies(tmp_path / "g.png", ["mixup", "cutmix"], n=4, seed=1)
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 5000


def test_gallery_on_a_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (40 + 10 * i, 30), color).save(folder / f"{i}.png")
    main(["--policies", "mixup", "--images", str(folder), "--n", "3", "--size", "16",
          "--out", str(tmp_path / "f.png")])
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG


def test_mixing_is_the_policy_and_lambda_is_its_own():
    x = torch.rand(4, 1, 8, 8)
    y = torch.arange(4)
    mixed, lam, index, note = mix_with("mixup", x, y, seed=0)
    assert torch.equal(index, torch.roll(torch.arange(4), 1)) and note == ""
    expected = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[index]
    assert torch.allclose(mixed, expected, atol=1e-6)
    assert gradient_saliency(x).shape == (4, 8, 8)


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="policies: got unknown \\['nope'\\]"):
        show_policies(tmp_path / "g.png", ["nope"])
    with pytest.raises(ValueError, match="images: got"):
        show_policies(tmp_path / "g.png", ["mixup"], images=tmp_path / "missing")
    with pytest.raises(ValueError, match="n: got 1"):
        show_policies(tmp_path / "g.png", ["mixup"], n=1)


@pytest.mark.parametrize("name", ["resizemix", "smoothmix", "manifoldmix"])
def test_a_gallery_alpha_skips_policies_whose_lambda_has_its_own_law(name):
    x = torch.rand(4, 3, 16, 16)
    mixed, lam, index, note = mix_with(name, x, torch.arange(4), seed=0, alpha=0.5)
    if name == "manifoldmix":
        assert mixed is None and "feature-level" in note
    else:
        assert mixed.shape == x.shape and lam.shape == (4,)
        assert not openmix.build_policy(name).uses_alpha
