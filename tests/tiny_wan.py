"""Tiny random Wan image-to-video components, seeded and built from configs in code (no Hub download).

What diffusers 0.42's ``WanImageToVideoPipeline`` (pipelines/wan/pipeline_wan_i2v.py) does, for a sampler of our own:

* Inputs to the transformer (``__call__`` step 6, ``prepare_latents``). Per step the transformer gets
  ``hidden_states = cat([latents, condition], dim=1)`` with ``condition = cat([mask, latent_condition], dim=1)``:
  channels 0-15 the noisy latents (float32 noise from ``randn_tensor``, shape (B, 16, (F-1)//4+1, H/8, W/8)),
  16-19 the mask, 20-35 the encoded condition video: 36 = ``in_channels`` of Wan 2.1 I2V / FLF2V and Wan 2.2 A14B.
  The condition video is F pixel frames: the first image then F-1 zero frames (0 is mid-gray in [-1, 1]); with
  ``last_image``, the first image, F-2 zero frames, the last image. Both images go through
  ``video_processor.preprocess`` (resized to height x width, scaled to [-1, 1]). It is encoded by ``vae.encode``
  as one video and the posterior's mode is taken (``retrieve_latents(..., sample_mode="argmax")``), then normalised
  like the latents (below). The mask starts as one value per pixel frame (1 = given frame: frame 0, and frame F-1
  with ``last_image``; 0 elsewhere) at latent resolution; frame 0's value is repeated 4 times (the VAE keeps the
  first frame alone in latent frame 0), which makes 4 * T values, viewed as (T, 4) and transposed to
  (B, 4, T, H/8, W/8): mask channel c of latent frame 0 is frame 0 for all c; of latent frame k >= 1 it is pixel
  frame 4(k-1)+1+c. So I2V: latent frame 0 all four channels 1, the rest 0; FLF2V: in addition channel 3 of the
  last latent frame (pixel frame F-1) is 1.
* ``encoder_hidden_states_image`` (``encode_image``): only when ``transformer.config.image_dim`` is set (Wan 2.1);
  ``image_processor`` then ``image_encoder(..., output_hidden_states=True).hidden_states[-2]`` (penultimate CLIP
  layer, all tokens with CLS, no post-layernorm): (1, 257, 1280) for I2V; for FLF2V the pipeline encodes
  ``[image, last_image]`` as a batch of 2, (2, 257, 1280). It is ``repeat(batch_size, 1, 1)``-ed and passed to
  both the cond and uncond calls. Inside the transformer, ``WanImageEmbedding`` (FLF2V, ``pos_embed_seq_len`` =
  2 * 257 = 514) views it as (B, 514, 1280) and adds ``pos_embed``; then LayerNorm, FF to the inner width,
  LayerNorm; the image tokens are put in front of the text tokens. ``WanAttnProcessor`` splits them back off as
  everything but the last 512 tokens (hard-coded), attends to them with ``add_k_proj`` / ``add_v_proj``
  (``added_kv_proj_dim``) and adds that to the text cross-attention. So with an image encoder the text must be
  exactly 512 tokens (``max_sequence_length`` default 512); any other length is mis-split without an error. The
  I2V transformer cannot take ``last_image`` (two images' tokens, no ``pos_embed`` to merge them). Wan 2.2 A14B:
  no image encoder, ``encoder_hidden_states_image=None``.
* Text (``encode_prompt`` / ``_get_t5_prompt_embeds``): prompts cleaned (ftfy, html unescape, whitespace),
  tokenized to ``max_sequence_length`` with padding and eos, UMT5 ``last_hidden_state`` under the attention
  mask; positions past each prompt's length are zeroed and the transformer gets no mask. ``negative_prompt``
  defaults to "" when guidance is on.
* ``timestep``: ``scheduler.set_timesteps(num_inference_steps)``; ``t`` is the scheduler's float timestep
  (FlowMatchEuler: ``1000 * sigma`` with shifted sigma ``shift*s/(1+(shift-1)*s)``, first 1000.0), passed as
  ``t.expand(B)`` (shape (B,), one value per sample, not per token: ``expand_timesteps`` is False for these
  models; True is Wan 2.2 TI2V-5B's per-token timesteps).
* Guidance: ``do_classifier_free_guidance`` is ``guidance_scale > 1``; then two separate transformer calls per
  step on the same ``latent_model_input`` (cond with ``prompt_embeds``, uncond with ``negative_prompt_embeds``,
  same image embeds), ``noise_pred = uncond + scale * (cond - uncond)``. Otherwise one call. With
  ``boundary_ratio`` set, ``guidance_scale_2`` (default: ``guidance_scale``) is used by ``transformer_2``; CFG on or
  off is decided by ``guidance_scale`` alone for both experts.
* Experts (Wan 2.2): ``boundary_timestep = boundary_ratio * scheduler.config.num_train_timesteps``;
  ``transformer`` (high noise) runs while ``t >= boundary_timestep``, ``transformer_2`` (low noise) once
  ``t < boundary_timestep``. ``boundary_ratio`` (and ``expand_timesteps``) are ``register_to_config``-ed, so they
  sit in model_index.json (Wan2.2-I2V-A14B: 0.9; T2V-A14B: 0.875).
* Update: ``latents = scheduler.step(noise_pred, t, latents)``; FlowMatchEuler: ``x + (sigma_next - sigma) * v``
  (the model predicts velocity noise - x0), latents kept in float32.
* Latent normalisation: ``z_norm = (z - latents_mean) / latents_std`` with the 16 per-channel values of
  ``vae.config`` (the pipeline multiplies by ``1 / latents_std``); applied to the condition latents in
  ``prepare_latents``, inverted before decoding: ``z = z_norm * latents_std + latents_mean``.
* VAE: causal, 8x spatial, 4x temporal (``scale_factor_temporal`` = 4): F pixel frames (F = 4k+1) make
  (F-1)/4 + 1 latent frames; ``_encode`` encodes frame 0 alone, then chunks of 4 frames with a causal feature
  cache. Decoding (``vae.decode`` on all latents at once; ``_decode`` goes latent frame by latent frame with the
  cache, frame 0 ``first_chunk=True`` giving 1 frame, each later one 4) returns F frames, clamped to [-1, 1];
  ``video_processor.postprocess_video`` maps to [0, 1] and (B, F, H, W, 3) for ``output_type="np"``.
* Sizes: ``check_inputs`` raises unless height and width are multiples of 16; then they are floored to multiples
  of ``vae_scale_factor_spatial * patch_size[1|2]`` (8 * 2 = 16) with a warning. ``num_frames`` with
  ``num_frames % 4 != 1`` is floored to ``num_frames // 4 * 4 + 1`` with a warning.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import CLIPVisionConfig, CLIPVisionModel, T5TokenizerFast, UMT5Config, UMT5EncoderModel

from inbetween.pipeline import CLIPImageProcessor  # the torchvision-free processor where transformers has one

KINDS = ("wan2.1-i2v", "wan2.1-flf2v", "wan2.2-a14b")

# Sizes of the tiny models. The real ones: umt5-xxl (d_model 4096), CLIP ViT-H/14 at 224 px (257 tokens of 1280),
# transformer 40 heads x 128 = 5120 wide, 40 layers.
TEXT_DIM = 32
CLIP_HIDDEN = 16
CLIP_IMAGE_SIZE = 32
CLIP_PATCH = 8
CLIP_TOKENS = (CLIP_IMAGE_SIZE // CLIP_PATCH) ** 2 + 1  # patches + the class token: 17 (257 in the real encoder)
HEADS = 2
HEAD_DIM = 12  # WanRotaryPosEmbed splits a head into frame / height / width bands: 4 + 4 + 4 here
LATENT_CHANNELS = 16  # z_dim of the Wan 2.1 VAE, which Wan 2.2 A14B shares
MASK_CHANNELS = 4  # = the VAE's temporal compression: one mask channel per pixel frame of a latent frame

# Wan 2.2 I2V A14B switches from the high-noise to the low-noise expert at t = 0.900 * 1000 (Wan's i2v_A14B
# config; its T2V sibling uses 0.875). With 2 FlowMatch steps (t = 1000, then t < 900) each expert runs once.
WAN22_I2V_BOUNDARY_RATIO = 0.9
# FlowMatchEulerDiscreteScheduler's sigma shift; Wan samples I2V with shift 5.0 by default.
FLOW_SHIFT = 5.0

# Sentencepiece-like Unigram pieces for the tiny tokenizer. T5's special ids come first (pad 0, eos 1, unk 2, as in
# umt5); single characters make any ASCII prompt tokenizable, a few whole words make common ones shorter.
_WORDS = ("a", "the", "cat", "dog", "walks", "runs", "across", "room", "camera", "slowly", "blurry", "static")


def tiny_tokenizer() -> T5TokenizerFast:
    """A umt5-style Unigram tokenizer built with the `tokenizers` library: appends ``</s>``, pads with ``<pad>``."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(character, -5.0) for character in string.ascii_letters + string.digits + string.punctuation]
    vocab += [("▁" + word, -3.0) for word in _WORDS]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    # add_special_tokens=True (what the pipeline asks for) appends eos, as umt5's tokenizer does.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tokenizer, extra_ids=0, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def _text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",  # umt5's feed-forward
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(config).eval()


