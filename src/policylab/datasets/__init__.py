"""LeRobot-format datasets: reading (v3.0, v2.1), writing, temporal windows, statistics, frame cache."""

from policylab.datasets.configs import DatasetConfig
from policylab.datasets.errors import DatasetError
from policylab.datasets.layout import default_data_home
from policylab.datasets.lerobot_dataset import LeRobotDataset, resolve_dataset_root
from policylab.datasets.metadata import LeRobotDatasetMetadata
from policylab.datasets.writer import LeRobotDatasetWriter

__all__ = [
    "DatasetConfig",
    "DatasetError",
    "LeRobotDataset",
    "LeRobotDatasetMetadata",
    "LeRobotDatasetWriter",
    "default_data_home",
    "resolve_dataset_root",
]
