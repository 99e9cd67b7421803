"""`verify_image`: what is accepted, what is refused and how it says so, and the thumbnails."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from cog.errors import CogError, Invalid, TooLarge, UnsupportedMedia
from cog.imaging import VerifiedImage, thumbnail_fits, thumbnail_from_bytes, verify_image
from tests.factories import (
    apng_claiming_no_frames,
    avif_with_an_empty_item,
    image_bytes,
    noisy_png,
    padded_png,
    png_bomb,
)

LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 64_000_000, "thumbnail_px": 64}
RED, BLUE = (230, 20, 20), (20, 20, 230)


def verify(data: bytes, **limits: int) -> VerifiedImage:
    return verify_image(io.BytesIO(data), **{**LIMITS, **limits})


def refusal(data: bytes, kind: type[CogError], **limits: int) -> str:
    with pytest.raises(kind) as caught:
        verify(data, **limits)
    message = caught.value.message
    # Said to people as it is: a sentence, not a traceback or a repr.
    assert message[0].isupper()
    assert message.endswith(".")
    assert "Traceback" not in message
    assert "Error(" not in message
    return message


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def close(color: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(color[:3], expected, strict=True))


# --- accepted -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime", "extension"),
    [
        ("PNG", "image/png", "png"),
        ("JPEG", "image/jpeg", "jpg"),
        ("WEBP", "image/webp", "webp"),
        ("GIF", "image/gif", "gif"),
        ("AVIF", "image/avif", "avif"),
    ],
)
def test_each_accepted_format(fmt: str, mime: str, extension: str) -> None:
    data = image_bytes(300, 200, fmt)
    verified = verify(data)
    info = verified.info
    assert (info.format, info.mime_type, info.extension) == (fmt, mime, extension)
    assert (info.width, info.height) == (300, 200)
    assert info.size_bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    thumb = opened(verified.thumbnail)
    assert (thumb.format, thumb.size) == ("WEBP", (64, 43))


def test_a_lossless_webp_and_an_animated_gif_are_accepted() -> None:
    lossless = verify(image_bytes(40, 30, "WEBP", lossless=True))
    assert (lossless.info.width, lossless.info.height) == (40, 30)

    frames = [Image.new("RGB", (50, 40), color) for color in (RED, BLUE, (0, 200, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    animated = verify(buffer.getvalue())
    assert (animated.info.mime_type, animated.info.width, animated.info.height) == (
        "image/gif",
        50,
        40,
    )
    assert close(opened(animated.thumbnail).convert("RGB").getpixel((10, 10)), RED)


def test_the_file_is_read_from_its_start() -> None:
    data = image_bytes(20, 20)
    fp = io.BytesIO(data)
    fp.seek(7)
    verified = verify_image(fp, **LIMITS)
    assert verified.info.size_bytes == len(data)
    assert verified.info.sha256 == hashlib.sha256(data).hexdigest()


def test_an_image_exactly_at_the_limits_is_accepted() -> None:
    data = image_bytes(50, 60)
    verified = verify(data, max_bytes=len(data), max_pixels=3_000)
    assert (verified.info.width, verified.info.height) == (50, 60)


# --- refused ------------------------------------------------------------------------------------


def test_an_empty_file() -> None:
    assert refusal(b"", Invalid) == "The file is empty."


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"Dear diary, today I uploaded a text file.\n", None),
        (b"\x00\x01\x02\x03" * 50, None),
        (image_bytes(20, 20, "BMP"), "a BMP image"),
        (image_bytes(20, 20, "TIFF"), "a TIFF image"),
        (image_bytes(20, 20, "TIFF", compression="tiff_lzw"), "a TIFF image"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "a PDF document"),
        (b'  <svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>', "an SVG drawing"),
        (b'<?xml version="1.0"?><svg/>', "an XML document"),
        (b"PK\x03\x04" + b"\x00" * 60, "a zip archive"),
        (image_bytes(20, 20, "ICO"), None),
        (image_bytes(20, 20, "PPM"), None),
    ],
)
def test_other_kinds_of_file_are_unsupported(data: bytes, named: str | None) -> None:
    message = refusal(data, UnsupportedMedia)
    assert "Cog accepts PNG, JPEG, WebP, GIF or AVIF images" in message
    if named:
        assert message.startswith(f"This is {named};")
    else:
        assert message.startswith("This is not an image Cog can read;")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "AVIF"])
@pytest.mark.parametrize("keep", [0.2, 0.7])
def test_truncated_images_are_invalid(fmt: str, keep: float) -> None:
    whole = noisy_png(120, 90) if fmt == "PNG" else _noisy(120, 90, fmt)
    cut = whole[: int(len(whole) * keep)]
    message = refusal(cut, Invalid)
    assert message.startswith("The image is damaged")
    assert "cannot be read" in message


def _noisy(width: int, height: int, fmt: str) -> bytes:
    image = Image.open(io.BytesIO(noisy_png(width, height)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF") else {}))
    return buffer.getvalue()


def test_only_a_signature_is_invalid() -> None:
    assert "damaged" in refusal(b"\x89PNG\r\n\x1a\n", Invalid)
    assert "damaged" in refusal(b"\xff\xd8\xff\xe0", Invalid)
    assert "damaged" in refusal(b"GIF89a", Invalid)


def test_a_corrupt_png_is_invalid() -> None:
    data = bytearray(noisy_png(60, 60))
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # scribble inside the IDAT
    assert "damaged" in refusal(bytes(data), Invalid)


def test_an_avif_whose_image_is_missing_is_invalid() -> None:
    # Pillow's AVIF plugin raises a RuntimeError for it, which is no reason for a 500.
    message = refusal(avif_with_an_empty_item(), Invalid)
    assert message.startswith("The image is damaged")


def test_damage_pillow_reads_past_with_a_warning_is_judged_by_the_decode() -> None:
    # An APNG control chunk that claims no frames: Pillow warns and reads the still image. The
    # warning reaches no one (pytest turns warnings into errors: this would fail if it did).
    assert verify(apng_claiming_no_frames()).info.format == "PNG"


def test_a_file_over_the_byte_limit() -> None:
    assert (
        refusal(padded_png(60 * 1024 * 1024), TooLarge)
        == "The file is 60 MB; the largest accepted is 50 MB."
    )
    data = image_bytes(20, 20)
    message = refusal(data, TooLarge, max_bytes=len(data) - 1)
    assert (
        message == f"The file is {len(data)} bytes; the largest accepted is {len(data) - 1} bytes."
    )
    # Just over a limit in kilobytes: the exact sizes, not two equal roundings.
    padded = padded_png(20_481)
    assert refusal(padded, TooLarge, max_bytes=20_480) == (
        "The file is 20,481 bytes; the largest accepted is 20,480 bytes."
    )


def test_an_image_over_the_pixel_limit() -> None:
    assert refusal(png_bomb(9_000, 9_000), TooLarge) == (
        "The image is 9000x9000 (81 megapixels); the largest accepted is 64 megapixels."
    )
    assert refusal(image_bytes(61, 50), TooLarge, max_pixels=3_000) == (
        "The image is 61x50 (3,050 pixels); the largest accepted is 3,000 pixels."
    )


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    bomb = png_bomb(20_000, 20_000)
    assert len(bomb) < 100_000
    assert refusal(bomb, TooLarge) == (
        "The image has too many pixels to open safely; the largest accepted is 64 megapixels."
    )


# --- thumbnails ---------------------------------------------------------------------------------


def _split_jpeg(orientation: int) -> bytes:
    """A 200x100 JPEG, left half red and right half blue, with an EXIF orientation."""
    image = Image.new("RGB", (200, 100), BLUE)
    image.paste(RED, (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_an_exif_rotated_jpeg_is_recorded_and_thumbnailed_upright() -> None:
    # Orientation 6: the camera was turned a quarter clockwise; shown upright, the red half
    # (the left of the stored pixels) is at the top of a portrait picture.
    verified = verify(_split_jpeg(6))
    thumb = opened(verified.thumbnail).convert("RGB")
    assert thumb.size == (32, 64)
    assert close(thumb.getpixel((16, 8)), RED)
    assert close(thumb.getpixel((16, 56)), BLUE)
    # The recorded size is the size people see, as the thumbnail shows it.
    assert (verified.info.width, verified.info.height) == (100, 200)


def test_an_upright_jpeg_keeps_its_orientation() -> None:
    verified = verify(_split_jpeg(1))
    thumb = opened(verified.thumbnail).convert("RGB")
    assert thumb.size == (64, 32)
    assert close(thumb.getpixel((8, 16)), RED)
    assert close(thumb.getpixel((56, 16)), BLUE)
    assert (verified.info.width, verified.info.height) == (200, 100)


def test_a_regenerated_thumbnail_matches_the_first() -> None:
    data = _split_jpeg(6)
    first = opened(verify(data).thumbnail).convert("RGB")
    again = opened(thumbnail_from_bytes(data, 64)).convert("RGB")
    assert again.size == first.size == (32, 64)
    assert close(again.getpixel((16, 8)), RED)


def _saved(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _half_transparent(mode: str) -> Image.Image:
    image = Image.new("RGBA", (100, 80), (*RED, 255))
    image.paste((0, 0, 0, 0), (50, 0, 100, 80))
    return image.convert(mode) if mode != "RGBA" else image


def _palette_half_transparent() -> Image.Image:
    image = Image.new("P", (100, 80), 1)
    image.putpalette([0, 0, 0, *RED] + [0] * 762)
    image.paste(0, (50, 0, 100, 80))
    return image


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("RGBA png", _saved(_half_transparent("RGBA"))),
        ("LA png", _saved(_half_transparent("LA"))),
        ("palette png with a transparent colour", _saved(_half_transparent("P"))),
        (
            "gif with a transparent colour",
            _saved(_palette_half_transparent(), "GIF", transparency=0),
        ),
        ("RGBA webp", _saved(_half_transparent("RGBA"), "WEBP", lossless=True)),
    ],
)
def test_transparency_survives_the_thumbnail(name: str, data: bytes) -> None:
    thumb = opened(verify(data).thumbnail)
    assert thumb.size == (64, 51), name
    assert thumb.mode == "RGBA", name
    assert thumb.getpixel((5, 25))[3] == 255, name
    assert thumb.getpixel((60, 25))[3] == 0, name


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("P", "PNG"), ("L", "PNG"), ("1", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG"), ("L", "JPEG")],
)
def test_other_modes_make_opaque_thumbnails(mode: str, fmt: str) -> None:
    source = Image.new("RGB", (90, 60), RED).convert(mode)
    verified = verify(_saved(source, fmt))
    thumb = opened(verified.thumbnail)
    assert (thumb.format, thumb.mode, thumb.size) == ("WEBP", "RGB", (64, 43))
    assert (verified.info.width, verified.info.height) == (90, 60)


def test_a_stored_thumbnail_fits_only_the_size_it_was_made_for() -> None:
    thumb = verify(image_bytes(300, 200)).thumbnail  # made with a longest side of 64
    assert thumbnail_fits(thumb, 64, 300, 200)
    assert not thumbnail_fits(thumb, 128, 300, 200)
    assert not thumbnail_fits(thumb, 32, 300, 200)
    small = verify(image_bytes(40, 30)).thumbnail  # smaller than any thumbnail size
    assert thumbnail_fits(small, 64, 40, 30)
    assert thumbnail_fits(small, 512, 40, 30)
    assert not thumbnail_fits(b"RIFF\x00\x00\x00\x00WEBPVP8 garbage", 64, 300, 200)
    assert not thumbnail_fits(image_bytes(64, 43), 64, 300, 200)  # a PNG is not a thumbnail


def test_an_image_a_model_made_is_checked_without_decoding_and_gets_no_thumbnail_yet() -> None:
    data = image_bytes(300, 200)
    verified = verify_image(io.BytesIO(data), max_bytes=10**7, max_pixels=10**7, thumbnail_px=None)
    assert verified.thumbnail is None
    assert (verified.info.width, verified.info.height) == (300, 200)
    assert verified.info.mime_type == "image/png"


def test_a_damaged_png_from_a_model_is_refused_by_its_checksums() -> None:
    data = bytearray(image_bytes(300, 200))
    idat = data.index(b"IDAT")
    data[idat + 8] ^= 0xFF  # one flipped byte inside the compressed pixels
    with pytest.raises(Invalid, match="damaged"):
        verify_image(io.BytesIO(bytes(data)), max_bytes=10**7, max_pixels=10**7, thumbnail_px=None)


def _png_with_orientation(orientation: int, *, after_pixels: bool) -> bytes:
    """A 300x200 PNG with an EXIF orientation, its eXIf chunk before or after the pixels."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(out, format="PNG", exif=exif.tobytes())
    data = out.getvalue()
    start = data.index(b"eXIf") - 4
    length = int.from_bytes(data[start : start + 4], "big")
    chunk = data[start : start + 12 + length]
    assert start < data.index(b"IDAT")  # Pillow writes it first
    if not after_pixels:
        return data
    rest = data[:start] + data[start + len(chunk) :]
    end = rest.index(b"IEND") - 4
    return rest[:end] + chunk + rest[end:]


