"""Losses against hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

import openmix


def mixed(y, index, lam):
    x = torch.zeros(len(y), 1, 4)
    return openmix.MixedBatch(x, torch.tensor(y), torch.tensor(index), torch.tensor(lam))


def log_softmax_row(z, keep):
    """log softmax over the classes in ``keep``, as a dict class -> value (plain math)."""
    lse = math.log(sum(math.exp(z[k]) for k in keep))
    return {k: z[k] - lse for k in keep}


def test_soft_ce_hand_computed():
    z = [1.0, -0.5, 2.0]
    mb = mixed([0, 2], [1, 0], [0.7, 0.7])
    logits = torch.tensor([z, z])
    ls = log_softmax_row(z, [0, 1, 2])
    row0 = -(0.7 * ls[0] + 0.3 * ls[2])
    row1 = -(0.7 * ls[2] + 0.3 * ls[0])
    assert float(openmix.build_loss("soft_ce")(logits, mb)) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_soft_ce_smoothing_applied_once_before_mixing():
    z = [0.3, 0.1, -0.2, 0.0]
    mb = mixed([1, 3], [0, 0], [0.6, 0.6])
    s, k = 0.2, 4
    t0 = [s / k] * k
    t0[1] += 1 - s                          # own label of row 0 (partner is itself)
    ls = log_softmax_row(z, range(4))
    row0 = -sum(t0[c] * ls[c] for c in range(4))
    one = lambda c: [(1 - s + s / k) if j == c else s / k for j in range(4)]
    t1 = [0.6 * a + 0.4 * b for a, b in zip(one(3), one(1))]
    row1 = -sum(t1[c] * ls[c] for c in range(4))
    got = openmix.build_loss("soft_ce", smoothing=s)(torch.tensor([z, z]), mb)
    assert float(got) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def dm_row(z, a, b, lam, eta, mode, t):
    """The DM loss of one row from its definition, with plain math."""
    ls = log_softmax_row(z, range(len(z)))
    soft_ce = -(lam * ls[a] + (1 - lam) * ls[b]) if a != b else -ls[a]
    if a == b or lam in (0.0, 1.0):
        return soft_ce
    w_a, w_b = eta * lam ** t, eta * (1 - lam) ** t
    if mode == "more":
        w_a, w_b = (w_a, 0.0) if lam >= 0.5 else (0.0, w_b)
    if mode == "less":
        w_a, w_b = (w_a, 0.0) if lam < 0.5 else (0.0, w_b)
    not_b = [k for k in range(len(z)) if k != b]
    not_a = [k for k in range(len(z)) if k != a]
    return soft_ce - w_a * log_softmax_row(z, not_b)[a] - w_b * log_softmax_row(z, not_a)[b]


@pytest.mark.parametrize("mode", ["both", "more", "less"])
@pytest.mark.parametrize("t", [1.0, 0.5])
def test_decoupled_loss_hand_computed(mode, t):
    # rows where the partner's class index is smaller and larger than the own one, and a == b
    zs = [[1.0, -0.5, 2.0, 0.3], [0.2, 0.9, -1.0, 0.4], [0.0, 0.5, 0.1, -0.3], [1.5, 1.0, 0.5, 0.0]]
    ys, index, lam = [2, 0, 3, 2], [1, 3, 0, 0], [0.8, 0.3, 0.55, 0.8]
    mb = mixed(ys, index, lam)
    expected = sum(dm_row(zs[i], ys[i], ys[index[i]], lam[i], 0.1, mode, t) for i in range(4)) / 4
    got = openmix.build_loss("decoupled", eta=0.1, mode=mode, t=t)(torch.tensor(zs), mb)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_decoupled_weights_follow_each_rows_label_pair_not_class_order():
    # "more" must regularise the class with the larger share in every row: here row 0's own
    # class (2) has the larger index and row 1's own class (0) the smaller; both have λ = 0.8
    loss = openmix.build_loss("decoupled", eta=1.0, mode="more", t=1.0)
    z = torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], requires_grad=True)
    mb = mixed([2, 0], [1, 0], [0.8, 0.8])    # row0: a=2, b=0; row1: a=0, b=2
    loss(z, mb).backward()
    plain = z.detach().clone().requires_grad_(True)
    openmix.build_loss("soft_ce")(plain, mb).backward()
    extra = z.grad - plain.grad
    # the extra term pushes up the own class (the larger share) in both rows
    assert extra[0, 2] < 0 and extra[1, 0] < 0
    assert extra[0, 0] == 0 and extra[1, 2] == 0   # the excluded partner class gets no gradient


def test_decoupled_unmixed_rows_are_plain_soft_ce():
    z = torch.randn(4, 5)
    mb = mixed([0, 1, 2, 3], [1, 0, 3, 2], [1.0, 1.0, 1.0, 1.0])
    torch.testing.assert_close(openmix.build_loss("decoupled", t=0.0)(z, mb), F.cross_entropy(z, mb.y))


def test_bce_equals_torch_on_the_mixed_targets():
    z = torch.randn(3, 4)
    mb = mixed([0, 1, 3], [2, 0, 1], [0.3, 0.6, 0.9])
    t = mb.soft_targets(4)
    torch.testing.assert_close(openmix.build_loss("bce")(z, mb), F.binary_cross_entropy_with_logits(z, t))


def test_mixed_mse():
    pred = torch.tensor([[1.0], [2.0], [0.0]])
    mb = openmix.MixedBatch(torch.zeros(3, 1, 2), torch.tensor([1.0, 3.0, -1.0]), torch.tensor([1, 0, 2]),
                            torch.tensor([0.5, 0.25, 1.0]))
    # mixed targets: 0.5*1+0.5*3 = 2, 0.25*3+0.75*1 = 1.5, -1
    expected = ((1 - 2) ** 2 + (2 - 1.5) ** 2 + (0 + 1) ** 2) / 3
    assert float(openmix.build_loss("mse")(pred, mb)) == pytest.approx(expected)


def test_loss_errors_name_the_problem():
    mb = mixed([0, 1], [1, 0], [0.5, 0.5])
    with pytest.raises(ValueError, match="logits must have shape"):
        openmix.build_loss("soft_ce")(torch.randn(3, 4), mb)
    with pytest.raises(ValueError, match="outside"):
        openmix.build_loss("soft_ce")(torch.randn(2, 1), mb)
    with pytest.raises(TypeError, match="float regression targets"):
        openmix.build_loss("mse")(torch.randn(2), mb)
    with pytest.raises(ValueError, match="mode must be one of"):
        openmix.build_loss("decoupled", mode="most")
    with pytest.raises(ValueError, match="unknown loss 'focal'.*soft_ce"):
        openmix.build_loss("focal")
