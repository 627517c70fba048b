"""Optical-flow interpolation: a classical baseline for the frames between two keyframes, no learning involved.

Dense flow both ways comes from DIS (Kroeger et al. 2016, "Fast Optical Flow using Dense Inverse Search",
OpenCV's implementation). For each in-between time t, each keyframe's flow is scaled by t (or 1 - t, the
linear-motion approximation) and splatted forward to time t; each keyframe is then backward-warped to time t
along it with `cv2.remap`, and the two warps are blended with weights 1 - t and t, except where
forward-backward consistency says the pixel is seen in one keyframe only. Splatting the flow before warping
is the interpolation scheme of Baker et al. 2011 ("A Database and Evaluation Methodology for Optical Flow"),
simplified: it keeps a moving object whole instead of smearing its leading and trailing edges.

Needs OpenCV: `pip install "inbetween[eval]"`.
"""

from __future__ import annotations

import numpy as np

# A flow and the reverse flow at its target cancel to within this many pixels, plus this fraction of their
# lengths (fast motion is measured less precisely), or the pixel counts as occluded in the other keyframe.
OCCLUSION_TOLERANCE = 1.0
OCCLUSION_RELATIVE_TOLERANCE = 0.05


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise ImportError('flow interpolation needs OpenCV: pip install "inbetween[eval]"') from exc
    return cv2


def to_uint8_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 from an (H, W, 3) RGB array (or PIL image), uint8 or float in [0, 1]."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"`{name}` must be an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"`{name}` must be uint8 or float in [0, 1], got dtype {array.dtype}")


