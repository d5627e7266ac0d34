"""Smoke test of the light core (torch + numpy only), run as a script in a throwaway venv.

``python core_smoke.py`` imports the installed openmix, checks that no optional dependency was
imported, and exercises every input-level policy in every mode, MixCollate with two workers,
DeviceMixer on the CPU and every loss; it exits non-zero on the first failure.
"""
import sys
import time

OPTIONAL = ("timm", "torchvision", "hydra", "omegaconf", "sklearn", "scipy", "matplotlib", "tensorboard",
            "mnist1d", "maxflow")


def check_imports() -> None:
    import openmix  # noqa: F401
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(OPTIONAL))
    assert not loaded, f"import openmix loaded optional dependencies: {loaded}"


def check_policies(torch, openmix) -> int:
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    calls = 0
    for name in openmix.list_policies():
        if name == "choice":
            built = [openmix.build_policy("choice", policies=[{"name": "mixup"}, {"name": "cutmix"}], seed=0)]
        elif openmix.build_policy(name).needs != "input":
            continue
        else:
            modes = ["batch"] if name == "vanilla" else openmix.build_policy(name).modes
            built = [openmix.build_policy(name, mode=mode, seed=0) for mode in modes]
        for policy in built:
            mb = policy(x, y)
            mode = getattr(policy, "mode", None)
            assert mb.x.shape == x.shape and mb.lam.shape == (8,), (name, mode)
            assert bool(((mb.lam >= 0) & (mb.lam <= 1)).all()), (name, mode)
            targets = mb.soft_targets(4, smoothing=0.1)
            torch.testing.assert_close(targets.sum(1), torch.ones(8))
            calls += 1
    return calls


def check_collate_with_workers(torch, openmix) -> None:
    from torch.utils.data import DataLoader, TensorDataset
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    data = TensorDataset(images, torch.arange(24) % 10)

    def epoch(seed: int) -> list:
        collate = openmix.MixCollate(openmix.build_policy("cutmix", mode="elem"), seed=seed)
        loader = DataLoader(data, batch_size=6, num_workers=2, collate_fn=collate)
        return [(mb.x, mb.lam) for mb in loader]

    first, again = epoch(0), epoch(0)
    assert len(first) == 4 and first[0][0].dtype == torch.uint8
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    for x, target in DataLoader(data, batch_size=6, collate_fn=openmix.MixCollate(openmix.build_policy("mixup"))):
        assert isinstance(target, openmix.MixedBatch) and x is target.x


def check_device_mixer(torch, openmix) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    mixer = openmix.DeviceMixer(openmix.build_policy("vanilla"), device="cpu", mean=mean, std=std)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    got = mixer(images, torch.arange(4)).x
    want = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(got, want)
    mixed = openmix.DeviceMixer(openmix.build_policy("fmix", mode="elem"), mean=mean, std=std)(images, torch.arange(4))
    assert mixed.x.shape == (4, 3, 8, 8)


def check_losses(torch, openmix) -> None:
    x = torch.rand(6, 3, 8, 8)
    classes = openmix.build_policy("mixup", seed=0)(x, torch.arange(6) % 5)
    unmixed = openmix.build_policy("vanilla")(x, torch.arange(6) % 5)
    regression = openmix.build_policy("mixup", seed=0)(x, torch.rand(6))
    for name in openmix.list_losses():
        loss_fn = openmix.build_loss(name)
        if getattr(loss_fn, "task", "classification") == "regression":
            value = loss_fn(torch.rand(6), regression)
        else:
            value = loss_fn(torch.randn(6, 5, requires_grad=True), unmixed if name == "ce" else classes)
        if value.requires_grad:
            value.backward()
        assert bool(torch.isfinite(value)), name


def main() -> None:
    start = time.perf_counter()
    check_imports()
    import torch
    import openmix
    torch.set_num_threads(1)
    calls = check_policies(torch, openmix)
    check_collate_with_workers(torch, openmix)
    check_device_mixer(torch, openmix)
    check_losses(torch, openmix)
    print(f"core smoke ok: torch {torch.__version__}, openmix from {openmix.__file__}, {calls} policy/mode calls, "
          f"losses {openmix.list_losses()}, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
