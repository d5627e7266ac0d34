"""openmix.ops.memory: fresh outputs are the tensors torch.empty_like makes; the huge-page advice
covers exactly the 2 MB-aligned part of a large CPU tensor, and is skipped when turned off."""
import torch

from openmix.ops import memory


def test_new_like_keeps_shape_strides_dtype_and_layout():
    x = torch.rand(2, 3, 8, 5).contiguous(memory_format=torch.channels_last)
    for dtype in (None, torch.float64, torch.uint8):
        made, plain = memory.new_like(x, dtype=dtype), torch.empty_like(x, dtype=dtype)
        assert (made.shape, made.stride(), made.dtype, made.device) == \
               (plain.shape, plain.stride(), plain.dtype, plain.device)
    assert memory.new_empty((3, 4), torch.int32).dtype == torch.int32


def test_advice_covers_the_aligned_part_of_large_tensors_only(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_madvise", lambda: lambda start, length, advice: calls.append((start, length, advice)))
    small = memory.new_empty((3 * memory.HUGE_PAGE // 4,))              # 6 MB of float32: under the limit
    assert calls == [] and memory.MIN_ADVISED_BYTES > 4 * small.numel()
    big = memory.new_empty((5 * memory.HUGE_PAGE // 4,))                 # 10 MB
    (start, length, advice), = calls
    begin, nbytes = big.data_ptr(), big.numel() * 4
    assert nbytes >= memory.MIN_ADVISED_BYTES
    assert advice == memory.MADV_HUGEPAGE
    assert start % memory.HUGE_PAGE == 0 and length % memory.HUGE_PAGE == 0 and length > 0
    assert begin <= start and start + length <= begin + nbytes          # inside the tensor's memory
    assert start - begin < memory.HUGE_PAGE and begin + nbytes - (start + length) < memory.HUGE_PAGE


def test_turned_off_by_the_environment(monkeypatch):
    memory._madvise.cache_clear()
    monkeypatch.setenv("OPENMIX_HUGE_PAGES", "0")
    try:
        assert memory._madvise() is None
        x = torch.rand(3 * 1024 * 1024)                                  # 12 MB: would be advised
        assert torch.equal(memory.new_like(x).copy_(x), x)
    finally:
        memory._madvise.cache_clear()


def test_a_real_advice_leaves_values_intact():
    """Whatever the kernel does with the advice (or if it refuses it), the tensor works."""
    x = torch.rand(64, 3, 128, 128)                                      # 12.6 MB
    assert torch.equal(memory.new_like(x).copy_(x), x)


def test_row_by_row_only_where_each_row_keeps_every_thread_busy():
    before = torch.get_num_threads()
    row_224 = torch.empty(2, 3, 224, 224)                    # 150528 elements: 4 tasks of 32768
    try:
        torch.set_num_threads(1)
        assert memory.row_by_row(row_224) and memory.row_by_row(torch.empty(2, 3, 128, 128))
        assert not memory.row_by_row(torch.empty(2, 3, 64, 64))            # small rows: whole batch
        torch.set_num_threads(4)
        assert memory.row_by_row(row_224) and not memory.row_by_row(torch.empty(2, 3, 128, 128))
        torch.set_num_threads(8)
        assert not memory.row_by_row(row_224)                 # more threads than one row's tasks
    finally:
        torch.set_num_threads(before)
    assert not memory.row_by_row(torch.empty(0, 3, 224, 224))
