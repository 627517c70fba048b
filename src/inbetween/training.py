"""Backward-motion fine-tuning (Wang et al., ICLR 2025, section 3.2).

Only the backward model's W_v / W_o deltas of the temporal self-attention layers are trained;
the forward model is the same frozen UNet, which supplies the attention maps. A training
sample is a clip: the backward branch sees the clip's noisy latents reversed in time and is
conditioned on the clip's LAST frame; the forward branch sees them in order, conditioned on
the FIRST frame. The loss is SVD's EDM loss on the backward branch only.

Run it:

    inbetween train --data videos/ --output-dir runs/backward                  # one GPU (or CPU)
    accelerate launch --num_processes 4 -m inbetween train --data videos/ --output-dir runs/backward
    inbetween train --data videos/ --output-dir runs/backward --resume latest   # continue a run

Every random draw (clip order, sigma, noise, noise augmentation) is a pure function of the seed
and the sample's position in the training stream, so a resumed run, or the same global batch on
any number of processes, gives the same adapter.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast
from tqdm.auto import tqdm

from .adapter import BackwardAdapter
from .attention import dual_mode, install_rotation, recording_forward, replaying_backward
from .checkpoints import find_resume_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import FPS, MOTION_BUCKET_ID, NOISE_AUG_STRENGTH, P_MEAN, P_STD
from .data import ClipDataset, ClipSpec
from .dtypes import DTYPES, resolve_dtype
from .families.svd import added_time_ids, augmented_image_latents, unet_inputs
from .files import atomic_output
from .hub import SVD, resolve_model_folder
from .pipeline import ADAPTER_FILE, InbetweenPipeline
from .sampling import edm_scalings
from .seeds import derive_seed

logger = logging.getLogger(__name__)

LAYOUTS = ("split", "joint")
BACKWARD_ATTENTIONS = ("rotated", "own")  # the paper: W_v/W_o, rotated maps; "w/o RA": W_q,k,v,o, own maps
BEST_ADAPTER_FILE = "backward_adapter_best.safetensors"  # the adapter at the best held-out loss so far
HELDOUT_MIN_IMPROVEMENT = 1e-3  # a held-out loss falling by less than 0.1 % of the best is noise, not progress
PRECISIONS = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a fine-tuning run needs; defaults are the paper's (section 4, implementation details)."""

    data: str  # folder of videos and/or frame folders
    output_dir: str
    model: str = SVD  # the paper fine-tunes the 14-frame SVD; the adapter transfers to SVD-XT
    variant: str | None = None
    num_frames: int = 14
    stride: int = 2
    height: int = 576
    width: int = 1024
    clips_per_video: int | None = None
    batch_size: int = 4  # per process and micro-step
    gradient_accumulation_steps: int = 1
    max_steps: int = 15_000
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    max_grad_norm: float | None = 1.0
    p_mean: float = P_MEAN  # log-normal sigma of SVD's EDM training
    p_std: float = P_STD
    fps: int = FPS
    motion_bucket_id: int = MOTION_BUCKET_ID
    noise_aug_strength: float = NOISE_AUG_STRENGTH
    train_bias: bool = False  # also train b_o of the output projection
    # "rotated": the paper (W_v / W_o deltas, the forward rows' rotated attention); "own": its "w/o RA" ablation
    # (W_q, W_k, W_v, W_o deltas, the backward rows attend with their own queries and keys)
    backward_attention: str = "rotated"
    heldout_data: str | None = None  # videos never trained on: their backward loss is logged every heldout_every
    heldout_every: int = 100
    # stop once the held-out loss has not improved for this many evaluations in a row (None: run max_steps)
    heldout_patience: int | None = None
    layout: str = "split"  # "split": no-grad forward call + backward call; "joint": one call, both halves
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: str | None = None  # "latest" or a checkpoint folder
    validate_every: int | None = None
    validation_pairs: tuple[tuple[str, str], ...] = ()
    validation_inference_steps: int = 25
    # Of the final adapter file; "auto": the base UNet's dtype in training (float32, or float16 / bfloat16 under
    # mixed precision), i.e. the precision the deltas were trained against. Checkpoints keep the float32 master deltas.
    adapter_dtype: str = "auto"
    tensorboard: bool = False
    num_workers: int = 2

    def __post_init__(self) -> None:
        positive = [
            "num_frames",
            "stride",
            "batch_size",
            "gradient_accumulation_steps",
            "max_steps",
            "checkpoint_every",
            "keep_checkpoints",
            "validation_inference_steps",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be positive, got {self.learning_rate}")
        if self.backward_attention not in BACKWARD_ATTENTIONS:
            raise ValueError(
                f"`backward_attention` must be one of {', '.join(BACKWARD_ATTENTIONS)}, "
                f"got {self.backward_attention!r}"
            )
        if self.heldout_every < 1:
            raise ValueError(f"`heldout_every` must be at least 1, got {self.heldout_every}")
        if self.heldout_patience is not None and (self.heldout_patience < 1 or self.heldout_data is None):
            raise ValueError("`heldout_patience` must be at least 1 and needs `heldout_data` (videos to score on)")
        if self.layout not in LAYOUTS:
            raise ValueError(f"`layout` must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"`mixed_precision` must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        if self.adapter_dtype not in ("auto", *DTYPES):
            raise ValueError(f"`adapter_dtype` must be auto, {', '.join(DTYPES)}, got {self.adapter_dtype!r}")
        if self.validate_every is not None and not self.validation_pairs:
            raise ValueError("`validate_every` needs `validation_pairs` (first/last keyframe image pairs)")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("`tensorboard` logging needs the tensorboard package; `pip install tensorboard`")


# ------------------------------------------------------------------------------------------------
# randomness: a pure function of (seed, position in the stream of training samples)


def stream_indices(dataset_size: int, seed: int, start: int, count: int) -> list[int]:
    """Dataset indices at stream positions ``start .. start + count``: one seeded permutation per epoch."""
    indices = []
    for position in range(start, start + count):
        epoch, offset = divmod(position, dataset_size)
        permutation = torch.randperm(
            dataset_size, generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch))
        )
        indices.append(int(permutation[offset]))
    return indices


