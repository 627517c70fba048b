"""Size and round-trip error of fp16 vs fp32 backward adapters, on the real SVD UNet architecture.

The UNet is ``UNetSpatioTemporalConditionModel()`` (the default config, SVD's: 1.52 B parameters,
16 temporal self-attention layers) with seeded random weights, N(0, 0.02), built with
``step_cost.py``'s helper. The "true" fine-tuned weights are the base's W_v / W_o of the 16 temporal
self-attention layers plus N(0, ``--delta-std``) deltas (1e-4 by default); only those 32 matrices
are copied (the biases stay unchanged, so the adapters hold no bias deltas).

Each row extracts an adapter with ``BackwardAdapter.from_unets`` (the fine-tuned model given as its
state), saves and loads it, applies it with ``apply_to`` and reads the backward branch's effective
weights back from the rotation processors (``backward_value_weight`` / ``backward_output_weight``:
``base + delta`` in the UNet's dtype, exactly what sampling uses). The error is against the true
(float32) fine-tuned weights, next to the floor of simply storing those weights in fp16.

Rows: A, an adapter made against fp32 base weights; B, a fine-tuned model saved in fp16 against the
fp16 base (SVD's fp16 variant); C, an fp32 fine-tuned model against the fp16 base; D, the A / C
adapters applied to another model's fp16 weights (as the SVD adapter is to SVD-XT; the target is
that model's weights plus the same deltas); R, the fine-tuned weights stored in fp16, no adapter.

    python bench/adapter_dtype.py            # ~2 min on 2 CPU cores, ~7 GB RAM
    python bench/adapter_dtype.py --delta-std 1e-3 --out bench/results/adapter_dtype_1e-3.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from step_cost import GB, REPO, WEIGHT_STD, ensure_free_memory, random_model  # noqa: E402  (bench/ is no package)

from inbetween import BackwardAdapter  # noqa: E402
from inbetween.adapter import OUTPUT_BIAS, OUTPUT_WEIGHT, VALUE_WEIGHT  # noqa: E402
from inbetween.attention import remove_rotation, rotation_processors, temporal_self_attention_names  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "adapter_dtype.md"
NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class FineTunedState:
    """A fine-tuned UNet as ``from_unets`` reads it: its state, here only the adapted tensors."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def adapted_keys(unet: torch.nn.Module) -> list[str]:
    return [
        f"{layer}.{param}" for layer in temporal_self_attention_names(unet) for param in (VALUE_WEIGHT, OUTPUT_WEIGHT)
    ]


def tuned_state(unet: torch.nn.Module, tuned: dict[str, torch.Tensor], dtype: torch.dtype) -> FineTunedState:
    """The fine-tuned weights in ``dtype``, with the base's (unchanged) output biases."""
    state = {key: t.to(dtype) for key, t in tuned.items()}
    params = dict(unet.named_parameters())
    for layer in temporal_self_attention_names(unet):
        state[f"{layer}.{OUTPUT_BIAS}"] = params[f"{layer}.{OUTPUT_BIAS}"].detach().to(dtype)
    return FineTunedState(state)


def effective_weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backward branch's W_v / W_o as the rotation processors compute them (base + delta, UNet dtype)."""
    weights = {}
    for layer, processor in rotation_processors(unet).items():
        attn = unet.get_submodule(layer)
        weights[f"{layer}.{VALUE_WEIGHT}"] = processor.backward_value_weight(attn).detach()
        weights[f"{layer}.{OUTPUT_WEIGHT}"] = processor.backward_output_weight(attn)[0].detach()
    return weights


def errors(got: dict[str, torch.Tensor], true: dict[str, torch.Tensor], delta_norm: float) -> dict[str, float]:
    max_abs, err_sq, true_sq = 0.0, 0.0, 0.0
    for key, t in true.items():
        diff = got[key].double() - t.double()
        max_abs = max(max_abs, diff.abs().max().item())
        err_sq += diff.square().sum().item()
        true_sq += t.double().square().sum().item()
    return dict(max_abs=max_abs, rel=math.sqrt(err_sq / true_sq), rel_delta=math.sqrt(err_sq) / delta_norm)


