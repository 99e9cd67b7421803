"""Editing a job's steps through the API, and the refusals around jobs and runs.

Every refused edit is a 422 (or 404) whose `detail` names the problem and the step, and leaves
the job exactly as it was. Runs go through the real SDK to the fake Gemini server. Every test
runs on SQLite and on PostgreSQL (`gemini_client` is parametrized over both).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api import make_job
from tests.conftest import wait_for_run
from tests.factories import make_image, make_series

MISSING = "00000000-0000-4000-8000-000000000000"

# The job every test starts from: an llm step feeding an image step.
SAVED: list[dict[str, Any]] = [
    {"kind": "llm", "prompt": "Describe {{ base_prompt }} for {{ series.title }}."},
    {
        "kind": "image",
        "prompt": "{{ previous.text }}",
        "config": {"count": 2, "aspect_ratio": "16:9"},
    },
]


@dataclass
class Ctx:
    client: httpx.AsyncClient
    series: dict[str, Any]
    image: dict[str, Any]  # an image of the series
    foreign: dict[str, Any]  # an image of another series
    job: dict[str, Any]

    @property
    def job_url(self) -> str:
        return f"/api/jobs/{self.job['id']}"

    async def current(self) -> dict[str, Any]:
        response = await self.client.get(self.job_url)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def put(self, steps: Any) -> httpx.Response:
        return await self.client.put(f"{self.job_url}/steps", json={"steps": steps})

    async def patch(self, position: int | str, body: Any) -> httpx.Response:
        return await self.client.patch(f"{self.job_url}/steps/{position}", json=body)


@pytest.fixture
async def ctx(gemini_client: httpx.AsyncClient) -> Ctx:
    series = await make_series(gemini_client, "Autumn", tags=["autumn"])
    other = await make_series(gemini_client, "Elsewhere")
    image = await make_image(gemini_client, series["id"], "ref.png")
    foreign = await make_image(gemini_client, other["id"], "foreign.png")
    job = await make_job(gemini_client, series["id"])
    found = Ctx(gemini_client, series, image, foreign, job)
    saved = await found.put(SAVED)
    assert saved.status_code == 200, saved.text
    found.job = saved.json()
    return found


def refused(response: httpx.Response, status: int = 422) -> str:
    """The response is a refusal with a plain-words `detail`; answers it."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.strip()
    return detail


def llm(prompt: str = "Describe {{ base_prompt }}", **config: Any) -> dict[str, Any]:
    return {"kind": "llm", "prompt": prompt, "config": config}


def image(prompt: str = "{{ base_prompt }}", **config: Any) -> dict[str, Any]:
    return {"kind": "image", "prompt": prompt, "config": config}


# --- PUT /api/jobs/{id}/steps: refusals -------------------------------------------------------

