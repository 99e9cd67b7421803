"""bench/search.py keeps working: a tiny run on both databases, and its last line is the JSON."""

from __future__ import annotations

import json

import pytest
from bench.search import KINDS, main

from tests.conftest import PG_HOST, PG_PORT, PG_USER


@pytest.mark.postgres
@pytest.mark.usefixtures("pg_template")  # skips (or fails on CI) when PostgreSQL is not there
async def test_the_search_benchmark_runs_and_ends_with_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--images", "1500", "--rounds", "1"]
    args += ["--pg-host", PG_HOST, "--pg-port", str(PG_PORT), "--pg-user", PG_USER]
    figures = await main(args)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == figures
    assert figures["params"]["images"] == 1500
    for database in ("sqlite", "postgres"):
        for kind in KINDS:
            result = figures[database][kind]
            assert result["median_ms"] > 0 and result["p95_ms"] >= result["median_ms"]
            assert result["mean_results"] > 0  # the searches find images
            plan = "\n".join(figures["plans"][database][kind])
            assert plan
    # The words are looked up in the full-text index.
    assert "cog_images_fts VIRTUAL TABLE" in "\n".join(figures["plans"]["sqlite"]["word"])
