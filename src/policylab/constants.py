"""Feature keys shared by datasets, envs and policies (LeRobot's names), in one place.

Shape symbols used in comments and docstrings across the package:
    B   batch size
    To  observation steps (history)      T   prediction horizon
    Ta  executed action steps             Da  action dimension
    C, H, W  image channels, height, width
"""

OBS_IMAGE = "observation.image"
OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"
SUCCESS = "next.success"

TIMESTAMP = "timestamp"
FRAME_INDEX = "frame_index"
EPISODE_INDEX = "episode_index"
INDEX = "index"
TASK_INDEX = "task_index"

PAD_SUFFIX = "_is_pad"
FEATURE_MAP_SUFFIX = ".feature_map"  # <camera>.feature_map: its frames' trunk features, computed once

HELD_OUT_SEED = 100_000  # `policylab record` starts its episodes from seeds 0, 1, ...: evaluations start here

# A training run on disk: OUT/checkpoints/<step>/{pretrained_model,training_state}/, OUT/checkpoints/last.
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last"
PRETRAINED_MODEL_DIR = "pretrained_model"
TRAINING_STATE_DIR = "training_state"
HEAD_WEIGHTS = "head.safetensors"  # in training_state/: a pretraining head (`policylab pretrain`)
PRETRAIN_INFO = (
    "pretrain_info.json"  # in a `policylab pretrain` run: the target and the trunk's held-out error
)
TRAIN_CONFIG = "train_config.json"
METRICS_FILE = "metrics.jsonl"
SPLIT_FILE = "split.json"  # the episodes a run trained on and held out
BEST_CHECKPOINT = "best"  # OUT/checkpoints/best: the checkpoint with the lowest validation action error
