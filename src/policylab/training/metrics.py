"""Training metrics: means over each logging window, written to `metrics.jsonl` (and TensorBoard)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from policylab.constants import METRICS_FILE
from policylab.errors import ConfigError


class RunningMeans:
    """Averages per-step metrics between two `pop()` calls and measures the samples/s in between."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps, self.samples, self.since = 0, 0, time.perf_counter()

    def add(self, metrics: dict[str, float], samples: int) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1
        self.samples += samples

    def pop(self) -> dict[str, float]:
        seconds = time.perf_counter() - self.since
        means = {key: total / max(1, self.steps) for key, total in self.sums.items()}
        means["samples_per_s"] = self.samples / seconds if seconds > 0 else 0.0
        if "data_s" in self.sums:  # the share of wall time spent waiting for batches (the loader's cost)
            means["data_wait_fraction"] = self.sums.pop("data_s") / seconds if seconds > 0 else 0.0
            means.pop("data_s")
        self._reset()
        return means


class MetricsLog:
    """Appends one JSON object per line to `output_dir/metrics.jsonl`; on resume, drops what came after the
    checkpoint, so the file holds one consistent curve."""

    def __init__(self, output_dir: Path, start_step: int, kind: str = "jsonl"):
        self.path = output_dir / METRICS_FILE
        kept = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a kill: everything before it is sound
                if record.get("step", 0) <= start_step:
                    kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        self.tensorboard = _tensorboard_writer(output_dir) if kind == "tensorboard" else None

    def records(self) -> list[dict]:
        """What the file holds now (on resume: the records up to the checkpoint)."""
        self.file.flush()
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            step = record["step"]
            for key, value in record.items():
                if isinstance(value, dict):
                    for name, v in value.items():
                        if isinstance(v, (int, float)):
                            self.tensorboard.add_scalar(f"{key}/{name}", v, step)
                elif isinstance(value, (int, float)) and key != "step":
                    self.tensorboard.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard_writer(output_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ConfigError(
            "--training.log=tensorboard needs the tensorboard package: pip install tensorboard"
        ) from error
    return SummaryWriter(str(output_dir / "tensorboard"))