# Each case: the list sent, and what the detail must say (the step first, then the problem).
Case = Callable[[Ctx], list[Any]]
REFUSALS: dict[str, tuple[Case, list[str]]] = {
    "unknown kind": (lambda c: [llm(), {"kind": "video", "prompt": "x"}], ["step 1", "'video'"]),
    "unknown config key": (lambda c: [image(cuont=2)], ["step 0", "cuont"]),
    "config key of the model": (lambda c: [image(seed=3)], ["step 0", "seed"]),
    "template does not parse": (lambda c: [llm("{{ base_prompt ")], ["step 0", "template"]),
    "template with an unclosed block": (
        lambda c: [llm(), image("{% for s in steps %}{{ s }}")],
        ["step 1", "template"],
    ),
    "unknown variable": (lambda c: [llm("{{ sereis.title }}")], ["step 0", "sereis"]),
    "unknown filter": (lambda c: [llm(), image("{{ previous | shout }}")], ["step 1", "shout"]),
    "unknown test": (
        lambda c: [llm("{% if base_prompt is shouty %}!{% endif %}")],
        ["step 0", "shouty"],
    ),
    "another template": (lambda c: [llm("{% include 'other.txt' %}")], ["step 0", "include"]),
    "steps[N] of the same step": (
        lambda c: [llm(), image("{{ steps[1].text }}")],
        ["step 1", "steps[1]"],
    ),
    "steps[N] of a later step": (
        lambda c: [llm("{{ steps[1].text }}"), image()],
        ["step 0", "steps[1]"],
    ),
    "steps.N of a later step": (
        lambda c: [llm("{{ steps.2 }}"), image(), image()],
        ["step 0", "steps[2]"],
    ),
    "previous in the first step": (lambda c: [llm("{{ previous.text }}")], ["step 0", "previous"]),
    "step:N of a later step": (
        lambda c: [image(input_images=["step:1"]), image()],
        ["step 0", "step:1"],
    ),
    "step:N of itself": (lambda c: [image(), image(input_images=["step:1"])], ["step 1", "step:1"]),
    "step:N of an llm step": (
        lambda c: [llm(), image(input_images=["step:0"])],
        ["step 1", "step:0", "llm"],
    ),
    "step:N past the end": (lambda c: [image(input_images=["step:7"])], ["step 0", "step:7"]),
    "image of another series": (
        lambda c: [image(input_images=[c.foreign["id"]])],
        ["step 0", "another series"],
    ),
    "image that does not exist": (
        lambda c: [llm(), image(input_images=[MISSING])],
        ["step 1", MISSING, "does not exist"],
    ),
    "input image that is no id": (
        lambda c: [image(input_images=["fox.png"])],
        ["step 0", "fox.png"],
    ),
    "count 0": (lambda c: [image(count=0)], ["step 0", "count"]),
    "count 9": (lambda c: [llm(), image(count=9)], ["step 1", "count", "8"]),
    "count on an llm step": (lambda c: [llm(count=2)], ["step 0", "count"]),
    "temperature on an image step": (lambda c: [image(temperature=0.5)], ["step 0", "temperature"]),
    "aspect_ratio on an llm step": (
        lambda c: [llm(aspect_ratio="16:9")],
        ["step 0", "aspect_ratio"],
    ),
    "image_size on an llm step": (lambda c: [llm(image_size="2K")], ["step 0", "image_size"]),
    "aspect ratio not offered": (lambda c: [image(aspect_ratio="7:5")], ["step 0", "aspect_ratio"]),
    "temperature out of range": (lambda c: [llm(temperature=3)], ["step 0", "temperature"]),
    # JSON booleans are not numbers (Pydantic alone would read them as 0 and 1).
    "temperature false": (lambda c: [llm(temperature=False)], ["step 0", "temperature"]),
    "count true": (lambda c: [image(count=True)], ["step 0", "count"]),
    "a step with extra fields": (
        lambda c: [{"kind": "llm", "prompt": "x", "name": "oops", "position": 0}],
        ["step 0", "name", "position"],
    ),
    "a step without a prompt": (lambda c: [{"kind": "image"}], ["step 0", "prompt"]),
    "an empty prompt": (lambda c: [llm(""), image()], ["step 0", "prompt"]),
    "an empty model name": (
        lambda c: [{"kind": "llm", "prompt": "x", "model": ""}],
        ["step 0", "model"],
    ),
    "more steps than the limit": (lambda c: [llm()] * 21, ["20", "21"]),
    "far more steps than the limit": (lambda c: [llm()] * 51, ["steps"]),
    "a step that is not an object": (lambda c: [llm(), "draw a fox"], ["steps.1"]),
    "a config that is not an object": (
        lambda c: [{"kind": "llm", "prompt": "x", "config": ["count"]}],
        ["step 0", "config"],
    ),
    "a prompt with a NUL character": (lambda c: [llm("fox\x00")], ["NUL"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_list_is_named_and_changes_nothing(ctx: Ctx, case: str) -> None:
    build, expected = REFUSALS[case]
    before = await ctx.current()
    detail = refused(await ctx.put(build(ctx)))
    for words in expected:
        assert words in detail, (case, detail)
    assert await ctx.current() == before


async def test_every_problem_of_a_list_is_named_at_once(ctx: Ctx) -> None:
    before = await ctx.current()
    response = await ctx.put(
        [
            {"kind": "video", "prompt": "x"},
            llm("{{ colour }}", cuont=1),  # two problems in one step
            image("{{ steps[3].text }}", count=9, input_images=["step:1", MISSING]),
            image("{% if %}", temperature=1.0),
        ]
    )
    detail = refused(response)
    problems = response.json()["problems"]
    for words in (
        "step 0: unknown kind 'video'",
        "step 1: unknown key `config.cuont`",
        "step 1: the prompt uses unknown variable(s) `colour`",
        "step 2: `config.count`",
        "step 3: the prompt is not a valid template",
        "step 3: `temperature` applies to llm steps only",
    ):
        assert any(p.startswith(words) for p in problems), (words, problems)
        assert words in detail
    assert all(p.startswith("step ") for p in problems)
    assert await ctx.current() == before


async def test_an_edit_that_passes_replaces_the_whole_list(ctx: Ctx) -> None:
    steps = [
        llm("Three words for {{ base_prompt }} ({{ series.tags | join(', ') }})", temperature=0.2),
        image("{{ steps[0].text }}", count=8, image_size="4K", input_images=[ctx.image["id"]]),
        {
            "kind": "image",
            "prompt": "Again: {{ previous.images | length }} {{ steps[0] }}",
            "model": "gemini-3-pro-image",
            "config": {"input_images": ["step:1", ctx.image["id"]], "aspect_ratio": "1:1"},
        },
    ]
    response = await ctx.put(steps)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "ready"
    assert [s["position"] for s in job["steps"]] == [0, 1, 2]
    assert [s["kind"] for s in job["steps"]] == ["llm", "image", "image"]
    assert [s["prompt"] for s in job["steps"]] == [s["prompt"] for s in steps]
    assert job["steps"][2]["model"] == "gemini-3-pro-image"
    assert job["steps"][0]["model"] is None
    assert job["steps"][1]["config"]["count"] == 8
    assert job["steps"][2]["config"]["input_images"] == ["step:1", ctx.image["id"]]
    assert all(uuid.UUID(s["id"]) for s in job["steps"])
    assert await ctx.current() == job
    # The saved list, sent back as it is, is accepted as it is.
    again = await ctx.put(
        [{k: s[k] for k in ("kind", "prompt", "model", "config")} for s in job["steps"]]
    )
    assert again.status_code == 200, again.text
    assert [(s["kind"], s["prompt"], s["config"]) for s in again.json()["steps"]] == [
        (s["kind"], s["prompt"], s["config"]) for s in job["steps"]
    ]
    # An empty list is a job with nothing to run yet.
    emptied = await ctx.put([])
    assert emptied.status_code == 200, emptied.text
    assert emptied.json()["steps"] == [] and emptied.json()["status"] == "draft"


async def test_steps_of_an_unknown_job_are_404(gemini_client: httpx.AsyncClient) -> None:
    response = await gemini_client.put(f"/api/jobs/{MISSING}/steps", json={"steps": []})
    refused(response, 404)
    response = await gemini_client.patch(f"/api/jobs/{MISSING}/steps/0", json={"prompt": "x"})
    refused(response, 404)


async def test_a_put_body_must_be_a_step_list(ctx: Ctx) -> None:
    before = await ctx.current()
    url = f"{ctx.job_url}/steps"
    refused(await ctx.client.put(url, json=SAVED))  # the list, not {"steps": [...]}
    refused(await ctx.client.put(url, json={"steps": SAVED, "title": "x"}))
    refused(await ctx.client.put(url, json={"steps": "all of them"}))
    assert await ctx.current() == before


# --- PATCH /api/jobs/{id}/steps/{position} ----------------------------------------------------


async def test_patch_changes_one_step(ctx: Ctx) -> None:
    before = await ctx.current()
    response = await ctx.patch(1, {"prompt": "A poster of {{ previous.text }}"})
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["steps"][1]["prompt"] == "A poster of {{ previous.text }}"
    assert after["steps"][1]["config"] == before["steps"][1]["config"]  # what was not sent stays
    assert after["steps"][1]["kind"] == "image"

    def content(step: dict[str, Any]) -> tuple[Any, ...]:
        return step["position"], step["kind"], step["prompt"], step["model"], step["config"]

    assert content(after["steps"][0]) == content(before["steps"][0])
    assert await ctx.current() == after

    response = await ctx.patch(
        0, {"model": "gemini-3.5-pro", "config": {"temperature": 1.5, "input_images": []}}
    )
    assert response.status_code == 200, response.text
    changed = response.json()["steps"][0]
    assert changed["model"] == "gemini-3.5-pro"
    assert changed["config"]["temperature"] == 1.5
    assert changed["prompt"] == before["steps"][0]["prompt"]
    # `model: null` is the default model again.
    response = await ctx.patch(0, {"model": None})
    assert response.status_code == 200, response.text
    assert response.json()["steps"][0]["model"] is None


PATCH_REFUSALS: dict[str, tuple[int, Callable[[Ctx], Any], list[str]]] = {
    "unknown kind": (1, lambda c: {"kind": "video"}, ["step 1", "'video'"]),
    "unknown config key": (1, lambda c: {"config": {"cuont": 2}}, ["step 1", "cuont"]),
    "template does not parse": (0, lambda c: {"prompt": "{{ x"}, ["step 0", "template"]),
    "unknown variable": (0, lambda c: {"prompt": "{{ titel }}"}, ["step 0", "titel"]),
    "steps[N] of itself": (1, lambda c: {"prompt": "{{ steps[1] }}"}, ["step 1", "steps[1]"]),
    "previous in the first step": (0, lambda c: {"prompt": "{{ previous }}"}, ["step 0"]),
    "count 9": (1, lambda c: {"config": {"count": 9}}, ["step 1", "count"]),
    "count 0": (1, lambda c: {"config": {"count": 0}}, ["step 1", "count"]),
    "step:N of an llm step": (
        1,
        lambda c: {"config": {"input_images": ["step:0"]}},
        ["step 1", "step:0"],
    ),
    "image of another series": (
        1,
        lambda c: {"config": {"input_images": [c.foreign["id"]]}},
        ["step 1", "another series"],
    ),
    "temperature on an image step": (
        1,
        lambda c: {"config": {"temperature": 0.1}},
        ["step 1", "temperature"],
    ),
    "a kind its config does not fit": (1, lambda c: {"kind": "llm"}, ["step 1", "aspect_ratio"]),
    "extra fields": (0, lambda c: {"prompt": "x", "colour": "red"}, ["step 0", "colour"]),
    "a prompt with a NUL character": (0, lambda c: {"prompt": "fox\x00"}, ["NUL"]),
    "a prompt that is not text": (0, lambda c: {"prompt": 3}, ["step 0", "prompt"]),
    "a body that is not an object": (0, lambda c: ["prompt", "x"], []),
}


@pytest.mark.parametrize("case", list(PATCH_REFUSALS))
async def test_a_refused_patch_is_named_and_changes_nothing(ctx: Ctx, case: str) -> None:
    position, build, expected = PATCH_REFUSALS[case]
    before = await ctx.current()
    detail = refused(await ctx.patch(position, build(ctx)))
    for words in expected:
        assert words in detail, (case, detail)
    assert await ctx.current() == before


async def test_patch_checks_the_steps_that_depend_on_the_one_changed(ctx: Ctx) -> None:
    saved = await ctx.put([image(), image("{{ base_prompt }}, again", input_images=["step:0"])])
    assert saved.status_code == 200, saved.text
    before = await ctx.current()
    detail = refused(await ctx.patch(0, {"kind": "llm"}))
    assert "step 1" in detail and "step:0" in detail and "llm" in detail
    assert await ctx.current() == before


@pytest.mark.parametrize("position", ["2", "-1", "99"])
async def test_patch_of_a_step_that_does_not_exist_is_404(ctx: Ctx, position: str) -> None:
    before = await ctx.current()
    detail = refused(await ctx.patch(position, {"prompt": "x"}), 404)
    assert position in detail
    assert await ctx.current() == before


async def test_patch_position_must_be_a_number(ctx: Ctx) -> None:
    refused(await ctx.patch("first", {"prompt": "x"}), 422)


# --- jobs: create, edit, list -------------------------------------------------------------------


async def test_job_create_and_edit_are_validated(gemini_client: httpx.AsyncClient) -> None:
    series = await make_series(gemini_client)
    url = f"/api/series/{series['id']}/jobs"
    assert "base_prompt" in refused(await gemini_client.post(url, json={"title": "No prompt"}))
    assert "colour" in refused(
        await gemini_client.post(url, json={"base_prompt": "a fox", "colour": "red"})
    )
    assert "base_prompt" in refused(await gemini_client.post(url, json={"base_prompt": 7}))
    assert "NUL" in refused(await gemini_client.post(url, json={"base_prompt": "a\x00fox"}))
    assert MISSING in refused(
        await gemini_client.post(f"/api/series/{MISSING}/jobs", json={"base_prompt": "a fox"}),
        404,
    )
    refused(await gemini_client.post("/api/series/nope/jobs", json={"base_prompt": "a fox"}))

    job = await make_job(gemini_client, series["id"], title="  ")
    assert job["title"] == "Untitled job"
    assert job["status"] == "draft" and job["steps"] == [] and job["last_run"] is None
    job_url = f"/api/jobs/{job['id']}"
    assert "colour" in refused(await gemini_client.patch(job_url, json={"colour": "red"}))
    assert "series_id" in refused(
        await gemini_client.patch(job_url, json={"series_id": series["id"]})
    )
    assert "base_prompt" in refused(await gemini_client.patch(job_url, json={"base_prompt": None}))
    assert "title" in refused(await gemini_client.patch(job_url, json={"title": None}))
    refused(await gemini_client.patch(f"/api/jobs/{MISSING}", json={"title": "x"}), 404)
    assert (await gemini_client.get(job_url)).json() == job  # nothing changed

    edited = await gemini_client.patch(job_url, json={"title": "Dusk", "base_prompt": "a heron"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["title"] == "Dusk" and edited.json()["base_prompt"] == "a heron"
    assert (await gemini_client.get(job_url)).json() == edited.json()


async def test_a_series_lists_its_jobs_newest_first_with_their_last_run(
    gemini_client: httpx.AsyncClient,
) -> None:
    series = await make_series(gemini_client)
    other = await make_series(gemini_client, "Other")
    await make_job(gemini_client, other["id"], title="Not here")
    made = [await make_job(gemini_client, series["id"], title=f"Job {i}") for i in range(3)]
    ran = made[1]
    saved = await gemini_client.put(
        f"/api/jobs/{ran['id']}/steps", json={"steps": [llm("{{ base_prompt }}")]}
    )
    assert saved.status_code == 200, saved.text
    first = (await gemini_client.post(f"/api/jobs/{ran['id']}/runs")).json()
    await wait_for_run(gemini_client, first["id"])
    second = (await gemini_client.post(f"/api/jobs/{ran['id']}/runs")).json()
    await wait_for_run(gemini_client, second["id"])

    listing = await gemini_client.get(f"/api/series/{series['id']}/jobs")
    assert listing.status_code == 200, listing.text
    items = listing.json()["items"]
    assert [j["title"] for j in items] == ["Job 2", "Job 1", "Job 0"]
    assert listing.json()["next_cursor"] is None
    by_title = {j["title"]: j for j in items}
    assert by_title["Job 0"]["last_run"] is None
    last = by_title["Job 1"]["last_run"]
    assert last["id"] == second["id"] and last["status"] == "succeeded"
    assert last["finished_at"] is not None
    assert [s["kind"] for s in by_title["Job 1"]["steps"]] == ["llm"]

    # Pages: two, then the rest.
    page = (await gemini_client.get(f"/api/series/{series['id']}/jobs?limit=2")).json()
    assert [j["title"] for j in page["items"]] == ["Job 2", "Job 1"]
    rest = (
        await gemini_client.get(
            f"/api/series/{series['id']}/jobs", params={"limit": 2, "cursor": page["next_cursor"]}
        )
    ).json()
    assert [j["title"] for j in rest["items"]] == ["Job 0"] and rest["next_cursor"] is None

    refused(await gemini_client.get(f"/api/series/{MISSING}/jobs"), 404)
    refused(await gemini_client.get(f"/api/series/{series['id']}/jobs?limit=0"))


# --- starting runs ------------------------------------------------------------------------------


async def runs_of(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/jobs/{job_id}/runs")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_job_without_steps_cannot_run(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    series = await make_series(gemini_client)
    job = await make_job(gemini_client, series["id"])
    detail = refused(await gemini_client.post(f"/api/jobs/{job['id']}/runs"))
    assert "no steps" in detail
    emptied = await gemini_client.put(f"/api/jobs/{job['id']}/steps", json={"steps": []})
    assert emptied.status_code == 200
    assert "no steps" in refused(await gemini_client.post(f"/api/jobs/{job['id']}/runs"))
    assert await runs_of(gemini_client, job["id"]) == []
    refused(await gemini_client.post(f"/api/jobs/{MISSING}/runs"), 404)
    assert gemini.requests == []


async def test_a_run_whose_input_image_was_deleted_is_refused_at_start(
    ctx: Ctx, gemini: Any
) -> None:
    saved = await ctx.put([llm(), image("{{ previous.text }}", input_images=[ctx.image["id"]])])
    assert saved.status_code == 200, saved.text
    deleted = await ctx.client.delete(f"/api/images/{ctx.image['id']}")
    assert deleted.status_code == 204
    detail = refused(await ctx.client.post(f"{ctx.job_url}/runs"))
    assert detail.startswith("The job cannot run as it is")
    assert "step 1" in detail and ctx.image["id"] in detail and "does not exist" in detail
    assert "not saved" not in detail  # the steps are saved; they only cannot run
    assert await runs_of(ctx.client, ctx.job["id"]) == []
    assert gemini.requests == []
    # The steps are kept as they were: a person fixes them and runs again.
    assert (await ctx.current())["steps"] == saved.json()["steps"]


async def test_a_run_whose_input_image_moved_away_is_refused_at_start(ctx: Ctx) -> None:
    saved = await ctx.put([image(input_images=[ctx.image["id"]])])
    assert saved.status_code == 200, saved.text
    moved = await ctx.client.patch(
        f"/api/images/{ctx.image['id']}", json={"series_id": ctx.foreign["series_id"]}
    )
    assert moved.status_code == 200, moved.text
    detail = refused(await ctx.client.post(f"{ctx.job_url}/runs"))
    assert "step 0" in detail and ctx.image["id"] in detail and "another series" in detail
    assert await runs_of(ctx.client, ctx.job["id"]) == []


# --- templates that reach for Python ------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ base_prompt.__class__.__mro__ }}",
    "{{ base_prompt.__class__.__mro__[1].__subclasses__() }}",
    "{{ base_prompt['__class__'] }}",
    "{{ base_prompt | attr('__class__') }}",
    "{{ series._fields }}",
    "{% for c in ''.__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]


@pytest.mark.parametrize("prompt", ESCAPES)
async def test_templates_reaching_for_python_internals_are_refused_at_save(
    ctx: Ctx, prompt: str
) -> None:
    """What a template can name without running it is refused when it is saved."""
    before = await ctx.current()
    detail = refused(await ctx.put([llm(), image(prompt)]))
    assert "step 1" in detail and "may not" in detail
    assert await ctx.current() == before
    detail = refused(await ctx.patch(0, {"prompt": prompt}))
    assert "step 0" in detail
    assert await ctx.current() == before


@pytest.mark.parametrize(
    "prompt",
    [
        "{{ base_prompt | attr('__cla' ~ 'ss__') }}",
        "{% set name = '_' * 2 ~ 'class' ~ '_' * 2 %}{{ series[name] }}",
        "{{ series.tags.append('x') }}{{ base_prompt }}",
        # Values too large to make: saving computes nothing, the run refuses them.
        "{{ 'fox ' * 10**10 }}",
        "{{ 9 ** (9 ** 7) }}",
        "{{ '%0999999999d' % 1 }}",
    ],
)
async def test_templates_built_to_dodge_the_check_are_inert_at_run(
    ctx: Ctx, gemini: Any, prompt: str
) -> None:
    """What a template only builds when it runs meets the sandbox: the step fails, in plain
    words, before anything reaches the model, and no Python object is ever reached."""
    saved = await ctx.put([llm(prompt)])
    assert saved.status_code == 200, saved.text
    started = await ctx.client.post(f"{ctx.job_url}/runs")
    assert started.status_code == 202, started.text
    run = await wait_for_run(ctx.client, started.json()["id"])
    assert run["status"] == "failed"
    step = run["steps"][0]
    assert step["status"] == "failed"
    assert "may not" in step["error"]
    assert "unsafe" in step["error"] or "too large" in step["error"]
    assert step["rendered_prompt"] is None and step["text"] is None
    assert gemini.requests == []


# --- cancel -------------------------------------------------------------------------------------


async def test_cancel_of_an_unknown_or_finished_run_is_refused(ctx: Ctx) -> None:
    refused(await ctx.client.post(f"/api/runs/{MISSING}/cancel"), 404)
    refused(await ctx.client.post("/api/runs/not-a-run/cancel"), 422)
    started = await ctx.client.post(f"{ctx.job_url}/runs")
    assert started.status_code == 202, started.text
    run = await wait_for_run(ctx.client, started.json()["id"])
    assert run["status"] == "succeeded"
    detail = refused(await ctx.client.post(f"/api/runs/{run['id']}/cancel"), 409)
    assert "succeeded" in detail
    after = (await ctx.client.get(f"/api/runs/{run['id']}")).json()
    assert after["status"] == "succeeded" and after["cancel_requested"] is False
    assert after["steps"] == run["steps"]
