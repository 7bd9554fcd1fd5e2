import pytest
import torch

from policylab.policies.normalize import MissingStatsError, Normalizer

SHAPES = {"observation.state": [2], "observation.image": [3, 4, 4], "action": [2]}
STATS = {
    "observation.state": {"mean": [1.0, -1.0], "std": [2.0, 0.5], "min": [0.0, -2.0], "max": [4.0, 0.0]},
    "observation.image": {"mean": [[[0.5]], [[0.4]], [[0.3]]], "std": [[[0.1]], [[0.2]], [[0.3]]]},
    "action": {"min": [0.0, 10.0], "max": [10.0, 30.0]},
}


def test_mean_std_and_min_max_match_hand_computation_and_invert():
    modes = {"observation.state": "mean_std", "observation.image": "mean_std", "action": "min_max"}
    normalize = Normalizer(SHAPES, modes, STATS)
    unnormalize = Normalizer(SHAPES, modes, STATS, inverse=True)
    batch = {
        "observation.state": torch.tensor([[3.0, 0.0]]),
        "action": torch.tensor([[5.0, 10.0]]),
        "other": torch.ones(1),
    }
    out = normalize(batch)
    torch.testing.assert_close(out["observation.state"], torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(out["action"], torch.tensor([[0.0, -1.0]]))  # [min, max] -> [-1, 1]
    assert out["other"] is batch["other"]  # keys without a mode pass through
    back = unnormalize(out)
    torch.testing.assert_close(back["action"], batch["action"])
    torch.testing.assert_close(back["observation.state"], batch["observation.state"])
    image = torch.rand(2, 3, 4, 4)
    expected = (image - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.1, 0.2, 0.3]).view(
        3, 1, 1
    )
    torch.testing.assert_close(
        normalize({"observation.image": image})["observation.image"], expected, rtol=1e-5, atol=1e-5
    )


def test_without_stats_the_first_call_says_to_pass_dataset_stats():
    normalize = Normalizer(SHAPES, {"observation.state": "mean_std"})
    with pytest.raises(MissingStatsError, match="dataset_stats=dataset.meta.stats"):
        normalize({"observation.state": torch.zeros(1, 2)})


def test_stats_of_the_wrong_shape_are_rejected_with_the_key():
    with pytest.raises(ValueError, match="observation.state.*shape"):
        Normalizer(
            SHAPES,
            {"observation.state": "mean_std"},
            {"observation.state": {"mean": [0.0] * 3, "std": [1.0] * 3}},
        )


def test_statistics_are_saved_in_the_state_dict():
    normalize = Normalizer(SHAPES, {"observation.state": "mean_std"}, STATS)
    assert set(normalize.state_dict()) == {"observation_state__mean", "observation_state__std"}
