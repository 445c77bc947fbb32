"""What a SOURCE of `predict` means, and its frames read and batched in a worker thread beside the network.

    sources = Sources(["photos/", "shots/*.png", "list.txt", "clip.mp4", "rtsp://cam/1", "0"])
    sources.items        # [Source("image", "photos/a.jpg"), ..., Source("video", "clip.mp4"), ...]
    sources.ignored      # how many files in the folders (and glob matches) are neither images nor videos
    for frame, result in stream(sources, predict, prepare, batch_size=8): ...

A SOURCE is an image file; a video file (by its extension, in any case); a folder, searched recursively for
images and videos (by extension, in any case; other files are counted in `ignored`); a glob (`shots/*.jpg`,
`data/**/*.png`); a `.txt` file listing one path per line (relative to the list's folder: images, videos or
folders); a stream URL (rtsp://, http://, ...) or a camera index (`0`). A file of another extension given by
name is tried as an image.

`stream` runs any runtime: `prepare(images)` (optional) runs in the worker thread, beside the network, and
`predict(prepared)` in the caller's thread returns one result per image. Decoding (PyAV, OpenCV) and the
network (MXNet, onnxruntime) release the GIL, so the two overlap on a multi-core CPU.
"""
from __future__ import annotations

import glob
import os
import queue
import threading
import warnings
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.images import image_file_problem, read_image
from ..data.yolo_txt import IMAGE_EXTENSIONS
from .video import VIDEO_EXTENSIONS, VideoInfo, is_stream, open_video

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class Source:
    """kind: `image` or `video` (a file, a stream URL or a camera index); location: its path or URL."""

    kind: str
    location: str

    @property
    def stem(self) -> str:
        """A name for what is written of it: the file's stem, else the URL's last part (`stream` if none)."""
        name = Path(self.location.split("?")[0].rstrip("/")).stem
        return name or "stream"


@dataclass
class Frame:
    """One image to detect in: `image (H, W, 3) uint8 RGB` from `source`; for a video frame also its `index`
    in the video (from its timestamp), its time in `seconds` and the video's `video` info."""

    image: np.ndarray
    source: Source
    index: Optional[int] = None
    seconds: Optional[float] = None
    video: Optional[VideoInfo] = None


def media_kind(path: Path) -> Optional[str]:
    """`image` or `video` by the file's extension (any case), else None."""
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


