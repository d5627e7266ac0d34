"""The fast paths (out=, inplace, channels_last, uint8, grouped patches) against plain reference
implementations written here, row by row, on the same parameters."""
import math

import pytest
import torch
import torch.nn.functional as F

import openmix
from openmix.ops import box_bounds
from openmix.ops.paste import _paste_sampled, nearest_source, resize_paste
from openmix.policies.base import MixPolicy

POLICIES = ["mixup", "cutmix", "fmix", "resizemix"]
MODES = ["batch", "pair", "elem"]


def images(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.randint(0, 10, (shape[0],), generator=g)


# ---- the references: one row at a time, nothing clever -------------------------------------
def reference(policy, x, params):
    """The mixed batch by hand from the policy's parameters; float64 arithmetic where it blends."""
    name = type(policy).__name__
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        own, partner = x[i], x[int(params["index"][i])]
        if name == "Mixup":
            lam = float(params["lam"][i])
            out[i] = (lam * own.double() + (1 - lam) * partner.double()).to(x.dtype)
        elif name == "CutMix":
            lo, hi = box_bounds(params["lam"][i:i + 1], params["centre"][i:i + 1], x.shape[2:])
            row = own.clone()
            box = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo[0].tolist(), hi[0].tolist()))
            row[box] = partner[box]
            out[i] = row
        elif name == "ResizeMix":
            size, offset = policy.boxes(params["tau"][i:i + 1], params["place"][i:i + 1], x.shape[2:])
            row = own.clone()
            box, at = size[0].tolist(), offset[0].tolist()
            if min(box) > 0:
                src = partner[None] if x.ndim == 4 else partner[None, :, None]
                small = F.interpolate(src, size=box if x.ndim == 4 else [1] + box, mode=policy.interpolation,
                                      **({"align_corners": False} if policy.interpolation == "bilinear" else {}))
                row[(slice(None),) + tuple(slice(a, a + b) for a, b in zip(at, box))] = small[0].reshape(row.shape[0], *box)
            out[i] = row
        else:
            raise AssertionError(name)
    return out


def call_and_params(policy, x, y, seed=9):
    mb = policy(x, y, generator=torch.Generator().manual_seed(seed))
    params = policy.sample_params(x.shape, torch.Generator().manual_seed(seed), y)
    return mb, params


@pytest.fixture(params=["batched", "row by row"])
def cpu_path(request, monkeypatch):
    """Runs a test on the small-row CPU paths (one batched call) and again with the thresholds
    at 0, so that the same small inputs take the large-row paths (slice copies row by row,
    nearest patches from F.interpolate)."""
    from openmix.ops import blend, boxes, memory, paste
    if request.param == "row by row":
        monkeypatch.setattr(boxes, "FILL_MIN_PIXELS", 0)
        monkeypatch.setattr(paste, "PADDED_MAX_ROW", 0)
        monkeypatch.setattr(paste, "INTERPOLATE_MIN_PIXELS", 0)
        monkeypatch.setattr(boxes, "BOX_COPY_MIN_ROW", 0)
        monkeypatch.setattr(blend, "CYCLE_MIN_ROW", 0)
        monkeypatch.setattr(memory, "ROW_BY_ROW_MIN", 0)
        monkeypatch.setattr(memory, "TASK_ELEMENTS", 0)
    return request.param


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["mixup", "cutmix", "resizemix"])
@pytest.mark.parametrize("shape, layout", [((9, 3, 17, 12), "contiguous"), ((9, 3, 17, 12), "channels_last"),
                                           ((6, 2, 21), "contiguous")])
