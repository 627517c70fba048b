"""Model families: everything a family of image-to-video models specifies, one module each.

A model folder (diffusers' layout) names its pipeline in ``model_index.json``; :func:`family_of` reads it and
:func:`pipeline_class` gives the family's pipeline class. Each family's pipeline mixes
:class:`~inbetween.families.base.InbetweenMixin` (the shared prepare -> sample -> finish path) into its diffusers
pipeline and implements the family's part: how its keyframes condition a branch, its branch denoiser in the
samplers' VE form, its noise schedule, sizes and frame counts, decoding and memory.

- ``svd``: Stable Video Diffusion / SVD-XT (and the tiny world), :mod:`inbetween.families.svd`;
- ``wan``: Wan 2.1 I2V / FLF2V and Wan 2.2 A14B, :mod:`inbetween.families.wan`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# `_class_name` in model_index.json -> family. Our own pipelines' names are there because `save_pretrained` of an
# InbetweenPipeline writes its own class name.
PIPELINE_FAMILIES = {
    "StableVideoDiffusionPipeline": "svd",
    "InbetweenPipeline": "svd",
    "WanImageToVideoPipeline": "wan",
    "WanInbetweenPipeline": "wan",
}
FAMILIES = ("svd", "wan")


def family_of_index(model_index: dict, where: str = "the model") -> str:
    """The family of a pipeline from its ``model_index.json`` contents; one-line error for any other pipeline."""
    name = model_index.get("_class_name")
    if name not in PIPELINE_FAMILIES:
        known = ", ".join(sorted(PIPELINE_FAMILIES))
        raise ValueError(
            f"{where} is a {name or 'pipeline without a _class_name'}, not an image-to-video model inbetween takes; "
            f"pass a model folder or Hub id of one of: {known}"
        )
    return PIPELINE_FAMILIES[name]


def family_of(folder: str | os.PathLike) -> str:
    """The family of the model in ``folder`` (a local diffusers folder), read from its ``model_index.json``."""
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        raise ValueError(f"`{folder}` has no model_index.json; pass a diffusers model folder or a Hub id")
    try:
        contents = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read `{index}` ({exc}); re-download the model") from exc
    return family_of_index(contents, f"`{folder}`")


def local_folder(model: str | os.PathLike) -> Path | None:
    """The folder of ``model`` when it is on disk (the tiny world's name included), without downloading."""
    from ..hub import TINY_WORLD, TINY_WORLD_FOLDER

    if str(model) == TINY_WORLD:
        return TINY_WORLD_FOLDER
    folder = Path(model).expanduser()
    return folder if (folder / "model_index.json").is_file() else None


def guess_family(model: str | os.PathLike) -> str:
    """The family of ``model``: read from its folder when on disk, else from its Hub id's name (Wan's ids say so)."""
    folder = local_folder(model)
    if folder is not None:
        return family_of(folder)
    return "wan" if "wan" in Path(str(model)).name.lower() else "svd"


def size_rules_before_loading(model: str | os.PathLike):
    """The :class:`~inbetween.families.base.SizeRules` of ``model`` from its configs on disk, before any weight
    loads (a Hub id not downloaded yet: its family's released models' rules)."""
    folder = local_folder(model)
    family = guess_family(model)
    if family == "wan":
        from .wan import wan_size_rules

        return wan_size_rules(folder)
    from .svd import svd_size_rules

    return svd_size_rules(folder)


def default_config(model: str | os.PathLike):
    """The sampling options of ``model`` when none are given (:class:`~inbetween.config.SamplingConfig`): the
    paper's, with its family's own guidance and playback rate, and the model's own first-last-frame conditioning
    (sampler ``native``) where it was trained for it (Wan FLF2V, Wan 2.2 A14B)."""
    if guess_family(model) == "wan":
        from .wan import native_last_frame_before_loading, two_experts_before_loading, wan_default_config

        folder = local_folder(model)
        native = native_last_frame_before_loading(model, folder)
        return wan_default_config(native=native, two_experts=two_experts_before_loading(model, folder))
    from ..config import SamplingConfig

    return SamplingConfig()


def check_options_before_loading(model: str | os.PathLike, config) -> None:
    """The family's refusals (:func:`~inbetween.families.base.check_family_options`) before ``model`` loads."""
    from .base import check_family_options

    family = guess_family(model)
    if family == "wan":
        from .wan import native_last_frame_before_loading

        native = native_last_frame_before_loading(model, local_folder(model))
        check_family_options(family, True, native, False, config)
    else:
        check_family_options(family, False, False, True, config)


def pipeline_class(family: str) -> type:
    """The pipeline class of ``family`` (imported on demand: a family's diffusers classes load only when used)."""
    if family == "svd":
        from .svd import InbetweenPipeline

        return InbetweenPipeline
    if family == "wan":
        from .wan import WanInbetweenPipeline

        return WanInbetweenPipeline
    raise ValueError(f"unknown model family {family!r}; the families are {', '.join(FAMILIES)}")
