"""A modelyard policy in Python: LRU eviction, task-based model selection, and compression
that keeps the system prompt, the newest user turn and the newest turns that fit.

It makes the same decisions as the Rust built-ins `lru` (eviction, compression) and
`specialization` (selection). Change the rankings; the helpers keep them within the host's rules.
"""

from typing import List

from wit_world import exports
from modelyard_policy import (
    types, evict_until_fits, keep_newest_that_fit, last_active_ms, named_model, select, refuse,
)
from wit_world.imports.types import ModelState

# How well a model's tags fit a task: an exact tag, a `general` model, anything else.
EXACT_TAG, GENERAL_TAG, OTHER = 1.0, 0.7, 0.3
CODE_WORDS = ["```", "code", "function", "compile", "bug", "stack trace", "python", "rust",
              "javascript", "typescript", "def ", "fn ", "regex", "sql"]
SUMMARY_WORDS = ["summarize", "summarise", "summary", "tl;dr", "tldr"]


def task_score(m: types.Model, task: str) -> float:
    if task in m.tags:
        return EXACT_TAG
    if "general" in m.tags:
        return GENERAL_TAG
    return OTHER


def infer_task(text: str) -> str:
    text = text.lower()
    if any(k in text for k in SUMMARY_WORDS):
        return "summarize"
    if any(k in text for k in CODE_WORDS):
        return "code"
    return "chat"


class Eviction(exports.Eviction):
    def choose_eviction(self, req: types.EvictionRequest) -> types.EvictionDecision:
        ranked = sorted(req.loaded, key=lambda m: (last_active_ms(m), m.id))
        return evict_until_fits(req, ranked)


class Selection(exports.Selection):
    def select_model(self, req: types.Request, candidates: List[types.Model],
                     telemetry: types.Telemetry) -> types.Selection:
        named = named_model(req, candidates)
        if named is not None:
            return select(named.id)
        if req.model != "auto":
            return refuse(f'no model is named "{req.model}"')
        task = req.task if req.task is not None else infer_task(req.last_user_message)
        if not candidates:
            return refuse("no model is configured")
        # Highest score; then a ready model; then higher priority; then the smaller id.
        best = max(candidates, key=lambda m: (task_score(m, task), m.state == ModelState.READY,
                                              m.priority, _reverse(m.id)))
        return select(best.id)


def _reverse(s: str):
    """Sorts descending inside max(): the smallest id wins a full tie."""
    return [-ord(c) for c in s] + [0]


class Compression(exports.Compression):
    def compress_context(self, req: types.CompressionRequest) -> List[types.Message]:
        return keep_newest_that_fit(req)
