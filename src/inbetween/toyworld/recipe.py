"""The tiny-world model: a small SVD-architecture image-to-video stack trained from scratch on the toy world.

Four stages, each resumable from its own checkpoints, all randomness a pure function of (seed, step):

1. ``vae``: an AutoencoderKLTemporalDecoder (2x downsampling, 4 latent channels) learns to reconstruct
   world frames, so the UNet works on smooth latents; its ``scaling_factor`` is set to 1 / latent std.
2. ``forward``: a UNetSpatioTemporalConditionModel and a small CLIP vision tower are trained together as a
   FORWARD image-to-video model with SVD's EDM objective, conditioned on the first frame exactly as SVD is
   (CLIP embedding through cross-attention, noise-augmented first-frame latent concatenated to the input,
   micro-conditioning ids), with 10 % conditioning dropout so guidance works. Exported from EMA weights.
3. ``adapter``: the backward adapter, trained with the project's own fine-tuning tool
   (:func:`inbetween.training.train_backward`) on exactly 100 world videos (the paper's data regime) until its
   backward loss on 20 held-out videos stops falling (``heldout_log.jsonl``; patience in evaluations).
4. ``adapter_own_attention``: the paper's "w/o RA" ablation (section 4.3): W_q, W_k, W_v, W_o fine-tuned with the
   backward branch's own attention, on the same videos for the same number of steps as stage 3.

Run it (hours on a CPU; the shipped run's wall time is in the README's tiny-world section):

    inbetween toyworld train --out runs/tiny_world            # re-run the same command to resume
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ..checkpoints import optimizer_tensors, restore_optimizer
from ..config import FPS, MOTION_BUCKET_ID, NOISE_AUG_STRENGTH, P_MEAN, P_STD
from ..families.svd import added_time_ids, augmented_image_latents, unet_inputs
from ..files import atomic_folder
from ..hub import SVD_SCHEDULER_CONFIG, TINY_WORLD, TINY_WORLD_FOLDER, resolve_model_folder
from ..pipeline import ADAPTER_FILE, CLIPImageProcessor, InbetweenPipeline, clip_image_embeddings
from ..sampling import edm_scalings
from ..seeds import derive_seed
from ..training import TrainConfig, best_heldout_step, edm_loss, train_backward
from .seeds import ADAPTER_SEEDS, FORWARD_SEEDS, HELDOUT_SEEDS
from .world import WorldConfig, generate_video, write_dataset

logger = logging.getLogger(__name__)


def tiny_world_config() -> WorldConfig:
    """The world the model learns (v2): 32x32, 12 frames, one or two balls of radius 3-5 px.

    In the task's regime: between the keyframes a ball travels a median 2.9 diameters along its path (1.4 as
    the crow flies) and 96 % of the clips bounce, so neither a cross-fade nor a straight line is right, and the
    first frame alone does not give the velocity. 12 frames (not SVD's 14) because a step costs in proportion
    to the frames and 12 at gravity 0.45 px/frame^2 already give the path length of 14 at 0.35.
    """
    return WorldConfig(
        size=32, num_frames=12, max_balls=2, min_radius=3.0, max_radius=5.0, gravity=0.45, max_speed=2.5
    )


WORLD_FILE = "world.json"  # beside a tiny-world model: the world it was trained on, which its evaluation draws


def save_world(folder: Path, world: WorldConfig) -> None:
    (folder / WORLD_FILE).write_text(json.dumps(asdict(world), indent=1) + "\n")


def model_world(model: str | Path = TINY_WORLD) -> WorldConfig:
    """The world a tiny-world model folder (or ``"tiny-world"``, the shipped one) was trained on."""
    path = resolve_model_folder(model) / WORLD_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"`{path}` is missing: a tiny-world model folder records its world there; rebuild it with "
            "`inbetween toyworld train`"
        )
    return WorldConfig(**json.loads(path.read_text()))


@dataclass(frozen=True)
class TinyWorldRecipe:
    """Every setting of the four stages; the defaults train the v2 model (12-frame world, SVD's exact CLIP
    conditioning). The shipped v1 model (8-frame world) was trained with vae 1200 x 8, unet 3200 x 12, adapter 600."""

    seed: int = 0
    world: WorldConfig = field(default_factory=tiny_world_config)
    # stage 1: autoencoder
    vae_steps: int = 1000
    vae_batch_size: int = 8  # clips of `world.num_frames` frames
    vae_learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    # stage 2: forward image-to-video model
    unet_steps: int = 4000
    unet_batch_size: int = 12
    unet_learning_rate: float = 4e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    conditioning_dropout: float = 0.1  # zero image latent and embedding together, as SVD's unconditional branch
    p_mean: float = P_MEAN  # SVD's log-normal training sigmas
    p_std: float = P_STD
    fps: int = FPS
    motion_bucket_id: int = MOTION_BUCKET_ID
    noise_aug_strength: float = NOISE_AUG_STRENGTH
    # stage 3: backward adapter (the project's fine-tuning tool)
    adapter_videos: int = 100  # the paper fine-tunes on 100 videos
    adapter_steps: int = 1500
    adapter_batch_size: int = 8
    adapter_learning_rate: float = 5e-4
    adapter_heldout_videos: int = 20  # never trained on: the held-out backward loss that decides when to stop
    adapter_heldout_every: int = 50
    adapter_patience: int = 4  # held-out evaluations without a 0.1 % improvement before stopping
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        positive = ("vae_steps", "unet_steps", "adapter_steps", "adapter_videos", "adapter_heldout_videos")
        for name in (*positive, "adapter_heldout_every", "adapter_patience", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")


# ------------------------------------------------------------------------------------------------
# components


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Initialise modules from ``seed`` without touching the caller's global RNG (restored on exit)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_vae(seed: int) -> AutoencoderKLTemporalDecoder:
    with seeded_init(seed):
        return AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,  # one downsampler: 32x32 frames -> 16x16 latents
            block_out_channels=(32, 64),
            layers_per_block=1,
            latent_channels=4,
            sample_size=32,
        )


def build_image_encoder(seed: int) -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        projection_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    with seeded_init(seed):
        return CLIPVisionModelWithProjection(config)


def build_unet(seed: int, num_frames: int) -> UNetSpatioTemporalConditionModel:
    with seeded_init(seed):
        return UNetSpatioTemporalConditionModel(
            sample_size=16,
            in_channels=8,  # noisy latent + first-frame latent, as SVD
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 2 + ("DownBlockSpatioTemporal",),
            up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 2,
            block_out_channels=(32, 64, 128),  # three levels: a 4x4 bottleneck sees the whole 16x16 latent
            layers_per_block=1,
            cross_attention_dim=64,
            num_attention_heads=(2, 4, 8),
            addition_time_embed_dim=32,
            projection_class_embeddings_input_dim=3 * 32,
            num_frames=num_frames,
        )


def build_feature_extractor(size: int) -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def build_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)


# ------------------------------------------------------------------------------------------------
# data: every video is generate_video(seed) for a seed fixed by the stream position


def world_clips(seeds: list[int], world: WorldConfig) -> torch.Tensor:
    """``(B, N, 3, H, W)`` float clips in [-1, 1] of the world videos with these seeds."""
    frames = np.stack([generate_video(seed, world).frames for seed in seeds])  # (B, N, H, W, 3) uint8
    return torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 127.5 - 1


def step_generator(seed: int, stage: int, step: int) -> torch.Generator:
    """The source of every random draw of one training step: resuming at ``step`` redraws the same numbers."""
    return torch.Generator().manual_seed(derive_seed(seed, "stage", stage, step))


def step_seeds(seed: int, step: int, batch_size: int) -> list[int]:
    start = FORWARD_SEEDS + ((seed * 7_919 + step) * batch_size) % ADAPTER_SEEDS
    return list(range(start, start + batch_size))


# ------------------------------------------------------------------------------------------------
# checkpoints: model weights, EMA weights and optimizer state as safetensors, the step in JSON


def save_stage_checkpoint(folder: Path, step: int, modules: dict[str, torch.nn.Module], optimizer) -> None:
    tensors = {
        f"{name}/{key}": value.contiguous() for name, m in modules.items() for key, value in m.state_dict().items()
    }
    opt_tensors, param_groups = optimizer_tensors(optimizer)
    with atomic_folder(folder / "checkpoint", overwrite=True) as tmp:
        save_file(tensors, str(tmp / "modules.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "param_groups": param_groups}))


def load_stage_checkpoint(folder: Path, modules: dict[str, torch.nn.Module], optimizer) -> int:
    """Restore a stage's modules and optimizer from ``folder/checkpoint``; return the step (0 if none)."""
    checkpoint = folder / "checkpoint"
    if not (checkpoint / "state.json").is_file():
        return 0
    state = json.loads((checkpoint / "state.json").read_text())
    tensors = load_file(str(checkpoint / "modules.safetensors"))
    for name, module in modules.items():
        prefix = f"{name}/"
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    restore_optimizer(optimizer, load_file(str(checkpoint / "optimizer.safetensors")), state["param_groups"])
    return int(state["step"])


def _log(path: Path, step: int, loss: float) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, "loss": loss}) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run starts from)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


