"""GeminiProvider through the real google-genai SDK, over loopback, to the fake Gemini server."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from PIL import Image

from cog.config import load_settings
from cog.engine.drafting import DraftedJob, draft_steps
from cog.errors import ConfigError, ProviderError
from cog.providers import gemini_configured, make_providers
from cog.providers.base import InputImage
from cog.providers.gemini import GeminiProvider
from cog.providers.preview import PreviewProvider
from cog.providers.retry import RetryPolicy
from cog.testing.gemini_server import GeminiTestServer
from cog.testing.tcp_proxy import TcpProxy

TEXT_MODEL = "gemini-3.5-flash"
IMAGE_MODEL = "gemini-3-pro-image"
FAST = RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.05, jitter_s=0.0)
SDK_ENV = (
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_USE_ENTERPRISE",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_HTTP_CLIENT",
)


@pytest.fixture(autouse=True)
def sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def running_server() -> Iterator[GeminiTestServer]:
    with GeminiTestServer() as server:
        yield server


@pytest.fixture
def server(running_server: GeminiTestServer) -> GeminiTestServer:
    running_server.reset()
    return running_server


@pytest.fixture
async def provider(server: GeminiTestServer) -> AsyncIterator[GeminiProvider]:
    gemini = GeminiProvider(
        base_url=server.base_url,
        text_model=TEXT_MODEL,
        image_model=IMAGE_MODEL,
        retry=FAST,
        timeout_s=10,
    )
    yield gemini
    await gemini.aclose()


def image_bytes(color: str, size: tuple[int, int] = (24, 16), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


async def test_text_sends_prompt_images_system_and_temperature(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    red, blue = image_bytes("red"), image_bytes("blue", fmt="JPEG")
    server.script_text(["A red square beside a blue one."])
    result = await provider.generate_text(
        prompt="What is shown?",
        images=[InputImage(red, "image/png"), InputImage(blue, "image/jpeg")],
        system="Be brief",
        temperature=0.2,
    )
    assert result.text == "A red square beside a blue one."
    assert (result.model, result.provider) == (TEXT_MODEL, "gemini")
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.output_tokens
    assert len(result.attempts) == 1

    (request,) = server.requests
    assert request.path == f"/v1/models/{TEXT_MODEL}:generateContent"
    assert request.headers["x-goog-api-key"] == "test-key"
    assert request.prompt == "What is shown?"
    assert request.system == "Be brief"
    assert [(i.data, i.mime_type) for i in request.images] == [
        (red, "image/png"),
        (blue, "image/jpeg"),
    ]
    assert request.generation_config["temperature"] == 0.2
    assert "x-server-timeout" in request.headers  # the timeout reached the SDK


async def test_unscripted_text_is_deterministic(provider: GeminiProvider) -> None:
    first = await provider.generate_text(prompt="Name a color")
    again = await provider.generate_text(prompt="Name a color")
    assert first.text == again.text
    assert "Name a color" in first.text


async def test_drafting_answers_a_drafted_job(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    ref = image_bytes("green")
    job, result = await draft_steps(
        provider,
        base_prompt="a lighthouse at dusk, wide panorama",
        series_title="Coasts",
        series_description="Sea views",
        series_tags=["sea"],
        images=[InputImage(ref, "image/png")],
    )
    assert isinstance(job, DraftedJob)
    assert [s.kind for s in job.steps] == ["llm", "image"]
    assert job.steps[1].prompt == "{{ steps[0].text }}"
    assert job.steps[1].config.aspect_ratio == "16:9"
    assert result.model == TEXT_MODEL

    (request,) = server.requests
    config = request.generation_config
    assert config["responseMimeType"] == "application/json"
    assert set(config["responseSchema"]["properties"]) == {"title", "steps"}
    assert "a lighthouse at dusk, wide panorama" in request.prompt
    assert "{{ steps[0].text }}" in (request.system or "")
    assert request.images[0].data == ref


async def test_scripted_json_is_returned_as_the_schema(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    scripted = {
        "title": "Three foxes",
        "steps": [
            {"kind": "llm", "prompt": "Describe {{ base_prompt }}"},
            {"kind": "image", "prompt": "{{ previous.text }}", "config": {"count": 3}},
        ],
    }
    server.script_json([scripted])
    job, result = await draft_steps(
        provider, base_prompt="fox", series_title="", series_description="", series_tags=[]
    )
    assert job.title == "Three foxes"
    assert job.steps[1].config.count == 3
    assert json.loads(result.text) == scripted


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("this is not json", "json_invalid|Invalid JSON"),
        ({"title": "x", "steps": []}, "steps: List should have at least 1 item"),
    ],
)
async def test_answer_that_does_not_fit_the_schema_is_a_clear_error(
    provider: GeminiProvider, server: GeminiTestServer, answer: object, why: str
) -> None:
    server.script_json([answer])
    with pytest.raises(ProviderError, match="not valid JSON for the DraftedJob schema") as caught:
        await draft_steps(
            provider, base_prompt="fox", series_title="", series_description="", series_tags=[]
        )
    assert caught.value.retryable is False
    assert len(caught.value.extra["attempts"]) == 1
    assert any(part in caught.value.message for part in why.split("|"))


async def test_image_sends_references_ratio_and_size(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    mug, table = image_bytes("white"), image_bytes("brown", fmt="JPEG")
    result = await provider.generate_image(
        prompt="Put the mug from image 1 on the table in image 2",
        references=[InputImage(mug, "image/png"), InputImage(table, "image/jpeg")],
        aspect_ratio="16:9",
        image_size="2K",
    )
    assert result.mime_type == "image/png"
    assert (result.model, result.provider) == (IMAGE_MODEL, "gemini")
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.size == (512, 288)  # the fake's 2K is 512 px on the long side
    assert result.text.startswith("Here is the image")
    assert result.usage.output_tokens >= 1120

    (request,) = server.requests
    assert request.model == IMAGE_MODEL
    assert request.generation_config["responseModalities"] == ["TEXT", "IMAGE"]
    assert request.generation_config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert [(i.data, i.mime_type) for i in request.images] == [
        (mug, "image/png"),
        (table, "image/jpeg"),
    ]


async def test_image_skips_interim_thought_images(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    server.thought_images = True
    result = await provider.generate_image(prompt="a cat", aspect_ratio="3:4")
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.size == (192, 256)  # the final image, not the 64 px thought
    assert "Sketching" not in result.text


async def test_image_calls_run_concurrently(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    server.latency_s = 0.3
    start = time.perf_counter()
    results = await asyncio.gather(*(provider.generate_image(prompt=f"cat {i}") for i in range(4)))
    assert time.perf_counter() - start < 0.9
    assert len({r.data for r in results}) == 4


async def test_429_then_success_records_two_attempts(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    server.fail_next(1, status=429)
    result = await provider.generate_text(prompt="hello")
    first, second = result.attempts
    assert first.status_code == 429
    assert first.error is not None and "429 RESOURCE_EXHAUSTED" in first.error
    assert second.error is None
    assert len(server.requests) == 2


async def test_503_until_exhausted_is_a_retryable_error_with_every_attempt(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    server.fail_next(10, status=503)
    with pytest.raises(ProviderError) as caught:
        await provider.generate_image(prompt="a cat")
    error = caught.value
    assert error.retryable is True
    assert error.message.startswith("Gemini kept answering 503 UNAVAILABLE after 4 attempts: ")
    assert "overloaded" in error.message
    assert error.extra["status_code"] == 503
    assert [a.status_code for a in error.extra["attempts"]] == [503] * 4
    assert len(server.requests) == 4


@pytest.mark.parametrize(
    ("status", "name"), [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED")]
)
async def test_client_errors_fail_at_once(
    provider: GeminiProvider, server: GeminiTestServer, status: int, name: str
) -> None:
    server.fail_next(1, status=status)
    with pytest.raises(ProviderError) as caught:
        await provider.generate_text(prompt="hello")
    error = caught.value
    assert error.message.startswith(f"Gemini rejected the request: {status} {name}: ")
    assert error.retryable is False
    assert error.extra["status_code"] == status
    assert len(error.extra["attempts"]) == 1
    assert len(server.requests) == 1


async def test_real_validation_errors_from_the_server_surface(provider: GeminiProvider) -> None:
    with pytest.raises(ProviderError, match=r"400 INVALID_ARGUMENT: Unsupported aspect ratio: 7:3"):
        await provider.generate_image(prompt="a cat", aspect_ratio="7:3")


async def test_prompt_block_is_a_clear_error(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    server.block_next("SAFETY", where="prompt")
    with pytest.raises(ProviderError) as caught:
        await provider.generate_text(prompt="something unsafe")
    assert caught.value.message == "The text model refused the prompt for safety reasons (SAFETY)"
    assert caught.value.retryable is False
    assert caught.value.extra["reason"] == "SAFETY"
    assert len(caught.value.extra["attempts"]) == 1


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("IMAGE_SAFETY", "The image model refused the prompt for safety reasons (IMAGE_SAFETY)"),
        (
            "PROHIBITED_CONTENT",
            "The image model refused the prompt because it may involve prohibited content "
            "(PROHIBITED_CONTENT)",
        ),
    ],
)
async def test_finish_reason_block_is_a_clear_error(
    provider: GeminiProvider, server: GeminiTestServer, reason: str, message: str
) -> None:
    server.block_next(reason, where="finish")
    with pytest.raises(ProviderError) as caught:
        await provider.generate_image(prompt="something unsafe")
    assert caught.value.message == message
    assert caught.value.retryable is False


async def test_answer_without_image_is_a_clear_error(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    server.no_image_next()
    with pytest.raises(ProviderError) as caught:
        await provider.generate_image(prompt="a cat")
    assert caught.value.message.startswith("The model answered without an image: I can't make")
    assert caught.value.retryable is False
    assert len(server.requests) == 1


@pytest.mark.parametrize(("api_version", "expected"), [(None, "v1"), ("v1beta", "v1beta")])
async def test_both_api_versions_are_served(
    server: GeminiTestServer, api_version: str | None, expected: str
) -> None:
    gemini = GeminiProvider(base_url=server.base_url, api_version=api_version, retry=FAST)
    try:
        result = await gemini.generate_image(prompt="a cat")
    finally:
        await gemini.aclose()
    assert result.data.startswith(b"\x89PNG")
    assert server.requests[-1].api_version == expected


async def test_server_retry_delay_is_honoured(
    server: GeminiTestServer,
) -> None:
    server.retry_delay_s = 0.25
    server.fail_next(1, status=429)
    patient = RetryPolicy(max_attempts=2, initial_delay_s=0.01, max_delay_s=1.0, jitter_s=0.0)
    gemini = GeminiProvider(base_url=server.base_url, retry=patient)
    try:
        result = await gemini.generate_text(prompt="hello")
    finally:
        await gemini.aclose()
    first, second = result.attempts
    assert (second.started_at - first.started_at).total_seconds() >= 0.25


async def test_server_retry_delay_is_capped(
    provider: GeminiProvider, server: GeminiTestServer
) -> None:
    server.retry_delay_s = 30.0
    server.fail_next(1, status=429)
    start = time.perf_counter()
    await provider.generate_text(prompt="hello")
    assert time.perf_counter() - start < 1.0  # FAST caps every wait at 0.05 s


async def test_timeout_is_retried_then_reported(server: GeminiTestServer) -> None:
    server.latency_s = 1.0
    policy = RetryPolicy(max_attempts=2, initial_delay_s=0.01, max_delay_s=0.05, jitter_s=0.0)
    gemini = GeminiProvider(base_url=server.base_url, retry=policy, timeout_s=0.2)
    try:
        with pytest.raises(ProviderError) as caught:
            await gemini.generate_text(prompt="hello")
    finally:
        await gemini.aclose()
    assert caught.value.retryable is True
    assert caught.value.message.startswith("Gemini did not answer within 0.2 s")
    assert len(caught.value.extra["attempts"]) == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_server_is_retried_then_reported() -> None:
    policy = RetryPolicy(max_attempts=2, initial_delay_s=0.01, max_delay_s=0.05, jitter_s=0.0)
    gemini = GeminiProvider(base_url=f"http://127.0.0.1:{free_port()}", retry=policy)
    try:
        with pytest.raises(ProviderError, match="Could not reach Gemini") as caught:
            await gemini.generate_text(prompt="hello")
    finally:
        await gemini.aclose()
    assert caught.value.retryable is True
    assert [a.status_code for a in caught.value.extra["attempts"]] == [None, None]
    # Where it tried and why it failed, in words: no transport's object dumps.
    assert "127.0.0.1:" in caught.value.message
    assert "object at 0x" not in caught.value.message


async def test_a_proxy_named_in_the_environment_carries_the_calls(
    server: GeminiTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host name resolves nowhere: only the proxy can get the call to the server.
    with TcpProxy("127.0.0.1", server.port) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        gemini = GeminiProvider(base_url="http://gemini.invalid", retry=FAST)
        try:
            result = await gemini.generate_text(prompt="through the proxy")
        finally:
            await gemini.aclose()
        assert proxy.connections == 1
    assert result.text == "Fake answer from gemini-3.5-flash: through the proxy"
    assert server.requests[-1].headers["host"] == "gemini.invalid"


async def test_random_faults_are_ridden_out_by_retries(server: GeminiTestServer) -> None:
    server.fault_rate = 0.3
    policy = RetryPolicy(max_attempts=8, initial_delay_s=0.001, max_delay_s=0.01, jitter_s=0.0)
    gemini = GeminiProvider(base_url=server.base_url, retry=policy)
    try:
        results = [await gemini.generate_text(prompt=f"q{i}") for i in range(10)]
    finally:
        await gemini.aclose()
    retried = sum(len(r.attempts) - 1 for r in results)
    assert retried > 0
    assert len(server.requests) == 10 + retried


# -- the fake server's wire format, seen without the SDK ---------------------------------


def png_part(data: bytes, *, urlsafe: bool, key: str) -> dict[str, object]:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return {"inlineData": {key: "image/png", "data": encode(data).decode()}}


def test_wire_format_accepts_both_base64_alphabets_and_mime_keys(
    server: GeminiTestServer,
) -> None:
    # Bytes whose base64 differs between the alphabets ('+/' against '-_').
    data = next(
        d
        for d in (image_bytes("red", (w, 3)) for w in range(1, 64))
        if set(base64.b64encode(d).decode()) & set("+/")
    )
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Two images"},
                    png_part(data, urlsafe=True, key="mime_type"),
                    png_part(data, urlsafe=False, key="mimeType"),
                ],
            }
        ]
    }
    url = f"{server.base_url}/v1beta/models/{TEXT_MODEL}:generateContent"
    answer = httpx.post(url, json=body, headers={"x-goog-api-key": "k"})
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["candidates"][0]["finishReason"] == "STOP"
    assert set(payload["usageMetadata"]) == {
        "promptTokenCount",
        "candidatesTokenCount",
        "totalTokenCount",
    }
    assert [i.data for i in server.requests[-1].images] == [data, data]


def test_wire_format_errors(server: GeminiTestServer) -> None:
    url = f"{server.base_url}/v1/models/{TEXT_MODEL}:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}

    no_key = httpx.post(url, json=body)
    assert no_key.status_code == 403
    assert no_key.json()["error"]["status"] == "PERMISSION_DENIED"

    server.retry_delay_s = 7
    server.fail_next(1, status=429)
    busy = httpx.post(url, json=body, headers={"x-goog-api-key": "k"})
    assert busy.status_code == 429
    error = busy.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in error[
        "details"
    ]

    two = {**body, "generationConfig": {"candidateCount": 2}}
    refused = httpx.post(url, json=two, headers={"x-goog-api-key": "k"})
    assert refused.status_code == 400
    assert "Multiple candidates" in refused.json()["error"]["message"]

    unknown = httpx.post(f"{server.base_url}/v2/models/m:generateContent", json=body)
    assert unknown.status_code == 404


async def test_streaming_through_the_sdk(server: GeminiTestServer) -> None:
    gemini = GeminiProvider(base_url=server.base_url, api_version="v1beta", retry=FAST)
    try:
        stream = await gemini._client.aio.models.generate_content_stream(
            model=TEXT_MODEL, contents="one two three four five six"
        )
        chunks = [chunk async for chunk in stream]
    finally:
        await gemini.aclose()
    assert len(chunks) > 1
    assert "".join(c.text or "" for c in chunks).endswith("one two three four five six")
    assert chunks[-1].usage_metadata is not None
    assert server.requests[-1].query == {"alt": "sse"}


@pytest.mark.slow
def test_server_runs_as_a_module() -> None:
    command = [sys.executable, "-m", "cog.testing.gemini_server", "--latency-ms", "5"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            answer = httpx.post(
                f"{url}/v1/models/{TEXT_MODEL}:generateContent",
                json={"contents": [{"parts": [{"text": "hi"}]}]},
                headers={"x-goog-api-key": "k"},
            )
            assert answer.status_code == 200
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0


# -- choosing providers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"GOOGLE_API_KEY": "k"}, True),
        ({"GEMINI_API_KEY": "k"}, True),
        ({"GOOGLE_API_KEY": ""}, False),
        ({"GOOGLE_GENAI_USE_VERTEXAI": "true"}, True),
        ({"GOOGLE_GENAI_USE_VERTEXAI": "0"}, False),
    ],
)
def test_gemini_configured_reads_the_environment_like_the_sdk(
    env: dict[str, str], expected: bool
) -> None:
    assert gemini_configured(env) is expected


async def test_make_providers_auto_picks_gemini_when_a_key_is_set(
    server: GeminiTestServer,
) -> None:
    settings = load_settings(provider="auto", gemini_base_url=server.base_url, image_model="img-x")
    text, image = make_providers(settings)
    try:
        assert isinstance(text, GeminiProvider)
        assert text is image
        result = await image.generate_image(prompt="a cat")
        assert result.model == "img-x"
        assert server.requests[-1].model == "img-x"
    finally:
        await text.aclose()
        await image.aclose()


def test_make_providers_auto_falls_back_to_preview(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY")
    text, image = make_providers(load_settings(provider="auto"))
    assert isinstance(text, PreviewProvider)
    assert text is image


def test_make_providers_gemini_without_credentials_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY")
    with pytest.raises(ConfigError, match="COG_PROVIDER=preview"):
        make_providers(load_settings(provider="gemini"))
