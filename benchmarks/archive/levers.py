"""Speed levers (issue 8): each one measured against policylab's current training step and inference call, on
the same models as benchmarks/vs_lerobot.py, each measurement in a fresh process.

    python benchmarks/levers.py --dataset-root data/pusht            # every config, every lever (~15 min)
    python benchmarks/levers.py --dataset-root data/pusht --configs diffusion_small --levers base,compile

Training step = what `policylab train` does per step on a batch already in memory: forward, backward, clip the
gradient norm, AdamW step, zero the gradients, and for Diffusion the EMA update. `base` is torch's default AdamW
(on CPU the per-parameter for-loop) and diffusers' EMAModel (also a for-loop). Inference = `predict_action_chunk`
at batch 1. Levers, each alone against `base`:

    adamw_foreach / adamw_fused   AdamW(foreach=True) / AdamW(fused=True) instead of the default
    ema_foreach                   EMAModel(foreach=True) (Diffusion)
    channels_last                 convolution weights and images in channels-last memory format (camera configs)
    compile                       training: nn.Module.compile() (inductor) on the whole policy;
                                  inference: `policy.compile_for_inference()` (the UNet / the ACT model)
    compile_networks              training: compile only the networks inference compiles (no Python checks,
                                  no scheduler code in the graph)
    threads_1                     torch.set_num_threads(1) instead of 2
    autocast_bf16                 the forward pass under torch.autocast("cpu", bfloat16), as --training.amp=true
                                  does (the backward follows its dtypes): matmuls and convolutions in bfloat16,
                                  weights and optimizer in float32

Prints one JSON object: per config, per lever, the median milliseconds and the speed-up over `base`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # the maintained benchmarks, one folder up
# the identical model configurations of the LeRobot comparison
from vs_lerobot import run_in_fresh_process  # noqa: E402
from vs_lerobot_worker import CONFIGS, Policylab  # noqa: E402

TRAIN_LEVERS = [
    "base", "adamw_foreach", "adamw_fused", "ema_foreach", "channels_last", "compile", "compile_networks", "threads_1",
    "autocast_bf16",
]  # fmt: skip
INFERENCE_LEVERS = ["base", "channels_last", "compile", "threads_1", "autocast_bf16"]
SAMPLERS = {"act_seed": ["chunk"], "diffusion_seed": ["DDIM-10"], "diffusion_small": ["DDIM-10", "DDPM-100"]}
STEPS = {"act_seed": 10, "diffusion_seed": 6, "diffusion_small": 30}  # timed training steps after warm-up
CALLS = {"chunk": 30, "DDIM-10": 30, "DDPM-100": 10}  # timed inference calls after warm-up


def applies(config: str, lever: str) -> bool:
    has_camera = any(key.startswith("observation.image") for key in CONFIGS[config]["inputs"])
    if lever == "channels_last":
        return has_camera
    if lever == "ema_foreach":
        return CONFIGS[config]["policy"] == "diffusion"
    return True


def to_channels_last(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Images (..., C, H, W) in channels-last order; other tensors unchanged."""
    out = {}
    for key, value in batch.items():
        if key.startswith("observation.image") and value.dim() >= 4:
            flat = value.reshape(-1, *value.shape[-3:]).contiguous(memory_format=torch.channels_last)
            value = flat.view(value.shape)  # (B, [T,] C, H, W) with channels-last strides per image
        out[key] = value
    return out


