"""Model providers: the seam (`base`), Gemini, the local preview, and retrying."""

from __future__ import annotations

import os
from collections.abc import Mapping

from cog.config import ProviderKind, Settings
from cog.providers.base import (
    Attempt,
    ImageProvider,
    ImageResult,
    InputImage,
    TextProvider,
    TextResult,
    Usage,
)
from cog.providers.preview import PreviewProvider
from cog.providers.retry import RetryPolicy

__all__ = [
    "Attempt",
    "ImageProvider",
    "ImageResult",
    "InputImage",
    "PreviewProvider",
    "RetryPolicy",
    "TextProvider",
    "TextResult",
    "Usage",
    "gemini_configured",
    "make_providers",
]

_TRUE = ("true", "1")


def gemini_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the SDK would find credentials: an API key, or Vertex AI switched on.

    Mirrors how google-genai reads its environment, so `auto` picks Gemini exactly when the
    SDK can authenticate without Cog holding a key of its own.
    """
    env = os.environ if environ is None else environ
    if env.get("GOOGLE_API_KEY") or env.get("GEMINI_API_KEY"):
        return True
    return any(
        env.get(name, "").lower() in _TRUE
        for name in ("GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE")
    )


def make_providers(settings: Settings) -> tuple[TextProvider, ImageProvider]:
    """The text and image providers `settings` ask for (one object may serve both).

    Close them with `aclose()` when done; closing the same object twice is fine.
    """
    kind = settings.provider
    if kind == ProviderKind.auto:
        kind = ProviderKind.gemini if gemini_configured() else ProviderKind.preview
    if kind == ProviderKind.preview:
        preview = PreviewProvider()
        return preview, preview

    # google-genai takes a second to import; a preview-only Cog never pays for it.
    from cog.providers.gemini import GeminiProvider

    gemini = GeminiProvider(
        api_key=None,  # the SDK reads GOOGLE_API_KEY / GEMINI_API_KEY / Vertex AI itself
        base_url=settings.gemini_base_url or None,
        text_model=settings.text_model,
        image_model=settings.image_model,
        retry=RetryPolicy(
            max_attempts=settings.provider_max_attempts,
            initial_delay_s=settings.provider_retry_initial_s,
        ),
        timeout_s=settings.provider_timeout_s,
    )
    return gemini, gemini
