"""kNN label pairing (RegMix-style) and the Selective Mixup criteria."""
from collections import Counter

import numpy as np
import pytest
import torch

import openmix


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_both_are_listed():
    assert {"knn", "selective"} <= set(openmix.list_pairings())


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("dims", [None, 3])
def test_knn_partner_is_among_the_k_nearest_other_rows(k, dims):
    shape = (20,) if dims is None else (20, dims)
    y = torch.randn(shape, generator=gen(1), dtype=torch.float64)
    pairing = openmix.build_pairing("knn", k=k)
    points = y.numpy().reshape(20, -1)
    dist = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    kth = np.sort(dist, axis=1)[:, k - 1]
    for seed in range(20):
        index = pairing(20, gen(seed), y=y).numpy()
        assert (index != np.arange(20)).all()
        assert (dist[np.arange(20), index] <= kth).all()


def test_knn_draws_uniformly_among_the_k_nearest_and_breaks_ties_at_random():
    y = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0, 20.0])
    pairing = openmix.build_pairing("knn", k=3)
    counts = Counter(int(pairing(6, gen(s), y=y)[0]) for s in range(600))
    assert set(counts) == {1, 2, 3} and min(counts.values()) > 150          # 200 expected each
    # four rows tied at distance 0 from row 0 (and from each other), k = 2: every tied row appears
    y = torch.tensor([5.0, 5.0, 5.0, 5.0, 5.0, 9.0])
    counts = Counter(int(openmix.build_pairing("knn", k=2)(6, gen(s), y=y)[0]) for s in range(400))
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) > 60


def test_knn_small_batches_and_reproducibility():
    y = torch.tensor([0.0, 4.0, 1.0])
    index = openmix.build_pairing("knn", k=8)(3, gen(), y=y)                # k > B - 1: any other row
    assert (index != torch.arange(3)).all()
    assert openmix.build_pairing("knn")(1, gen(), y=torch.tensor([2.0])).tolist() == [0]
    y = torch.randn(32, generator=gen(3))
    a = openmix.build_pairing("knn", k=4)(32, gen(9), y=y)
    assert torch.equal(a, openmix.build_pairing("knn", k=4)(32, gen(9), y=y))
    assert not torch.equal(a, openmix.build_pairing("knn", k=4)(32, gen(10), y=y))


def test_knn_bad_arguments():
    for k in [0, -1, 2.5, True, "3"]:
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            openmix.build_pairing("knn", k=k)
    pairing = openmix.build_pairing("knn")
    with pytest.raises(TypeError, match="needs float targets"):
        pairing(4, gen(), y=torch.arange(4))
    with pytest.raises(ValueError, match="needs the labels y"):
        pairing(4, gen())
    with pytest.raises(ValueError, match="not mode='pair'"):
        pairing(4, gen(), y=torch.randn(4), involution=True)
    with pytest.raises(ValueError, match=r"y must be a tensor of shape \(4,\)"):
        pairing(4, gen(), y=torch.randn(5))


@pytest.mark.parametrize("criterion,same", [("same_class", True), ("different_class", False)])
def test_class_criteria_hold_and_every_valid_partner_can_be_drawn(criterion, same):
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pairing = openmix.build_pairing("selective", criterion=criterion)
    seen = [set() for _ in range(9)]
    for seed in range(300):
        index = pairing(9, gen(seed), y=y)
        assert (index != torch.arange(9)).all()
        assert bool(((y[index] == y) == same).all())
        for i, j in enumerate(index.tolist()):
            seen[i].add(j)
    for i in range(9):
        valid = {j for j in range(9) if j != i and (int(y[j]) == int(y[i])) == same}
        assert seen[i] == valid


