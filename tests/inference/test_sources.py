"""What a SOURCE of `predict` means (folders, globs, list files, videos, streams), frames read from it with bad
files and corrupt frames skipped, and `stream` batching them through any runtime in a worker thread."""
import threading
from fractions import Fraction

import cv2
import numpy as np
import pytest

from gluon_yolo3.inference.sources import Source, Sources, prefetch, read_frames, stream
from gluon_yolo3.inference.video import open_video


def write_image(path, value=120, size=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full(size + (3,), value, np.uint8))
    return path


@pytest.fixture
def tree(tmp_path, moving_dog, write_video):
    """A folder tree: images in several cases of extension, a video, and files that are neither."""
    root = tmp_path / "tree"
    for name in ("a.jpg", "sub/b.PNG", "sub/deeper/c.JPeG", "sub/d.bmp"):
        write_image(root / name)
    write_video(root / "sub/clip.MP4", moving_dog(6)[0])
    (root / "notes.txt").write_text("not a list: inside a folder\n")
    (root / "sub/data.csv").write_text("1,2\n")
    (root / "sub/deeper/.hidden").write_text("")
    return root


def test_a_folder_is_searched_recursively_in_any_case_of_extension(tree):
    found = Sources([tree])
    assert sorted((s.kind, s.location) for s in found.items) == sorted(
        [("image", str(tree / n)) for n in ("a.jpg", "sub/b.PNG", "sub/deeper/c.JPeG", "sub/d.bmp")]
        + [("video", str(tree / "sub/clip.MP4"))])
    assert found.ignored == 3 and found.problems == []


def test_globs_list_files_streams_and_duplicates(tree, tmp_path):
    listing = tmp_path / "lists" / "inputs.txt"
    listing.parent.mkdir()
    nested = tmp_path / "lists" / "nested.txt"
    nested.write_text("a.jpg\n")
    listing.write_text(f"# a comment\n../tree/a.jpg\n\n{tree / 'sub/d.bmp'}\n../tree/sub/deeper\nnested.txt\n"
                       "rtsp://camera.local/live\n")
    found = Sources([str(tree / "**/*.PNG"), listing, str(tree / "*.jpg"), "0", str(tmp_path / "none*.jpg")])
    assert [(s.kind, s.location) for s in found.items] == [
        ("image", str(tree / "sub/b.PNG")), ("image", str(tree / "a.jpg")), ("image", str(tree / "sub/d.bmp")),
        ("image", str(tree / "sub/deeper/c.JPeG")), ("video", "rtsp://camera.local/live"), ("video", "0")]
    assert found.problems == [f"{nested}: a list file inside a list file; skipped",
                              f"{tmp_path / 'none*.jpg'}: no file matches"]
    assert Sources([tree / "a.jpg", tree / "a.jpg"]).items == [Source("image", str(tree / "a.jpg"))]
    (tmp_path / "empty/sub").mkdir(parents=True)
    (tmp_path / "empty/sub/readme.md").write_text("x")
    nothing = Sources([tmp_path / "empty"])
    assert nothing.items == [] and nothing.ignored == 1
    assert nothing.problems == [f"{tmp_path / 'empty'}: no images or videos in this folder"]


def test_unreadable_and_truncated_images_are_skipped_with_a_warning(tree, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    cut = tmp_path / "cut.jpg"
    data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    cut.write_bytes(data[:len(data) // 2])
    problems = []
    frames = list(read_frames(Sources([tree / "a.jpg", fake, cut, tmp_path / "ghost.png", tree / "sub/b.PNG"]).items,
                              on_problem=problems.append))
    assert [f.source.location for f in frames] == [str(tree / "a.jpg"), str(tree / "sub/b.PNG")]
    assert frames[0].image.shape == (20, 30, 3) and frames[0].video is None
    assert len(problems) == 3
    assert "fake.jpg" in problems[0] and "cut.jpg" in problems[1] and "truncated" in problems[1]
    assert "ghost.png" in problems[2]


def test_a_video_is_read_with_its_rate_size_and_frame_times(tmp_path, moving_dog, write_video):
    frames, _ = moving_dog(12)
    path = write_video(tmp_path / "clip.mp4", frames, fps=30)
    info = open_video(path).info
    assert (info.fps, info.width, info.height, info.frames) == (Fraction(30), 320, 240, 12)
    got = list(read_frames([Source("video", str(path))]))
    assert [f.index for f in got] == list(range(12))
    assert [f.seconds for f in got] == pytest.approx([i / 30 for i in range(12)])
    for frame, want in zip(got, frames):      # H.264 is lossy: near, not equal
        assert np.abs(frame.image.astype(int) - want).mean() < 4
    taken = list(read_frames([Source("video", str(path))] * 2, every=3, max_frames=3))
    assert [f.index for f in taken] == [0, 3, 6, 0, 3, 6]
    assert Sources([path]).frame_count(every=5) == 3 and Sources([path, path.parent]).frame_count(max_frames=4) == 4


def test_a_corrupt_frame_is_skipped_and_the_frames_after_it_kept(tmp_path):
    path = tmp_path / "mjpeg.avi"     # one JPEG per frame: break the sixth, as a damaged recording would have it
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(12):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == 12
    data[starts[5]:starts[5] + 200] = bytes(200)
    path.write_bytes(bytes(data))
    problems = []
    frames = list(read_frames([Source("video", str(path))], on_problem=problems.append))
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert [int(f.image.mean() + 0.5) for f in frames] == pytest.approx([20 * i for i in (0, 1, 2, 3, 4, 6, 7, 8, 9,
                                                                                          10, 11)], abs=2)
    assert len(problems) == 1 and "mjpeg.avi" in problems[0] and "corrupt frame at 0.50 s" in problems[0]
    other = tmp_path / "text.mp4"
    other.write_text("not a video")
    problems.clear()
    assert list(read_frames([Source("video", str(other))], on_problem=problems.append)) == []
    assert len(problems) == 1 and "cannot open video" in problems[0] and "text.mp4" in problems[0]


def test_stream_batches_any_runtime_in_order(tree, tmp_path):
    calls, threads = [], []

    def prepare(images):          # runs in the worker thread
        threads.append(threading.current_thread().name)
        return np.stack([cv2.resize(i, (8, 8)) for i in images])

    def predict(batch):           # a runtime with a batch predict method: one result per image
        calls.append(len(batch))
        return [float(x.mean()) for x in batch]

    sources = [tree / "a.jpg", tree / "sub/b.PNG", tree / "sub/clip.MP4", tree / "sub/d.bmp", tmp_path / "ghost.jpg"]
    problems = []
    results = list(stream(sources, predict, prepare, batch_size=4, on_problem=problems.append))
    assert [(f.source.location.rsplit("/", 1)[-1], f.index) for f, _ in results] == (
        [("a.jpg", None), ("b.PNG", None)] + [("clip.MP4", i) for i in range(6)] + [("d.bmp", None)])
    assert calls == [4, 4, 1] and set(threads) == {"gluon-yolo3-prefetch"}
    assert results[0][1] == pytest.approx(120, abs=0.5)
    assert len(problems) == 1 and "ghost.jpg" in problems[0]
    with pytest.raises(ValueError, match="every must be >= 1"):
        next(stream(sources, predict, every=0))


def test_prefetch_raises_the_workers_error_and_stops_when_left():
    def items():
        yield 1
        raise OSError("disk gone")
    got = prefetch(items())
    assert next(got) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(got)
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1
    before = threading.active_count()
    for n in prefetch(endless(), depth=2):
        if n == 3:
            break
    assert threading.active_count() == before and len(produced) <= 8
