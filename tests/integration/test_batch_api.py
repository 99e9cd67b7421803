"""Image tags and batch changes through the API, on SQLite and PostgreSQL: `PATCH` of one
image's tags, the `?tag=` filter of a series' images, and `POST /api/images/batch` (move, tag,
untag, delete) by ids and by filter. A batch that cannot be done whole changes nothing: the
rows and the stored files are checked to be as they were."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from cog.config import Settings
from cog.services.batch import MAX_TAGS
from cog.services.selection import MAX_IDS
from tests.conftest import stored_keys
from tests.factories import image_bytes, make_image, make_series, upload

MISSING = "00000000-0000-4000-8000-000000000000"


def store_root(settings: Settings) -> Path:
    return Path(urlparse(settings.storage_url).path)


async def all_images(
    client: httpx.AsyncClient, series_id: str, **params: Any
) -> list[dict[str, Any]]:
    """Every image of the series, following `next_cursor` page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 50, **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/api/series/{series_id}/images", params=query)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        if not (cursor := response.json()["next_cursor"]):
            return items


async def many_images(client: httpx.AsyncClient, series_id: str, count: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < count:
        n = min(100, count - len(ids))
        files = [
            (
                f"img-{len(ids) + i:03d}.png",
                image_bytes(8, 8, color=(len(ids) + i, 9, 9)),
                "image/png",
            )
            for i in range(n)
        ]
        response = await upload(client, series_id, *files)
        assert response.status_code == 201, response.text
        ids += [i["id"] for i in response.json()["items"]]
    return ids


async def batch(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/images/batch", json=body)


async def snapshot(client: httpx.AsyncClient, settings: Settings, *series: str) -> Any:
    """What a person could see change: each series' images with their tags, and the files."""
    return (
        {
            s: sorted((i["id"], tuple(i["tags"])) for i in await all_images(client, s))
            for s in series
        },
        stored_keys(store_root(settings)),
    )


# --- one image's tags ---------------------------------------------------------------------------


async def test_an_images_tags_are_trimmed_lower_case_and_once(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Beach")
    image = await make_image(client, series["id"])
    assert image["tags"] == []

    response = await client.patch(
        f"/api/images/{image['id']}", json={"tags": [" Sunset ", "sunset", "Low  Tide", "霧"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == ["sunset", "low tide", "霧"]
    assert (await client.get(f"/api/images/{image['id']}")).json()["tags"] == [
        "sunset",
        "low tide",
        "霧",
    ]
    # Another field alone leaves them be; an empty list clears them.
    await client.patch(f"/api/images/{image['id']}", json={"metadata": {"a": 1}})
    assert (await client.get(f"/api/images/{image['id']}")).json()["tags"] == [
        "sunset",
        "low tide",
        "霧",
    ]
    cleared = await client.patch(f"/api/images/{image['id']}", json={"tags": []})
    assert cleared.json()["tags"] == []

    for bad in (None, ["x" * 65], ["ok"] * 101, ["nul\x00"], "sunset"):
        refused = await client.patch(f"/api/images/{image['id']}", json={"tags": bad})
        assert refused.status_code == 422, (bad, refused.text)
        assert "tags" in refused.json()["detail"]


async def test_the_images_of_a_series_filtered_by_a_tag(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Coast", tags=["sea"])
    ids = await many_images(client, series["id"], 7)
    for image_id in ids[:3]:
        await client.patch(f"/api/images/{image_id}", json={"tags": ["Dunes"]})
    found = await all_images(client, series["id"], tag="  DUNES ")
    assert sorted(i["id"] for i in found) == sorted(ids[:3])
    # The series' own tag is not an image's.
    assert await all_images(client, series["id"], tag="sea") == []
    assert len(await all_images(client, series["id"])) == 7


# --- batches ------------------------------------------------------------------------------------


async def test_move_tag_untag_and_delete_by_ids(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    a = await make_series(client, "A")
    b = await make_series(client, "B")
    ids = await many_images(client, a["id"], 4)

    moved = await batch(client, action="move", ids=ids[:2], series_id=b["id"])
    assert moved.status_code == 200, moved.text
    assert moved.json() == {
        "action": "move",
        "count": 2,
        "ids": ids[:2],
        "matched": 2,
        "series_id": b["id"],
        "tags": None,
    }
    assert sorted(i["id"] for i in await all_images(client, b["id"])) == sorted(ids[:2])
    assert sorted(i["id"] for i in await all_images(client, a["id"])) == sorted(ids[2:])
    # Moving where they already are changes nothing, and says so.
    again = await batch(client, action="move", ids=ids[:3], series_id=b["id"])
    assert (again.json()["count"], again.json()["matched"], again.json()["ids"]) == (1, 3, [ids[2]])

    tagged = await batch(client, action="tag", ids=ids, tags=["Keep", " best "])
    assert tagged.status_code == 200, tagged.text
    assert (tagged.json()["count"], tagged.json()["tags"]) == (4, ["keep", "best"])
    await batch(client, action="tag", ids=ids[:1], tags=["zeta"])
    first = (await client.get(f"/api/images/{ids[0]}")).json()
    assert first["tags"] == ["keep", "best", "zeta"]  # added at the end, each once

    untagged = await batch(client, action="untag", ids=ids[:2], tags=["KEEP", "absent"])
    assert untagged.json()["count"] == 2
    assert (await client.get(f"/api/images/{ids[0]}")).json()["tags"] == ["best", "zeta"]
    assert (await client.get(f"/api/images/{ids[3]}")).json()["tags"] == ["keep", "best"]

    keys_before = stored_keys(store_root(settings))
    assert len(keys_before) == 8  # four files, four thumbnails
    deleted = await batch(client, action="delete", ids=ids[1:3])
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["count"], deleted.json()["ids"]) == (2, ids[1:3])
    for image_id in ids[1:3]:
        assert (await client.get(f"/api/images/{image_id}")).status_code == 404
    keys_after = stored_keys(store_root(settings))
    assert len(keys_after) == 4
    assert not any(image_id in key for key in keys_after for image_id in ids[1:3])


async def test_a_filter_reaches_images_past_the_first_page(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    top = await make_series(client, "Top")
    sub = await make_series(client, "Sub", parent_id=top["id"])
    elsewhere = await make_series(client, "Elsewhere")
    target = await make_series(client, "Target")
    top_ids = await many_images(client, top["id"], 130)  # more than a page of 100
    sub_ids = await many_images(client, sub["id"], 5)
    other = await many_images(client, elsewhere["id"], 2)

    # The series alone: all 130 of its images, none of its sub-series'.
    tagged = await batch(client, action="tag", filter={"series_id": top["id"]}, tags=["scan"])
    assert tagged.status_code == 200, tagged.text
    assert (tagged.json()["count"], tagged.json()["matched"]) == (130, 130)
    assert sorted(tagged.json()["ids"]) == sorted(top_ids)
    assert len(await all_images(client, top["id"], tag="scan")) == 130
    assert await all_images(client, sub["id"], tag="scan") == []

    # With its sub-series, narrowed by a tag.
    await batch(client, action="tag", ids=top_ids[:40] + sub_ids[:2], tags=["keep"])
    where = {"series_id": top["id"], "include_subseries": True, "tag": "Keep"}
    moved = await batch(client, action="move", filter=where, series_id=target["id"])
    assert moved.status_code == 200, moved.text
    assert moved.json()["count"] == 42
    assert sorted(i["id"] for i in await all_images(client, target["id"])) == sorted(
        top_ids[:40] + sub_ids[:2]
    )

    # A tag alone looks everywhere.
    everywhere = await batch(client, action="untag", filter={"tag": "keep"}, tags=["keep"])
    assert everywhere.json()["count"] == 42

    # Delete by filter: the rows and their files go, the rest stays.
    deleted = await batch(
        client, action="delete", filter={"series_id": top["id"], "include_subseries": True}
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["count"] == 90 + 3
    assert await all_images(client, top["id"]) == []
    assert await all_images(client, sub["id"]) == []
    keys = stored_keys(store_root(settings))
    assert len(keys) == 2 * (42 + 2)
    assert all(
        k.split("/")[-1].split(".")[0] in set(top_ids[:40] + sub_ids[:2] + other) for k in keys
    )


async def test_a_batch_that_cannot_be_done_whole_changes_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    a = await make_series(client, "A")
    b = await make_series(client, "B")
    ids = await many_images(client, a["id"], 3)
    await batch(client, action="tag", ids=ids, tags=["one"])
    before = await snapshot(client, settings, a["id"], b["id"])

    # One id of the batch is not an image: 404 naming it, whatever the action.
    for body in (
        {"action": "move", "series_id": b["id"]},
        {"action": "tag", "tags": ["two"]},
        {"action": "untag", "tags": ["one"]},
        {"action": "delete"},
    ):
        refused = await batch(client, ids=[*ids, MISSING], **body)
        assert refused.status_code == 404, refused.text
        assert MISSING in refused.json()["detail"]
        assert "1 of the 4 selected images do not exist" in refused.json()["detail"]
        assert refused.json()["missing"] == [MISSING]
        assert await snapshot(client, settings, a["id"], b["id"]) == before, body

    # Into a series that is not there.
    nowhere = await batch(client, action="move", ids=ids, series_id=MISSING)
    assert nowhere.status_code == 404
    assert nowhere.json()["detail"] == f"There is no series {MISSING}."
    # A filter on a series that is not there.
    unknown = await batch(client, action="delete", filter={"series_id": MISSING})
    assert unknown.status_code == 404
    # Tags that one image could not take: it already has the most there may be.
    full = [f"t{i}" for i in range(MAX_TAGS)]
    await client.patch(f"/api/images/{ids[2]}", json={"tags": full})
    before = await snapshot(client, settings, a["id"], b["id"])
    crowded = await batch(client, action="tag", ids=ids, tags=["extra"])
    assert crowded.status_code == 422, crowded.text
    assert ids[2] in crowded.json()["detail"]
    assert crowded.json()["images"] == [ids[2]]
    assert await snapshot(client, settings, a["id"], b["id"]) == before  # not even the others


async def test_batch_requests_that_make_no_sense_are_refused(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "S")
    image = await make_image(client, series["id"])
    refusals = [
        ({"action": "delete"}, 422, "either `ids` or a `filter`"),
        ({"action": "delete", "ids": [image["id"]], "filter": {"tag": "x"}}, 422, "not both"),
        ({"action": "delete", "ids": []}, 422, "No images were selected"),
        ({"action": "move", "ids": [image["id"]]}, 422, "needs `series_id`"),
        ({"action": "tag", "ids": [image["id"]]}, 422, "needs `tags`"),
        ({"action": "tag", "ids": [image["id"]], "tags": ["  "]}, 422, "tags"),
        ({"action": "delete", "ids": [image["id"]], "tags": ["x"]}, 422, "no `tags`"),
        (
            {"action": "tag", "ids": [image["id"]], "tags": ["x"], "series_id": series["id"]},
            422,
            "target of a move",
        ),
        ({"action": "delete", "filter": {}}, 422, "needs a `series_id`, a `tag`"),
        (
            {"action": "delete", "filter": {"include_subseries": True, "tag": "x"}},
            422,
            "needs a `series_id`",
        ),
        ({"action": "burn", "ids": [image["id"]]}, 422, "action"),
        ({"action": "delete", "ids": ["nope"]}, 422, "ids"),
        (
            {"action": "delete", "ids": [str(uuid.uuid4()) for _ in range(MAX_IDS + 1)]},
            413,
            "at most 10,000",
        ),
    ]
    for body, status, words in refusals:
        response = await batch(client, **body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"], (body, response.json()["detail"])
    assert (await client.get(f"/api/images/{image['id']}")).status_code == 200
