"""Allocator tuning for the copy engine's chunk-sized buffers.

Every chunk passes through several buffers of up to a chunk's size (read,
compressed, encrypted). glibc serves allocations that large with mmap and
returns them with munmap, so each chunk costs about a thousand page faults per
buffer and, with threads, TLB shootdowns: on the benchmark that was over half
of the backup's system time. Raising the mmap and trim thresholds keeps those
buffers in the heap and re-uses them. Process-wide, so only the CLI calls it.
"""

from __future__ import annotations

import ctypes

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)


def tune_allocator(trim_threshold: int = 256 << 20) -> bool:
    """Ask glibc to keep large buffers in the heap; False where there is no glibc ``mallopt``."""
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them (find_library runs ldconfig: 20 ms)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    results = [mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), mallopt(_M_TRIM_THRESHOLD, trim_threshold)]
    return results == [1, 1]