class Sources:
    """The SOURCE arguments resolved into images and videos (`items`, in order, each once); `ignored`: the
    other files found in folders and glob matches; `problems`: SOURCEs that name nothing (a glob without a
    match, a folder without images or videos, a list file that cannot be read)."""

    def __init__(self, args: Sequence[Any] | str | Path):
        args = [args] if isinstance(args, (str, Path)) else list(args)
        self.items: List[Source] = []
        self.ignored = 0
        self.problems: List[str] = []
        for arg in args:
            self._resolve(str(arg), listed=False)
        self.items = list(dict.fromkeys(self.items))

    def _resolve(self, text: str, listed: bool):
        path = Path(text).expanduser()
        if is_stream(text) and not path.exists():
            self.items.append(Source("video", text))
        elif path.is_dir():
            if not self._add_files(sorted(p for p in path.rglob("*") if p.is_file())):
                self.problems.append(f"{path}: no images or videos in this folder")
        elif path.is_file() and path.suffix.lower() == ".txt":
            if listed:
                self.problems.append(f"{path}: a list file inside a list file; skipped")
                return
            try:
                lines = [line.strip() for line in path.read_text().splitlines()]
            except (OSError, UnicodeDecodeError) as err:
                self.problems.append(f"{path}: cannot read the list ({err})")
                return
            for line in lines:
                if line and not line.startswith("#"):
                    listed_path = Path(line).expanduser()
                    self._resolve(line if is_stream(line) or listed_path.is_absolute()
                                  else os.path.normpath(path.parent / listed_path), listed=True)
        elif not path.exists() and any(c in text for c in GLOB_CHARACTERS):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            if not any(m.is_file() for m in matches):
                self.problems.append(f"{text}: no file matches")
            self._add_files([m for m in matches if m.is_file()])
        else:          # a file by name (or a missing one): its reader says what is wrong
            self.items.append(Source(media_kind(path) or "image", str(path)))

    def _add_files(self, files: Sequence[Path]) -> int:
        """Add the images and videos of `files`, count the others; -> how many were added."""
        added = 0
        for path in files:
            kind = media_kind(path)
            if kind is None:
                self.ignored += 1
            else:
                self.items.append(Source(kind, str(path)))
                added += 1
        return added

    def frame_count(self, every: int = 1, max_frames: Optional[int] = None) -> Optional[int]:
        """How many frames `read_frames` will give at most (images count one each), from the videos' headers;
        None when a stream, a camera or a video without a stated frame count is among them."""
        total = 0
        for item in self.items:
            if item.kind == "image":
                total += 1
                continue
            if is_stream(item.location):
                return None
            try:
                reader = open_video(item.location)
            except ValueError:
                continue                                   # reported when it is read
            frames = reader.info.frames
            reader.close()
            if frames is None:
                return None
            taken = -(-frames // every)
            total += min(taken, max_frames) if max_frames else taken
        return total


def read_frames(items: Iterable[Source], every: int = 1, max_frames: Optional[int] = None,
                on_problem: Callable[[str], None] = print) -> Iterator[Frame]:
    """Every image, and one frame in `every` of each video (at most `max_frames` of each); a file that cannot
    be read (missing, not an image, cut short) and a frame that does not decode are reported (`on_problem`)
    and skipped."""
    for item in items:
        if item.kind == "image":
            try:
                image = read_image(item.location)
            except FileNotFoundError as err:
                on_problem(f"{err}; skipped")
                continue
            cut = image_file_problem(item.location)
            if cut:
                on_problem(f"{item.location}: truncated image ({cut}); skipped")
                continue
            yield Frame(image, item)
            continue
        try:
            reader = open_video(item.location)
        except ValueError as err:
            on_problem(f"{err}; skipped")
            continue
        taken = 0
        with closing(reader.frames(on_problem)) as frames:
            for n, (index, seconds, image) in enumerate(frames):
                if n % every:
                    continue
                yield Frame(image, item, index, seconds, reader.info)
                taken += 1
                if max_frames and taken >= max_frames:
                    break


def stream(source, predict: Callable[[Any], Sequence[Any]], prepare: Optional[Callable[[List[np.ndarray]], Any]] = None,
           batch_size: int = 8, every: int = 1, max_frames: Optional[int] = None,
           on_problem: Optional[Callable[[str], None]] = None, depth: int = 2) -> Iterator[Tuple[Frame, Any]]:
    """`(frame, result)` for every image and taken video frame of `source` (SOURCE arguments or `Sources`).

    Frames are read, grouped `batch_size` at a time and passed through `prepare(images)` (default: the list of
    images itself) in a worker thread, up to `depth` batches ahead; `predict(prepared)` runs in this thread
    and returns one result per image. Problems (unreadable files, corrupt frames, globs without a match)
    go to `on_problem` (default: a warning) and never stop the others."""
    for name, value in (("batch_size", batch_size), ("every", every), ("depth", depth)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    sources = source if isinstance(source, Sources) else Sources(source)
    on_problem = on_problem or (lambda text: warnings.warn(text, stacklevel=2))
    for problem in sources.problems:
        on_problem(problem)
    frames = read_frames(sources.items, int(every), max_frames, on_problem)

    def batches():
        with closing(frames):
            for chunk in chunked(frames, int(batch_size)):
                images = [f.image for f in chunk]
                yield chunk, (prepare(images) if prepare is not None else images)

    for chunk, prepared in prefetch(batches(), depth):
        results = predict(prepared)
        if len(results) != len(chunk):
            raise RuntimeError(f"predict returned {len(results)} results for {len(chunk)} images")
        yield from zip(chunk, results)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` consecutive items (the last one shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """The items of `items`, produced in a worker thread up to `depth` ahead of the consumer. An exception in
    the worker is raised here, in order; closing this generator (or leaving its loop) stops the worker."""
    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as err:  # handed to the consumer, raised there
            put((end, err))
        finally:
            if hasattr(iterator, "close"):
                iterator.close()

    worker = threading.Thread(target=work, name="gluon-yolo3-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = slots.get()
            if err is not None:
                raise err
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join()
