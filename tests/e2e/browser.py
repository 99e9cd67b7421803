"""Cog as a `cog serve` subprocess and a page in Chromium, for the browser tests: start them,
watch a page for errors, take screenshots."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Locator, Page, expect

from tests.conftest import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Cog:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    token: str | None = None
    api: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.api = httpx.Client(base_url=self.url, timeout=20, headers=headers)

    def stop(self) -> None:
        self.api.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_cog(folder: Path, **env: str) -> Cog:
    """`cog serve` on a free loopback port, with its data under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("COG_", "GOOGLE_", "GEMINI_"))
    }
    log = folder / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cog", "serve", "--port", str(port)],
            env={**clean, "COG_DATA_DIR": str(folder / "data"), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"cog serve exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/cog/login", timeout=1).status_code == 200:
                return Cog(url, process, log, env.get("COG_API_TOKEN"))
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"cog serve did not start: {log.read_text()}")


@dataclass
class Watch:
    """What a page said that a person would never want: script errors, CSP refusals, dialogs."""

    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(message.text)

    def assert_clean(self, *expected: str) -> None:
        """No problem but the `expected` ones (the start of their text), and no dialog."""
        unexpected = sorted({p for p in self.problems if not p.startswith(expected)})
        assert unexpected == [], "\n".join(unexpected)
        assert self.dialogs == []

    def dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


def open_page(
    browser: Browser, watch: Watch, viewport: dict[str, int] = DESKTOP, scheme: str = "light"
) -> Page:
    context = browser.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", watch.console)
    page.on("pageerror", lambda error: watch.problems.append(str(error)))
    page.on("dialog", watch.dialog)
    return page


def settled(swapped: Locator) -> None:
    """Wait until htmx has processed what it swapped in. Chromium focuses an `autofocus` field
    as soon as it is inserted, while htmx wires the new form's `hx-post` a moment later (when it
    takes off the `htmx-added` class): a key pressed in between submits the form natively."""
    expect(swapped).not_to_have_class(re.compile(r"\bhtmx-added\b"))


def shoot(page: Page, name: str) -> None:
    """What a person first sees (`name.png`) and the whole page (`name-full.png`)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_load_state("networkidle")
    # caret="initial": hiding the caret means injecting a <style>, which the CSP (rightly) refuses.
    page.screenshot(path=ARTIFACTS / f"{name}.png", caret="initial")
    page.screenshot(path=ARTIFACTS / f"{name}-full.png", full_page=True, caret="initial")


def png(width: int, height: int, color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def upload_by_chooser(page: Page, files: list[dict[str, Any]]) -> None:
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Choose files…").click()
    chooser.value.set_files(files)  # type: ignore[arg-type]
