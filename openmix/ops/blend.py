"""Linear interpolation of each row with its partner."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .memory import gather_rows, new_like, row_by_row

# uint8 images are blended through float32 buffers of about this size, reused block after block,
# so the uint8 path never holds a float copy of the batch (2 MB: the fastest of 0.5, 1, 2 MB on
# a 1 MB-L2 CPU at 32, 64 and 224 px; float inputs are blended whole, measured as fast)
CHUNK_BYTES = 2 * 1024 * 1024
# in place on the CPU, rows of at least this many elements are blended row by row along the
# cycles of the permutation, holding one saved row per cycle instead of a copy of every partner
CYCLE_MIN_ROW = 3 * 96 * 96


def blend_with_partner(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                       inplace: bool = False, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``weight * x + (1 - weight) * x[index]``.

    x: (B, C, *spatial); index: (B,) long; weight: broadcastable to x with x's number of dims,
    e.g. (B, 1, ..., 1) for one λ per row, a (B, 1, *spatial) mask or a (1, 1, *spatial) mask
    shared by all rows. Weights of exactly 0 and 1 give exactly the partner and the row itself
    (``torch.lerp`` computes from the nearer end).

    ``inplace=True`` writes into x; ``out`` (x's shape and dtype, not overlapping x) receives the
    result without any batch-sized allocation. The result keeps x's memory format
    (``channels_last`` stays ``channels_last``). uint8 inputs are blended in float32 and
    rounded (``MixCollate``'s rounding), row block by row block.
    """
    if inplace:
        if x.is_floating_point() and x.device.type == "cpu" and x[0].numel() >= CYCLE_MIN_ROW \
                and weight.ndim == x.ndim and not (torch.is_grad_enabled() and x.requires_grad):
            return _blend_in_place_by_cycles(x, index, weight.to(x.dtype))
        partner = x.index_select(0, index)
        if not x.is_floating_point():
            return x.copy_(_blend_float(partner, x, weight))
        return x.lerp_(partner, 1.0 - weight.to(x.dtype))
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    order = None if needs_grad else batch_major_order(x)
    if order is None or weight.ndim != x.ndim:
        result = _blend_plain(x, index, weight)
        return result if out is None else out.copy_(result)
    if _by_rows(x, out):
        return _blend_rows(x, order, index, weight.to(x.dtype), new_like(x) if out is None else out)
    xv, wv = x.permute(order), weight.permute(order)
    if out is not None and not out.permute(order).is_contiguous():     # an out buffer in another layout
        return out.copy_(_blend_plain(x, index, weight))
    if not x.is_floating_point():
        out = new_like(x) if out is None else out                      # same strides as x (dense)
        _blend_rows_in_blocks(xv, index, wv, out.permute(order))
        return out
    inverse = sorted(range(x.ndim), key=lambda d: order[d])
    if out is None:      # the partner copy, made in x's layout, becomes the output
        partner = gather_rows(xv, index)
        return _lerp_in_place(partner, xv, wv.to(x.dtype)).permute(inverse)
    torch.index_select(xv, 0, index, out=out.permute(order))
    _lerp_in_place(out.permute(order), xv, wv.to(x.dtype))
    return out


def _by_rows(x: torch.Tensor, out: Optional[torch.Tensor]) -> bool:
    """Whether ``_blend_rows`` applies: float rows that ``row_by_row`` picks and an output in
    x's layout."""
    return x.is_floating_point() and row_by_row(x) and (out is None or out.stride() == x.stride())


def _blend_rows(x: torch.Tensor, order: Sequence[int], index: torch.Tensor, weight: torch.Tensor,
                out: torch.Tensor) -> torch.Tensor:
    """out[i] = lerp(x[index[i]], x[i], weight[i]) one row at a time: each output element is
    written once, while its row is in cache (the whole-batch form writes the partner copy, then
    reads it back to blend). The same lerp kernel, so the same values. Rows are taken in the
    dim order ``order`` in which x (and out, of x's strides) is contiguous; a pixel weight is
    spread over channels that lie innermost (see _spread_over_channels), once when one mask
    serves every row."""
    xv, ov, wv = x.permute(order), out.permute(order), weight.permute(order)
    if wv.shape[0] > 1 and wv.stride(0) == 0:      # one mask expanded over the batch
        wv = wv[:1]
    if wv.shape[0] == 1:
        shared = _spread_over_channels(wv, xv.shape)[0]
        for i, j in enumerate(index.tolist()):
            torch.lerp(xv[j], xv[i], shared, out=ov[i])
        return out
    for i, j in enumerate(index.tolist()):
        torch.lerp(xv[j], xv[i], _spread_over_channels(wv[i:i + 1], xv.shape)[0], out=ov[i])
    return out