def autocast(lever: str):
    """bfloat16 autocast for the `autocast_bf16` lever, a no-op context otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=lever == "autocast_bf16")


def median_ms(run, warmup: int, timed: int) -> float:
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(timed):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1e3


def training_step_ms(tool: Policylab, config: str, lever: str) -> dict:
    from diffusers.training_utils import EMAModel

    spec = CONFIGS[config]
    torch.manual_seed(0)
    policy = tool.policy(spec)
    policy.train()
    loader = torch.utils.data.DataLoader(
        tool.training_dataset(spec), batch_size=spec["batch_size"], shuffle=True, drop_last=True
    )
    batches = list(itertools.islice(loader, 4))  # in memory: the step alone is timed
    if lever == "channels_last":
        policy.to(memory_format=torch.channels_last)
        batches = [to_channels_last(batch) for batch in batches]
    if lever == "compile":
        policy.compile()
    if lever == "compile_networks":
        policy.compile_for_inference()
    optimizer_kind = {"adamw_foreach": {"foreach": True}, "adamw_fused": {"fused": True}}.get(lever, {})
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-4, **optimizer_kind)
    ema = None
    if spec["policy"] == "diffusion":
        ema = EMAModel(
            policy.parameters(), decay=0.9999, use_ema_warmup=True, power=0.75, foreach=lever == "ema_foreach"
        )
    step = iter(range(10**9))

    precision = autocast(lever)

    def run() -> None:
        batch = batches[next(step) % len(batches)]
        with precision:
            loss = policy(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(policy.parameters())

    return {"ms": median_ms(run, warmup=3, timed=STEPS[config]), "batch_size": spec["batch_size"]}


def inference_ms(tool: Policylab, config: str, lever: str, sampler: str) -> dict:
    spec = CONFIGS[config]
    torch.manual_seed(0)
    policy = tool.policy(spec, sampler).requires_grad_(False)
    policy.eval()
    observation = tool.observation(spec, index=10)
    if lever == "channels_last":
        policy.to(memory_format=torch.channels_last)
        observation = to_channels_last(observation)
    if lever == "compile":
        policy.compile_for_inference()
    precision = autocast(lever)

    def run() -> None:
        with precision:
            policy.predict_action_chunk(observation)

    return {"ms": median_ms(run, warmup=3, timed=CALLS[sampler])}


def run_job(job: dict) -> dict:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # set by in_fresh_process
    tool = Policylab(job["root"])
    if job["kind"] == "train":
        return training_step_ms(tool, job["config"], job["lever"])
    return inference_ms(tool, job["config"], job["lever"], job["sampler"])


def in_fresh_process(job: dict) -> dict:
    threads = 1 if job["lever"] == "threads_1" else 2
    return run_in_fresh_process([sys.executable, __file__, "--job"], job, threads)


def with_speedups(results: dict) -> dict:
    """{lever: ms} -> {lever: {"ms", "speedup"}} (speed-up = base ms / lever ms)."""
    base = results.get("base", {}).get("ms")
    out = {}
    for lever, result in results.items():
        if "ms" in result and base:
            result = {**result, "ms": round(result["ms"], 2), "speedup": round(base / result["ms"], 3)}
        out[lever] = result
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset-root", help="a PushT dataset recorded by `policylab record` (with images)")
    parser.add_argument(
        "--configs", default=",".join(SAMPLERS), help=f"comma-separated, from {list(SAMPLERS)}"
    )
    parser.add_argument(
        "--levers", default=",".join(TRAIN_LEVERS), help=f"comma-separated, from {TRAIN_LEVERS}"
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: train, inference")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: one measurement in this process
    args = parser.parse_args()
    if args.job:
        print(json.dumps(run_job(json.loads(args.job))))
        return
    if not args.dataset_root or not Path(args.dataset_root, "meta/info.json").is_file():
        parser.error(f"--dataset-root={args.dataset_root}: expected a dataset folder with meta/info.json")
    levers, skip = args.levers.split(","), set(filter(None, args.skip.split(",")))
    unknown = [name for name in [*levers, *args.configs.split(",")] if name not in {*TRAIN_LEVERS, *SAMPLERS}]
    if unknown:
        parser.error(f"unknown config or lever {unknown}; configs {list(SAMPLERS)}, levers {TRAIN_LEVERS}")
    report = {"torch": torch.__version__, "threads_base": 2, "training_step": {}, "inference": {}}
    for config in args.configs.split(","):
        common = {"root": args.dataset_root, "config": config}
        if "train" not in skip:
            measured = {
                lever: in_fresh_process({**common, "kind": "train", "lever": lever})
                for lever in levers
                if applies(config, lever)
            }
            report["training_step"][config] = with_speedups(measured)
        if "inference" not in skip:
            for sampler in SAMPLERS[config]:
                measured = {
                    lever: in_fresh_process(
                        {**common, "kind": "inference", "lever": lever, "sampler": sampler}
                    )
                    for lever in levers
                    if lever in INFERENCE_LEVERS and applies(config, lever)
                }
                report["inference"][f"{config} {sampler}"] = with_speedups(measured)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
