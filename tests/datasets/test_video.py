"""Episode videos: frames survive encode/decode within codec tolerance, and encoding leaves the caller's
thread scheduled normally (SVT-AV1 raises it to real-time priority when run as root)."""

import os

import numpy as np
import pytest

from policylab.datasets.video import encode_video, iter_video_frames


def test_encode_decode_round_trip(tmp_path):
    frames = np.zeros((12, 96, 96, 3), dtype=np.uint8)
    for k in range(12):
        frames[k, :, 8 * k : 8 * k + 8] = 255  # a bar moving right one step per frame
    path = tmp_path / "episode.mp4"
    encode_video(frames, path, fps=10)
    decoded = list(iter_video_frames(path))
    assert [round(t, 3) for t, _ in decoded] == [round(k / 10, 3) for k in range(12)]
    assert np.abs(np.stack([f for _, f in decoded]).astype(float) - frames).mean() < 3


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="thread scheduling policy is Linux-only")
def test_encoding_leaves_normal_scheduling(tmp_path):
    encode_video(np.zeros((3, 32, 32, 3), dtype=np.uint8), tmp_path / "episode.mp4", fps=10)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