def run_stage(
    folder: Path,
    name: str,
    steps: int,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    train_step: Callable[[int], float],
    checkpoint_every: int,
    after_step: Callable[[], None] | None = None,
) -> None:
    """The loop every stage shares: resume, step, log the loss, checkpoint atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    start = load_stage_checkpoint(folder, modules, optimizer)
    log = folder / "loss.jsonl"
    _truncate_log(log, start)
    progress = tqdm(range(start, steps), initial=start, total=steps, desc=name)
    for step in progress:
        loss = train_step(step)
        if after_step is not None:
            after_step()
        _log(log, step + 1, loss)
        progress.set_postfix(loss=f"{loss:.4f}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save_stage_checkpoint(folder, step + 1, modules, optimizer)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # decays to 10 % of the peak


# ------------------------------------------------------------------------------------------------
# stage 1: the autoencoder


def train_vae(recipe: TinyWorldRecipe, folder: Path) -> AutoencoderKLTemporalDecoder:
    vae = build_vae(recipe.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_learning_rate, weight_decay=0.0)
    frames = recipe.world.num_frames

    def train_step(step: int) -> float:
        clips = world_clips(step_seeds(recipe.seed + 1, step, recipe.vae_batch_size), recipe.world)
        images = clips.flatten(0, 1)
        posterior = vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=step_generator(recipe.seed, 1, step)
        )
        reconstruction = vae.decode(z, num_frames=frames).sample
        loss = (reconstruction - images).square().mean() + recipe.kl_weight * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    run_stage(
        folder / "vae", "autoencoder", recipe.vae_steps, {"vae": vae}, optimizer, train_step, recipe.checkpoint_every
    )
    vae.requires_grad_(False).eval()
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, recipe))
    return vae


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKLTemporalDecoder, recipe: TinyWorldRecipe) -> float:
    """1 / std of the latent modes of held-out world frames: unit-variance latents, as SD/SVD's 0.18215."""
    clips = world_clips(list(range(HELDOUT_SEEDS - 64, HELDOUT_SEEDS)), recipe.world)
    latents = vae.encode(clips.flatten(0, 1)).latent_dist.mode()
    return float(1.0 / latents.std())


