"""A step's `for_each` loop: one turn (an iteration) per item, all at once.

An image step makes its images for every item concurrently, within the process's image slots;
an llm step asks for every item concurrently, within the same number of calls at a time. Each
iteration is recorded on the step run as it goes (`iterations`: item, status, prompt, text,
structured answer, image ids, error), in the same transaction as the image that changes it, and
each image carries its item in its metadata (`item`, `iteration`). A resumed step keeps the
iterations that finished and the images already made, and makes only what is missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cog.db import runs as runs_db
from cog.db.models import StepRun
from cog.domain import StepKind, StepStatus
from cog.engine.branching import ITEM
from cog.engine.imagecalls import ImageCall, StepImages
from cog.engine.prompts import StepOutput, render
from cog.engine.steps import item_refs
from cog.errors import CogError, ProviderError
from cog.providers.base import InputImage

if TYPE_CHECKING:
    import datetime as dt

    from cog.db.lineage import Parent
    from cog.engine.runner import Runner, _Tally
    from cog.engine.steps import StepSpec

_UNFINISHED = (StepStatus.pending, StepStatus.running)


@dataclass
class Iteration:
    index: int
    item: Any
    status: str = StepStatus.pending
    prompt: str | None = None
    text: str = ""
    json: Any = None
    image_ids: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None

    def dump(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def output_of(row: StepRun) -> StepOutput:
    """What a step that ended (before a resume) offers later steps."""
    if row.status == StepStatus.skipped:
        return StepOutput(skipped=True)
    items = sorted(
        (it for it in row.iterations or [] if isinstance(it, dict)),
        key=lambda it: int(it.get("index", 0)),
    )
    return StepOutput(
        row.text or "",
        [str(i) for i in row.image_ids],
        row.json_output,
        item_images=[[str(i) for i in it.get("image_ids", [])] for it in items] if items else None,
    )


class IterationImages(StepImages):
    """`StepImages` for a loop: each image goes to its iteration, which has succeeded once it
    has all of its images; the step run's `iterations` are written with its `image_ids`."""

    def __init__(self, iterations: list[Iteration], count: int) -> None:
        super().__init__([])
        self.iterations = iterations
        self.count = count

    def _of(self, call: ImageCall) -> Iteration:
        assert call.iteration is not None
        return self.iterations[call.iteration]

    def add(self, call: ImageCall, image_id: str) -> None:
        iteration = self._of(call)
        iteration.image_ids.append(image_id)
        if len(iteration.image_ids) >= self.count:
            iteration.status = StepStatus.succeeded

    def remove(self, call: ImageCall, image_id: str) -> None:
        iteration = self._of(call)
        if image_id in iteration.image_ids:
            iteration.image_ids.remove(image_id)
        if iteration.status == StepStatus.succeeded:
            iteration.status = StepStatus.running

    def said(self, call: ImageCall, text: str) -> None:
        iteration = self._of(call)
        iteration.text = "\n\n".join(t for t in (iteration.text, text) if t)

    def failed(self, call: ImageCall, message: str) -> None:
        iteration = self._of(call)
        iteration.status, iteration.error = StepStatus.failed, message

    def describe(self, message: str) -> str:
        return describe(self.iterations, message)

    def image_ids(self) -> list[str]:
        return [i for iteration in self.iterations for i in iteration.image_ids]

    def values(self) -> dict[str, Any]:
        return {"image_ids": self.image_ids(), "iterations": [it.dump() for it in self.iterations]}


def describe(iterations: list[Iteration], message: str) -> str:
    failed = next((it for it in iterations if it.status == StepStatus.failed), None)
    if failed is None:
        return message
    return f"Item {failed.index} of {len(iterations)} ({_short(failed.item)}) failed: {message}"


def _short(item: Any) -> str:
    text = item if isinstance(item, str) else repr(item)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


