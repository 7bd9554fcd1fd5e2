"""The multi-modality probe tells a policy that averages two pushes from one that samples them."""

import numpy as np
import torch

from policylab.study.probe import chunk_distance, mode_stats, modes, predicted_chunks, predicted_steps

HORIZON = 16
RADIUS = 30.0


def push(direction: float, rng, n: int) -> np.ndarray:
    """n chunks of a push from (256, 256) towards `direction` (+1 right, -1 left), 8 px a step, 2 px of noise."""
    steps = np.arange(1, HORIZON + 1)[:, None] * np.array([8.0 * direction, 0.0])
    return 256 + steps[None] + rng.normal(0, 2, (n, HORIZON, 2))


def bimodal_demonstrations(rng) -> np.ndarray:
    """Half the demonstrations push left, half right, from the same start."""
    return np.concatenate([push(-1, rng, 8), push(+1, rng, 8)])


def test_two_pushes_are_two_modes_and_one_push_is_one():
    rng = np.random.default_rng(0)
    assert len(modes(bimodal_demonstrations(rng), RADIUS)) == 2
    assert len(modes(push(+1, rng, 16), RADIUS)) == 1
    a, b = push(-1, rng, 1), push(+1, rng, 1)
    assert chunk_distance(a, b)[0, 0] > 60  # the two pushes end 256 px apart


def test_the_probe_separates_a_regressor_that_averages_from_a_sampler_that_does_not():
    rng = np.random.default_rng(1)
    demonstrated = bimodal_demonstrations(rng)
    regressor = np.repeat(
        demonstrated.mean(axis=0, keepdims=True), 16, axis=0
    )  # a fixed L2 regressor's answer
    sampler = np.concatenate([push(-1, rng, 7), push(+1, rng, 9)])  # draws one push or the other
    averaged, sampled = (
        mode_stats(demonstrated, regressor, RADIUS),
        mode_stats(demonstrated, sampler, RADIUS),
    )
    assert averaged == {"demonstrated_modes": 2, "policy_modes": 1, "covered_modes": 0, "off_mode_share": 1.0}
    assert sampled == {"demonstrated_modes": 2, "policy_modes": 2, "covered_modes": 2, "off_mode_share": 0.0}
    one_sided = mode_stats(demonstrated, push(+1, rng, 16), RADIUS)  # commits, but always to the same push
    assert one_sided["covered_modes"] == 1 and one_sided["off_mode_share"] == 0.0


class ConstantChunks(torch.nn.Module):
    """A policy-like object: the same chunk for every observation, starting `offset` steps before now."""

    def __init__(self, chunk: np.ndarray, offset: int):
        super().__init__()
        self.chunk, self.config = torch.as_tensor(chunk), type("C", (), {})()
        self.config.input_shapes = {"observation.state": [2]}
        self.config.action_delta_indices = list(range(-offset, HORIZON))

    def predict_action_chunk(self, batch):
        return self.chunk.expand(len(batch["observation.state"]), -1, -1)


def test_predicted_chunks_start_at_the_current_step():
    chunk = np.arange(2 * (HORIZON + 1), dtype=np.float64).reshape(1, HORIZON + 1, 2)
    observation = {"observation.state": np.zeros(2, np.float32), "unused": np.zeros(3)}
    got = predicted_chunks(ConstantChunks(chunk, offset=1), observation, n=3, horizon=4, seed=0)
    np.testing.assert_array_equal(got, np.repeat(chunk[:, 1:5], 3, axis=0))


def test_predicted_steps_leave_out_the_steps_before_now():
    assert predicted_steps(ConstantChunks(np.zeros((1, HORIZON + 1, 2)), offset=1)) == HORIZON
    assert predicted_steps(ConstantChunks(np.zeros((1, HORIZON, 2)), offset=0)) == HORIZON