# ------------------------------------------------------------------------------------------------
# stage 2: the forward image-to-video model


def forward_i2v_loss(
    unet: UNetSpatioTemporalConditionModel,
    image_encoder: CLIPVisionModelWithProjection,
    vae: AutoencoderKLTemporalDecoder,
    feature_extractor: CLIPImageProcessor,
    clips: torch.Tensor,
    generator: torch.Generator,
    recipe: TinyWorldRecipe,
) -> torch.Tensor:
    """SVD's EDM loss of the forward model on ``clips`` ``(B, N, 3, H, W)``, conditioned on their first frames."""
    batch, frames = clips.shape[:2]
    with torch.no_grad():
        latents = vae.encode(clips.flatten(0, 1)).latent_dist.mode().unflatten(0, (batch, frames))
        latents = latents * vae.config.scaling_factor
        first = clips[:, 0]
        aug_noise = torch.randn(first.shape, generator=generator)
        image_latents = augmented_image_latents(vae, first, aug_noise, recipe.noise_aug_strength)
    # The pipeline's own embedding path (resize + CLIP normalisation), with gradients into the tiny tower.
    embeddings = clip_image_embeddings(image_encoder, feature_extractor, first)  # (B, 1, D)
    keep = (torch.rand(batch, generator=generator) >= recipe.conditioning_dropout).float()
    embeddings = embeddings * keep.view(-1, 1, 1)
    image_latents = image_latents * keep.view(-1, 1, 1, 1)
    sigma = (recipe.p_mean + recipe.p_std * torch.randn(batch, generator=generator)).exp()
    noise = torch.randn(latents.shape, generator=generator)
    x = latents + sigma.view(-1, 1, 1, 1, 1) * noise
    model_input, timestep = unet_inputs(x, sigma, image_latents)
    time_ids = added_time_ids(recipe.fps, recipe.motion_bucket_id, recipe.noise_aug_strength).expand(batch, 3)
    v = unet(model_input, timestep, encoder_hidden_states=embeddings, added_time_ids=time_ids, return_dict=False)[0]
    c_skip, c_out, _, _ = edm_scalings(sigma.view(-1, 1, 1, 1, 1))
    return edm_loss(c_skip * x + c_out * v, latents, sigma)


