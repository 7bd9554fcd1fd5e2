"""Which torch device a command runs on."""

from __future__ import annotations

import platform

import torch

from policylab.errors import ConfigError


def select_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """CUDA, then MPS, then CPU; a requested device that is not available is a config error."""
    if requested is None:
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    kind = requested.split(":")[0]
    if kind not in available:
        raise ConfigError(f"--device={requested}: expected cpu, cuda or mps")
    if not available[kind]:
        raise ConfigError(f"--device={requested}: {kind} is not available on this machine")
    return torch.device("cuda", local_rank) if requested == "cuda" else torch.device(requested)


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: AVX512-BF16 or AMX on x86 (AVX-512 alone only emulates
    it), oneDNN's bfloat16 check elsewhere (Arm)."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, absent in old torch
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
