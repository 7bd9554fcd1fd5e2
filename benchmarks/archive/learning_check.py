"""Learning check: train a policy on recorded PushT demonstrations (keypoints + state; diffusion_image:
camera + state) on this CPU within a time budget, then measure success over held-out seeds for each way of
acting with the trained weights.

    python benchmarks/learning_check.py --policy act --dataset-root data/pusht_d0_800 --output-dir outputs/act_kp --minutes 29
    python benchmarks/learning_check.py --policy diffusion --dataset-root data/pusht --output-dir outputs/dp_kp --minutes 29
    python benchmarks/learning_check.py --policy act --output-dir outputs/act_kp --skip-train   # evaluate only
    python benchmarks/learning_check.py --policy act ... --policy.dropout=0.1   # other flags go to training

Training runs `policylab train` with the policy's CPU preset (Diffusion: configs/train/diffusion_pusht_*_cpu.json,
what `make demo` uses, for more steps; ACT: configs/train/act_pusht_keypoints_30min_cpu.json), resuming a run
in --output-dir. Evaluation loads `checkpoints/last` and rolls it out for `--episodes` episodes from seed
`--seed` (far from the recording's seeds 0..N) with each variant:

    act        n_action_steps=K: run the model every K steps and execute K actions of the chunk;
               ensemble=c: temporal ensembling with coefficient c (model every step)
    diffusion  DDPM-100 and DDIM-10 sampling, with the EMA weights (what checkpoints hold) and without

Prints one JSON object: the training run (wall minutes, steps, epochs, final loss) and per variant the success
rate with its 95% Wilson interval, mean max coverage, mean steps and inference time per control step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from policylab.evaluation import evaluate_policy
from policylab.policies import PreTrainedPolicy

PRESETS_DIR = Path(__file__).parents[1] / "configs/train"
# The CPU presets `make demo` trains with, given 30 minutes here instead of 7; ACT's own 30-minute preset
# (act_pusht_keypoints_30min_cpu.json: no CVAE, no dropout, width 256, two observation steps, 10 of 20 actions
# executed, batch 256, lr 1e-3), found by the searches in benchmarks/RESULTS.md, is too slow for the demo's 7.
PRESETS = {
    "act": [f"--config_path={PRESETS_DIR / 'act_pusht_keypoints_30min_cpu.json'}"],
    "diffusion": [f"--config_path={PRESETS_DIR / 'diffusion_pusht_keypoints_cpu.json'}", "--training.steps=14000"],
    # camera + state: the image CPU preset as it is (its steps fill about 60 minutes here)
    "diffusion_image": [f"--config_path={PRESETS_DIR / 'diffusion_pusht_image_cpu.json'}"],
}  # fmt: skip
COMMON = ["--training.save_freq=2500", "--training.log_freq=250"]
VARIANTS = {
    "act": {
        "n_action_steps=20": {"n_action_steps": 20},
        "n_action_steps=10": {"n_action_steps": 10},
        "n_action_steps=5": {"n_action_steps": 5},
        "n_action_steps=1": {"n_action_steps": 1},
        "ensemble=0.01": {"n_action_steps": 1, "temporal_ensemble_coeff": 0.01},
        "ensemble=0.1": {"n_action_steps": 1, "temporal_ensemble_coeff": 0.1},
    },
    "diffusion": {
        "DDIM-10": {"noise_scheduler_type": "DDIM", "num_inference_steps": 10},
        "DDPM-100": {"noise_scheduler_type": "DDPM", "num_inference_steps": 100},
        "DDIM-10 without EMA": {"noise_scheduler_type": "DDIM", "num_inference_steps": 10, "ema": False},
    },
}
VARIANTS["diffusion_image"] = VARIANTS["diffusion"]


def train(
    policy: str, dataset_root: str, output_dir: Path, minutes: float, seed: int, flags: list[str]
) -> float:
    """Runs the preset (resuming a run in output_dir); returns the wall minutes, start-up included."""
    command = [
        sys.executable, "-m", "policylab.cli", "train", *PRESETS[policy], *COMMON, f"--dataset.root={dataset_root}",
        f"--output_dir={output_dir}", f"--training.max_minutes={minutes}", f"--seed={seed}", *flags,
    ]  # fmt: skip
    if (output_dir / "checkpoints/last").exists():
        command.append("--resume=true")
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=sys.stderr)  # stdout carries this script's JSON only
    return (time.perf_counter() - started) / 60


def training_summary(output_dir: Path) -> dict:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    return {
        "steps": int((output_dir / "checkpoints/last").resolve().name),
        "epochs": losses[-1]["epoch"],
        "final_losses": {k: round(v, 4) for k, v in losses[-1].items() if k.endswith("loss")},
        "mean_samples_per_s": round(sum(r["samples_per_s"] for r in losses) / len(losses)),
    }


def load(checkpoint: Path, overrides: dict) -> PreTrainedPolicy:
    """The checkpoint's policy with inference-time overrides; `ema=False` swaps in the raw weights."""
    overrides = dict(overrides)
    use_ema = overrides.pop("ema", True)
    policy = PreTrainedPolicy.from_pretrained(checkpoint, **overrides)
    if not use_ema:
        policy.load_state_dict(load_file(str(checkpoint / "training_state/model.safetensors")))
    return policy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", choices=list(PRESETS), required=True)
    parser.add_argument("--dataset-root", default="data/pusht")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=29.0)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--variants", help="comma-separated variant names (default: all of the policy's)")
    args, train_flags = parser.parse_known_args()  # other --flags go to policylab train

    results = {
        "training": {"flags": train_flags},
        "eval_seed": args.seed,
        "eval_episodes": args.episodes,
        "variants": {},
    }
    if not args.skip_train:
        minutes = train(
            args.policy, args.dataset_root, args.output_dir, args.minutes, args.train_seed, train_flags
        )
        results["training"]["wall_minutes"] = round(minutes, 1)
    results["training"].update(training_summary(args.output_dir))
    variants = VARIANTS[args.policy]
    for name in args.variants.split(",") if args.variants else variants:
        policy = load(args.output_dir / "checkpoints/last", variants[name])
        metrics = evaluate_policy(
            policy, "pusht", n_episodes=args.episodes, seed=args.seed, batch_size=25, progress=False
        )
        results["variants"][name] = {
            "success_rate": metrics["success_rate"],
            "success_rate_ci95": [round(v, 3) for v in metrics["success_rate_ci95"]],
            "avg_max_reward": round(metrics["avg_max_reward"], 3),
            "avg_steps": round(metrics["avg_steps"], 1),
            "inference_ms_per_step_batch_25": round(metrics["inference_ms_per_step"], 2),
        }
        print(name, json.dumps(results["variants"][name]), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
