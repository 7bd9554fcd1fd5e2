"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from policylab.flags import ConfigError


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
