"""openmix-show rows for feature-level and step policies: what each row is computed from."""
import torch

from openmix.bench.gallery import demo_features, mix_features_with, mix_with, show_policies
from openmix.policies import POLICIES
from openmix.policies.step import StepPolicy

PNG = b"\x89PNG\r\n\x1a\n"


def digits(b=4):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 1, 16, 16, generator=g), torch.arange(b)


def test_feature_rows_are_mixed_feature_maps_not_pixels():
    x, y = digits()
    mixed, lam, index, note = mix_features_with("manifoldmix", x, y, seed=0)
    f = demo_features(x)
    assert mixed.shape == f.shape == (4, 4, 8, 8) and "feature maps" in note
    torch.testing.assert_close(mixed, lam.view(-1, 1, 1, 1) * f + (1 - lam.view(-1, 1, 1, 1)) * f[index])
    aligned, lam_a, index_a, _ = mix_features_with("alignmix", x, y, seed=0)
    assert aligned.shape == f.shape and torch.equal(index_a, index)
    assert not torch.allclose(aligned, lam_a.view(-1, 1, 1, 1) * f + (1 - lam_a.view(-1, 1, 1, 1)) * f[index_a])
    assert mix_with("manifoldmix", x, y)[0] is None                # never drawn as an input-level mix


def test_step_policies_are_drawn_through_their_preview():
    x, y = digits()
    for name in ("transmix", "smmix", "attentivemix", "regmixup", "rankmixup", "sumix"):
        mixed, lam, index, note = mix_with(name, x, y, seed=0)
        assert mixed.shape == x.shape and lam.shape == (4,) and torch.equal(index, torch.roll(torch.arange(4), 1))
        assert note


def test_a_step_policy_without_preview_is_skipped_with_a_note(tmp_path):
    class Learned(StepPolicy):
        pass
    POLICIES.register("_test_learned")(Learned)
    try:
        x, y = digits()
        assert mix_with("_test_learned", x, y)[0] is None
        out = show_policies(tmp_path / "g.png", ["_test_learned", "manifoldmix", "transmix"], n=2, size=8)
        assert out.read_bytes()[:8] == PNG
    finally:
        POLICIES.unregister("_test_learned")