def test_rows_without_a_valid_partner_fall_back():
    y = torch.tensor([0, 1, 1, 2])                    # classes 0 and 2 have a single row
    index = openmix.build_pairing("selective", criterion="same_class")(4, gen(), y=y)
    assert index.tolist() == [0, 2, 1, 3]             # the lonely rows pair with themselves
    for seed in range(30):
        index = openmix.build_pairing("selective", criterion="same_class", fallback="random")(4, gen(seed), y=y)
        assert index[1] == 2 and index[2] == 1 and index[0] != 0 and index[3] != 3
    index = openmix.build_pairing("selective", criterion="different_class")(3, gen(), y=torch.tensor([4, 4, 4]))
    assert index.tolist() == [0, 1, 2]
    # a self-paired row is left unchanged by the policy whatever lambda is
    x = torch.randn(4, 3, 8, 8, generator=gen(1))
    mb = openmix.build_policy("mixup", mode="elem", pairing={"name": "selective", "criterion": "same_class"})(
        x, y, generator=gen(2))
    torch.testing.assert_close(mb.x[[0, 3]], x[[0, 3]])
    torch.testing.assert_close(mb.soft_targets(3)[[0, 3]], torch.eye(3)[[0, 2]])


def test_group_criteria_use_the_groups_tensor():
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    checks = {
        "same_group": lambda i, j: groups[i] == groups[j],
        "different_group": lambda i, j: groups[i] != groups[j],
        "same_class_different_group": lambda i, j: y[i] == y[j] and groups[i] != groups[j],
        "different_class_same_group": lambda i, j: y[i] != y[j] and groups[i] == groups[j],
    }
    for criterion, ok in checks.items():
        pairing = openmix.build_pairing("selective", criterion=criterion)
        for seed in range(20):
            index = pairing(6, gen(seed), y=y, groups=groups)
            for i, j in enumerate(index.tolist()):
                assert j == i and not any(ok(i, m) for m in range(6) if m != i) or (j != i and ok(i, j)), criterion


def test_selective_bad_arguments_and_reproducibility():
    with pytest.raises(ValueError, match="criterion must be one of"):
        openmix.build_pairing("selective", criterion="same_colour")
    with pytest.raises(ValueError, match=r"fallback must be one of \['self', 'random'\]"):
        openmix.build_pairing("selective", fallback="drop")
    pairing = openmix.build_pairing("selective", criterion="same_class")
    with pytest.raises(TypeError, match="needs y as integer class indices"):
        pairing(4, gen(), y=torch.rand(4))
    with pytest.raises(TypeError, match="needs y as integer class indices"):
        pairing(4, gen(), y=torch.rand(4, 3))
    with pytest.raises(ValueError, match="not mode='pair'"):
        pairing(4, gen(), y=torch.arange(4), involution=True)
    group_pairing = openmix.build_pairing("selective", criterion="different_group")
    with pytest.raises(ValueError, match="needs groups="):
        group_pairing(4, gen(), y=torch.arange(4))
    with pytest.raises(TypeError, match=r"groups must be integer group labels of shape \(4,\)"):
        group_pairing(4, gen(), y=torch.arange(4), groups=torch.rand(4))
    y = torch.randint(0, 3, (40,), generator=gen(4))
    assert torch.equal(pairing(40, gen(7), y=y), pairing(40, gen(7), y=y))


def test_policies_use_the_pairings():
    x = torch.randn(16, 1, 8, 8, generator=gen(0))
    y = torch.randint(0, 4, (16,), generator=gen(1))
    mb = openmix.build_policy("cutmix", mode="elem", pairing={"name": "selective", "criterion": "different_class"})(
        x, y, generator=gen(2))
    assert bool((y[mb.index] != y).all())
    targets = torch.randn(16, generator=gen(3))
    mb = openmix.build_policy("mixup", pairing={"name": "knn", "k": 2})(torch.randn(16, 5), targets, generator=gen(4))
    dist = (targets[:, None] - targets[None, :]).abs().fill_diagonal_(float("inf"))
    assert bool((dist[torch.arange(16), mb.index] <= dist.sort(1).values[:, 1]).all())
    with pytest.raises(ValueError, match="not mode='pair'"):
        openmix.build_policy("mixup", mode="pair", pairing="knn")(torch.randn(4, 5), torch.randn(4))
