"""bench/load.py keeps working: a few clients for a few seconds against a real `cog serve`, and
its last line is the JSON of its figures."""

from __future__ import annotations

import json

import pytest
from bench.load import KINDS, main

pytestmark = pytest.mark.slow


async def test_the_load_benchmark_runs_and_ends_with_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = await main(["--quick", "--seconds", "3", "--clients", "4"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == figures
    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["targets"]["zero_errors"] is True
    assert set(figures["kinds"]) == set(KINDS)
    for kind in ("page", "thumbnail", "html", "upload", "run"):
        assert figures["kinds"][kind]["count"] > 0, kind
        assert figures["kinds"][kind]["p99_ms"] > 0, kind
    assert figures["rps"] > 0
    assert figures["uploads"] > 0
    # A run still going when the clock stops is left; every run that ended succeeded.
    assert figures["runs"]["succeeded"] == figures["runs"]["ended"]
    assert figures["server"]["log_problems"] == []
    for key in ("cpu_s", "cpu_percent", "peak_rss_mb"):
        assert key in figures["server"]
    assert {"client", "gemini", "machine", "load_average", "params"} <= set(figures)
