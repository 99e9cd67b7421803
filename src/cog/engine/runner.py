"""Executes one run: its steps in order, each step's images concurrently.

The runner is the one place that moves a run and its steps between statuses. Everything a
finished step made is committed before the next step starts, so a failure, a cancel or a crash
later on keeps it; a resumed run skips finished steps and, for an image step cut short, makes
only the images still missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings
from cog.db import batches as batches_db
from cog.db import lineage as lineage_db
from cog.db import runs as runs_db
from cog.db import series as series_db
from cog.db.base import utcnow
from cog.db.lineage import Parent
from cog.db.models import Image, JobRun, StepRun
from cog.db.session import SessionMaker
from cog.domain import MAX_REFERENCE_IMAGES, RunStatus, StepKind, StepStatus
from cog.engine import branching, fanout
from cog.engine.context import StyleSnapshot, series_context, with_style_marker
from cog.engine.imagecalls import ImageCall, StepImages
from cog.engine.prompts import InputContext, StepOutput, render, template_context
from cog.engine.steps import INPUT_REF, ITEM_REF, STEP_REF, StepSpec, item_refs, step_refs
from cog.errors import CogError, ProviderError
from cog.providers.base import (
    Attempt,
    ImageProvider,
    ImageResult,
    InputImage,
    TextProvider,
    Usage,
)
from cog.services import images as images_service
from cog.services.image_commits import ImageCommits, NewImage
from cog.storage import ObjectStore, StoredObjectMissing

log = logging.getLogger(__name__)


@dataclass
class RunnerDeps:
    sessions: SessionMaker
    store: ObjectStore
    settings: Settings
    text: TextProvider
    image: ImageProvider
    notify: Callable[[uuid.UUID], None]
    # Shared by every run in the process: bounds concurrent image calls as a whole.
    image_slots: asyncio.Semaphore


class RunTakenOver(Exception):
    """The run is no longer held by the executor running it here: its heartbeat lapsed (a
    stalled process, a database that would not take a write) and it went back to the queue, to
    be resumed by whoever claims it. What this runner was about to write is dropped."""


def taken_over(exc: BaseException) -> bool:
    """Whether `exc` is, or holds (from the tasks of a step), a `RunTakenOver`."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(RunTakenOver) is not None
    return isinstance(exc, RunTakenOver)


class PreviousStepFailed(Exception):
    """Raised in a step started while the step before it was still keeping its images, when
    that one failed: the run fails with that step's error, and this one never counts as
    started (nothing of it is kept or written)."""