class ExponentialMovingAverage:
    """EMA of a set of modules' parameters; the exported model uses these weights."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: copy.deepcopy(m).requires_grad_(False) for name, m in modules.items()}
        self.live = modules

    @torch.no_grad()
    def update(self) -> None:
        for name, module in self.live.items():
            for ema, live in zip(self.shadow[name].parameters(), module.parameters(), strict=True):
                ema.lerp_(live, 1 - self.decay)

    @torch.no_grad()
    def debiased(self, initial: dict[str, torch.nn.Module], steps: int) -> dict[str, torch.nn.Module]:
        """The average without its start: after n updates the shadow still holds ``decay^n`` of the initial
        weights (37 % after 1000 steps at 0.999), removed exactly as Adam's bias correction does. Returns copies."""
        weight = self.decay**steps
        result = {}
        for name, shadow in self.shadow.items():
            module = copy.deepcopy(shadow)
            for average, start in zip(module.parameters(), initial[name].parameters(), strict=True):
                average.sub_(weight * start).div_(1 - weight)
            result[name] = module
        return result


def train_forward(
    recipe: TinyWorldRecipe, folder: Path, vae: AutoencoderKLTemporalDecoder
) -> tuple[UNetSpatioTemporalConditionModel, CLIPVisionModelWithProjection]:
    """Train the forward I2V UNet and image encoder; returns their EMA copies."""
    unet = build_unet(recipe.seed, recipe.world.num_frames)
    image_encoder = build_image_encoder(recipe.seed)
    feature_extractor = build_feature_extractor(recipe.world.size)
    parameters = [*unet.parameters(), *image_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.unet_learning_rate, weight_decay=0.01)
    ema = ExponentialMovingAverage({"unet": unet, "image_encoder": image_encoder}, recipe.ema_decay)

    def train_step(step: int) -> float:
        for group in optimizer.param_groups:
            group["lr"] = recipe.unet_learning_rate * cosine_with_warmup(step, recipe.unet_steps, recipe.warmup_steps)
        clips = world_clips(step_seeds(recipe.seed + 2, step, recipe.unet_batch_size), recipe.world)
        generator = step_generator(recipe.seed, 2, step)
        loss = forward_i2v_loss(unet, image_encoder, vae, feature_extractor, clips, generator, recipe)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    modules = {
        "unet": unet,
        "image_encoder": image_encoder,
        "ema_unet": ema.shadow["unet"],
        "ema_image_encoder": ema.shadow["image_encoder"],
    }
    run_stage(
        folder / "forward",
        "forward I2V",
        recipe.unet_steps,
        modules,
        optimizer,
        train_step,
        recipe.checkpoint_every,
        ema.update,
    )
    initial = {
        "unet": build_unet(recipe.seed, recipe.world.num_frames),
        "image_encoder": build_image_encoder(recipe.seed),
    }
    averaged = ema.debiased(initial, recipe.unet_steps)
    return averaged["unet"].eval(), averaged["image_encoder"].eval()


