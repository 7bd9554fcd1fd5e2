import numpy as np
import pytest

from policylab.datasets.errors import DatasetError
from policylab.datasets.windows import delta_timestamps_to_offsets, window_indices

FEATURES = {"action": {}, "observation.state": {}}


def test_offsets_are_delta_timestamps_in_frames():
    offsets = delta_timestamps_to_offsets(
        {"action": [-0.1, 0.0, 0.1, 0.25 - 0.05]}, fps=10, features=FEATURES
    )
    np.testing.assert_array_equal(offsets["action"], [-1, 0, 1, 2])


def test_off_grid_delta_names_key_and_value():
    with pytest.raises(
        DatasetError, match=r"delta_timestamps\['action'\] has 0.15 s, not a multiple of 1/fps"
    ):
        delta_timestamps_to_offsets({"action": [0.0, 0.15]}, fps=10, features=FEATURES)


def test_delta_within_tolerance_is_accepted():
    offsets = delta_timestamps_to_offsets({"action": [0.10004]}, fps=10, features=FEATURES, tolerance_s=1e-4)
    np.testing.assert_array_equal(offsets["action"], [1])


@pytest.mark.parametrize("deltas", [[], 0.1, [0.0, float("nan")]])
def test_malformed_deltas_are_named(deltas):
    with pytest.raises(DatasetError, match=r"delta_timestamps\['action'\]"):
        delta_timestamps_to_offsets({"action": deltas}, fps=10, features=FEATURES)


def test_unknown_key_lists_features():
    with pytest.raises(
        DatasetError, match="'observation.images.top' is not a feature.*action, observation.state"
    ):
        delta_timestamps_to_offsets({"observation.images.top": [0.0]}, fps=10, features=FEATURES)


def test_window_indices_clamp_and_pad_at_episode_edges():
    # two episodes: positions 0..3 and 4..8
    positions = np.array([0, 3, 4, 8])
    start = np.array([0, 0, 4, 4])
    end = np.array([4, 4, 9, 9])
    idx, is_pad = window_indices(positions, np.array([-1, 0, 1, 2]), start, end)
    np.testing.assert_array_equal(idx, [[0, 0, 1, 2], [2, 3, 3, 3], [4, 4, 5, 6], [7, 8, 8, 8]])
    np.testing.assert_array_equal(
        is_pad,
        [
            [True, False, False, False],
            [False, False, True, True],
            [True, False, False, False],
            [False, False, True, True],
        ],
    )
