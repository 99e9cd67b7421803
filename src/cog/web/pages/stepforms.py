"""The job editor's form: steps as typed, to and from what the jobs service takes, and the
service's problems sorted to the step and field they concern.

The form is the editor's only state: adding, removing and moving steps re-render it from what
was posted, and nothing is saved until the person saves (or runs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.datastructures import FormData

from cog.domain import StepKind

# Fields of a step card, in the order they appear.
FIELDS = (
    "kind",
    "prompt",
    "model",
    "count",
    "aspect_ratio",
    "image_size",
    "temperature",
    "schema",
    "input_images",
    "when",
    "for_each",
)
MAX_FORM_STEPS = 50  # the form is parsed before the service counts; a bound on the parsing
_STEP_KEY = re.compile(r"^steps-(\d{1,2})-kind$")
_STEP_PROBLEM = re.compile(r"^step (\d+): (.*)$", re.DOTALL)
_NAMED = re.compile(r"`(?:config\.)?(\w+)")


@dataclass
class StepDraft:
    """One step as the editor holds it: the values as typed, strings throughout."""

    kind: str = StepKind.image.value
    prompt: str = ""
    model: str = ""
    count: str = "1"
    aspect_ratio: str = ""
    image_size: str = ""
    temperature: str = ""
    input_images: list[str] = field(default_factory=list)
    when: str = ""
    for_each: str = ""
    schema: str = ""  # JSON text, as typed

    @classmethod
    def of_saved(
        cls,
        kind: str,
        prompt: str,
        model: str | None,
        config: Mapping[str, Any],
        when: str | None = None,
        for_each: str | None = None,
    ) -> StepDraft:
        temperature = config.get("temperature")
        schema = config.get("schema")
        return cls(
            when=when or "",
            for_each=for_each or "",
            schema="" if schema is None else json.dumps(schema, indent=2, ensure_ascii=False),
            kind=kind,
            prompt=prompt,
            model=model or "",
            count=str(config.get("count", 1)),
            aspect_ratio=config.get("aspect_ratio") or "",
            image_size=config.get("image_size") or "",
            temperature="" if temperature is None else str(temperature),
            input_images=[str(ref) for ref in config.get("input_images", [])],
        )

    def to_raw(self) -> dict[str, Any]:
        """The step as the jobs service takes it. Fields the card hides for this kind are left
        out (a count typed before switching to an llm step is not an error the person can see);
        numbers stay text and the service's own validation reads or refuses them."""
        config: dict[str, Any] = {}
        if self.kind == StepKind.image:
            if self.count.strip():
                config["count"] = self.count.strip()
            if self.aspect_ratio:
                config["aspect_ratio"] = self.aspect_ratio
            if self.image_size:
                config["image_size"] = self.image_size
        else:
            if self.temperature.strip():
                config["temperature"] = self.temperature.strip()
            if self.schema.strip():  # JSON text: the service reads it, or says why it cannot
                config["schema"] = self.schema
        if self.input_images:
            config["input_images"] = list(self.input_images)
        step: dict[str, Any] = {
            "kind": self.kind,
            "prompt": self.prompt,
            "model": self.model.strip() or None,
            "config": config,
        }
        # Left empty, a condition or a loop is not there at all.
        if self.when.strip():
            step["when"] = self.when.strip()
        if self.for_each.strip():
            step["for_each"] = self.for_each.strip()
        return step


@dataclass(frozen=True)
class StepChoice:
    """An earlier step's images a step card offers as input images."""

    ref: str
    label: str


def step_choices(steps: Sequence[StepDraft], position: int) -> list[StepChoice]:
    """The earlier image steps whose images the step at `position` can take: all of them, and,
    when both steps go over a list, each item's own."""
    looped = bool(steps[position].for_each.strip())
    choices: list[StepChoice] = []
    for j, earlier in enumerate(steps[:position]):
        if earlier.kind != StepKind.image:
            continue
        choices.append(StepChoice(f"step:{j}", f"Images of step {j + 1}"))
        if looped and earlier.for_each.strip():
            choices.append(StepChoice(f"step:{j}:item", f"This item's images of step {j + 1}"))
    return choices