def sample_draws(
    seed: int, position: int, latent_shape: tuple[int, ...], image_shape: tuple[int, ...], p_mean: float, p_std: float
) -> dict[str, torch.Tensor]:
    """The random numbers of one training sample: sigma, latent noise and keyframe noise augmentation."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "sample", position))
    return {
        "sigma": (p_mean + p_std * torch.randn((), generator=generator)).exp(),
        "noise": torch.randn(latent_shape, generator=generator),
        "aug_noise": torch.randn((2, *image_shape), generator=generator),
    }


def batch_draws(
    config: TrainConfig, positions: Iterable[int], vae_scale_factor: int, seed: int | None = None
) -> dict[str, torch.Tensor]:
    """Stacked draws of the samples at stream ``positions``: sigma ``(B,)``, noise ``(B, N, 4, h, w)``,
    keyframe noise augmentation ``(B, 2, 3, H, W)``. ``seed`` defaults to the run's."""
    latent_shape = (config.num_frames, 4, config.height // vae_scale_factor, config.width // vae_scale_factor)
    image_shape = (3, config.height, config.width)
    seed = config.seed if seed is None else seed
    draws = [sample_draws(seed, p, latent_shape, image_shape, config.p_mean, config.p_std) for p in positions]
    return {key: torch.stack([d[key] for d in draws]) for key in draws[0]}


class StreamBatches(torch.utils.data.Sampler):
    """Index batches of one process, from optimizer step ``start_step`` on, forever.

    Optimizer step ``s`` consumes stream positions ``[s * G, (s + 1) * G)`` with
    ``G = batch_size * accumulation * world``; micro-step ``m`` of process ``r`` takes the block
    ``(m * world + r)``, so the global batch does not depend on how it is split.
    """

    def __init__(
        self,
        dataset_size: int,
        seed: int,
        batch_size: int,
        accumulation: int,
        rank: int,
        world: int,
        start_step: int = 0,
    ):
        self.dataset_size, self.seed, self.batch_size = dataset_size, seed, batch_size
        self.accumulation, self.rank, self.world, self.start_step = accumulation, rank, world, start_step

    def positions(self, step: int, micro_step: int) -> range:
        global_batch = self.batch_size * self.accumulation * self.world
        start = step * global_batch + (micro_step * self.world + self.rank) * self.batch_size
        return range(start, start + self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            for micro_step in range(self.accumulation):
                positions = self.positions(step, micro_step)
                yield stream_indices(self.dataset_size, self.seed, positions.start, len(positions))
            step += 1


# ------------------------------------------------------------------------------------------------
# the loss


def edm_loss(denoised: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """SVD's EDM loss: ``(1 + s^2) / s^2 * mean((D(x) - x0)^2)``, averaged over the batch; ``sigma`` is ``(B,)``."""
    weight = (1 + sigma**2) / sigma**2
    per_sample = (denoised.float() - target.float()).square().flatten(1).mean(1)
    return (weight * per_sample).mean()


@torch.no_grad()
def encode_batch(
    pipe: InbetweenPipeline, batch: dict[str, torch.Tensor], draws: dict[str, torch.Tensor], config: TrainConfig
) -> dict[str, torch.Tensor]:
    """Clean latents ``(B, N, 4, h, w)`` of the clip and the conditioning of both branches, all without grad."""
    clip = batch["clip"]  # (B, N, 3, H, W) in [-1, 1], original time order
    frames = clip.flatten(0, 1).to(pipe.vae.dtype)
    latents = torch.cat([pipe.vae.encode(chunk).latent_dist.mode() for chunk in frames.split(16)])
    latents = latents.unflatten(0, clip.shape[:2]).float() * pipe.vae.config.scaling_factor
    keyframes = torch.cat([batch["first_frame"], batch["last_frame"]])  # (2B, 3, H, W)
    aug = draws["aug_noise"].transpose(0, 1).flatten(0, 1).to(keyframes)  # (2B, 3, H, W): firsts then lasts
    embeddings = pipe.encode_image_embeddings(keyframes).to(pipe.unet.dtype)
    image_latents = augmented_image_latents(pipe.vae, keyframes, aug, config.noise_aug_strength).to(pipe.unet.dtype)
    time_ids = added_time_ids(config.fps, config.motion_bucket_id, config.noise_aug_strength)
    return {
        "latents": latents,
        "embeddings": embeddings,  # (2B, 1, D): [first; last]
        "image_latents": image_latents,  # (2B, 4, h, w): [first; last]
        "time_ids": time_ids.to(latents.device, pipe.unet.dtype).expand(len(keyframes), 3),
    }


def backward_branch_step(
    pipe: InbetweenPipeline,
    encoded: dict[str, torch.Tensor],
    draws: dict[str, torch.Tensor],
    config: TrainConfig,
    accelerator: Accelerator,
    loss_scale: float = 1.0,
    backpropagate: bool = True,
) -> float:
    """Forward both branches, compute the backward branch's EDM loss and back-propagate it. Returns the loss."""
    unet = pipe.unet
    sigma = draws["sigma"].to(accelerator.device)  # (B,)
    x0_fwd = encoded["latents"]
    x_fwd = x0_fwd + sigma.view(-1, 1, 1, 1, 1) * draws["noise"].to(x0_fwd)
    x_bwd, x0_bwd = x_fwd.flip(1), x0_fwd.flip(1)  # the backward model sees the reversed clip
    emb_first, emb_last = encoded["embeddings"].chunk(2)
    lat_first, lat_last = encoded["image_latents"].chunk(2)
    time_ids = encoded["time_ids"].chunk(2)[0]
    c_skip, c_out, _, _ = edm_scalings(sigma.view(-1, 1, 1, 1, 1))

    def run(x, emb, lat, ids):
        model_input, timestep = unet_inputs(x, sigma.repeat(len(x) // len(sigma)), lat)
        return unet(model_input, timestep, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]

    if config.layout == "split":
        # The forward branch needs no gradient: one no-grad call records its queries/keys, then the
        # backward rows alone go through the graph, so autograd never touches the forward rows. With its own
        # attention the backward branch needs nothing of the forward rows.
        if config.backward_attention == "rotated":
            with torch.no_grad(), accelerator.autocast(), recording_forward(unet):
                run(x_fwd, emb_first, lat_first, time_ids)
        context = replaying_backward(unet)
        rows = (x_bwd, emb_last, lat_last, time_ids)
    else:
        context = dual_mode(unet)
        rows = tuple(
            torch.cat(pair)
            for pair in [(x_fwd, x_bwd), (emb_first, emb_last), (lat_first, lat_last), (time_ids, time_ids)]
        )
    with context:  # backward() inside: gradient checkpointing re-runs layers in the same mode
        with accelerator.autocast():
            v = run(*rows)
        v_bwd = v.chunk(2)[1] if config.layout == "joint" else v
        loss = edm_loss(c_skip * x_bwd + c_out * v_bwd.float(), x0_bwd, sigma)
        if backpropagate:
            accelerator.backward(loss * loss_scale)
    return loss.item()


@torch.no_grad()
def heldout_loss(
    pipe: InbetweenPipeline, dataset: ClipDataset, config: TrainConfig, accelerator: Accelerator, seed: int = 1234
) -> float:
    """Mean backward-branch EDM loss over ``dataset`` with fixed draws (seeded apart from training)."""
    losses = []
    for index in range(len(dataset)):
        batch = {k: v.unsqueeze(0).to(accelerator.device) for k, v in dataset[index].items()}
        draws = batch_draws(config, [index], pipe.vae_scale_factor, seed=seed)
        encoded = encode_batch(pipe, batch, draws, config)
        losses.append(backward_branch_step(pipe, encoded, draws, config, accelerator, backpropagate=False))
    return sum(losses) / len(losses)


# ------------------------------------------------------------------------------------------------
# trainable deltas


def trainable_deltas(
    unet: torch.nn.Module, train_bias: bool, backward_attention: str = "rotated"
) -> list[torch.nn.Parameter]:
    """Fresh zero deltas (float32, trainable) on every rotated layer; everything else frozen. ``"own"``
    attention adds W_q / W_k deltas (the "w/o RA" ablation)."""
    unet.requires_grad_(False)
    parameters = []
    device = next(unet.parameters()).device

    def zeros(weight: torch.Tensor) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.zeros_like(weight, device=device, dtype=torch.float32))

    for name, processor in install_rotation(unet).items():
        attn = unet.get_submodule(name)
        deltas = {"delta_v": zeros(attn.to_v.weight), "delta_o": zeros(attn.to_out[0].weight)}
        if train_bias:
            deltas["delta_o_bias"] = zeros(attn.to_out[0].bias)
        if backward_attention == "own":
            deltas |= {"delta_q": zeros(attn.to_q.weight), "delta_k": zeros(attn.to_k.weight)}
        processor.set_deltas(**deltas)
        parameters += deltas.values()
    return parameters


def make_optimizer(config: TrainConfig, parameters: list[torch.nn.Parameter]) -> torch.optim.AdamW:
    """AdamW over the deltas with the paper's hyper-parameters (lr 1e-4, betas (0.9, 0.999), decay 1e-2)."""
    return torch.optim.AdamW(
        parameters,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=(config.adam_beta1, config.adam_beta2),
    )


# ------------------------------------------------------------------------------------------------
# the run


def load_training_pipeline(config: TrainConfig, accelerator: Accelerator) -> InbetweenPipeline:
    """The SVD components, frozen, in the mixed-precision dtype, on this process's device."""
    folder = resolve_model_folder(config.model)
    pipe = InbetweenPipeline.from_pretrained(
        str(folder), dtype=PRECISIONS[config.mixed_precision], variant=config.variant
    )
    return prepare_frozen(pipe, config, accelerator)


def prepare_frozen(pipe: InbetweenPipeline, config: TrainConfig, accelerator: Accelerator) -> InbetweenPipeline:
    """Freeze every component, optionally enable gradient checkpointing, move to the process's device."""
    pipe.set_progress_bar_config(disable=True)
    for model in (pipe.vae, pipe.image_encoder, pipe.unet):
        model.requires_grad_(False).eval()
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    return pipe.to(accelerator.device)


def validate(pipe: InbetweenPipeline, config: TrainConfig, folder: Path) -> None:
    """Interpolate the validation pairs with the current adapter into ``folder`` (the step's checkpoint, if any)."""
    from .video_io import load_image, write_video

    folder.mkdir(parents=True, exist_ok=True)

    for i, (first, last) in enumerate(config.validation_pairs):
        frames = pipe(
            load_image(first),
            load_image(last),
            height=config.height,
            width=config.width,
            num_frames=config.num_frames,
            num_inference_steps=config.validation_inference_steps,
            generator=torch.Generator().manual_seed(config.seed),
        ).frames[0]
        write_video(frames, folder / f"validation-{i}.mp4", fps=config.fps, overwrite=True)


def train_backward(config: TrainConfig, pipe: InbetweenPipeline | None = None) -> Path:
    """Fine-tune the backward adapter; returns the path of the final adapter file.

    ``pipe`` (optional) is an already loaded pipeline to train in place of ``config.model``; its
    base weights stay untouched, its rotation processors end up holding the trained deltas.
    """
    output_dir = Path(config.output_dir)
    checkpoints = output_dir / "checkpoints"
    accelerator = _make_accelerator(config, output_dir)
    # data first: an empty or unreadable dataset fails before any model is loaded
    spec, dataset = _load_training_data(config, accelerator, output_dir)

    # model: one frozen UNet; the only trainable tensors are the backward W_v / W_o deltas
    pipe = load_training_pipeline(config, accelerator) if pipe is None else prepare_frozen(pipe, config, accelerator)
    parameters = trainable_deltas(pipe.unet, config.train_bias, config.backward_attention)
    heldout = ClipDataset(config.heldout_data, spec) if config.heldout_data else None
    optimizer = accelerator.prepare(make_optimizer(config, parameters))
    start_step = 0
    if config.resume:
        start_step = load_checkpoint(
            find_resume_checkpoint(config.resume, checkpoints), pipe.unet, optimizer, accelerator
        )
    if config.tensorboard:
        accelerator.init_trackers("inbetween-backward", config={k: str(v) for k, v in asdict(config).items()})

    sampler, loader = _batch_stream(dataset, config, accelerator, start_step)
    heldout_log = output_dir / "heldout_log.jsonl"
    best, since_best = _resume_heldout_log(config, pipe, accelerator, heldout_log, checkpoints, start_step)
    # A run that stopped on its held-out loss is finished: resuming it writes its adapter again, nothing more.
    stopped = config.heldout_patience is not None and since_best >= config.heldout_patience
    progress = tqdm(
        range(start_step, start_step if stopped else config.max_steps),
        initial=start_step,
        total=config.max_steps,
        disable=not accelerator.is_main_process,
        desc="backward fine-tuning",
    )
    for step in progress:
        step_loss, seen = _optimizer_step(pipe, loader, sampler, parameters, optimizer, config, accelerator, step)
        done = step + 1
        progress.set_postfix(loss=f"{_log_step(step_loss, seen, done, config, accelerator):.4f}")
        saved = _checkpoint_and_validate(pipe, optimizer, config, accelerator, done)
        if heldout is not None and (done % config.heldout_every == 0 or done == config.max_steps):
            best, since_best = _evaluate_heldout(
                pipe, heldout, config, accelerator, heldout_log, done, best, since_best
            )
            if config.heldout_patience is not None and since_best >= config.heldout_patience:
                logger.info("held-out loss has not improved for %d evaluations: stopping at step %d", since_best, done)
                if accelerator.is_main_process and saved is None:
                    _save_checkpoint(pipe, optimizer, config, accelerator, done)
                break
    return _ship_adapter(pipe, config, accelerator)


def _make_accelerator(config: TrainConfig, output_dir: Path) -> Accelerator:
    return Accelerator(
        # Without a GPU, run on the CPU so that several launched processes join one gloo group.
        cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        mixed_precision=config.mixed_precision,
        log_with="tensorboard" if config.tensorboard else None,
        project_dir=str(output_dir),
    )


def _load_training_data(
    config: TrainConfig, accelerator: Accelerator, output_dir: Path
) -> tuple[ClipSpec, ClipDataset]:
    """The clip spec and the training clips; the main process makes the run folder and says what it read."""
    spec = ClipSpec(num_frames=config.num_frames, stride=config.stride, height=config.height, width=config.width)
    dataset = ClipDataset(config.data, spec, clips_per_video=config.clips_per_video)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        logger.info("training data: %s", dataset.describe())
    return spec, dataset


def _batch_stream(
    dataset: ClipDataset, config: TrainConfig, accelerator: Accelerator, start_step: int
) -> tuple[StreamBatches, Iterator[dict[str, torch.Tensor]]]:
    """This process's batches from ``start_step`` on: position-determined, so resuming and re-sharding give the
    same samples."""
    sampler = StreamBatches(
        len(dataset),
        config.seed,
        config.batch_size,
        config.gradient_accumulation_steps,
        accelerator.process_index,
        accelerator.num_processes,
        start_step,
    )
    loader = iter(
        torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=config.num_workers, persistent_workers=config.num_workers > 0
        )
    )
    return sampler, loader


def _resume_heldout_log(
    config: TrainConfig,
    pipe: InbetweenPipeline,
    accelerator: Accelerator,
    heldout_log: Path,
    checkpoints: Path,
    start_step: int,
) -> tuple[float, int]:
    """The best held-out loss up to ``start_step`` and the evaluations since it; the main process then trims the
    log to ``start_step`` and makes the best-adapter file match it."""
    best, since_best = heldout_progress(heldout_log, start_step, rewrite=False)
    accelerator.wait_for_everyone()  # every process has read the log before the main one trims it
    if accelerator.is_main_process:
        saved_at = best_heldout_step(heldout_log)  # the step the best file was last written at, before the trim
        heldout_progress(heldout_log, start_step, rewrite=True)
        dtype = resolve_dtype(config.adapter_dtype, pipe.unet.dtype)  # as save_adapter stores it
        reconcile_best_adapter(Path(config.output_dir), heldout_log, start_step, saved_at, checkpoints, dtype)
    return best, since_best


def _optimizer_step(
    pipe: InbetweenPipeline,
    loader: Iterator[dict[str, torch.Tensor]],
    sampler: StreamBatches,
    parameters: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    accelerator: Accelerator,
    step: int,
) -> tuple[float, list[int]]:
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches; returns this process's loss and the
    indices of the clips it saw."""
    step_loss, seen = 0.0, []
    for micro_step in range(config.gradient_accumulation_steps):
        batch = {k: v.to(accelerator.device) for k, v in next(loader).items()}
        positions = sampler.positions(step, micro_step)
        draws = batch_draws(config, positions, pipe.vae_scale_factor)
        encoded = encode_batch(pipe, batch, draws, config)
        scale = 1.0 / config.gradient_accumulation_steps
        step_loss += scale * backward_branch_step(pipe, encoded, draws, config, accelerator, scale)
        seen += batch["index"].tolist()
    _average_gradients(parameters, accelerator)
    if config.max_grad_norm is not None:
        accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, seen


def _log_step(step_loss: float, seen: list[int], done: int, config: TrainConfig, accelerator: Accelerator) -> float:
    """The step's loss averaged over the processes, logged with the clips each saw (files from the main process
    only); every process takes part in the gathers."""
    losses = accelerator.gather(torch.tensor([step_loss], device=accelerator.device))
    seen_by_rank = accelerator.gather(torch.tensor(seen, device=accelerator.device))
    seen_by_rank = seen_by_rank.view(accelerator.num_processes, -1)
    loss = losses.mean().item()
    if accelerator.is_main_process:
        record = {"step": done, "loss": loss, "samples": seen_by_rank.tolist()}
        _append_log(Path(config.output_dir) / "train_log.jsonl", record)
    if config.tensorboard:
        accelerator.log({"loss": loss}, step=done)
    return loss


def _checkpoint_and_validate(
    pipe: InbetweenPipeline,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    accelerator: Accelerator,
    done: int,
) -> Path | None:
    """The checkpoint and validation videos due after ``done`` steps (main process); returns the checkpoint folder
    written, if any."""
    saved = None
    if accelerator.is_main_process and (done % config.checkpoint_every == 0 or done == config.max_steps):
        saved = _save_checkpoint(pipe, optimizer, config, accelerator, done)
    if accelerator.is_main_process and config.validate_every and done % config.validate_every == 0:
        validate(pipe, config, saved or Path(config.output_dir) / "validation" / f"step-{done:07d}")
    return saved


def _save_checkpoint(
    pipe: InbetweenPipeline, optimizer: torch.optim.Optimizer, config: TrainConfig, accelerator: Accelerator, done: int
) -> Path:
    """Checkpoint the run after ``done`` steps and drop the ones beyond ``keep_checkpoints``; returns its folder."""
    checkpoints = Path(config.output_dir) / "checkpoints"
    saved = save_checkpoint(checkpoints, done, pipe.unet, optimizer, accelerator, config.model, asdict(config))
    prune_checkpoints(checkpoints, config.keep_checkpoints)
    return saved


def _evaluate_heldout(
    pipe: InbetweenPipeline,
    heldout: ClipDataset,
    config: TrainConfig,
    accelerator: Accelerator,
    heldout_log: Path,
    done: int,
    best: float,
    since_best: int,
) -> tuple[float, int]:
    """The held-out loss after ``done`` steps, logged; saves the best adapter when it improves. Returns the new
    best and the evaluations since it."""
    held = heldout_loss(pipe, heldout, config, accelerator)
    # every process takes the main one's number, so all take the same decision to stop
    held = broadcast(torch.tensor([held], device=accelerator.device)).item()
    if accelerator.is_main_process:
        _append_log(heldout_log, {"step": done, "heldout_loss": held})
    best, since_best = _track_best(best, since_best, held)
    if accelerator.is_main_process and config.heldout_patience is not None and since_best == 0:
        save_adapter(pipe, config, Path(config.output_dir) / BEST_ADAPTER_FILE)
    return best, since_best


def _ship_adapter(pipe: InbetweenPipeline, config: TrainConfig, accelerator: Accelerator) -> Path:
    """Write the run's adapter file (main process) and end the run on every process; returns its path."""
    output_dir = Path(config.output_dir)
    final = output_dir / ADAPTER_FILE
    if accelerator.is_main_process:
        best_file = output_dir / BEST_ADAPTER_FILE
        # With a held-out stop the run goes `heldout_patience` evaluations past its best: ship the best.
        if config.heldout_patience is not None and best_file.is_file():
            with atomic_output(final, overwrite=True) as tmp:
                shutil.copyfile(best_file, tmp)
        else:
            save_adapter(pipe, config, final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def save_adapter(pipe: InbetweenPipeline, config: TrainConfig, path: Path) -> None:
    adapter = BackwardAdapter.from_rotation_processors(pipe.unet, base_model=config.model)
    adapter.save(path, dtype=resolve_dtype(config.adapter_dtype, pipe.unet.dtype), overwrite=True)


def reconcile_best_adapter(
    output_dir: Path, log: Path, start_step: int, saved_at: int | None, checkpoints: Path, dtype: torch.dtype
) -> None:
    """Make the best-adapter file the one of the best step the (trimmed) held-out ``log`` records.

    A fresh run (``start_step`` 0) never ships an older run's best, and a best written after ``start_step``
    (``saved_at``: by a run that went past its last checkpoint) is not the kept log's: both are deleted. Then the kept
    log's best step is restored from its checkpoint, where that is still kept (a resumed run that stops on patience
    ships it); otherwise the run saves its next best as it goes, and a warning says the older one is gone.
    """
    best_file = output_dir / BEST_ADAPTER_FILE
    if start_step == 0 or (saved_at is not None and saved_at > start_step):
        best_file.unlink(missing_ok=True)
    best_step = best_heldout_step(log)
    if best_step is None or best_file.is_file():
        return
    checkpoint_adapter = checkpoints / f"step-{best_step:07d}" / "adapter.safetensors"
    if not checkpoint_adapter.is_file():
        logger.warning(
            "the adapter of the best held-out step %d is in no kept checkpoint; the run keeps its best after step %d",
            best_step,
            start_step,
        )
        return
    BackwardAdapter.load(checkpoint_adapter).save(best_file, dtype=dtype, overwrite=True)


def best_heldout_step(log: Path) -> int | None:
    """The step of the best held-out loss in ``heldout_log.jsonl`` (the step the shipped adapter was saved at)."""
    best, since_best, step = float("inf"), 0, None
    for line in log.read_text().splitlines() if log.is_file() else []:
        record = json.loads(line)
        best, since_best = _track_best(best, since_best, record["heldout_loss"])
        step = record["step"] if since_best == 0 else step
    return step


def heldout_progress(log: Path, start_step: int, rewrite: bool = True) -> tuple[float, int]:
    """``(best held-out loss, evaluations since it)`` logged up to ``start_step`` (a resumed run goes on counting);
    later records, from a run that went past its last checkpoint, are dropped."""
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    kept = [r for r in records if r["step"] <= start_step]
    if rewrite and len(kept) != len(records):
        log.write_text("".join(json.dumps(r) + "\n" for r in kept))
    best, since_best = float("inf"), 0
    for record in kept:
        best, since_best = _track_best(best, since_best, record["heldout_loss"])
    return best, since_best


def _track_best(best: float, since_best: int, loss: float) -> tuple[float, int]:
    improved = loss < best - HELDOUT_MIN_IMPROVEMENT * abs(best) if best != float("inf") else True
    return (loss, 0) if improved else (best, since_best + 1)


def _average_gradients(parameters: list[torch.nn.Parameter], accelerator: Accelerator) -> None:
    """Mean of the gradients over processes, as one collective on a flat buffer (the deltas are small)."""
    if accelerator.num_processes == 1:
        return
    flat = torch.cat([p.grad.flatten() for p in parameters])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for p in parameters:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
