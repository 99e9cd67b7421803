"""`cog jobs batch` and `cog batches ...` as a person runs them: real `python -m cog` subprocesses
against the fake Gemini server (in this process, on loopback)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from cog.testing.gemini_server import GeminiTestServer
from tests.e2e.cli import UUID, Cli, flat, gemini_env
from tests.factories import image_bytes

pytestmark = pytest.mark.slow


STEPS = """steps:
- kind: image
  prompt: "Ink drawing of {{ input.filename }}"
  config: {input_images: [input]}
"""


def test_a_batch_waited_for_in_the_terminal_and_the_batch_commands(
    cli: Cli, gemini: GeminiTestServer
) -> None:
    env = gemini_env(gemini)
    series_id = cli("series", "create", "Sketches").stdout.split()[-1]
    files = []
    for n in range(3):
        path = cli.tmp_path / f"s{n}.png"
        path.write_bytes(image_bytes(color=(60 * n, 20, 90)))
        files.append(str(path))
    assert cli("images", "upload", series_id, *files).code == 0
    created = cli("jobs", "create", series_id, "--prompt", "ink")
    job_id = re.findall(UUID, created.stdout)[-1]
    (cli.tmp_path / "steps.yaml").write_text(STEPS)
    edited = cli("jobs", "edit", job_id, env={"EDITOR": f"cp {cli.tmp_path / 'steps.yaml'}"})
    assert edited.code == 0, edited

    gemini.fail_next(1, status=400)  # one run fails, at once
    ran = cli("jobs", "batch", job_id, "--series", series_id, "--wait", env=env)
    assert ran.code == 1, ran  # not every run succeeded
    found = re.search(rf"Batch ({UUID}) failed: 3/3 done, 2 succeeded, 1 failed\.", ran.said)
    assert found, ran
    batch_id = found[1]
    assert f"batch {batch_id[:8]} failed" in flat(ran.stderr)  # the bar's last frame
    assert "3/3" in ran.stderr and "2 ok 1 failed" in flat(ran.stderr)
    assert "400" in ran.stderr  # the failed run's reason
    prompts = sorted(r.prompt for r in gemini.requests)
    assert prompts == [f"Ink drawing of s{n}.png" for n in range(3)]

    shown, listed, table, cancel, plain = cli.many(
        ("batches", "show", batch_id, "--json"),
        ("batches", "list", job_id),
        ("batches", "show", batch_id),
        ("batches", "cancel", batch_id),
        ("jobs", "run", job_id),
    )
    batch: dict[str, Any] = shown.json()
    assert (batch["status"], batch["total"], batch["succeeded"]) == ("failed", 3, 2)
    assert [r["status"] for r in batch["runs"]].count("succeeded") == 2
    assert batch_id in listed.stdout and "failed" in listed.stdout
    assert flat(table.stdout).startswith(f"Batch {batch_id} failed")
    assert cancel.code == 1 and "already ended" in cancel.said
    assert plain.code == 1 and "run it as a batch" in plain.said

    # Queued rather than waited for: `cog serve` (or a worker) would take it.
    queued = cli("jobs", "batch", job_id, *[r["input_image_id"] for r in batch["runs"][:2]])
    assert queued.code == 0, queued
    assert re.search(rf"Queued batch {UUID}: 2 run\(s\)", queued.said), queued

    ghost = str(uuid.uuid4())
    refused, both, neither = cli.many(
        ("jobs", "batch", job_id, ghost),
        ("jobs", "batch", job_id, ghost, "--series", series_id),
        ("jobs", "batch", job_id),
    )
    assert refused.code == 1 and ghost in refused.said and "Nothing was started" in refused.said
    assert both.code == 2 and neither.code == 2

    # --tag narrows --series to the images tagged so.
    first = batch["runs"][0]["input_image_id"]
    assert cli("images", "tag", "keep", first).code == 0
    tagged, untagged, stray = cli.many(
        ("jobs", "batch", job_id, "--series", series_id, "--tag", "keep", "--json"),
        ("jobs", "batch", job_id, "--series", series_id, "--tag", "nothing"),
        ("jobs", "batch", job_id, first, "--tag", "keep"),
    )
    assert tagged.code == 0, tagged
    narrowed = tagged.json()
    assert narrowed["total"] == 1 and narrowed["runs"][0]["input_image_id"] == first
    assert untagged.code == 1 and "no images tagged “nothing”" in untagged.said
    assert stray.code == 2 and "--tag go with --series" in stray.said
