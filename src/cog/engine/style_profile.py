"""Drafting a series' style profile with the text model: the schema it answers in, the request
it gets, and the text that is saved.

The model looks at a sample of the series' images with its title, description and tags, and
names five things: palette, medium, lighting, composition and mood. A series with no images
gets a profile from its metadata alone. No database here: the service loads and saves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import BaseModel, Field

from cog.providers.base import InputImage, TextProvider, TextResult

ASPECTS = ("palette", "medium", "lighting", "composition", "mood")
# The longest a profile may be, drafted or written by hand.
MAX_PROFILE_CHARS = 4_000


class StyleProfileDraft(BaseModel):
    palette: str = Field(min_length=1, max_length=400, description="The colours, in a phrase.")
    medium: str = Field(
        min_length=1, max_length=400, description="Photograph, watercolour, ink, 3D render..."
    )
    lighting: str = Field(min_length=1, max_length=400, description="The light, in a phrase.")
    composition: str = Field(
        min_length=1, max_length=400, description="Framing and layout, in a phrase."
    )
    mood: str = Field(min_length=1, max_length=400, description="The feeling, in a phrase.")

    def as_text(self) -> str:
        """The profile as it is saved and shown: one aspect a line."""
        return "\n".join(
            f"{aspect.capitalize()}: {' '.join(getattr(self, aspect).split())}"
            for aspect in ASPECTS
        )

    @classmethod
    def preview_example(cls, prompt: str) -> StyleProfileDraft:
        """The profile the preview provider answers: picked from the request, so the same
        series gives the same profile, and labelled as written without a model."""
        digest = hashlib.sha256(prompt.encode()).digest()

        def pick(options: Sequence[str], index: int) -> str:
            return options[digest[index] % len(options)]

        return cls(
            palette=pick(_PALETTES, 0),
            medium=pick(_MEDIA, 1) + " (preview: written locally, no model looked at it)",
            lighting=pick(_LIGHT, 2),
            composition=pick(_COMPOSITION, 3),
            mood=pick(_MOOD, 4),
        )


_PALETTES = (
    "muted earth tones",
    "teal and orange",
    "soft pastels",
    "deep, saturated colours",
    "near monochrome",
)
_MEDIA = ("photograph", "watercolour", "ink illustration", "oil painting", "flat vector art")
_LIGHT = ("warm low sun", "soft overcast light", "cool blue hour", "hard midday light")
_COMPOSITION = (
    "centred subject with open space",
    "rule-of-thirds framing",
    "close crops that fill the frame",
    "wide views of the setting",
)
_MOOD = ("calm", "wistful", "playful", "brooding", "bright and open")

SYSTEM_INSTRUCTION = """\
You describe the visual style of a series of images for Cog, a tool that makes images, so that \
new images can be made in the same style. Answer with JSON.

Name, each in one short phrase: the palette, the medium, the lighting, the composition and \
the mood. Describe how the images look, never what they show: no subjects, places or people. \
Be concrete and concise; an image model will read it."""


def build_style_request(
    title: str,
    description: str,
    tags: Sequence[str],
    *,
    context: str = "",
    image_count: int = 0,
) -> tuple[str, str]:
    """The system instruction and the prompt that ask a text model for a style profile."""
    lines = [
        "Describe the style of this series of images.",
        f"Series title: {title.strip() or '(untitled)'}",
        f"Series description: {description.strip() or '(none)'}",
        f"Series tags: {', '.join(tags) or '(none)'}",
    ]
    if context.strip():
        lines.append(f"Context from the series above it: {context.strip()}")
    if image_count:
        lines.append(f"{image_count} image(s) of the series come with this request.")
    else:
        lines.append(
            "The series has no images yet: infer the style its title, description and tags suggest."
        )
    return SYSTEM_INSTRUCTION, "\n".join(lines)


async def draft_style_profile(
    provider: TextProvider,
    *,
    title: str,
    description: str,
    tags: Sequence[str],
    context: str = "",
    images: Sequence[InputImage] = (),
) -> tuple[str, TextResult]:
    """Ask `provider` for the profile; raises `ProviderError` when it cannot."""
    system, prompt = build_style_request(
        title, description, tags, context=context, image_count=len(images)
    )
    drafted, result = await provider.generate_json(
        prompt=prompt, images=images, schema=StyleProfileDraft, system=system
    )
    return drafted.as_text()[:MAX_PROFILE_CHARS], result
