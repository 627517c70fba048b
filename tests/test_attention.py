import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from reference import _attend, _attention_probs
from tiny import tiny_unet

from inbetween.attention import (
    RotatedTemporalAttnProcessor,
    dual_mode,
    install_rotation,
    recording_forward,
    remove_rotation,
    replaying_backward,
    rotation_processors,
    temporal_self_attention_names,
)


def naive_dual_attention(attn, x, delta_v=None, delta_o=None, delta_b=None):
    """Forward half: plain attention. Backward half: materialised forward map rotated 180 degrees."""
    x_fwd, x_bwd = x.chunk(2)
    probs = _attention_probs(attn, attn.to_q(x_fwd), attn.to_k(x_fwd))
    out_fwd = _attend(attn, probs, attn.to_v(x_fwd))
    w_v = attn.to_v.weight + (0 if delta_v is None else delta_v)
    w_o = attn.to_out[0].weight + (0 if delta_o is None else delta_o)
    b_o = attn.to_out[0].bias + (0 if delta_b is None else delta_b)
    rotated = torch.flip(probs, dims=[-2, -1])
    v_bwd = (x_bwd @ w_v.T).view(*x_bwd.shape[:2], attn.heads, -1).transpose(1, 2)
    out_bwd = (rotated @ v_bwd).transpose(1, 2).reshape(*x_bwd.shape[:2], -1) @ w_o.T + b_o
    return torch.cat([out_fwd, out_bwd])


