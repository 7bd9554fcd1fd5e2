"""One measurement of one tool for benchmarks/vs_lerobot.py, in a fresh process under that tool's interpreter.

    python benchmarks/vs_lerobot_worker.py '{"kind": "train", "tool": "lerobot", "config": "act_seed", ...}'

Holds the two tools behind one interface (`Policylab`, `LeRobot`), the identical model configurations, and the
measurements (matmul rate, dataloader, training step, inference call). Prints the result as one JSON line.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import dataloader  # benchmarks/dataloader.py: the dataloader measurement (this file's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
LEROBOT_REPO_ID = "local/pusht_v21"  # LeRobot wants a repo id; with root given it only names the folder
IMAGE, STATE, KEYPOINTS = "observation.image", "observation.state", "observation.environment_state"
GRAD_CLIP_NORM = 10.0
OBSERVATION_FRAME = 10  # the dataset frame the inference calls observe (episode 0, step 10)


# Identical models in both tools: LeRobot's field names, which policylab shares (backbones start from random
# weights in both: nothing is downloaded). Fields not given keep their defaults, the same in both.
CONFIGS = {
    "act_seed": {
        "policy": "act", "inputs": [IMAGE, STATE], "batch_size": 8, "samplers": ["chunk"],
        "fields": {"dim_model": 512, "chunk_size": 100, "n_action_steps": 100, "vision_backbone": "resnet18"},
    },
    "diffusion_seed": {
        "policy": "diffusion", "inputs": [IMAGE, STATE], "batch_size": 64, "samplers": ["DDPM-100", "DDIM-10"],
        "fields": {"down_dims": [256, 512, 1024], "horizon": 16, "n_obs_steps": 2, "n_action_steps": 8,
                   "vision_backbone": "resnet18", "crop_shape": [84, 84]},
    },
    "diffusion_small": {  # the CPU preset (configs/train/diffusion_pusht_keypoints_cpu.json): no camera
        "policy": "diffusion", "inputs": [KEYPOINTS, STATE], "batch_size": 256, "samplers": ["DDPM-100", "DDIM-10"],
        "fields": {"down_dims": [32, 64, 128], "horizon": 16, "n_obs_steps": 2, "n_action_steps": 8,
                   "prediction_type": "sample"},
    },
}  # fmt: skip
SAMPLERS = {
    "chunk": {},
    "DDPM-100": {"noise_scheduler_type": "DDPM", "num_inference_steps": 100},
    "DDIM-10": {"noise_scheduler_type": "DDIM", "num_inference_steps": 10},
}


# ---------------------------------------------------------------------------------------------------------
# The two tools behind one interface (runs in the worker, under the tool's own interpreter)
# ---------------------------------------------------------------------------------------------------------
class Policylab:
    """policylab's dataset and policies, used as its README shows (`policylab train` for the dataset)."""

    def __init__(self, root: str):
        from policylab.datasets import LeRobotDatasetMetadata

        self.root = root
        self.meta = LeRobotDatasetMetadata(root)

    def versions(self) -> dict:
        from importlib.metadata import version

        return {"policylab": version("policylab")}

    def config(self, spec: dict, sampler: str = "DDPM-100"):
        from policylab.policies import ACTConfig, DiffusionConfig

        config_class = ACTConfig if spec["policy"] == "act" else DiffusionConfig
        no_download = {"pretrained_backbone": False} if spec["policy"] == "act" else {}
        fields = {
            **spec["fields"],
            **no_download,
            **(SAMPLERS[sampler] if spec["policy"] == "diffusion" else {}),
        }
        shapes = config_class().with_dataset_features(self.meta.features).input_shapes
        config = config_class(input_shapes={key: shapes[key] for key in spec["inputs"]}, **fields)
        return config.with_dataset_features(self.meta.features)

    def policy(self, spec: dict, sampler: str = "DDPM-100"):
        from policylab.policies import PreTrainedPolicy

        config = self.config(spec, sampler)
        return PreTrainedPolicy.policy_class(config)(config, dataset_stats=self.meta.stats)

    def training_dataset(self, spec: dict):
        """As `policylab train` sets it up: the policy's windows, and only its cameras decoded."""
        from policylab.datasets import LeRobotDataset

        config = self.config(spec)
        return LeRobotDataset(
            root=self.root, delta_timestamps=config.delta_timestamps(self.meta.fps), cameras=config.image_keys
        )

    def observation(self, spec: dict, index: int) -> dict:
        from policylab.datasets import LeRobotDataset

        item = LeRobotDataset(root=self.root, cameras=self.config(spec).image_keys)[index]
        return {key: item[key].unsqueeze(0) for key in spec["inputs"]}

    def loss(self, policy, batch: dict):
        return policy.forward(batch)["loss"]

    def chunk(self, policy, observation: dict):
        return policy.predict_action_chunk(observation)


