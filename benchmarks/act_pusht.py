"""ACT learning check: train on recorded PushT demonstrations (keypoints + state) on this CPU within a time
budget, then measure success over held-out seeds for several ways of executing the chunks.

    python benchmarks/act_pusht.py --dataset-root data/pusht --output-dir outputs/act_kp --minutes 29
    python benchmarks/act_pusht.py --output-dir outputs/act_kp --skip-train   # evaluate an existing run

Training runs `policylab train` with the CPU preset below (the same flags the README documents). Evaluation
loads `checkpoints/last` and rolls it out for `--episodes` episodes from seed `--seed` (far from the
recording's seeds 0..N) with each execution variant:

    n_action_steps=K   the queue: run the model every K steps and execute K actions of the chunk
    ensemble=c         temporal ensembling with coefficient c (model every step, n_action_steps=1)

Prints one JSON object: the training run (steps, minutes, final losses) and per variant the success rate
with its 95% Wilson interval, mean max coverage, mean steps and inference time per control step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from policylab.evaluation import evaluate_policy
from policylab.policies import PreTrainedPolicy

PUSHT_CPU_PRESET = [
    "--policy.type=act",
    "--policy.input_shapes={observation.state: [2], observation.environment_state: [16]}",
    "--policy.dim_model=128",
    "--policy.n_heads=4",
    "--policy.dim_feedforward=512",
    "--policy.n_vae_encoder_layers=2",
    "--policy.chunk_size=20",
    "--policy.n_action_steps=20",
    "--training.lr=1e-4",
    "--training.scheduler=cosine",
    "--training.warmup_steps=500",
    "--training.batch_size=64",
    "--training.steps=15000",
    "--training.save_freq=2500",
    "--training.log_freq=250",
]
VARIANTS = {
    "n_action_steps=20": {"n_action_steps": 20},
    "n_action_steps=10": {"n_action_steps": 10},
    "n_action_steps=5": {"n_action_steps": 5},
    "n_action_steps=1": {"n_action_steps": 1},
    "ensemble=0.01": {"n_action_steps": 1, "temporal_ensemble_coeff": 0.01},
    "ensemble=0.1": {"n_action_steps": 1, "temporal_ensemble_coeff": 0.1},
}


def train(dataset_root: str, output_dir: Path, minutes: float, seed: int) -> float:
    """Runs the preset (resuming a run in output_dir); returns the wall minutes, start-up included."""
    command = [
        sys.executable, "-m", "policylab.cli", "train", *PUSHT_CPU_PRESET, f"--dataset.root={dataset_root}",
        f"--output_dir={output_dir}", f"--training.max_minutes={minutes}", f"--seed={seed}",
    ]  # fmt: skip
    if (output_dir / "checkpoints/last").exists():
        command.append("--resume=true")
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return (time.perf_counter() - started) / 60


def training_summary(output_dir: Path) -> dict:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    last = losses[-1]
    return {
        "steps": last["step"],
        "epochs": last["epoch"],
        "final_loss": round(last["loss"], 4),
        "final_l1_loss": round(last["l1_loss"], 4),
        "mean_samples_per_s": round(sum(r["samples_per_s"] for r in losses) / len(losses)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset-root", default="data/pusht")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/act_kp"))
    parser.add_argument("--minutes", type=float, default=29.0)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from VARIANTS")
    args = parser.parse_args()

    results = {"training": {}, "eval_seed": args.seed, "eval_episodes": args.episodes, "variants": {}}
    if not args.skip_train:
        minutes = train(args.dataset_root, args.output_dir, args.minutes, args.train_seed)
        results["training"]["wall_minutes"] = round(minutes, 1)
    results["training"].update(training_summary(args.output_dir))
    for name in args.variants.split(","):
        policy = PreTrainedPolicy.from_pretrained(args.output_dir / "checkpoints/last", **VARIANTS[name])
        metrics = evaluate_policy(
            policy, "pusht", n_episodes=args.episodes, seed=args.seed, batch_size=25, progress=False
        )
        results["variants"][name] = {
            "success_rate": metrics["success_rate"],
            "success_rate_ci95": [round(v, 3) for v in metrics["success_rate_ci95"]],
            "avg_max_reward": round(metrics["avg_max_reward"], 3),
            "avg_steps": round(metrics["avg_steps"], 1),
            "inference_ms_per_step": round(metrics["inference_ms_per_step"], 2),
        }
        print(name, json.dumps(results["variants"][name]), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
