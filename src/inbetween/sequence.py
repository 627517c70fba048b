"""Keyframe sequences and loops: one video through any number of keyframes, sampled jointly.

``n`` keyframes ``K_1 ... K_n`` make ``n - 1`` *segments* ``(K_i, K_{i+1})``, and a loop one more,
``(K_n, K_1)``. Each segment is a video of ``N = num_frames`` frames that includes both its keyframes, and
consecutive segments share their boundary frame, so the video has ``(n - 1)(N - 1) + 1`` frames, a loop
``n (N - 1)`` (its last frame is followed by its first: no frame repeats where it wraps).

**Joint sampling.** The segments are one batch of keyframe pairs for :meth:`InbetweenPipeline.sample_latents`,
tied by a :class:`~inbetween.sampling.Coupling` (:func:`shared_frame_coupling`): ``tie_noise`` gives the second copy
of every boundary frame (segment ``i + 1``'s first frame) the noise drawn for the first copy (segment ``i``'s last
frame), and ``share`` replaces both copies' denoised estimates by their mean before any update uses them. Every
update of every sampler is elementwise in ``x``, the estimate and that tied noise, so the two copies start equal
and stay bit-equal at every noise level: no segment is generated blind to its neighbours, each sees at the join
what both segments agree on. Why the sampler's invariants survive the fusion:

- *noise level*: both copies hold ``x = x0 + sigma * eps`` with the same ``eps`` (tied draws) at the sampler's own
  ``sigma``; averaging two estimates of the same clean frame is again an estimate of it, so the Euler update takes
  the shared frame from ``sigma`` to ``sigma_next`` exactly as it takes every other frame;
- *re-injection*: its noise is a standard-normal draw like any other, tied the same way, so the shared frame goes
  back from ``sigma_next`` to ``sigma`` with the same fresh noise in both copies and keeps the variance
  ``sigma^2`` the repeated step expects.

**Chunks** (``segment_batch``): a sequence whose joint batch does not fit in memory is sampled ``segment_batch``
segments at a time, each chunk constrained to the boundary latent the previous chunk already generated:
``share`` pins the estimate of the chunk's first frame to that clean latent ``x0`` (and, for the chunk that closes a
loop, the estimate of its last frame to the first chunk's first frame). The frame's ``x`` stays the sampler's own:
from its initial noise the Euler updates with a fixed estimate keep ``x - x0`` pointing along the same noise,
scaled by ``sigma_next / sigma``, so its noise level is the sampler's at every step, re-injection adds noise of the
sampler's variance to it like to every other frame, and at ``sigma = 0`` it lands on ``x0``: the other frames of the
chunk are denoised next to a correctly noised copy of the frame they must continue from. Chunks draw from the one
generator in turn, so a seed and a ``segment_batch`` give one video (another ``segment_batch``, another video).

**Families whose VAE compresses time** (Wan: a segment's last latent frame holds four frames, the next segment's
first latent frame one) share no latent frame between segments: there the segments are sampled as one batch but
not coupled, each conditioned on the keyframes at its ends, decoded one by one and joined in pixels, each boundary
frame once (:func:`finish_sequence`); ``output_type="latent"`` gives their latents ``(S, N', C, h, w)``.

**Decoding.** The joined latent sequence (each shared frame once) is decoded as one video, ``decode_chunk_size``
frames at a time: the temporal decoder sees the frames across a join as neighbours and no frame is decoded twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image
import torch

from .config import SamplingConfig
from .families.base import InbetweenMixin, with_frames
from .sampling import Coupling

InbetweenPipeline = InbetweenMixin  # any family's pipeline

Keyframes = list[PIL.Image.Image] | torch.Tensor  # n PIL images, or a (n, 3, H, W) tensor in [0, 1]
Join = tuple[int, int]  # (a, b): segment a's last frame is segment b's first frame
Pin = tuple[int, int, torch.Tensor]  # (segment, frame 0 or -1, its known clean latent (C, h, w))
StepEndCallback = Callable[[InbetweenPipeline, int, torch.Tensor, dict], dict | None]  # the pipeline's


def sequence_length(num_keyframes: int, num_frames: int, loop: bool = False) -> int:
    """Frames of the video through ``num_keyframes`` keyframes with segments of ``num_frames`` frames:
    ``(n - 1)(N - 1) + 1``, or ``n (N - 1)`` for a loop."""
    segments = num_keyframes if loop else num_keyframes - 1
    return segments * (num_frames - 1) + (0 if loop else 1)


def keyframe_positions(num_keyframes: int, num_frames: int) -> list[int]:
    """The frame index of each keyframe in the joined video (the loop's return to ``K_1`` is not a frame)."""
    return [i * (num_frames - 1) for i in range(num_keyframes)]


def segment_joins(num_segments: int, loop: bool) -> list[Join]:
    """The shared boundary frames of ``num_segments`` consecutive segments, closing the loop with ``loop``."""
    joins = [(i, i + 1) for i in range(num_segments - 1)]
    return joins + [(num_segments - 1, 0)] if loop else joins


def shared_frame_coupling(joins: Sequence[Join], pins: Sequence[Pin] = ()) -> Coupling:
    """The coupling of a batch of segments ``(S, N, ...)``: each join's two copies get the same noise and the mean
    of their two estimates; each pinned frame's estimate is its known clean latent (see the module docstring)."""
    ends = torch.tensor([a for a, _ in joins], dtype=torch.long)
    starts = torch.tensor([b for _, b in joins], dtype=torch.long)

    def tie_noise(draw: torch.Tensor) -> torch.Tensor:
        if not joins:
            return draw
        tied = draw.clone()
        tied[starts, 0] = draw[ends, -1]
        return tied

    def share(denoised: torch.Tensor) -> torch.Tensor:
        if not joins and not pins:
            return denoised
        shared = denoised.clone()
        if joins:
            mean = (denoised[ends, -1] + denoised[starts, 0]) / 2
            shared[ends, -1] = mean  # one tensor for both copies: they stay bit-equal
            shared[starts, 0] = mean
        for segment, frame, latent in pins:
            shared[segment, frame] = latent.to(shared.device, shared.dtype)
        return shared

    return Coupling(tie_noise=tie_noise, share=share)


def join_segments(segments: torch.Tensor, loop: bool = False) -> torch.Tensor:
    """``(S, N, ...)`` segments -> ``(L, ...)`` frames: each boundary frame once (the earlier segment's copy), and
    for a loop without the last frame, which is the first one again."""
    joined = torch.cat([segments[0], *(segment[1:] for segment in segments[1:])])
    return joined[:-1] if loop else joined


def plan_chunks(num_segments: int, segment_batch: int | None) -> list[range]:
    """Consecutive ranges of at most ``segment_batch`` segments (all of them in one with ``None``)."""
    size = num_segments if segment_batch is None else segment_batch
    return [range(start, min(start + size, num_segments)) for start in range(0, num_segments, size)]


def check_sequence(keyframes: Keyframes, loop: bool) -> None:
    """Raise ``ValueError`` for fewer than two keyframes, keyframes of different aspects (the pipeline's rule), or a
    loop whose last keyframe already is its first."""
    if not isinstance(keyframes, list | tuple | torch.Tensor):
        raise ValueError(f"`keyframes` must be a list of PIL images or a (n, 3, H, W) tensor, got {type(keyframes)}")
    if isinstance(keyframes, torch.Tensor) and keyframes.ndim != 4:
        raise ValueError(f"a `keyframes` tensor must be (n, 3, H, W) in [0, 1], got shape {tuple(keyframes.shape)}")
    if len(keyframes) < 2:
        raise ValueError(f"a sequence needs at least 2 keyframes, got {len(keyframes)}; pass FIRST LAST or more")
    for index in range(1, len(keyframes)):
        try:
            InbetweenPipeline.check_keyframes(keyframes[0], keyframes[index])
        except ValueError as exc:
            raise ValueError(f"keyframes 0 and {index}: {exc}") from exc
    if loop and same_image(keyframes[0], keyframes[-1]):
        raise ValueError(
            "with `loop` the video returns to the first keyframe by itself, but the last keyframe is the first one "
            "again; drop it from the list, or drop `loop`"
        )


def same_image(a: PIL.Image.Image | torch.Tensor, b: PIL.Image.Image | torch.Tensor) -> bool:
    """Whether two keyframes have the same pixels."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, PIL.Image.Image) and isinstance(b, PIL.Image.Image):
        return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    return False


def _segment_keyframes(keyframes: Keyframes, loop: bool) -> tuple[Keyframes, Keyframes]:
    """The first and last keyframes of every segment, as lists or tensors like ``keyframes``."""
    if isinstance(keyframes, torch.Tensor):
        lasts = torch.cat([keyframes[1:], keyframes[:1]]) if loop else keyframes[1:]
        return (keyframes if loop else keyframes[:-1]), lasts
    keyframes = list(keyframes)
    return (keyframes if loop else keyframes[:-1]), keyframes[1:] + (keyframes[:1] if loop else [])


def sample_segment_latents(
    pipe: InbetweenPipeline,
    keyframes: Keyframes,
    config: SamplingConfig,
    *,
    loop: bool = False,
    generator: torch.Generator | None = None,
    segment_batch: int | None = None,
    callback_on_step_end: StepEndCallback | None = None,
) -> torch.Tensor:
    """The sampled latents of every segment, ``(S, N, 4, H/8, W/8)`` float32 (each boundary frame in both of its
    segments; bit-equal copies within a chunk), from checked keyframes and a filled-in ``config``.
    ``callback_on_step_end`` is the pipeline's, called after every step of every chunk (chunks run in turn)."""
    firsts, lasts = _segment_keyframes(keyframes, loop)
    num_segments = len(firsts)
    chunks = plan_chunks(num_segments, segment_batch)
    segments: list[torch.Tensor] = []
    for chunk in chunks:
        a, b = chunk.start, chunk.stop
        whole = a == 0 and b == num_segments
        joins: list[Join] = []
        pins: list[Pin] = []
        if pipe.latent_frames_are_frames:  # else the keyframes alone tie the segments (see finish_sequence)
            joins = segment_joins(len(chunk), loop and whole)
            if a > 0:  # continue from the frame the previous chunk ended on
                pins.append((0, 0, segments[a - 1][-1]))
            if loop and b == num_segments and not whole:  # close the loop on the first chunk's first frame
                pins.append((len(chunk) - 1, -1, segments[0][0]))
        latents = pipe.sample_latents(
            firsts[a:b],
            lasts[a:b],
            config,
            generator=generator,
            coupling=shared_frame_coupling(joins, pins),
            callback_on_step_end=callback_on_step_end,
        )
        segments.extend(latents)
    return torch.stack(segments)


def decode_sequence(
    pipe: InbetweenPipeline,
    latents: torch.Tensor,
    decode_chunk_size: int,
    output_type: str,
    keyframe_pixels: dict[int, torch.Tensor] | None = None,
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Joined latents ``(L, 4, h, w)`` -> the frames as ``output_type``, decoded as ONE video ``decode_chunk_size``
    frames at a time (the pipeline's chunks), each chunk moved to the CPU as soon as it is decoded: the device
    holds one chunk's frames however long the sequence. ``keyframe_pixels`` ``{frame: (1, 3, H, W) in [-1, 1]}``
    replace the decoded frames at those positions (keyframe-exact ends)."""
    chunks = [
        pipe.decode_latents(chunk.unsqueeze(0), decode_chunk_size).cpu() for chunk in latents.split(decode_chunk_size)
    ]
    video = with_frames(torch.cat(chunks, dim=2), keyframe_pixels or {})  # (1, 3, L, H, W) in [-1, 1]
    return pipe.video_processor.postprocess_video(video=video, output_type=output_type)[0]


def keyframe_pixels(pipe: InbetweenPipeline, keyframes: Keyframes, config: SamplingConfig) -> dict[int, torch.Tensor]:
    """``{frame: (1, 3, H, W) in [-1, 1]}``: each keyframe's own pixels at its frame of the joined video."""
    images = pipe.preprocess_keyframes(keyframes, config.height, config.width)  # (n, 3, H, W)
    positions = keyframe_positions(len(keyframes), config.num_frames)
    return {t: image.unsqueeze(0) for t, image in zip(positions, images, strict=True)}


def finish_sequence(
    pipe: InbetweenPipeline,
    keyframes: Keyframes,
    segments: torch.Tensor,
    config: SamplingConfig,
    output_type: str,
    loop: bool,
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """The video of sampled ``segments`` ``(S, N', C, h, w)``, each boundary frame once. Where latent frames are frames
    (SVD) the segments are joined in latent space and decoded as one video; a family whose VAE compresses time (Wan:
    no latent frame is shared between segments) decodes each segment on its own and joins them in pixels, both
    segments conditioned on the keyframe at their join. ``exact_ends`` writes every keyframe's pixels at its frame;
    ``output_type="latent"`` gives the joined latents ``(L, C, h, w)``, or the segments' for a compressing VAE."""
    pixels = keyframe_pixels(pipe, keyframes, config) if config.exact_ends and output_type != "latent" else None
    if pipe.latent_frames_are_frames:
        latents = join_segments(segments, loop)  # (L, C, h, w)
        if output_type == "latent":
            return latents
        return decode_sequence(pipe, latents, config.decode_chunk_size, output_type, pixels)
    if output_type == "latent":
        return segments
    videos = [pipe.decode_latents(segment.unsqueeze(0), config.decode_chunk_size).cpu() for segment in segments]
    video = join_segments(torch.cat(videos).transpose(1, 2), loop).transpose(0, 1).unsqueeze(0)  # (1, 3, L, H, W)
    video = with_frames(video, pixels or {})
    return pipe.video_processor.postprocess_video(video=video, output_type=output_type)[0]


@torch.no_grad()
def interpolate_sequence(
    pipe: InbetweenPipeline,
    keyframes: Keyframes,
    config: SamplingConfig | None = None,
    *,
    loop: bool = False,
    generator: torch.Generator | None = None,
    segment_batch: int | None = None,
    output_type: str = "pil",
    allow_oversize: bool = False,
    callback_on_step_end: StepEndCallback | None = None,
    **options: object,
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    r"""The video through ``keyframes`` (all included), sampled jointly (see the module docstring).

    Args:
        pipe (`InbetweenPipeline`): the pipeline (its adapter, device and dtype as loaded).
        keyframes (`list[PIL.Image.Image]` or `torch.Tensor`): ``n >= 2`` keyframes of one aspect, or a
            ``(n, 3, H, W)`` tensor in [0, 1].
        config (`SamplingConfig`, *optional*), **options: the sampling options as for the pipeline's ``__call__``;
            ``num_frames`` is the length of each segment, both keyframes included.
        loop (`bool`): add the segment from the last keyframe back to the first; the video then has no repeated
            frame where it wraps.
        generator (`torch.Generator`, *optional*): the source of all noise; same seed, same video.
        segment_batch (`int`, *optional*): segments sampled together (default: all). Fewer lower the peak memory
            (it is that of a call on ``segment_batch`` pairs); each batch continues from the last frame of the
            previous one.
        output_type (`str`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
        allow_oversize (`bool`): run even when the estimated peak memory of one chunk exceeds what is available.
        callback_on_step_end (`Callable`, *optional*): the pipeline's `callback(pipe, step, sigma, {"latents": ...})`,
            after every denoising step of every chunk in turn (``step`` counts from 0 in each chunk); progress bars
            and cancelling (raise from it) hook in here.

    Returns:
        ``L = (n - 1)(N - 1) + 1`` frames (``n (N - 1)`` with ``loop``): a list of PIL images, an array
        ``(L, H, W, 3)`` or a tensor ``(L, 3, H, W)`` in [0, 1] (on the CPU), or the latents ``(L, 4, H/8, W/8)``.
        Two keyframes without ``loop`` are the pipeline's own call, frame for frame.
    """
    check_sequence(keyframes, loop)
    if not isinstance(config, SamplingConfig | None):
        raise ValueError(f"`config` must be a SamplingConfig, got {type(config).__name__}")
    if segment_batch is not None and segment_batch < 1:
        raise ValueError(f"`segment_batch` must be at least 1, got {segment_batch}")
    if len(keyframes) == 2 and not loop:
        video = pipe(
            keyframes[0],
            keyframes[1],
            config,
            generator=generator,
            output_type=output_type,
            allow_oversize=allow_oversize,
            callback_on_step_end=callback_on_step_end,
            **options,
        )
        return video.frames[0]
    num_segments = len(keyframes) if loop else len(keyframes) - 1
    chunk_size = min(segment_batch or num_segments, num_segments)
    config = pipe.prepare(keyframes[0], config, chunk_size, output_type, allow_oversize, options)

    segments = sample_segment_latents(
        pipe,
        keyframes,
        config,
        loop=loop,
        generator=generator,
        segment_batch=segment_batch,
        callback_on_step_end=callback_on_step_end,
    )
    frames = finish_sequence(pipe, keyframes, segments, config, output_type, loop)
    pipe.maybe_free_model_hooks()
    return frames
