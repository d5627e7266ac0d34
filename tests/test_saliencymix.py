"""SaliencyMix: the spectral residual against a numpy implementation, and the box on the partner's peak."""
import math

import numpy as np
import pytest
import torch

import openmix
from openmix.ops.saliency import saliency_map, saliency_peak, working_size


def numpy_spectral_residual(img, sigma_frac=0.125, eps=1e-8):
    """Hou & Zhang 2007 written directly: img (C, H, W) float64 with H, W <= 64 -> (H, W)."""
    grey = np.tensordot([0.299, 0.587, 0.114], img, axes=1) if img.shape[0] == 3 else img.mean(0)
    spectrum = np.fft.fft2(grey)
    amp = np.abs(spectrum)
    log_amp = np.log(amp + eps * amp.max())
    local_mean = sum(np.roll(log_amp, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    residual = log_amp - local_mean
    smap = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sigma = sigma_frac * max(grey.shape)
    r = max(1, math.ceil(3 * sigma))
    taps = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()
    h, w = smap.shape
    padded = np.zeros((h + 2 * r, w + 2 * r))
    padded[r:r + h, r:r + w] = smap
    rows = sum(t * padded[:, k:k + w] for k, t in enumerate(taps))          # along W
    return sum(t * rows[k:k + h, :] for k, t in enumerate(taps))            # along H


def blob_images(blobs, size=(32, 32), channels=3, noise=0.05, seed=0):
    """One image per (row, col, side) square blob of ones on a zero background, plus faint noise."""
    g = torch.Generator().manual_seed(seed)
    x = noise * torch.rand((len(blobs), channels) + size, generator=g, dtype=torch.float64)
    for i, (r, c, s) in enumerate(blobs):
        x[i, :, r:r + s, c:c + s] += 1.0
    return x


@pytest.mark.parametrize("channels,size", [(3, (20, 24)), (1, (8, 8)), (2, (33, 17))])
def test_saliency_map_equals_numpy_spectral_residual(channels, size):
    x = torch.rand((3, channels) + size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = saliency_map(x)
    for i in range(3):
        np.testing.assert_allclose(ours[i].numpy(), numpy_spectral_residual(x[i].numpy()), rtol=1e-9, atol=1e-12)


def test_float32_map_is_the_float64_reference_to_single_precision():
    """The half-spectrum form in float32 (what float32 batches use) against the direct float64
    formula: agreement to single precision, and the same peak."""
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = saliency_map(x.float())
    assert ours.dtype == torch.float32
    for i in range(6):
        ref = numpy_spectral_residual(x[i].numpy())
        np.testing.assert_allclose(ours[i].double().numpy(), ref, rtol=0, atol=1e-5 * ref.max())
        assert int(ours[i].argmax()) == int(ref.argmax())


def test_large_images_are_shrunk_by_area_averaging_before_the_residual():
    assert working_size((128, 96), 64) == (64, 48) and working_size((20, 30), 64) == (20, 30)
    x = torch.rand(2, 1, 128, 96, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shrunk = x.reshape(2, 1, 64, 2, 48, 2).mean(dim=(3, 5))                 # 2x2 block means
    ours = saliency_map(x)
    assert ours.shape == (2, 64, 48)
    np.testing.assert_allclose(ours[1].numpy(), numpy_spectral_residual(shrunk[1].numpy()), rtol=1e-9, atol=1e-12)
    # the peak is reported on the input grid: the centre of the working pixel, scaled by 2
    flat = int(ours[0].argmax())
    assert saliency_peak(x)[0].tolist() == [2 * (flat // 48) + 1, 2 * (flat % 48) + 1]


def test_saliency_peak_is_on_the_salient_blob():
    blobs = [(18, 7, 4), (2, 25, 3), (24, 20, 6), (5, 5, 4), (12, 12, 8), (0, 0, 3)]
    peaks = saliency_peak(blob_images(blobs))
    for (r, c, s), (pr, pc) in zip(blobs, peaks.tolist()):
        assert r <= pr < r + s and c <= pc < c + s, ((r, c, s), (pr, pc))
    # a blob in a non-square image larger than the working size
    x = blob_images([(70, 40, 6)], size=(100, 60), channels=1)
    pr, pc = saliency_peak(x)[0].tolist()
    assert 70 <= pr < 76 and 40 <= pc < 46
    # the intensity scale does not move the peak
    assert torch.equal(saliency_peak(blob_images(blobs) * 255.0), peaks)


def expected_box(peak, lam, size):
    """CutMix box of side floor(size * sqrt(1 - lam)) starting at peak - side // 2, clipped."""
    cut = math.floor(size * math.sqrt(1.0 - lam))
    lo = peak - cut // 2
    return max(lo, 0), min(max(lo + cut, 0), size)


@pytest.fixture(params=["blend", "copy"])
def box_path(request, monkeypatch):
    """Runs a test with small rows blended by the box mask, and again with the boxes copied by
    slices as large rows are on the CPU (the same values)."""
    if request.param == "copy":
        monkeypatch.setattr("openmix.ops.boxes.BOX_COPY_MIN_ROW", 0)
    return request.param


@pytest.mark.parametrize("mode", ["elem", "pair"])
def test_box_is_centred_on_each_partners_peak_and_lambda_is_one_minus_area(mode, box_path):
    blobs = [(18, 7, 3), (2, 25, 3), (24, 20, 3), (5, 5, 3), (12, 12, 3), (26, 2, 3)]
    x = blob_images(blobs).float()
    policy = openmix.build_policy("saliencymix", mode=mode)
    g = torch.Generator().manual_seed(3)
    params = policy.sample_params(x.shape, g)
    out, mask, lam = policy.apply(x, params)
    peaks = saliency_peak(x)
    for i in range(6):
        j = int(params["index"][i])
        r, c, s = blobs[j]
        pr, pc = peaks[j].tolist()
        assert r <= pr < r + s and c <= pc < c + s                     # on the partner's blob
        (y0, y1), (x0, x1) = (expected_box(pr, float(params["lam"][i]), 32),
                              expected_box(pc, float(params["lam"][i]), 32))
        box = torch.zeros(32, 32, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        assert torch.equal(mask[i, 0] == 0, box)
        assert torch.equal(out[i][:, box], x[j][:, box]) and torch.equal(out[i][:, ~box], x[i][:, ~box])
        assert float(lam[i]) == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 1024, abs=1e-12)


def test_batch_mode_uses_one_box_from_row_zeros_partner(box_path):
    """The authors' code: saliency of images[rand_index[0]], one box pasted into every row."""
    blobs = [(18, 7, 3), (2, 25, 3), (24, 20, 3), (5, 5, 3)]
    x = blob_images(blobs).float()
    policy = openmix.build_policy("saliencymix", mode="batch", seed=0)
    g = torch.Generator().manual_seed(5)
    params = policy.sample_params(x.shape, g)
    out, mask, lam = policy.apply(x, params)
    pr, pc = saliency_peak(x[params["index"][:1]])[0].tolist()
    r, c, s = blobs[int(params["index"][0])]
    assert r <= pr < r + s and c <= pc < c + s
    (y0, y1), (x0, x1) = expected_box(pr, float(params["lam"][0]), 32), expected_box(pc, float(params["lam"][0]), 32)
    assert (mask == mask[:1]).all() and (lam == lam[0]).all()
    assert int((mask[0, 0] == 0).sum()) == (y1 - y0) * (x1 - x0)
    assert bool((mask[0, 0, y0:y1, x0:x1] == 0).all())
    torch.testing.assert_close(out, x * mask + x[params["index"]] * (1 - mask))


def test_only_images_are_accepted_and_arguments_are_checked():
    policy = openmix.build_policy("saliencymix")
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        policy(torch.randn(4, 2, 16), torch.arange(4))
    with pytest.raises(ValueError, match="saliency_size must be an int >= 1"):
        openmix.build_policy("saliencymix", saliency_size=0)
    with pytest.raises(ValueError, match="blur_sigma must be a finite real number >= 0"):
        openmix.build_policy("saliencymix", blur_sigma=-1.0)


def test_unmixed_rows_are_untouched_and_zero_blur_works():
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mb = openmix.build_policy("saliencymix", mode="elem", p=0.5, blur_sigma=0.0)(x, torch.arange(8),
                                                                             generator=torch.Generator().manual_seed(1))
    untouched = mb.lam == 1
    assert 0 < int(untouched.sum()) < 8
    assert torch.equal(mb.x[untouched], x[untouched])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_peak_pieces_equal_the_plain_torch_forms(dtype):
    """The numpy argmax equals torch's (first maximum on ties, NaN as the maximum, strided rows);
    the grey image equals (x * w).sum(1) bit for bit in both layouts."""
    from openmix.ops.saliency import LUMA_WEIGHTS, first_argmax, grey_image
    g = torch.Generator().manual_seed(0)
    rows = torch.rand(50, 300, generator=g, dtype=dtype)
    rows[:, ::7] = rows.amax(dim=1, keepdim=True)          # ties
    rows[3, 11] = float("nan")
    rows[7] = 1.0
    assert torch.equal(first_argmax(rows), rows.argmax(dim=1))
    assert torch.equal(first_argmax(rows[:, ::2]), rows[:, ::2].argmax(dim=1))
    x = torch.randn(6, 3, 9, 7, generator=g, dtype=dtype) * 100
    w = torch.tensor(LUMA_WEIGHTS, dtype=dtype).view(1, 3, 1, 1)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        assert torch.equal(grey_image(xl), (xl * w).sum(1))
