"""Checkpoints round-trip exactly, the authors' weights import, and nothing is ever unpickled."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from cflnet_sdk.contract import Contract  # noqa: E402
from cflnet_sdk.errors import CFLNetError, ModelFileError  # noqa: E402
from cflnet_sdk.training.checkpoint import (  # noqa: E402
    load_checkpoint,
    read_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from cflnet_sdk.training.config import CFLNetConfig  # noqa: E402
from cflnet_sdk.training.model import CFLNet  # noqa: E402
from cflnet_sdk.training.official import import_official_checkpoint  # noqa: E402


def test_round_trip_is_bit_identical(tiny_model, tiny_checkpoint):
    loaded = load_checkpoint(tiny_checkpoint)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(tiny_model(x), loaded(x), strict=True):
            assert torch.equal(a, b)
    assert loaded.config == tiny_model.config
    assert loaded.contract == Contract(height=64, width=64)
    assert not loaded.training


def test_metadata_holds_config_and_contract(tiny_checkpoint, tiny_config):
    _, config, contract = read_checkpoint(tiny_checkpoint)
    assert config == tiny_config
    assert contract.size == (64, 64)


def test_info_reads_the_header_alone(tiny_checkpoint, tiny_config, monkeypatch):
    """``--init`` learns the network from the header, without loading the weights."""
    import safetensors.torch

    def no_weights(*_args, **_kwargs):
        raise AssertionError("read_checkpoint_info loaded the weights")

    monkeypatch.setattr(safetensors.torch, "load_file", no_weights)
    config, contract = read_checkpoint_info(tiny_checkpoint)
    assert config == tiny_config and contract.size == (64, 64)


def test_write_is_atomic_and_leaves_no_temporary_files(tiny_model, tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, path)
    save_checkpoint(tiny_model, path)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"not a checkpoint at all"])
def test_garbage_files_are_refused_clearly(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=r"bad\.safetensors"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=r"cut\.safetensors"):
        load_checkpoint(path)


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="not a cflnet-sdk checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CFLNetError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")


@pytest.fixture(scope="module")
def authors_state_dict(tmp_path_factory, torch_threads):
    """A state_dict in the authors' exact layout, saved as they do: torch.save(state_dict)."""
    torch.manual_seed(3)
    model = CFLNet(CFLNetConfig()).eval()
    path = tmp_path_factory.mktemp("official") / "imd_2020_best_model.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_authors_checkpoint_imports_with_identical_outputs(authors_state_dict, tmp_path):
    model, path = authors_state_dict
    output = import_official_checkpoint(path, tmp_path / "official.safetensors", size=224)
    imported = load_checkpoint(output)
    assert imported.contract == Contract.authors(224)
    assert imported.contract.channel_order == "BGR"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(model(x), imported(x), strict=True):
            assert torch.equal(a, b)


def test_import_lists_mismatched_keys(tmp_path, torch_threads):
    state = CFLNet(CFLNetConfig(backbone="resnet18", aspp_channels=32)).state_dict()
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=r"wrong shape .*aspp") as info:
        import_official_checkpoint(path, tmp_path / "out.safetensors")
    assert "wrong.pth" in str(info.value)
    assert not (tmp_path / "out.safetensors").exists()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(1), "payload": _Exploit(marker)}, path)
    with pytest.raises(ModelFileError, match=r"evil\.pth"):
        import_official_checkpoint(path, tmp_path / "out.safetensors")
    assert not marker.exists()


def test_import_official_cli_refuses_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save(_Exploit(marker), path)
    result = subprocess.run([sys.executable, "-m", "cflnet_sdk", "import-official", str(path),
                             "-o", str(tmp_path / "out.safetensors")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "evil.pth" in result.stderr and "never pickled code" in result.stderr
    assert not marker.exists()


def test_half_checkpoint_is_half_the_size_and_loads_as_float32(tiny_model, tmp_path):
    full = save_checkpoint(tiny_model, tmp_path / "full.safetensors")
    half = save_checkpoint(tiny_model, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = tiny_model.tamper_probability(x), loaded.tamper_probability(x)
    assert (a - b).abs().max() < 2e-3


def test_average_weighs_every_float_tensor_and_refuses_other_models(tiny_model, tiny_checkpoint,
                                                                     tiny_config, tmp_path):
    from cflnet_sdk.training.checkpoint import average_checkpoints

    other = CFLNet(tiny_config).eval()  # a second initialisation, same architecture
    second = save_checkpoint(other, tmp_path / "b.safetensors",
                             contract=Contract(height=64, width=64))
    mixed = average_checkpoints([tiny_checkpoint, second], [1, 3]).state_dict()
    a, b = tiny_model.state_dict(), other.state_dict()
    for key, value in mixed.items():
        expected = 0.25 * a[key] + 0.75 * b[key] if value.is_floating_point() else a[key]
        assert torch.allclose(value, expected.to(value.dtype), atol=1e-6), key
    wider = save_checkpoint(CFLNet(CFLNetConfig(backbone="resnet18", aspp_channels=32,
                                                embedding_dim=32)), tmp_path / "c.safetensors",
                            contract=Contract(height=64, width=64))
    with pytest.raises(ModelFileError, match="architecture or contract differs"):
        average_checkpoints([tiny_checkpoint, wider])
    with pytest.raises(ModelFileError, match="one non-negative number per checkpoint"):
        average_checkpoints([tiny_checkpoint, second], [1.0])


def test_average_of_a_calibrated_model_and_its_fine_tune_drops_the_operating_point(
        tiny_checkpoint, tmp_path):
    from cflnet_sdk.training.calibrate import with_decision
    from cflnet_sdk.training.checkpoint import average_checkpoints

    calibrated = tmp_path / "calibrated.safetensors"
    with_decision(tiny_checkpoint, 0.9, 0.05, calibrated, copy_move_threshold=0.5)
    averaged = average_checkpoints([calibrated, tiny_checkpoint])
    assert averaged.contract == load_checkpoint(tiny_checkpoint).contract
    assert averaged.contract.decision_threshold is None
    assert averaged.contract.copy_move_threshold is None


def test_average_cli_writes_a_loadable_checkpoint(tiny_checkpoint, tmp_path):
    out = tmp_path / "soup.safetensors"
    done = subprocess.run([sys.executable, "-m", "cflnet_sdk", "average", str(tiny_checkpoint),
                           str(tiny_checkpoint), "--weights", "0.5,0.5", "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    averaged, original = load_checkpoint(out).state_dict(), load_checkpoint(tiny_checkpoint)
    assert all(torch.allclose(averaged[k].float(), v.float(), atol=1e-6)
               for k, v in original.state_dict().items())
    bad = subprocess.run([sys.executable, "-m", "cflnet_sdk", "average", str(tiny_checkpoint),
                          "--weights", "half", "-o", str(out)], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "--weights" in bad.stderr