def measure(args) -> tuple[list[dict], dict]:
    from diffusers import UNetSpatioTemporalConditionModel

    fp32, fp16 = torch.float32, torch.float16
    ensure_free_memory(int(6.5 * GB), "the SVD UNet in float32")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    unet = random_model(UNetSpatioTemporalConditionModel, {}, torch.device("cpu"), fp32, generator)
    build_s = time.perf_counter() - start
    params = dict(unet.named_parameters())
    keys = adapted_keys(unet)
    generator = torch.Generator().manual_seed(args.seed + 1)
    deltas = {key: torch.randn(params[key].shape, generator=generator) * args.delta_std for key in keys}
    base32 = {key: params[key].detach().clone() for key in keys}
    true = {key: base32[key] + deltas[key] for key in keys}  # the true fine-tuned weights, fp32
    # another model's W_v / W_o (SVD-XT, to which the SVD adapter is applied too) and its "fine-tuned" weights
    other32 = {key: torch.randn(base32[key].shape, generator=generator) * WEIGHT_STD for key in keys}
    other_true = {key: other32[key] + deltas[key] for key in keys}
    delta_norm = math.sqrt(sum(d.double().square().sum().item() for d in deltas.values()))
    info = dict(
        build_s=build_s,
        unet_parameters=sum(p.numel() for p in unet.parameters()),
        adapted_parameters=sum(deltas[k].numel() for k in keys),
        layers=len(temporal_self_attention_names(unet)),
        max_abs_weight=max(t.abs().max().item() for t in true.values()),
        max_abs_delta=max(d.abs().max().item() for d in deltas.values()),
    )
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="adapter_dtype_"))

    def row(label, adapter, base, tuned, how, note="", target=true):
        path = folder / f"{label}.safetensors"
        adapter.save(path)  # in the adapter's own dtype, as `inbetween convert-checkpoint` does
        loaded = BackwardAdapter.load(path)
        loaded.apply_to(unet)
        result = dict(
            label=label,
            base=NAMES[base],
            tuned=NAMES[tuned],
            adapter=NAMES[loaded.dtype],
            how=how,
            unet=NAMES[next(unet.parameters()).dtype],
            bytes=path.stat().st_size,
            note=note,
            **errors(effective_weights(unet), target, delta_norm),
        )
        rows.append(result)
        path.unlink()
        remove_rotation(unet)
        print(f"[adapter_dtype] {label}: {result}", file=sys.stderr)

    def set_weights(weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key, weight in weights.items():
                params[key].copy_(weight)

    # base weights in fp32 (SVD's main weights), the fine-tuned UNet in fp32
    tuned32 = tuned_state(unet, true, fp32)
    on_base32 = BackwardAdapter.from_unets(unet, tuned32, dtype="float16")
    row("A1", BackwardAdapter.from_unets(unet, tuned32), fp32, fp32, "default")
    row("A2", on_base32, fp32, fp32, '`dtype="float16"`')
    row("A3", BackwardAdapter.from_unets(unet, tuned32, dtype="bfloat16"), fp32, fp32, '`dtype="bfloat16"`')

    # base weights in fp16 (SVD's fp16 variant): the same UNet rounded to fp16
    unet.half()
    tuned16 = tuned_state(unet, true, fp16)  # a fine-tuned model saved in fp16
    on_base16 = BackwardAdapter.from_unets(unet, tuned32)  # an fp32 fine-tuned model against the fp16 base
    row("A4", on_base32, fp32, fp32, '`dtype="float16"`', "the fp16 variant of the base")
    row("B1", BackwardAdapter.from_unets(unet, tuned16), fp16, fp16, "default")
    row("B2", BackwardAdapter.from_unets(unet, tuned16, dtype="float32"), fp16, fp16, '`dtype="float32"`')
    row("C1", on_base16, fp16, fp32, "default")
    row("C2", BackwardAdapter.from_unets(unet, tuned32, dtype="float32"), fp16, fp32, '`dtype="float32"`')
    # the same adapters on another model's fp16 weights
    set_weights(other32)
    row("D1", on_base32, fp32, fp32, '`dtype="float16"`', "another model's weights, as SVD-XT", target=other_true)
    row("D2", on_base16, fp16, fp32, "default", "another model's weights, as SVD-XT", target=other_true)
    set_weights(base32)

    # the fp16 base weights loaded into an fp32 UNet (`from_pretrained(variant="fp16", dtype=float32)`)
    unet.float()
    row("C3", on_base16, fp16, fp32, "default", "the fp16 base weights upcast")
    folder.rmdir()

    floor = errors({key: t.half() for key, t in true.items()}, true, delta_norm)  # no adapter: weights in fp16
    rows.append(dict(label="R", base="-", tuned="fp16", adapter="-", how="-", unet="fp16", note="", **floor))
    rows[-1]["bytes"] = 2 * info["adapted_parameters"]
    return rows, info


def format_report(rows: list[dict], info: dict, args, command: str) -> str:
    import diffusers

    lines = [
        "# Backward adapter dtype: file size and round-trip error",
        "",
        f"`{command}`",
        "",
        f"SVD UNet architecture (default config, {info['unet_parameters'] / 1e9:.2f} B parameters, random N(0, "
        f"{WEIGHT_STD}) weights, built in {info['build_s']:.0f} s); {info['layers']} temporal self-attention layers, "
        f"W_v / W_o: {info['adapted_parameters'] / 1e6:.2f} M parameters; fine-tuning deltas N(0, {args.delta_std:g}) "
        f"(max |delta| {info['max_abs_delta']:.2e}, max |W| {info['max_abs_weight']:.3f}); seed {args.seed}; "
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.",
        "",
        "Errors are of the backward branch's effective W_v / W_o (base + delta in the UNet's dtype, read from the "
        "rotation processors after `save` / `load` / `apply_to`) against the true fine-tuned weights (fp32), over "
        "all 32 matrices: max abs, relative `||err|| / ||W_ft||` and `||err|| / ||delta||` (the share of the "
        "fine-tuning lost). R: the fine-tuned W_v / W_o simply stored in fp16 (its size: those 32 matrices; a "
        f"whole fp16 UNet is {2 * info['unet_parameters'] / 1e9:.2f} GB).",
        "",
        "| row | base weights (made against) | fine-tuned weights | adapter (`from_unets`) | UNet applied to "
        "| file MB | file MiB | max abs err | rel err | err / delta |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["label"] == "R", r["label"])):
        adapter = "-" if r["adapter"] == "-" else f"{r['adapter']} ({r['how']})"
        unet = r["unet"] + (f": {r['note']}" if r["note"] else "")
        lines.append(
            f"| {r['label']} | {r['base']} | {r['tuned']} | {adapter} | {unet} | {r['bytes'] / 1e6:.1f} | "
            f"{r['bytes'] / 2**20:.1f} | {r['max_abs']:.2e} | {r['rel']:.2e} | {r['rel_delta']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delta-std", type=float, default=1e-4, help="std of the fine-tuning deltas (default 1e-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python bench/adapter_dtype.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows, info = measure(args)
    text = format_report(rows, info, args, command.strip())
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"[adapter_dtype] wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