def pixel_grid(height: int, width: int) -> np.ndarray:
    """(H, W, 2) float32 (x, y) coordinates of every pixel."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def sample(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear samples of `image` (H, W) or (H, W, C) float32 at `coords` (H', W', 2) absolute (x, y).

    Points outside the image take the nearest edge pixel. Returns (H', W') or (H', W', C) float32.
    """
    cv2 = _cv2()
    return cv2.remap(image, coords[..., 0], coords[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def dense_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """DIS optical flow (OpenCV's MEDIUM preset, on grayscale) from `source` to `target`.

    `source`, `target`: (H, W, 3) uint8 RGB. Returns (H, W, 2) float32 (dx, dy): the content at (x, y) in
    `source` is at (x + dx, y + dy) in `target`.
    """
    cv2 = _cv2()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    source_gray = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
    target_gray = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY)
    return dis.calc(source_gray, target_gray, None)


def occlusion_mask(
    flow: np.ndarray,
    reverse_flow: np.ndarray,
    tolerance: float = OCCLUSION_TOLERANCE,
    relative_tolerance: float = OCCLUSION_RELATIVE_TOLERANCE,
) -> np.ndarray:
    """Pixels of the flow's source frame that are not seen in its target frame (forward-backward check).

    `flow`: (H, W, 2) source-to-target; `reverse_flow`: (H, W, 2) target-to-source. A pixel is occluded when
    its flow and the reverse flow at its target do not cancel to within `tolerance` pixels plus
    `relative_tolerance` times their lengths, or when its target lies outside the frame. Returns (H, W) bool.
    """
    height, width = flow.shape[:2]
    target = pixel_grid(height, width) + flow
    back = sample(reverse_flow, target)  # (H, W, 2) reverse flow at each pixel's target
    mismatch = np.linalg.norm(flow + back, axis=-1)
    allowed = tolerance + relative_tolerance * (np.linalg.norm(flow, axis=-1) + np.linalg.norm(back, axis=-1))
    x, y = target[..., 0], target[..., 1]
    outside = (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
    return (mismatch > allowed) | outside


def flow_to_time(flow: np.ndarray, occluded: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each pixel of the frame at time `t` comes from in a keyframe, by splatting its flow scaled by `t`.

    Every keyframe pixel p lands at p + t * flow(p) and claims the pixel that point rounds to; the other three
    pixels around it take a claim only where no rounded landing reaches them (small holes where motion
    stretches). Among rival claims, a keyframe pixel seen in both keyframes beats one that gets occluded (it
    is in front), then the nearest landing wins.

    Args:
        flow: (H, W, 2) flow from this keyframe to the other.
        occluded: (H, W) bool, this keyframe's pixels not seen in the other (`occlusion_mask`).
        t: time from this keyframe (0) to the other (1).

    Returns:
        source: (H, W, 2) float32 (x, y) in this keyframe to sample for each time-t pixel; where nothing
            landed, the plain approximation x - t * flow(x).
        claimed: (H, W) bool, some keyframe pixel landed there (False: not seen in this keyframe).
        seen_here_only: (H, W) bool, the pixel that won is occluded in the other keyframe.
    """
    height, width = occluded.shape
    grid = pixel_grid(height, width)
    landing = (grid + t * flow).reshape(-1, 1, 2)  # (P, 1, 2)
    corners = np.floor(landing) + np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)  # (P, 4, 2)
    offset = np.abs(corners - landing)  # (P, 4, 2)
    distance = np.linalg.norm(offset, axis=-1)  # (P, 4), below 1.5
    # The corner the landing rounds to outranks the others, which only fill holes (else objects grow a pixel).
    not_nearest = np.any(offset > 0.5, axis=-1)
    sources = np.broadcast_to(np.arange(height * width)[:, None], distance.shape)
    x, y = corners[..., 0].astype(np.int64), corners[..., 1].astype(np.int64)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    targets, sources = (y * width + x)[inside], sources[inside]
    rank = 4.0 * not_nearest[inside] + 2.0 * occluded.reshape(-1)[sources] + distance[inside]  # (K,) < 8, lower wins
    order = np.argsort(targets * 8.0 + rank, kind="stable")
    winners, first = np.unique(targets[order], return_index=True)
    winning_sources = sources[order][first]

    backward = -t * flow.reshape(-1, 2)  # plain approximation (a new array), replaced where a pixel landed
    backward[winners] = -t * flow.reshape(-1, 2)[winning_sources]
    claimed = np.zeros(height * width, dtype=bool)
    claimed[winners] = True
    seen_here_only = np.zeros(height * width, dtype=bool)
    seen_here_only[winners] = occluded.reshape(-1)[winning_sources]
    source = grid + backward.reshape(height, width, 2)
    return source, claimed.reshape(height, width), seen_here_only.reshape(height, width)


def frame_at_time(
    first: np.ndarray,
    last: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray,
    first_occluded: np.ndarray,
    last_occluded: np.ndarray,
    t: float,
) -> np.ndarray:
    """The frame at time `t` in (0, 1) between keyframes `first` and `last`, (H, W, 3) uint8 each.

    `forward`/`backward`: (H, W, 2) flows first-to-last and last-to-first; `first_occluded`/`last_occluded`:
    (H, W) bool from `occlusion_mask`. Returns (H, W, 3) uint8: the two warps blended (1 - t, t), or one warp
    alone where the pixel is seen in that keyframe only.
    """
    first_source, first_claimed, first_only = flow_to_time(forward, first_occluded, t)
    last_source, last_claimed, last_only = flow_to_time(backward, last_occluded, 1.0 - t)
    first_warp = sample(first.astype(np.float32), first_source)
    last_warp = sample(last.astype(np.float32), last_source)

    use_first_only = first_only | ~last_claimed
    use_last_only = last_only | ~first_claimed
    last_weight = np.full(first_claimed.shape, t, dtype=np.float32)
    last_weight[use_first_only & ~use_last_only] = 0.0
    last_weight[use_last_only & ~use_first_only] = 1.0  # both or neither: no evidence either way, keep the blend
    last_weight = last_weight[..., None]
    frame = (1.0 - last_weight) * first_warp + last_weight * last_warp
    return np.rint(np.clip(frame, 0.0, 255.0)).astype(np.uint8)


def interpolate_flow(first: np.ndarray, last: np.ndarray, num_frames: int) -> np.ndarray:
    """`num_frames` frames from `first` to `last` by optical-flow interpolation, keyframes included.

    `first`, `last`: (H, W, 3) RGB, uint8 or float in [0, 1]. Returns (num_frames, H, W, 3) uint8; frame i is
    at time t = i / (num_frames - 1), and frames 0 and num_frames - 1 are the keyframes exactly (as uint8).
    """
    if num_frames < 2:
        raise ValueError(f"`num_frames` must be at least 2 (a first and a last frame), got {num_frames}")
    first, last = to_uint8_rgb(first, "first"), to_uint8_rgb(last, "last")
    if first.shape != last.shape:
        raise ValueError(f"`first` and `last` must have one shape, got {first.shape} and {last.shape}")
    forward, backward = dense_flow(first, last), dense_flow(last, first)
    first_occluded = occlusion_mask(forward, backward)
    last_occluded = occlusion_mask(backward, forward)
    frames = [first]
    for index in range(1, num_frames - 1):
        t = index / (num_frames - 1)
        frames.append(frame_at_time(first, last, forward, backward, first_occluded, last_occluded, t))
    frames.append(last)
    return np.stack(frames)
