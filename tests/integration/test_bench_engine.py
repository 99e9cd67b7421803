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


async def test_at_zero_latency_the_ratios_are_null_and_the_json_is_strict(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "dummy")
    args = ["--latency-ms", "0", "--steps", "1", "--count", "1", "--repeats", "1"]
    args += ["--overhead-repeats", "1", "--fanout-items", "1", "--server-in-process"]
    figures = await main(args)
    out = capsys.readouterr().out
    # No ideal to compare with: no NaN (not JSON) in the figures, "-" in the table.
    parsed = json.loads(out.strip().splitlines()[-1], parse_constant=pytest.fail)
    result = parsed["sqlite"]
    assert (result["ratio"], result["fanout_ratio"], result["floor_ratio"]) == (None, None, None)
    assert result["ratio_ok"] is False
    assert result["overhead_ms_per_step"] == figures["sqlite"]["overhead_ms_per_step"]
    assert any(line.split("│")[-2].strip() == "-" for line in out.splitlines() if "ratio" in line)
