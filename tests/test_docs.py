"""Docs that can drift get a test."""

from __future__ import annotations

from pathlib import Path

from cog.config import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme() -> None:
    missing = [
        f"COG_{name.upper()}"
        for name in Settings.model_fields
        if f"`COG_{name.upper()}`" not in README
    ]
    assert not missing, f"settings missing from README.md: {missing}"


def test_readme_gives_the_two_commands() -> None:
    assert "uv run cog serve" in README
    assert "uv run pytest" in README