class LeRobot:
    """LeRobot 0.3.2's dataset and policies, built as its `make_policy` and train script build them."""

    def __init__(self, root: str):
        from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
        from lerobot.datasets.utils import dataset_to_policy_features

        self.root = root
        self.meta = LeRobotDatasetMetadata(LEROBOT_REPO_ID, root=root)
        self.features = dataset_to_policy_features(self.meta.features)

    def versions(self) -> dict:
        from importlib.metadata import version

        return {"lerobot": version("lerobot")}

    def config(self, spec: dict, sampler: str = "DDPM-100"):
        from lerobot.configs.types import FeatureType
        from lerobot.policies.act.configuration_act import ACTConfig
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

        config_class = ACTConfig if spec["policy"] == "act" else DiffusionConfig
        fields = {key: tuple(v) if isinstance(v, list) else v for key, v in spec["fields"].items()}
        if spec["policy"] == "diffusion":
            fields.update(SAMPLERS[sampler])
        config = config_class(
            device="cpu",
            pretrained_backbone_weights=None,
            input_features={key: self.features[key] for key in spec["inputs"]},
            output_features={k: f for k, f in self.features.items() if f.type is FeatureType.ACTION},
            **fields,
        )
        # LeRobot leaves keypoints (FeatureType.ENV) un-normalized unless mapped; policylab normalizes them as
        # state, so map them the same way (an elementwise op either way).
        config.normalization_mapping = {
            **config.normalization_mapping,
            "ENV": config.normalization_mapping["STATE"],
        }
        return config

    def policy(self, spec: dict, sampler: str = "DDPM-100"):
        from lerobot.policies.factory import get_policy_class

        config = self.config(spec, sampler)
        return get_policy_class(config.type)(config, dataset_stats=self.meta.stats)

    def training_dataset(self, spec: dict):
        """As LeRobot's train script sets it up: windows for every observation key, every camera decoded."""
        from lerobot.datasets.factory import resolve_delta_timestamps
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        windows = resolve_delta_timestamps(self.config(spec), self.meta)
        return LeRobotDataset(LEROBOT_REPO_ID, root=self.root, delta_timestamps=windows)

    def observation(self, spec: dict, index: int) -> dict:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        item = LeRobotDataset(LEROBOT_REPO_ID, root=self.root)[index]
        return {key: item[key].unsqueeze(0) for key in spec["inputs"]}

    def loss(self, policy, batch: dict):
        return policy.forward(batch)[0]  # LeRobot 0.3.2: (loss, dict of logged values)

    def chunk(self, policy, observation: dict):
        if policy.config.type == "act":
            return policy.predict_action_chunk(observation)
        policy.reset()  # empty action queue: this call samples a whole horizon
        return policy.select_action(dict(observation))


# ---------------------------------------------------------------------------------------------------------
# Measurements (worker side)
# ---------------------------------------------------------------------------------------------------------
def count_flops(run) -> int:
    """FLOPs of run() as FlopCounterMode counts them, plus attention on CPU (fused there into a kernel the
    counter does not know; the same formula as its other attention kernels)."""
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu: (
            lambda query, key, value, *_, out_shape=None, **__: flop_counter.sdpa_flop_count(
                query, key, value
            )
        ),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            lambda grad, query, key, value, *_, out_shape=None, **__: flop_counter.sdpa_backward_flop_count(
                grad, query, key, value
            )
        ),
    }
    with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        run()
    return counter.get_total_flops()


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def measure_matmul(size: int) -> dict:
    import numpy
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = []
    for repetition in range(13):
        started = time.perf_counter()
        torch.mm(a, b)
        if repetition >= 3:
            seconds.append(time.perf_counter() - started)
    return {
        "gflops": round(2 * size**3 / statistics.median(seconds) / 1e9, 2),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }


def endless(loader):
    while True:
        yield from loader


