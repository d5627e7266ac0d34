"""Fresh output tensors that are cheap to fill on the CPU.

A new batch-sized CPU tensor (38 MB for 64x3x224x224 float32) usually comes straight from the
kernel, and filling it costs one page fault per 4 KB page: on a 2-core VM, ``x.clone()`` took
18.7 ms against 3.4 ms for ``copy_`` into an existing buffer. Advising the kernel to back such
an allocation with 2 MB pages (``madvise(MADV_HUGEPAGE)``, what PyTorch's opt-in
``THP_MEM_ALLOC_ENABLE=1`` does for every allocation) before it is written took the same fill
to 6.6 ms. ``new_like`` does that for large CPU outputs on Linux when transparent huge pages are
in ``madvise`` mode; it changes where the pages come from, never the tensor.
``OPENMIX_HUGE_PAGES=0`` turns it off.

``DeferredMask``: an output made only if someone reads it (``MixedBatch.mask``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Callable, Optional

import torch

# outputs below this size are left alone (the C allocator's heap usually serves them, already
# paged in; an advice costs about a microsecond)
MIN_ADVISED_BYTES = 8 * 1024 * 1024
HUGE_PAGE = 2 * 1024 * 1024
# CPU rows of at least this many elements are mixed one row at a time into their output: each
# element is written once, while its row is in cache (see row_by_row)
ROW_BY_ROW_MIN = 3 * 128 * 128
# torch splits an elementwise CPU op into tasks of at least this many elements (its GRAIN_SIZE)
TASK_ELEMENTS = 32768
MADV_HUGEPAGE = 14            # linux/mman.h
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


@functools.lru_cache(maxsize=1)
def _madvise():
    """libc's madvise when advising helps here (Linux, THP in ``madvise`` mode, not turned off
    by ``OPENMIX_HUGE_PAGES=0``), else None. In ``always`` mode the kernel needs no advice."""
    if not sys.platform.startswith("linux") or os.environ.get("OPENMIX_HUGE_PAGES", "1") == "0":
        return None
    try:
        with open(THP_SETTING) as f:
            if "[madvise]" not in f.read():
                return None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        advise = libc.madvise
    except (OSError, AttributeError):
        return None
    advise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advise.restype = ctypes.c_int
    return advise


def _worth_advising(nbytes: int) -> bool:
    return nbytes >= MIN_ADVISED_BYTES and _madvise() is not None


def advise_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """Asks for 2 MB pages under the whole 2 MB-aligned part of a large CPU tensor's memory
    (call it before the tensor is first written). Returns t; a refusal is ignored."""
    nbytes = t.untyped_storage().nbytes()
    if t.device.type != "cpu" or not _worth_advising(nbytes):
        return t
    begin = t.untyped_storage().data_ptr()
    start = -(-begin // HUGE_PAGE) * HUGE_PAGE
    stop = (begin + nbytes) // HUGE_PAGE * HUGE_PAGE
    if stop > start:
        _madvise()(start, stop - start, MADV_HUGEPAGE)
    return t


def new_like(x: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``torch.empty_like(x, dtype=dtype)`` (same shape, device and memory format), with huge
    pages advised for a large CPU tensor (see the module docstring)."""
    return advise_huge_pages(torch.empty_like(x, dtype=dtype))


def new_empty(shape, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)`` with huge pages advised when large."""
    return advise_huge_pages(torch.empty(shape, dtype=dtype, device=device))


def row_by_row(x: torch.Tensor) -> bool:
    """Whether to mix x (B, C, *spatial) one row at a time: CPU rows of at least ROW_BY_ROW_MIN
    elements, each large enough to give every intra-op thread a task (a loop over rows runs one
    row's op at a time; on many threads the whole-batch form spreads the work wider)."""
    if x.device.type != "cpu" or x.shape[0] == 0:
        return False
    row, threads = x[0].numel(), torch.get_num_threads()
    return row >= ROW_BY_ROW_MIN and (threads == 1 or row >= TASK_ELEMENTS * threads)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(0, index)``; a large CPU result goes into ``new_like`` (smaller ones skip
    the ``out=`` form, which measured up to 18% slower on a 3 MB batch)."""
    if x.device.type == "cpu" and _worth_advising(x.numel() * x.element_size()):
        return torch.index_select(x, 0, index, out=new_like(x))
    return x.index_select(0, index)


def fresh_copy(x: torch.Tensor) -> torch.Tensor:
    """``x.clone()`` for a dense x (same values, strides and memory format) into ``new_like``."""
    return new_like(x).copy_(x)


class DeferredMask:
    """A mask to be made on first access of ``MixedBatch.mask``: what a policy returns from
    ``apply`` when its mixing did not need the mask (CutMix, SaliencyMix and ResizeMix copy boxes on the
    CPU), so that callers who never read it (losses, ``MixCollate(keep_mask=False)``) never pay
    for it. ``make()`` -> (B, 1, *spatial) tensor."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], torch.Tensor]) -> None:
        self.make = make
