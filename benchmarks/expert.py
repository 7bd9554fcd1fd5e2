"""Benchmark the built-in PushT expert: success, episode length, action smoothness and speed.

Episode i is seeded `env.reset(seed=seed + i)` with an expert seeded `seed + i`, run until success or the
300-step limit, with low-dimensional observations (the expert plans from the simulator's state, so
rendering would only add cost). Prints one JSON object:

    success_rate          fraction of episodes that terminated with success (truncated ones count as failures)
    mean_length           mean steps per episode
    mean_action_delta_px  mean of |a_t - a_{t-1}| over all steps within episodes
    seconds_per_episode   mean wall time of one episode in a worker (expert + env stepping)
    episodes_per_second   episodes / total wall time, with `workers` processes
    failures              seeds of the failed episodes

    python benchmarks/expert.py --episodes 200 --seed 0 --workers 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import numpy as np

from policylab.envs.configs import PushTEnvConfig
from policylab.experts import PushTExpertConfig
from policylab.experts.record import run_expert_episode


def run_episode(args: tuple[int, float]) -> dict:
    seed, diversity = args
    env_config = PushTEnvConfig(obs_type="environment_state_agent_pos")
    attempt = run_expert_episode(env_config, PushTExpertConfig(diversity=diversity), seed)
    return {
        "seed": seed,
        "success": attempt.success,
        "length": attempt.length,
        "delta_sum": attempt.mean_action_delta * (attempt.length - 1),
        "delta_count": attempt.length - 1,
        "seconds": attempt.seconds,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--diversity", type=float, default=PushTExpertConfig.diversity)
    return parser


def main() -> None:
    args = build_parser().parse_args()

    jobs = [(args.seed + i, args.diversity) for i in range(args.episodes)]
    started = time.perf_counter()
    with multiprocessing.Pool(args.workers) as pool:
        episodes = sorted(pool.imap_unordered(run_episode, jobs), key=lambda e: e["seed"])
    wall = time.perf_counter() - started

    print(
        json.dumps(
            {
                "episodes": args.episodes,
                "seed": args.seed,
                "workers": args.workers,
                "diversity": args.diversity,
                "success_rate": float(np.mean([e["success"] for e in episodes])),
                "mean_length": float(np.mean([e["length"] for e in episodes])),
                "mean_action_delta_px": sum(e["delta_sum"] for e in episodes)
                / max(sum(e["delta_count"] for e in episodes), 1),
                "seconds_per_episode": float(np.mean([e["seconds"] for e in episodes])),
                "episodes_per_second": args.episodes / wall,
                "failures": [e["seed"] for e in episodes if not e["success"]],
            }
        )
    )


if __name__ == "__main__":
    main()
