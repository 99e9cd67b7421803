"""The shortcut Cog gives the SDK's models for `key in model`: the answer Python gives by
iterating a model (False: it yields pairs, never a key), only without the iteration."""

from __future__ import annotations

from google.genai import types

import cog.providers.gemini  # noqa: F401  (importing it gives the SDK's models the shortcut)


def test_a_key_is_never_in_an_sdk_model_as_iterating_it_answered() -> None:
    config = types.GenerateContentConfig(
        temperature=0.4,
        system_instruction="Be brief.",
        response_modalities=["TEXT", "IMAGE"],
        image_config=types.ImageConfig(aspect_ratio="16:9", image_size="2K"),
    )
    content = types.Content(
        role="user",
        parts=[
            types.Part.from_text(text="a lighthouse"),
            types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png"),
        ],
    )
    models = [config, config.image_config, content, *(content.parts or [])]
    for model in models:
        assert model is not None
        names = [*type(model).model_fields, "not_a_field"]
        pairs = list(iter(model))  # what `in` walked before
        assert pairs and all(isinstance(pair, tuple) for pair in pairs)
        for name in names:
            assert (name in model) is False
            assert (name in pairs) is False
            # The lookups the SDK makes next find what is there.
            if name in type(model).model_fields:
                assert getattr(model, name) == dict(pairs).get(name)
