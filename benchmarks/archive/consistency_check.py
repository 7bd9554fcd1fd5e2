"""Consistency distillation against its teacher, on this machine: speed and success over the same seeds.

    python benchmarks/consistency_check.py --teacher outputs/dp_kp --student outputs/dp_kp_student --steps 2000 \
        [--training.lr=3e-4 --distill.dsm_weight=0.1 ...]     # any other flag goes to policylab distill

Distills `--teacher` into `--student` with `policylab distill` (resuming a student already there), then runs
`policylab bench --sweep` on both: the teacher at DDPM-100 and DDIM-10, the student at LCM-1 and LCM-3, each
timed at batch 1 and evaluated on the same `--episodes` held-out seeds. The sweeps time each setting in its
own stretch of time, and this VM's speed drifts by tens of percent over minutes, so the speed-up is measured
once more with the two calls in turns: teacher DDIM-10 and student LCM-1 chunk calls on the same dataset
observations, `--rounds` rounds of 10 and 100 calls, in one process. Prints one JSON object with every
setting's latency, success and max coverage, and the two issue targets: LCM-1 speed-up over the teacher's
DDIM-10 (target >= 10x; from the paired timing) and LCM-1 success minus the teacher's DDPM-100 success
(target >= -10 points).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from policylab.datasets import DatasetConfig, LeRobotDataset, LeRobotDatasetMetadata
from policylab.evaluation.benchmark import observation_inputs, time_calls
from policylab.runs import Checkpoint


def policylab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "policylab.cli", *args], check=True, stdout=sys.stderr)


def sweep(policy: Path, steps: str, samplers: str, episodes: int, output_dir: Path, *flags: str) -> dict:
    policylab("bench", f"--policy.path={policy}", f"--sweep.steps={steps}", f"--sweep.samplers={samplers}",
              f"--sweep.n_episodes={episodes}", f"--output_dir={output_dir}", *flags)  # fmt: skip
    return json.loads((output_dir / "bench_info.json").read_text())["sweep"]


def paired_latency(teacher_path: Path, student_path: Path, dataset_root: Path | None, rounds: int) -> dict:
    """p50 ms of teacher DDIM-10 and student LCM-1 chunk calls (batch 1, CPU), timed in turns."""
    cpu = torch.device("cpu")
    teacher_checkpoint = Checkpoint.resolve(teacher_path)
    teacher = teacher_checkpoint.load(cpu, noise_scheduler_type="DDIM", num_inference_steps=10)
    student = Checkpoint.resolve(student_path).load(cpu, num_inference_steps=1)
    root = teacher_checkpoint.dataset_root(DatasetConfig(root=dataset_root and str(dataset_root)), "bench")
    windows = LeRobotDataset(
        root=root, delta_timestamps=teacher.config.delta_timestamps(LeRobotDatasetMetadata(root).fps)
    )
    inputs = observation_inputs(teacher, windows, np.random.default_rng(0).choice(len(windows), 100))
    times = {"teacher": [], "student": []}
    with torch.inference_mode():
        for _ in range(rounds):
            times["teacher"] += time_calls(teacher.predict_action_chunk, inputs[:10], 2, cpu)
            times["student"] += time_calls(student.predict_action_chunk, inputs, 10, cpu)
    teacher_ms, student_ms = (float(np.median(times[k])) for k in ("teacher", "student"))
    return {"teacher_DDIM-10_ms_p50": teacher_ms, "student_LCM-1_ms_p50": student_ms, "rounds": rounds,
            "speedup": teacher_ms / student_ms}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000, help="distillation steps")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--dataset-root", type=Path, help="the teacher's dataset, when not where it trained")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the paired latency measurement")
    args, distill_flags = parser.parse_known_args()  # other --flags go to policylab distill

    data = [f"--dataset.root={args.dataset_root}"] if args.dataset_root else []
    started = time.perf_counter()
    resume = ["--resume=true"] if (args.student / "checkpoints/last").exists() else []
    policylab("distill", f"--teacher.path={args.teacher}", f"--output_dir={args.student}",
              f"--training.steps={args.steps}", *resume, *data, *distill_flags)  # fmt: skip
    distill_minutes = (time.perf_counter() - started) / 60
    teacher = {
        **sweep(args.teacher, "[100]", "[DDPM]", args.episodes, args.student / "teacher_ddpm", *data),
        **sweep(args.teacher, "[10]", "[DDIM]", args.episodes, args.student / "teacher_ddim", *data),
    }
    student = sweep(args.student, "[1,3]", "[LCM]", args.episodes, args.student / "student_sweep", *data)
    paired = paired_latency(args.teacher, args.student, args.dataset_root, args.rounds)
    report = {
        "distill_steps": args.steps,
        "distill_wall_minutes": round(distill_minutes, 1),
        "episodes": args.episodes,
        "teacher": teacher,
        "student": student,
        "paired_latency": paired,
        "lcm1_speedup_over_ddim10": paired["speedup"],
        "lcm1_speedup_over_ddim10_from_the_sweeps": teacher["DDIM-10"]["chunk_call_ms_p50"]
        / student["LCM-1"]["chunk_call_ms_p50"],
        "lcm1_minus_ddpm100_success_points": 100
        * (student["LCM-1"]["success_rate"] - teacher["DDPM-100"]["success_rate"]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
