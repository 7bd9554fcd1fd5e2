import json

import numpy as np
import pytest
import torch

from policylab.datasets import DatasetError, LeRobotDataset, LeRobotDatasetWriter
from synthetic import FEATURES, TASK, synthetic_episode, write_synthetic_dataset


def test_items_round_trip_every_frame(synthetic_dataset):
    root, episodes = synthetic_dataset
    ds = LeRobotDataset(root=root)
    assert len(ds) == ds.num_frames == 25 and ds.meta.total_episodes == 3 and ds.fps == 10
    actions = np.concatenate([e["action"] for e in episodes])
    rewards = np.concatenate([e["next.reward"] for e in episodes])
    images = np.concatenate([e["observation.image"] for e in episodes]).transpose(0, 3, 1, 2) / 255.0
    for i in range(len(ds)):
        item = ds[i]
        assert all(isinstance(v, torch.Tensor) for v in item.values())
        np.testing.assert_array_equal(item["action"].numpy(), actions[i])
        assert item["next.reward"].item() == rewards[i]
        assert item["observation.image"].dtype == torch.float32 and item["observation.image"].shape == (
            3,
            96,
            96,
        )
        assert np.abs(item["observation.image"].numpy() - images[i]).mean() < 3 / 255  # video codec tolerance
    assert (
        ds[5]["episode_index"].item() == 1 and ds[5]["frame_index"].item() == 0 and ds[5]["index"].item() == 5
    )


def test_windows_follow_hand_computed_indices(synthetic_dataset):
    root, episodes = synthetic_dataset
    ds = LeRobotDataset(
        root=root, delta_timestamps={"action": [-0.1, 0.0, 0.1, 0.2], "observation.state": [-0.1, 0.0]}
    )
    second = episodes[1]["action"]  # frames 5..16
    item = ds[5]  # first frame of episode 1
    np.testing.assert_array_equal(item["action"].numpy(), second[[0, 0, 1, 2]])
    np.testing.assert_array_equal(item["action_is_pad"].numpy(), [True, False, False, False])
    item = ds[16]  # last frame of episode 1
    np.testing.assert_array_equal(item["action"].numpy(), second[[10, 11, 11, 11]])
    np.testing.assert_array_equal(item["action_is_pad"].numpy(), [False, False, True, True])
    assert item["observation.state"].shape == (2, 2) and item["observation.state_is_pad"].tolist() == [
        False,
        False,
    ]


def test_image_windows_have_time_axis(synthetic_dataset):
    root, _ = synthetic_dataset
    ds = LeRobotDataset(root=root, delta_timestamps={"observation.image": [-0.1, 0.0]})
    item = ds[0]
    assert item["observation.image"].shape == (2, 3, 96, 96)
    torch.testing.assert_close(item["observation.image"][0], item["observation.image"][1])  # clamped copy
    assert item["observation.image_is_pad"].tolist() == [True, False]


def test_negative_and_out_of_range_indices(synthetic_dataset):
    root, episodes = synthetic_dataset
    ds = LeRobotDataset(root=root, delta_timestamps={"action": [0.0, 0.1]})
    last = ds.__getitems__([-1])[0]
    np.testing.assert_array_equal(last["action"].numpy(), episodes[2]["action"][[7, 7]])
    assert last["action_is_pad"].tolist() == [False, True]
    torch.testing.assert_close(ds[-1], last)
    with pytest.raises(IndexError, match="frame 25 is out of range"):
        ds.__getitems__([3, 25])


def test_batched_gather_matches_single_items(synthetic_dataset):
    root, _ = synthetic_dataset
    ds = LeRobotDataset(
        root=root, delta_timestamps={"action": [0.0, 0.1, 0.2], "observation.image": [-0.1, 0.0]}
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=7, shuffle=False)
    batch = next(iter(loader))
    for i in range(7):
        for key, value in ds[i].items():
            torch.testing.assert_close(batch[key][i], value)


