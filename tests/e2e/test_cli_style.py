"""`cog series edit/style` and `cog batches restyle` as a person runs them: real `python -m cog`
subprocesses, with the preview provider or against the fake Gemini server (in this process,
on loopback)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cog.testing.gemini_server import GeminiTestServer
from tests.e2e.cli import UUID, Cli, flat, gemini_env
from tests.factories import image_bytes

pytestmark = pytest.mark.slow


def created_id(result: Any) -> str:
    assert result.code == 0, result
    found: list[str] = re.findall(UUID, result.stdout)
    return found[-1]


def test_inheriting_and_the_style_profile_from_the_terminal(cli: Cli) -> None:
    parent = created_id(cli("series", "create", "Autumn", "-d", "Low sun"))
    child = created_id(
        cli("series", "create", "Forest", "--parent", parent, "--no-inherit", "-d", "Pines")
    )
    shown = cli("series", "show", child, "--json").json()
    assert shown["inherit_context"] is False
    assert cli("series", "edit", child, "--inherit").code == 0
    assert cli("series", "show", child, "--json").json()["inherit_context"] is True
    nothing = cli("series", "edit", child)
    assert nothing.code == 2 and "nothing to change" in nothing.said

    empty = cli("series", "style", child)
    assert empty.code == 0 and "has no style profile" in empty.said
    drafted = cli("series", "style", child, "--draft")  # the preview provider: no key here
    assert drafted.code == 0, drafted
    assert "Palette:" in drafted.stdout and "preview" in drafted.stdout
    written = cli("series", "style", child, "--set", "Ink wash, [grey] and blue")
    assert written.code == 0 and "Ink wash, [grey] and blue" in written.stdout
    assert cli("series", "show", child, "--json").json()["style_profile"] == (
        "Ink wash, [grey] and blue"
    )
    both = cli("series", "style", child, "--draft", "--clear")
    assert both.code == 2
    assert cli("series", "style", child, "--clear").code == 0
    assert cli("series", "show", child, "--json").json()["style_profile"] == ""


def test_a_restyle_waited_for_in_the_terminal(cli: Cli, gemini: GeminiTestServer) -> None:
    env = gemini_env(gemini)
    photos = created_id(cli("series", "create", "Photos"))
    style = created_id(cli("series", "create", "Gouache"))
    target = created_id(cli("series", "create", "Photos in gouache"))
    files = {}
    for series_id, name, color in (
        (photos, "p0.png", (200, 20, 20)),
        (photos, "p1.png", (20, 200, 20)),
        (photos, "p2.png", (20, 20, 200)),
        (style, "g0.png", (90, 90, 10)),
    ):
        path = cli.tmp_path / name
        path.write_bytes(image_bytes(color=color))
        files[name] = path.read_bytes()
        assert cli("images", "upload", series_id, str(path)).code == 0
    assert cli("series", "style", style, "--set", "thick paint").code == 0

    ran = cli(
        "batches", "restyle", "--series", photos, "--style", style, "--to", target, "--wait",
        env=env,
    )  # fmt: skip
    assert ran.code == 0, ran
    assert re.search(rf"Batch {UUID} succeeded: 3/3 done, 3 succeeded", ran.said), ran
    assert "3/3" in ran.stderr and "3 ok 0 failed" in flat(ran.stderr)  # the progress bar
    requests = gemini.requests
    assert len(requests) == 3
    for request in requests:
        assert [i.data for i in request.images][1:] == [files["g0.png"]]
        assert "Style: thick paint" in request.prompt
        assert "The last image is a style reference" in request.prompt
    assert sorted(r.images[0].data for r in requests) == sorted(
        files[n] for n in ("p0.png", "p1.png", "p2.png")
    )
    refused = cli("batches", "restyle", "--style", style, "--to", target)
    assert refused.code == 2  # neither images nor --series

    # Into a new series, made for the results.
    queued, both = cli.many(
        ("batches", "restyle", "--series", photos, "--style", style, "--to-new", "Gouache 2",
         "--json"),
        ("batches", "restyle", "--series", photos, "--style", style, "--to", target,
         "--to-new", "x"),
    )  # fmt: skip
    assert queued.code == 0, queued
    job = cli("jobs", "show", queued.json()["job_id"], "--json").json()
    listed = cli("series", "list", "--json").json()
    made = [s for s in listed if s["title"] == "Gouache 2"]
    assert len(made) == 1 and made[0]["parent_id"] is None
    assert job["series_id"] == made[0]["id"]
    assert both.code == 2 and "not both" in both.said


def test_a_jobs_style_source_from_the_terminal(cli: Cli) -> None:
    mine = created_id(cli("series", "create", "Harbour"))
    style = created_id(cli("series", "create", "Woodcuts"))
    job = created_id(
        cli("jobs", "create", mine, "-p", "boats at dawn", "--style", style, "--style-count", "2")
    )
    shown = cli("jobs", "show", job, "--json").json()
    assert (shown["style_series_id"], shown["style_image_count"]) == (style, 2)
    assert "style source" in cli("jobs", "show", job).stdout

    too_many = cli("jobs", "style", job, "--style", style, "--style-count", "40")
    assert too_many.code != 0 and "14" in too_many.said
    nowhere = cli("jobs", "style", job, "--style", "00000000-0000-4000-8000-000000000000")
    assert nowhere.code != 0 and "There is no series" in nowhere.said
    assert cli("jobs", "show", job, "--json").json()["style_series_id"] == style  # unchanged

    assert cli("jobs", "style", job, "--clear", "--style", style).code == 2
    cleared = cli("jobs", "style", job, "--clear")
    assert cleared.code == 0, cleared
    assert cli("jobs", "show", job, "--json").json()["style_series_id"] is None
