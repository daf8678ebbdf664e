"""RGB frames into a video file, written atomically: MP4 (H.264) through imageio-ffmpeg, which
ships its own ffmpeg binary, or an animated GIF through Pillow when imageio-ffmpeg is not
installed.

Frames are streamed to ffmpeg one by one, so an MP4 of any length takes constant memory; the
GIF fallback keeps every frame (one byte per pixel) until the file is written, so it suits
short clips. The file appears under its name only once complete (see
:mod:`leod.plumbing.atomic`); a failed or interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from leod.plumbing.atomic import atomic_path, check_writable
from leod.plumbing.errors import ConfigError, OutputError

VIDEO_SUFFIXES = (".mp4", ".gif")


def mp4_available() -> bool:
    """Whether imageio-ffmpeg (and so MP4 writing) can be imported."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def video_target(path: str | os.PathLike[str]) -> Path:
    """The file a video asked for as ``path`` is written to, checked before any work: an .mp4
    becomes a .gif beside it when imageio-ffmpeg is missing; its folder must be writable."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"{path}: a video file ends in .mp4 or .gif")
    if suffix == ".mp4" and not mp4_available():
        target = target.with_suffix(".gif")
    check_writable(target)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder")
    return target


class _Mp4:
    def __init__(self, path: Path, fps: float) -> None:
        self._path, self._fps = path, fps
        self._gen: Any = None

    def add(self, frame: np.ndarray) -> None:
        if self._gen is None:
            import imageio_ffmpeg

            h, w = frame.shape[:2]
            self._gen = imageio_ffmpeg.write_frames(
                str(self._path),
                (w, h),
                fps=self._fps,
                codec="libx264",
                macro_block_size=2,
                ffmpeg_log_level="error",
                output_params=["-f", "mp4", "-threads", "1", "-preset", "veryfast"],  # the name ends in .tmp
            )
            self._gen.send(None)
        self._gen.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()


class _Gif:
    def __init__(self, path: Path, fps: float) -> None:
        self._path, self._ms = path, round(1000 / fps)
        self._frames: list[Image.Image] = []

    def add(self, frame: np.ndarray) -> None:
        self._frames.append(Image.fromarray(frame).quantize(colors=64, dither=Image.Dither.NONE))

    def close(self) -> None:
        if self._frames:
            first, *rest = self._frames
            first.save(self._path, format="GIF", save_all=True, append_images=rest, duration=self._ms, loop=0)


@contextlib.contextmanager
def video_writer(path: Path, fps: float) -> Iterator[Any]:
    """A writer with ``add(frame)`` (uint8 ``(H, W, 3)``, all of one size) for the file
    ``path`` (from :func:`video_target`: its suffix picks MP4 or GIF), renamed into place when
    the block ends without an exception. A video without frames is an error."""
    with atomic_path(path) as tmp:
        writer = _Mp4(tmp, fps) if path.suffix.lower() == ".mp4" else _Gif(tmp, fps)
        try:
            yield writer
        finally:
            writer.close()
        if tmp.stat().st_size == 0:
            raise OutputError(f"{path}: no frame to write")
