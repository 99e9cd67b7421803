"""Domain errors. The web layer maps each class to one HTTP status in one handler."""

from __future__ import annotations

from typing import Any


class CogError(Exception):
    """Base of every error Cog raises on purpose. `message` is shown to people as it is."""

    status_code = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    @property
    def answer_extra(self) -> dict[str, Any]:
        """What an HTTP answer carries besides `detail` (JSON values only)."""
        return self.extra


class BadRequest(CogError):
    """The request itself is malformed (a broken multipart body, an upload cut off)."""

    status_code = 400


class NotFound(CogError):
    status_code = 404


class Conflict(CogError):
    """The request is well formed but clashes with the current state (a tree cycle, a non-empty
    series deleted without `recursive`)."""

    status_code = 409


class Invalid(CogError):
    """The input is understood but not acceptable (a bad template, an unknown config key)."""

    status_code = 422


class TooLarge(CogError):
    status_code = 413


class UnsupportedMedia(CogError):
    status_code = 415


class Unauthorized(CogError):
    status_code = 401


class ConfigError(CogError):
    """The settings do not make a working Cog; raised before anything starts."""

    status_code = 500


class SchemaOutOfDate(ConfigError):
    """The database is behind the code's migrations."""


class StoreError(CogError):
    """The image store (the folder or the bucket) refused a write; nothing was kept."""

    status_code = 503


class ProviderError(CogError):
    """A model provider refused or failed a call. `retryable` says whether trying again may help."""

    status_code = 502

    def __init__(self, message: str, *, retryable: bool = False, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retryable = retryable

    @property
    def answer_extra(self) -> dict[str, Any]:
        # `extra` is the engine's record of the call (the `Attempt`s, the provider's own status
        # and detail): not JSON, and the message already says what went wrong.
        return {}