def text(value: str) -> str:
    """Browsers send text areas with CRLF line ends; prompts keep plain newlines."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


def steps_from_form(form: FormData) -> list[StepDraft]:
    """The steps of a posted editor form, in their form order."""
    positions = sorted({int(m.group(1)) for key in form if (m := _STEP_KEY.match(key))})[
        :MAX_FORM_STEPS
    ]

    def one(key: str) -> str:
        value = form.get(key)
        return value if isinstance(value, str) else ""

    drafts = []
    for i in positions:
        prefix = f"steps-{i}-"
        refs = form.getlist(prefix + "input_images")
        drafts.append(
            StepDraft(
                kind=one(prefix + "kind"),
                prompt=text(one(prefix + "prompt")),
                model=one(prefix + "model"),
                count=one(prefix + "count"),
                aspect_ratio=one(prefix + "aspect_ratio"),
                image_size=one(prefix + "image_size"),
                temperature=one(prefix + "temperature"),
                input_images=list(dict.fromkeys(r for r in refs if isinstance(r, str) and r)),
                when=text(one(prefix + "when")),
                for_each=text(one(prefix + "for_each")),
                schema=text(one(prefix + "schema")),
            )
        )
    return drafts


def apply_action(steps: list[StepDraft], action: str) -> tuple[list[StepDraft], int | None]:
    """Add, remove, duplicate or move a step. Answers the new list and the position of the step
    the person acted on (to focus it), or None."""
    verb, _, arg = action.partition(":")
    steps = list(steps)
    if verb == "add":
        kind = StepKind.llm.value if arg == StepKind.llm else StepKind.image.value
        if len(steps) < MAX_FORM_STEPS:
            steps.append(StepDraft(kind=kind))
        return steps, len(steps) - 1
    if not arg.isdigit() or not 0 <= int(arg) < len(steps):
        return steps, None
    i = int(arg)
    if verb == "remove":
        del steps[i]
        return steps, min(i, len(steps) - 1) if steps else None
    if verb == "duplicate" and len(steps) < MAX_FORM_STEPS:
        steps.insert(i + 1, replace(steps[i], input_images=list(steps[i].input_images)))
        return steps, i + 1
    if verb == "up" and i > 0:
        steps[i - 1], steps[i] = steps[i], steps[i - 1]
        return steps, i - 1
    if verb == "down" and i < len(steps) - 1:
        steps[i + 1], steps[i] = steps[i], steps[i + 1]
        return steps, i + 1
    return steps, i


@dataclass
class Problems:
    """The service's problems, each at the step and field it concerns where it names one."""

    general: list[str] = field(default_factory=list)
    steps: dict[int, dict[str, list[str]]] = field(default_factory=dict)

    def at(self, position: int, name: str) -> list[str]:
        return self.steps.get(position, {}).get(name, [])

    def of_step(self, position: int) -> int:
        return sum(len(v) for v in self.steps.get(position, {}).values())

    @property
    def count(self) -> int:
        return len(self.general) + sum(self.of_step(p) for p in self.steps)


def field_of(message: str) -> str:
    """Which field of a step card a problem (as `validate_steps` words it) concerns; "step"
    when it names none."""
    for key in ("when", "for_each"):
        if message.startswith(f"`{key}`"):
            return key
    if message.startswith(("`config.schema`", "`schema`")):
        return "schema"
    if "input image" in message or "'step:" in message:
        return "input_images"
    if message.startswith("the prompt") or "`previous`" in message or "`steps[" in message:
        return "prompt"
    if message.startswith("unknown kind"):
        return "kind"
    named = _NAMED.search(message)
    if named and named.group(1) in FIELDS and not message.startswith("unknown key"):
        return named.group(1)
    return "step"


# The config fields' problems are shown together under their row, so each says which it is.
LABELS = {
    "model": "Model",
    "count": "Images",
    "aspect_ratio": "Aspect ratio",
    "image_size": "Size",
    "temperature": "Temperature",
    "schema": "Schema",
}


def _plain(name: str, message: str) -> str:
    """The service's wording, with the field named the way the card names it."""
    bare = re.sub(rf"^`(?:config\.)?{name}`: ", "", message)
    if name == "prompt" and "at least 1 character" in bare:
        return "Write a prompt for this step."
    if name in LABELS and bare != message:
        return f"{LABELS[name]}: {bare[:1].lower()}{bare[1:]}"
    return bare[:1].upper() + bare[1:]


def sort_problems(problems: Sequence[str]) -> Problems:
    sorted_ = Problems()
    for problem in problems:
        found = _STEP_PROBLEM.match(problem)
        if found is None:
            sorted_.general.append(problem)
            continue
        position, message = int(found.group(1)), found.group(2)
        name = field_of(message)
        sorted_.steps.setdefault(position, {}).setdefault(name, []).append(_plain(name, message))
    return sorted_
