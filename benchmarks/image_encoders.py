"""Camera encoders on a CPU: training samples/s and batch-1 latency of each encoder choice of the image presets.

    python benchmarks/image_encoders.py --dataset-root data/pusht_images --output-dir outputs/image_encoders
    python benchmarks/image_encoders.py ... --variants act_small_cnn_64,act_resnet18 --steps 12

Each variant (`VARIANTS`) is an image CPU preset (configs/train/*_image_cpu.json, its batch size) with a few flags:
ResNet-18 as the seed configurations use it, the small CNN trained or frozen, in float32 or bfloat16 mixed precision,
at 96 or 64 px. Each trains `--steps` steps through `policylab train` in a process of its own, the trunk's
pretraining left out (speed does not depend on the weights); its rate is the median of the samples/s the trainer
logged every `--log-freq` steps, the first log left out (warm-up). Then `policylab bench` times that run's
checkpoint at batch 1 (a chunk call: the model's whole inference; a control step: select_action's mean); for
Diffusion also select_action with its history frames' features cached and recomputed, at the preset's
n_action_steps and at 1. The cached variants compute the frozen trunk's features once before training (not in the
samples/s; the trainer counts it in the run's training time). Variants with mixed precision are skipped on a CPU without native bfloat16. Nothing else should run on the machine meanwhile.

Prints one JSON object: per variant, its flags, samples/s, peak memory, chunk-call and control-step milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from policylab.runs import Checkpoint
from policylab.utils.device import cpu_has_native_bfloat16

PRESETS_DIR = Path(__file__).parents[1] / "configs/train"
AMP = "--training.amp=true"
FROZEN = "--training.lr_backbone=0"
CACHED, NOT_CACHED = "--training.cache_features=true", "--training.cache_features=false"
SMALL_CNN = "--policy.vision_backbone=small_cnn"
RESNET18 = "--policy.vision_backbone=resnet18"
VARIANTS = {
    "diffusion_resnet18": ("diffusion", [RESNET18, NOT_CACHED]),
    "diffusion_resnet18_amp": ("diffusion", [RESNET18, AMP, NOT_CACHED]),
    "diffusion_small_cnn": ("diffusion", [SMALL_CNN, NOT_CACHED]),
    "diffusion_small_cnn_amp": ("diffusion", [SMALL_CNN, AMP, NOT_CACHED]),
    "diffusion_small_cnn_frozen": ("diffusion", [SMALL_CNN, FROZEN, NOT_CACHED]),
    "diffusion_small_cnn_frozen_amp": ("diffusion", [SMALL_CNN, FROZEN, AMP, NOT_CACHED]),
    "diffusion_small_cnn_cached": ("diffusion", [SMALL_CNN, FROZEN, CACHED]),
    "diffusion_small_cnn_cached_amp": ("diffusion", [SMALL_CNN, FROZEN, CACHED, AMP]),  # the preset
    "act_resnet18_amp": ("act", [RESNET18, "--policy.resize_shape=null", AMP]),
    "act_small_cnn_96_frozen_amp": ("act", [SMALL_CNN, "--policy.resize_shape=null", FROZEN, AMP]),
    "act_small_cnn_64_frozen": ("act", [SMALL_CNN, FROZEN]),
    "act_small_cnn_64_frozen_amp": ("act", [SMALL_CNN, FROZEN, AMP]),  # the preset
}  # fmt: skip


def measure(name: str, args: argparse.Namespace) -> dict:
    policy, flags = VARIANTS[name]
    dataset_root, out, steps, log_freq = args.dataset_root, args.output_dir, args.steps, args.log_freq
    if args.batch_size is not None:
        flags = [*flags, f"--training.batch_size={args.batch_size}"]
    run_dir = out / name
    train = [
        f"--config_path={PRESETS_DIR / f'{policy}_pusht_image_cpu.json'}", f"--dataset.root={dataset_root}",
        f"--output_dir={run_dir}", f"--training.steps={steps}", f"--training.log_freq={log_freq}",
        f"--training.save_freq={steps}", "--pretrain.steps=0", *flags,
    ]  # fmt: skip
    policylab("train", *train)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records[1:]] or [records[-1]["samples_per_s"]]
    samplers = ["--bench.samplers=[DDIM-10]"] if policy == "diffusion" else []  # the presets' sampler
    policylab("bench", f"--policy.path={run_dir}", f"--bench.n_calls={args.n_calls}", "--bench.control_steps=40",
              *samplers, f"--output_dir={run_dir / 'bench'}")  # fmt: skip
    (variant,) = json.loads((run_dir / "bench" / "bench_info.json").read_text())["variants"].values()
    result = {
        "flags": flags,
        "samples_per_s": round(statistics.median(rates), 1),
        "train_peak_memory_mb": round(max(r["peak_memory_mb"] for r in records), 1),
        "chunk_call_ms": round(variant["chunk_call_ms"]["p50"], 2),
        "control_step_ms": round(variant["select_action_ms"]["mean"], 3),
    }
    if policy == "diffusion":
        result["frame_cache_control_step_ms"] = frame_cache_ms(run_dir, args.n_calls)
    return result


@torch.no_grad()
def frame_cache_ms(run_dir: Path, control_steps: int) -> dict[str, float]:
    """Batch-1 ms per control step of select_action with each history frame encoded once (cached) and with every
    window's frames encoded (uncached), at the preset's n_action_steps and at 1 (a new chunk every step)."""
    policy = Checkpoint.resolve(run_dir).load("cpu")
    shapes = policy.config.input_shapes
    observations = [{k: torch.rand(1, *shape) for k, shape in shapes.items()} for _ in range(control_steps)]
    out = {}
    for n_action_steps in (policy.config.n_action_steps, 1):
        policy.config.n_action_steps = n_action_steps
        for cached in (True, False):
            for _ in range(2):  # a warm-up pass, then the timed one
                policy.reset()
                start = time.perf_counter()
                for observation in observations:
                    if not cached:
                        policy.frame_features.known.clear()
                    policy.select_action(observation)
                seconds = time.perf_counter() - start
            name = f"n_action_steps_{n_action_steps}_{'cached' if cached else 'uncached'}"
            out[name] = round(1000 * seconds / control_steps, 3)
    return out


def policylab(command: str, *flags: str) -> None:
    """A policylab command in its own process; its output goes to stderr (stdout carries this script's JSON)."""
    subprocess.run([sys.executable, "-m", "policylab.cli", command, *flags], check=True, stdout=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset-root", required=True, help="a PushT recording with camera frames")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--log-freq", type=int, default=4)
    parser.add_argument("--n-calls", type=int, default=20)
    parser.add_argument("--batch-size", type=int, help="instead of the presets' (256)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(
            f"image_encoders.py: unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}"
        )
    native = cpu_has_native_bfloat16()
    results = {}
    for name in names:
        if AMP in VARIANTS[name][1] and not native:
            results[name] = {"skipped": "this CPU has no native bfloat16 (AVX512-BF16 or AMX)"}
            continue
        results[name] = measure(name, args)
        print(name, json.dumps(results[name]), file=sys.stderr)
    print(json.dumps({"steps": args.steps, "variants": results}, indent=2))


if __name__ == "__main__":
    main()
