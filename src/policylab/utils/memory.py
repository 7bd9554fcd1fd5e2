"""Keep freed batch buffers in the process instead of handing them back to the OS (glibc only).

Every training batch allocates a few large buffers (a batch of 2x3x96x96 float images is 14 MB). glibc's
malloc returns such blocks to the kernel when they are freed (mmap'd blocks, or a trimmed heap top), so
the next batch faults every page back in. Where page faults are expensive (virtual machines) that costs
more than the work (benchmarks/RESULTS.md, "Dataloader"). `policylab` commands call `keep_freed_memory()`
once at start; library users may call it themselves (it changes the whole process's allocator settings, so
the library never does).
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


class PeakMemory:
    """How far memory use rose above its level at entry while inside the `with` block, in MB (`megabytes`):
    on CUDA from the caching allocator's tensor statistics (`torch.cuda.max_memory_allocated`), on CPU from
    the process's peak resident set (Linux `VmHWM`, reset on entry through /proc/self/clear_refs). `kind`
    says which one was measured; both stay None where neither is available."""

    def __init__(self, device):
        import torch

        self.device = torch.device(device)
        self.kind, self.megabytes, self._entry = None, None, 0.0

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind, self._entry = "cuda_allocated", torch.cuda.memory_allocated(self.device) / 2**20
        elif _reset_peak_rss():
            self.kind, self._entry = "process_rss", _peak_rss_kb() / 1024
        return self

    @property
    def peak_mb(self) -> float | None:
        """The peak itself: memory in use at entry plus the rise, in MB."""
        return None if self.megabytes is None else self._entry + self.megabytes

    def __exit__(self, *exc) -> None:
        import torch

        if self.kind == "cuda_allocated":
            torch.cuda.synchronize(self.device)
            self.megabytes = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._entry
        elif self.kind == "process_rss":
            self.megabytes = _peak_rss_kb() / 1024 - self._entry


def process_peak_mb(device) -> float | None:
    """This process's peak memory so far, in MB: allocated CUDA tensors on a CUDA device, else the peak resident
    set (Linux `VmHWM`); None where neither is available."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        return _peak_rss_kb() / 1024 or None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        return _peak_rss_kb() > 0
    except OSError:
        return False


def _peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0
