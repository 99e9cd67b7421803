"""A fake Gemini API: a real HTTP server on loopback that speaks Gemini's REST wire format.

Tests and benchmarks point the real `google-genai` SDK at it (`base_url`), so everything between
Cog and the network is exercised. In a test::

    with GeminiTestServer() as server:
        provider = GeminiProvider(api_key="test", base_url=server.base_url, ...)
        server.fail_next(1, status=429)
        ...
        assert server.requests[-1].images[0].data == png

From a shell or a subprocess test (prints its URL on the first line of stdout)::

    python -m cog.testing.gemini_server --port 8765 --latency-ms 300

What it answers (`POST /{v1,v1beta}/models/{model}:generateContent`, and
`:streamGenerateContent?alt=sse`; any path prefix before the version is accepted):

- text requests: the next scripted text (`script_text`), else a deterministic answer;
- JSON requests (`responseMimeType: application/json`): the next scripted value
  (`script_json`; a `str` is sent as it is, so invalid JSON can be scripted), else a valid
  instance of `responseJsonSchema` / `responseSchema`; for Cog's drafting schema, a two-step job
  for the base prompt;
- image requests (`responseModalities` holds IMAGE): a text part and a real PNG whose shape
  follows `imageConfig`. Sizes are a quarter of Gemini's to keep tests fast: 1K is 256 px on the
  long side, 2K 512 px and 4K 1024 px.

Errors use Google's body, `{"error": {"code", "message", "status"}}`; a 429 carries a
`google.rpc.RetryInfo` detail whose `retryDelay` is `retry_delay_s`. Requests without an
`x-goog-api-key` header get a 403. The switches (`latency_s`, `fault_rate`, `fail_next`, ...)
can be changed from any thread while the server runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cog.providers._schema_example import camel_or_snake
from cog.testing._gemini_wire import (
    PATH,
    STATUS_NAMES,
    BlockWhere,
    Plan,
    RecordedImage,
    Refusal,
    build_answer,
    error_response,
    parse_call,
    sse_events,
    stream_chunks,
)

__all__ = ["GeminiTestServer", "RecordedImage", "RecordedRequest", "main"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    api_version: str | None
    model: str | None
    action: str | None
    headers: dict[str, str]
    body: Any
    prompt: str = ""
    system: str | None = None
    images: tuple[RecordedImage, ...] = ()

    @property
    def generation_config(self) -> dict[str, Any]:
        body = self.body if isinstance(self.body, dict) else {}
        config = camel_or_snake(body, "generationConfig")
        return config if isinstance(config, dict) else {}


@dataclass
class _State:
    latency_s: float
    fault_rate: float
    retry_delay_s: float
    thought_images: bool
    rng: random.Random
    failures: deque[int] = field(default_factory=deque)
    blocks: deque[tuple[str, BlockWhere, str | None]] = field(default_factory=deque)
    no_images: int = 0
    texts: deque[str] = field(default_factory=deque)
    jsons: deque[Any] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    served: int = 0


class GeminiTestServer:
    """The fake Gemini server, run by uvicorn in a background thread on 127.0.0.1."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        seed: int = 0,
        retry_delay_s: float = 0.0,
        thought_images: bool = False,
        api_key: str | None = None,
    ) -> None:
        """`port=0` picks a free port. `api_key`, when given, is the only key accepted (others
        get Gemini's 400 API_KEY_INVALID); by default any non-empty key is."""
        self.host = host
        self._port = port
        self._defaults = (latency_s, fault_rate, retry_delay_s, thought_images, seed)
        self._api_key = api_key
        self._lock = threading.Lock()
        self._state = self._fresh_state()
        self.app = Starlette(
            routes=[Route("/{path:path}", self._endpoint, methods=["GET", "POST", "PUT"])]
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def start(self) -> GeminiTestServer:
        if self._thread is not None:
            return self
        # Binding here, not in uvicorn, makes the port known before the thread starts and
        # surfaces "address in use" to the caller.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # leave the host process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._socket = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-gemini", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake Gemini server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> GeminiTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- switches (thread-safe) ----------------------------------------------------------

    @property
    def latency_s(self) -> float:
        with self._lock:
            return self._state.latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        with self._lock:
            self._state.latency_s = max(0.0, value)

    @property
    def fault_rate(self) -> float:
        """The fraction of calls answered 429 or 503 at random (seeded, so runs repeat)."""
        with self._lock:
            return self._state.fault_rate

    @fault_rate.setter
    def fault_rate(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError("fault_rate is a fraction between 0 and 1")
        with self._lock:
            self._state.fault_rate = value

    @property
    def retry_delay_s(self) -> float:
        """The `retryDelay` a 429 answer asks for."""
        with self._lock:
            return self._state.retry_delay_s

    @retry_delay_s.setter
    def retry_delay_s(self, value: float) -> None:
        with self._lock:
            self._state.retry_delay_s = max(0.0, value)

    @property
    def thought_images(self) -> bool:
        """Send an interim `thought` image before the final one, as Gemini's Pro models may."""
        with self._lock:
            return self._state.thought_images

    @thought_images.setter
    def thought_images(self, value: bool) -> None:
        with self._lock:
            self._state.thought_images = value

    def fail_next(self, n: int = 1, status: int = 429) -> None:
        """Answer the next `n` generate calls with HTTP `status` and Google's error body."""
        if status not in STATUS_NAMES:
            raise ValueError(f"status must be one of {sorted(STATUS_NAMES)}")
        with self._lock:
            self._state.failures.extend([status] * n)

    def block_next(
        self, reason: str = "SAFETY", where: BlockWhere = "prompt", kind: str | None = None
    ) -> None:
        """Refuse the next call (of `kind` "text", "json" or "image", when given):
        `promptFeedback.blockReason` ("prompt") or a candidate with `finishReason` ("finish"),
        both with HTTP 200 as Gemini does."""
        if where not in ("prompt", "finish"):
            raise ValueError('where is "prompt" or "finish"')
        if kind not in (None, "text", "json", "image"):
            raise ValueError('kind is "text", "json", "image" or None')
        with self._lock:
            self._state.blocks.append((reason, where, kind))

    def no_image_next(self, n: int = 1) -> None:
        """Answer the next `n` image calls with text only (HTTP 200, finishReason STOP)."""
        with self._lock:
            self._state.no_images += n

    def script_text(self, texts: Iterable[str]) -> None:
        with self._lock:
            self._state.texts.extend(texts)

    def script_json(self, values: Iterable[Any]) -> None:
        with self._lock:
            self._state.jsons.extend(values)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def reset(self) -> None:
        """Forget requests and queued behaviour; switches go back to their initial values."""
        with self._lock:
            self._state = self._fresh_state()

    def _fresh_state(self) -> _State:
        latency_s, fault_rate, retry_delay_s, thought_images, seed = self._defaults
        return _State(latency_s, fault_rate, retry_delay_s, thought_images, random.Random(seed))

    # -- HTTP ------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        arrived = time.perf_counter()
        match = PATH.match(request.url.path)
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            api_version=match["version"] if match else None,
            model=match["model"] if match else None,
            action=match["action"] if match else None,
            headers=dict(request.headers),
            body=body,
        )
        try:
            if match is None:
                raise Refusal(404, f"Method not found: {request.url.path}")
            if request.method != "POST":
                raise Refusal(405, f"{request.method} is not allowed here")
            key = request.headers.get("x-goog-api-key", "")
            if not key:
                raise Refusal(403)
            if self._api_key is not None and key != self._api_key:
                raise Refusal(400, "API key not valid. Please pass a valid API key.")
            if not isinstance(body, dict):
                raise Refusal(400, "Invalid JSON payload received.")
            call = parse_call(body, match["model"])
            recorded = replace(recorded, prompt=call.prompt, system=call.system, images=call.images)
        except Refusal as refusal:
            self._record(recorded)
            return error_response(refusal, self.retry_delay_s)
        self._record(recorded)
        plan = self._plan(call.kind)
        # The latency is the time from the request to the answer, as a remote model's is: the
        # answer is made and serialized while it runs, so neither adds to it.
        response: Response
        if plan.failure is not None:
            response = error_response(Refusal(plan.failure), plan.retry_delay_s)
        elif recorded.action == "streamGenerateContent":
            response = StreamingResponse(
                sse_events(stream_chunks(build_answer(call, plan), call)),
                media_type="text/event-stream",
            )
        else:
            response = JSONResponse(build_answer(call, plan))
        if (wait := plan.latency_s - (time.perf_counter() - arrived)) > 0:
            await asyncio.sleep(wait)
        return response

    def _record(self, recorded: RecordedRequest) -> None:
        with self._lock:
            self._state.requests.append(recorded)

    def _plan(self, kind: str) -> Plan:
        with self._lock:
            s = self._state
            s.served += 1
            failure = s.failures.popleft() if s.failures else None
            if failure is None and s.fault_rate and s.rng.random() < s.fault_rate:
                failure = s.rng.choice((429, 503))
            ok = failure is None
            block = None
            if ok:
                for queued in s.blocks:
                    if queued[2] in (None, kind):
                        s.blocks.remove(queued)
                        block = (queued[0], queued[1])
                        break
            no_image = ok and block is None and kind == "image" and s.no_images > 0
            if no_image:
                s.no_images -= 1
            text = s.texts.popleft() if ok and kind == "text" and s.texts else None
            has_json = ok and kind == "json" and bool(s.jsons)
            json_value = s.jsons.popleft() if has_json else None
            return Plan(
                latency_s=s.latency_s,
                failure=failure,
                retry_delay_s=s.retry_delay_s,
                block=block,
                no_image=no_image,
                text=text,
                json_value=json_value,
                has_json=has_json,
                thought_images=s.thought_images,
                response_id=f"fake-{s.served}",
            )


# -- command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fake Gemini API server on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="fraction answered 429/503")
    parser.add_argument("--retry-delay-ms", type=float, default=0.0, help="retryDelay of a 429")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: any)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = GeminiTestServer(
        host=args.host,
        port=args.port,
        latency_s=args.latency_ms / 1000,
        fault_rate=args.fault_rate,
        retry_delay_s=args.retry_delay_ms / 1000,
        seed=args.seed,
        api_key=args.api_key,
    )
    with server:
        sys.stdout.write(server.base_url + "\n")
        sys.stdout.flush()
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