def test_episode_subset(synthetic_dataset):
    root, episodes = synthetic_dataset
    ds = LeRobotDataset(root=root, episodes=[2], delta_timestamps={"action": [-0.1, 0.0]})
    assert len(ds) == 8 and ds[0]["episode_index"].item() == 2
    np.testing.assert_array_equal(ds[0]["action"].numpy(), episodes[2]["action"][[0, 0]])
    with pytest.raises(DatasetError, match=r"episodes \[7\] do not exist"):
        LeRobotDataset(root=root, episodes=[7])
    with pytest.raises(DatasetError, match="`episodes` is empty"):
        LeRobotDataset(root=root, episodes=[])


def test_stats_cover_features(synthetic_dataset):
    root, episodes = synthetic_dataset
    stats = LeRobotDataset(root=root).meta.stats
    actions = np.concatenate([e["action"] for e in episodes])
    torch.testing.assert_close(stats["action"]["mean"], torch.tensor(actions.mean(0)), rtol=1e-5, atol=1e-4)
    assert stats["observation.image"]["mean"].shape == (3, 1, 1)
    assert set(stats["action"]) >= {"mean", "std", "min", "max"}


def test_repo_id_is_found_under_root_and_data_home(tmp_path, monkeypatch):
    write_synthetic_dataset(tmp_path / "home" / "me" / "pusht", lengths=(3,))
    assert len(LeRobotDataset("me/pusht", root=tmp_path / "home")) == 3
    assert len(LeRobotDataset(root=tmp_path / "home" / "me" / "pusht")) == 3
    monkeypatch.setenv("POLICYLAB_HOME", str(tmp_path / "home"))
    assert len(LeRobotDataset("me/pusht")) == 3


def test_repo_id_never_silently_resolves_to_another_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_synthetic_dataset(tmp_path / "pusht", lengths=(3,))
    with pytest.raises(
        DatasetError, match="is itself a dataset folder, and repo_id 'lerobot/aloha' is looked up under it"
    ):
        LeRobotDataset("lerobot/aloha", root=tmp_path / "pusht")


def test_missing_dataset_offline_names_searched_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("POLICYLAB_HOME", str(tmp_path))
    with pytest.raises(
        DatasetError, match=f"'nobody/nothing' was not found locally \\(searched {tmp_path}/nobody/nothing"
    ):
        LeRobotDataset("nobody/nothing")


# -- bad input gets a clear error naming the file or key ---------------------------------------------------


def test_missing_info_json(tmp_path):
    with pytest.raises(DatasetError, match=r"no LeRobot dataset in .*\(meta/info.json is missing\)"):
        LeRobotDataset(root=tmp_path)


def test_unknown_codebase_version(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(3,))
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v9"}))
    with pytest.raises(
        DatasetError, match=r"info.json: codebase_version 'v9' is not supported \(v3.0, v2.1\)"
    ):
        LeRobotDataset(root=root)


def test_parquet_not_matching_info(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(3,))
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.velocity"] = {"dtype": "float32", "shape": [2], "names": None}
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(
        DatasetError,
        match=r"file-000.parquet: column 'observation.velocity' declared in meta/info.json is missing",
    ):
        LeRobotDataset(root=root)


def test_wrong_shape_in_info(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(3,))
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["action"]["shape"] = [3]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(
        DatasetError, match=r"column 'action' has arrow type .*expected float32 of shape \[3\]"
    ):
        LeRobotDataset(root=root)


def test_missing_video(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(3, 4))
    (root / "videos/observation.image/chunk-000/file-001.mp4").unlink()
    with pytest.raises(DatasetError, match=r"file-001.mp4: video file is missing"):
        LeRobotDataset(root=root)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the writer computes statistics of the NaN
def test_a_nan_or_inf_in_a_float_column_names_column_episode_and_frame(tmp_path):
    root = tmp_path / "ds"
    writer = LeRobotDatasetWriter(root, fps=10, features=FEATURES)
    good, bad = synthetic_episode(4, seed=0), synthetic_episode(6, seed=1)
    bad["action"][3, 1] = np.nan
    bad["action"][5, 0] = np.inf
    writer.add_episode(good, TASK)
    writer.add_episode(bad, TASK)
    with pytest.raises(
        DatasetError, match=r"column 'action' of episode 1 holds \[.*nan\] at frame 3 \(2 frames"
    ):
        LeRobotDataset(root=root)
    clean = LeRobotDataset(root=root, episodes=[0])  # the other episodes stay usable, their statistics finite
    assert len(clean) == 4 and torch.isfinite(clean.stats["action"]["std"]).all()