def _image_encoder() -> CLIPVisionModel:
    # CLIPVisionModel, as the real Wan 2.1 folders store their image_encoder; the pipeline reads hidden_states[-2],
    # which the projection head of CLIPVisionModelWithProjection would not change.
    config = CLIPVisionConfig(
        hidden_size=CLIP_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=3,  # hidden_states[-2] is then the output of layer 2
        num_attention_heads=2,
        image_size=CLIP_IMAGE_SIZE,
        patch_size=CLIP_PATCH,
    )
    return CLIPVisionModel(config).eval()


def _vae() -> AutoencoderKLWan:
    # Three spatial downsamplings (8x) of which the last two also halve time: the Wan 2.1 VAE's 4x temporal / 8x
    # spatial layout with a 3-channel base. latents_mean / latents_std keep the real VAE's 16 values.
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def _transformer(image_dim: int | None, pos_embed_seq_len: int | None) -> WanTransformer3DModel:
    inner_dim = HEADS * HEAD_DIM
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=LATENT_CHANNELS + MASK_CHANNELS + LATENT_CHANNELS,  # noise, mask, encoded condition video: 36
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=image_dim,
        # Wan 2.1 I2V / FLF2V attend to the CLIP tokens with their own key / value projections of the embedded image
        # tokens (inner_dim wide: 5120 in the real models); Wan 2.2 A14B has none.
        added_kv_proj_dim=inner_dim if image_dim is not None else None,
        rope_max_seq_len=32,
        pos_embed_seq_len=pos_embed_seq_len,
    )
    if pos_embed_seq_len is not None:
        # FLF2V's learned position embedding over the two images' CLIP tokens starts at zero; random values make
        # the first and the last image distinguishable, as trained weights do.
        with torch.no_grad():
            transformer.condition_embedder.image_embedder.pos_embed.normal_(std=0.5)
    return transformer.eval()


