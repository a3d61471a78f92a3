"""Image decoding: real files of odd modes and sizes, and the broken files users really have."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk.errors import CFLNetError, ImageError
from cflnet_sdk.images import MAX_PIXELS, load_image
from tests.conftest import photo_array


def write_exif_rotated(path: Path, rgb: np.ndarray, orientation: int = 6) -> None:
    """A JPEG whose pixels are stored sideways with an EXIF orientation tag, like a phone's."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())


def write_odd_files(folder: Path) -> dict[str, Path]:
    """Real files of every awkward kind: gray, RGBA, 16-bit, EXIF-rotated, 1x1, 3x9020 ..."""
    photo = photo_array("chelsea")  # 300x451
    files = {name: folder / f"{name}.{ext}" for name, ext in [
        ("gray", "png"), ("rgba", "png"), ("gray16", "png"), ("exif", "jpg"), ("one", "png"),
        ("wide", "png"), ("palette", "gif"), ("cmyk", "jpg"), ("la", "png")]}
    Image.fromarray(photo[..., 1]).save(files["gray"])
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, :50] = 0
    Image.fromarray(np.dstack([photo, alpha])).save(files["rgba"])
    Image.fromarray(photo[..., 0].astype(np.uint16) * 257).save(files["gray16"])
    write_exif_rotated(files["exif"], np.ascontiguousarray(np.rot90(photo, 1)))
    Image.fromarray(np.array([[[200, 10, 10]]], np.uint8)).save(files["one"])
    Image.fromarray(np.tile(photo[:3], (1, 20, 1))).save(files["wide"])  # 3 x 9020
    Image.fromarray(photo).quantize(64).save(files["palette"])
    Image.fromarray(photo).convert("CMYK").save(files["cmyk"])
    Image.fromarray(photo[..., 2]).convert("LA").save(files["la"])
    return files


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    return write_odd_files(tmp_path_factory.mktemp("odd"))


@pytest.mark.parametrize(("name", "shape"), [
    ("gray", (300, 451)), ("rgba", (300, 451)), ("gray16", (300, 451)), ("exif", (300, 451)),
    ("one", (1, 1)), ("wide", (3, 9020)), ("palette", (300, 451)), ("cmyk", (300, 451)),
    ("la", (300, 451))])
def test_every_mode_becomes_rgb_uint8(odd_files, name, shape):
    rgb = load_image(odd_files[name])
    assert rgb.shape == (*shape, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous


def test_exif_orientation_is_applied(odd_files):
    rgb = load_image(odd_files["exif"]).astype(int)
    upright = photo_array("chelsea").astype(int)
    assert np.abs(rgb - upright).mean() < 4  # JPEG noise only: the picture is upright


def test_sixteen_bit_uses_the_full_range(odd_files):
    rgb = load_image(odd_files["gray16"])
    assert np.array_equal(rgb[..., 0], photo_array("chelsea")[..., 0])


def test_transparent_pixels_are_white(odd_files):
    assert (load_image(odd_files["rgba"])[:, :50] == 255).all()


def test_same_pixels_from_path_pil_and_array(photo_files):
    from_path = load_image(photo_files["png"])
    with Image.open(photo_files["png"]) as image:
        assert np.array_equal(load_image(image), from_path)
    assert np.array_equal(load_image(from_path), from_path)
    assert load_image(from_path[..., 0]).shape == (*from_path.shape[:2], 3)


@pytest.mark.parametrize("kind", ["empty", "truncated-jpeg", "truncated-png", "text", "missing"])
def test_broken_files_raise_an_image_error_naming_the_file(tmp_path, photo_files, kind):
    path = tmp_path / {"empty": "empty.jpg", "truncated-jpeg": "cut.jpg",
                       "truncated-png": "cut.png", "text": "notes.png",
                       "missing": "gone.jpg"}[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind.startswith("truncated"):
        source = photo_files["jpeg" if kind.endswith("jpeg") else "png"].read_bytes()
        path.write_bytes(source[: len(source) // 2])
    elif kind == "text":
        path.write_text("this is not an image\n")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert isinstance(info.value, CFLNetError) and str(path) in str(info.value)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    side = int(MAX_PIXELS**0.5) + 64
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)  # a few KB on disk, 100+ megapixels decoded
    with pytest.raises(ImageError, match="refused"):
        load_image(path)


@pytest.mark.parametrize("array", [np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 2), np.uint8),
                                   np.full((4, 4, 3), 300.0), b"not an image"])
def test_bad_arrays_and_types_raise(array):
    with pytest.raises(ImageError):
        load_image(array)


def test_float_arrays_in_unit_range_are_scaled():
    assert load_image(np.ones((2, 2, 3), np.float32)).max() == 255


def test_decoding_from_many_threads_gives_identical_pixels(odd_files):
    expected = {name: load_image(path) for name, path in odd_files.items()}
    failures: list[str] = []

    def work() -> None:
        for _ in range(3):
            for name, path in odd_files.items():
                if not np.array_equal(load_image(path), expected[name]):
                    failures.append(name)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def write_heic(path: Path, rgb: np.ndarray, orientation: int = 1) -> None:
    """A HEIC photo as phones save them (pillow-heif's HEVC encoder), optionally EXIF-rotated."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, format="HEIF", quality=90, exif=exif.tobytes())


def test_heic_and_jpeg2000_photos_are_read_upright(tmp_path):
    pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra (pillow-heif)")
    upright = photo_array("chelsea")  # 300x451
    write_heic(tmp_path / "phone.heic", np.ascontiguousarray(np.rot90(upright, 1)), 6)
    Image.fromarray(upright).save(tmp_path / "scan.jp2", quality_mode="dB", quality_layers=[45])
    for name in ("phone.heic", "scan.jp2"):
        rgb = load_image(tmp_path / name)
        assert rgb.shape == upright.shape and rgb.dtype == np.uint8, name
        assert np.abs(rgb.astype(int) - upright).mean() < 6, name  # lossy, but upright
        assert np.array_equal(load_image((tmp_path / name).read_bytes()), rgb), name


def test_heic_without_pillow_heif_names_the_extra(tmp_path, monkeypatch):
    from cflnet_sdk import images

    pytest.importorskip("pillow_heif", reason="writing the HEIC file needs pillow-heif")
    write_heic(tmp_path / "phone.heic", photo_array("chelsea"))
    monkeypatch.setattr(images, "_heif_registered", lambda: False)
    with pytest.raises(ImageError, match=r"cflnet-sdk\[heif\]") as caught:
        load_image(tmp_path / "phone.heic")
    assert "phone.heic" in str(caught.value)