@pytest.mark.parametrize("after_pixels", [False, True])
def test_an_image_a_model_made_turned_by_exif_is_measured_as_shown(after_pixels: bool) -> None:
    """Without decoding the pixels, the EXIF orientation is still found, wherever the chunk is."""
    data = _png_with_orientation(6, after_pixels=after_pixels)
    assert (data.index(b"eXIf") > data.index(b"IDAT")) is after_pixels
    verified = verify_image(io.BytesIO(data), max_bytes=10**7, max_pixels=10**7, thumbnail_px=None)
    assert (verified.info.width, verified.info.height) == (200, 300)
    upright = _png_with_orientation(1, after_pixels=after_pixels)
    verified = verify_image(
        io.BytesIO(upright), max_bytes=10**7, max_pixels=10**7, thumbnail_px=None
    )
    assert (verified.info.width, verified.info.height) == (300, 200)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a_jpeg_or_webp_a_model_made_turned_by_exif_is_measured_as_shown(fmt: str) -> None:
    def made(orientation: int) -> bytes:
        exif = Image.Exif()
        exif[0x0112] = orientation
        out = io.BytesIO()
        Image.new("RGB", (300, 200), (30, 90, 200)).save(out, format=fmt, exif=exif.tobytes())
        return out.getvalue()

    for orientation, shown in ((6, (200, 300)), (8, (200, 300)), (3, (300, 200)), (1, (300, 200))):
        verified = verify_image(
            io.BytesIO(made(orientation)), max_bytes=10**7, max_pixels=10**7, thumbnail_px=None
        )
        assert (verified.info.width, verified.info.height) == shown, orientation
        assert verified.info.format == fmt
