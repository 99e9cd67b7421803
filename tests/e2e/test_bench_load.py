"""bench/load.py keeps working: a few clients for a few seconds against a real `cog serve`, and
its last line is the JSON of its figures."""

from __future__ import annotations

import json

import pytest
from bench.load import KINDS, PHASES, main, parse_args

pytestmark = pytest.mark.slow


async def test_the_load_benchmark_runs_and_ends_with_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = await main(
        ["--quick", "--seconds", "2", "--clients", "4", "--think-ms", "200", "--workers", "1,2"]
    )
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == figures
    assert figures["params"]["workers"] == [1, 2]
    assert list(figures["processes"]) == ["1", "2"]  # each measured, side by side
    for workers, measured in figures["processes"].items():
        assert list(measured["phases"]) == list(PHASES)
        for name, phase in measured["phases"].items():
            assert phase["errors"] == 0, (workers, phase["error_samples"])
            assert phase["targets"]["zero_errors"] is True
            assert set(phase["kinds"]) == set(KINDS)
            for kind in ("page", "thumbnail", "html", "upload", "run"):
                assert phase["kinds"][kind]["count"] > 0, (workers, name, kind)
                assert phase["kinds"][kind]["p99_ms"] > 0, (workers, name, kind)
            assert phase["rps"] > 0
            assert phase["uploads"] > 0
            # A run still going when the clock stops is left; every run that ended succeeded.
            assert phase["runs"]["succeeded"] == phase["runs"]["ended"]
            assert phase["server"]["cpu_s"] > 0
            assert {"client", "gemini", "machine", "load_average"} <= set(phase)
        browsing, saturated = measured["phases"]["browsing"], measured["phases"]["saturated"]
        assert browsing["think_ms"] == 200 and saturated["think_ms"] == 0
        # Clients that pause ask for fewer pages than clients that never do.
        assert browsing["kinds"]["page"]["count"] < saturated["kinds"]["page"]["count"]
        assert measured["server"]["log_problems"] == []
        assert measured["server"]["peak_rss_mb"] > 0
        assert set(figures["targets"]["page_p99_under_100ms"][workers]) == set(PHASES)
    assert figures["targets"]["zero_errors"] is True
    # Two processes answer from two children of `cog serve`: their memory adds up.
    one, two = (figures["processes"][n]["server"]["peak_rss_mb"] for n in ("1", "2"))
    assert two > one


def test_worker_counts_are_a_list_of_whole_numbers() -> None:
    assert parse_args(["--workers", "1,4"]).workers == [1, 4]
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--workers", "two"])