def export_forward_model(
    folder: Path,
    vae: AutoencoderKLTemporalDecoder,
    unet: UNetSpatioTemporalConditionModel,
    image_encoder: CLIPVisionModelWithProjection,
    recipe: TinyWorldRecipe,
) -> Path:
    """Write the forward model in SVD's folder layout (float16 weights: the shipped size budget)."""
    target = folder / "forward_model"
    pipe = InbetweenPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=build_scheduler(),
        feature_extractor=build_feature_extractor(recipe.world.size),
    )
    with atomic_folder(target, overwrite=True) as tmp:
        pipe.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    pipe.to(torch.float32)
    return target


# ------------------------------------------------------------------------------------------------
# stage 3: the backward adapter, with the project's fine-tuning tool on exactly 100 videos


ABLATION_ADAPTER_FILE = "backward_adapter_own_attention.safetensors"  # the "w/o RA" ablation, beside the adapter
# Adapter held-out videos: a seed range of their own, apart from the adapter's training videos and the evaluation's.
ADAPTER_HELDOUT_SEEDS = ADAPTER_SEEDS + 5_000_000


def adapter_config(
    recipe: TinyWorldRecipe, folder: Path, model: Path, attention: str = "rotated", max_steps: int | None = None
) -> TrainConfig:
    """Stage 3 (``attention="rotated"``, stopped by the held-out loss) or stage 4 (``"own"``, ``max_steps``)."""
    output = folder / ("adapter" if attention == "rotated" else "adapter_own_attention")
    return TrainConfig(
        data=str(folder / "adapter_videos"),
        output_dir=str(output),
        model=str(model),
        num_frames=recipe.world.num_frames,
        stride=1,
        height=recipe.world.size,
        width=recipe.world.size,
        batch_size=recipe.adapter_batch_size,
        max_steps=max_steps or recipe.adapter_steps,
        learning_rate=recipe.adapter_learning_rate,
        fps=recipe.fps,
        motion_bucket_id=recipe.motion_bucket_id,
        noise_aug_strength=recipe.noise_aug_strength,
        backward_attention=attention,
        heldout_data=str(folder / "adapter_heldout_videos"),
        heldout_every=recipe.adapter_heldout_every,
        heldout_patience=recipe.adapter_patience if attention == "rotated" else None,
        seed=recipe.seed,
        checkpoint_every=recipe.checkpoint_every,
        keep_checkpoints=1,
        resume="latest" if (output / "checkpoints").is_dir() else None,
        adapter_dtype="float16",
        num_workers=0,
    )


def write_adapter_videos(recipe: TinyWorldRecipe, folder: Path) -> None:
    """The adapter's 100 training videos and its held-out videos, each from its own seed range (once)."""
    sets = [
        ("adapter_videos", ADAPTER_SEEDS, recipe.adapter_videos),
        ("adapter_heldout_videos", ADAPTER_HELDOUT_SEEDS, recipe.adapter_heldout_videos),
    ]
    for name, first, count in sets:
        if not (folder / name).is_dir():
            with atomic_folder(folder / name) as tmp:
                write_dataset(tmp, range(first + recipe.seed * count, first + (recipe.seed + 1) * count), recipe.world)