def measure_training(
    tool, spec: dict, batch_size: int, steps: int, warmup: int, num_workers: int, amp: bool
) -> dict:
    import torch

    # both tools' mixed precision on a CPU (policylab --training.amp, LeRobot --policy.use_amp)
    precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp)

    torch.manual_seed(0)
    policy = tool.policy(spec)
    policy.train()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4)
    dataset = tool.training_dataset(spec)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True
    )
    batches = endless(loader)
    step_seconds, model_seconds = [], []
    for step in range(warmup + steps):
        started = time.perf_counter()
        batch = next(batches)
        got_batch = time.perf_counter()
        with precision:
            loss = tool.loss(policy, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), GRAD_CLIP_NORM)
        optimizer.step()
        optimizer.zero_grad()
        if step >= warmup:
            step_seconds.append(time.perf_counter() - started)
            model_seconds.append(time.perf_counter() - got_batch)

    losses = []
    forward = count_flops(lambda: losses.append(tool.loss(policy, batch)))
    backward = count_flops(lambda: losses[0].backward())
    optimizer.zero_grad()
    return {
        "samples_per_s": batch_size / statistics.median(step_seconds),
        "model_samples_per_s": batch_size / statistics.median(model_seconds),
        "batch_wait_fraction": 1 - sum(model_seconds) / sum(step_seconds),
        "forward_flops_per_sample": forward / batch_size,
        "train_flops_per_sample": (forward + backward) / batch_size,
        "parameters": sum(p.numel() for p in trainable),
        "dataset_frames": len(dataset),
        "steps_timed": len(step_seconds),
    }


def measure_inference(tool, spec: dict, calls: int, warmup: int, compile_networks: bool) -> dict:
    import torch

    observation = tool.observation(spec, index=OBSERVATION_FRAME)
    results = {}
    for sampler in spec["samplers"]:
        torch.manual_seed(0)
        policy = tool.policy(spec, sampler).requires_grad_(False)  # (FlopCounterMode needs it under no_grad)
        policy.eval()
        with torch.no_grad():
            flops = count_flops(lambda: tool.chunk(policy, observation))  # noqa: B023 (called right here)
        if compile_networks:  # policylab's `--bench.compile=true`; the warm-up calls compile
            policy.compile_for_inference()
        for _ in range(warmup):
            tool.chunk(policy, observation)
        seconds = []
        for _ in range(calls):
            started = time.perf_counter()
            tool.chunk(policy, observation)
            seconds.append(time.perf_counter() - started)
        results[sampler] = {
            "p50_ms": percentile(seconds, 50) * 1e3,
            "p95_ms": percentile(seconds, 95) * 1e3,
            "flops_per_call": flops,
        }
    return results


def run_worker(job: dict) -> dict:
    """One measurement of one tool in this fresh process; returns what the driver prints."""
    import torch

    torch.set_num_threads(job["threads"])
    if job["keep_freed_memory"]:  # policylab's glibc setting, loaded from its file so both tools get the same
        import importlib.util

        spec = importlib.util.spec_from_file_location("memory", REPO / "src/policylab/utils/memory.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.keep_freed_memory()
    if job["kind"] == "matmul":
        tool = Policylab(job["root"]) if job["tool"] == "policylab" else LeRobot(job["root"])
        return {
            **measure_matmul(job["matmul_size"]),
            **tool.versions(),
            "torch_threads": torch.get_num_threads(),
        }
    if job["kind"] == "dataloader":
        # each tool's training data path: policylab's stream, LeRobot's DataLoader over its dataset
        loader = "policylab_stream" if job["tool"] == "policylab" else job["tool"]
        measured = dataloader.measure(
            loader, job["root"], job["batch_size"], job["num_workers"], job["min_seconds"]
        )
        return {windows: figures["samples_per_s"] for windows, figures in measured.items()}
    tool = Policylab(job["root"]) if job["tool"] == "policylab" else LeRobot(job["root"])
    spec = CONFIGS[job["config"]]
    if job["kind"] == "train":
        return measure_training(
            tool, spec, job["batch_size"], job["steps"], job["warmup"], job["num_workers"], job["amp"]
        )
    compile_networks = job["policylab_compile"] and job["tool"] == "policylab"
    return measure_inference(tool, spec, job["calls"], job["warmup"], compile_networks)


if __name__ == "__main__":
    print(json.dumps(run_worker(json.loads(sys.argv[1]))))
