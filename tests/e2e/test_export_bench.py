"""bench/export.py keeps working: a tiny run through a real `cog serve` on both databases, and
its last line is the JSON of its figures."""

from __future__ import annotations

import json

import pytest
from bench.export import main

from tests.conftest import PG_HOST, PG_PORT, PG_USER


@pytest.mark.postgres
@pytest.mark.usefixtures("pg_template")  # skips (or fails on CI) when PostgreSQL is not there
def test_the_export_benchmark_runs_and_ends_with_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--images", "40", "--image-kb", "32"]
    args += ["--pg-host", PG_HOST, "--pg-port", str(PG_PORT), "--pg-user", PG_USER]
    figures = main(args)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == figures
    for database in ("sqlite", "postgres"):
        result = figures[database]
        assert result["images"] == result["verified_files"] == 40
        assert result["zip_mb"] > 40 * 32 / 1024
        assert result["mb_per_s"] > 0 and result["vmhwm_after_mb"] >= result["vmhwm_before_mb"]
        assert result["within_target"] is True
