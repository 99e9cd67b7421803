"""`cog images` on many images at once, as a person runs it (real subprocesses on a data dir):
mv, tag, untag, rm by ids or by a filter, export to a zip, and import of a folder or a zip."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from pathlib import Path

from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession

from cog.services import images as images_service
from cog.storage import ObjectStore
from tests.e2e.cli import MISSING, Cli, add_image, add_series, seed_data, stored_files

# Commands read stdin from /dev/null (never the terminal pytest may run in), as in CI.


def picture(path: Path, color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), color).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def listed(cli: Cli, series_id: str, *args: str) -> dict[str, dict[str, object]]:
    result = cli("images", "list", series_id, "--json", *args)
    assert result.code == 0, result
    return {i["id"]: i for i in result.json()}


def test_mv_tag_untag_and_rm_by_ids_and_by_filter(cli: Cli) -> None:
    settings = cli.settings()

    async def work(session: AsyncSession, store: ObjectStore) -> dict[str, object]:
        top = await add_series(session, "Top")
        sub = await add_series(session, "Sub", parent_id=uuid.UUID(top))
        other = await add_series(session, "Other")
        ids = [await add_image(session, store, settings, top, f"t{i}.png") for i in range(3)]
        ids += [await add_image(session, store, settings, sub, "s.png")]
        return {"top": top, "sub": sub, "other": other, "ids": ids}

    made = seed_data(cli, work)
    top, sub, other, ids = made["top"], made["sub"], made["other"], made["ids"]
    assert isinstance(ids, list)

    tagged = cli("images", "tag", " Sunset ,keep", *ids[:2])
    assert tagged.code == 0, tagged
    assert "Tagged 2 image(s) with sunset, keep." in tagged.said
    again = cli("images", "tag", "keep", "--series", str(top), "--recursive")
    assert "Tagged 2 image(s) with keep (2 had them already)." in again.said
    assert sorted(listed(cli, str(top), "--tag", "keep")) == sorted(ids[:3])

    moved = cli(
        "images", "mv", "--to", str(other), "--series", str(top), "--recursive", "--tag", "sunset"
    )
    assert moved.code == 0, moved
    assert "Moved 2 image(s) to Other." in moved.said
    now_other = listed(cli, str(other))
    assert sorted(now_other) == sorted(ids[:2])
    assert now_other[ids[0]]["tags"] == ["sunset", "keep"]

    none = cli("images", "untag", "sunset", "--series", str(top), "--recursive")
    assert "Removed sunset from 0 image(s) (2 did not have them)." in none.said
    untagged = cli("images", "untag", "sunset", "--series", str(other))
    assert "Removed sunset from 2 image(s)." in untagged.said
    assert listed(cli, str(other))[ids[0]]["tags"] == ["keep"]

    # One unknown id: nothing moves, and the message names it.
    refused = cli("images", "mv", "--to", str(top), ids[0], MISSING)
    assert refused.code == 1
    assert f"1 of the 2 selected images do not exist, so nothing was done: {MISSING}." in (
        refused.said
    )
    assert sorted(listed(cli, str(other))) == sorted(ids[:2])
    usage = cli.many(
        ("images", "mv", "--to", str(top)),
        ("images", "tag", "x", ids[0], "--series", str(top)),
        ("images", "rm", "--recursive"),
    )
    assert all(r.code == 2 for r in usage), usage

    # More than one image asks first; without a terminal it says to add --yes.
    before = stored_files(cli.storage_dir)
    unasked = cli("images", "rm", "--series", str(other))
    assert unasked.code == 1
    assert "Delete 2 image(s)" in unasked.said and "--yes" in unasked.said
    assert stored_files(cli.storage_dir) == before
    gone = cli("images", "rm", "--series", str(other), "--yes")
    assert gone.code == 0, gone
    assert "Deleted 2 image(s)." in gone.said
    assert listed(cli, str(other)) == {}
    left = stored_files(cli.storage_dir)
    assert len(left) == 4 and all(ids[2] in key or ids[3] in key for key in left)
    assert sorted(listed(cli, str(sub))) == [ids[3]]


def test_export_writes_a_zip_with_a_progress_bar_and_a_manifest(cli: Cli) -> None:
    settings = cli.settings()

    async def work(session: AsyncSession, store: ObjectStore) -> tuple[str, list[str]]:
        top = await add_series(session, "Harbour")
        sub = await add_series(session, "Boats", parent_id=uuid.UUID(top))
        ids = [await add_image(session, store, settings, top, "quay.png")]
        ids.append(await add_image(session, store, settings, sub, "dinghy.png"))
        return top, ids

    top, ids = seed_data(cli, work)
    result = cli("images", "export", "--series", top, "--recursive", "-o", "harbour.zip")
    assert result.code == 0, result
    assert "Wrote 2 image(s) to harbour.zip" in result.said
    assert "Exporting 2 image(s)" in result.stderr and "━" in result.stderr
    archive = zipfile.ZipFile(cli.tmp_path / "harbour.zip")
    images = json.loads(archive.read("manifest.json"))["images"]
    assert sorted(i["id"] for i in images) == sorted(ids)
    assert sorted(i["file"].rsplit("-", 1)[0] for i in images) == [
        "Harbour/Boats/dinghy",
        "Harbour/quay",
    ]
    for image in images:
        assert hashlib.sha256(archive.read(image["file"])).hexdigest() == image["sha256"]
    assert not (cli.tmp_path / "harbour.zip.part").exists()

    exists = cli("images", "export", *ids, "-o", "harbour.zip")
    assert exists.code == 1 and "--force" in exists.said
    by_ids = cli("images", "export", ids[0], "-o", "harbour.zip", "--force")
    assert by_ids.code == 0, by_ids
    assert len(zipfile.ZipFile(cli.tmp_path / "harbour.zip").namelist()) == 3


def test_import_skips_duplicates_and_names_what_it_refused(cli: Cli) -> None:
    settings = cli.settings()
    folder = cli.tmp_path / "pictures"
    a = picture(folder / "a.png", (200, 10, 10))
    picture(folder / "trip" / "b.jpg", (10, 200, 10), "JPEG")
    (folder / "trip" / "same-as-a.png").write_bytes(a)
    (folder / "notes.txt").write_text("not a picture")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    existing = picture(cli.tmp_path / "old.png", (1, 2, 3))
    (folder / "trip" / "old-again.png").write_bytes(existing)

    async def work(session: AsyncSession, store: ObjectStore) -> tuple[str, str]:
        series_id = await add_series(session, "Imports")
        stored = await images_service.upload(
            session,
            store,
            settings,
            uuid.UUID(series_id),
            [images_service.IncomingFile("old.png", io.BytesIO(existing))],
        )
        return series_id, str(stored[0].id)

    series_id, old_id = seed_data(cli, work)
    result = cli("images", "import", series_id, str(folder))
    assert result.code == 1, result  # a file was refused
    assert "Imported 2 image(s), skipped 2 duplicate(s), refused 1 file(s)." in result.said
    assert f"skipped trip/old-again.png: the same file as image {old_id}" in result.said
    assert "refused notes.txt: This is not an image" in result.said
    assert "Importing" in result.stderr and "5/5" in result.stderr
    images = listed(cli, series_id)
    names = sorted(str(i["original_filename"]) for i in images.values())
    assert names == ["a.png", "b.jpg", "old.png"]
    a_id = next(i for i, image in images.items() if image["original_filename"] == "a.png")
    assert f"skipped trip/same-as-a.png: the same file as image {a_id}" in result.said

    # The same pictures in a zip: all there already; a damaged one is refused.
    archive = cli.tmp_path / "pictures.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("a.png", a)
        out.writestr("__MACOSX/._a.png", b"resource fork")
        out.writestr("deep/broken.png", a[:40])
    from_zip = cli("images", "import", series_id, str(archive), "--json")
    assert from_zip.code == 1, from_zip
    report = json.loads(from_zip.stdout)
    assert report["imported"] == []
    assert report["skipped"] == [{"file": "a.png", "duplicate_of": a_id}]
    assert [r["file"] for r in report["refused"]] == ["deep/broken.png"]
    assert "damaged or truncated" in report["refused"][0]["reason"]
    assert len(listed(cli, series_id)) == 3

    not_an_archive = cli("images", "import", series_id, str(folder / "notes.txt"))
    assert not_an_archive.code == 2
    assert "neither a folder nor a zip archive" in not_an_archive.said
