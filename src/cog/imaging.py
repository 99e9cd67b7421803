"""Pillow: sniff and verify images, measure them and make thumbnails.

Nothing here trusts a file name or a declared content type: the bytes decide.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import IO

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from cog.domain import IMAGE_FORMATS
from cog.errors import CogError, Invalid, TooLarge, UnsupportedMedia

ACCEPTED = "PNG, JPEG, WebP, GIF or AVIF"

# Magic numbers of the accepted formats: a file that starts like one of them but does not decode
# is corrupt (422), not of another type (415).
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"\xff\xd8\xff"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (8, b"WEBP"),
    (4, b"ftypavif"),
    (4, b"ftypavis"),
)

_OTHER_KINDS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"BM", "a BMP image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"%PDF", "a PDF document"),
    (4, b"ftypheic", "a HEIC image"),
    (4, b"ftypmif1", "a HEIF image"),
    (0, b"<svg", "an SVG drawing"),
    (0, b"<?xml", "an XML document"),
    (0, b"PK\x03\x04", "a zip archive"),
)


@dataclass(frozen=True)
class ImageInfo:
    """What Cog records about a verified image."""

    format: str
    mime_type: str
    extension: str
    width: int
    height: int
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class VerifiedImage:
    info: ImageInfo
    thumbnail: bytes | None  # None: not made yet (see `verify_image`)


def _looks_like(head: bytes, table: tuple[tuple[int, bytes], ...]) -> bool:
    return any(head[offset : offset + len(magic)] == magic for offset, magic in table)


def _describe_other(head: bytes) -> str | None:
    stripped = head.lstrip()
    for offset, magic, name in _OTHER_KINDS:
        if stripped[offset : offset + len(magic)].lower() == magic.lower():
            return name
    return None


def _trim(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def bytes_text(size: int) -> str:
    """A size the way the limits are documented: binary units, so 50 MB is 50 * 1024 * 1024."""
    if size < 1024:
        return f"{size} bytes"
    for unit, scale in (("KB", 1024), ("MB", 1024**2)):
        if size < scale * 1024:
            return f"{_trim(size / scale)} {unit}"
    return f"{_trim(size / 1024**3)} GB"


def _pixels_text(pixels: int) -> str:
    return f"{_trim(pixels / 1e6)} megapixels" if pixels >= 100_000 else f"{pixels:,} pixels"


def _sha256_and_size(fp: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    fp.seek(0)
    while chunk := fp.read(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    fp.seek(0)
    return digest.hexdigest(), size


def check_size(size: int, max_bytes: int) -> None:
    """Raise `TooLarge` for a file of `size` bytes over `max_bytes`."""
    if size > max_bytes:
        have, limit = bytes_text(size), bytes_text(max_bytes)
        if have == limit:  # just over the limit: rounding would hide the difference
            have, limit = f"{size:,} bytes", f"{max_bytes:,} bytes"
        raise TooLarge(f"The file is {have}; the largest accepted is {limit}.")


def verify_image(
    fp: IO[bytes], *, max_bytes: int, max_pixels: int, thumbnail_px: int | None
) -> VerifiedImage:
    """Check that `fp` holds one whole image of an accepted format, within the limits.

    Raises `UnsupportedMedia` (not an accepted image), `Invalid` (empty, truncated, corrupt) or
    `TooLarge` (bytes or pixels). On success answers the facts and a WebP thumbnail, made from
    the same decode so a large image is decoded once.

    With `thumbnail_px=None` (images a model made, whose bytes come whole from the provider)
    the pixels are not decoded: the structure is checked (PNG chunk checksums) and the
    thumbnail is left to be made when first asked for, off a run's critical path.
    """
    sha256, size = _sha256_and_size(fp)
    if size == 0:
        raise Invalid("The file is empty.")
    check_size(size, max_bytes)
    with warnings.catch_warnings():
        # Pillow warns of damage it reads past (an invalid APNG falls back to its first image,
        # corrupt EXIF is skipped): whether the image decodes decides, and no one reads warnings.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _open_and_check(fp, sha256, size, max_pixels=max_pixels, thumbnail_px=thumbnail_px)


def _open_and_check(
    fp: IO[bytes], sha256: str, size: int, *, max_pixels: int, thumbnail_px: int | None
) -> VerifiedImage:
    head = fp.read(64)
    fp.seek(0)
    try:
        image = Image.open(fp, formats=list(IMAGE_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(
            "The image has too many pixels to open safely; the largest accepted is "
            f"{_pixels_text(max_pixels)}."
        ) from exc
    except UnidentifiedImageError as exc:
        if _looks_like(head, _SIGNATURES):
            raise Invalid("The image is damaged or truncated and cannot be read.") from exc
        other = _describe_other(head)
        what = f"This is {other}" if other else "This is not an image Cog can read"
        raise UnsupportedMedia(f"{what}; Cog accepts {ACCEPTED} images.") from exc
    except Exception as exc:  # Pillow's plugins raise many types (AVIF's a RuntimeError)
        raise Invalid(f"The image is damaged and cannot be read ({exc}).") from exc
    with image:
        fmt = image.format or ""
        if fmt not in IMAGE_FORMATS:
            raise UnsupportedMedia(f"{fmt or 'This'} images are not accepted; use {ACCEPTED}.")
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(
                f"The image is {width}x{height} ({_pixels_text(width * height)}); "
                f"the largest accepted is {_pixels_text(max_pixels)}."
            )
        try:
            if thumbnail_px is None:
                # The orientation is read first, from what opening the file read: `verify`
                # reads on from where opening stopped and leaves `image` unusable. EXIF that
                # may sit after the pixels takes a second open and a decode.
                late = _may_hold_late_exif(image, fp)
                sideways = not late and _turned_sideways(image, decode=False)
                image.verify()
                if late:
                    fp.seek(0)
                    with Image.open(fp, formats=[fmt]) as again:
                        sideways = _turned_sideways(again)
                thumbnail = None
            else:
                sideways = _turned_sideways(image)
                thumbnail = _decode_to_thumbnail(image, thumbnail_px)
        except CogError:
            raise
        except Exception as exc:  # Pillow's decoders raise many types for damaged data
            raise Invalid(f"The image is damaged or truncated and cannot be read ({exc}).") from exc
        if sideways:
            # Record the size people see (and the thumbnail has), not the stored pixel grid.
            width, height = height, width
    mime, ext = IMAGE_FORMATS[fmt]
    info = ImageInfo(fmt, mime, ext, width, height, size, sha256)
    return VerifiedImage(info=info, thumbnail=thumbnail)


def _turned_sideways(image: Image.Image, *, decode: bool = True) -> bool:
    """Whether the EXIF orientation shows the picture a quarter turn from how it is stored.

    With `decode=False`, only what opening the file read is looked at (Pillow's PNG plugin
    otherwise decodes every pixel to reach chunks that may follow them)."""
    exif = image.getexif() if decode else Image.Image.getexif(image)
    return exif.get(ExifTags.Base.Orientation) in (5, 6, 7, 8)


# Where a PNG may keep EXIF: its own chunk, or ImageMagick's text profile (in any text chunk).
_PNG_EXIF_MARKS = (b"eXIf", b"Raw profile type exif")


def _may_hold_late_exif(image: Image.Image, fp: IO[bytes]) -> bool:
    """Whether EXIF could sit in a PNG after its pixels, where opening the file does not reach.

    A scan for the chunk's name and the profile's keyword: finding neither proves there is none
    (a chance match inside compressed data only costs the full decode)."""
    if image.format != "PNG" or "exif" in image.info:
        return False
    if isinstance(fp, io.BytesIO):
        data = fp.getvalue()
        return any(mark in data for mark in _PNG_EXIF_MARKS)
    return True


def _decode_to_thumbnail(image: Image.Image, px: int) -> bytes:
    # JPEG can decode straight at a reduced scale: same check of the whole stream, less memory.
    if image.format == "JPEG":
        image.draft("RGB", (px, px))
    image.load()  # decodes everything: truncated or corrupt data fails here
    return thumbnail_webp(image, px)


def thumbnail_webp(image: Image.Image, px: int) -> bytes:
    thumb = ImageOps.exif_transpose(image)
    thumb.thumbnail((px, px), Image.Resampling.LANCZOS)
    if thumb.mode not in ("RGB", "RGBA"):
        thumb = thumb.convert(
            "RGBA" if "transparency" in thumb.info or thumb.mode in ("LA", "PA") else "RGB"
        )
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=82, method=4)
    return out.getvalue()


def thumbnail_fits(data: bytes, px: int, width: int, height: int) -> bool:
    """Whether a stored thumbnail is the one `px` makes of a `width` x `height` image (it is
    not after `COG_THUMBNAIL_PX` changed, nor when the stored object is damaged)."""
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as thumb:
            return max(thumb.size) == min(px, max(width, height))
    except (OSError, ValueError, SyntaxError):
        return False


def thumbnail_from_bytes(data: bytes, px: int) -> bytes:
    """Thumbnail of an image already verified and stored (regenerating a lost thumbnail)."""
    with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as image:
        return _decode_to_thumbnail(image, px)


# What Gemini's models take as input images; other accepted formats are sent as PNG.
MODEL_INPUT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})


def for_model(data: bytes, mime_type: str) -> tuple[bytes, str]:
    """An image as a model can read it: PNG, JPEG and WebP as they are, GIF and AVIF (which
    Gemini refuses) as a PNG of the first frame."""
    if mime_type in MODEL_INPUT_TYPES:
        return data, mime_type
    with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as image:
        frame = ImageOps.exif_transpose(image)
        if frame.mode not in ("RGB", "RGBA"):
            frame = frame.convert("RGBA" if "transparency" in frame.info else "RGB")
        out = io.BytesIO()
        frame.save(out, format="PNG")
    return out.getvalue(), "image/png"
