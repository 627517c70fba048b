"""SamplingConfig: the one definition of the sampling options, validated once, and the CLI generated from it."""

import dataclasses

import pytest
from PIL import Image

from inbetween.cli import build_parser, main
from inbetween.config import SamplingConfig


def test_defaults_are_the_papers():
    config = SamplingConfig()
    assert (config.num_inference_steps, config.noise_injection_steps, config.noise_injection_ratio) == (50, 5, 0.5)
    assert (config.fps, config.motion_bucket_id, config.noise_aug_strength) == (7, 127, 0.02)
    assert (config.min_guidance_scale, config.max_guidance_scale, config.fusion) == (1.0, 3.0, "average")
    assert config.guided and not SamplingConfig(max_guidance_scale=1.0).guided


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(num_frames=2), "`num_frames` must be at least 3"),
        (dict(num_inference_steps=0), "`num_inference_steps` must be at least 1"),
        (dict(fusion="mean"), "`fusion` must be one of average, linear, forward, backward"),
        (dict(noise_injection_ratio=1.5), r"`noise_injection_ratio` must be in \[0, 1\]"),
        (dict(noise_injection_steps=-1), "`noise_injection_steps` must be 0 or more"),
        (dict(decode_chunk_size=0), "`decode_chunk_size` must be at least 1"),
        (dict(fps=0), "`fps` must be at least 1"),
    ],
)
def test_bad_values_are_refused_with_the_field_name(values, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**values)


def test_model_dependent_fields_are_filled_in_once():
    filled = SamplingConfig().with_defaults(num_frames=14, height=576, width=1024)
    assert (filled.num_frames, filled.height, filled.width, filled.decode_chunk_size) == (14, 576, 1024, 14)
    kept = SamplingConfig(num_frames=8, decode_chunk_size=2).with_defaults(num_frames=14, height=64, width=64)
    assert (kept.num_frames, kept.decode_chunk_size) == (8, 2)


def test_interpolate_flags_are_generated_from_every_field_with_its_default():
    args = build_parser().parse_args(["interpolate", "a.png", "b.png", "-o", "out.mp4"])
    for field in dataclasses.fields(SamplingConfig):
        assert getattr(args, field.name) == field.default, field.name
    args = build_parser().parse_args(
        ["interpolate", "a.png", "b.png", "-o", "o.mp4", "--steps", "7", "--no-rotation", "--fusion", "linear"]
    )
    assert (args.num_inference_steps, args.rotation, args.fusion) == (7, False, "linear")


@pytest.mark.parametrize(
    "sampler, name, own, other",
    [
        ("trf", "rotation", False, True),
        ("forward", "fusion", "forward", "poe"),
        ("forward", "fusion", "forward", "average"),
    ],
)
def test_a_sampler_fills_the_option_it_fixes_and_refuses_a_contradiction(sampler, name, own, other):
    assert getattr(SamplingConfig(sampler=sampler), name) == own
    assert getattr(SamplingConfig(sampler=sampler, **{name: own}), name) == own
    with pytest.raises(ValueError, match=f"`{name}` {other!r} contradicts `sampler` {sampler!r}.*drop `{name}`"):
        SamplingConfig(sampler=sampler, **{name: other})
    # dataclasses.replace carries the base's value, which is then a contradiction; with_options lets it follow.
    with pytest.raises(ValueError, match="contradicts"):
        dataclasses.replace(SamplingConfig(**{name: other}), sampler=sampler)
    assert SamplingConfig(**{name: other}).with_options(sampler=sampler) == SamplingConfig(sampler=sampler)
    assert SamplingConfig.preset("paper", sampler=sampler) == SamplingConfig(sampler=sampler)


def test_the_options_no_sampler_fixes_keep_the_papers_defaults_under_every_sampler():
    for sampler in ("gi", "vibid"):
        config = SamplingConfig(sampler=sampler)
        assert (config.rotation, config.fusion) == (True, "average")
    unrotated = SamplingConfig(sampler="trf")
    assert dataclasses.replace(unrotated, sampler="gi").rotation is False  # an unrotated config stays unrotated
    assert SamplingConfig(sampler="forward", rotation=False).rotation is False


def test_the_cli_fills_the_samplers_own_and_names_flags_in_a_contradiction(tmp_path, capsys):
    args = build_parser().parse_args(["interpolate", "a.png", "b.png", "-o", "o.mp4", "--sampler", "trf"])
    values = {name: getattr(args, name) for name in SamplingConfig.field_names()}
    assert SamplingConfig(**values) == SamplingConfig(sampler="trf")
    first, last = tmp_path / "first.png", tmp_path / "last.png"
    for path in (first, last):
        Image.new("RGB", (64, 64)).save(path)
    code = main(
        ["interpolate", str(first), str(last), "-o", str(tmp_path / "o.mp4"), "--sampler", "trf", "--rotation"]
    )
    assert code == 2
    assert "`--rotation` True contradicts `--sampler` 'trf'" in capsys.readouterr().err


def test_a_new_sampler_frees_what_the_old_one_fixed():
    native = SamplingConfig(sampler="native")
    assert native.fusion == "forward"
    assert native.with_options(sampler="gi").fusion == "average"
    assert SamplingConfig.preset("paper", native).branches == ("forward", "backward")
    assert SamplingConfig(sampler="trf").with_options(sampler="gi").rotation is True
    assert SamplingConfig(fusion="linear").with_options(sampler="gi").fusion == "linear"  # given, not fixed: kept
