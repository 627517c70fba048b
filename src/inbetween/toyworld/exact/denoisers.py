"""The exact posterior-mean denoisers of the enumerated world, and the branch denoiser the samplers run on.

With data uniform over a finite set of videos ``v_k`` (weighted by a prior ``pi_k``) and ``x = v + sigma * eps``,
the denoiser that minimises the EDM loss is the posterior mean (Tweedie)

    D(x, sigma) = sum_k softmax_k(-|x - v_k|^2 / (2 sigma^2) + log pi_k) v_k,

a softmax over the allowed videos. The models of the paper, in this world (everything in forward frame order):

- forward, conditioned on the first keyframe F: the videos whose first frame is F;
- backward, the ideal fine-tuned backward model (a model of time-reversed videos conditioned on their first
  frame, i.e. on the last keyframe L): in forward time, the videos whose last frame is L;
- backward without fine-tuning (time-reversal fusion): the forward model run on the time-reversed video and
  conditioned on L, then flipped back: the time-reversed videos whose first frame is L;
- unconditional (classifier-free guidance's rows): all videos (the forward model's and the fine-tuned backward
  model's alike), or all time-reversed videos (the forward model on the reversed video).

A keyframe is matched exactly: every keyframe here is a frame of the world, and two distinct frames of the world
differ by at least a one-pixel shift of the ball, so any tolerance smaller than that picks the same videos. With the
world's ``keyframe_softness`` tau > 0 the conditioning is soft instead (a model trained with noise on its
conditioning frame): a conditional model draws every video, its prior times ``exp(-RMSE^2 / (2 tau^2))``, RMSE
(0-255) between the video's frame and the keyframe (:func:`soft_match`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...config import BACKWARD, FORWARD
from ...sampling import BranchDenoiser, BranchEstimates
from .world import ExactWorld

_SMALLEST_SIGMA = 1e-6  # a denoiser asked at sigma = 0 returns the nearest video (the softmax's limit)
_NEGLIGIBLE_LOG_WEIGHT = 20.0  # soft keyframe conditioning leaves out videos weighing under exp(-20) of the best


def frame_distances(world: ExactWorld, x: torch.Tensor) -> torch.Tensor:
    """Squared distance of every frame of ``x`` ``(B, N, 3, H, W)`` to every atlas frame: float64 ``(N, Q, B)``
    (the layout the per-frame sums of :func:`posterior_mean` read fastest).

    float64 because the softmax at sigma = 0.002 divides these by 8e-6: float32 rounding of |x|^2 would decide it.
    """
    atlas = world.atlas.flatten(1).double()  # (Q, D)
    batch, num_frames = x.shape[:2]
    frames = x.flatten(2).double()  # (B, N, D)
    cross = (frames.reshape(batch * num_frames, -1) @ atlas.T).view(batch, num_frames, -1).permute(1, 2, 0)
    squared = (frames**2).sum(-1).T[:, None, :] - 2 * cross + (atlas**2).sum(-1)[:, None]
    return squared.clamp(min=0)


@dataclass(frozen=True)
class Candidates:
    """The videos one model may draw, per keyframe pair: ``index`` long ``(B, M)`` into the world's videos, padded
    with video 0 where ``valid`` ``(B, M)`` is False (M: the largest set of the batch); ``log_weight`` float64
    ``(B, M)``, added to each video's log prior (None: 0, a hard set)."""

    index: torch.Tensor
    valid: torch.Tensor
    log_weight: torch.Tensor | None = None

    @classmethod
    def where(cls, allowed: torch.Tensor) -> Candidates:
        """The candidates of a bool ``(B, K)`` membership matrix; every pair must allow at least one video."""
        counts = allowed.sum(1)
        if not bool((counts > 0).all()):
            raise ValueError("a keyframe is not a frame of the world: no video of the set matches it")
        order = allowed.long().argsort(dim=1, descending=True, stable=True)[:, : int(counts.max())]  # members first
        valid = torch.arange(order.shape[1])[None] < counts[:, None]
        return cls(order.masked_fill(~valid, 0), valid)

    @classmethod
    def weighted(cls, log_weight: torch.Tensor, cutoff: float = _NEGLIGIBLE_LOG_WEIGHT) -> Candidates:
        """Soft candidates from float64 ``(B, K)`` log weights: the videos within ``cutoff`` of each pair's largest
        weight (the rest weigh less than ``exp(-cutoff)`` of it: left out), with their weights."""
        allowed = log_weight >= log_weight.amax(1, keepdim=True) - cutoff
        hard = cls.where(allowed)
        return cls(hard.index, hard.valid, log_weight.gather(1, hard.index).masked_fill(~hard.valid, 0.0))


