"""bench/engine.py keeps working: a tiny run on SQLite, and its last line is the JSON."""

from __future__ import annotations

import json

import pytest
from bench.engine import main


async def test_the_engine_benchmark_runs_the_fan_out_job_and_ends_with_its_figures(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "dummy")  # main sets it; the fixture puts it back
    args = ["--latency-ms", "30", "--steps", "1", "--count", "2", "--repeats", "1"]
    args += ["--overhead-repeats", "1", "--fanout-items", "5", "--server-in-process"]
    figures = await main(args)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == figures
    result = figures["sqlite"]
    # 1 llm call, then 5 image calls 4 at a time: 3 x L at best.
    assert result["fanout_ideal_ms"] == 90.0
    assert result["fanout_wall_ms"] >= 90.0
    assert result["fanout_ratio"] == pytest.approx(result["fanout_wall_ms"] / 90.0, abs=1e-3)
    assert figures["params"]["fanout_items"] == 5
