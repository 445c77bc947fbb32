"""What `predict` writes for its images and video frames: drawings and `detections.json` for images; for each
video an annotated video (its frame rate, divided by `every`, and its size) and JSON lines, one per frame;
and, when asked, annotation files for the next round of labelling (`data/label_writers.py`).

    with PredictionWriter("predictions", classes, labels="voc") as out:
        for frame, det in predictor.stream(["photos/", "clip.mp4"]):
            out.add(frame, det)

Names: `<stem>.jpg` for an image's drawing, `<stem>.mp4` and `<stem>.jsonl` for a video, numbered
(`<stem>_2`, ...) when an earlier input of the run had the same stem; a frame's labels are
`<video name>_<frame index, 6 digits>`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..data.label_writers import label_writer
from ..drawing import draw_detections
from ..files import atomic_write_text, cannot_write, make_folder
from .sources import Frame
from .video import VideoWriter

DETECTIONS_FILE = "detections.json"
LABELS_FOLDER = "labels"


def detection_records(det: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """JSON-able detections: class, class_id, score (5 decimals), box x1y1x2y2 (original pixels, 2 decimals)."""
    return [{"class": n, "class_id": int(i), "score": round(float(s), 5), "box": [round(float(v), 2) for v in b]}
            for n, i, s, b in zip(det["names"], det["ids"], det["scores"], det["boxes"])]


class PredictionWriter:
    """Writes each `(frame, detections)` as it comes (`add`); `close` ends the open video and writes
    `detections.json` and the label folder's class list. `every`: the step between taken frames (the
    annotated video's rate is the input's divided by it). `labels`: None, `voc` or `yolo` (`<folder>/labels/`)."""

    def __init__(self, folder, classes: Sequence[str], labels: Optional[str] = None, every: int = 1):
        self.folder = make_folder(folder)
        self.classes = list(classes)
        self.every = int(every)
        self.labels = label_writer(labels, self.folder / LABELS_FOLDER, classes) if labels else None
        self.records: List[Dict[str, Any]] = []
        self.taken: set = set()
        self.videos: List[Path] = []
        self._video = None            # (source, name, VideoWriter, JSON lines file) of the video being written

    def add(self, frame: Frame, det: Mapping[str, Any]):
        """Write one image's or video frame's detections (drawn, as JSON, as labels)."""
        if frame.video is None:
            name = self.unique(frame.source.stem)
            drawing = self.folder / f"{name}.jpg"
            try:
                self.draw(frame, det, drawing)
            except OSError as err:
                raise cannot_write(drawing, err) from None
            self.records.append({"image": frame.source.location, "drawing": f"{name}.jpg",
                                 "detections": detection_records(det)})
            label_name, source_file = name, frame.source.location
        else:
            name = self._video_for(frame)
            self._video[2].write(self.draw(frame, det))
            line = {"frame": frame.index, "time": None if frame.seconds is None else round(frame.seconds, 4),
                    "detections": detection_records(det)}
            self._video[3].write(json.dumps(line) + "\n")
            label_name, source_file = self.unique(f"{name}_{frame.index:06d}"), None
        if self.labels is not None:
            self.labels.add(label_name, frame.image, det["boxes"], det["ids"], source_file=source_file)

    def unique(self, stem: str) -> str:
        """`stem`, or `stem_2`, `stem_3`, ... when an earlier output of this writer took it."""
        name, n = stem, 2
        while name in self.taken:
            name, n = f"{stem}_{n}", n + 1
        self.taken.add(name)
        return name

    def _video_for(self, frame: Frame) -> str:
        """The name of the video being written for `frame`'s source; the previous one closed, a new one opened."""
        if self._video is not None and self._video[0] == frame.source:
            return self._video[1]
        self._close_video()
        name = self.unique(frame.source.stem)
        path = self.folder / f"{name}.mp4"
        try:
            writer = VideoWriter(path, frame.video.fps / self.every, (frame.video.width, frame.video.height))
            lines = open(self.folder / f"{name}.jsonl", "w")
        except OSError as err:
            raise cannot_write(path, err) from None
        self._video = (frame.source, name, writer, lines)
        self.videos.append(path)
        return name

    def _close_video(self):
        if self._video is not None:
            _, _, writer, lines = self._video
            self._video = None
            lines.close()
            writer.close()

    def draw(self, frame: Frame, det: Mapping[str, Any], path: Optional[Path] = None):
        return draw_detections(frame.image, det["boxes"], det["ids"], det["scores"], self.classes, path=path)

    def close(self):
        self._close_video()
        atomic_write_text(self.folder / DETECTIONS_FILE, json.dumps(self.records, indent=1))
        if self.labels is not None:
            self.labels.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