def posterior_mean(
    world: ExactWorld,
    distances: torch.Tensor,
    sigma: torch.Tensor,
    candidates: Candidates | None,
    reversed_videos: bool,
) -> torch.Tensor:
    """``sum_k softmax_k(-|x - u_k|^2 / (2 sigma^2) + log pi_k) u_k`` over the ``candidates`` (None: all videos)
    ``u_k``: the world's videos, or with ``reversed_videos`` the world's videos played backwards. From
    :func:`frame_distances` ``(N, Q, B)`` of ``x``; returns float32 ``(B, N, 3, H, W)``.

    A video's distance is the sum of its frames' distances, and the mean is built per frame and atlas entry (the
    summed weights of the videos that show that entry there): no video is ever materialised.
    """
    paths = world.paths.flip(1) if reversed_videos else world.paths  # (K, N)
    num_frames, _, batch = distances.shape
    scale = 2 * max(float(sigma), _SMALLEST_SIGMA) ** 2
    per_entry = torch.zeros_like(distances)  # (N, Q, B): summed weight of atlas entry q at frame t
    if candidates is None:  # every video, the same for all pairs
        video_distances = sum(distances[t].index_select(0, paths[:, t]) for t in range(num_frames))  # (K, B)
        weights = (-video_distances / scale + world.log_prior[:, None]).softmax(0)
        for t in range(num_frames):
            per_entry[t].index_add_(0, paths[:, t], weights)
    else:  # a few videos per pair
        entries = paths[candidates.index]  # (B, M, N)
        frame = torch.arange(num_frames).expand_as(entries)
        pair = torch.arange(batch)[:, None, None].expand_as(entries)
        video_distances = distances[frame, entries, pair].sum(-1)  # (B, M)
        logits = -video_distances / scale + world.log_prior[candidates.index]
        if candidates.log_weight is not None:
            logits = logits + candidates.log_weight
        weights = logits.masked_fill(~candidates.valid, -torch.inf).softmax(1)
        per_entry.index_put_((frame, entries, pair), weights[..., None].expand_as(entries), accumulate=True)
    # The weighted sum of atlas frames in float32: the estimate's own precision.
    mean = per_entry.permute(2, 0, 1).reshape(batch * num_frames, -1).float() @ world.atlas.flatten(1)
    return mean.view(batch, num_frames, *world.atlas.shape[1:])


@dataclass(frozen=True)
class KeyframeSets:
    """Which videos each model may draw, per keyframe pair: ``forward`` (first frame = the first keyframe) and
    ``backward`` (last frame = the last keyframe) over the world's videos, ``reversed_backward`` over the reversed
    videos (the forward model conditioned on the last keyframe: their first frame is the last keyframe)."""

    forward: Candidates
    backward: Candidates
    reversed_backward: Candidates

    @classmethod
    def of(cls, world: ExactWorld, first: torch.Tensor, last: torch.Tensor) -> KeyframeSets:
        """The sets for keyframes given as atlas indices ``first``, ``last`` ``(B,)``: with the world's
        ``keyframe_softness`` 0 the videos through the keyframe; above 0, every video weighted by how near its frame
        is to the keyframe (:func:`soft_match`)."""
        starts, ends = world.paths[:, 0], world.paths[:, -1]
        softness = world.config.keyframe_softness
        if softness == 0:
            return cls(
                forward=Candidates.where(starts == first[:, None]),
                backward=Candidates.where(ends == last[:, None]),
                reversed_backward=Candidates.where(starts == last[:, None]),
            )
        return cls(
            forward=Candidates.weighted(soft_match(world, first, starts, softness)),
            backward=Candidates.weighted(soft_match(world, last, ends, softness)),
            reversed_backward=Candidates.weighted(soft_match(world, last, starts, softness)),
        )