def _lerp_in_place(start: torch.Tensor, end: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``start.lerp_(end, weight)``. A weight that broadcasts along the innermost dim (a pixel
    mask on channels_last images, whose channels are innermost) makes torch's kernel run
    length-C inner loops; the weight is spread over the channels first (one small copy), which
    measured 6x faster than a lerp per channel plane at 256x32x32x3. The same values."""
    return start.lerp_(end, _spread_over_channels(weight, start.shape))


def _spread_over_channels(weight: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """weight, made contiguous along a last dim of 1 to 4 channels when it is a pixel weight
    broadcast there (its other dims not all 1); otherwise weight itself."""
    if weight.ndim == len(shape) and weight.shape[-1] == 1 < shape[-1] <= 4 \
            and any(size > 1 for size in weight.shape[1:-1]):
        return weight.expand(*weight.shape[:-1], shape[-1]).contiguous()
    return weight


def _blend_plain(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The whole-batch form (autograd-safe): the partner copy becomes the output."""
    partner = x.index_select(0, index)
    if not x.is_floating_point():
        return _blend_float(partner, x, weight)
    return partner.lerp_(x, weight.to(x.dtype))


def _blend_float(partner: torch.Tensor, own: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Integer images: blended in float32, rounded, clamped to the type's range, cast back."""
    info = torch.iinfo(own.dtype)
    mixed = partner.float().lerp_(own.float(), weight.float())
    return mixed.round_().clamp_(info.min, info.max).to(own.dtype)


def _blend_rows_in_blocks(xv: torch.Tensor, index: torch.Tensor, wv: torch.Tensor, ov: torch.Tensor) -> None:
    """Integer images: ov[i] = round(lerp(xv[index[i]], xv[i], wv[i])), through two float32 buffers
    of about CHUNK_BYTES reused for every block (a block: several rows, or one row cut along its
    second dim when a row is larger). xv, ov: contiguous, batch first. Weights in [0, 1] keep the
    blend inside the type's range, so no clamp is needed."""
    batch, inner = xv.shape[0], xv.shape[1]
    row_bytes = 4 * max(1, xv[0].numel())
    rows = max(1, min(batch, CHUNK_BYTES // row_bytes))
    step = inner if rows > 1 else max(1, min(inner, CHUNK_BYTES // max(1, row_bytes // max(1, inner))))
    weight = wv.float()
    per_row, per_inner = weight.shape[0] != 1, weight.shape[1] != 1
    buffers = [torch.empty((rows, step) + tuple(xv.shape[2:]), dtype=torch.float32, device=xv.device)
               for _ in range(2)]
    for start in range(0, batch, rows):
        stop = min(batch, start + rows)
        partner_rows = xv.index_select(0, index[start:stop])
        w_rows = weight[start:stop] if per_row else weight
        for lo in range(0, inner, step):
            hi = min(inner, lo + step)
            partner, own = (b[:stop - start, :hi - lo] for b in buffers)
            partner.copy_(partner_rows[:, lo:hi])
            own.copy_(xv[start:stop, lo:hi])
            partner.lerp_(own, w_rows[:, lo:hi] if per_inner else w_rows)
            _cast_into(ov[start:stop, lo:hi], partner.round_())


def _cast_into(target: torch.Tensor, source: torch.Tensor) -> None:
    """target.copy_(source) for whole-valued floats into an integer tensor; on the CPU through
    numpy, whose float32 -> uint8 cast measured 2.8x faster than torch's."""
    if target.device.type == "cpu":
        np.copyto(target.numpy(), source.numpy(), casting="unsafe")
    else:
        target.copy_(source)


def _blend_in_place_by_cycles(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x[i] <- lerp(x[i], x[index[i]], 1 - weight[i]) for every row, in place (the arithmetic of
    ``x.lerp_(x[index], 1 - weight)``). Walking each cycle i -> index[i] -> ..., a row's partner
    is still unwritten when the row is done, except the partner of the cycle's last row: the
    cycle's first row, saved before the walk."""
    partners = index.tolist()
    per_row = weight.shape[0] != 1
    layout = batch_major_order(x)         # a row's dims in the order that is contiguous
    order = [d - 1 for d in layout[1:]] if layout else list(range(x.ndim - 1))
    done = [False] * len(partners)
    for start in range(len(partners)):
        if done[start] or partners[start] == start:
            continue
        first = x[start].clone()
        row = start
        while not done[row]:
            done[row] = True
            nxt = partners[row]
            source = first if nxt == start else x[nxt]
            w = weight[row] if per_row else weight[0]
            _lerp_in_place(x[row].permute(order), source.permute(order), (1.0 - w).permute(order))
            row = nxt
    return x


def batch_major_order(x: torch.Tensor) -> Optional[Sequence[int]]:
    """A dim order, batch first, in which x is contiguous (``(0, 2, 3, 1)`` for channels_last),
    or None where there is none (an overlapping or strided view)."""
    if x.ndim == 0:
        return None
    if x.is_contiguous():
        return tuple(range(x.ndim))
    rest = sorted(range(1, x.ndim), key=lambda d: (-x.stride(d), d))
    order = (0,) + tuple(rest)
    return order if x.permute(order).is_contiguous() else None
