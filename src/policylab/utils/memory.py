"""Keep freed batch buffers in the process instead of handing them back to the OS (glibc only).

Every training batch allocates a few large buffers (a batch of 2x3x96x96 float images is 14 MB). glibc's
malloc returns such blocks to the kernel when they are freed (mmap'd blocks, or a trimmed heap top), so
the next batch faults every page back in. Where page faults are expensive (virtual machines) that costs
more than the work: measured on this project's 2-core VM, Diffusion Policy windows through a DataLoader ran
at 4.3-6.5k samples/s with glibc's defaults and 21-22k samples/s with freed memory kept for reuse (see
benchmarks/RESULTS.md). `policylab` commands call `keep_freed_memory()` once at start; library users may
call it themselves (it changes the whole process's allocator settings, so the library never does).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems
_TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Serve blocks up to 32 MB from the heap and keep up to 1 GB of freed heap; False where not glibc."""
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    try:
        mallopt = ctypes.CDLL(path).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
