"""The doctor's report: which findings are problems, what its JSON says, the keys it parses."""

from __future__ import annotations

import uuid

from cog.services.doctor import Finding, Kind, Outcome, Report
from cog.storage.keys import image_id_of_thumbnail, image_key, thumbnail_key


def test_thumbnail_keys_are_told_from_other_keys() -> None:
    image_id = uuid.uuid4()
    assert image_id_of_thumbnail(thumbnail_key(image_id)) == image_id
    for other in (
        image_key(image_id, "png"),
        f"thumbs/zz/{image_id}.webp",  # not the folder Cog puts it in
        f"thumbs/{image_id.hex[:2]}/{image_id}.png",
        "thumbs/ab/not-a-uuid.webp",
        "thumbs/x.webp",
    ):
        assert image_id_of_thumbnail(other) is None, other


def test_notices_never_make_a_report_unhealthy() -> None:
    report = Report(store="file:///s", quick=False, queue=False)
    assert report.healthy
    notice = Finding(Kind.thumbnail_missing, "d", "r", image_id=uuid.uuid4())
    report.findings.append(notice)
    assert report.healthy and report.problems == []
    problem = Finding(Kind.file_without_row, "d", "r", key="images/ab/x.png")
    report.findings.append(problem)
    assert not report.healthy and report.problems == [problem]
    for outcome, healthy in [
        (Outcome.left, False),
        (Outcome.failed, False),
        (Outcome.gone, True),
        (Outcome.fixed, True),
    ]:
        problem.outcome = outcome
        assert report.healthy is healthy, outcome


def test_the_json_counts_each_kind_looked_for() -> None:
    report = Report(store="s3://cog-images/", quick=True, queue=True)
    run_id = uuid.uuid4()
    report.findings.append(Finding(Kind.run_lost, "d", "r", run_id=run_id))
    body = report.to_dict()
    assert body["healthy"] is False
    assert body["counts"]["run_lost"] == {"found": 1, "open": 1}
    assert "thumbnail_outdated" not in body["counts"]  # --quick reads no thumbnail
    assert body["findings"] == [
        {
            "kind": "run_lost",
            "problem": True,
            "image_id": None,
            "run_id": str(run_id),
            "key": None,
            "detail": "d",
            "remedy": "r",
            "outcome": None,
            "note": None,
        }
    ]
    assert [k.label for k in Kind]  # every kind has a label and a fix
    assert all(k.fix for k in Kind)