def test_an_undecodable_video_is_one_error_and_leaves_no_half_built_cache(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(6,))
    video = root / "videos/observation.image/chunk-000/file-000.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # the second half of the stream zeroed
    video.write_bytes(bytes(data))
    with pytest.raises(
        DatasetError, match=r"file-000.mp4: (cannot decode video|episode 0 should have 6 frames)"
    ):
        LeRobotDataset(root=root)
    assert not list((root / ".cache/policylab").glob("*.tmp"))


def test_corrupt_parquet(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(3,))
    (root / "data/chunk-000/file-000.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=r"file-000.parquet: not a readable parquet file"):
        LeRobotDataset(root=root)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda e: e.pop("action"), r"missing \['action'\], unknown \[\]"),
        (lambda e: e.update(extra=np.zeros(4)), r"missing \[\], unknown \['extra'\]"),
        (
            lambda e: e.update(action=np.zeros((4, 3), np.float32)),
            r"'action' has shape \(4, 3\), expected \(4, 2\)",
        ),
        (
            lambda e: e.update({"observation.image": np.zeros((4, 3, 96, 96), np.uint8)}),
            "'observation.image' has shape",
        ),
        (lambda e: e.update({"observation.image": np.zeros((4, 96, 96, 3))}), "must be uint8"),
        (lambda e: e.update({"next.success": np.zeros(4)}), "'next.success' must be bool"),
    ],
)
def test_writer_rejects_malformed_episode_and_stays_usable(tmp_path, change, message):
    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=10, features=FEATURES)
    episode = synthetic_episode(4, 0)
    change(episode)
    with pytest.raises(DatasetError, match=message):
        writer.add_episode(episode, "a task that must not be recorded")
    writer.add_episode(synthetic_episode(4, 1), TASK)
    assert LeRobotDataset(root=tmp_path / "ds").meta.tasks == [TASK]


def test_reopening_appends_and_removes_uncommitted_files(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(3, 4))
    # a kill between writing episode 2's files and committing its metadata leaves stray files
    stray = root / "data/chunk-000/file-002.parquet"
    stray.write_bytes(b"partial")
    (root / "meta/.info.json.tmp").write_text("{")
    writer = LeRobotDatasetWriter(root, fps=10, features=FEATURES)
    assert writer.num_episodes == 2 and not stray.exists() and not (root / "meta/.info.json.tmp").exists()
    writer.add_episode(synthetic_episode(5, 9), TASK)
    ds = LeRobotDataset(root=root)
    assert ds.meta.total_episodes == 3 and len(ds) == 12


def test_reopening_with_other_features_is_refused(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(3,))
    with pytest.raises(DatasetError, match="other features or fps"):
        LeRobotDatasetWriter(root, fps=30, features=FEATURES)
    other = {**FEATURES, "action": {"dtype": "float32", "shape": [7], "names": None}}
    with pytest.raises(DatasetError, match="other features or fps"):
        LeRobotDatasetWriter(root, fps=10, features=other)


def test_pickles_without_frames_and_loads_in_worker_processes(synthetic_dataset):
    import pickle

    root, _ = synthetic_dataset
    ds = LeRobotDataset(root=root, delta_timestamps={"observation.image": [-0.1, 0.0]})
    blob = pickle.dumps(ds)
    assert len(blob) < 200_000  # 25 frames of 96x96x3 would be 690 kB
    torch.testing.assert_close(pickle.loads(blob)[7], ds[7])
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="spawn")
    assert sum(len(batch["index"]) for batch in loader) == len(ds)


def test_stats_follow_committed_episodes(tmp_path):
    # v3.0: stats.json written for an episode whose info.json commit never happened is not trusted
    root = tmp_path / "ds"
    episodes = write_synthetic_dataset(root, lengths=(3, 4))
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "total_episodes": 1, "total_frames": 3}))
    mean = LeRobotDataset(root=root).meta.stats["action"]["mean"].numpy()
    np.testing.assert_allclose(mean, episodes[0]["action"].mean(axis=0), rtol=1e-5)


