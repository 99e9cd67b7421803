"""A `cog serve` killed in the middle of a loop: the next start resumes the run, keeps the
iterations that finished and their images, and makes only the images still missing, each once.
Real processes (the fake Gemini server and `cog serve`), stopped with SIGKILL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.processes import (
    Server,
    ok,
    rows_of,
    series_images,
    start_run,
    wait_for_end,
    wait_until,
)

pytestmark = pytest.mark.slow

RESUME_WITHIN_S = 12
ITEMS = 4
STEPS = [
    {
        "kind": "llm",
        "prompt": "List scenes of {{ base_prompt }}",
        "config": {
            "schema": {
                "type": "object",
                "properties": {
                    "scenes": {
                        "type": "array",
                        "minItems": ITEMS,
                        "maxItems": ITEMS,
                        "items": {"type": "string"},
                    }
                },
                "required": ["scenes"],
            }
        },
    },
    {"kind": "image", "prompt": "{{ item }}, at dusk", "for_each": "steps[0].json.scenes"},
]


def test_a_loop_cut_short_keeps_its_finished_items_and_makes_only_the_rest(
    serve: Callable[..., Server], server_database_url: str
) -> None:
    one_at_a_time = {"COG_IMAGE_CONCURRENCY": "1"}
    first = serve(**one_at_a_time)
    with first.client() as http:
        series_id, run_id = start_run(http, STEPS)
        before = wait_until(
            http,
            run_id,
            lambda r: r["steps"][1]["status"] == "running" and len(r["steps"][1]["image_ids"]) == 2,
            seconds=15,
        )
    first.kill()
    kept = before["steps"][1]["iterations"]
    assert [len(it["image_ids"]) for it in kept] == [1, 1, 0, 0]

    second = serve(**one_at_a_time)
    with second.client() as http:
        run = wait_for_end(http, run_id, seconds=RESUME_WITHIN_S)
        assert run["status"] == "succeeded", run
        assert run["attempts"] == 2
        listing, loop = run["steps"]
        assert listing["finished_at"] == before["steps"][0]["finished_at"]  # not asked again
        assert [it["status"] for it in loop["iterations"]] == ["succeeded"] * ITEMS
        # The two finished items kept their images; the others got one each.
        for it, was in zip(loop["iterations"][:2], kept[:2], strict=True):
            assert it["image_ids"] == was["image_ids"]
            assert it["item"] == was["item"]
        ids = [i for it in loop["iterations"] for i in it["image_ids"]]
        assert len(ids) == len(set(ids)) == ITEMS
        assert loop["image_ids"] == ids
        step_ids, image_steps = rows_of(server_database_url, run_id)
        assert sorted(image_steps) == sorted(ids)  # no other image of the run in the database
        for it in loop["iterations"]:
            (image_id,) = it["image_ids"]
            image = ok(http.get(f"/api/images/{image_id}"))
            assert image["metadata"]["iteration"] == it["index"]
            assert image["metadata"]["item"] == it["item"]
            assert image["step_id"] == step_ids[1]
        assert len(series_images(http, series_id)) == ITEMS
