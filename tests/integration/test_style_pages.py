"""Style on the pages, through the app in process (preview provider), on SQLite and PostgreSQL:
the series page's style profile (drafted, edited) and inherit toggle, a job's style source
form, and the restyle dialog."""

from __future__ import annotations

import httpx

from tests.api import HX, make_job, ok
from tests.factories import make_image, make_series


async def test_the_style_profile_on_the_series_page(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Harbour", tags=["sea"])
    page = await client.get(f"/cog/series/{series['id']}")
    assert page.status_code == 200
    assert "Style profile" in page.text and "No style profile yet" in page.text

    drafted = await client.post(f"/cog/series/{series['id']}/style/draft", headers=HX)
    assert drafted.status_code == 200, drafted.text
    assert "Palette:" in drafted.text and "Draft again" in drafted.text
    form = await client.get(f"/cog/series/{series['id']}/style/edit", headers=HX)
    assert '<textarea name="style_profile"' in form.text
    saved = await client.post(
        f"/cog/series/{series['id']}/style",
        data={"style_profile": "Ink & <wash>"},
        headers=HX,
    )
    assert saved.status_code == 200 and "Ink &amp; &lt;wash&gt;" in saved.text
    too_long = await client.post(
        f"/cog/series/{series['id']}/style", data={"style_profile": "x" * 4001}, headers=HX
    )
    assert too_long.status_code == 422 and "at most 4,000" in too_long.text
    assert ok(await client.get(f"/api/series/{series['id']}"))["style_profile"] == "Ink & <wash>"


async def test_the_inherit_toggle_in_the_series_header(client: httpx.AsyncClient) -> None:
    parent = await make_series(client, "Autumn")
    series = await make_series(client, "Forest", parent_id=parent["id"])
    form = await client.get(f"/cog/series/{series['id']}/edit", headers=HX)
    assert 'name="inherit_context" value="on" checked' in form.text
    # Unticked: the box is not sent.
    saved = await client.post(
        f"/cog/series/{series['id']}", data={"title": "Forest", "tags": ""}, headers=HX
    )
    assert saved.status_code == 200 and "Does not inherit" in saved.text
    assert ok(await client.get(f"/api/series/{series['id']}"))["inherit_context"] is False
    saved = await client.post(
        f"/cog/series/{series['id']}",
        data={"title": "Forest", "inherit_context": "on"},
        headers=HX,
    )
    assert "Does not inherit" not in saved.text
    assert ok(await client.get(f"/api/series/{series['id']}"))["inherit_context"] is True


async def test_the_style_source_form_of_a_job(client: httpx.AsyncClient) -> None:
    style = await make_series(client, "Gouache")
    images = [await make_image(client, style["id"], f"g{n}.png") for n in range(2)]
    other = await make_series(client, "Boats")
    job = await make_job(client, other["id"])
    page = await client.get(f"/cog/jobs/{job['id']}")
    assert f'hx-get="/cog/jobs/{job["id"]}/style"' in page.text
    empty = await client.get(f"/cog/jobs/{job['id']}/style", headers=HX)
    assert "No style source" in empty.text and "style_image_ids" not in empty.text
    chosen = await client.get(
        f"/cog/jobs/{job['id']}/style", params={"series_id": style["id"]}, headers=HX
    )
    assert chosen.text.count('name="style_image_ids"') == 2
    saved = await client.post(
        f"/cog/jobs/{job['id']}/style",
        data={
            "style_series_id": style["id"],
            "style_image_ids": [images[1]["id"]],
            "style_image_count": "2",
        },
        headers=HX,
    )
    assert saved.status_code == 200, saved.text
    assert f'value="{images[1]["id"]}" checked' in saved.text
    fetched = ok(await client.get(f"/api/jobs/{job['id']}"))
    assert fetched["style_series_id"] == style["id"]
    assert fetched["style_image_ids"] == [images[1]["id"]]
    refused = await client.post(
        f"/cog/jobs/{job['id']}/style",
        data={"style_series_id": style["id"], "style_image_count": "99"},
        headers=HX,
    )
    assert refused.status_code == 422 and "style_image_count" in refused.text
    assert ok(await client.get(f"/api/jobs/{job['id']}"))["style_image_count"] == 2
    removed = await client.post(
        f"/cog/jobs/{job['id']}/style", data={"style_series_id": ""}, headers=HX
    )
    assert removed.status_code == 200
    assert ok(await client.get(f"/api/jobs/{job['id']}"))["style_series_id"] is None


async def test_the_restyle_dialog_and_button(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Photos")
    await make_image(client, series["id"])
    page = await client.get(f"/cog/series/{series['id']}")
    assert 'data-batch="restyle"' in page.text
    dialog = await client.get(f"/cog/series/{series['id']}/restyle", headers=HX)
    assert dialog.status_code == 200
    assert 'data-batch-form="restyle"' in dialog.text
    assert 'name="style_series_id"' in dialog.text and 'name="target_series_id"' in dialog.text
