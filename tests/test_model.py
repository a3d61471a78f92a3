"""The network is the authors' CFL-Net: parameter count, state_dict layout, shapes, SRM."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cflnet_sdk.errors import ConfigError  # noqa: E402
from cflnet_sdk.training.config import CFLNetConfig  # noqa: E402
from cflnet_sdk.training.model import CFLNet, CFLNetInference  # noqa: E402
from cflnet_sdk.training.srm import srm_kernels  # noqa: E402


@pytest.fixture(scope="module")
def paper_model(torch_threads):
    return CFLNet(CFLNetConfig()).eval()


def test_parameter_count_matches_authors(paper_model):
    assert sum(p.numel() for p in paper_model.parameters()) == 111_906_915
    assert sum(p.numel() for p in paper_model.projection.parameters()) == 395_008


def test_state_dict_layout_matches_authors(paper_model):
    state = paper_model.state_dict()
    assert len(state) == 690
    heads = {k for k in state if not k.startswith(("encoder.", "encoder_srm."))}
    for i in range(1, 5):
        assert f"aspp.aspp{i}.atrous_conv.weight" in heads
        assert f"aspp.aspp{i}.bn.running_var" in heads
    for key in ("conv_srm.weight", "aspp.global_avg_pool.1.weight",
                "aspp.global_avg_pool.2.weight", "aspp.conv1.weight", "aspp.bn1.weight",
                "decoder.0.weight", "decoder.1.weight", "decoder.2.bias",
                "projection.0.bias", "projection.1.weight", "projection.2.bias"):
        assert key in heads
    assert state["encoder.conv1.weight"].shape == (64, 3, 7, 7)
    assert state["encoder_srm.layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert state["aspp.aspp2.atrous_conv.weight"].shape == (512, 4096, 3, 3)
    assert state["aspp.conv1.weight"].shape == (512, 2560, 1, 1)
    assert state["decoder.2.weight"].shape == (2, 512, 1, 1)
    assert state["projection.2.weight"].shape == (256, 512, 1, 1)


def test_aspp_dilations_and_no_bias(paper_model):
    aspp = paper_model.aspp
    assert [b.atrous_conv.dilation[0] for b in (aspp.aspp1, aspp.aspp2, aspp.aspp3, aspp.aspp4)] \
        == [1, 6, 12, 18]
    assert all(m.bias is None for m in aspp.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("size", [(256, 256), (320, 448)])
def test_output_shapes_at_stride_8(paper_model, size):
    with torch.no_grad():
        logits, embeddings = paper_model(torch.randn(1, 3, *size))
    h, w = size[0] // 8, size[1] // 8
    assert logits.shape == (1, 2, h, w)
    assert embeddings.shape == (1, 256, h, w)


def test_srm_weight_is_fixed_and_as_in_paper(paper_model):
    weight = paper_model.conv_srm.weight
    assert not weight.requires_grad and weight.shape == (3, 3, 5, 5)
    assert paper_model.conv_srm.bias is None
    kernels = srm_kernels()
    assert torch.equal(weight, kernels)
    assert torch.equal(kernels[0, 0, 2], torch.tensor([0, 0.5, -1, 0.5, 0]))
    assert torch.equal(kernels[1, 0, 2, 1:4], torch.tensor([0.5, -1, 0.5]))
    assert kernels[2, 0, 2, 2] == pytest.approx(-1.0)
    # every input channel gets the same kernel, so a gray image's residual is 3x one channel
    assert torch.equal(kernels[:, 0], kernels[:, 1]) and torch.equal(kernels[:, 1], kernels[:, 2])


def test_srm_weight_never_updated_by_optimizer(tiny_model):
    model = CFLNet(tiny_model.config).train()
    before = model.conv_srm.weight.clone()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    logits, embeddings = model(torch.randn(2, 3, 64, 64))
    (logits.mean() + embeddings.mean()).backward()
    optimizer.step()
    assert torch.equal(model.conv_srm.weight, before)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "mobilenetv3_large_100"])
def test_small_backbones_work(torch_threads, backbone):
    model = CFLNet(CFLNetConfig(backbone=backbone, aspp_channels=32, embedding_dim=16)).eval()
    with torch.no_grad():
        logits, embeddings = model(torch.randn(1, 3, 64, 96))
        probability = CFLNetInference(model)(torch.randn(1, 3, 64, 96))
    assert logits.shape == (1, 2, 8, 12) and embeddings.shape == (1, 16, 8, 12)
    assert probability.shape == (1, 1, 64, 96)
    assert probability.min() >= 0 and probability.max() <= 1


def test_without_srm_stream(torch_threads):
    model = CFLNet(CFLNetConfig(backbone="resnet18", srm=False, aspp_channels=32))
    assert not hasattr(model, "encoder_srm")
    assert model.aspp.aspp1.atrous_conv.in_channels == 512


def test_error_levels_alone_can_feed_the_second_stream(torch_threads):
    """``srm=False`` with extra channels (ours): the second trunk reads only channels 4+, so
    the RGB channels cannot reach it."""
    model = CFLNet(CFLNetConfig(backbone="test_resnet", srm=False, aspp_channels=16,
                                embedding_dim=8, extra_channels=3)).eval()
    assert not hasattr(model, "conv_srm")
    seen = []
    model.encoder_srm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        probability = CFLNetInference(model)(x)
    assert torch.equal(seen[0], x[:, 3:])
    assert probability.shape == (1, 1, 64, 64)
    assert set(CFLNetInference(model).state_dict()) <= set(model.state_dict())


def test_inference_probability_is_softmax_of_upsampled_logits(tiny_model):
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        logits, _ = tiny_model(x)
        up = torch.nn.functional.interpolate(logits, size=(64, 96), mode="bilinear",
                                             align_corners=True)
        expected = up.softmax(dim=1)[:, 1:2]
        got = CFLNetInference(tiny_model)(x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_inference_network_has_no_projection_head(tiny_model):
    keys = CFLNetInference(tiny_model).state_dict().keys()
    assert not any(k.startswith("projection") for k in keys)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ConfigError, match="not-a-backbone"):
        CFLNet(CFLNetConfig(backbone="not-a-backbone"))


@pytest.mark.parametrize("naming", ["timm", "torchvision"])
def test_local_pretrained_backbone_loads_into_the_rgb_trunk(torch_threads, tmp_path, naming):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    if naming == "timm":
        state = timm.create_model("resnet18", pretrained=False).state_dict()  # with fc.*
        path = tmp_path / "resnet18.safetensors"
        save_file(state, str(path))
    else:
        import torchvision

        state = torchvision.models.resnet18(weights=None).state_dict()
        path = tmp_path / "resnet18.pth"
        torch.save(state, path)
    model = CFLNet(CFLNetConfig(backbone="resnet18", aspp_channels=32,
                                pretrained_backbone=str(path)))
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not torch.equal(model.encoder_srm.conv1.weight, state["conv1.weight"])  # from scratch
    assert "pretrained_backbone" not in model.config.to_json()


def test_wrong_pretrained_backbone_is_a_clear_error(torch_threads, tmp_path):
    from cflnet_sdk.errors import ModelFileError

    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(ModelFileError, match=r"other\.pth"):
        CFLNet(CFLNetConfig(backbone="resnet18", aspp_channels=32,
                            pretrained_backbone=str(path)))
