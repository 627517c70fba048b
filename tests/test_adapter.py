import json

import pytest
import torch
from conftest import random_adapter
from diffusers import UNetSpatioTemporalConditionModel
from safetensors import safe_open
from safetensors.torch import save_file
from tiny import tiny_unet

from inbetween import BackwardAdapter, convert_full_unet_checkpoint
from inbetween.attention import rotation_processors, temporal_self_attention_names


def finetuned_copy(unet, seed=0):
    """A copy of ``unet`` whose temporal attn1 W_v / W_o / b_o were changed, as fine-tuning would."""
    tuned = tiny_unet()
    tuned.load_state_dict(unet.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in temporal_self_attention_names(tuned):
            attn = tuned.get_submodule(name)
            for p in (attn.to_v.weight, attn.to_out[0].weight, attn.to_out[0].bias):
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return tuned


def tensor_bytes(path) -> int:
    """Bytes of a safetensors file after its header (8-byte length + JSON): the tensors' data."""
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return path.stat().st_size - 8 - header


def test_from_unets_extracts_only_value_and_output_deltas():
    base = tiny_unet()
    tuned = finetuned_copy(base)
    adapter = BackwardAdapter.from_unets(base, tuned)
    layers = temporal_self_attention_names(base)
    assert adapter.layers == sorted(layers)
    assert len(adapter.deltas) == 3 * len(layers)
    tuned_state, base_state = tuned.state_dict(), base.state_dict()
    for key, delta in adapter.deltas.items():
        torch.testing.assert_close(delta, tuned_state[key] - base_state[key])
    without_bias = BackwardAdapter.from_unets(base, tuned, include_bias=False)
    assert len(without_bias.deltas) == 2 * len(layers)


def test_save_load_round_trip_with_metadata(tmp_path):
    unet = tiny_unet()
    adapter = random_adapter(unet)
    adapter.base_model = "tiny/svd"
    path = adapter.save(tmp_path / "a.safetensors")
    loaded = BackwardAdapter.load(path)
    assert loaded.base_model == "tiny/svd"
    assert set(loaded.deltas) == set(adapter.deltas)
    assert all(torch.equal(loaded.deltas[k], adapter.deltas[k]) for k in adapter.deltas)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format_version"] == "1" and meta["dtype"] == "float32"
    assert json.loads(meta["layers"]) == adapter.layers

    half = BackwardAdapter.load(adapter.save(tmp_path / "h.safetensors", dtype=torch.float16))
    assert half.dtype == torch.float16
    assert (tmp_path / "h.safetensors").stat().st_size < 0.6 * path.stat().st_size
    with pytest.raises(FileExistsError, match="--overwrite"):
        adapter.save(path)
    adapter.save(path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_load_refuses_files_that_are_not_adapters(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter `.*missing.safetensors` not found"):
        BackwardAdapter.load(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an inbetween backward adapter"):
        BackwardAdapter.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read adapter"):
        BackwardAdapter.load(tmp_path / "junk.safetensors")
    save_file(
        {"x.attn1.to_v.weight": torch.zeros(2, 2)},
        str(tmp_path / "v9.safetensors"),
        metadata={"format": "inbetween.backward_adapter", "format_version": "9"},
    )
    with pytest.raises(ValueError, match="format version 9"):
        BackwardAdapter.load(tmp_path / "v9.safetensors")
    with pytest.raises(ValueError, match="is not a temporal attention"):
        BackwardAdapter({"down_blocks.0.attn1.norm_cross.weight": torch.zeros(2, 2)})


def test_adapter_that_does_not_fit_is_refused():
    unet = tiny_unet()
    adapter = random_adapter(unet)
    other = tiny_unet(block_out_channels=(32, 32))
    with pytest.raises(ValueError, match=r"does not fit this UNet: `.*` is \(64, 64\) in the adapter but \(32, 32\)"):
        adapter.apply_to(other)
    partial = BackwardAdapter({k: v for k, v in adapter.deltas.items() if "mid_block" not in k})
    with pytest.raises(ValueError, match="1 missing layers; layer `mid_block.*` is missing from the adapter"):
        partial.check_fits(unet)


def test_apply_leaves_base_weights_untouched():
    unet = tiny_unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    adapter = random_adapter(unet)
    adapter.apply_to(unet)
    params = dict(unet.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in before.items() if k in params)
    for layer, processor in rotation_processors(unet).items():
        assert torch.equal(processor.delta_v, adapter.deltas[f"{layer}.to_v.weight"])
        assert torch.equal(processor.delta_o_bias, adapter.deltas[f"{layer}.to_out.0.bias"])
    round_trip = BackwardAdapter.from_rotation_processors(unet)
    assert all(torch.equal(round_trip.deltas[k], adapter.deltas[k]) for k in adapter.deltas)


def test_convert_full_checkpoint_folders(tmp_path):
    base = tiny_unet()
    tuned = finetuned_copy(base, seed=3)
    base.save_pretrained(tmp_path / "base" / "unet")  # a pipeline-style folder
    tuned.save_pretrained(tmp_path / "tuned")  # a bare UNet folder
    converted = convert_full_unet_checkpoint(tmp_path / "tuned", tmp_path / "base")
    expected = BackwardAdapter.from_unets(base, tuned)
    assert set(converted.deltas) == set(expected.deltas)
    for key in expected.deltas:
        torch.testing.assert_close(converted.deltas[key], expected.deltas[key])
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "diffusion_pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(ValueError, match="reads only safetensors"):
        convert_full_unet_checkpoint(tmp_path / "pickled", tmp_path / "base")
    with pytest.raises(FileNotFoundError, match="not in the local cache.*hf download"):
        convert_full_unet_checkpoint("nobody/no-such-unet", tmp_path / "base")


def test_svd_adapter_is_w_v_w_o_only_and_small():
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()  # SVD's default config, no memory
    layers = temporal_self_attention_names(unet)
    assert len(layers) == 16
    params = dict(unet.named_parameters())
    adapter_params = sum(
        params[f"{layer}.{p}"].numel() for layer in layers for p in ("to_v.weight", "to_out.0.weight")
    )
    unet_params = sum(p.numel() for p in unet.parameters())
    assert adapter_params / unet_params < 0.02  # the paper's "< 2 % of the parameters"
    assert adapter_params * 2 < 60e6  # tens of MB in float16


def test_fp16_unet_gives_an_fp16_adapter_half_the_bytes_that_loads_into_fp16_and_fp32(tmp_path):
    base32 = tiny_unet()
    tuned32 = finetuned_copy(base32)
    base, tuned = tiny_unet().half(), tiny_unet().half()
    base.load_state_dict(base32.state_dict())
    tuned.load_state_dict(tuned32.state_dict())  # an fp16 model and its fp16 fine-tuned copy

    adapter = BackwardAdapter.from_unets(base, tuned)
    assert adapter.dtype == torch.float16 and all(d.dtype == torch.float16 for d in adapter.deltas.values())
    half = adapter.save(tmp_path / "half.safetensors")  # the default: the adapter's dtype, i.e. the base's
    full = BackwardAdapter.from_unets(base, tuned, dtype="float32").save(tmp_path / "full.safetensors")
    with safe_open(str(half), framework="pt") as f:
        assert f.metadata()["dtype"] == "float16"
        assert {f.get_slice(key).get_dtype() for key in f.keys()} == {"F16"}
    with safe_open(str(full), framework="pt") as f:
        assert f.metadata()["dtype"] == "float32"
        assert {f.get_slice(key).get_dtype() for key in f.keys()} == {"F32"}
    assert tensor_bytes(half) == 2 * adapter.num_parameters and tensor_bytes(full) == 4 * adapter.num_parameters
    assert 0.49 < half.stat().st_size / full.stat().st_size < 0.53  # headers (JSON, ~3 kB here) included

    loaded = BackwardAdapter.load(half)
    assert loaded.dtype == torch.float16
    tuned_state, base_state = tuned.state_dict(), base.state_dict()
    for key, delta in loaded.deltas.items():  # the float32 difference, rounded once to fp16
        exact = tuned_state[key].float() - base_state[key].float()
        torch.testing.assert_close(delta.float(), exact, rtol=2**-11, atol=2**-24)

    upcast = tiny_unet()  # an fp32 UNet holding the fp16 base weights
    upcast.load_state_dict({k: v.float() for k, v in base.state_dict().items()})
    loaded.apply_to(base)  # fp16 UNet: the backward weights are the fine-tuned ones
    for layer, processor in rotation_processors(base).items():
        attn = base.get_submodule(layer)
        assert processor.delta_v.dtype == torch.float16
        weight, bias = processor.backward_output_weight(attn)
        pairs = [
            (processor.backward_value_weight(attn), "to_v.weight"),
            (weight, "to_out.0.weight"),
            (bias, "to_out.0.bias"),
        ]
        for got, param in pairs:  # within fp16 rounding (1e-3 relative) of the fine-tuned weights
            assert got.dtype == torch.float16
            torch.testing.assert_close(got, tuned_state[f"{layer}.{param}"], rtol=1e-3, atol=2e-5)

    loaded.apply_to(upcast)
    for layer, processor in rotation_processors(upcast).items():
        attn = upcast.get_submodule(layer)
        assert processor.delta_v.dtype == torch.float32
        got, want = processor.backward_value_weight(attn), tuned_state[f"{layer}.to_v.weight"].float()
        assert got.dtype == torch.float32
        torch.testing.assert_close(
            got, want, rtol=0, atol=2**-11 * want.sub(base_state[f"{layer}.to_v.weight"]).abs().max().item()
        )


def test_from_unets_default_dtype_follows_the_base_and_dtype_overrides_it(tmp_path):
    base = tiny_unet()
    tuned = finetuned_copy(base)
    assert BackwardAdapter.from_unets(base, tuned).dtype == torch.float32
    half = BackwardAdapter.from_unets(base, tuned, dtype=torch.float16)
    assert half.dtype == torch.float16
    exact = BackwardAdapter.from_unets(base, tuned)
    for key, delta in half.deltas.items():  # fp16 storage of fp32 deltas: fp16 rounding, no more
        torch.testing.assert_close(delta.float(), exact.deltas[key], rtol=2**-11, atol=2**-24)
    assert BackwardAdapter.load(half.save(tmp_path / "h.safetensors", dtype="float32")).dtype == torch.float32
    with pytest.raises(ValueError, match="adapter dtype must be auto, float32, float16, bfloat16; got 'int8'"):
        BackwardAdapter.from_unets(base, tuned, dtype="int8")


def test_query_key_deltas_make_an_own_attention_adapter_and_survive_a_round_trip(tmp_path):
    base = tiny_unet()
    rotated = BackwardAdapter.from_unets(base, finetuned_copy(base))
    assert rotated.backward_attention == "rotated"  # unchanged W_q / W_k are not stored
    tuned = finetuned_copy(base)
    with torch.no_grad():
        for name in temporal_self_attention_names(tuned):
            attn = tuned.get_submodule(name)
            attn.to_q.weight.add_(0.01)
            attn.to_k.weight.sub_(0.01)
    assert BackwardAdapter.from_unets(base, tuned).backward_attention == "rotated"  # only when asked
    own = BackwardAdapter.from_unets(base, tuned, include_query_key=True)
    own = BackwardAdapter.load(own.save(tmp_path / "own.safetensors"))
    assert own.backward_attention == "own"
    assert sum(key.endswith(("to_q.weight", "to_k.weight")) for key in own.deltas) == 2 * len(own.layers)
    unet = tiny_unet()
    own.apply_to(unet)
    assert all(p.backward_attention == "own" for p in rotation_processors(unet).values())
