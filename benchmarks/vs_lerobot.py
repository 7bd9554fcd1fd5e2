"""policylab vs LeRobot 0.3.2, side by side on this machine: dataloader, training and inference speed on the
same dataset and identical model configurations, with each figure as a fraction of the CPU's matmul rate.

    python benchmarks/vs_lerobot.py                                   # everything (sets itself up, see below)
    python benchmarks/vs_lerobot.py --lerobot-venv /work/side/lerobot032 --dataset-root /tmp/vs/pusht_v21
    python benchmarks/vs_lerobot.py --parts train,infer --configs diffusion_small --steps 50
    python benchmarks/vs_lerobot.py --dataset-root /tmp/vs/tiny --episodes 5 --threads 1 --steps 2 \\
        --warmup 1 --debug-batch-size 2 --infer-calls 2 --infer-warmup 1 --loader-seconds 0.5   # check the script

Run it with policylab's interpreter (.venv/bin/python). Setup, each step skipped when already done:

    LeRobot    a separate venv, never a dependency of policylab (--lerobot-venv, default /tmp/vs/lerobot-venv):
               `python3.11 -m venv DIR` and `pip install "lerobot[pusht]==0.3.2" "numpy<2.3" "torch==2.14.1"
               "torchvision==0.29.1"`, the same torch as policylab's venv (needs ~7 GB of disk: the torch
               wheel brings CUDA libraries). LeRobot runs with HF_HUB_OFFLINE=1.
    data       PushT demonstrations recorded by `policylab record --dataset.codebase_version=v2.1` (image,
               keypoints, state; the layout LeRobot 0.3.2 reads) into --dataset-root; both tools read that
               folder as it is.

Every measurement runs in a fresh process (`vs_lerobot_worker.py`) under the tool's own interpreter,
policylab first and LeRobot right after, with the same torch thread count (--threads; OMP/MKL alike):

    matmul      fp32 GFLOP/s of an NxN matmul (median of 10 after 3 warm-ups) in each venv: the reference
                the other figures are a fraction of
    dataloader  samples/s of Diffusion Policy and ACT windows, num_workers 0 and 2, each tool's training data
                path (benchmarks/dataloader.py's measurement, imported): LeRobot's LeRobotDataset through a
                shuffling DataLoader as its train script builds it, policylab's training stream (batches
                gathered whole, camera frames passed as uint8 and scaled after the loader, timed)
    train       samples/s = batch size / median step time over --steps steps after --warmup: next batch from
                the tool's own LeRobotDataset (set up as its train script does) through a DataLoader (shuffle,
                --train-num-workers), loss from policy.forward, backward, gradient clipping to norm 10, AdamW
                step; also the same without the batch wait (model step only). With --amp the forward pass
                runs under torch.autocast("cpu", bfloat16) in both tools, as each one's mixed-precision
                flag does on a CPU (FLOPs and fractions still count against the fp32 matmul rate)
    infer       batch-1 latency p50/p95 in ms over --infer-calls calls after --infer-warmup, on a dataset
                frame: the call that makes a whole chunk (ACT: predict_action_chunk in both; Diffusion: one
                full sampling of the horizon, policylab's predict_action_chunk and LeRobot's reset() +
                select_action(), whose predict_action_chunk needs the observation queue select_action fills)

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions and attention, for
which on CPU this script adds the counter's own formula; not elementwise ops or the optimizer): training = the
forward plus the backward actually run on one batch (about 3x the forward), per sample; inference = one chunk
call. A fraction of the matmul rate is achieved FLOP/s
(samples/s x FLOPs per sample, or FLOPs per call / p50) over the CPU's matmul rate, the mean of the two venvs'
measurements (the same torch build: they differ by noise only).

Prints one JSON object: per figure {"policylab": x, "lerobot": y, "ratio": x / y} (latencies carry
"lower_is_better": true: there a ratio below 1 means policylab is faster), plus the machine, versions and
settings. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import dataloader  # benchmarks/dataloader.py (this file's folder is on sys.path)
from vs_lerobot_worker import CONFIGS  # the measurements themselves, run in fresh processes

WORKER = Path(__file__).with_name("vs_lerobot_worker.py")
BASE_PYTHON = "/root/.pyenv/versions/3.11.7/bin/python"
TORCH = "2.14.1"  # policylab's: both tools run the same torch build
LEROBOT_REQUIREMENTS = ["lerobot[pusht]==0.3.2", "numpy<2.3", f"torch=={TORCH}", "torchvision==0.29.1"]
VENV_DISK_GB = 8  # LeRobot's venv takes ~6.8 GB, most of it CUDA libraries torch's wheel depends on
TOOLS = ("policylab", "lerobot")
PARTS = ("dataloader", "train", "infer")


def log(message: str) -> None:
    print(f"[vs_lerobot {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Driver: setup, one fresh process per tool and measurement, the report
# ---------------------------------------------------------------------------------------------------------
def ensure_lerobot_venv(venv: Path, base_python: str) -> Path:
    python = venv / "bin/python"
    if python.exists():
        return python
    existing = next(folder for folder in (venv, *venv.parents) if folder.exists())
    free_gb = shutil.disk_usage(existing).free / 1e9
    if free_gb < VENV_DISK_GB:
        raise SystemExit(
            f"creating LeRobot's venv in {venv} needs about {VENV_DISK_GB} GB of disk (torch {TORCH} brings its "
            f"CUDA libraries), {free_gb:.1f} GB are free: free some, or pass --lerobot-venv an existing venv"
        )
    log(f"creating LeRobot's venv {venv} with {base_python}")
    try:
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True, stdout=sys.stderr)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--no-cache-dir", *LEROBOT_REQUIREMENTS],
            check=True, stdout=sys.stderr,
        )  # fmt: skip
    except subprocess.CalledProcessError:
        shutil.rmtree(venv, ignore_errors=True)  # half a venv would pass for a whole one next time
        raise
    return python


def ensure_dataset(root: Path, episodes: int) -> dict:
    """meta/info.json of the dataset at root, recorded by policylab first when there is none."""
    if not (root / "meta/info.json").exists():
        log(f"recording {episodes} PushT episodes into {root} (LeRobot v2.1 layout)")
        subprocess.run(
            [sys.executable, "-m", "policylab.cli", "record", f"--dataset.root={root}",
             f"--dataset.num_episodes={episodes}", "--dataset.codebase_version=v2.1", "--seed=0"],
            check=True, stdout=sys.stderr,
        )  # fmt: skip
    info = json.loads((root / "meta/info.json").read_text())
    if info["codebase_version"] != "v2.1":
        raise SystemExit(f"{root} is a {info['codebase_version']} dataset; LeRobot 0.3.2 reads v2.1 only")
    return info


def run_in_fresh_process(command: list[str], job: dict, threads: int) -> dict:
    """Runs `command` with the job's JSON as its last argument (stderr passed through); the result its last
    stdout line holds, or {"error": ...} if the worker failed."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
    }
    process = subprocess.Popen(
        [*command, json.dumps(job)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    last_lines = collections.deque(maxlen=3)
    for line in process.stderr:  # the worker's stdout is one short line: no risk of a full pipe meanwhile
        sys.stderr.write(line)
        if line.strip():
            last_lines.append(line.strip())
    output = process.stdout.read()
    if process.wait() != 0:
        return {"error": f"worker exited {process.returncode}: " + " | ".join(last_lines)}
    return json.loads(output.strip().splitlines()[-1])


def pair(policylab: float | None, lerobot: float | None, digits: int, lower_is_better: bool = False) -> dict:
    figure = {
        "policylab": None if policylab is None else round(policylab, digits),
        "lerobot": None if lerobot is None else round(lerobot, digits),
        "ratio": round(policylab / lerobot, 3) if policylab and lerobot else None,
    }
    if lower_is_better:
        figure["lower_is_better"] = True
    return figure


def pick(results: dict, *keys):
    """results[tool][k1][k2]... for each tool, None where the run failed."""
    values = []
    for tool in TOOLS:
        value = results[tool]
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value)
    return values


def machine_info() -> dict:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return {"cpu": model, "cpu_count": os.cpu_count(), "platform": platform.platform()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lerobot-venv", type=Path, default=Path("/tmp/vs/lerobot-venv"))
    parser.add_argument(
        "--base-python", default=BASE_PYTHON, help="Python 3.11 to create the LeRobot venv with"
    )
    parser.add_argument("--dataset-root", type=Path, default=Path("/tmp/vs/pusht_v21"))
    parser.add_argument(
        "--episodes", type=int, default=50, help="episodes to record when there is no dataset"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every measurement")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, of: {', '.join(CONFIGS)}"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before timing")
    parser.add_argument("--train-num-workers", type=int, default=0, help="DataLoader workers in training")
    parser.add_argument(
        "--amp", action="store_true",
        help="train in both tools with their mixed precision (policylab --training.amp=true, LeRobot "
        "--policy.use_amp=true: on a CPU both autocast the forward pass to bfloat16)",
    )  # fmt: skip
    parser.add_argument(
        "--debug-batch-size", type=int, help="every training batch this size (not the seeds')"
    )
    parser.add_argument("--infer-calls", type=int, default=20, help="timed batch-1 calls per sampler")
    parser.add_argument("--infer-warmup", type=int, default=3)
    parser.add_argument(
        "--policylab-compile", action="store_true",
        help="policylab's inference with its networks compiled (`--bench.compile=true`); LeRobot as shipped",
    )  # fmt: skip
    parser.add_argument("--loader-batch-size", type=int, default=64)
    parser.add_argument("--loader-workers", default="0,2", help="DataLoader num_workers values to measure")
    parser.add_argument(
        "--loader-seconds", type=float, default=5.0, help="time each loader at least this long"
    )
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument(
        "--keep-freed-memory", action="store_true",
        help="apply policylab's glibc allocator setting (what `policylab` commands do) in both tools' processes",
    )  # fmt: skip
    return parser


def parse_args() -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args()
    for name, allowed in (("parts", PARTS), ("configs", CONFIGS)):
        unknown = set(getattr(args, name).split(",")) - set(allowed)
        if unknown:
            parser.error(f"--{name}: unknown {sorted(unknown)}; choose from {', '.join(allowed)}")
    return args


def jobs(args: argparse.Namespace) -> list[dict]:
    """Every measurement, in order (each is run for policylab, then LeRobot)."""
    common = {
        "root": str(args.dataset_root),
        "threads": args.threads,
        "keep_freed_memory": args.keep_freed_memory,
    }
    listed = [{"kind": "matmul", "matmul_size": args.matmul_size}]
    parts, configs = args.parts.split(","), args.configs.split(",")
    if "dataloader" in parts:
        listed += [
            {"kind": "dataloader", "num_workers": int(workers), "batch_size": args.loader_batch_size,
             "min_seconds": args.loader_seconds}
            for workers in args.loader_workers.split(",")
        ]  # fmt: skip
    if "train" in parts:
        listed += [
            {"kind": "train", "config": name, "batch_size": args.debug_batch_size or CONFIGS[name]["batch_size"],
             "steps": args.steps, "warmup": args.warmup, "num_workers": args.train_num_workers, "amp": args.amp}
            for name in configs
        ]  # fmt: skip
    if "infer" in parts:
        listed += [
            {
                "kind": "infer",
                "config": name,
                "calls": args.infer_calls,
                "warmup": args.infer_warmup,
                "policylab_compile": args.policylab_compile,
            }
            for name in configs
        ]
    return [{**common, **job} for job in listed]


def job_name(job: dict) -> str:
    if job["kind"] == "dataloader":
        return f"dataloader_workers{job['num_workers']}"
    return job["kind"] if job["kind"] == "matmul" else f"{job['kind']}_{job['config']}"


def fractions_of_matmul(flops_per_s: list, matmul_gflops: float | None) -> dict:
    """Achieved FLOP/s of each tool over the CPU's matmul rate."""
    return pair(*(f / (matmul_gflops * 1e9) if f and matmul_gflops else None for f in flops_per_s), 4)


def dataloader_figures(results: dict) -> dict:
    figures = {}
    for job in (name for name in results["policylab"] if name.startswith("dataloader")):
        for windows in dataloader.WINDOWS:
            figures[f"{windows}_windows_{job.split('_')[1]}"] = pair(*pick(results, job, windows), 1)
    return {"dataloader_samples_per_s": figures}


def training_figures(results: dict, matmul: float | None) -> dict:
    out = collections.defaultdict(dict)
    for name in (n for n in CONFIGS if f"train_{n}" in results["policylab"]):
        job = f"train_{name}"
        flops = pick(results, job, "train_flops_per_sample")
        for figure, key in (("training", "samples_per_s"), ("training_model_step", "model_samples_per_s")):
            rates = pick(results, job, key)
            out[f"{figure}_samples_per_s"][name] = pair(*rates, 2)
            achieved = [r * f if r and f else None for r, f in zip(rates, flops, strict=True)]
            out[f"{figure}_fraction_of_matmul"][name] = fractions_of_matmul(achieved, matmul)
        out["training_batch_wait_fraction"][name] = pair(*pick(results, job, "batch_wait_fraction"), 3)
        out["training_mflops_per_sample"][name] = pair(*(f and f / 1e6 for f in flops), 1)
        out["parameters_trained"][name] = pair(*pick(results, job, "parameters"), 0)
    return dict(out)


def inference_figures(results: dict, matmul: float | None) -> dict:
    out = collections.defaultdict(dict)
    for name in (n for n in CONFIGS if f"infer_{n}" in results["policylab"]):
        for sampler in CONFIGS[name]["samplers"]:
            label, job = f"{name}_{sampler}", f"infer_{name}"
            p50 = pick(results, job, sampler, "p50_ms")
            flops = pick(results, job, sampler, "flops_per_call")
            out["inference_ms_p50"][label] = pair(*p50, 2, lower_is_better=True)
            p95 = pick(results, job, sampler, "p95_ms")
            out["inference_ms_p95"][label] = pair(*p95, 2, lower_is_better=True)
            achieved = [f / (t / 1e3) if f and t else None for f, t in zip(flops, p50, strict=True)]
            out["inference_p50_fraction_of_matmul"][label] = fractions_of_matmul(achieved, matmul)
            out["inference_mflops_per_call"][label] = pair(*(f and f / 1e6 for f in flops), 1)
    return dict(out)


def report(results: dict, args: argparse.Namespace, info: dict) -> dict:
    """The printed JSON: every figure side by side, from results[tool][job name]."""
    configs = args.configs.split(",")
    venv_keys = ("python", "torch", "numpy", "cpu_capability")
    matmul = pick(results, "matmul", "gflops")
    measured = [m for m in matmul if m]
    cpu_matmul = statistics.mean(measured) if measured else None
    out = {
        "machine": {
            **machine_info(),
            **{f"{tool}_venv": {k: results[tool]["matmul"].get(k) for k in (*venv_keys, tool)} for tool in TOOLS},
        },
        "settings": {
            "dataset_root": str(args.dataset_root), "episodes": info["total_episodes"],
            "frames": info["total_frames"], "lerobot_venv": str(args.lerobot_venv), "torch_threads": args.threads,
            "train_steps_timed": args.steps, "train_warmup_steps": args.warmup,
            "train_num_workers": args.train_num_workers, "train_amp_bfloat16": args.amp,
            "train_batch_sizes": {n: args.debug_batch_size or CONFIGS[n]["batch_size"] for n in configs},
            "infer_calls": args.infer_calls, "infer_warmup": args.infer_warmup,
            "policylab_inference_compiled": args.policylab_compile,
            "loader_batch_size": args.loader_batch_size, "loader_min_seconds": args.loader_seconds,
            "keep_freed_memory": args.keep_freed_memory, "models": {n: CONFIGS[n] for n in configs},
        },
        "matmul_gflops": pair(*matmul, 1),
        "cpu_matmul_gflops": cpu_matmul and round(cpu_matmul, 1),
        **dataloader_figures(results),
        **training_figures(results, cpu_matmul),
        **inference_figures(results, cpu_matmul),
    }  # fmt: skip
    errors = {
        f"{tool}/{job}": r["error"] for tool in TOOLS for job, r in results[tool].items() if "error" in r
    }
    if errors:
        out["errors"] = errors
    return out


def main() -> None:
    args = parse_args()
    pythons = {
        "policylab": sys.executable,
        "lerobot": str(ensure_lerobot_venv(args.lerobot_venv, args.base_python)),
    }
    info = ensure_dataset(args.dataset_root, args.episodes)
    results = {tool: {} for tool in TOOLS}
    listed, started = jobs(args), time.perf_counter()
    for number, job in enumerate(listed, 1):
        name = job_name(job)
        for tool in TOOLS:  # policylab, then LeRobot, each in a fresh process
            log(f"{number}/{len(listed)} {name}: {tool} ({time.perf_counter() - started:.0f} s so far)")
            results[tool][name] = run_in_fresh_process(
                [pythons[tool], str(WORKER)], {**job, "tool": tool}, args.threads
            )
            log(f"{name} {tool}: {json.dumps(results[tool][name])}")
    log(f"done in {time.perf_counter() - started:.0f} s")
    print(json.dumps(report(results, args, info), indent=2))


if __name__ == "__main__":
    main()