def make_attention(dim=16, heads=2):
    torch.manual_seed(0)
    return Attention(query_dim=dim, heads=heads, dim_head=dim // heads, out_bias=True)


@pytest.mark.parametrize("frames", [3, 8, 25])
def test_rotation_identity_single_layer(frames):
    attn = make_attention()
    processor = RotatedTemporalAttnProcessor()
    deltas = [torch.randn(16, 16) * 0.1, torch.randn(16, 16) * 0.1, torch.randn(16) * 0.1]
    processor.set_deltas(*deltas)
    processor.mode = "dual"
    x = torch.randn(2 * 6, frames, 16)
    fused = processor(attn, x)
    torch.testing.assert_close(fused, naive_dual_attention(attn, x, *deltas), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("own", [False, True], ids=["rotated", "own-attention"])
def test_fewer_backward_groups_pair_with_the_last_forward_groups(own):
    attn = make_attention()
    processor = RotatedTemporalAttnProcessor()
    extra = [torch.randn(16, 16) * 0.1, torch.randn(16, 16) * 0.1] if own else []
    processor.set_deltas(torch.randn(16, 16) * 0.1, torch.randn(16, 16) * 0.1, torch.randn(16) * 0.1, *extra)
    processor.mode = "dual"
    uncond, cond, backward = torch.randn(3, 4, 6, 16).unbind()  # three groups of 4 rows, 6 frames
    processor.groups = (2, 1)
    three = processor(attn, torch.cat([uncond, cond, backward]))
    processor.groups = (1, 1)
    pair = processor(attn, torch.cat([cond, backward]))
    torch.testing.assert_close(three[:4], AttnProcessor2_0()(attn, uncond), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(three[4:], pair, rtol=1e-5, atol=1e-6)
    processor.groups = (1, 2)
    with pytest.raises(ValueError, match="at most as many backward as forward"):
        processor(attn, torch.cat([uncond, cond, backward]))


def test_without_deltas_backward_uses_base_weights():
    attn = make_attention()
    processor = RotatedTemporalAttnProcessor()
    processor.mode = "dual"
    x = torch.randn(4, 5, 16)
    torch.testing.assert_close(processor(attn, x), naive_dual_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_dual_off_equals_diffusers_default_processor():
    attn = make_attention()
    x = torch.randn(6, 7, 16)
    processor = RotatedTemporalAttnProcessor()
    processor.set_deltas(torch.randn(16, 16), torch.randn(16, 16))  # ignored when dual is off
    assert torch.equal(processor(attn, x), AttnProcessor2_0()(attn, x))


def unet_inputs(batch=4, frames=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.randn(batch, frames, 8, 8, 8, generator=g),
        timestep=torch.tensor(0.3),
        encoder_hidden_states=torch.randn(batch, 1, 32, generator=g),
        added_time_ids=torch.randn(batch, 3, generator=g),
        return_dict=False,
    )


def test_installed_unet_with_dual_off_equals_plain_unet():
    plain, patched = tiny_unet(), tiny_unet()
    install_rotation(patched)
    inputs = unet_inputs()
    with torch.no_grad():
        assert torch.equal(plain(**inputs)[0], patched(**inputs)[0])


def test_rotation_identity_holds_in_every_unet_layer():
    unet = tiny_unet()
    attach_deltas(unet, scale=0.05)
    processors = rotation_processors(unet)
    captured = {}

    def capture(name):
        def hook(module, args, kwargs, output):
            captured[name] = (args[0].detach(), output.detach())

        return hook

    for name in processors:
        unet.get_submodule(name).register_forward_hook(capture(name), with_kwargs=True)
    with torch.no_grad(), dual_mode(unet):
        unet(**unet_inputs())
    assert set(captured) == set(processors) and len(captured) == 6
    for name, (x, out) in captured.items():
        attn, processor = unet.get_submodule(name), processors[name]
        with torch.no_grad():
            expected = naive_dual_attention(attn, x, processor.delta_v, processor.delta_o)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def attach_deltas(unet, scale: float, seed: int = 0) -> list[torch.nn.Parameter]:
    """Install rotation with trainable W_v / W_o deltas of ``scale * N(0, 1)`` (zeros for scale 0)."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for name, processor in install_rotation(unet).items():
        c = unet.get_submodule(name).to_v.weight.shape[0]
        v, o = (torch.nn.Parameter(torch.randn(c, c, generator=generator) * scale) for _ in range(2))
        processor.set_deltas(v, o)
        params += [v, o]
    return params


def test_forward_half_does_not_depend_on_the_adapter_and_grads_reach_only_deltas():
    unet = tiny_unet().requires_grad_(False)
    deltas = attach_deltas(unet, scale=0.0)
    inputs = unet_inputs()
    with dual_mode(unet):
        out = unet(**inputs)[0]
    fwd, bwd = out.chunk(2)
    grads_fwd = torch.autograd.grad(fwd.square().sum(), deltas, retain_graph=True, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads_fwd)
    bwd.square().sum().backward()
    assert all(d.grad is not None and d.grad.abs().sum() > 0 for d in deltas)
    assert all(p.grad is None for p in unet.parameters() if not any(p is d for d in deltas))


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing):
        unet = tiny_unet().requires_grad_(False)
        params = attach_deltas(unet, scale=0.01)
        if checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        with dual_mode(unet):
            unet(**unet_inputs())[0].chunk(2)[1].square().mean().backward()
        return [p.grad for p in params]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_install_checks_the_structure():
    unet = tiny_unet()
    assert len(temporal_self_attention_names(unet)) == 6
    with pytest.raises(ValueError, match="temporal self-attention layers"):
        install_rotation(torch.nn.Linear(2, 2))
    del unet.mid_block.attentions[0].temporal_transformer_blocks[0].attn1
    with pytest.raises(ValueError, match="expected 6 temporal self-attention layers.*found 5"):
        install_rotation(unet)


def test_dual_mode_is_switched_off_after_errors_and_remove_restores_default():
    unet = tiny_unet()
    with pytest.raises(ValueError, match="install_rotation"):
        with dual_mode(unet):
            pass
    processors = install_rotation(unet)
    with pytest.raises(RuntimeError):
        with dual_mode(unet):
            assert all(p.mode == "dual" for p in processors.values())
            raise RuntimeError("boom")
    assert all(p.mode == "off" for p in processors.values())
    name = temporal_self_attention_names(unet)[0]
    with pytest.raises(ValueError, match="forward . backward"):
        with dual_mode(unet):
            processors[name](unet.get_submodule(name), torch.randn(3, 4, 32))
    remove_rotation(unet)
    assert not rotation_processors(unet)
    assert isinstance(unet.get_submodule(temporal_self_attention_names(unet)[0]).processor, AttnProcessor2_0)


def test_record_then_replay_equals_the_dual_call():
    unet = tiny_unet()
    attach_deltas(unet, scale=0.05)
    inputs = unet_inputs(batch=4)
    halves = {k: v.chunk(2) if isinstance(v, torch.Tensor) and v.ndim else (v, v) for k, v in inputs.items()}
    with torch.no_grad():
        with dual_mode(unet):
            joint = unet(**inputs)[0]
        with recording_forward(unet):
            forward = unet(**{k: v[0] for k, v in halves.items()})[0]
        with replaying_backward(unet):
            backward = unet(**{k: v[1] for k, v in halves.items()})[0]
    torch.testing.assert_close(forward, joint.chunk(2)[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(backward, joint.chunk(2)[1], rtol=1e-4, atol=1e-5)
    assert all(p._recorded_qk is None for p in rotation_processors(unet).values())
    with pytest.raises(ValueError, match="recorded forward call"), replaying_backward(unet), torch.no_grad():
        unet(**{k: v[1] for k, v in halves.items()})


def naive_own_attention(attn, x, delta_q, delta_k, delta_v, delta_o):
    """The "w/o RA" backward rows: plain attention with every projection adapted, no rotation."""
    q = x @ (attn.to_q.weight + delta_q).T
    k = x @ (attn.to_k.weight + delta_k).T
    probs = _attention_probs(attn, q, k)
    v = (x @ (attn.to_v.weight + delta_v).T).view(*x.shape[:2], attn.heads, -1).transpose(1, 2)
    out = (probs @ v).transpose(1, 2).reshape(*x.shape[:2], -1)
    return out @ (attn.to_out[0].weight + delta_o).T + attn.to_out[0].bias


def test_own_attention_adapter_runs_the_backward_half_with_its_own_maps():
    attn = make_attention()
    processor = RotatedTemporalAttnProcessor()
    g = torch.Generator().manual_seed(3)
    dv, do, dq, dk = (torch.randn(16, 16, generator=g) * 0.1 for _ in range(4))
    processor.set_deltas(dv, do, None, dq, dk)
    assert processor.backward_attention == "own"
    x = torch.randn(2 * 3, 6, 16, generator=g)
    processor.mode = "dual"
    out = processor(attn, x)
    x_fwd, x_bwd = x.chunk(2)
    torch.testing.assert_close(out.chunk(2)[0], AttnProcessor2_0()(attn, x_fwd), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.chunk(2)[1], naive_own_attention(attn, x_bwd, dq, dk, dv, do), rtol=1e-5, atol=1e-5)
    # It differs from the rotated branch with the same W_v / W_o, and replay needs no recorded forward call.
    assert not torch.allclose(out.chunk(2)[1], naive_dual_attention(attn, x, dv, do).chunk(2)[1], atol=1e-3)
    processor.mode = "replay"
    torch.testing.assert_close(processor(attn, x_bwd), out.chunk(2)[1], rtol=1e-5, atol=1e-5)
