"""The named batch layout of the dual UNet call (inbetween.layout)."""

import pytest

from inbetween.config import SamplingConfig
from inbetween.layout import BACKWARD, FORWARD, BatchLayout, Group


def branches(fusion: str) -> tuple[str, ...]:
    return SamplingConfig(fusion=fusion).branches


def names(layout: BatchLayout) -> list[list[str]]:
    short = {FORWARD: "fwd", BACKWARD: "bwd"}
    return [
        [f"{short[layout.groups[g].branch]}-{'cond' if layout.groups[g].conditional else 'uncond'}" for g in call]
        for call in layout.calls
    ]


def test_guided_dual_layout_is_the_papers_four_groups_in_one_call():
    layout = BatchLayout.plan(guided=True, branches=branches("average"), rotation=True)
    assert layout.groups == (
        Group(FORWARD, False),
        Group(FORWARD, True),
        Group(BACKWARD, False),
        Group(BACKWARD, True),
    )
    assert names(layout) == [["fwd-uncond", "fwd-cond", "bwd-uncond", "bwd-cond"]]
    assert layout.dual and layout.rows_per_pair == 4
    assert layout.branch_groups(FORWARD) == (0, 1) and layout.branch_groups(BACKWARD) == (2, 3)


def test_split_guidance_keeps_forward_then_backward_halves_in_each_call():
    layout = BatchLayout.plan(guided=True, branches=branches("linear"), rotation=True, split_guidance_batch=True)
    assert names(layout) == [["fwd-uncond", "bwd-uncond"], ["fwd-cond", "bwd-cond"]]
    assert layout.dual and layout.rows_per_pair == 4
    assert layout.branch_groups(BACKWARD) == (2, 3)  # unconditional first, as guidance expects


def test_without_guidance_only_conditional_groups():
    layout = BatchLayout.plan(guided=False, branches=branches("average"), rotation=True, split_guidance_batch=True)
    assert names(layout) == [["fwd-cond", "bwd-cond"]] and layout.rows_per_pair == 2


@pytest.mark.parametrize(
    "fusion, rotation, expected, dual",
    [
        ("forward", True, [["fwd-uncond", "fwd-cond"]], False),  # plain SVD: no backward rows at all
        ("backward", True, [["fwd-uncond", "fwd-cond", "bwd-uncond", "bwd-cond"]], True),  # maps come from fwd
        ("backward", False, [["bwd-uncond", "bwd-cond"]], False),  # own attention: forward rows not needed
        ("average", False, [["fwd-uncond", "fwd-cond", "bwd-uncond", "bwd-cond"]], False),  # TRF
    ],
)
def test_one_branch_and_unrotated_layouts(fusion, rotation, expected, dual):
    layout = BatchLayout.plan(guided=True, branches=branches(fusion), rotation=rotation)
    assert names(layout) == expected and layout.dual == dual
    kept = {FORWARD: fusion != "backward", BACKWARD: fusion != "forward"}
    assert all(layout.branch_groups(branch) for branch in layout.branches)
    assert set(layout.branches) >= {branch for branch, keep in kept.items() if keep}


def test_a_shared_unconditional_row_makes_three_groups_the_backward_one_paired_with_the_forward_conditional():
    layout = BatchLayout.plan(True, branches("average"), rotation=True, shared_unconditional=True)
    assert names(layout) == [["fwd-uncond", "fwd-cond", "bwd-cond"]] and layout.rows_per_pair == 3
    assert layout.shares_unconditional and layout.dual_groups(layout.calls[0]) == (2, 1)
    split = BatchLayout.plan(True, branches("average"), True, split_guidance_batch=True, shared_unconditional=True)
    assert names(split) == [["fwd-uncond"], ["fwd-cond", "bwd-cond"]] and split.rows_per_pair == 3
    assert [split.dual_groups(call) for call in split.calls] == [None, (1, 1)]
    # a rotated backward branch alone still brings the forward rows, whose unconditional one it shares
    alone = BatchLayout.plan(True, branches("backward"), rotation=True, shared_unconditional=True)
    assert names(alone) == [["fwd-uncond", "fwd-cond", "bwd-cond"]] and alone.shares_unconditional


@pytest.mark.parametrize(
    "guided, fusion, rotation, expected",
    [
        (False, "average", True, [["fwd-cond", "bwd-cond"]]),  # nothing unconditional to share
        (True, "backward", False, [["bwd-uncond", "bwd-cond"]]),  # no forward rows evaluated: nothing to share
        (True, "forward", True, [["fwd-uncond", "fwd-cond"]]),
    ],
)
def test_sharing_applies_only_where_both_unconditional_rows_would_run(guided, fusion, rotation, expected):
    layout = BatchLayout.plan(guided, branches(fusion), rotation, shared_unconditional=True)
    assert names(layout) == expected and not layout.shares_unconditional
    assert layout == BatchLayout.plan(guided, branches(fusion), rotation)