def test_policy_equals_the_row_by_row_reference(name, mode, shape, layout, cpu_path):
    x, y = images(shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    policy = openmix.build_policy(name, mode=mode)
    mb, params = call_and_params(policy, x, y)
    expected = reference(policy, x, params)
    if name == "mixup":       # lerp vs the textbook formula: a rounding apart
        torch.testing.assert_close(mb.x, expected, rtol=1e-6, atol=1e-6)
    else:                     # copies: exact
        assert torch.equal(mb.x, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("placement", ["inside", "clip"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_resizemix_patches_are_exactly_f_interpolate(mode, placement, interpolation, cpu_path):
    x, y = images((12, 3, 23, 19), seed=2)
    policy = openmix.build_policy("resizemix", mode=mode, placement=placement, interpolation=interpolation)
    mb, params = call_and_params(policy, x, y, seed=4)
    assert torch.equal(mb.x, reference(policy, x, params))


@pytest.mark.parametrize("max_soft", [0.0, 0.2])
@pytest.mark.parametrize("mode", MODES)
def test_fmix_blends_with_its_mask_row_by_row(mode, max_soft, cpu_path):
    x, y = images((8, 3, 14, 9))
    mb = openmix.build_policy("fmix", mode=mode, max_soft=max_soft, seed=1)(x, y)
    for i in range(8):
        expected = torch.lerp(x[int(mb.index[i])], x[i], mb.mask[i])      # hard masks: a pick
        assert torch.equal(mb.x[i], expected)


@pytest.mark.parametrize("n_in, n_out", [(32, 3), (32, 25), (224, 179), (20, 20), (7, 14), (13, 9), (100, 1)])
def test_nearest_source_is_what_f_interpolate_reads(n_in, n_out):
    ramp = torch.arange(n_in, dtype=torch.float32).view(1, 1, -1)
    read = F.interpolate(ramp, size=n_out, mode="nearest").flatten().long()
    assert torch.equal(nearest_source(n_in, n_out), read)


# ---- the fast paths give the default path's result -------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", POLICIES)
def test_out_inplace_and_channels_last_equal_the_default_call(name, mode, cpu_path):
    x, y = images((10, 3, 16, 13), seed=1)
    policy = openmix.build_policy(name, mode=mode)
    g = lambda: torch.Generator().manual_seed(3)        # noqa: E731
    expected = policy(x, y, generator=g())
    buffer = torch.full_like(x, float("nan"))
    with_out = policy(x, y, generator=g(), out=buffer)
    assert with_out.x is buffer and torch.equal(buffer, expected.x)
    assert torch.equal(with_out.lam, expected.lam) and torch.equal(with_out.index, expected.index)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    on_cl = policy(x_cl, y, generator=g())
    assert on_cl.x.is_contiguous(memory_format=torch.channels_last) and torch.equal(on_cl.x, expected.x)
    for out in (torch.empty_like(x_cl), torch.empty_like(x)):       # same layout as x, or not
        assert torch.equal(policy(x_cl, y, generator=g(), out=out).x, expected.x)
    work = x.clone()
    in_place = openmix.build_policy(name, mode=mode, inplace=True)(work, y, generator=g())
    assert in_place.x.data_ptr() == work.data_ptr()
    # in place, mixup lerps from x toward the partner (as it always has): a rounding apart
    torch.testing.assert_close(work, expected.x, rtol=1e-6, atol=1e-6)
    # ... and the same arithmetic on both in-place paths (whole-batch copy of the partners, or
    # row by row along the cycles of the permutation)
    params = policy.sample_params(x.shape, g(), y)
    weight = {"mixup": lambda: params["lam"].view(-1, 1, 1, 1), "fmix": lambda: expected.mask,
              "cutmix": lambda: expected.mask, "resizemix": lambda: expected.mask}[name]()
    if name in ("mixup", "fmix"):
        assert torch.equal(work, x.lerp(x[params["index"]], 1.0 - weight.to(x.dtype)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", POLICIES)
def test_mix_uint8_is_the_float_mix_rounded(name, mode, cpu_path):
    x8 = torch.randint(0, 256, (12, 3, 15, 11), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 4
    policy = openmix.build_policy(name, mode=mode, **({"interpolation": "bilinear"} if name == "resizemix" else {}))
    g = lambda: torch.Generator().manual_seed(6)        # noqa: E731
    expected = policy(x8.float(), y, generator=g())
    mb = policy.mix_uint8(x8, y, generator=g())
    assert mb.x.dtype == torch.uint8 and torch.equal(mb.x, expected.x.round().clamp(0, 255).to(torch.uint8))
    assert torch.equal(mb.lam, expected.lam) and (mb.mask is None or mb.mask.dtype == torch.float32)
    x8_cl = x8.contiguous(memory_format=torch.channels_last)
    on_cl = policy.mix_uint8(x8_cl, y, generator=g())
    assert on_cl.x.is_contiguous(memory_format=torch.channels_last) and torch.equal(on_cl.x, mb.x)
    out = torch.empty_like(x8)
    assert policy.mix_uint8(x8, y, generator=g(), out=out).x is out and torch.equal(out, mb.x)


@pytest.mark.parametrize("mode", MODES)
def test_mix_uint8_resizemix_nearest_is_the_float_mix(mode, cpu_path):
    """Nearest copies pixels: the uint8 result is the float one exactly, whether the patches come
    from the gather or from F.interpolate (the row-by-row variant forces the latter)."""
    x8 = torch.randint(0, 256, (9, 3, 21, 17), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    policy = openmix.build_policy("resizemix", mode=mode)
    g = lambda: torch.Generator().manual_seed(8)        # noqa: E731
    expected = policy(x8.float(), torch.arange(9), generator=g()).x.to(torch.uint8)
    assert torch.equal(policy.mix_uint8(x8, torch.arange(9), generator=g()).x, expected)


@pytest.mark.parametrize("chunk", [4 * 200 * 160, 4 * 3 * 200 * 160 * 2])
def test_mix_uint8_blocks_cover_large_rows_and_batches(chunk, monkeypatch):
    # blocks of one channel of one row (a row cut in three), and of two whole rows
    from openmix.ops import blend
    monkeypatch.setattr(blend, "CHUNK_BYTES", chunk)
    x8 = torch.randint(0, 256, (5, 3, 200, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    policy = openmix.build_policy("mixup", mode="elem")
    g = lambda: torch.Generator().manual_seed(2)        # noqa: E731
    expected = policy(x8.float(), torch.arange(5), generator=g()).x.round().to(torch.uint8)
    assert torch.equal(policy.mix_uint8(x8, torch.arange(5), generator=g()).x, expected)


def test_grid_sample_path_for_accelerators_matches_the_grouped_cpu_path():
    # on a GPU the per-row path samples through grid_sample (no host sync); run it here on the CPU
    x, _ = images((10, 3, 18, 14), seed=5)
    index = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    size = torch.tensor([[9, 7], [1, 1], [18, 14], [0, 5], [4, 11], [6, 6], [17, 2], [3, 3], [12, 9], [5, 13]])
    offset = torch.stack([torch.tensor([0, 0, 0, 3, 14, 2, 1, 15, 6, 13]), torch.tensor([7, 13, 0, 2, 3, 8, 12, 0, 5, 1])], 1)
    for interpolation in ("nearest", "bilinear"):
        grouped, mask = resize_paste(x, index, size, offset, interpolation=interpolation)
        sampled = _paste_sampled(x, index, size, offset, mask, False, interpolation, None)
        torch.testing.assert_close(sampled, grouped, rtol=1e-5, atol=1e-5)


def test_blend_keeps_autograd_for_feature_mixing():
    h = torch.rand(6, 4, 5, requires_grad=True)
    mixed = openmix.ops.blend_with_partner(h, torch.tensor([1, 0, 3, 2, 5, 4]), torch.full((6, 1, 1), 0.3))
    mixed.sum().backward()
    torch.testing.assert_close(h.grad, torch.ones_like(h))      # 0.3 + 0.7 per element


# ---- out= is checked ---------------------------------------------------------------------------
class NoOut(MixPolicy):
    def apply(self, x, params, **context):
        return x, None, params["lam"]


def test_out_errors():
    x, y = images((4, 3, 8, 8))
    policy = openmix.build_policy("cutmix", mode="elem")
    with pytest.raises(ValueError, match=r"out must match x's shape \(4, 3, 8, 8\).*got shape \(4, 3, 8, 9\)"):
        policy(x, y, out=torch.empty(4, 3, 8, 9))
    with pytest.raises(ValueError, match=r"out must match.*dtype torch.float64"):
        policy(x, y, out=torch.empty(4, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"out must not share memory with x"):
        policy(x, y, out=x)
    with pytest.raises(TypeError, match=r"out must be a torch.Tensor like x or None, got list"):
        policy(x, y, out=[])
    with pytest.raises(ValueError, match=r"out must be None for a policy built with inplace=True"):
        openmix.build_policy("mixup", inplace=True)(x, y, out=torch.empty_like(x))
    with pytest.raises(TypeError, match=r"NoOut does not take out="):
        NoOut()(x, y, out=torch.empty_like(x))
    with pytest.raises(TypeError, match=r"x must be a uint8 tensor for mix_uint8, got dtype torch.int32"):
        policy.mix_uint8(x.int(), y)


def test_unmixed_batches_come_back_as_x_even_with_out():
    x, y = images((4, 3, 8, 8))
    buffer = torch.empty_like(x)
    assert openmix.build_policy("mixup", p=0.0)(x, y, out=buffer).x is x


# ---- same draws, same outputs as before the fast paths -----------------------------------------
# (index, λ, position-weighted sum of the mixed batch) for seed 5 on one 8x3x12x10 batch, computed
# with the code before these fast paths (commit dc3b548): a changed draw or output moves them
PINNED = {
    ("mixup", "batch"): ([3, 6, 0, 2, 1, 4, 5, 7], [0.521725] * 8, 730.369369),
    ("mixup", "pair"): ([2, 4, 0, 6, 1, 7, 3, 5], [0.521725, 0.131922, 0.521725, 0.974494, 0.131922, 0.627634, 0.974494, 0.627634], 725.566491),
    ("mixup", "elem"): ([3, 6, 0, 2, 1, 4, 5, 7], [0.521725, 0.131922, 0.558302, 0.974494, 0.346141, 0.627634, 0.541857, 0.372694], 728.970344),
    ("cutmix", "batch"): ([3, 6, 0, 2, 1, 4, 5, 7], [0.766667] * 8, 731.081595),
    ("cutmix", "pair"): ([2, 4, 0, 6, 1, 7, 3, 5], [0.766667, 0.416667, 0.766667, 0.991667, 0.416667, 0.7, 0.991667, 0.7], 725.531711),
    ("cutmix", "elem"): ([3, 6, 0, 2, 1, 4, 5, 7], [0.766667, 0.416667, 0.766667, 0.991667, 0.55, 0.7, 0.866667, 0.65], 736.732822),
    ("fmix", "batch"): ([3, 6, 0, 2, 1, 4, 5, 7], [0.516667] * 8, 728.911126),
    ("fmix", "pair"): ([2, 4, 0, 6, 1, 7, 3, 5], [0.516667, 0.125, 0.516667, 0.966667, 0.125, 0.633333, 0.966667, 0.633333], 727.189378),
    ("fmix", "elem"): ([3, 6, 0, 2, 1, 4, 5, 7], [0.516667, 0.125, 0.558333, 0.966667, 0.35, 0.633333, 0.541667, 0.375], 727.827895),
    ("resizemix", "batch"): ([3, 6, 0, 2, 1, 4, 5, 7], [0.925] * 8, 732.319258),
    ("resizemix", "pair"): ([2, 4, 0, 6, 1, 7, 3, 5], [0.925, 0.966667, 0.925, 0.95, 0.966667, 0.983333, 0.95, 0.983333], 725.937855),
    ("resizemix", "elem"): ([3, 6, 0, 2, 1, 4, 5, 7], [0.925, 0.966667, 0.9, 0.95, 0.833333, 0.983333, 0.9, 0.925], 731.909475),
}


@pytest.mark.parametrize("key", sorted(PINNED))
def test_same_draws_and_outputs_as_before(key):
    x = torch.rand(8, 3, 12, 10, generator=torch.Generator().manual_seed(11))
    mb = openmix.build_policy(key[0], mode=key[1], seed=5)(x, torch.arange(8))
    index, lam, weighted = PINNED[key]
    assert mb.index.tolist() == index
    assert [round(v, 6) for v in mb.lam.tolist()] == lam
    ramp = torch.linspace(0, 1, mb.x.numel(), dtype=torch.float64).view(mb.x.shape)
    assert (mb.x.double() * ramp).sum().item() == pytest.approx(weighted, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("index", [[3, 0, 1, 2, 4, 6, 5], [0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]])
@pytest.mark.parametrize("shared", [False, True])
def test_in_place_cycle_walk_equals_the_whole_batch_form(index, shared, monkeypatch):
    from openmix.ops import blend
    monkeypatch.setattr(blend, "CYCLE_MIN_ROW", 0)
    x = torch.rand(7, 2, 5, 4, generator=torch.Generator().manual_seed(0))
    index = torch.tensor(index)
    weight = torch.rand(1 if shared else 7, 1, 5, 4, generator=torch.Generator().manual_seed(1))
    expected = x.lerp(x[index], 1.0 - weight)
    assert torch.equal(blend.blend_with_partner(x.clone(), index, weight, inplace=True), expected)


@pytest.mark.parametrize("weight_shape", [(7, 1, 1, 1), (7, 1, 5, 4), (1, 1, 5, 4), "expanded"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("with_out", [False, True])
def test_row_by_row_blend_equals_the_whole_batch_form(weight_shape, layout, with_out, monkeypatch):
    """The large-row path (one lerp per row into the output) gives the whole-batch form's bits,
    including weights of exactly 0 and 1, in both layouts, with and without out=."""
    from openmix.ops import blend
    x = torch.rand(7, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    index = torch.tensor([3, 0, 1, 2, 6, 4, 5])
    shape = (1, 1, 5, 4) if weight_shape == "expanded" else weight_shape
    weight = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    weight.view(-1)[:2] = torch.tensor([0.0, 1.0])
    if weight_shape == "expanded":            # one mask expanded over the batch (FMix batch mode)
        weight = weight.expand(7, 1, 5, 4)
    expected = blend._blend_plain(x, index, weight)
    monkeypatch.setattr("openmix.ops.memory.ROW_BY_ROW_MIN", 0)
    monkeypatch.setattr("openmix.ops.memory.TASK_ELEMENTS", 0)
    calls, real = [], blend._blend_rows
    monkeypatch.setattr(blend, "_blend_rows", lambda *a: calls.append(1) or real(*a))
    out = torch.full_like(x, float("nan")) if with_out else None
    result = blend.blend_with_partner(x, index, weight, out=out)
    assert len(calls) == 1
    assert torch.equal(result, expected)
    assert result.stride() == x.stride() and (out is None or result is out)


@pytest.mark.parametrize("spatial", [(37,), (9, 11), (4, 5, 6)])
def test_box_mask_filled_by_slices_equals_the_outer_product(spatial, monkeypatch):
    from openmix.ops import boxes
    g = torch.Generator().manual_seed(len(spatial))
    lam = torch.cat((torch.tensor([0.0, 1.0]), torch.rand(10, generator=g)))          # full and empty boxes
    lo, hi = boxes.box_bounds(lam, torch.rand(12, len(spatial), generator=g), spatial)
    expected = boxes.box_mask(lo, hi, spatial, torch.float64)
    monkeypatch.setattr(boxes, "FILL_MIN_PIXELS", 1)
    filled = boxes.box_mask(lo, hi, spatial, torch.float64)
    assert filled.dtype == torch.float64 and torch.equal(filled, expected)
    assert bool((expected == 0).any()) and bool((expected == 1).any())


@pytest.mark.parametrize("partners", [[3, 0, 1, 2, 4, 6, 5], [0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0], [1, 2, 3, 4, 5, 6, 0]])
def test_in_place_box_cycle_walk_equals_reading_every_box_first(partners):
    from openmix.ops.boxes import paste_boxes_by_cycles
    x = torch.rand(7, 2, 9, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    boxes = []
    for _ in partners:                                   # overlapping boxes of different sizes
        top, left = (int(v) for v in torch.randint(0, 5, (2,), generator=g))
        boxes.append((slice(None), slice(top, top + int(torch.randint(0, 5, (), generator=g))),
                      slice(left, left + int(torch.randint(1, 4, (), generator=g)))))
    expected = x.clone()
    for i, (j, box) in enumerate(zip(partners, boxes)):
        expected[i][box] = x[j][box]
    assert torch.equal(paste_boxes_by_cycles(x.clone(), partners, boxes), expected)


@pytest.mark.parametrize("name", ["cutmix", "resizemix", "saliencymix"])
def test_box_masks_are_made_only_when_read(name, monkeypatch):
    """CutMix, SaliencyMix and ResizeMix paste boxes on the CPU without their mask: it is made on the first
    read of MixedBatch.mask, once, equal to the mask of the path that needs it; a collate that
    drops masks, and a pickled batch that already dropped it, never make it."""
    import pickle
    from openmix.data import MixCollate
    from openmix.ops import boxes
    made = []
    real = boxes.box_mask
    monkeypatch.setattr(boxes, "box_mask", lambda *a, **k: made.append(1) or real(*a, **k))
    if name != "resizemix":      # small rows blend with the mask; copy boxes as large rows do
        monkeypatch.setattr(boxes, "BOX_COPY_MIN_ROW", 0)
    x, y = images((6, 3, 12, 10), seed=3)
    policy = openmix.build_policy(name, mode="elem", seed=0)
    mb = policy(x, y, generator=torch.Generator().manual_seed(1))
    assert made == []
    mask = mb.mask
    assert made == [1] and mb.mask is mask and made == [1]
    torch.testing.assert_close(mb.lam, mask.mean(dim=(1, 2, 3)))
    for i in range(6):           # the mask says which pixels came from the partner
        own = mask[i, 0].bool()
        assert torch.equal(mb.x[i][:, own], x[i][:, own])
    again = policy(x, y, generator=torch.Generator().manual_seed(1))
    restored = pickle.loads(pickle.dumps(again))                          # made while pickling
    assert made == [1, 1] and torch.equal(restored.mask, mask)
    collated = MixCollate(policy, seed=0)([(x[i], int(y[i])) for i in range(6)])
    assert collated.mask is None and made == [1, 1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name, kwargs", [("cutmix", {}), ("resizemix", {}), ("resizemix", {"interpolation": "bilinear"}),
                                          ("mixup", {}), ("fmix", {})])
def test_mix_uint8_overwrite_gives_the_same_batch(name, kwargs, mode, cpu_path):
    """overwrite=True lets box policies paste into x itself: the values are those of the default
    call; where the policy blends (or lacks ``overwrites``) x is left alone."""
    x8 = torch.randint(0, 256, (10, 3, 19, 14), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    y = torch.arange(10) % 3
    policy = openmix.build_policy(name, mode=mode, **kwargs)
    g = lambda: torch.Generator().manual_seed(9)        # noqa: E731
    expected = policy.mix_uint8(x8, y, generator=g())
    scratch = x8.clone()
    got = policy.mix_uint8(scratch, y, generator=g(), overwrite=True)
    assert torch.equal(got.x, expected.x) and torch.equal(got.lam, expected.lam)
    assert (got.mask is None and expected.mask is None) or torch.equal(got.mask, expected.mask)
    # ResizeMix always pastes on the CPU, CutMix where it copies boxes (a shared box, large rows)
    pastes = name == "resizemix" or (name == "cutmix" and (mode == "batch" or cpu_path == "row by row"))
    if pastes:
        assert got.x.data_ptr() == scratch.data_ptr()
    else:
        assert got.x.data_ptr() != scratch.data_ptr() and torch.equal(scratch, x8)


def test_mix_collate_pastes_into_its_own_batch_only():
    """MixCollate lets the policy overwrite a batch that default_collate has just stacked (same
    batches as before), never a tensor a custom collate hands over."""
    from torch.utils.data import default_collate
    from openmix.data import MixCollate
    x8 = torch.randint(0, 256, (8, 3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    samples = [(x8[i], i % 3) for i in range(8)]
    for name in ("cutmix", "resizemix"):
        policy = openmix.build_policy(name, mode="elem")
        collated, labels = default_collate(samples)
        expected = policy.mix_uint8(collated.clone(), torch.as_tensor(labels), generator=MixCollate(policy, seed=2).generator())
        collate = MixCollate(policy, seed=2)
        calls = []
        real = policy.mix_uint8
        collate.policy = type("Recorder", (), {"mix_uint8": lambda self, *a, **k: calls.append(k) or real(*a, **k)})()
        assert torch.equal(collate(samples).x, expected.x) and calls[0].get("overwrite") is True
        held = x8.clone()
        custom = MixCollate(policy, seed=2, collate=lambda s: (held, torch.tensor([i % 3 for i in range(8)])))
        assert not custom._overwrite
        assert torch.equal(custom(samples).x, expected.x) and torch.equal(held, x8)
    choice = openmix.build_policy("choice", policies=[{"name": "mixup"}, {"name": "cutmix"}])
    assert MixCollate(choice)._overwrite
    MixCollate(choice)(samples)