def previous_failed(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(PreviousStepFailed) is not None
    return isinstance(exc, PreviousStepFailed)


class StepFailed(Exception):
    def __init__(self, message: str, attempts: list[Attempt] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts or []


@dataclass
class _Tally:
    """Attempts and token usage of the calls one step made."""

    attempts: list[Attempt] = dataclasses.field(default_factory=list)
    usage: Usage = dataclasses.field(default_factory=lambda: Usage(0, 0, 0))

    def add(
        self, attempts: tuple[Attempt, ...] | list[Attempt], usage: Usage | None = None
    ) -> None:
        self.attempts.extend(attempts)
        if usage is not None:
            self.usage = Usage(
                self.usage.prompt_tokens + usage.prompt_tokens,
                self.usage.output_tokens + usage.output_tokens,
                self.usage.total_tokens + usage.total_tokens,
            )

    @classmethod
    def of(cls, row: StepRun) -> _Tally:
        """What the step run has recorded: nothing for a new one; for one resumed, the attempts
        and usage of the calls it made before (their images are kept, so their cost is too)."""
        used = row.usage or {}
        return cls(
            attempts=[
                Attempt(
                    number=int(a["number"]),
                    started_at=dt.datetime.fromisoformat(a["started_at"]),
                    duration_ms=float(a["duration_ms"]),
                    error=a.get("error"),
                    status_code=a.get("status_code"),
                )
                for a in row.attempt_log or []
            ],
            usage=Usage(
                int(used.get("prompt_tokens", 0)),
                int(used.get("output_tokens", 0)),
                int(used.get("total_tokens", 0)),
            ),
        )

    def columns(self) -> dict[str, Any]:
        """The step run's columns that record them."""
        return {
            "attempts": len(self.attempts),
            "attempt_log": self.log(),
            "usage": dataclasses.asdict(self.usage),
        }

    def log(self) -> list[dict[str, Any]]:
        return [
            {
                "number": a.number,
                "started_at": a.started_at.isoformat(),
                "duration_ms": round(a.duration_ms, 1),
                "error": a.error,
                "status_code": a.status_code,
            }
            for a in self.attempts
        ]


class Runner:
    """Executes the run `run_id`. With a `claim` (the name it was claimed under, at
    `claimed_at` on the loop's clock when known), every write first checks in the same
    transaction that the run is still held under it, and raises `RunTakenOver` if not: a
    runner that lost its run never writes over the one resuming it."""

    def __init__(
        self,
        deps: RunnerDeps,
        run_id: uuid.UUID,
        claim: str | None = None,
        claimed_at: float | None = None,
    ) -> None:
        self.deps = deps
        self.run_id = run_id
        self.claim = claim
        # When the database last took a write of the run (the event loop's clock): the claim
        # that handed it here is one.
        self._written_at: float | None = claimed_at

    # --- writes -------------------------------------------------------------------------------

    async def _hold(self, session: AsyncSession) -> None:
        if self.claim is not None and not await runs_db.hold(session, self.run_id, self.claim):
            raise RunTakenOver(f"run {self.run_id} is no longer held by {self.claim}")

    async def _update_step(self, step_id: uuid.UUID, **values: Any) -> None:
        async with self.deps.sessions() as session:
            await self._hold(session)
            await runs_db.update_step(session, step_id, values)
            await session.commit()
        self._written()
        self.deps.notify(self.run_id)

    def _written(self) -> None:
        self._written_at = asyncio.get_running_loop().time()

    def _written_lately(self) -> bool:
        """Whether a write of the run (which renews its claim) committed moments ago: far less
        than the time after which a run is taken over, so it is all but surely still held."""
        if self._written_at is None:
            return False
        lately = self.deps.settings.run_stale_after_s / 4
        return asyncio.get_running_loop().time() - self._written_at < lately

    async def _end_run(self, session: AsyncSession) -> None:
        """In the last step's closing transaction: the run has succeeded."""
        end = RunEnd(RunStatus.succeeded, claim=self.claim, batch_id=None)
        await end.write(session, self.run_id)

    async def _finish_run(self, status: RunStatus, error: str | None = None) -> None:
        end = RunEnd(status, error, claim=self.claim, batch_id=self.batch_id)
        await finish_run(self.deps, self.run_id, end)

    # --- the run ------------------------------------------------------------------------------

    async def execute(self) -> RunStatus:
        async with self.deps.sessions() as session:
            found = await runs_db.with_job(session, self.run_id)
            if found is None:  # runs are deleted with their job
                return RunStatus.cancelled
            run, job = found
            chain = await series_db.chain(session, job.series_id)
            step_rows = await runs_db.step_runs(session, self.run_id)
            inputs = await batches_db.images_with_series(
                session, [run.input_image_id] if run.input_image_id else []
            )
        self.series = series_context(chain)
        self.job_id = job.id
        self.series_id = job.series_id
        self.base_prompt = run.base_prompt
        self.style = StyleSnapshot.of(run.style)
        self.input_image_id = run.input_image_id
        self.batch_id = run.batch_id
        self.ending: _Handoff | None = None
        self.input: InputContext | None = None
        if run.batch_id is not None:
            if run.input_image_id not in inputs:
                await self._finish_run(
                    RunStatus.failed, "The image this run of the batch was for has been deleted."
                )
                return RunStatus.failed
            image, series_title = inputs[run.input_image_id]
            self.input = InputContext(
                id=str(image.id),
                prompt=image.prompt or "",
                tags=list(image.tags),
                filename=image.original_filename or "",
                width=image.width,
                height=image.height,
                series=series_title,
            )
        specs = [StepSpec.model_validate(s) for s in run.steps_snapshot]
        self.deps.notify(self.run_id)
        steps = _Steps()
        try:
            failed = await self._run_steps(specs, step_rows, steps)
        finally:
            await steps.stop()
        if failed is not None:
            row, exc = failed
            await self._finish_run(RunStatus.failed, f"Step {row.position} failed: {exc.message}")
            return RunStatus.failed
        if self.ending is not None and self.ending.was_written:
            self.deps.notify(self.run_id)
        else:
            await self._finish_run(RunStatus.succeeded)
        return RunStatus.succeeded

    async def _run_steps(
        self, specs: list[StepSpec], rows: list[StepRun], steps: _Steps
    ) -> tuple[StepRun, StepFailed] | None:
        """Run the steps in order; answers the step that failed, with why (None when none did).

        An image step whose calls are all back, followed by an image step that reads nothing of
        the steps before it, lets that one start at once: its calls go out while the first
        keeps its images. Its own writes wait for the first to end, and if the first fails,
        its calls are stopped and nothing of it is kept. Any other step starts once the steps
        before it have ended."""
        done = (StepStatus.succeeded, StepStatus.skipped)
        for index, (spec, row) in enumerate(zip(specs, rows, strict=True)):
            if row.status in done:  # resumed: done before
                steps.outputs.append(fanout.output_of(row))
                continue
            after, handoff = steps.last()
            if after is not None and not _may_start_early(spec):
                if (failed := await steps.settle()) is not None:
                    return failed
                after = handoff = None
            following = specs[index + 1] if index + 1 < len(specs) else None
            early_next = (
                following is not None
                and rows[index + 1].status not in done
                and _plain_image(spec)
                and _may_start_early(following)
            )
            # A future, not an event: this loop wakes the moment it is set, a turn sooner.
            calls_back = asyncio.get_running_loop().create_future() if early_next else None
            hand_to = _Handoff() if early_next else None
            if following is None and _plain_image(spec) and self.batch_id is None:
                # The run ends in the last step's closing transaction (a run of a batch settles
                # its batch too: that one ends on its own).
                hand_to = self.ending = _Handoff()
                hand_to.offer(self._end_run)
            task = asyncio.create_task(
                self._handing_over(
                    hand_to,
                    self._run_step(
                        spec,
                        row,
                        list(steps.outputs),
                        after=after,
                        handoff=handoff,
                        calls_back=calls_back,
                        hand_to=hand_to,
                    ),
                )
            )
            steps.add(row, task, hand_to)
            waits: list[asyncio.Future[Any]] = [task]
            if calls_back is not None:
                waits.append(calls_back)
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if calls_back is not None:
                    calls_back.cancel()  # no one waits for it any more
            # Once this step's calls are back, the steps before it end before the next starts:
            # one step keeps its images while the next one's calls are out, no more.
            ended = task.done() or not early_next
            if (failed := await steps.settle(but_last=not ended)) is not None:
                return failed
        return await steps.settle()

    @staticmethod
    async def _handing_over(
        hand_to: _Handoff | None, step: Coroutine[Any, Any, StepOutput]
    ) -> StepOutput:
        """Run `step`; then answer the step after it, which offered its running write to this
        one (`hand_to`), whether this one's closing transaction wrote it."""
        if hand_to is None:
            return await step
        try:
            output = await step
        except BaseException:
            hand_to.close(written=False)
            raise
        hand_to.close(written=True)
        return output

    async def _run_step(
        self,
        spec: StepSpec,
        row: StepRun,
        outputs: list[StepOutput],
        *,
        after: asyncio.Task[StepOutput] | None = None,
        handoff: _Handoff | None = None,
        calls_back: asyncio.Future[None] | None = None,
        hand_to: _Handoff | None = None,
    ) -> StepOutput:
        """Run one step. With `after` (the step before, still keeping its images), every write
        of this one waits for that one to end; the write marking this one running is offered
        to that one (`handoff`), to go in its closing transaction. `calls_back` is set once the
        step's model calls have all come back; `hand_to` takes the next step's offer."""
        started = row.started_at or utcnow()
        tally = _Tally.of(row)
        marking: asyncio.Task[None] | None = None

        async def previous_ended() -> None:
            if after is not None:
                await settled(after)

        try:
            # A condition, a loop and what the step needs are decided before anything is sent.
            context = self.context(outputs)
            skipped = branching.skip_reason(
                spec, row.position, step_refs(spec.config), outputs, context
            )
            items = None
            if skipped is None and spec.for_each is not None:
                items = branching.loop_items(spec.for_each, context)
                if not items:
                    skipped = f"Its loop had nothing to go over: {spec.for_each} is empty."
            if skipped is not None:
                await previous_ended()
                await self._update_step(
                    row.id, status=StepStatus.skipped, skip_reason=skipped, finished_at=utcnow()
                )
                return StepOutput(skipped=True)
            if items is not None:
                output = await fanout.FanOut(self, spec, row, items, outputs, tally).run(started)
                return await self._succeeded(row, output, tally)
            # Rendering does no I/O, so the step is marked running together with its prompt:
            # one write, not two. A prompt that cannot be rendered fails the step at once.
            prompt = render(
                spec.prompt,
                base_prompt=self.base_prompt,
                series=self.series,
                steps=outputs,
                input_image=self.input,
                style=self.style.context() if self.style is not None else None,
            )
            if not prompt:
                raise StepFailed("The prompt rendered to nothing; the model needs some text.")
            prompt = self.styled(spec, prompt)

            async def mark_running() -> None:
                running = {
                    "status": StepStatus.running,
                    "started_at": started,
                    "error": None,
                    "rendered_prompt": prompt,
                }
                write = functools.partial(runs_db.update_step, step_id=row.id, values=running)
                if handoff is not None and handoff.offer(write) and await handoff.written():
                    self._written()  # with the step before, which has ended
                    self.deps.notify(self.run_id)
                    return
                await previous_ended()
                await self._update_step(row.id, **running)

            if self._written_lately():
                # The step is marked running while its inputs are read and its image calls
                # go out. Every later write of the step waits for that one; should it fail
                # (the run was taken over after all, or the step before failed), the calls
                # are stopped and nothing is kept.
                marking = asyncio.create_task(mark_running())
            else:  # long after the claim or the last write: no call before the hold is checked
                await mark_running()
            inputs, parents = await self._input_images(spec, outputs)
            written = False
            if spec.kind is StepKind.llm:
                if marking is not None:
                    await marking
                output = await self._llm(spec, row, prompt, inputs, tally)
            else:
                output, written = await self._images(
                    spec, row, prompt, inputs, parents, tally, marking, calls_back, hand_to
                )
            if marking is not None:
                await marking
        except (CogError, StepFailed) as exc:
            # The step before ends first, and the write marking this one running: their
            # errors, if they failed, are the ones that count.
            await (marking if marking is not None else previous_ended())
            if isinstance(exc, ProviderError):
                tally.add(list(exc.extra.get("attempts", ())))
            await self._update_step(
                row.id,
                status=StepStatus.failed,
                error=exc.message,
                started_at=started,
                finished_at=utcnow(),
                **tally.columns(),
            )
            if isinstance(exc, StepFailed):
                raise
            raise StepFailed(exc.message) from exc
        finally:
            if marking is not None:
                if not marking.done():  # the step was cancelled, or its run taken over
                    marking.cancel()
                    await asyncio.wait([marking])
                if not marking.cancelled():
                    marking.exception()  # seen: the error the step ends with is raised already
        return await self._succeeded(row, output, tally, written=written)

    async def _succeeded(
        self, row: StepRun, output: StepOutput, tally: _Tally, *, written: bool = False
    ) -> StepOutput:
        """Record the step's success, unless its last images' transaction did (`written`)."""
        if written:
            self.deps.notify(self.run_id)
        else:
            await self._update_step(row.id, **_success(output, tally))
        return output

    def styled(self, spec: StepSpec, prompt: str) -> str:
        """An image step's prompt, ending with the line that marks the style references."""
        if spec.kind is StepKind.image and self.style is not None:
            return with_style_marker(prompt, self.style, len(self.style.image_ids))
        return prompt

    def context(self, outputs: list[StepOutput]) -> dict[str, Any]:
        """What the step's prompt, condition and loop see."""
        return template_context(
            base_prompt=self.base_prompt,
            series=self.series,
            steps=outputs,
            input_image=self.input,
            style=self.style.context() if self.style is not None else None,
        )

    async def _input_images(
        self, spec: StepSpec, outputs: list[StepOutput], item: int | None = None
    ) -> tuple[list[InputImage], list[Parent]]:
        """The step's input images (for the `item`-th item of its loop, when given), with the
        versions they are (the lineage of what it makes)."""
        ids: list[uuid.UUID] = []
        roles: dict[uuid.UUID, str] = {}
        for ref in spec.config.input_images:
            if match := STEP_REF.match(ref):
                ids += [uuid.UUID(i) for i in outputs[int(match.group(1))].images]
            elif match := ITEM_REF.match(ref):
                ids += [uuid.UUID(i) for i in _item_images(outputs, int(match.group(1)), item)]
            elif ref == INPUT_REF:
                if self.input_image_id is None:
                    raise StepFailed(
                        "The step uses the input image, which only runs of a batch have."
                    )
                ids.append(self.input_image_id)
                roles.setdefault(self.input_image_id, "input")
            else:
                ids.append(uuid.UUID(ref))
        # The style source's images come last, after the step's own (its prompt says so).
        wanted = [(i, roles.get(i, "reference")) for i in ids]
        if spec.kind is StepKind.image and self.style is not None:
            wanted += [(uuid.UUID(i), "style") for i in self.style.image_ids]
        if len(wanted) > MAX_REFERENCE_IMAGES:
            raise StepFailed(
                f"The step would send {len(wanted)} reference images; the model takes at most "
                f"{MAX_REFERENCE_IMAGES}."
            )
        images: list[InputImage] = []
        parents: list[Parent] = []
        if not wanted:
            return images, parents
        async with self.deps.sessions() as session:
            rows = {
                image.id: image
                for image in (
                    await session.execute(
                        sa.select(Image).where(Image.id.in_([i for i, _ in wanted]))
                    )
                ).scalars()
            }
            versions = await lineage_db.current_versions(session, rows)
        for image_id, role in wanted:
            what = "style image" if role == "style" else "input image"
            image = rows.get(image_id)
            if image is None:
                raise StepFailed(f"{what.capitalize()} {image_id} no longer exists.")
            try:
                data = await self.deps.store.get(image.storage_path)
            except StoredObjectMissing:
                raise StepFailed(f"The file of {what} {image_id} is missing.") from None
            images.append(InputImage(data=data, mime_type=image.mime_type))
            parents.append(Parent(image.id, versions[image.id], role))
        return images, parents

    async def _llm(
        self, spec: StepSpec, row: StepRun, prompt: str, inputs: list[InputImage], tally: _Tally
    ) -> StepOutput:
        output, model = await self.ask(spec, prompt, inputs, tally)
        await self._update_step(row.id, model=model)
        return output

    async def ask(
        self, spec: StepSpec, prompt: str, inputs: list[InputImage], tally: _Tally
    ) -> tuple[StepOutput, str]:
        """One call of an llm step: its text, or its structured answer checked against the
        step's schema. Answers the output and the model that made it."""
        model = spec.model or self.deps.settings.text_model
        schema = spec.config.json_schema
        if schema is None:
            result = await self.deps.text.generate_text(
                prompt=prompt, images=inputs, model=model, temperature=spec.config.temperature
            )
            tally.add(result.attempts, result.usage)
            return StepOutput(result.text, []), result.model
        value, result = await self.deps.text.generate_structured(
            prompt=prompt,
            images=inputs,
            json_schema=schema,
            model=model,
            temperature=spec.config.temperature,
        )
        tally.add(result.attempts, result.usage)
        branching.check_answer(schema, value)
        return StepOutput(result.text, [], value), result.model

    async def _images(
        self,
        spec: StepSpec,
        row: StepRun,
        prompt: str,
        inputs: list[InputImage],
        parents: list[Parent],
        tally: _Tally,
        marking: asyncio.Task[None] | None,
        calls_back: asyncio.Future[None] | None = None,
        hand_to: _Handoff | None = None,
    ) -> tuple[StepOutput, bool]:
        """The step's output, and whether its success is recorded already: the transaction of
        its last image records it, one write fewer (not so when a resumed step had them all).
        The calls may go out while the step is being marked running (`marking`)."""
        made: list[uuid.UUID] = []
        if row.started_at is not None:  # resumed: keep what it made before, make the rest
            async with self.deps.sessions() as session:
                made = await runs_db.images_of_step(session, row.id)
        ledger = StepImages([str(i) for i in made])
        calls = [ImageCall(prompt, index) for index in range(len(made), spec.config.count)]

        def output(texts: list[str]) -> StepOutput:
            return StepOutput("\n\n".join(texts), ledger.image_ids())

        def finish(texts: list[str]) -> dict[str, Any] | None:
            if len(ledger.recorded) < spec.config.count:
                return None
            return _success(output(texts), tally)

        texts = await self.make_images(
            spec,
            row,
            calls,
            inputs,
            parents,
            tally,
            ledger,
            finish,
            marking=marking,
            calls_back=calls_back,
            hand_to=hand_to,
        )
        return output(texts), bool(calls)

    async def make_images(
        self,
        spec: StepSpec,
        row: StepRun,
        calls: list[ImageCall],
        inputs: list[InputImage],
        parents: list[Parent],
        tally: _Tally,
        ledger: StepImages,
        finish: Callable[[list[str]], dict[str, Any] | None] | None = None,
        *,
        marking: asyncio.Task[None] | None = None,
        calls_back: asyncio.Future[None] | None = None,
        hand_to: _Handoff | None = None,
    ) -> list[str]:
        """Make one image per call, all at once within the process's image slots, each kept
        and recorded (in `ledger`) as it arrives; answers what the model said with them.

        `finish` gives the step's closing columns once its images are all in (None before):
        written in the same transaction as the last of them. With `marking`, the write that
        marks the step running, still under way: no image is kept before it is done, and
        when it fails the calls are stopped. `calls_back` is set once every call has come
        back with its image. `hand_to` holds the next step's running write, for the closing
        transaction."""
        model = spec.model or self.deps.settings.image_model
        texts: list[str] = []
        waiting = len(calls)
        if calls_back is not None and not waiting:
            _set(calls_back)

        async def write_ledger(session: AsyncSession) -> None:
            # The attempts so far go with each image: a step cut short and resumed still
            # counts the calls that brought the images it keeps.
            values = ledger.values() | tally.columns()
            handed: Write | None = None
            if finish is not None and (closing := finish(texts)) is not None:
                values |= closing
                handed = hand_to.take() if hand_to is not None else None
            await self._hold(session)
            await runs_db.update_step(session, row.id, values)
            if handed is not None:
                await handed(session)

        commits = ImageCommits(self.deps.sessions, self.deps.store, then=write_ledger)

        async def one(call: ImageCall) -> None:
            try:
                async with self.deps.image_slots:
                    result = await self.deps.image.generate_image(
                        prompt=call.prompt,
                        references=inputs if call.inputs is None else call.inputs,
                        model=model,
                        aspect_ratio=spec.config.aspect_ratio,
                        image_size=spec.config.image_size,
                    )
                tally.add(result.attempts, result.usage)
                if result.text:
                    texts.append(result.text)
                    ledger.said(call, result.text)
                nonlocal waiting
                waiting -= 1
                if calls_back is not None and not waiting:
                    _set(calls_back)
                if marking is not None:
                    await marked(marking)
                lineage = parents if call.parents is None else call.parents
                await self._keep_image(row, spec, call, result, commits, ledger, lineage)
            except CogError as exc:
                ledger.failed(call, exc.message)
                raise

        if calls:
            try:
                async with asyncio.TaskGroup() as group:
                    if marking is not None:
                        group.create_task(marked(marking))  # its failure stops the calls
                    for call in calls:
                        group.create_task(one(call))
            except* ProviderError as errors:
                first = errors.exceptions[0]
                assert isinstance(first, ProviderError)
                for exc in errors.exceptions:
                    if isinstance(exc, ProviderError):
                        tally.add(list(exc.extra.get("attempts", ())))
                raise StepFailed(ledger.describe(first.message)) from first
            except* CogError as errors:
                first_error = errors.exceptions[0]
                assert isinstance(first_error, CogError)
                raise StepFailed(ledger.describe(first_error.message)) from first_error
        return texts

    async def _keep_image(
        self,
        row: StepRun,
        spec: StepSpec,
        call: ImageCall,
        result: ImageResult,
        commits: ImageCommits,
        ledger: StepImages,
        parents: list[Parent],
    ) -> None:
        """Store one image and record it on its step, with its lineage, in the same transaction.

        The images of a step are verified and written to the store concurrently, and their rows
        committed together as they become ready (`commits`), one transaction at a time. One
        executor holds a run, so the ledger (what is committed so far) is the truth and is
        written whole, without reading it back. It grows in the transaction; one that fails
        takes its id out again (and a resumed step starts from the images table, whatever the
        ledger said).
        """
        mine: list[str] = []

        async def record(session: Any, image: NewImage) -> None:
            mine.append(str(image["id"]))
            ledger.add(call, mine[0])  # the step's row is written once the transaction has all
            # A new image is its own version 1, whose id is the image's.
            await lineage_db.record(
                session, child_image_id=image["id"], child_version_id=image["id"], parents=parents
            )

        try:
            await images_service.store_generated(
                self.deps.store,
                self.deps.settings,
                commits,
                series_id=self.series_id,
                data=result.data,
                prompt=call.prompt,
                model=result.model,
                provider=result.provider,
                metadata={
                    "model_text": result.text,
                    "step_position": row.position,
                    "index": call.index,
                    "aspect_ratio": spec.config.aspect_ratio,
                    "image_size": spec.config.image_size,
                    "reference_count": len(spec.config.input_images),
                    **self._provenance(),
                    **call.meta,
                },
                job_id=self.job_id,
                run_id=self.run_id,
                step_id=row.id,
                before_commit=record,
            )
        except BaseException:
            if mine:
                ledger.remove(call, mine[0])
            raise
        self._written()
        self.deps.notify(self.run_id)

    def _provenance(self) -> dict[str, Any]:
        """What an image's metadata says it was made from besides its step: the image its run
        of a batch was for, and the style source it was made in."""
        found: dict[str, Any] = {}
        if self.input_image_id is not None:
            found["input_image_id"] = str(self.input_image_id)
        if self.style is not None:
            found["style"] = {
                "series_id": self.style.series_id,
                "title": self.style.title,
                "image_ids": list(self.style.image_ids),
            }
        return found


def _plain_image(spec: StepSpec) -> bool:
    """An image step without a loop: one whose calls all go out at once."""
    return spec.kind is StepKind.image and spec.for_each is None


def _may_start_early(spec: StepSpec) -> bool:
    """Whether a step may start while the one before it still keeps its images: a plain
    image step that reads nothing of the steps before it."""
    refs = step_refs(spec.config) + item_refs(spec.config)
    return _plain_image(spec) and branching.reads_no_step(spec, refs)


async def settled(step: asyncio.Task[StepOutput]) -> None:
    """Wait for a step still keeping its images to end, without cancelling it when cancelled;
    `PreviousStepFailed` if it failed."""
    try:
        await asyncio.shield(step)
    except StepFailed as exc:
        raise PreviousStepFailed(exc.message) from exc


class _Steps:
    """The outputs of a run's steps so far, and the steps still keeping their images (at most
    the last two: the one keeping them, and the one that started after it)."""

    def __init__(self) -> None:
        self.outputs: list[StepOutput] = []
        # Each step still running: its place in `outputs`, its row, its task, and what it
        # takes from the step after it.
        self._running: list[tuple[int, StepRun, asyncio.Task[StepOutput], _Handoff | None]] = []

    def add(self, row: StepRun, task: asyncio.Task[StepOutput], hand_to: _Handoff | None) -> None:
        self._running.append((len(self.outputs), row, task, hand_to))
        self.outputs.append(StepOutput())  # its place, until it ends (no step after reads it)

    def last(self) -> tuple[asyncio.Task[StepOutput] | None, _Handoff | None]:
        """The last step started, while it is still running, and what it takes from the next."""
        if not self._running:
            return None, None
        _, _, task, hand_to = self._running[-1]
        return task, hand_to

    async def settle(self, *, but_last: bool = False) -> tuple[StepRun, StepFailed] | None:
        """Wait for every step still running (`but_last`: but the last one); their outputs
        take their places. Answers the first that failed, with why; a step after it stopped
        for it is not a failure of its own. Any other error (the run taken over, the database
        gone) goes on."""
        failed: tuple[StepRun, StepFailed] | None = None
        cut = len(self._running) - 1 if but_last else len(self._running)
        running, self._running = self._running[:cut], self._running[cut:]
        try:
            for index, row, task, _ in running:
                try:
                    self.outputs[index] = await task
                except StepFailed as exc:
                    failed = failed or (row, exc)
                except Exception as exc:
                    if failed is None or not previous_failed(exc):
                        raise
        finally:
            self._running = [e for e in running if not e[2].done()] + self._running
        return failed

    async def stop(self) -> None:
        """Stop the steps still running (the run was cancelled, or failed otherwise)."""
        tasks = [task for _, _, task, _ in self._running]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # seen: the error the run ends with is raised already
        self._running = []


# A write that goes in another's transaction.
Write = Callable[[AsyncSession], Awaitable[None]]


class _Handoff:
    """A write handed to a step that keeps its images, to go in that step's closing
    transaction: the write marking the next step running (offered by that step, which started
    early), or the end of the run (after its last step). One transaction fewer, and the changes
    are seen together. An offer that came too late, or a step that did not close in a
    transaction of its images, leaves the write to its owner."""

    def __init__(self) -> None:
        self._write: Write | None = None
        self._open = True
        self._taken = False
        self._outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def offer(self, write: Write) -> bool:
        """Hand `write` over; False when the closing transaction has begun already."""
        if not self._open:
            return False
        self._write = write
        return True

    async def written(self) -> bool:
        """Once the step has ended: whether its closing transaction committed the write. A
        cancelled wait withdraws the write, unless its transaction has it already."""
        try:
            return await asyncio.shield(self._outcome)
        except asyncio.CancelledError:
            self._write = None
            raise

    @property
    def was_written(self) -> bool:
        return self._outcome.done() and self._outcome.result()

    def take(self) -> Write | None:
        """In the step's closing transaction: the write handed over, if any. No offer is taken
        after this."""
        self._open = False
        offered, self._write = self._write, None
        self._taken = offered is not None
        return offered

    def close(self, *, written: bool) -> None:
        """The step has ended; `written`: with its closing transaction committed."""
        self._open = False
        self._write = None
        if not self._outcome.done():
            self._outcome.set_result(written and self._taken)


def _set(future: asyncio.Future[None]) -> None:
    """Resolve `future` unless it is done (or given up) already."""
    if not future.done():
        future.set_result(None)


async def marked(marking: asyncio.Task[None]) -> None:
    """Wait for the write that marks a step running, without cancelling it when cancelled."""
    await asyncio.shield(marking)


def _item_images(outputs: list[StepOutput], step: int, item: int | None) -> list[str]:
    """The images step `step` (a step with a loop) made for the `item`-th item."""
    per_item = outputs[step].item_images
    if item is None or per_item is None:
        raise StepFailed(f"'step:{step}:item' needs a loop here and in step {step}.")
    if item >= len(per_item):
        raise StepFailed(
            f"Item {item} has no images of step {step}, which went over {len(per_item)} "
            f"item{'s' if len(per_item) != 1 else ''}."
        )
    return per_item[item]


def _success(output: StepOutput, tally: _Tally) -> dict[str, Any]:
    """The columns of a step run that succeeded."""
    return {
        "status": StepStatus.succeeded,
        "text": output.text,
        "json_output": output.json,
        "finished_at": utcnow(),
        **tally.columns(),
    }


class _LookUp:
    """A run's batch not known to the caller: the end of the run reads it."""


_LOOK_UP = _LookUp()


@dataclass(frozen=True)
class RunEnd:
    """How a run ends. Steps that never started are cancelled (on a cancel) or skipped. A run
    of a batch (`batch_id`, looked up unless given) settles its batch in the same transaction
    (it may have been the last one). With a `claim`, only while the run is held under it
    (else `RunTakenOver`, nothing written). A run that has ended already stays as it ended (a
    cancel may come just after its last write)."""

    status: RunStatus
    error: str | None = None
    claim: str | None = None
    batch_id: uuid.UUID | _LookUp | None = _LOOK_UP

    async def write(self, session: AsyncSession, run_id: uuid.UUID) -> None:
        """End the run in the caller's transaction, which commits."""
        batch_id = self.batch_id
        if isinstance(batch_id, _LookUp):
            batch_id = await runs_db.batch_of(session, run_id)
        if batch_id is not None:
            await batches_db.lock(session, batch_id)
        if self.claim is not None:
            held = [JobRun.claimed_by == self.claim, JobRun.status == RunStatus.running]
        else:  # a run that has ended stays as it ended
            held = [JobRun.status.in_([RunStatus.queued, RunStatus.running])]
        ending = sa.update(JobRun).where(JobRun.id == run_id, *held)
        ended = await session.execute(
            ending.values(
                status=self.status, error=self.error, finished_at=utcnow(), claimed_by=None
            )
        )
        if self.claim is not None and not ended.rowcount:  # type: ignore[attr-defined]
            raise RunTakenOver(f"run {run_id} is no longer held by {self.claim}")
        if self.status is not RunStatus.succeeded:  # a run succeeds once every step has ended
            cancelled = self.status is RunStatus.cancelled
            await session.execute(
                sa.update(StepRun)
                .where(
                    StepRun.run_id == run_id,
                    StepRun.status.in_([StepStatus.pending, StepStatus.running]),
                )
                .values(status=StepStatus.cancelled if cancelled else StepStatus.skipped)
            )
        if batch_id is not None:
            await batches_db.settle(session, batch_id)


async def finish_run(deps: RunnerDeps, run_id: uuid.UUID, end: RunEnd) -> None:
    """End a run, in a transaction of its own."""
    async with deps.sessions() as session:
        await end.write(session, run_id)
        await session.commit()
    deps.notify(run_id)


async def mark_cancelled(deps: RunnerDeps, run_id: uuid.UUID) -> None:
    """Record a cancel: the step in flight and those after it are cancelled; what finished stays."""
    await finish_run(deps, run_id, RunEnd(RunStatus.cancelled, "Cancelled by request."))