def tiny_wan_components(kind: str, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for ``WanImageToVideoPipeline`` (``boundary_ratio`` included for Wan 2.2).

    The global RNG is reseeded before each component, so the same ``kind`` and ``seed`` give identical weights, and
    restored afterwards, so that callers' random streams are not disturbed.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS} but is {kind!r}.")
    with torch.random.fork_rng(devices=[]):
        tokenizer = tiny_tokenizer()
        torch.manual_seed(seed)
        text_encoder = _text_encoder(len(tokenizer))
        torch.manual_seed(seed)
        vae = _vae()
        scheduler = FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT)
        if kind == "wan2.2-a14b":
            torch.manual_seed(seed)
            transformer = _transformer(image_dim=None, pos_embed_seq_len=None)
            # The low-noise expert has the same architecture and other weights: the RNG stream continues.
            transformer_2 = _transformer(image_dim=None, pos_embed_seq_len=None)
            return dict(
                tokenizer=tokenizer,
                text_encoder=text_encoder,
                vae=vae,
                scheduler=scheduler,
                image_processor=None,
                image_encoder=None,
                transformer=transformer,
                transformer_2=transformer_2,
                boundary_ratio=WAN22_I2V_BOUNDARY_RATIO,
            )
        torch.manual_seed(seed)
        image_encoder = _image_encoder()
        # FLF2V embeds both images' CLIP tokens as one sequence of 2 * 17 (2 * 257 = 514 in the real model).
        pos_embed_seq_len = 2 * CLIP_TOKENS if kind == "wan2.1-flf2v" else None
        torch.manual_seed(seed)
        transformer = _transformer(image_dim=CLIP_HIDDEN, pos_embed_seq_len=pos_embed_seq_len)
    return dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        image_processor=CLIPImageProcessor(size=CLIP_IMAGE_SIZE, crop_size=CLIP_IMAGE_SIZE),
        image_encoder=image_encoder,
        transformer=transformer,
    )


def save_tiny_wan(folder: Path, kind: str, seed: int = 0) -> Path:
    """Save a tiny ``WanImageToVideoPipeline`` in diffusers' folder layout (model_index.json, one subfolder per
    component, safetensors weights); it loads back offline with ``from_pretrained(folder)``."""
    folder = Path(folder)
    WanImageToVideoPipeline(**tiny_wan_components(kind, seed)).save_pretrained(folder, safe_serialization=True)
    return folder
