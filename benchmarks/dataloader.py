"""Dataloader throughput: samples/s for Diffusion Policy and ACT windows, policylab vs LeRobot on the same data.

    python benchmarks/dataloader.py --root data/pusht [--lerobot-python /path/to/lerobot-venv/bin/python]

Measures a torch DataLoader (shuffle, batch 64, num_workers 0 by default) over full batches of the windows
each policy trains on, after a warm-up; the frame cache is built before timing starts (it is built once per
dataset, and its build time is reported separately). Each measurement runs in a fresh process: policylab
with glibc's default allocator settings, policylab after `keep_freed_memory()` (what `policylab` commands
do; see src/policylab/utils/memory.py), policylab_stream: the data stream `policylab train` reads (same
windows and batch size, camera frames passed as uint8 and scaled to float after the loader, included in the
time), and with --lerobot-python, LeRobot's LeRobotDataset on the same folder under that interpreter. The
ratio to LeRobot is taken from policylab_stream. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FPS = 10
TOOLS = ("policylab", "policylab_keep_freed_memory", "policylab_stream", "lerobot")
WINDOWS = {
    # Diffusion Policy (PushT preset): 2 observation frames, horizon 16 starting one step back
    "diffusion": {
        "observation.image": [-0.1, 0.0],
        "observation.state": [-0.1, 0.0],
        "action": [(i - 1) / FPS for i in range(16)],
    },
    # ACT: current frame, 100-step action chunk
    "act": {"action": [i / FPS for i in range(100)]},
}


def make_dataset(tool: str, root: str, delta_timestamps: dict):
    if tool.startswith("policylab"):
        from policylab.datasets import LeRobotDataset

        return LeRobotDataset(root=root, delta_timestamps=delta_timestamps)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError:  # LeRobot < 0.3
        from lerobot.common.datasets.lerobot_dataset import LeRobotDataset
    # LeRobot's default decoder (torchcodec; it needs FFmpeg's libraries: `apt-get install ffmpeg`)
    return LeRobotDataset(
        "local/bench", root=root, delta_timestamps=delta_timestamps, video_backend="torchcodec"
    )


def endless_batches(tool: str, dataset, batch_size: int, num_workers: int):
    """Batches ready for a model, forever: a shuffling DataLoader over the dataset's items, or for
    policylab_stream the stream `policylab train` reads (whole batches gathered at once, camera frames passed
    from the workers as uint8 and scaled to float after)."""
    import numpy as np
    import torch

    if tool == "policylab_stream":
        from policylab.training.data import StepBatchSampler, make_dataloader, scale_camera_frames

        sampler = StepBatchSampler(np.arange(len(dataset)), batch_size, seed=0)  # never runs out
        for batch in make_dataloader(dataset, sampler, num_workers, pin_memory=False):
            yield scale_camera_frames(batch, dataset.meta.camera_keys)
        return
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True
    )
    while True:
        yield from loader


def samples_per_second(
    tool: str, dataset, batch_size: int, num_workers: int, min_seconds: float, max_batches: int
) -> dict:
    """Throughput over at least `min_seconds` (total samples / total time), and from the median batch time."""
    iterator = endless_batches(tool, dataset, batch_size, num_workers)
    for _ in range(2):  # warm-up (and worker start-up)
        next(iterator)
    batch_seconds, started = [], time.perf_counter()
    while len(batch_seconds) < max_batches and (
        time.perf_counter() - started < min_seconds or len(batch_seconds) < 5
    ):
        tick = time.perf_counter()
        next(iterator)
        batch_seconds.append(time.perf_counter() - tick)
    elapsed = time.perf_counter() - started
    return {
        "samples_per_s": round(len(batch_seconds) * batch_size / elapsed, 1),
        "samples_per_s_median_batch": round(batch_size / statistics.median(batch_seconds), 1),
        "batches_timed": len(batch_seconds),
    }


def measure(tool: str, root: str, batch_size: int, num_workers: int, min_seconds: float) -> dict:
    import torch

    torch.manual_seed(0)
    results = {}
    for policy, windows in WINDOWS.items():
        started = time.perf_counter()
        dataset = make_dataset(tool, root, windows)
        setup_s = time.perf_counter() - started
        results[policy] = {
            **samples_per_second(tool, dataset, batch_size, num_workers, min_seconds, max_batches=2000),
            "dataset_setup_s": round(setup_s, 2),
        }
    return results


def run_child(python: str, tool: str, args: argparse.Namespace) -> dict:
    """Measure `tool` in a fresh process (allocator settings and caches do not leak between runs)."""
    child = subprocess.run(
        [python, __file__, f"--tool={tool}", f"--root={args.root}", f"--batch-size={args.batch_size}",
         f"--num-workers={args.num_workers}", f"--min-seconds={args.min_seconds}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(child.stdout.strip().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", default="data/pusht", help="dataset folder (record one with `policylab record`)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--min-seconds", type=float, default=5.0, help="time each measurement at least this long"
    )
    parser.add_argument("--lerobot-python", help="python of a venv with lerobot installed, to measure it too")
    parser.add_argument("--tool", choices=TOOLS, help=argparse.SUPPRESS)  # set in child processes
    return parser


def main() -> None:
    args = build_parser().parse_args()

    if args.tool:  # child: measure one tool, print one line
        if args.tool in ("policylab_keep_freed_memory", "policylab_stream"):
            from policylab.utils.memory import keep_freed_memory

            keep_freed_memory()
        print(json.dumps(measure(args.tool, args.root, args.batch_size, args.num_workers, args.min_seconds)))
        return
    import torch

    report = {
        "root": args.root,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
    }
    for tool in ("policylab", "policylab_keep_freed_memory", "policylab_stream"):
        report[tool] = run_child(sys.executable, tool, args)
    if args.lerobot_python:
        report["lerobot"] = run_child(args.lerobot_python, "lerobot", args)
        report["ratio_policylab_over_lerobot"] = {
            policy: round(
                report["policylab_stream"][policy]["samples_per_s"]
                / report["lerobot"][policy]["samples_per_s"],
                1,
            )
            for policy in WINDOWS
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
