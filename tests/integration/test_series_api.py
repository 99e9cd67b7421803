"""The series API end to end: the tree, its filters and pages, moves, deletes and bad input.

Every test runs on SQLite and on PostgreSQL (the `client` fixture is parametrized over both).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from cog.config import Settings
from cog.web.schemas import VISIBLE
from tests.conftest import stored_keys
from tests.factories import make_image, make_series


def store_root(settings: Settings) -> Path:
    return Path(urlparse(settings.storage_url).path)


async def get_ok(client: httpx.AsyncClient, url: str, **params: Any) -> dict[str, Any]:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def list_all(client: httpx.AsyncClient, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every item of a series listing, following `next_cursor` page by page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await get_ok(client, "/api/series", **query)
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the listing never ended")


def titles(items: list[dict[str, Any]]) -> list[str]:
    return [item["title"] for item in items]


def assert_refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str)
    assert body["detail"].strip()
    return body


# --- create, read, update -----------------------------------------------------------------------


async def test_create_get_and_patch(client: httpx.AsyncClient) -> None:
    created = await make_series(client, "  Autumn  ", description="Leaves", tags=["Fall"])
    assert created["title"] == "Autumn"
    assert created["description"] == "Leaves"
    assert created["parent_id"] is None
    assert created["ancestors"] == []
    assert (created["image_count"], created["child_count"]) == (0, 0)
    uuid.UUID(created["id"])

    fetched = await get_ok(client, f"/api/series/{created['id']}")
    assert fetched == created

    response = await client.patch(
        f"/api/series/{created['id']}", json={"title": "Late autumn", "description": ""}
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert (patched["title"], patched["description"], patched["tags"]) == (
        "Late autumn",
        "",
        ["fall"],
    )
    assert patched["updated_at"] >= created["updated_at"]
    assert (await get_ok(client, f"/api/series/{created['id']}"))["title"] == "Late autumn"


async def test_tags_are_trimmed_lower_cased_and_deduplicated(client: httpx.AsyncClient) -> None:
    created = await make_series(
        client, "Tags", tags=["  Sky ", "sky", "SKY", "Night  Sky", "night sky", "Moon"]
    )
    assert created["tags"] == ["sky", "night sky", "moon"]

    response = await client.patch(
        f"/api/series/{created['id']}", json={"tags": [" Moon", "MOON", "Stars "]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == ["moon", "stars"]
    assert (await get_ok(client, f"/api/series/{created['id']}"))["tags"] == ["moon", "stars"]


async def test_nesting_shows_breadcrumbs_and_counts(client: httpx.AsyncClient) -> None:
    root = await make_series(client, "Root")
    level2 = await make_series(client, "Level 2", parent_id=root["id"])
    level3 = await make_series(client, "Level 3", parent_id=level2["id"])
    level4 = await make_series(client, "Level 4", parent_id=level3["id"])
    await make_series(client, "Level 2 sibling", parent_id=root["id"])
    await make_image(client, level2["id"])
    await make_image(client, level2["id"])
    await make_image(client, level4["id"])

    deepest = await get_ok(client, f"/api/series/{level4['id']}")
    assert deepest["parent_id"] == level3["id"]
    assert deepest["ancestors"] == [
        {"id": root["id"], "title": "Root"},
        {"id": level2["id"], "title": "Level 2"},
        {"id": level3["id"], "title": "Level 3"},
    ]
    assert (deepest["image_count"], deepest["child_count"]) == (1, 0)

    top = await get_ok(client, f"/api/series/{root['id']}")
    assert top["ancestors"] == []
    # Counts are of the series itself: its own images and its direct children.
    assert (top["image_count"], top["child_count"]) == (0, 2)
    middle = await get_ok(client, f"/api/series/{level2['id']}")
    assert middle["ancestors"] == [{"id": root["id"], "title": "Root"}]
    assert (middle["image_count"], middle["child_count"]) == (2, 1)


async def test_listing_top_level_and_children(client: httpx.AsyncClient) -> None:
    alpha = await make_series(client, "Alpha")
    beta = await make_series(client, "Beta")
    child_b = await make_series(client, "B child", parent_id=alpha["id"])
    child_a = await make_series(client, "A child", parent_id=alpha["id"])
    await make_series(client, "Grandchild", parent_id=child_a["id"])
    await make_image(client, child_a["id"])

    top = await get_ok(client, "/api/series")
    assert titles(top["items"]) == ["Alpha", "Beta"]
    assert top["next_cursor"] is None
    by_id = {item["id"]: item for item in top["items"]}
    assert by_id[alpha["id"]]["child_count"] == 2
    assert by_id[beta["id"]]["child_count"] == 0

    children = await get_ok(client, "/api/series", parent_id=alpha["id"])
    assert [item["id"] for item in children["items"]] == [child_a["id"], child_b["id"]]
    first = children["items"][0]
    assert (first["image_count"], first["child_count"]) == (1, 1)
    assert first["parent_id"] == alpha["id"]

    assert (await get_ok(client, "/api/series", parent_id=beta["id"]))["items"] == []


async def test_tag_filter_searches_the_whole_tree(client: httpx.AsyncClient) -> None:
    root = await make_series(client, "Root", tags=["sea"])
    child = await make_series(client, "Child", parent_id=root["id"], tags=["Sea", "sand"])
    grandchild = await make_series(client, "Grandchild", parent_id=child["id"], tags=["sea"])
    await make_series(client, "Seashore", tags=["seaside"])  # a longer tag is another tag
    await make_series(client, "Other", parent_id=root["id"], tags=["land"])

    found = await get_ok(client, "/api/series", tag="SEA ")
    assert sorted(titles(found["items"])) == ["Child", "Grandchild", "Root"]
    assert {item["id"] for item in found["items"]} == {root["id"], child["id"], grandchild["id"]}
    assert titles((await get_ok(client, "/api/series", tag="sand"))["items"]) == ["Child"]
    assert (await get_ok(client, "/api/series", tag="nothing"))["items"] == []
    # With a parent, the filter applies to that parent's children only.
    scoped = await get_ok(client, "/api/series", tag="sea", parent_id=root["id"])
    assert titles(scoped["items"]) == ["Child"]


async def test_text_search_matches_title_and_description_at_any_depth(
    client: httpx.AsyncClient,
) -> None:
    root = await make_series(client, "Holiday")
    child = await make_series(client, "Day one", parent_id=root["id"], description="At the BEACH")
    deep = await make_series(client, "Beach huts", parent_id=child["id"])
    await make_series(client, "Mountains", description="snow")

    found = await get_ok(client, "/api/series", q="beach")
    assert {item["id"] for item in found["items"]} == {child["id"], deep["id"]}
    assert titles((await get_ok(client, "/api/series", q="HOLI"))["items"]) == ["Holiday"]
    assert (await get_ok(client, "/api/series", q="desert"))["items"] == []


async def test_text_search_ignores_case_beyond_ascii(client: httpx.AsyncClient) -> None:
    ete = await make_series(client, "Été à Paris")
    straße = await make_series(client, "Notes", description="Die STRASSE und ÖL")

    assert [i["id"] for i in (await get_ok(client, "/api/series", q="été"))["items"]] == [ete["id"]]
    assert [i["id"] for i in (await get_ok(client, "/api/series", q="ÉTÉ"))["items"]] == [ete["id"]]
    found = await get_ok(client, "/api/series", q="öl")
    assert [i["id"] for i in found["items"]] == [straße["id"]]


async def test_text_search_treats_wildcards_literally(client: httpx.AsyncClient) -> None:
    percent = await make_series(client, "Sale 50% off")
    underscore = await make_series(client, "file_name")
    await make_series(client, "Sale 50 percent")
    await make_series(client, "filexname")
    await make_series(client, "back\\slash")

    found = await get_ok(client, "/api/series", q="50%")
    assert [item["id"] for item in found["items"]] == [percent["id"]]
    found = await get_ok(client, "/api/series", q="e_n")
    assert [item["id"] for item in found["items"]] == [underscore["id"]]
    assert (await get_ok(client, "/api/series", q="%"))["items"][0]["id"] == percent["id"]
    assert len((await get_ok(client, "/api/series", q="%"))["items"]) == 1
    assert titles((await get_ok(client, "/api/series", q="k\\s"))["items"]) == ["back\\slash"]


async def test_cursor_pages_yield_each_series_once(client: httpx.AsyncClient) -> None:
    # Repeated titles make the cursor rely on its tie-breaker (the id); case, accents and
    # punctuation make it rely on the database ordering titles the way it compares them.
    names = ["S1", "S1", "S1", "apple", "Apple", "APPLE", "Äpple", "a-pple", "a pple"]
    names += ["éclair", "eclair", "_x", "Zed", "zed"]
    created = [await make_series(client, name) for name in names]
    parent = await make_series(client, "Parent")
    kids = [await make_series(client, "Kid", parent_id=parent["id"]) for _ in range(4)]

    one_page = await get_ok(client, "/api/series", limit=500)
    assert one_page["next_cursor"] is None
    listed = await list_all(client, limit=4)
    ids = [item["id"] for item in listed]
    assert len(ids) == len(set(ids)) == len(names) + 1
    assert set(ids) == {s["id"] for s in created} | {parent["id"]}
    assert ids == [item["id"] for item in one_page["items"]]

    listed_kids = await list_all(client, limit=3, parent_id=parent["id"])
    assert sorted(i["id"] for i in listed_kids) == sorted(k["id"] for k in kids)
    assert len(listed_kids) == 4

    found = await list_all(client, limit=2, q="PPLE")
    assert sorted(titles(found)) == sorted(["apple", "Apple", "APPLE", "Äpple", "a-pple", "a pple"])
    assert len({i["id"] for i in found}) == 6


async def test_a_page_exactly_full_ends_the_listing(client: httpx.AsyncClient) -> None:
    for name in ("A", "B", "C"):
        await make_series(client, name)
    page = await get_ok(client, "/api/series", limit=3)
    assert titles(page["items"]) == ["A", "B", "C"]
    assert page["next_cursor"] is None


# --- moves --------------------------------------------------------------------------------------


async def test_move_under_another_parent_and_back_to_the_top(client: httpx.AsyncClient) -> None:
    first = await make_series(client, "First")
    second = await make_series(client, "Second")
    moving = await make_series(client, "Moving", parent_id=first["id"])
    below = await make_series(client, "Below", parent_id=moving["id"])

    response = await client.patch(f"/api/series/{moving['id']}", json={"parent_id": second["id"]})
    assert response.status_code == 200, response.text
    assert response.json()["parent_id"] == second["id"]
    assert response.json()["ancestors"] == [{"id": second["id"], "title": "Second"}]
    assert (await get_ok(client, f"/api/series/{first['id']}"))["child_count"] == 0
    assert (await get_ok(client, f"/api/series/{second['id']}"))["child_count"] == 1
    # The subtree moves along.
    assert [a["id"] for a in (await get_ok(client, f"/api/series/{below['id']}"))["ancestors"]] == [
        second["id"],
        moving["id"],
    ]

    response = await client.patch(f"/api/series/{moving['id']}", json={"parent_id": None})
    assert response.status_code == 200, response.text
    assert response.json()["parent_id"] is None
    assert response.json()["ancestors"] == []
    top = await get_ok(client, "/api/series")
    assert titles(top["items"]) == ["First", "Moving", "Second"]
    assert (await get_ok(client, f"/api/series/{second['id']}"))["child_count"] == 0


async def test_other_fields_do_not_move_a_series(client: httpx.AsyncClient) -> None:
    parent = await make_series(client, "Parent")
    child = await make_series(client, "Child", parent_id=parent["id"])
    response = await client.patch(f"/api/series/{child['id']}", json={"title": "Renamed"})
    assert response.status_code == 200, response.text
    assert response.json()["parent_id"] == parent["id"]


async def test_a_move_into_its_own_subtree_is_refused(client: httpx.AsyncClient) -> None:
    top = await make_series(client, "Top")
    moving = await make_series(client, "Moving", parent_id=top["id"])
    child = await make_series(client, "Child", parent_id=moving["id"])
    grandchild = await make_series(client, "Grandchild", parent_id=child["id"])
    tree = (top, moving, child, grandchild)
    before = [await get_ok(client, f"/api/series/{s['id']}") for s in tree]

    for target in (moving, child, grandchild):
        response = await client.patch(
            f"/api/series/{moving['id']}", json={"parent_id": target["id"], "title": "Renamed"}
        )
        assert "inside itself" in assert_refused(response, 409)["detail"], target["title"]

    assert [await get_ok(client, f"/api/series/{s['id']}") for s in tree] == before
    assert titles((await get_ok(client, "/api/series"))["items"]) == ["Top"]


# --- delete -------------------------------------------------------------------------------------


async def test_delete_an_empty_series(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Empty")
    response = await client.delete(f"/api/series/{series['id']}")
    assert response.status_code == 204
    assert_refused(await client.get(f"/api/series/{series['id']}"), 404)
    assert (await get_ok(client, "/api/series"))["items"] == []


async def test_delete_of_a_non_empty_series_needs_recursive(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    with_image = await make_series(client, "Holds an image")
    image = await make_image(client, with_image["id"])
    with_child = await make_series(client, "Holds a sub-series")
    child = await make_series(client, "Child", parent_id=with_child["id"])
    keys_before = stored_keys(store_root(settings))
    assert len(keys_before) == 2

    for series in (with_image, with_child):
        for url in (f"/api/series/{series['id']}", f"/api/series/{series['id']}?recursive=false"):
            body = assert_refused(await client.delete(url), 409)
            assert "recursive" in body["detail"]

    for series in (with_image, with_child, child):
        assert (await client.get(f"/api/series/{series['id']}")).status_code == 200
    assert (await client.get(f"/api/images/{image['id']}")).status_code == 200
    assert (await client.get(f"/api/images/{image['id']}/file")).status_code == 200
    assert (await get_ok(client, f"/api/series/{with_image['id']}"))["image_count"] == 1
    assert stored_keys(store_root(settings)) == keys_before


async def test_recursive_delete_removes_the_subtree_rows_and_files(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    root = await make_series(client, "Root")
    doomed = await make_series(client, "Doomed", parent_id=root["id"])
    child = await make_series(client, "Child", parent_id=doomed["id"])
    grandchild = await make_series(client, "Grandchild", parent_id=child["id"])
    sibling = await make_series(client, "Sibling", parent_id=root["id"])
    doomed_series = [doomed, child, grandchild]
    doomed_images = [
        await make_image(client, doomed["id"]),
        await make_image(client, child["id"], fmt="JPEG"),
        await make_image(client, grandchild["id"]),
        await make_image(client, grandchild["id"], fmt="GIF"),
    ]
    kept_image = await make_image(client, sibling["id"])
    root_dir = store_root(settings)
    for image in [*doomed_images, kept_image]:  # make sure every thumbnail exists too
        assert (await client.get(f"/api/images/{image['id']}/thumbnail")).status_code == 200
    assert len(stored_keys(root_dir)) == 2 * 5

    response = await client.delete(f"/api/series/{doomed['id']}", params={"recursive": "true"})
    assert response.status_code == 204, response.text

    for series in doomed_series:
        assert_refused(await client.get(f"/api/series/{series['id']}"), 404)
    for image in doomed_images:
        assert_refused(await client.get(f"/api/images/{image['id']}"), 404)
        assert_refused(await client.get(f"/api/images/{image['id']}/file"), 404)
    remaining = stored_keys(root_dir)
    assert len(remaining) == 2
    assert all(kept_image["id"] in key for key in remaining)
    assert not any(image["id"] in key for image in doomed_images for key in remaining)

    # The sibling and its image are untouched, and the root counts one child now.
    assert (await get_ok(client, f"/api/series/{sibling['id']}"))["image_count"] == 1
    kept = await client.get(f"/api/images/{kept_image['id']}/file")
    assert kept.status_code == 200
    assert len(kept.content) == kept_image["size_bytes"]
    assert (await get_ok(client, f"/api/series/{root['id']}"))["child_count"] == 1
    children = await get_ok(client, "/api/series", parent_id=root["id"])
    assert titles(children["items"]) == ["Sibling"]


# --- bad input ----------------------------------------------------------------------------------


async def test_unknown_fields_are_refused(client: httpx.AsyncClient) -> None:
    body = assert_refused(
        await client.post("/api/series", json={"title": "A", "colour": "red"}), 422
    )
    assert "colour" in body["detail"]
    series = await make_series(client, "B")
    response = await client.patch(f"/api/series/{series['id']}", json={"titel": "typo"})
    assert "titel" in assert_refused(response, 422)["detail"]
    assert (await get_ok(client, f"/api/series/{series['id']}"))["title"] == "B"
    assert titles((await get_ok(client, "/api/series"))["items"]) == ["B"]


async def test_malformed_json_is_refused(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    response = await client.post("/api/series", content=b'{"title": "A",', headers=headers)
    assert_refused(response, 422)
    series = await make_series(client, "B")
    response = await client.patch(
        f"/api/series/{series['id']}", content=b"{title: 'x'}", headers=headers
    )
    assert_refused(response, 422)
    assert_refused(await client.post("/api/series", json=["title"]), 422)
    assert titles((await get_ok(client, "/api/series"))["items"]) == ["B"]


async def test_an_empty_title_is_refused(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Kept")
    for title in ("", "   ", "\t\n", None):
        assert_refused(await client.post("/api/series", json={"title": title}), 422)
        response = await client.patch(f"/api/series/{series['id']}", json={"title": title})
        assert_refused(response, 422)
    assert (await get_ok(client, f"/api/series/{series['id']}"))["title"] == "Kept"
    assert titles((await get_ok(client, "/api/series"))["items"]) == ["Kept"]


async def test_a_missing_title_is_refused(client: httpx.AsyncClient) -> None:
    assert "title" in assert_refused(await client.post("/api/series", json={}), 422)["detail"]


async def test_null_for_a_required_field_in_patch_is_refused(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Kept", description="words", tags=["t"])
    for field in ("description", "tags"):
        response = await client.patch(f"/api/series/{series['id']}", json={field: None})
        assert field in assert_refused(response, 422)["detail"]
    assert await get_ok(client, f"/api/series/{series['id']}") == series


async def test_unknown_ids_answer_404(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    assert str(missing) in assert_refused(await client.get(f"/api/series/{missing}"), 404)["detail"]
    assert_refused(await client.patch(f"/api/series/{missing}", json={"title": "x"}), 404)
    assert_refused(await client.delete(f"/api/series/{missing}"), 404)
    assert_refused(await client.delete(f"/api/series/{missing}?recursive=true"), 404)
    assert_refused(await client.get("/api/series", params={"parent_id": str(missing)}), 404)


async def test_malformed_ids_answer_422(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"title": "x"}} if method == "PATCH" else {}
        response = await client.request(method, "/api/series/not-a-uuid", **kwargs)
        assert_refused(response, 422)
    assert_refused(await client.get("/api/series", params={"parent_id": "12345"}), 422)
    assert_refused(await client.post("/api/series", json={"title": "x", "parent_id": "nope"}), 422)


async def test_an_unknown_parent_is_refused(client: httpx.AsyncClient) -> None:
    missing = str(uuid.uuid4())
    response = await client.post("/api/series", json={"title": "Orphan", "parent_id": missing})
    assert_refused(response, 404)
    assert (await get_ok(client, "/api/series"))["items"] == []

    series = await make_series(client, "Kept")
    response = await client.patch(f"/api/series/{series['id']}", json={"parent_id": missing})
    assert_refused(response, 404)
    assert (await get_ok(client, f"/api/series/{series['id']}"))["parent_id"] is None


async def test_text_no_database_can_store_is_refused(client: httpx.AsyncClient) -> None:
    """NUL characters and lone surrogates: PostgreSQL refuses the first, UTF-8 the second."""
    series = await make_series(client, "Kept", description="d", tags=["t"])
    headers = {"content-type": "application/json"}
    bodies = [
        '{"title": "a\\u0000b"}',
        '{"title": "ok", "description": "\\u0000"}',
        '{"title": "ok", "tags": ["x\\u0000"]}',
        '{"title": "\\ud800"}',
        '{"title": "ok", "description": "\\udfff"}',
    ]
    for body in bodies:
        response = await client.post("/api/series", content=body.encode(), headers=headers)
        assert_refused(response, 422)
        response = await client.patch(
            f"/api/series/{series['id']}", content=body.encode(), headers=headers
        )
        assert_refused(response, 422)
    for params in ({"q": "a\x00"}, {"tag": "\x00"}):
        assert_refused(await client.get("/api/series", params=params), 422)
    assert await get_ok(client, f"/api/series/{series['id']}") == series
    assert [item["id"] for item in (await get_ok(client, "/api/series"))["items"]] == [series["id"]]


GARBAGE_CURSORS = [
    "garbage",
    "!!!!",
    "ü",
    "eyJ0aXRsZSI6IDF9",  # {"title": 1}
    "WyJhIiwgIm5vdC1hLXV1aWQiXQ",  # ["a", "not-a-uuid"]
    "WyJhIiwgNV0",  # ["a", 5]
    "WyJhIl0",  # ["a"]
    "WyJhXHUwMDAwYiIsICIxMjNlNDU2Ny1lODliLTEyZDMtYTQ1Ni00MjY2MTQxNzQwMDAiXQ",  # a NUL in the title
    "WyJcdWQ4MDAiLCAiMTIzZTQ1NjctZTg5Yi0xMmQzLWE0NTYtNDI2NjE0MTc0MDAwIl0",  # a lone surrogate
]


async def test_a_garbage_cursor_is_refused(client: httpx.AsyncClient) -> None:
    await make_series(client, "A")
    for cursor in GARBAGE_CURSORS:
        body = assert_refused(await client.get("/api/series", params={"cursor": cursor}), 422)
        assert "cursor" in body["detail"], cursor


async def test_a_limit_out_of_range_is_refused(client: httpx.AsyncClient) -> None:
    for limit in ("0", "-1", "501", "10000", "ten"):
        body = assert_refused(await client.get("/api/series", params={"limit": limit}), 422)
        assert "limit" in body["detail"], limit


async def test_a_method_the_path_does_not_serve_names_every_one_it_does(
    client: httpx.AsyncClient,
) -> None:
    # Starlette's `Allow` named the methods of the first route on the path only.
    series = await make_series(client, "A")
    for path, served in (
        (f"/api/series/{series['id']}", {"GET", "PATCH", "DELETE"}),
        ("/api/series", {"GET", "POST"}),
        (f"/api/series/{series['id']}/images", {"GET", "POST"}),
    ):
        for method in ("OPTIONS", "PUT"):
            response = await client.request(method, path)
            assert_refused(response, 405)
            assert set(response.headers["allow"].split(", ")) == served, (method, path)


async def test_the_document_describes_what_the_api_answers(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            # Every refusal is JSON with a `detail` string, the 422 of a body that does not
            # parse included (FastAPI documents a list there by default).
            for status in ("401", "404", "422"):
                schema = responses[status]["content"]["application/json"]["schema"]
                name = schema["$ref"].rsplit("/", 1)[-1]
                assert schemas[name]["properties"]["detail"]["type"] == "string", (path, method)
            if method in ("post", "put", "patch") and "requestBody" in operation:
                assert "400" in responses, (path, method)
    # Fields that may be left out of a PATCH but not sent as null are not documented nullable.
    assert schemas["SeriesUpdate"]["properties"]["title"]["type"] == "string"
    assert schemas["ImageUpdate"]["properties"]["metadata"]["type"] == "object"
    assert schemas["JobUpdate"]["properties"]["base_prompt"]["type"] == "string"
    assert "null" in str(schemas["SeriesUpdate"]["properties"]["parent_id"])
    # A title or tag of spaces is refused, and the document says so.
    assert schemas["SeriesCreate"]["properties"]["title"]["pattern"] == VISIBLE
    assert assert_refused(await client.post("/api/series", json={"title": " \t "}), 422)
    # A step is an object of known keys.
    step = schemas["StepsReplace"]["properties"]["steps"]["items"]
    assert step["additionalProperties"] is False and set(step["required"]) == {"kind", "prompt"}


async def test_a_title_of_separators_only_is_refused_on_create_and_edit(
    client: httpx.AsyncClient,
) -> None:
    """U+001C..U+001F pass the API's first check of a visible character but are spaces to
    Python's strip: such a title is refused with a 422, never stored empty."""
    answer = await client.post("/api/series", json={"title": "\x1c\x1d\x1e"})
    assert answer.status_code == 422, answer.text
    assert "title" in answer.json()["detail"]
    series = await make_series(client, "Kept")
    answer = await client.patch(f"/api/series/{series['id']}", json={"title": " \x1f "})
    assert answer.status_code == 422, answer.text
    assert (await client.get(f"/api/series/{series['id']}")).json()["title"] == "Kept"
