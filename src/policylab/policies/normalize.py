"""Normalization inside the policy: statistics are buffers, so a checkpoint carries its own.

Modes (LeRobot's names):
    mean_std   x -> (x - mean) / std
    min_max    x -> 2 (x - min) / (max - min) - 1, i.e. [min, max] -> [-1, 1]
    identity   x unchanged

A policy built without statistics holds buffers of +inf; the first call then fails with a message that
says to pass `dataset_stats` (a checkpoint loaded with `from_pretrained` restores the real values).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from policylab.errors import PolicylabError

MODES = ("mean_std", "min_max", "identity")
EPS = 1e-8
_STATS_OF_MODE = {"mean_std": ("mean", "std"), "min_max": ("min", "max"), "identity": ()}


class MissingStatsError(PolicylabError, ValueError):
    """The policy was built without `dataset_stats` and has no statistics to normalize with."""


def _buffer_name(key: str, stat: str) -> str:
    return f"{key.replace('.', '_')}__{stat}"  # buffer names may not contain dots


def _stat_shape(shape: list[int]) -> tuple[int, ...]:
    """Images (C, H, W) are normalized per channel: (C, 1, 1); vectors per dimension: (D,)."""
    return (shape[0], 1, 1) if len(shape) == 3 else tuple(shape)


class Normalizer(nn.Module):
    """Normalizes (or, with `inverse=True`, un-normalizes) the features in `shapes` by `modes`.

    Args:
        shapes: feature key -> shape of one frame, e.g. {"observation.state": [2]}.
        modes: feature key -> mode; features without a mode pass through unchanged.
        stats: feature key -> {"mean", "std", "min", "max"} arrays or tensors (e.g. `dataset.meta.stats`).
        inverse: map normalized values back to dataset units (for actions).
    """

    def __init__(
        self,
        shapes: dict[str, list[int]],
        modes: dict[str, str],
        stats: dict[str, dict] | None = None,
        inverse: bool = False,
    ):
        super().__init__()
        self.modes = {key: modes[key] for key in shapes if modes.get(key, "identity") != "identity"}
        self.inverse = inverse
        for key, mode in self.modes.items():
            if mode not in MODES:
                raise ValueError(f"normalization mode '{mode}' for '{key}' is not one of {', '.join(MODES)}")
            for stat in _STATS_OF_MODE[mode]:
                value = torch.full(_stat_shape(shapes[key]), torch.inf)
                if stats is not None:
                    value = self._checked_stat(stats, key, stat, value.shape)
                self.register_buffer(_buffer_name(key, stat), value)

    @staticmethod
    def _checked_stat(stats: dict, key: str, stat: str, shape: torch.Size) -> Tensor:
        if key not in stats or stat not in stats[key]:
            raise MissingStatsError(f"dataset_stats has no '{stat}' for '{key}' (needed to normalize it)")
        value = torch.as_tensor(stats[key][stat], dtype=torch.float32).clone()
        if not torch.isfinite(value).all():
            raise MissingStatsError(
                f"dataset_stats['{key}']['{stat}'] is {value.tolist()}: statistics must be finite numbers (does the "
                "dataset hold a NaN or inf in that column?)"
            )
        if value.numel() != shape.numel():
            raise ValueError(
                f"dataset_stats['{key}']['{stat}'] has shape {tuple(value.shape)}, expected {tuple(shape)} "
                "from the policy's input/output shapes"
            )
        return value.reshape(shape)

    def _stat(self, key: str, stat: str) -> Tensor:
        value = getattr(self, _buffer_name(key, stat))
        if torch.isinf(value).any():
            raise MissingStatsError(
                f"the policy has no normalization statistics for '{key}': build it with "
                "dataset_stats=dataset.meta.stats, or load a trained one with Policy.from_pretrained(path)"
            )
        return value

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """A new dict with the configured features (B, ..., *shape) mapped; other keys are passed through."""
        out = dict(batch)
        for key, mode in self.modes.items():
            if key not in batch:
                continue
            if mode == "mean_std":
                mean, std = self._stat(key, "mean"), self._stat(key, "std")
                out[key] = batch[key] * std + mean if self.inverse else (batch[key] - mean) / (std + EPS)
            else:
                low, high = self._stat(key, "min"), self._stat(key, "max")
                span = high - low + EPS
                out[key] = (
                    (batch[key] + 1) / 2 * span + low if self.inverse else (batch[key] - low) / span * 2 - 1
                )
        return out
