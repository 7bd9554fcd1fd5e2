"""Frames to mp4 and back, with PyAV (FFmpeg): dataset videos with LeRobot's settings, and videos to watch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from policylab.datasets.errors import DatasetError

# LeRobot's defaults: AV1 (SVT-AV1), yuv420p, a key frame every 2 frames (cheap random access), crf 30.
VIDEO_CODEC = "libsvtav1"
VIDEO_CODEC_NAME = "av1"  # as recorded in info.json
PIX_FMT = "yuv420p"
GOP_SIZE = 2
CRF = 30
PRESET = 8  # SVT-AV1 speed preset
# SVT-AV1, when allowed to (as root, e.g. in a container or CI), raises its threads and the calling thread to
# real-time priority (SCHED_FIFO 99); with more encoder threads than cores they can starve one another for
# good. One encoder thread ("lp=1", byte-identical output) cannot, and the calling thread is put back to
# normal scheduling afterwards (docs/datasets.md).
SVT_PARAMS = "lp=1"


def encode_video(frames: np.ndarray, path: Path, fps: int, codec: str = VIDEO_CODEC) -> Path:
    """Write (N, H, W, 3) uint8 frames to `path` (mp4); frame k is shown at k / fps seconds.

    codec: AV1 with LeRobot's dataset settings (the default), or `playable_codec()` for a video a browser
    plays (H.264 where FFmpeg has it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per video to stderr unless told otherwise
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = PIX_FMT
        if codec == VIDEO_CODEC:
            stream.options = {
                "g": str(GOP_SIZE),
                "crf": str(CRF),
                "preset": str(PRESET),
                "svtav1-params": SVT_PARAMS,
            }
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    _restore_normal_scheduling()
    return path


def playable_codec() -> str:
    """The codec for videos people watch: H.264, else MPEG-4, else AV1, whichever this FFmpeg has."""
    return next(c for c in ("libx264", "mpeg4", VIDEO_CODEC) if c in av.codecs_available)


def _restore_normal_scheduling() -> None:
    """Undo the real-time priority SVT-AV1 may have given the calling thread (Linux only; pid 0 = this thread)."""
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def video_info(frames_shape: tuple[int, ...], fps: int, codebase_version: str) -> dict:
    """The `info` block LeRobot stores next to a video feature in meta/info.json (LeRobot 0.6 names the depth
    flag `is_depth_map`, 0.3 `video.is_depth_map`)."""
    return {
        "video.height": int(frames_shape[1]),
        "video.width": int(frames_shape[2]),
        "video.codec": VIDEO_CODEC_NAME,
        "video.pix_fmt": PIX_FMT,
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": False,
        "is_depth_map" if codebase_version == "v3.0" else "video.is_depth_map": False,
    }


def iter_video_frames(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """Decode `path` frame by frame: (presentation time in seconds, (H, W, 3) uint8). A file FFmpeg cannot
    read is one DatasetError naming it (FFmpeg's own log lines are silenced: they would print over a
    progress bar)."""
    if not path.is_file():
        raise DatasetError(f"{path}: video file is missing")
    av.logging.set_level(None)  # FFmpeg logs nothing; errors reach us as exceptions
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path}: cannot decode video (the file has no video stream)")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield float(frame.pts * frame.time_base), frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot decode video ({error})") from None
