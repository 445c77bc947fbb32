"""Videos in and out: files and stream URLs decoded with PyAV (FFmpeg), cameras opened with OpenCV, annotated
videos written with PyAV.

    reader = open_video("clip.mp4")          # or "rtsp://host/stream", or "0" (a camera index)
    reader.info                              # VideoInfo(fps=Fraction(25, 1), width=416, height=416, frames=300)
    for index, seconds, image in reader.frames(on_problem=print):   # image (H, W, 3) uint8 RGB
        ...
    with VideoWriter("out.mp4", reader.info.fps, (416, 416)) as out:
        out.write(image)

Why PyAV for decoding: a packet that does not decode raises an error of its own, so one corrupt frame is
skipped with a warning and the frames after it still come; OpenCV's `VideoCapture.read` returns False at the
first corrupt frame, exactly as at the end of the file (on an MJPEG file with frame 10 broken it gave 10
frames of 300, PyAV 299). Decoding speed is alike (416 px, ad hoc: about 5000 frames/s each, far above any
detector's rate), and PyAV's wheels carry their own FFmpeg with an H.264 encoder (OpenCV's wheels write
MPEG-4 part 2 only, which browsers do not play). A camera index needs the platform's capture API, which
OpenCV picks (v4l2, AVFoundation, DirectShow).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".mts", ".m2ts", ".3gp", ".ogv")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
CORRUPT_LIMIT = 100        # undecodable packets in a row that end a video (a broken file, not a broken frame)


@dataclass(frozen=True)
class VideoInfo:
    """fps: frames per second (exact, a Fraction for files); width, height: pixels; frames: the count the
    container states (None when unknown: streams, cameras, some containers)."""

    fps: Fraction
    width: int
    height: int
    frames: Optional[int]


def is_stream(location: str) -> bool:
    """A camera index (`0`) or a stream URL (rtsp://, http://, ...)."""
    return location.isdigit() or location.lower().startswith(STREAM_SCHEMES)


def open_video(location) -> "PyAVReader | CameraReader":
    """A reader for a video file, a stream URL or a camera index (`"0"`); ValueError naming it when it does
    not open."""
    location = str(location)
    if location.isdigit() and not Path(location).exists():
        return CameraReader(int(location))
    return PyAVReader(location)


class PyAVReader:
    """A video file or stream URL decoded by FFmpeg through PyAV (frame threads on)."""

    def __init__(self, location: str):
        import av                      # imported when a video is met: 0.1 s at start-up otherwise
        self.location = location
        try:
            self.container = av.open(location, timeout=30.0 if is_stream(location) else None)
        except (av.error.FFmpegError, OSError) as err:
            raise ValueError(f"cannot open video '{location}': {_reason(err)}") from None
        if not self.container.streams.video:
            self.container.close()
            raise ValueError(f"cannot open video '{location}': it holds no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
        self.info = VideoInfo(Fraction(rate), int(self.stream.codec_context.width),
                              int(self.stream.codec_context.height), int(self.stream.frames) or None)

    def frames(self, on_problem: Callable[[str], None] = print) -> Iterator[Tuple[int, Optional[float], np.ndarray]]:
        """`(index, seconds, image (H, W, 3) uint8 RGB)` of every frame that decodes; an undecodable packet is
        reported (`on_problem`) and skipped, and decoding goes on. The index is the frame's position from its
        timestamp (a skipped frame leaves a gap), else a count."""
        import av
        start = self.stream.start_time or 0
        base, count, failed = self.stream.time_base, 0, 0
        try:
            for packet in self.container.demux(self.stream):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as err:
                    failed += 1
                    where = "" if packet.pts is None else f" at {float((packet.pts - start) * base):.2f} s"
                    on_problem(f"{self.location}: a corrupt frame{where} skipped ({_reason(err)})")
                    if failed >= CORRUPT_LIMIT:
                        on_problem(f"{self.location}: {failed} undecodable packets in a row; the rest skipped")
                        return
                    continue
                failed = 0
                for frame in decoded:
                    seconds = None if frame.pts is None else float((frame.pts - start) * base)
                    index = count if seconds is None else int(round(seconds * self.info.fps))
                    count = max(count, index) + 1
                    yield index, seconds, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:       # demuxing itself failed: the container is cut or broken
            on_problem(f"{self.location}: the video ends early after {count} frame(s) ({_reason(err)})")
        finally:
            self.close()

    def close(self):
        self.container.close()


class CameraReader:
    """A camera opened by OpenCV's capture API; frames until it stops or the caller does."""

    def __init__(self, index: int):
        self.location = str(index)
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise ValueError(f"cannot open camera {index}")
        fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        self.info = VideoInfo(Fraction(fps).limit_denominator(1001), int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                              int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), None)

    def frames(self, on_problem: Callable[[str], None] = print):
        count = 0
        try:
            while True:
                ok, image = self.capture.read()
                if not ok:
                    return
                yield count, count / float(self.info.fps), cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                count += 1
        finally:
            self.close()

    def close(self):
        self.capture.release()


class VideoWriter:
    """An H.264 MP4 (MPEG-4 part 2 where PyAV's FFmpeg lacks an H.264 encoder) at `fps`, `size (W, H)`, fed
    `(H, W, 3) uint8 RGB` frames; the file is complete after `close()` (or the `with` block)."""

    def __init__(self, path, fps: Fraction, size: Tuple[int, int]):
        import av
        self.path = Path(path)
        self.container = av.open(str(self.path), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1 << 16))
        self.stream.width, self.stream.height = (int(v) + int(v) % 2 for v in size)   # yuv420p: even sides
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":       # x264's real-time preset: 5 ms a 416 px frame here, against 9 at its default
            self.stream.options = {"preset": "veryfast"}
        self.size = tuple(int(v) for v in size)
        self.frames = 0

    def write(self, image: np.ndarray):
        import av
        w, h = self.size
        if image.shape[:2] != (h, w):
            raise ValueError(f"{self.path}: frame of {image.shape[1]}x{image.shape[0]}, the video is {w}x{h}")
        if (self.stream.width, self.stream.height) != (w, h):
            image = cv2.copyMakeBorder(image, 0, self.stream.height - h, 0, self.stream.width - w,
                                       cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self):
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text.splitlines()[0]
