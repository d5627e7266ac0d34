"""A policy from outside the package: registered in the user's code, or found through the
`openmix.policies` entry-point group of an installed distribution."""
import pytest
import torch

import openmix
from openmix.policies import POLICIES

PLUGIN = '''
import torch
import openmix


class FlipMix(openmix.MixPolicy):
    """mixup with the partner mirrored left-right. x: (B, C, H, W)."""

    spatial_dims = (2, 2)

    def apply(self, x, params, **context):
        lam = params["lam"]
        partner = x.index_select(0, params["index"]).flip(-1)
        return torch.lerp(partner, x, lam.view(-1, 1, 1, 1).to(x.dtype)), None, lam
'''


def install(site, entry_points: str) -> None:
    """A minimal installed distribution on sys.path: a module and its dist-info."""
    (site / "flip_plugin.py").write_text(PLUGIN)
    info = site / "flip_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flip-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def fresh_plugins(tmp_path, monkeypatch):
    """sys.path with tmp_path first, the policy registry's plug-ins not yet loaded; cleaned up after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(POLICIES, "_plugin_errors", None)
    yield tmp_path
    for name in ("flipmix", "broken"):
        POLICIES.unregister(name)
    POLICIES._plugin_errors = None


def test_entry_point_policy_is_built_by_name(fresh_plugins):
    install(fresh_plugins, "[openmix.policies]\nflipmix = flip_plugin:FlipMix\n")
    assert "flipmix" in openmix.list_policies()
    policy = openmix.build_policy("flipmix", alpha=1.0, mode="elem", seed=0)
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    mb = policy(x, y)
    lam = mb.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(mb.x, lam * x + (1 - lam) * x[mb.index].flip(-1))
    with pytest.raises(TypeError, match="did you mean 'alpha'"):
        openmix.build_policy("flipmix", alhpa=1.0)


def test_broken_entry_point_is_named_not_hidden(fresh_plugins):
    install(fresh_plugins, "[openmix.policies]\nbroken = flip_plugin:NoSuchClass\n")
    with pytest.warns(RuntimeWarning, match=r"policy plug-in 'broken' \(flip_plugin:NoSuchClass, entry-point group "
                                            r"'openmix.policies'\) failed to load: AttributeError"):
        names = openmix.list_policies()
    assert "broken" not in names and "mixup" in names
    with pytest.raises(ImportError, match="policy plug-in 'broken'"):
        openmix.build_policy("broken")


def test_register_policy_in_user_code():
    @openmix.register_policy("test_halfmix")
    class HalfMix(openmix.MixPolicy):
        def apply(self, x, params, **context):
            return 0.5 * (x + x[params["index"]]), None, torch.full_like(params["lam"], 0.5)

    try:
        mb = openmix.build_policy("test_halfmix", seed=0)(torch.rand(4, 3, 8, 8), torch.arange(4))
        torch.testing.assert_close(mb.lam, torch.full((4,), 0.5))
    finally:
        POLICIES.unregister("test_halfmix")
