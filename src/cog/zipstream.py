"""A zip archive written as a stream of byte chunks, for any size, in constant memory.

The standard library's `zipfile` writes into a sink that is never sought (so each entry's sizes
and checksum follow its data in a data descriptor), ZIP64 where sizes or offsets need it. The
caller writes an entry in pieces as they arrive and takes the bytes written so far after each
piece, so nothing is held but the piece at hand and one small record per entry for the central
directory at the end.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from typing import IO


class _Sink:
    """Collects what `zipfile` writes until it is taken. No `tell` or `seek`: `zipfile` then
    counts the offset itself and never goes back."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class ZipStream:
    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", allowZip64=True)

    def open(
        self, name: str, *, when: dt.datetime, size: int = 0, compress: bool = False
    ) -> IO[bytes]:
        """Start an entry. Images go in as they are (stored: they are compressed already);
        `compress` deflates text such as a manifest. `size`, when known, decides ZIP64."""
        info = zipfile.ZipInfo(name, date_time=_dos_time(when))
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        info.file_size = size
        # A size unknown up front (text being written) may pass 4 GB only with ZIP64 from the
        # start; its records are 20 bytes longer, which is nothing for a manifest.
        entry: IO[bytes] = self._zip.open(info, "w", force_zip64=compress and size == 0)
        return entry

    def take(self) -> bytes:
        """The bytes written since the last take."""
        return self._sink.take()

    def close(self) -> bytes:
        """Write the central directory; answers the last bytes of the archive."""
        self._zip.close()
        return self._sink.take()


def _dos_time(when: dt.datetime) -> tuple[int, int, int, int, int, int]:
    """Zip keeps local time without a zone and nothing before 1980; Cog writes UTC."""
    utc = when.astimezone(dt.UTC) if when.tzinfo else when
    if utc.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
