"""The UNet batch of one denoising evaluation: which rows are forward or backward, conditional or not, and which
UNet call they go in.

Generative Inbetweening (Wang et al., ICLR 2025) runs a forward branch (the video, conditioned on the first
keyframe) and a backward branch (the time-reversed video, conditioned on the last keyframe), each with SVD's
classifier-free guidance. We run them as ONE UNet batch whose rows come in groups of B (one row per keyframe
pair), in the order

    fwd-uncond, fwd-cond, bwd-uncond, bwd-cond        (with guidance)
    fwd-cond, bwd-cond                                (without)
    fwd-uncond, fwd-cond, bwd-cond                    (one unconditional row shared by both branches)

In a *dual* call the backward rows attend with the forward rows' rotated attention maps, so a dual call holds
forward groups in its first half and as many backward groups, in the same guidance order, in its second half:
row r of the backward half pairs with row r of the forward half (see ``attention.py``); with a shared
unconditional row the one backward group pairs with the last forward group, the conditional one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import BACKWARD, FORWARD, SamplingConfig


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
        cls,
        guided: bool,
        branches: tuple[str, ...],
        rotation: bool,
        split_guidance_batch: bool = False,
        shared_unconditional: bool = False,
    ) -> BatchLayout:
        """The layout for one evaluation of ``branches`` (``SamplingConfig.branches``, or what a sampler asks for).

        The forward groups are evaluated for the forward branch, and for a rotated backward branch, which needs the
        forward rows as its attention source. ``split_guidance_batch`` runs the unconditional and the conditional
        groups as two calls (lower peak memory, same result). ``shared_unconditional`` leaves the backward
        unconditional group out where the forward one is evaluated: its estimate stands for both
        (:attr:`shares_unconditional`).
        """
        conditionals = (False, True) if guided else (True,)
        groups = tuple(Group(branch, c) for branch in (FORWARD, BACKWARD) for c in conditionals)
        wanted = {FORWARD: FORWARD in branches or rotation, BACKWARD: BACKWARD in branches}
        share = shared_unconditional and guided and wanted[FORWARD] and wanted[BACKWARD]
        left_out = {Group(BACKWARD, False)} if share else set()
        run = [i for i, group in enumerate(groups) if wanted[group.branch] and group not in left_out]
        dual = rotation and wanted[FORWARD] and wanted[BACKWARD]
        if guided and split_guidance_batch:
            calls = tuple(tuple(i for i in run if groups[i].conditional == c) for c in conditionals)
        else:
            calls = (tuple(run),)
        return cls(groups, calls, dual)

    @classmethod
    def of(cls, config: SamplingConfig, branches: tuple[str, ...]) -> BatchLayout:
        """:meth:`plan` with ``config``'s options: the layout of one request for ``branches`` under ``config``."""
        return cls.plan(
            config.guided, branches, config.rotation, config.split_guidance_batch, config.shared_unconditional
        )

    @property
    def shares_unconditional(self) -> bool:
        """Whether the backward branch takes the forward branch's unconditional estimate (its own group is not
        evaluated)."""
        evaluated = {self.groups[i] for call in self.calls for i in call}
        return (
            Group(BACKWARD, True) in evaluated
            and Group(FORWARD, False) in evaluated
            and Group(BACKWARD, False) not in evaluated
        )

    def dual_groups(self, call: tuple[int, ...]) -> tuple[int, int] | None:
        """``(forward, backward)`` group counts of a dual ``call`` (:func:`inbetween.attention.dual_mode`); ``None``
        where the call does not rotate attention (no backward rows in it, or a layout that is not dual)."""
        backward = sum(self.groups[i].branch == BACKWARD for i in call)
        return (len(call) - backward, backward) if self.dual and backward else None

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
