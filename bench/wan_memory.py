"""What fits on a 24, 48 and 80 GB GPU for Wan 2.1 / 2.2 14B at 480p and 720p, 81 frames, bf16, from the estimate.

The estimate is :mod:`inbetween.memory.wan` (what a Wan call is refused by before it allocates), on the released
models' configs (the 14B transformer, UMT5-XXL, CLIP ViT-H/14, Wan's VAE) built on the meta device: no weights are
needed. Rows per call: the dual-directional samplers with guidance take 4 (forward and backward, conditional and
not; 2 with ``--split-guidance-batch``, in two calls), forward-only and native first-last-frame 2, diffusers' own
pipeline 1 (it runs the two guidance halves as two calls).

    python bench/wan_memory.py --out bench/results/wan_memory.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from inbetween.memory.wan import WanShape

GB = 1024**3
CARDS = (24, 48, 80)
SIZES = {"480p (832x480)": (480, 832), "720p (1280x720)": (720, 1280)}
# The released Wan 2.1 I2V-14B transformer (Wan 2.2 A14B: two of them, without the image attention).
TRANSFORMER_14B = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
)  # fmt: skip
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu")  # fmt: skip
CLIP_VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                  image_size=224, patch_size=14)  # fmt: skip
CASES = {  # name -> (rows per call, what runs)
    "diffusers' pipeline": 1,
    "forward / native": 2,
    "dual, split guidance": 2,
    "dual (gi, fast, vibid-adapter)": 4,
}


def count_bytes(build, dtype_bytes: int = 2) -> int:
    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters()) * dtype_bytes


def model_weights(two_experts: bool) -> tuple[dict[str, int], int, int]:
    config = dict(TRANSFORMER_14B)
    if two_experts:
        config.update(image_dim=None, added_kv_proj_dim=None)
    transformer = count_bytes(lambda: WanTransformer3DModel(**config))
    with torch.device("meta"):
        block = sum(p.numel() for p in WanTransformer3DModel(**{**config, "num_layers": 1}).blocks.parameters()) * 2
    weights = {
        "transformer": transformer,
        "text_encoder": count_bytes(lambda: UMT5EncoderModel(UMT5Config(**UMT5_XXL))),
        "vae": count_bytes(lambda: AutoencoderKLWan(), 4),  # the VAE runs in float32
    }
    if two_experts:
        weights["transformer_2"] = transformer
    else:
        weights["image_encoder"] = count_bytes(lambda: CLIPVisionModel(CLIPVisionConfig(**CLIP_VIT_H)))
    return weights, block, transformer - config["num_layers"] * block


def table() -> str:
    lines = []
    for model, two in (("Wan 2.1 I2V / FLF2V 14B", False), ("Wan 2.2 I2V A14B (two experts)", True)):
        weights, block, non_block = model_weights(two)
        total = sum(weights.values()) / GB
        parts = ", ".join(f"{name} {size / GB:.1f}" for name, size in weights.items())
        lines += [
            f"### {model}: weights {total:.1f} GiB in bf16 ({parts})",
            "",
        ]
        lines += [
            "| size, 81 frames | sampler rows per call | offload | peak GiB | fits 24 / 48 / 80 GB |",
            "|---|---|---|---|---|",
        ]
        for size, (height, width) in SIZES.items():
            for case, rows in CASES.items():
                for offload in ("none", "model", "group"):
                    shape = WanShape(
                        dim=5120,
                        ffn_dim=13824,
                        heads=40,
                        weights=weights,
                        block_bytes=block,
                        non_block_bytes=non_block,
                        rows=rows,
                        frames=81,
                        height=height,
                        width=width,
                        offload=offload,
                    )
                    peak = shape.estimate().peak_bytes / GB
                    fits = " / ".join("yes" if peak <= 0.9 * card else "no" for card in CARDS)
                    lines.append(f"| {size} | {case}: {rows} | {offload} | {peak:.1f} | {fits} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = table()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
