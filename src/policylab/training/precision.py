"""Mixed precision for the training step: the forward pass's autocast context and, for float16, its loss scaler."""

from __future__ import annotations

from contextlib import ExitStack, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from policylab.errors import ConfigError
from policylab.utils.device import cpu_has_native_bfloat16


class _CpuMixedPrecision:
    """bfloat16 autocast on a CPU, with attention on PyTorch's math kernel: in bfloat16 the CPU flash-attention
    backward takes twice as long per ACT step (benchmarks/RESULTS.md, "Images on a CPU")."""

    def __enter__(self) -> None:
        self._stack = ExitStack()
        self._stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        self._stack.enter_context(sdpa_kernel(SDPBackend.MATH))

    def __exit__(self, *exc) -> bool | None:
        return self._stack.__exit__(*exc)


def mixed_precision(device: torch.device, amp: bool):
    """The forward pass's precision and, for float16, its loss scaler: bfloat16 on a CUDA GPU or CPU that
    computes it natively, float16 with loss scaling on older GPUs. Weights, gradients and optimizer stay float32."""
    if not amp:
        return nullcontext(), None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16), None
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    if device.type == "cpu":
        if not cpu_has_native_bfloat16():
            raise ConfigError(
                "--training.amp=true: this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), where "
                "mixed precision would be slower than float32; train without it"
            )
        return _CpuMixedPrecision(), None
    raise ConfigError(
        f"--training.amp=true: mixed precision runs on CUDA or a CPU, not on {device} (--device=cpu for the CPU)"
    )
