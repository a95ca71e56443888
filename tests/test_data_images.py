"""Image reading: every Pillow mode becomes correct 8-bit RGB, JPEG draft decoding, one-line errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image, ImageFile

from plainnet.data.images import BadImageError, is_image_file, load_rgb, load_rgb_array
from plainnet.errors import ConfigError, DataError


def _pixels(path) -> np.ndarray:
    im = load_rgb(path)
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


@pytest.fixture(scope="module")
def potato_jpeg(datasets_dir):
    return sorted((datasets_dir / "potato" / "Potato___healthy").iterdir())[0]


def test_is_image_file_ignores_case_and_spaces():
    assert is_image_file("leaf 8178.JPG") and is_image_file("a/b c.JpEg") and is_image_file("x.tiff")
    assert not is_image_file("notes.txt") and not is_image_file("README") and not is_image_file("x.jpg.bak")


def test_bilevel_gray_and_palette(tmp_path):
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    bilevel.save(tmp_path / "b.png")
    assert _pixels(tmp_path / "b.png").tolist() == [[[0, 0, 0], [255, 255, 255]]]

    Image.new("L", (1, 1), 77).save(tmp_path / "g.png")
    assert _pixels(tmp_path / "g.png").tolist() == [[[77, 77, 77]]]

    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255])
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    assert _pixels(tmp_path / "p.png").tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_transparency_is_composited_onto_white(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255])
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "pt.png", transparency=1)
    assert Image.open(tmp_path / "pt.png").mode == "P"
    assert _pixels(tmp_path / "pt.png").tolist() == [[[255, 0, 0], [255, 255, 255]]]

    la = np.array([[[100, 255], [100, 0], [100, 128]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    got = _pixels(tmp_path / "la.png")[0, :, 0]
    assert got[0] == 100 and got[1] == 255 and abs(got[2] - (100 * 128 + 255 * 127) / 255) <= 1

    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert _pixels(tmp_path / "rgba.png").tolist() == [[[200, 100, 50], [255, 255, 255]]]


def test_cmyk_and_ycbcr_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    assert np.abs(_pixels(tmp_path / "c.jpg") - rgb).mean() < 3

    Image.fromarray(rgb).convert("YCbCr").save(tmp_path / "y.tif")
    assert Image.open(tmp_path / "y.tif").mode == "YCbCr"
    assert np.abs(_pixels(tmp_path / "y.tif") - rgb).max() <= 3


def _save_16bit(path, values, mode):
    a = np.asarray([values], dtype=">u2" if mode == "I;16B" else "<u2")
    Image.frombytes(mode, (len(values), 1), a.tobytes()).save(path)


@pytest.mark.parametrize(
    "name, mode",
    [("g16.png", "I;16"), ("g16.tif", "I;16"), ("g16b.tif", "I;16B"), ("g16.pgm", "I;16")],
)
def test_16bit_scaled_by_bit_depth_not_clipped(tmp_path, name, mode):
    _save_16bit(tmp_path / name, [0, 1000, 32768, 65535], mode)
    # A 16-bit PGM opens as mode "I": the same 16-bit scale must apply.
    assert Image.open(tmp_path / name).mode in ("I;16", "I;16B", "I")
    got = _pixels(tmp_path / name)
    assert (got == got[..., :1]).all()
    assert got[0, :, 0].tolist() == [0, 4, 128, 255]  # 1000 would clip to 255 with Pillow's convert


def test_32bit_int_and_float(tmp_path):
    Image.fromarray(np.array([[-50, 0, 150]], dtype=np.int32)).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    assert _pixels(tmp_path / "i32.tif")[0, :, 0].tolist() == [0, 64, 255]  # stretched min..max

    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "unit.tif")
    assert _pixels(tmp_path / "unit.tif")[0, :, 1].tolist() == [0, 128, 255]

    Image.fromarray(np.array([[-1.0, 1.0, 3.0, np.nan]], dtype=np.float32)).save(tmp_path / "wide.tif")
    assert _pixels(tmp_path / "wide.tif")[0, :, 2].tolist() == [0, 128, 255, 64]  # NaN -> 0 -> stretched


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (4, 2))
    im.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "o.png", exif=exif.tobytes())
    got = load_rgb(tmp_path / "o.png")
    assert got.size == (2, 4)
    assert got.getpixel((1, 0)) == (255, 0, 0)


def test_draft_decodes_jpeg_smaller_but_never_below_min_side(potato_jpeg, tmp_path):
    full = load_rgb(potato_jpeg)
    assert full.size == (256, 256)
    for min_side, expected in [(64, 64), (100, 128), (129, 256), (300, 256)]:
        assert load_rgb(potato_jpeg, min_side=min_side).size == (expected, expected)
    # Non-square: the shorter side decides.
    Image.new("RGB", (400, 120), (10, 200, 30)).save(tmp_path / "wide.jpg")
    small = load_rgb(tmp_path / "wide.jpg", min_side=50)
    assert min(small.size) >= 50 and small.size[0] < 400
    # Drafting is JPEG-only: a PNG decodes at full size.
    Image.new("RGB", (400, 120)).save(tmp_path / "wide.png")
    assert load_rgb(tmp_path / "wide.png", min_side=50).size == (400, 120)


def _truncated_jpeg(potato_jpeg, tmp_path):
    data = potato_jpeg.read_bytes()
    (tmp_path / "cut in half.JPG").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut in half.JPG", "truncated file"


def _text_as_jpeg(potato_jpeg, tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    return tmp_path / "notes.jpg", "not an image"


def _empty_png(potato_jpeg, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path / "empty.png", "empty file"


def _truncated_png(potato_jpeg, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.png", "truncated file"


def _missing(potato_jpeg, tmp_path):
    return tmp_path / "gone.png", "file not found"


@pytest.mark.parametrize("make", [_truncated_jpeg, _text_as_jpeg, _empty_png, _truncated_png, _missing])
def test_bad_files_raise_one_line_bad_image_error(make, potato_jpeg, tmp_path):
    path, reason = make(potato_jpeg, tmp_path)
    calls = (lambda: load_rgb(path), lambda: load_rgb(path, min_side=32), lambda: load_rgb_array(path, 16))
    for call in calls:
        with pytest.raises(BadImageError) as info:
            call()
        err = info.value
        assert isinstance(err, DataError)
        assert err.path == path and err.reason == reason
        assert str(err) == f"{path}: {reason}" and "\n" not in str(err)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decompression_bomb_is_a_bad_image(tmp_path, monkeypatch):
    Image.new("RGB", (32, 32)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1024 pixels > 2 x limit: Pillow refuses
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_rgb(tmp_path / "big.png")


def test_bad_image_error_survives_pickling(tmp_path):
    err = pickle.loads(pickle.dumps(BadImageError(tmp_path / "x.png", "truncated file")))
    assert err.path == tmp_path / "x.png" and str(err) == f"{tmp_path / 'x.png'}: truncated file"


def test_load_rgb_array_resizes_shorter_side_and_crops_centre(tmp_path):
    # 60x20 in vertical thirds red | green | blue: shorter side 20 -> 10 gives 30x10, centre 10x10 = green.
    thirds = np.zeros((20, 60, 3), dtype=np.uint8)
    thirds[:, :20, 0] = thirds[:, 20:40, 1] = thirds[:, 40:, 2] = 255
    Image.fromarray(thirds).save(tmp_path / "thirds.png")
    out = load_rgb_array(tmp_path / "thirds.png", 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8 and out.flags.writeable
    assert (out[:, 1:-1] == [0, 255, 0]).all()

    # 40x20 halves red | blue: 20x10 after resizing, the centre crop keeps 5 columns of each.
    halves = np.zeros((20, 40, 3), dtype=np.uint8)
    halves[:, :20, 0] = halves[:, 20:, 2] = 255
    Image.fromarray(halves).save(tmp_path / "halves.png")
    out = load_rgb_array(tmp_path / "halves.png", 10)
    assert (out[:, :4] == [255, 0, 0]).all() and (out[:, 6:] == [0, 0, 255]).all()

    # crop_ratio 0.5: resize 40 -> 20 (the 10-pixel black frame becomes 5), crop the white centre 10x10.
    framed = np.zeros((40, 40, 3), dtype=np.uint8)
    framed[10:30, 10:30] = 255
    Image.fromarray(framed).save(tmp_path / "framed.png")
    out = load_rgb_array(tmp_path / "framed.png", 10, crop_ratio=0.5)
    assert (out[1:-1, 1:-1] == 255).all() and out.min() > 128  # the rim blends with the frame (antialias)
    assert load_rgb_array(tmp_path / "framed.png", 10).min() == 0  # without the ratio the frame shows


def test_load_rgb_array_on_real_jpeg_and_bad_arguments(potato_jpeg):
    out = load_rgb_array(potato_jpeg, 56, crop_ratio=0.875)
    assert out.shape == (56, 56, 3) and out.dtype == np.uint8 and out.std() > 10
    with pytest.raises(ConfigError):
        load_rgb_array(potato_jpeg, 32, crop_ratio=1.5)
    with pytest.raises(ConfigError):
        load_rgb(potato_jpeg, min_side=0)
