"""The engine's extension point for policies that own their training step (needs="step")."""
import pytest
import torch

import openmix

from openmix.batch import MixedBatch
from openmix.policies import POLICIES
from openmix.policies.step import StepPolicy
from openmix.train import compose_config, train


class _CleanPlusMixup(StepPolicy):
    """A two-forward step (clean CE + mixup loss) with a learned scalar of its own, to exercise
    setup / training_step / after_step / state_dict through the engine."""
    calls: dict = {}

    def setup(self, ctx):
        type(self).calls["setup"] = type(self).calls.get("setup", 0) + 1
        self.gate = torch.nn.Parameter(torch.zeros((), device=ctx.device))
        self.opt = torch.optim.SGD([self.gate], lr=0.1)

    def training_step(self, x, y, ctx):
        assert x.device == ctx.device and x.is_floating_point() and ctx.model.training
        type(self).calls["steps"] = type(self).calls.get("steps", 0) + 1
        lam = torch.distributions.Beta(1.0, 1.0).sample((x.shape[0],)).to(x.device)
        index = torch.randperm(x.shape[0], generator=self.generator).to(x.device)
        mixed = torch.lerp(x[index], x, lam.view(-1, 1, 1, 1))
        mb = MixedBatch(x=mixed, y=y, index=index, lam=lam)
        with ctx.autocast():
            clean_logits, mixed_logits = ctx.forward(x).float(), ctx.forward(mixed).float()
        clean = torch.nn.functional.cross_entropy(clean_logits, y)
        # the policy's own parameter: trained by its own loss, kept out of the classifier's
        own_loss = (self.gate - 1.0) ** 2
        (grad,) = torch.autograd.grad(own_loss, self.gate)
        self.gate.grad = grad
        return mb, clean + ctx.loss_fn(mixed_logits, mb)

    def after_step(self):
        type(self).calls["after"] = type(self).calls.get("after", 0) + 1
        self.opt.step()
        self.opt.zero_grad()

    def state_dict(self):
        return {**super().state_dict(), "gate": self.gate.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        with torch.no_grad():
            self.gate.copy_(state["gate"])
        self.opt.load_state_dict(state["opt"])


@pytest.fixture
def step_policy():
    POLICIES.register("_test_step")(_CleanPlusMixup)
    _CleanPlusMixup.calls = {}
    yield _CleanPlusMixup
    POLICIES.unregister("_test_step")


ARGS = ["data=synthetic", "mix=vanilla", "mix.name=_test_step", "model.width=8", "trainer.epochs=3",
        "trainer.batch_size=32", "trainer.progress=false", "trainer.summary=false", "trainer.tensorboard=false",
        "trainer.threads=1", "trainer.deterministic=true", "seed=2"]


def test_step_policy_runs_inside_the_engine_and_resumes_exactly(tmp_path, step_policy):
    full = train(compose_config([*ARGS, f"trainer.out_dir={tmp_path / 'full'}"]))
    steps = 3 * (full["info"]["train_samples"] // 32)
    assert step_policy.calls == {"setup": 1, "steps": steps, "after": steps}
    assert full["where"] == "engine" and full["final"]["top1"] > 40
    # resume from the epoch-2 checkpoint of the same run: epoch 3 must come out identical
    import shutil
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    (part / "checkpoints" / "last.pt").unlink()     # last.prev.pt (epoch 2) is then the newest intact one
    step_policy.calls.clear()
    resumed = train(compose_config([*ARGS, f"trainer.out_dir={part}", "trainer.resume=true"]))
    assert resumed["resumed_from_epoch"] == 2 and step_policy.calls["steps"] == steps // 3
    drop = {"train_seconds", "eval_seconds", "samples_per_second"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed["history"]] == \
           [{k: v for k, v in h.items() if k not in drop} for h in full["history"]]


def test_step_policy_refuses_the_collate_path():
    with pytest.raises(TypeError, match="trains with the model"):
        _CleanPlusMixup()(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("name", ["regmixup", "rankmixup", "sumix", "transmix"])
def test_step_policies_pass_the_epoch_to_the_policy_they_wrap(name):
    policy = openmix.build_policy(name, stop_epoch=2, alpha={"schedule": "linear", "start": 0.0, "end": 1.0,
                                                                "epochs": 4})
    policy.set_epoch(1)
    assert policy.inner.active and policy.inner.alpha == pytest.approx(policy.alpha)
    policy.set_epoch(3)
    assert not policy.inner.active and policy.inner.epoch == 3 and policy.inner.alpha == pytest.approx(0.75)