def test_v21_stats_come_from_episode_stats_as_in_lerobot(tmp_path):
    root = tmp_path / "ds"
    episodes = write_synthetic_dataset(root, lengths=(3, 4), codebase_version="v2.1")
    stale = {
        "action": {"mean": [0.0, 0.0], "std": [1.0, 1.0], "min": [0.0, 0.0], "max": [1.0, 1.0], "count": [99]}
    }
    (root / "meta/stats.json").write_text(json.dumps(stale))
    mean = LeRobotDataset(root=root).meta.stats["action"]["mean"].numpy()
    np.testing.assert_allclose(mean, np.concatenate([e["action"] for e in episodes]).mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda info: info.update(fps=0), "'fps' must be a positive integer"),
        (lambda info: info.update(total_frames=99), "total_frames=99, its episodes hold 3 frames"),
        (
            lambda info: info["features"]["action"].update(dtype="int64"),
            "column 'action' holds float, meta/info.json declares int64",
        ),
        (lambda info: info["features"]["action"].update(shape="2"), "feature 'action' has shape '2'"),
    ],
)
def test_info_json_that_disagrees_with_the_data(tmp_path, edit, message):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(3,))
    info = json.loads((root / "meta/info.json").read_text())
    edit(info)
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=message):
        LeRobotDataset(root=root)


def test_unwritable_dataset_folder_caches_frames_in_data_home(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    episodes = write_synthetic_dataset(root, lengths=(3,))
    (root / ".cache").write_text("a file where the cache folder would go: mkdir fails, even for root")
    monkeypatch.setenv("POLICYLAB_HOME", str(tmp_path / "home"))
    ds = LeRobotDataset(root=root)
    expected = episodes[0]["observation.image"][0].transpose(2, 0, 1) / 255.0
    assert np.abs(ds[0]["observation.image"].numpy() - expected).mean() < 3 / 255
    assert len(list((tmp_path / "home/.frame_cache").glob("*-observation.image.npy"))) == 1


def test_frame_positions_leave_out_the_last_frames_of_each_episode(synthetic_dataset):
    root, episodes = synthetic_dataset
    ds = LeRobotDataset(root=root)
    lengths = [len(e["action"]) for e in episodes]
    positions = ds.frame_positions(drop_last=3)
    assert len(positions) == sum(max(0, n - 3) for n in lengths)
    assert positions[0] == 0 and lengths[0] - 4 in positions and lengths[0] - 3 not in positions
    assert len(ds.frame_positions()) == len(ds)


def test_cameras_left_out_are_never_decoded(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, lengths=(4,))
    ds = LeRobotDataset(root=root, cameras=[])
    assert "observation.image" not in ds[0] and "action" in ds[0]
    assert not (root / ".cache").exists()  # no frame cache: the video was not read
    assert "observation.image" in LeRobotDataset(root=root, cameras=["observation.image"])[0]
    with pytest.raises(DatasetError, match=r"no camera features \['observation.wrist'\].*observation.image"):
        LeRobotDataset(root=root, cameras=["observation.wrist"])


def test_values_served_in_place_of_a_camera_keep_its_windows_and_padding(synthetic_dataset):
    root, _ = synthetic_dataset
    ds = LeRobotDataset(root=root, delta_timestamps={"observation.image": [-0.2, -0.1, 0.0]}, episodes=[1, 2])
    frames = ds.camera_frames("observation.image", np.array([0, 11]))
    assert frames.dtype == torch.uint8 and frames.shape == (2, 3, 96, 96)
    torch.testing.assert_close(frames[1].float() / 255, ds[11]["observation.image"][-1])
    values = np.arange(len(ds), dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)  # position p -> p
    ds.serve_in_place_of("observation.image", "observation.image.feature_map", values)
    item = ds[12]  # the first frame of episode 2
    assert "observation.image" not in item
    assert item["observation.image.feature_map"][:, 0].tolist() == [12, 12, 12]
    assert item["observation.image_is_pad"].tolist() == [True, True, False]
    assert ds[11]["observation.image.feature_map"][:, 0].tolist() == [9, 10, 11]
    with pytest.raises(ValueError, match="3 values for a dataset of 20 frames"):
        ds.serve_in_place_of("action", "x", values[:3])
