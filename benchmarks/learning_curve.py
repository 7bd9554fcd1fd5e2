"""Learning per CPU-minute: success rate against training minutes, for each policy's CPU preset.

    python benchmarks/learning_curve.py --dataset-root data/pusht --output-dir outputs/curve --minutes 30
    python benchmarks/learning_curve.py --output-dir outputs/curve --skip-train     # evaluate what is there
    python benchmarks/learning_curve.py --policies diffusion ... --training.lr=3e-4  # other flags go to training

Trains each of `--policies` in turn with its CPU preset (`PRESETS`, through `policylab train`, resuming a run
already in OUT/<policy>) for `--minutes`, keeping a checkpoint every
`--save-freq` steps (default: the policy's, about every 7 minutes). Only then, so that evaluation takes no
training time, every kept checkpoint is rolled out for `--episodes` episodes from seed `--seed` with the
preset's way of acting. Its x coordinate is the training-loop time stored in the checkpoint
(`training_state/state.json: train_seconds`), i.e. the minutes spent training up to that step, start-up
and checkpoint writing excluded, plus those of the run's camera-trunk pretraining (OUT/<policy>/pretrain) where
it has one. Every other flag goes to `policylab train` for each policy; one that a
policy's preset cannot take (say --policy.use_vae for diffusion) stops the script before any training.

Writes OUT/learning_curve.png (success with its 95% Wilson interval, and mean max coverage, against
minutes) and prints one JSON object: per policy, per checkpoint, step, minutes, success, interval, coverage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from policylab.errors import FlagError
from policylab.evaluation import evaluate_policy
from policylab.flags import parse_flags
from policylab.policies import PreTrainedPolicy
from policylab.training import TrainConfig

PRESETS_DIR = Path(__file__).parents[1] / "configs/train"
# ACT: its 30-minute preset; Diffusion: the keypoint preset of `make demo`, given 14,000 steps; the image CPU
# presets as they are (camera + agent position, the trunk pretrained first)
PRESETS = {
    "act": [f"--config_path={PRESETS_DIR / 'act_pusht_keypoints_30min_cpu.json'}"],
    "diffusion": [f"--config_path={PRESETS_DIR / 'diffusion_pusht_keypoints_cpu.json'}", "--training.steps=14000"],
    "act_image": [f"--config_path={PRESETS_DIR / 'act_pusht_image_cpu.json'}"],
    "diffusion_image": [f"--config_path={PRESETS_DIR / 'diffusion_pusht_image_cpu.json'}"],
}  # fmt: skip
# steps; ~5.5 (ACT), ~7 (Diffusion) and ~10 minutes (images, with mixed precision) here
SAVE_FREQ = {"act": 725, "diffusion": 3500, "act_image": 700, "diffusion_image": 3600}


def train_command(
    policy: str, dataset_root: str, output_dir: Path, minutes: float, seed: int, flags: list[str]
):
    command = [
        *PRESETS[policy], "--training.log_freq=250", f"--dataset.root={dataset_root}", f"--output_dir={output_dir}",
        f"--training.max_minutes={minutes}", f"--seed={seed}", *flags,
    ]  # fmt: skip
    return command + (["--resume=true"] if (output_dir / "checkpoints/last").exists() else [])


def check_flags(policies: list[str], flags: list[str]) -> None:
    """Every flag must work for every policy asked for, before any of them trains."""
    for name in policies:
        if name not in PRESETS:
            raise SystemExit(f"learning_curve.py: unknown policy '{name}'; choose from {', '.join(PRESETS)}")
        try:
            parse_flags(TrainConfig, [*PRESETS[name], *flags], "policylab train")
        except FlagError as error:
            raise SystemExit(
                f"learning_curve.py: {error} (for --policies {name}; give flags one policy cannot take with "
                "--policies set to the other)"
            ) from None


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints in step order (`last` is a link to one of them)."""
    steps = [p for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
    return sorted(steps, key=lambda p: int(p.name))


def training_minutes(checkpoint: Path) -> float:
    state = json.loads((checkpoint / "training_state/state.json").read_text())
    return state["train_seconds"] / 60


def pretraining_minutes(run_dir: Path) -> float:
    """Minutes the run's camera trunk pretrained before the policy trained (0 without that stage)."""
    last = run_dir / "pretrain" / "checkpoints" / "last"
    return training_minutes(last) if last.exists() else 0.0


def evaluate_checkpoint(checkpoint: Path, episodes: int, seed: int, pretrained_minutes: float) -> dict:
    policy = PreTrainedPolicy.from_pretrained(checkpoint)
    metrics = evaluate_policy(policy, "pusht", n_episodes=episodes, seed=seed, batch_size=25, progress=False)
    return {
        "step": int(checkpoint.name),
        "minutes": round(pretrained_minutes + training_minutes(checkpoint), 2),
        "success_rate": metrics["success_rate"],
        "success_rate_ci95": [round(v, 3) for v in metrics["success_rate_ci95"]],
        "avg_max_reward": round(metrics["avg_max_reward"], 3),
    }


def plot(curves: dict[str, list[dict]], episodes: int, path: Path) -> None:
    figure, (success_axes, coverage_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in curves.items():
        minutes = [p["minutes"] for p in points]
        success = [100 * p["success_rate"] for p in points]
        low = [100 * p["success_rate_ci95"][0] for p in points]
        high = [100 * p["success_rate_ci95"][1] for p in points]
        (line,) = success_axes.plot(minutes, success, marker="o", label=name)
        success_axes.fill_between(minutes, low, high, color=line.get_color(), alpha=0.15)
        coverage_axes.plot(minutes, [p["avg_max_reward"] for p in points], marker="o", label=name)
    success_axes.set(
        xlabel="training minutes", ylabel=f"success % ({episodes} episodes, 95% CI)", ylim=(0, 100)
    )
    coverage_axes.set(xlabel="training minutes", ylabel="mean max coverage", ylim=(0, 1))
    for axes in (success_axes, coverage_axes):
        axes.set_xlim(left=0)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(
        "PushT: learning per training minute on this machine (keypoints + state; _image: camera + state)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policies", default="act,diffusion", help=f"comma-separated: {', '.join(PRESETS)}")
    parser.add_argument("--dataset-root", default="data/pusht")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--save-freq", type=int, help="checkpoint every this many steps (default: per policy)"
    )
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--skip-train", action="store_true")
    return parser


def main() -> None:
    args, train_flags = build_parser().parse_known_args()  # other --flags go to policylab train

    policies = args.policies.split(",")
    check_flags(policies, train_flags)
    curves = {}
    for name in policies:
        run_dir = args.output_dir / name
        if not args.skip_train:
            flags = [f"--training.save_freq={args.save_freq or SAVE_FREQ[name]}", *train_flags]
            command = train_command(name, args.dataset_root, run_dir, args.minutes, args.train_seed, flags)
            # stdout carries this script's JSON only
            subprocess.run(
                [sys.executable, "-m", "policylab.cli", "train", *command], check=True, stdout=sys.stderr
            )
        curves[name] = []
        for checkpoint in checkpoints(run_dir):
            curves[name].append(
                evaluate_checkpoint(checkpoint, args.episodes, args.seed, pretraining_minutes(run_dir))
            )
            print(name, json.dumps(curves[name][-1]), file=sys.stderr)
    path = args.output_dir / "learning_curve.png"
    plot(curves, args.episodes, path)
    print(f"learning curve written to {path}", file=sys.stderr)
    print(json.dumps({"eval_seed": args.seed, "eval_episodes": args.episodes, "curves": curves}, indent=2))


if __name__ == "__main__":
    main()
