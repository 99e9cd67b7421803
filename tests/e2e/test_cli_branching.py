"""`cog jobs edit` and `cog jobs show` with conditions, loops and schemas; `cog runs show` with
skipped steps and items. Real `python -m cog` subprocesses, the preview provider."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from cog.runtime import Runtime
from cog.services import series as series_service
from tests.api import SCENES
from tests.e2e.cli import Call, Cli, add_job, editor, flat, run_here, seed, seen

pytestmark = pytest.mark.slow

BRANCHING: list[dict[str, Any]] = [
    {"kind": "llm", "prompt": "List the scenes of {{ base_prompt }}", "config": {"schema": SCENES}},
    {
        "kind": "image",
        "prompt": "{{ item.title }}",
        "for_each": "steps[0].json.scenes",
        "when": "not steps[0].json.needs_detail",
    },
]


def test_edit_round_trips_conditions_loops_and_schemas_and_show_shows_them(
    cli: Cli,
) -> None:
    settings = cli.settings()

    async def work(runtime: Runtime, session: AsyncSession) -> tuple[str, str, str]:
        series = await series_service.create(session, title="Harbour")
        kept = await add_job(session, series.id, BRANCHING)
        plain = await add_job(session, series.id, BRANCHING[:1])
        run = await run_here(runtime, kept)
        return kept, plain, run["id"]

    kept, plain, run_id = seed(settings, work)
    edited = [BRANCHING[0], {**BRANCHING[1], "when": "steps[0].json.needs_detail"}]
    unchanged, changed, shown, run_shown = cli.each(
        Call(("jobs", "edit", kept), editor(cli.tmp_path, "same", None)),
        Call(("jobs", "edit", plain), editor(cli.tmp_path, "edit", edited)),
        Call(("jobs", "show", kept, "--json"), {}),
        Call(("runs", "show", run_id), {}),
        timeout=60,
    )
    assert unchanged.code == 0 and "No changes." in unchanged.stdout, unchanged
    given = yaml.safe_load(seen(cli.tmp_path, "same", 0))["steps"]
    assert given[0]["config"]["schema"] == SCENES
    assert given[1]["for_each"] == "steps[0].json.scenes"
    assert given[1]["when"] == "not steps[0].json.needs_detail"
    header = seen(cli.tmp_path, "same", 0)
    comment = header.split("\nsteps:")[0]
    assert "for_each" in comment and "when" in comment and "schema" in comment

    assert changed.code == 0, changed
    assert "when: steps[0].json.needs_detail" in flat(changed.stdout)

    assert shown.code == 0, shown
    steps = shown.json()["steps"]
    assert steps[1]["when"] == "not steps[0].json.needs_detail"
    assert steps[1]["for_each"] == "steps[0].json.scenes"
    assert steps[0]["config"]["schema"] == SCENES
    last = shown.json()["runs"][0]
    assert len(last["steps"][1]["iterations"]) == 3

    assert run_shown.code == 0, run_shown
    assert "3/3 items" in flat(run_shown.stdout)
