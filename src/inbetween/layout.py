"""The UNet batch of one denoising evaluation: which rows are forward or backward, conditional or not, and which
UNet call they go in.

Generative Inbetweening (Wang et al., ICLR 2025) runs a forward branch (the video, conditioned on the first
keyframe) and a backward branch (the time-reversed video, conditioned on the last keyframe), each with SVD's
classifier-free guidance. We run them as ONE UNet batch whose rows come in groups of B (one row per keyframe
pair), in the order

    fwd-uncond, fwd-cond, bwd-uncond, bwd-cond        (with guidance)
    fwd-cond, bwd-cond                                (without)

In a *dual* call the backward rows attend with the forward rows' rotated attention maps, so a dual call holds
forward groups in its first half and as many backward groups, in the same guidance order, in its second half:
row r of the backward half pairs with row r of the forward half (see ``attention.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import BACKWARD, FORWARD


@dataclass(frozen=True)
class Group:
    """B rows of the batch: one branch, with or without the keyframe conditioning (zeroed for guidance)."""

    branch: str  # FORWARD or BACKWARD
    conditional: bool


@dataclass(frozen=True)
class BatchLayout:
    """The groups whose conditioning is built, and the UNet calls that evaluate them.

    ``groups`` are all the conditioning groups, in the order above; ``calls`` lists, per UNet call, the indices of
    the groups it evaluates; ``dual`` says whether those calls rotate attention (backward half <- forward half).
    """

    groups: tuple[Group, ...]
    calls: tuple[tuple[int, ...], ...]
    dual: bool

    @classmethod
    def plan(
        cls, guided: bool, branches: tuple[str, ...], rotation: bool, split_guidance_batch: bool = False
    ) -> BatchLayout:
        """The layout for one evaluation of ``branches`` (``SamplingConfig.branches``, or what a sampler asks for).

        The forward groups are evaluated for the forward branch, and for a rotated backward branch, which needs the
        forward rows as its attention source. ``split_guidance_batch`` runs the unconditional and the conditional
        groups as two calls (lower peak memory, same result).
        """
        conditionals = (False, True) if guided else (True,)
        groups = tuple(Group(branch, c) for branch in (FORWARD, BACKWARD) for c in conditionals)
        wanted = {FORWARD: FORWARD in branches or rotation, BACKWARD: BACKWARD in branches}
        run = [i for i, group in enumerate(groups) if wanted[group.branch]]
        dual = rotation and wanted[FORWARD] and wanted[BACKWARD]
        if guided and split_guidance_batch:
            calls = tuple(tuple(i for i in run if groups[i].conditional == c) for c in conditionals)
        else:
            calls = (tuple(run),)
        return cls(groups, calls, dual)

    def branch_groups(self, branch: str) -> tuple[int, ...]:
        """Indices of ``branch``'s evaluated groups, unconditional first."""
        return tuple(i for call in self.calls for i in call if self.groups[i].branch == branch)

    @property
    def branches(self) -> tuple[str, ...]:
        """The branches whose predictions are evaluated, forward first."""
        return tuple(b for b in (FORWARD, BACKWARD) if self.branch_groups(b))

    @property
    def rows_per_pair(self) -> int:
        """UNet rows per keyframe pair per evaluation (all calls together)."""
        return sum(len(call) for call in self.calls)
