"""Reading an upload request: each file streamed to a temporary file as it arrives, within limits.

FastAPI's `UploadFile` spools every part whole before a route runs, however large, and counts the
files only afterwards. Here a part named `files` goes to a temporary file (in memory up to 1 MB,
then on disk, never under a name anyone sees) as its bytes arrive. Bytes past
`COG_MAX_UPLOAD_BYTES` are counted but not kept, and neither are files past
`COG_MAX_FILES_PER_UPLOAD`, so a request costs at most the largest batch Cog could accept.

The rest of a request with a refused file is still read (and dropped), so the client gets its
answer rather than a reset connection, and the answer names every refused file. A body larger
than any batch Cog could accept is not read to its end.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from cog.config import Settings
from cog.errors import BadRequest, Invalid, TooLarge
from cog.imaging import bytes_text
from cog.services.images import IncomingFile, check_file_count

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELD = "files"
SPOOL_BYTES = 1024 * 1024
# Room for one part's boundary and headers (the parser allows 8 headers of about 4 kB each).
PART_OVERHEAD = 64 * 1024

NO_FILES = "No files were sent; send one or more in parts named `files` (multipart/form-data)."


def body_limit(settings: Settings) -> int:
    """The largest request body an upload can have: the largest batch Cog could accept."""
    return settings.max_files_per_upload * (settings.max_upload_bytes + PART_OVERHEAD)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass
class _File:
    filename: str | None
    spool: IO[bytes]
    size: int = 0
    pending: list[bytes] = field(default_factory=list)
    dropped: bool = False  # over the byte limit: its bytes are counted, not kept


class _Receiver:
    """The parser's callbacks. They only record; `flush` writes what arrived, off the loop."""

    def __init__(self, settings: Settings) -> None:
        self.max_bytes = settings.max_upload_bytes
        self.max_files = settings.max_files_per_upload
        self.files: list[_File] = []
        self.count = 0  # parts named `files`, kept or not
        self.ended = False
        self._current: _File | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._current = None
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if _decode(options.get(b"name", b"")) != FIELD:
            return  # another field: nothing of it is kept
        self.count += 1
        if self.count > self.max_files:
            return  # refused as a whole once the request has been read
        filename = options.get(b"filename")
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by close()
        self._current = _File(None if filename is None else _decode(filename), spool)
        self.files.append(self._current)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is None:
            return
        part.size += end - start
        if part.size > self.max_bytes:
            part.dropped = True
            part.pending.clear()
        else:
            part.pending.append(data[start:end])

    def _end(self) -> None:
        self.ended = True

    async def flush(self) -> None:
        """Write the bytes that arrived to their files; let go of a file over the limit."""
        writes = [(f.spool, f.pending) for f in self.files if f.pending]
        for f in self.files:
            f.pending = []
            if f.dropped and not isinstance(f.spool, io.BytesIO):
                f.spool.close()  # frees its disk space now, not at the end of the request
                f.spool = io.BytesIO()
        if writes:
            await anyio.to_thread.run_sync(_write_all, writes)

    def incoming(self) -> list[IncomingFile]:
        return [IncomingFile(f.filename, f.spool, size=f.size) for f in self.files]

    def close(self) -> None:
        for f in self.files:
            f.spool.close()


def _write_all(writes: list[tuple[IO[bytes], list[bytes]]]) -> None:
    for spool, chunks in writes:
        for chunk in chunks:
            spool.write(chunk)


@asynccontextmanager
async def receive_files(request: Request, settings: Settings) -> AsyncIterator[list[IncomingFile]]:
    """The files of an upload request, in parts named `files`. Their temporary files are closed
    (and gone) when the block ends, however it ends."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise Invalid(NO_FILES)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("The multipart/form-data upload has no boundary in its Content-Type.")
    limit = body_limit(settings)
    too_big = TooLarge(
        f"The upload is larger than any Cog accepts ({bytes_text(limit)}: "
        f"{settings.max_files_per_upload} files of at most "
        f"{bytes_text(settings.max_upload_bytes)})."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    receiver = _Receiver(settings)
    try:
        try:
            parser = MultipartParser(boundary, receiver.callbacks())
        except FormParserError as exc:
            raise BadRequest(f"The upload is not valid multipart/form-data ({exc}).") from exc
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_big
                parser.write(chunk)
                await receiver.flush()
            parser.finalize()
        except FormParserError as exc:
            raise BadRequest(f"The upload is not valid multipart/form-data ({exc}).") from exc
        except ClientDisconnect as exc:
            raise BadRequest("The upload was cut off before it ended.") from exc
        if not receiver.ended:
            raise BadRequest("The upload ended before its last part was complete.")
        check_file_count(receiver.count, settings)
        yield receiver.incoming()
    finally:
        receiver.close()
