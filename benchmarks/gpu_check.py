"""CUDA checks and GPU timings, for a machine with a GPU (CI has none; nothing here is a test).

    python benchmarks/gpu_check.py --work-dir /tmp/gpu_check > gpu_check.json

1. agreement: the same weights and inputs on CPU and on CUDA give the same ACT action chunks, loss and
   gradients, and the same Diffusion samples (DDPM-100 and DDIM-10, noise drawn from one CPU generator) and
   UNet + observation-encoder gradients. Reported as the largest absolute difference.
2. amp: the loss under bfloat16 autocast next to the float32 loss, for both policies.
3. timings, through the real CLI: records a small PushT dataset, trains each configuration for `--steps`
   steps in float32 and with --training.amp=true (samples/s = median of the logged rates after the first
   log), and benchmarks batch-1 inference (`policylab bench`). Configurations: the keypoint CPU presets
   of `make demo`, and the seed's image configurations (ACT dim_model 512, chunk 100, ResNet-18, batch 8;
   Diffusion down_dims [256,512,1024], ResNet-18, crop 84, batch 64).
4. eval: `policylab eval` of the trained keypoint Diffusion policy on CUDA (the full rollout path).

Prints one JSON object.
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

from policylab.policies.act import ACTConfig, ACTPolicy
from policylab.policies.diffusion import DiffusionConfig, DiffusionPolicy

PRESETS_DIR = Path(__file__).parents[1] / "configs/train"
SHAPES = {"observation.state": [2], "observation.environment_state": [16], "observation.image": [3, 96, 96]}
IMAGE_INPUTS = "--policy.input_shapes={observation.image: [3, 96, 96], observation.state: [2]}"
CONFIGS = {  # name: (train flags, bench samplers or None)
    "act_keypoints_preset": ([f"--config_path={PRESETS_DIR / 'act_pusht_keypoints_cpu.json'}"], None),
    "diffusion_keypoints_preset": (
        [f"--config_path={PRESETS_DIR / 'diffusion_pusht_keypoints_cpu.json'}"],
        "[DDPM-100,DDIM-10]",
    ),
    "act_image_seed": (
        [
            "--policy.type=act",
            IMAGE_INPUTS,
            "--policy.chunk_size=100",
            "--policy.n_action_steps=100",
            "--policy.pretrained_backbone=false",
            "--training.batch_size=8",
        ],
        None,
    ),  # fmt: skip
    "diffusion_image_seed": (
        [
            "--policy.type=diffusion",
            IMAGE_INPUTS,
            "--policy.down_dims=[256,512,1024]",
            "--policy.crop_shape=[84,84]",
            "--training.batch_size=64",
        ],
        "[DDPM-100,DDIM-10]",
    ),  # fmt: skip
}


def stats_for(config) -> dict:
    stats = {}
    for key, shape in {**config.input_shapes, **config.output_shapes}.items():
        size = (shape[0], 1, 1) if len(shape) == 3 else tuple(shape)
        stats[key] = {"mean": torch.full(size, 0.5), "std": torch.full(size, 0.25), "min": torch.zeros(size),
                      "max": torch.ones(size)}  # fmt: skip
    return stats


def random_batch(config, batch_size: int, obs_steps: int | None, action_steps: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    time_dims = () if obs_steps is None else (obs_steps,)
    batch = {}
    for key, shape in config.input_shapes.items():
        batch[key] = torch.rand(batch_size, *time_dims, *shape, generator=generator)
        if obs_steps is not None:
            batch[key + "_is_pad"] = torch.zeros(batch_size, obs_steps, dtype=torch.bool)
    batch["action"] = torch.rand(batch_size, action_steps, 2, generator=generator)
    batch["action_is_pad"] = torch.zeros(batch_size, action_steps, dtype=torch.bool)
    batch["action_is_pad"][:, -3:] = True
    return batch


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float().cpu() - b.detach().float().cpu()).abs().max().item()


def grads_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().cpu() for n, p in module.named_parameters() if p.grad is not None}


def largest_grad_diff(a: dict, b: dict) -> dict:
    """Largest absolute gradient difference, and relative to the largest gradient entry."""
    worst = max(max_diff(a[n], b[n]) for n in a)
    scale = max(g.abs().max().item() for g in a.values())
    return {"max_abs": worst, "max_rel_to_largest": worst / scale}


def same_weights(policy_type, config, weights: dict, device: str):
    """Two policies holding `weights`: one on the CPU, one on `device`."""
    pair = []
    for where in ("cpu", device):
        policy = policy_type(config, dataset_stats=stats_for(config))
        policy.load_state_dict(weights)
        pair.append(policy.to(where))
    return pair


def observation_of(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k.startswith("observation") and not k.endswith("_is_pad")}


def act_agreement(device: str) -> dict:
    keys = ["observation.image", "observation.state", "observation.environment_state"]
    common = dict(input_shapes={k: SHAPES[k] for k in keys}, output_shapes={"action": [2]}, dim_model=64,
                  n_heads=4, dim_feedforward=128, chunk_size=10, n_action_steps=10, pretrained_backbone=False,
                  dropout=0.0)  # fmt: skip
    result = {}
    for use_vae in (True, False):
        config = ACTConfig(**common, use_vae=use_vae)
        torch.manual_seed(0)
        weights = ACTPolicy(config, dataset_stats=stats_for(config)).state_dict()
        cpu, gpu = same_weights(ACTPolicy, config, weights, device)
        batch = random_batch(config, 4, None, config.chunk_size)
        chunks = [p.predict_action_chunk(observation_of(batch)) for p in (cpu, gpu)]
        result[f"chunk_{'vae' if use_vae else 'no_vae'}"] = max_diff(*chunks)
        if not use_vae:  # deterministic loss: compare it and its gradients (the VAE draws its own noise)
            losses = [p.forward(batch)["loss"] for p in (cpu, gpu)]
            for loss in losses:
                loss.backward()
            result["loss_abs_diff"] = max_diff(*losses)
            result["grads"] = largest_grad_diff(grads_of(cpu), grads_of(gpu))
    return result


def diffusion_agreement(device: str) -> dict:
    fields = dict(
        input_shapes={k: SHAPES[k] for k in ("observation.image", "observation.state")},
        output_shapes={"action": [2]},
        down_dims=[32, 64],
        crop_shape=[84, 84],
        diffusion_step_embed_dim=32,
    )
    torch.manual_seed(0)
    weights = DiffusionPolicy(
        DiffusionConfig(**fields), dataset_stats=stats_for(DiffusionConfig(**fields))
    ).state_dict()
    result = {}
    for scheduler, steps in (("DDPM", 100), ("DDIM", 10)):
        config = DiffusionConfig(**fields, noise_scheduler_type=scheduler, num_inference_steps=steps)
        cpu, gpu = same_weights(DiffusionPolicy, config, weights, device)
        observation = observation_of(random_batch(config, 4, config.n_obs_steps, config.horizon))
        samples = [p.predict_action_chunk(observation, torch.Generator().manual_seed(1)) for p in (cpu, gpu)]
        result[f"sample_{scheduler}-{steps}"] = max_diff(*samples)
    # UNet + encoder forward/backward on one fixed noisy input (the loss itself draws noise on its device).
    noisy = torch.randn(4, config.horizon, 2, generator=torch.Generator().manual_seed(2))
    timesteps = torch.randint(0, config.num_train_timesteps, (4,), generator=torch.Generator().manual_seed(3))
    outputs = []
    for policy in (cpu, gpu):
        policy.eval()  # centre crop on both sides
        inputs = policy.normalize_inputs({k: v.to(policy.device) for k, v in observation.items()})
        cond = policy.observation_encoder(inputs)
        predicted = policy.unet(noisy.to(policy.device), timesteps.to(policy.device), cond)
        predicted.pow(2).mean().backward()
        outputs.append(predicted)
    result["unet_output"] = max_diff(*outputs)
    result["grads"] = largest_grad_diff(grads_of(cpu), grads_of(gpu))
    return result


def amp_losses(device: str) -> dict:
    """float32 and bfloat16-autocast losses of the same weights and batch on CUDA."""
    configs = {
        "act": ACTConfig(input_shapes={k: SHAPES[k] for k in ("observation.image", "observation.state")},
                         output_shapes={"action": [2]}, chunk_size=100, n_action_steps=100,
                         pretrained_backbone=False, use_vae=False, dropout=0.0),
        "diffusion": DiffusionConfig(input_shapes={k: SHAPES[k] for k in ("observation.image", "observation.state")},
                                     output_shapes={"action": [2]}, crop_shape=[84, 84]),
    }  # fmt: skip
    result = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        policy_type = ACTPolicy if name == "act" else DiffusionPolicy
        policy = policy_type(config, dataset_stats=stats_for(config)).to(device).eval()
        steps = None if name == "act" else config.n_obs_steps
        batch = random_batch(config, 8, steps, config.chunk_size if name == "act" else config.horizon)
        losses = {}
        for precision in ("float32", "bfloat16"):
            torch.manual_seed(1)  # the same diffusion noise on the same device
            with torch.autocast(
                torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16"
            ):
                losses[precision] = policy.forward(batch)["loss"].item()
        losses["relative_diff"] = abs(losses["bfloat16"] - losses["float32"]) / abs(losses["float32"])
        result[name] = losses
    return result


def policylab(*args: str, log: Path) -> float:
    started = time.perf_counter()
    with log.open("a") as out:
        subprocess.run([sys.executable, "-m", "policylab.cli", *args], stdout=out, stderr=out, check=True)
    return time.perf_counter() - started


def training_rate(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if "samples_per_s" in r][1:]  # the first includes warm-up
    return statistics.median(rates)


def timings(work_dir: Path, steps: int, episodes: int, configs: list[str], device: str) -> dict:
    log = work_dir / "cli.log"
    data = work_dir / "pusht"
    result = {"record_s": policylab("record", f"--dataset.root={data}", f"--dataset.num_episodes={episodes}",
                                    "--seed=0", log=log)}  # fmt: skip
    for name in configs:
        flags, samplers = CONFIGS[name]
        entry = {}
        for amp in (False, True) if device.startswith("cuda") else (False,):
            run_dir = work_dir / f"{name}{'_amp' if amp else ''}"
            policylab("train", *flags, f"--dataset.root={data}", f"--output_dir={run_dir}",
                      f"--training.steps={steps}", f"--training.log_freq={max(steps // 10, 1)}",
                      f"--training.save_freq={steps}", f"--training.amp={str(amp).lower()}", f"--device={device}",
                      log=log)  # fmt: skip
            entry["train_samples_per_s_amp" if amp else "train_samples_per_s"] = training_rate(run_dir)
        bench_dir = work_dir / f"{name}_bench"
        bench_flags = [] if samplers is None else [f"--bench.samplers={samplers}"]
        policylab("bench", f"--policy.path={work_dir / name}", f"--output_dir={bench_dir}", f"--device={device}",
                  *bench_flags, log=log)  # fmt: skip
        bench = json.loads((bench_dir / "bench_info.json").read_text())
        entry["inference"] = {
            variant: {
                "chunk_call_ms_p50": v["chunk_call_ms"]["p50"],
                "select_action_ms_mean": v["select_action_ms"]["mean"],
            }
            for variant, v in bench["variants"].items()
        }
        entry["parameters"] = bench["parameters"]
        result[name] = entry
    if "diffusion_keypoints_preset" not in configs:  # the rollout check evaluates that trained policy
        return result
    eval_dir = work_dir / "diffusion_keypoints_eval"
    result["eval_diffusion_keypoints_s"] = policylab(
        "eval", f"--policy.path={work_dir / 'diffusion_keypoints_preset'}", "--eval.n_episodes=10",
        "--eval.n_videos=1", f"--output_dir={eval_dir}", f"--device={device}", log=log,
    )  # fmt: skip
    result["eval_info_keys"] = sorted(json.loads((eval_dir / "eval_info.json").read_text())["aggregated"])
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200, help="training steps per configuration")
    parser.add_argument("--episodes", type=int, default=20, help="episodes to record")
    parser.add_argument(
        "--device", default="cuda", help="compared with the CPU (cpu: a dry run of the checks)"
    )
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                        help="configurations to train and benchmark (none: agreement checks only)")  # fmt: skip
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__}  # fmt: skip
    for name, check in (("act_agreement", act_agreement), ("diffusion_agreement", diffusion_agreement),
                        ("amp_losses", amp_losses)):  # fmt: skip
        report[name] = check(args.device)
        print(json.dumps({name: report[name]}), file=sys.stderr, flush=True)
    report["timings"] = timings(args.work_dir, args.steps, args.episodes, args.configs, args.device)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
