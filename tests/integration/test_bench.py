"""bench/gallery.py keeps working: a tiny run on both databases, and its last line is the JSON."""

from __future__ import annotations

import json

import pytest
from bench.gallery import main

from tests.conftest import PG_HOST, PG_PORT, PG_USER


@pytest.mark.postgres
@pytest.mark.usefixtures("pg_template")  # skips (or fails on CI) when PostgreSQL is not there
async def test_the_gallery_benchmark_runs_and_ends_with_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--images", "250", "--page", "100", "--uploads", "3", "--upload-mb", "0.05"]
    args += ["--batch", "2", "--pg-host", PG_HOST, "--pg-port", str(PG_PORT), "--pg-user", PG_USER]
    figures = await main(args)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == figures
    for database in ("sqlite", "postgres"):
        result = figures[database]
        assert result["rows"] == 250
        assert result["pages"] == 3
        assert result["uploaded"] == 3
        assert result["page_median_ms"] > 0 and result["upload_mb_per_s"] > 0
        assert result["tag_all_seconds"] > 0 and result["untag_all_seconds"] > 0
        assert figures["plans"][database]  # the plan of the keyset query is reported
    # On SQLite a page past the first walks the keyset index (PostgreSQL may prefer another plan
    # for so few rows).
    assert any(
        "USING INDEX ix_cog_images_series_id_created_at_id" in line
        for line in figures["plans"]["sqlite"]
    )
