"""Finding model weights: a local folder or a Hugging Face Hub id, with errors that say how to get them."""

from __future__ import annotations

import json
import os
from pathlib import Path

SVD_XT = "stabilityai/stable-video-diffusion-img2vid-xt"
SVD = "stabilityai/stable-video-diffusion-img2vid"
# Wan image-to-video models in diffusers' layout (the family is read from their model_index.json).
WAN_I2V_480P = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
WAN_I2V_720P = "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
WAN_FLF2V_720P = "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers"
WAN_22_I2V = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
UNET_WEIGHTS = "diffusion_pytorch_model"
# SVD's scheduler (model card of stabilityai/stable-video-diffusion-img2vid-xt): tiny models sample like SVD.
SVD_SCHEDULER_CONFIG = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    set_alpha_to_one=False,
    sigma_max=700.0,
    sigma_min=0.002,
    skip_prk_steps=True,
    steps_offset=1,
    timestep_spacing="leading",
    timestep_type="continuous",
    trained_betas=None,
    use_karras_sigmas=True,
)
# The small model trained on the toy world (inbetween.toyworld.recipe), shipped inside the package.
TINY_WORLD = "tiny-world"
TINY_WORLD_FOLDER = Path(__file__).parent / "toyworld" / "assets" / "tiny_world"


def download_hint(model: str) -> str:
    """One sentence telling the user how to make ``model`` available offline."""
    return (
        f"download it once with `hf download {model}` (accept the model licence on its Hub page and "
        "`hf auth login` first) or pass a local folder in its layout"
    )


def resolve_model_folder(model: str | os.PathLike, allow_patterns: list[str] | None = None) -> Path:
    """A local folder for ``model``: the folder itself, or the Hub snapshot (cached, downloaded if allowed).

    Raises ``FileNotFoundError`` with a download hint when it is neither a folder nor reachable.
    """
    if str(model) == TINY_WORLD:
        if not (TINY_WORLD_FOLDER / "model_index.json").is_file():
            raise FileNotFoundError(
                f"the tiny-world model is missing from this install (`{TINY_WORLD_FOLDER}`); reinstall inbetween "
                "or rebuild it with `inbetween toyworld train --out runs/tiny_world --install`"
            )
        return TINY_WORLD_FOLDER
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    # A Hub id is exactly "owner/name" (names may contain dots); anything else is a local path.
    if path.is_absolute() or str(model).startswith((".", "~")) or str(model).count("/") != 1:
        raise FileNotFoundError(
            f"model folder `{model}` not found; pass a folder or a Hub id like `{SVD_XT}` "
            "(to make a folder from a Hub model: `hf download <id> --local-dir <folder>`)"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(model), allow_patterns=allow_patterns))
    except Exception as exc:  # offline, gated, unknown repo: all mean "not available here"
        raise FileNotFoundError(
            f"model `{model}` is not in the local cache and could not be downloaded ({type(exc).__name__}); "
            + download_hint(str(model))
        ) from exc


def local_model_configs(model: str | os.PathLike) -> tuple[dict, dict] | None:
    """The UNet and VAE configs of ``model`` when it is on disk (no download), else None."""
    folder = TINY_WORLD_FOLDER if str(model) == TINY_WORLD else Path(model).expanduser()
    unet, vae = folder / "unet" / "config.json", folder / "vae" / "config.json"
    if not (unet.is_file() and vae.is_file()):
        return None
    return json.loads(unet.read_text()), json.loads(vae.read_text())


def find_unet_weight_files(source: str | os.PathLike, variant: str | None = None) -> list[Path]:
    """The safetensors files of a UNet given as a UNet folder, a pipeline folder (``unet/``) or a Hub id."""
    patterns = ["unet/*.json", "unet/*.safetensors", "*.json", "*.safetensors"]
    folder = resolve_model_folder(source, allow_patterns=patterns)
    if (folder / "unet").is_dir():
        folder = folder / "unet"
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    index = folder / f"{UNET_WEIGHTS}{suffix}.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    single = folder / f"{UNET_WEIGHTS}{suffix}"
    if single.is_file():
        return [single]
    if (folder / f"{UNET_WEIGHTS}.bin").is_file():
        raise ValueError(
            f"UNet weights in `{folder}` are a pickle (.bin); inbetween reads only safetensors. "
            "Re-save the UNet with `save_pretrained(..., safe_serialization=True)` in a trusted session"
        )
    raise FileNotFoundError(
        f"no `{UNET_WEIGHTS}{suffix}` in `{folder}`; pass a diffusers UNet or pipeline folder"
        + (f" (or check the variant `{variant}`)" if variant else "")
    )


def pipeline_allow_patterns(variant: str | None = None) -> list[str]:
    """Hub file patterns of a pipeline (SVD, Wan) in diffusers' layout with one weights variant: its configs and
    safetensors, without the other variant or the repo's single-file checkpoints (several GB each)."""
    configs = ["model_index.json", "*/*.json", "tokenizer/*"]  # a text-conditioned family's tokenizer files too
    if variant:
        return [*configs, f"*/*.{variant}.safetensors", f"*/*.{variant}-*.safetensors"]
    names = ("model", UNET_WEIGHTS)
    return [*configs, *(pattern for name in names for pattern in (f"*/{name}.safetensors", f"*/{name}-*.safetensors"))]
