"""Gemini through the official `google-genai` async client.

Every call goes through `call_with_retry`, with the SDK's own retries off, so each try is
recorded. SDK and transport errors become `ProviderError`s whose messages a person can act on.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
import httpx
import httpx2
from google import genai
from google.genai import _common as _sdk_common
from google.genai import errors, types
from pydantic import BaseModel, ValidationError

from cog.errors import ConfigError, ProviderError
from cog.providers.base import ZERO_USAGE, Attempt, ImageResult, InputImage, TextResult, Usage
from cog.providers.retry import RetryPolicy, call_with_retry

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

# Why a prompt or an answer was refused, in words; the enum value is shown beside them.
_REFUSALS = {
    "SAFETY": "for safety reasons",
    "IMAGE_SAFETY": "for safety reasons",
    "PROHIBITED_CONTENT": "because it may involve prohibited content",
    "IMAGE_PROHIBITED_CONTENT": "because the image may involve prohibited content",
    "SPII": "because it may expose sensitive personal information",
    "RECITATION": "because the answer would copy protected material",
    "IMAGE_RECITATION": "because the image would copy protected material",
    "BLOCKLIST": "because it contains blocked terms",
    "JAILBREAK": "because it looks like an attempt to get around the model's rules",
    "MODEL_ARMOR": "because a safety filter flagged it",
    "IMAGE_OTHER": "without saying why",
    "OTHER": "without saying why",
}
# NO_IMAGE is no refusal of the prompt but ends the same way: no image, and retrying the same
# request is unlikely to help.
_NO_IMAGE = "NO_IMAGE"
# The SDK's async calls go through aiohttp when it is installed (a dependency of Cog's), else
# through httpx; whichever carries them, their failures are told apart the same way. aiohttp's
# timeouts are `TimeoutError`s (some also `ClientError`s): they are caught first.
_TRANSPORT_ERRORS = (aiohttp.ClientError, httpx.TransportError, httpx2.TransportError)
_TIMEOUTS = (TimeoutError, httpx.TimeoutException, httpx2.TimeoutException)
# An image answer is several MB of base64 in one JSON line: as the SDK's own session reads it.
_READ_BUFFER = 2**22
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _skip_the_sdk_field_scan() -> None:
    """The SDK turns each request into its wire form by looking keys up with `key in obj`, on
    its pydantic models too. A model has no `__contains__`, so Python answers by iterating it:
    a list of every (name, value) pair built and compared with the key, which as a string never
    equals a pair. The answer is always False, found in O(fields) for each of the ~100 lookups
    of a request: a fifth of the CPU an image call costs. This answers the same False at once;
    the lookups then go on to `getattr`, as they did. (Should the SDK ever give its models a
    `__contains__` of their own, theirs stays.)"""
    if "__contains__" not in vars(_sdk_common.BaseModel):
        setattr(_sdk_common.BaseModel, "__contains__", _holds_no_key)  # noqa: B010


def _holds_no_key(_model: object, _key: object) -> bool:
    return False


_skip_the_sdk_field_scan()


class GeminiProvider:
    """Implements `TextProvider` and `ImageProvider` on the Gemini API (or Vertex AI)."""

    name = "gemini"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        text_model: str = "gemini-3.5-flash",
        image_model: str = "gemini-3-pro-image",
        retry: RetryPolicy | None = None,
        timeout_s: float = 120.0,
        api_version: str | None = None,
    ) -> None:
        """`api_key=None` lets the SDK find its credentials as it always does (GOOGLE_API_KEY,
        GEMINI_API_KEY, or Vertex AI's variables). `api_version=None` keeps the SDK's default
        (v1 in SDK 3.x; GOOGLE_GENAI_API_VERSION=beta switches it)."""
        self.text_model = text_model
        self.image_model = image_model
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        http_options = types.HttpOptions(
            base_url=base_url or None,
            api_version=api_version,
            timeout=round(timeout_s * 1000),  # the SDK counts milliseconds
            retry_options=None,  # one try per SDK call: call_with_retry does the retrying
        )
        try:
            self._client = genai.Client(api_key=api_key, http_options=http_options)
        except ValueError as exc:
            raise ConfigError(
                f"Gemini is not configured: {exc} Set GEMINI_API_KEY (or GOOGLE_API_KEY), "
                "or use COG_PROVIDER=preview."
            ) from exc
        self._api_key = api_key
        self._http_options = http_options
        self._own_sessions: dict[
            asyncio.AbstractEventLoop, tuple[genai.Client, aiohttp.ClientSession]
        ] = {}
        self._closed = False

    def _client_here(self) -> genai.Client:
        """The client for the running event loop, on an aiohttp session of Cog's own.

        The SDK's own session trusts the environment, so aiohttp looks for a proxy and reads
        ~/.netrc on two trips through a thread pool for every request: about as much CPU as the
        rest of the call, and wall time on each. Ours looks for a proxy only if the environment
        names one, and never for netrc (the API key is the credential). Vertex AI keeps the
        SDK's session, which carries its Google auth. An aiohttp session belongs to the loop it
        was made on, hence one per loop."""
        if self._client.vertexai:
            return self._client
        loop = asyncio.get_running_loop()
        held = self._own_sessions.get(loop)
        if held is None:
            for other in [other for other in self._own_sessions if other.is_closed()]:
                del self._own_sessions[other]  # its sockets went with its loop
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # the caller bounds concurrency
                trust_env=bool(urllib.request.getproxies()),
                read_bufsize=_READ_BUFFER,
            )
            options = self._http_options.model_copy(update={"aiohttp_client": session})
            held = (genai.Client(api_key=self._api_key, http_options=options), session)
            self._own_sessions[loop] = held
        return held[0]

    async def generate_text(
        self,
        *,
        prompt: str,
        images: Sequence[InputImage] = (),
        model: str | None = None,
        temperature: float | None = None,
        system: str | None = None,
    ) -> TextResult:
        model_id = model or self.text_model
        config = types.GenerateContentConfig(system_instruction=system, temperature=temperature)

        def read(response: types.GenerateContentResponse) -> str:
            _refuse_blocked(response, "text")
            text = _text_of(response)
            if not text:
                reason = _finish_reason(response) or "no reason given"
                raise _content_error(f"The text model answered with no text ({reason})")
            return text

        text, attempts, usage = await self._generate(model_id, prompt, images, config, read)
        return TextResult(
            text=text, usage=usage, model=model_id, provider=self.name, attempts=attempts
        )

    async def generate_json(
        self,
        *,
        prompt: str,
        images: Sequence[InputImage] = (),
        schema: type[T],
        model: str | None = None,
        system: str | None = None,
    ) -> tuple[T, TextResult]:
        model_id = model or self.text_model
        config = types.GenerateContentConfig(
            system_instruction=system,
            response_mime_type="application/json",
            response_schema=schema,
        )

        def read(response: types.GenerateContentResponse) -> tuple[T, str]:
            _refuse_blocked(response, "text")
            text = _text_of(response)
            if isinstance(response.parsed, schema):
                return response.parsed, text
            raise _content_error(
                f"The model's answer was not valid JSON for the {schema.__name__} schema: "
                f"{_why_invalid(schema, text, response)}"
            )

        (value, text), attempts, usage = await self._generate(
            model_id, prompt, images, config, read
        )
        return value, TextResult(
            text=text, usage=usage, model=model_id, provider=self.name, attempts=attempts
        )

    async def generate_structured(
        self,
        *,
        prompt: str,
        images: Sequence[InputImage] = (),
        json_schema: Mapping[str, Any],
        model: str | None = None,
        temperature: float | None = None,
    ) -> tuple[Any, TextResult]:
        model_id = model or self.text_model
        # `response_json_schema` takes JSON Schema as written (`responseJsonSchema` on the
        # wire); `response_schema` would want Gemini's OpenAPI subset instead.
        config = types.GenerateContentConfig(
            temperature=temperature,
            response_mime_type="application/json",
            response_json_schema=dict(json_schema),
        )

        def read(response: types.GenerateContentResponse) -> tuple[Any, str]:
            _refuse_blocked(response, "text")
            text = _text_of(response)
            if _finish_reason(response) == "MAX_TOKENS":
                raise _content_error("The model's answer was cut off (MAX_TOKENS) before its end")
            try:
                return json.loads(text), text
            except ValueError as exc:
                said = "the answer was empty" if not text.strip() else str(exc)
                raise _content_error(f"The model's answer was not valid JSON: {said}") from None

        (value, text), attempts, usage = await self._generate(
            model_id, prompt, images, config, read
        )
        return value, TextResult(
            text=text, usage=usage, model=model_id, provider=self.name, attempts=attempts
        )

    async def generate_image(
        self,
        *,
        prompt: str,
        references: Sequence[InputImage] = (),
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | None = None,
    ) -> ImageResult:
        model_id = model or self.image_model
        image_config = (
            types.ImageConfig(aspect_ratio=aspect_ratio, image_size=image_size)
            if aspect_ratio or image_size
            else None  # the model's defaults (1:1, 1K) rather than an empty imageConfig
        )
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"], image_config=image_config
        )

        def read(response: types.GenerateContentResponse) -> tuple[types.Blob, str]:
            _refuse_blocked(response, "image")
            text = _text_of(response)
            # Pro models may send interim "thought" images before the final one.
            images = [
                part.inline_data
                for part in _parts(response)
                if part.inline_data and part.inline_data.data and not part.thought
            ]
            if not images:
                said = f": {text.strip()}" if text.strip() else ""
                raise _content_error(f"The model answered without an image{said}")
            return images[-1], text

        (blob, text), attempts, usage = await self._generate(
            model_id, prompt, references, config, read
        )
        return ImageResult(
            data=blob.data or b"",
            mime_type=blob.mime_type or "image/png",
            text=text,
            usage=usage,
            model=model_id,
            provider=self.name,
            attempts=attempts,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        here = asyncio.get_running_loop()
        for loop, (_, session) in list(self._own_sessions.items()):
            if loop is here:
                await session.close()
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop)
        self._own_sessions.clear()
        await self._client.aio.aclose()
        self._client.close()

    async def _generate(
        self,
        model_id: str,
        prompt: str,
        images: Sequence[InputImage],
        config: types.GenerateContentConfig,
        read: Callable[[types.GenerateContentResponse], R],
    ) -> tuple[R, tuple[Attempt, ...], Usage]:
        contents = types.Content(
            role="user",
            parts=[
                types.Part.from_text(text=prompt),
                *(types.Part.from_bytes(data=i.data, mime_type=i.mime_type) for i in images),
            ],
        )

        async def once() -> tuple[R, Usage]:
            try:
                response = await self._client_here().aio.models.generate_content(
                    model=model_id, contents=contents, config=config
                )
            except errors.APIError as exc:
                raise _api_error(exc, model_id) from exc
            except _TIMEOUTS as exc:
                raise ProviderError(
                    f"Gemini did not answer within {self.timeout_s:g} s",
                    retryable=True,
                    status_code=None,
                ) from exc
            except _TRANSPORT_ERRORS as exc:
                raise ProviderError(_unreachable(exc), retryable=True, status_code=None) from exc
            # Interpreting the answer inside the retried call puts its failure (a safety
            # block, a missing image) on the attempt that got it.
            return read(response), _usage(response)

        (result, usage), attempts = await call_with_retry(
            once, self.retry, describe_exhausted=_exhausted
        )
        return result, attempts, usage


def _api_error(exc: errors.APIError, model_id: str) -> ProviderError:
    code = exc.code
    status = exc.status or ""
    detail = exc.message or str(exc)
    label = f"{code} {status}".strip()
    retryable = code in (408, 429) or code >= 500
    if retryable:
        message = f"Gemini answered {label}: {detail}"
    else:
        message = f"Gemini rejected the request: {label}: {detail}"
        if code in (401, 403):
            message += " (check GEMINI_API_KEY or GOOGLE_API_KEY)"
        elif code == 404:
            message += f" (check the model id {model_id!r})"
    return ProviderError(
        message,
        retryable=retryable,
        status_code=code,
        status=status,
        detail=detail,
        retry_after_s=_retry_delay_s(exc.details),
    )


def _unreachable(exc: Exception) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):  # its own text names the TLS context object
        reason = exc.os_error.strerror or str(exc.os_error)
        return f"Could not reach Gemini at {exc.host}:{exc.port} ({reason})"
    return f"Could not reach Gemini ({type(exc).__name__}: {exc})"


def _exhausted(exc: ProviderError, tries: int) -> str:
    code = exc.extra.get("status_code")
    if code is None:
        return f"{exc.message} (gave up after {tries} attempts)"
    label = f"{code} {exc.extra.get('status') or ''}".strip()
    return f"Gemini kept answering {label} after {tries} attempts: {exc.extra.get('detail')}"


def _retry_delay_s(details: Any) -> float | None:
    """The delay in a `google.rpc.RetryInfo` detail of an error body, in seconds."""
    error = details.get("error", details) if isinstance(details, dict) else None
    for item in (error or {}).get("details") or []:
        if not (isinstance(item, dict) and str(item.get("@type", "")).endswith("rpc.RetryInfo")):
            continue
        delay = item.get("retryDelay")
        if isinstance(delay, str) and (match := _DURATION.match(delay)):
            return float(match.group(1))
        if isinstance(delay, dict):  # the proto form, {"seconds": .., "nanos": ..}
            return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
    return None


def _content_error(message: str) -> ProviderError:
    # The HTTP call succeeded; what came back cannot be used. The same request would most
    # likely be refused again, so it is not retried.
    return ProviderError(message, retryable=False, status_code=None)


def _refuse_blocked(response: types.GenerateContentResponse, role: str) -> None:
    feedback = response.prompt_feedback
    blocked = feedback.block_reason if feedback else None
    if blocked and blocked != types.BlockedReason.BLOCKED_REASON_UNSPECIFIED:
        raise _refusal(
            role, str(blocked.value), feedback.block_reason_message if feedback else None
        )
    reason = _finish_reason(response)
    if reason == _NO_IMAGE:
        said = _text_of(response).strip()
        raise _content_error(
            f"The model answered without an image ({reason})" + (f": {said}" if said else "")
        )
    if reason in _REFUSALS:
        candidates = response.candidates or []
        raise _refusal(role, reason, candidates[0].finish_message if candidates else None)


def _refusal(role: str, reason: str, explanation: str | None) -> ProviderError:
    words = _REFUSALS.get(reason, "without saying why")
    message = f"The {role} model refused the prompt {words} ({reason})"
    if explanation:
        message += f": {explanation}"
    error = _content_error(message)
    error.extra["reason"] = reason
    return error


def _finish_reason(response: types.GenerateContentResponse) -> str | None:
    candidates = response.candidates or []
    reason = candidates[0].finish_reason if candidates else None
    return str(reason.value) if reason else None


def _parts(response: types.GenerateContentResponse) -> list[types.Part]:
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    return list(content.parts or []) if content else []


def _text_of(response: types.GenerateContentResponse) -> str:
    return "".join(p.text for p in _parts(response) if p.text and not p.thought)


def _usage(response: types.GenerateContentResponse) -> Usage:
    meta = response.usage_metadata
    if meta is None:
        return ZERO_USAGE
    prompt = meta.prompt_token_count or 0
    # Thinking tokens are billed as output, so they count as output here too.
    output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return Usage(
        prompt_tokens=prompt,
        output_tokens=output,
        total_tokens=meta.total_token_count or prompt + output,
    )


def _why_invalid(
    schema: type[BaseModel], text: str, response: types.GenerateContentResponse
) -> str:
    reason = _finish_reason(response)
    if reason == "MAX_TOKENS":
        return "the answer was cut off (MAX_TOKENS)"
    if not text.strip():
        return "the answer was empty"
    try:
        schema.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        return f"{where}: {first['msg']}"
    return "the SDK could not read it"