def train_adapter(recipe: TinyWorldRecipe, folder: Path, model: Path) -> Path:
    write_adapter_videos(recipe, folder)
    return train_backward(adapter_config(recipe, folder, model))


def train_ablation_adapter(recipe: TinyWorldRecipe, folder: Path, model: Path) -> Path:
    """The "w/o RA" ablation, for exactly as many steps as the shipped adapter trained (its best held-out step;
    same videos, same draws)."""
    steps = best_heldout_step(folder / "adapter" / "heldout_log.jsonl")
    if steps is None:
        raise FileNotFoundError(f"`{folder / 'adapter'}` has no held-out log: train the adapter (stage 3) first")
    return train_backward(adapter_config(recipe, folder, model, attention="own", max_steps=steps))


# ------------------------------------------------------------------------------------------------
# the whole recipe


def train_tiny_world(folder: str | Path, recipe: TinyWorldRecipe = TinyWorldRecipe()) -> Path:
    """Run (or resume) all four stages into ``folder``; returns the finished model folder ``folder/tiny_world``
    (SVD layout + its backward adapter), with ``loss_curves.png`` beside it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps(asdict(recipe), indent=1))
    vae = train_vae(recipe, folder)
    unet, image_encoder = train_forward(recipe, folder, vae)
    forward_model = export_forward_model(folder, vae, unet, image_encoder, recipe)
    adapter = train_adapter(recipe, folder, forward_model)
    ablation = train_ablation_adapter(recipe, folder, forward_model)
    final = folder / "tiny_world"
    with atomic_folder(final, overwrite=True) as tmp:
        shutil.copytree(forward_model, tmp, dirs_exist_ok=True)
        shutil.copy(adapter, tmp / ADAPTER_FILE)
        shutil.copy(ablation, tmp / ABLATION_ADAPTER_FILE)
        save_world(tmp, recipe.world)
    plot_loss_curves(folder, folder / "loss_curves.png")
    return final


def install_tiny_world(model: Path, target: Path = TINY_WORLD_FOLDER, overwrite: bool = True) -> Path:
    """Copy a trained tiny-world model folder into the package (what ``--model tiny-world`` loads)."""
    with atomic_folder(target, overwrite=overwrite) as tmp:
        shutil.copytree(model, tmp, dirs_exist_ok=True)
    return target


def read_loss_log(path: Path, key: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return np.array([r["step"] for r in records]), np.array([r[key] for r in records])


def plot_loss_curves(folder: Path, output: Path) -> None:
    """One panel per stage: the loss per step and its 50-step running mean (skipped, with a warning, without
    matplotlib: the model matters more than its plot)."""
    try:
        import matplotlib
    except ImportError:
        logger.warning('no loss plot: matplotlib is missing (pip install "inbetween[eval]")')
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [
        ("autoencoder (MSE + KL)", folder / "vae" / "loss.jsonl"),
        ("forward I2V (EDM loss)", folder / "forward" / "loss.jsonl"),
        ("backward adapter (EDM loss)", folder / "adapter" / "train_log.jsonl"),
        ("w/o RA ablation (EDM loss)", folder / "adapter_own_attention" / "train_log.jsonl"),
    ]
    figure, axes = plt.subplots(1, len(logs), figsize=(5 * len(logs), 3.6))
    for axis, (title, path) in zip(axes, logs, strict=True):
        steps, losses = read_loss_log(path)
        axis.set_title(title)
        axis.set_xlabel("step")
        if len(losses) == 0:
            axis.text(0.5, 0.5, "not run", ha="center", transform=axis.transAxes)
            continue
        axis.plot(steps, losses, lw=0.5, alpha=0.4, label="per step")
        window = min(50, len(losses))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smooth, lw=1.5, label=f"{window}-step mean")
        heldout_steps, heldout = read_loss_log(path.parent / "heldout_log.jsonl", "heldout_loss")
        if len(heldout):
            axis.plot(heldout_steps, heldout, "o-", ms=3, lw=1.5, label="held-out videos")
        axis.set_yscale("log")
        axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
