"""The series and image basics, end to end through the API, on both databases."""

from __future__ import annotations

from tests.factories import image_bytes, make_series, upload


async def test_upload_and_fetch(client, settings) -> None:
    series = await make_series(client, "Autumn", tags=["Fall"])
    data = image_bytes(120, 80)
    response = await upload(client, series["id"], ("leaf.png", data, "image/png"))
    assert response.status_code == 201, response.text
    image = response.json()["items"][0]
    fetched = await client.get(f"/api/images/{image['id']}/file")
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/png"
