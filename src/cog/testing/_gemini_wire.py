"""Gemini's REST wire format as the fake server speaks it: reading requests, writing answers.

Pure functions of a request and a `Plan`; the server in `gemini_server` holds the state.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import json
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError
from starlette.responses import JSONResponse

from cog.engine.drafting import base_prompt_from_request, example_draft
from cog.providers._schema_example import camel_or_snake, example_for_schema
from cog.providers.preview import gradient_image, image_dimensions

# A quarter of Gemini's sizes keeps tests fast.
LONG_SIDE_PX = {"1K": 256, "2K": 512, "4K": 1024}
ASPECT_RATIOS = frozenset({"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"})
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API.",
    408: "The request timed out.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry.",
    502: "The upstream service is unavailable.",
    503: "The model is overloaded. Please try again later.",
    504: "The request deadline was exceeded.",
}
PATH = re.compile(
    r"^/(?:.*/)?(?P<version>v1|v1beta)/models/(?P<model>[^/:]+)"
    r":(?P<action>generateContent|streamGenerateContent)$"
)
BlockWhere = Literal["prompt", "finish"]


@dataclass(frozen=True)
class RecordedImage:
    data: bytes
    mime_type: str


class Refusal(Exception):
    """An error answer: HTTP status and message."""

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message or MESSAGES.get(status, "Error.")


@dataclass(frozen=True)
class Plan:
    """What to answer one request with, decided atomically under the lock."""

    latency_s: float
    failure: int | None
    retry_delay_s: float
    block: tuple[str, BlockWhere] | None
    no_image: bool
    text: str | None
    json_value: Any
    has_json: bool
    thought_images: bool
    response_id: str


# -- request parsing --------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    model: str
    kind: Literal["text", "json", "image"]
    prompt: str
    system: str | None
    images: tuple[RecordedImage, ...]
    schema: Mapping[str, Any] | None
    aspect_ratio: str | None
    image_size: str | None


def parse_call(body: Mapping[str, Any], model: str) -> Call:
    contents = camel_or_snake(body, "contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise Refusal(400, "* GenerateContentRequest.contents: contents is not specified")
    texts: list[str] = []
    images: list[RecordedImage] = []
    for ci, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise Refusal(400, f"* GenerateContentRequest.contents[{ci}].parts: must not be empty")
        if content.get("role", "user") != "user":
            continue
        for pi, part in enumerate(parts):
            where = f"contents[{ci}].parts[{pi}]"
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and isinstance(camel_or_snake(part, "inlineData"), dict):
                images.append(_inline_image(camel_or_snake(part, "inlineData"), where))
            else:
                raise Refusal(400, f"* GenerateContentRequest.{where}: unsupported part")

    system = None
    instruction = camel_or_snake(body, "systemInstruction")
    if isinstance(instruction, dict):
        system = "\n".join(
            p["text"] for p in instruction.get("parts") or [] if isinstance(p.get("text"), str)
        )

    config = camel_or_snake(body, "generationConfig")
    config = config if isinstance(config, dict) else {}
    count = camel_or_snake(config, "candidateCount")
    if isinstance(count, int) and count > 1:
        raise Refusal(400, f"Multiple candidates is not enabled for models/{model}")
    modalities = [str(m).upper() for m in camel_or_snake(config, "responseModalities") or []]
    json_schema, schema = (
        camel_or_snake(config, "responseJsonSchema"),
        camel_or_snake(config, "responseSchema"),
    )
    if json_schema is not None and schema is not None:
        raise Refusal(400, "responseSchema and responseJsonSchema cannot both be set")
    if not isinstance(json_schema if json_schema is not None else schema or {}, dict):
        raise Refusal(
            400, "* GenerateContentRequest.generation_config.response_schema: not an object"
        )
    image_config = camel_or_snake(config, "imageConfig")
    image_config = image_config if isinstance(image_config, dict) else {}
    aspect_ratio = camel_or_snake(image_config, "aspectRatio")
    image_size = camel_or_snake(image_config, "imageSize")
    kind: Literal["text", "json", "image"] = "text"
    if "IMAGE" in modalities:
        kind = "image"
        if aspect_ratio is not None and aspect_ratio not in ASPECT_RATIOS:
            raise Refusal(400, f"Unsupported aspect ratio: {aspect_ratio}")
        if image_size is not None and image_size not in LONG_SIDE_PX:
            raise Refusal(400, f"Unsupported image size: {image_size}")
    elif camel_or_snake(config, "responseMimeType") == "application/json":
        kind = "json"
    return Call(
        model=model,
        kind=kind,
        prompt="\n".join(texts),
        system=system,
        images=tuple(images),
        schema=json_schema if json_schema is not None else schema,
        aspect_ratio=aspect_ratio,
        image_size=image_size,
    )


def _inline_image(inline: Mapping[str, Any], where: str) -> RecordedImage:
    mime_type = camel_or_snake(inline, "mimeType")
    data = inline.get("data")
    if not isinstance(mime_type, str) or not mime_type:
        raise Refusal(400, f"* GenerateContentRequest.{where}.inline_data.mime_type: required")
    try:
        if not isinstance(data, str):
            raise ValueError("not a string")
        # The SDK sends URL-safe base64; Google (proto3 JSON) accepts both alphabets.
        standard = data.replace("-", "+").replace("_", "/")
        decoded = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refusal(
            400,
            f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed",
        ) from exc
    if mime_type.startswith("image/"):
        try:
            with Image.open(io.BytesIO(decoded)) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise Refusal(400, "Unable to process input image.") from exc
    return RecordedImage(data=decoded, mime_type=mime_type)


# -- answers -----------------------------------------------------------------------------


def build_answer(call: Call, plan: Plan) -> dict[str, Any]:
    prompt_tokens = _tokens(call.prompt) + _tokens(call.system or "") + 258 * len(call.images)
    meta = {"modelVersion": call.model, "responseId": plan.response_id}
    if plan.block is not None:
        reason, where = plan.block
        usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
        if where == "prompt":
            return {"promptFeedback": {"blockReason": reason}, "usageMetadata": usage, **meta}
        candidate = {"finishReason": reason, "index": 0}
        return {"candidates": [candidate], "usageMetadata": usage, **meta}

    parts: list[dict[str, Any]]
    output_tokens: int
    if call.kind == "image" and not plan.no_image:
        parts, output_tokens = _image_parts(call, plan.thought_images)
    elif call.kind == "image":
        text = "I can't make that picture, but here is a description instead."
        parts, output_tokens = [{"text": text}], _tokens(text)
    elif call.kind == "json":
        text = _json_text(call, plan)
        parts, output_tokens = [{"text": text}], _tokens(text)
    else:
        text = plan.text if plan.text is not None else _default_text(call)
        parts, output_tokens = [{"text": text}], _tokens(text)
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
        **meta,
    }


def _default_text(call: Call) -> str:
    words = " ".join(call.prompt.split())
    snippet = words if len(words) <= 300 else words[:297] + "..."
    seen = f" (with {len(call.images)} image(s))" if call.images else ""
    return f"Fake answer from {call.model}{seen}: {snippet}"


def _json_text(call: Call, plan: Plan) -> str:
    if plan.has_json:
        value = plan.json_value
        return value if isinstance(value, str) else json.dumps(value)
    schema = call.schema
    if schema is None:
        return json.dumps({"text": _default_text(call)})
    properties = schema.get("properties") or {}
    if "title" in properties and "steps" in properties:
        draft = example_draft(base_prompt_from_request(call.prompt))
        return draft.model_dump_json()
    return json.dumps(example_for_schema(schema, seed=call.prompt))


def _image_parts(call: Call, thought_images: bool) -> tuple[list[dict[str, Any]], int]:
    size = image_dimensions(call.aspect_ratio, call.image_size, LONG_SIDE_PX)
    seed = hashlib.sha256(call.prompt.encode())
    for image in call.images:
        seed.update(hashlib.sha256(image.data).digest())
    parts: list[dict[str, Any]] = []
    if thought_images:
        draft = _gradient_png((64, 64), b"thought" + seed.digest())
        parts += [
            {"text": "Sketching the composition first.", "thought": True},
            {"inlineData": {"mimeType": "image/png", "data": draft}, "thought": True},
        ]
    words = " ".join(call.prompt.split())
    parts += [
        {"text": f"Here is the image: {words[:120]}"},
        {
            "inlineData": {
                "mimeType": "image/png",
                "data": _gradient_png(size, seed.digest()),
            }
        },
    ]
    # Gemini bills an image at 1120 output tokens up to 2K and 2000 at 4K.
    return parts, (2000 if call.image_size == "4K" else 1120) + _tokens(parts[-2]["text"])


def error_response(refusal: Refusal, retry_delay_s: float) -> JSONResponse:
    status = refusal.status
    error: dict[str, Any] = {
        "code": status,
        "message": refusal.message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if status == 429:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": _duration(retry_delay_s),
            },
        ]
    return JSONResponse({"error": error}, status_code=status)


@functools.lru_cache(maxsize=256)
def _gradient_png(size: tuple[int, int], seed: bytes) -> str:
    """The image for a seed, base64 PNG. Kept: drawing one takes a few milliseconds of this
    process's CPU, which a remote model would spend on its own machines, not on Cog's."""
    out = io.BytesIO()
    gradient_image(size, seed).save(out, format="PNG", compress_level=1)
    return base64.b64encode(out.getvalue()).decode("ascii")


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def stream_chunks(answer: dict[str, Any], call: Call) -> list[dict[str, Any]]:
    """A streamed answer: text in a few pieces, the finish reason and usage on the last."""
    candidates = answer.get("candidates") or []
    parts = candidates[0].get("content", {}).get("parts", []) if candidates else []
    if call.kind != "text" or len(parts) != 1 or "finishReason" not in candidates[0]:
        return [answer]
    words = parts[0]["text"].split(" ")
    step = max(1, math.ceil(len(words) / 3))
    pieces = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
    pieces = [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]
    chunks: list[dict[str, Any]] = [
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}],
            "modelVersion": answer["modelVersion"],
            "responseId": answer["responseId"],
        }
        for p in pieces
    ]
    chunks[-1]["candidates"][0]["finishReason"] = "STOP"
    chunks[-1]["usageMetadata"] = answer["usageMetadata"]
    return chunks


async def sse_events(chunks: Sequence[dict[str, Any]]) -> AsyncIterator[str]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n"
