import numpy as np

from policylab.datasets.stats import aggregate_stats, compute_episode_stats

FEATURES = {
    "action": {"dtype": "float32", "shape": [2]},
    "observation.image": {"dtype": "video", "shape": [4, 4, 3]},
}


def test_vector_stats_are_per_dimension():
    values = np.array([[0.0, 10.0], [2.0, 30.0], [4.0, 20.0]], dtype=np.float32)
    stats = compute_episode_stats({"action": values}, FEATURES)["action"]
    np.testing.assert_allclose(stats["mean"], [2.0, 20.0])
    np.testing.assert_allclose(stats["std"], values.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["min"], [0.0, 10.0])
    np.testing.assert_allclose(stats["max"], [4.0, 30.0])
    np.testing.assert_array_equal(stats["count"], [3])
    np.testing.assert_allclose(stats["q50"], [2.0, 20.0])


def test_image_stats_are_per_channel_in_unit_range():
    frames = np.zeros((5, 4, 4, 3), dtype=np.uint8)
    frames[..., 0] = 255
    frames[..., 2] = np.arange(5)[:, None, None] * 50
    stats = compute_episode_stats({"observation.image": frames}, FEATURES)["observation.image"]
    assert stats["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(stats["mean"].ravel(), [1.0, 0.0, 100 / 255])
    np.testing.assert_allclose(stats["max"].ravel(), [1.0, 0.0, 200 / 255])


def test_aggregate_equals_stats_of_concatenation():
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc, scale, size=(n, 2)) for loc, scale, n in [(0, 1, 10), (5, 2, 30), (-3, 0.5, 7)]]
    aggregated = aggregate_stats([compute_episode_stats({"action": p}, FEATURES) for p in parts])["action"]
    whole = np.concatenate(parts)
    np.testing.assert_allclose(aggregated["mean"], whole.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(aggregated["std"], whole.std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(aggregated["min"], whole.min(axis=0))
    np.testing.assert_allclose(aggregated["max"], whole.max(axis=0))
    np.testing.assert_array_equal(aggregated["count"], [47])