class FanOut:
    """Runs one step once per item of its loop (see the module's docstring)."""

    def __init__(
        self,
        runner: Runner,
        spec: StepSpec,
        row: StepRun,
        items: list[Any],
        outputs: list[StepOutput],
        tally: _Tally,
    ) -> None:
        self.runner = runner
        self.spec = spec
        self.row = row
        self.outputs = outputs
        self.tally = tally
        self.iterations = [Iteration(i, item) for i, item in enumerate(items)]
        self.shared: tuple[list[InputImage], list[Parent]] = ([], [])
        self.own: dict[int, tuple[list[InputImage], list[Parent]]] = {}

    def references(self, index: int) -> tuple[list[InputImage], list[Parent]]:
        """The input images the `index`-th item sends, with the versions they are."""
        return self.own.get(index, self.shared)

    async def run(self, started: dt.datetime) -> StepOutput:
        from cog.engine.runner import StepFailed

        runner, spec = self.runner, self.spec
        if self.row.started_at is not None:
            await self._resume()
        context = runner.context(self.outputs)
        for it in self.iterations:
            if it.status == StepStatus.succeeded:
                continue
            it.prompt = render(
                spec.prompt,
                base_prompt=context["base_prompt"],
                series=context["series"],
                steps=self.outputs,
                input_image=context.get("input"),
                style=context["style"],
                extra={ITEM: it.item},
            )
            it.prompt = runner.styled(spec, it.prompt)
            if not it.prompt:
                raise StepFailed(
                    f"The prompt rendered to nothing for item {it.index}; the model needs some "
                    "text."
                )
            it.status, it.error = StepStatus.running, None
        await self._write(
            status=StepStatus.running, started_at=started, error=None, rendered_prompt=None
        )
        # Every item sends the same input images, unless it takes an item's images of an
        # earlier step (`step:N:item`): then each has its own.
        if item_refs(spec.config):
            for it in self.iterations:
                if it.status != StepStatus.succeeded:
                    self.own[it.index] = await runner._input_images(spec, self.outputs, it.index)
        else:
            self.shared = await runner._input_images(spec, self.outputs)
        try:
            if spec.kind is StepKind.llm:
                await self._ask_each()
            else:
                await self._images_of_each()
        except (StepFailed, CogError):
            for it in self.iterations:
                if it.status in _UNFINISHED:
                    it.status = StepStatus.cancelled
            await self._write()
            raise
        texts = [it.text for it in self.iterations if it.text]
        structured = spec.config.json_schema is not None
        return StepOutput(
            "\n\n".join(texts),
            [i for it in self.iterations for i in it.image_ids],
            [it.json for it in self.iterations] if structured else None,
            item_images=[list(it.image_ids) for it in self.iterations],
        )

    async def _write(self, **values: Any) -> None:
        await self.runner._update_step(
            self.row.id, iterations=[it.dump() for it in self.iterations], **values
        )

    async def _resume(self) -> None:
        """Keep what a run cut short had finished: the iterations recorded as succeeded (an llm
        step's), and the images each iteration made (from the images table, the truth)."""
        done = {
            entry.get("index"): entry
            for entry in self.row.iterations or []
            if isinstance(entry, dict) and entry.get("status") == StepStatus.succeeded
        }
        if self.spec.kind is StepKind.llm:
            for it in self.iterations:
                entry = done.get(it.index)
                if entry is not None:
                    it.status = StepStatus.succeeded
                    it.prompt, it.text, it.json = (
                        entry.get("prompt"),
                        entry.get("text", ""),
                        (entry.get("json")),
                    )
            return
        async with self.runner.deps.sessions() as session:
            made = await runs_db.iteration_images(session, self.row.id)
        for it in self.iterations:
            it.image_ids = [str(i) for i in made.get(it.index, [])]
            entry = done.get(it.index) or {}
            it.text = entry.get("text") or ""
            if len(it.image_ids) >= self.spec.config.count:
                it.status = StepStatus.succeeded
                it.prompt = entry.get("prompt") or it.prompt

    async def _images_of_each(self) -> None:
        count = self.spec.config.count
        ledger = IterationImages(self.iterations, count)
        calls: list[ImageCall] = []
        for it in self.iterations:
            if it.status == StepStatus.succeeded:
                continue
            inputs, parents = self.references(it.index)
            calls += [
                ImageCall(
                    it.prompt or "",
                    index,
                    meta={"iteration": it.index, "item": it.item},
                    iteration=it.index,
                    inputs=inputs,
                    parents=parents,
                )
                for index in range(len(it.image_ids), count)
            ]
        await self.runner.make_images(self.spec, self.row, calls, *self.shared, self.tally, ledger)

    async def _ask_each(self) -> None:
        from cog.engine.runner import StepFailed

        # As many calls at a time as images may be made at a time.
        slots = asyncio.Semaphore(self.runner.deps.settings.image_concurrency)
        lock = asyncio.Lock()

        async def one(it: Iteration) -> None:
            try:
                async with slots:
                    output, model = await self.runner.ask(
                        self.spec, it.prompt or "", self.references(it.index)[0], self.tally
                    )
            except CogError as exc:
                it.status, it.error = StepStatus.failed, exc.message
                raise
            it.status, it.text, it.json = StepStatus.succeeded, output.text, output.json
            async with lock:
                await self._write(model=model)

        try:
            async with asyncio.TaskGroup() as group:
                for it in self.iterations:
                    if it.status != StepStatus.succeeded:
                        group.create_task(one(it))
        except* CogError as errors:
            first = errors.exceptions[0]
            assert isinstance(first, CogError)
            for exc in errors.exceptions:
                if isinstance(exc, ProviderError):
                    self.tally.add(list(exc.extra.get("attempts", ())))
            raise StepFailed(describe(self.iterations, first.message)) from first