def soft_match(world: ExactWorld, keyframes: torch.Tensor, frames: torch.Tensor, softness: float) -> torch.Tensor:
    """Float64 ``(B, K)``: ``-RMSE^2 / (2 softness^2)``, the RMSE (0-255 scale) between atlas frame
    ``keyframes[b]`` and video k's frame ``frames[k]`` (both atlas indices): a model whose keyframe conditioning is
    soft (as a model trained with noise on its conditioning frame) draws video k with this log weight."""
    atlas = world.atlas.flatten(1).double() * 127.5
    squared = torch.cdist(atlas[keyframes], atlas, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # (B, Q)
    return -(squared[:, frames] / atlas.shape[1]) / (2 * softness**2)


def exact_branch_denoiser(
    world: ExactWorld,
    first: torch.Tensor,
    last: torch.Tensor,
    *,
    fine_tuned: bool,
    guided: bool,
    shared_unconditional: bool = False,
) -> BranchDenoiser:
    """The samplers' :data:`~inbetween.sampling.BranchDenoiser` of keyframe pairs ``(first[b], last[b])`` (atlas
    indices, ``(B,)``): ``model(x (B, N, 3, H, W), sigma, branches) -> BranchEstimates``, all in forward frame
    order. The backward branch is the ideal fine-tuned backward model (``fine_tuned``) or the forward model on the
    reversed video (without fine-tuning); unconditional estimates come only when ``guided``, the forward one standing
    for both branches with ``shared_unconditional`` where the pipeline evaluates the forward rows
    (:meth:`inbetween.layout.BatchLayout.plan`)."""
    sets = KeyframeSets.of(world, first, last)
    backward_set = sets.backward if fine_tuned else sets.reversed_backward

    def denoise(x: torch.Tensor, sigma: torch.Tensor, branches: tuple[str, ...]) -> BranchEstimates:
        distances = frame_distances(world, x)
        cond, uncond = {}, {}
        if FORWARD in branches:
            cond[FORWARD] = posterior_mean(world, distances, sigma, sets.forward, reversed_videos=False)
        if BACKWARD in branches:
            cond[BACKWARD] = posterior_mean(world, distances, sigma, backward_set, reversed_videos=not fine_tuned)
        if guided:
            # The fine-tuned backward model's unconditional videos are the world's own, as the forward model's.
            forward_rows = FORWARD in branches or fine_tuned  # a rotated backward branch brings them
            if forward_rows:
                all_videos = posterior_mean(world, distances, sigma, None, reversed_videos=False)
            if FORWARD in branches:
                uncond[FORWARD] = all_videos
            if BACKWARD in branches:
                own = fine_tuned or (shared_unconditional and forward_rows)
                uncond[BACKWARD] = (
                    all_videos if own else posterior_mean(world, distances, sigma, None, reversed_videos=True)
                )
        return BranchEstimates(cond=cond, uncond=uncond)

    return denoise


def ideal_denoiser(world: ExactWorld, first: torch.Tensor, last: torch.Tensor) -> BranchDenoiser:
    """The posterior mean given BOTH keyframes (atlas indices ``(B,)``), served as the forward branch: the denoiser
    of the ideal answers, which no two-branch sampler has. Sampled alone it gives the ceiling of the study."""
    ideal = Candidates.where(world.consistent(first, last))

    def denoise(x: torch.Tensor, sigma: torch.Tensor, branches: tuple[str, ...]) -> BranchEstimates:
        if branches != (FORWARD,):
            raise ValueError(f"the ideal denoiser serves the forward branch alone, asked for {branches}")
        return BranchEstimates(cond={FORWARD: posterior_mean(world, frame_distances(world, x), sigma, ideal, False)})

    return denoise
