"""A modelyard policy in Python (contract 0.2): LRU eviction, task-based model selection, and
compression that keeps the system prompt, the newest user turn and the newest turns that fit.

It makes the same decisions as the Rust built-ins `lru` (eviction, compression) and
`specialization` (selection). Change the rankings; the helpers keep them within the host's rules.
The host keeps one instance of the component across calls, so module state lives from one call
to the next (a trap, a deadline or a reload starts a fresh one, configured again).
"""

from typing import List, Optional

from wit_world import exports
from modelyard_policy import (
    types, evict_until_fits, keep_newest_that_fit, last_active_ms, named, select, refuse,
)
from wit_world.imports.types import (
    Asked_Unknown, Interests, ModelState, SelectionInterest, Task_Other, Task_Tag,
)

# How well a model's tags fit a task: an exact tag, a `general` model, anything else.
EXACT_TAG, GENERAL_TAG, OTHER = 1.0, 0.7, 0.3
CODE_WORDS = ["```", "code", "function", "compile", "bug", "stack trace", "python", "rust",
              "javascript", "typescript", "def ", "fn ", "regex", "sql"]
SUMMARY_WORDS = ["summarize", "summarise", "summary", "tl;dr", "tldr"]

# What the catalogue says: each model's tags (task indices) and every task's name.
TAGS: List[List[int]] = []
TASKS: List[str] = []


def task_index(name: str) -> Optional[int]:
    return TASKS.index(name) if name in TASKS else None


def has(m: types.Model, task: Optional[int]) -> bool:
    return task is not None and m.index < len(TAGS) and task in TAGS[m.index]


def task_score(m: types.Model, task: Optional[int]) -> float:
    if has(m, task):
        return EXACT_TAG
    if has(m, task_index("general")):
        return GENERAL_TAG
    return OTHER


def infer_task(text: str) -> str:
    text = text.lower()
    if any(k in text for k in SUMMARY_WORDS):
        return "summarize"
    if any(k in text for k in CODE_WORDS):
        return "code"
    return "chat"


class Lifecycle(exports.Lifecycle):
    def configure(self, catalogue: types.Catalogue) -> types.Interests:
        TAGS[:] = [list(m.tags) for m in catalogue.models]
        TASKS[:] = list(catalogue.tasks)
        # Asked only about `auto` requests (the host routes ids and aliases), with their text.
        return Interests(selection=SelectionInterest.AUTO, text=True)


class Eviction(exports.Eviction):
    def choose_eviction(self, req: types.EvictionRequest) -> types.EvictionDecision:
        ranked = sorted(req.loaded, key=lambda m: (last_active_ms(m), m.index))
        return evict_until_fits(req, ranked)


class Selection(exports.Selection):
    def select_model(self, req: types.Request, candidates: List[types.Model],
                     telemetry: types.Telemetry) -> types.Selection:
        index = named(req.asked)
        if index is not None:
            return select(index)
        if isinstance(req.asked, Asked_Unknown):
            return refuse(f'no model is named "{req.asked.value}"')
        if isinstance(req.task, Task_Tag):
            task = req.task.value
        elif isinstance(req.task, Task_Other):
            task = None
        else:
            task = task_index(infer_task(req.text or ""))
        if not candidates:
            return refuse("no model is configured")
        # Highest score; then a ready model; then higher priority; then the smaller index.
        best = max(candidates, key=lambda m: (task_score(m, task), m.state == ModelState.READY,
                                              m.priority, -m.index))
        return select(best.index)


class Compression(exports.Compression):
    def compress_context(self, req: types.CompressionRequest) -> List[types.Message]:
        return keep_newest_that_fit(req)
