"""`cog serve` in-process, up to the moment uvicorn would start serving."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import uvicorn

from cog.cli.serve import serve
from tests.conftest import free_port


def test_serve_sets_what_lives_as_long_as_the_process_aside_from_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full collection walks only what requests made: under load (bench/load.py), walking
    every module, schema and route of the app as well stopped all requests for 100 ms and
    more every few seconds."""
    frozen: list[int] = []

    def run(server: uvicorn.Server) -> None:
        frozen.append(gc.get_freeze_count())
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.chdir(tmp_path)  # no .env file of the repository is read
    monkeypatch.setenv("COG_DATA_DIR", str(tmp_path / "data"))
    try:
        serve(port=free_port())
    finally:
        gc.unfreeze()
    # The app and what it imported (FastAPI, SQLAlchemy, pydantic, the Gemini SDK) are well
    # over a hundred thousand objects.
    assert frozen and frozen[0] > 50_000
