"""modelyard's Python policy SDK: the helpers every strategy needs, mirroring the Rust SDK's
(`sdk/rust/src/helpers.rs`), so a policy states only its ranking.

The types come from the bindings componentize-py generates from the contract at build time
(`wit_world.imports.types`). These helpers follow the rules the host enforces: a decision that
breaks them is refused and the host's native default decides instead.
"""

from typing import Iterable, List, Optional

from wit_world.imports import types
from wit_world.imports.types import (
    EvictionDecision_Evict,
    EvictionDecision_Reject,
    EvictionDecision_Wait,
    ModelState,
    Selection_Model,
    Selection_Reject,
)
from componentize_py_types import Err

__all__ = [
    "types", "is_evictable", "bytes_freed", "last_active_ms", "idle_ms", "evict_until_fits",
    "named_model", "keep_newest_that_fit", "evict", "wait", "reject", "select", "refuse",
]


def evict(ids: List[str]) -> types.EvictionDecision:
    return EvictionDecision_Evict(list(ids))


def wait() -> types.EvictionDecision:
    return EvictionDecision_Wait()


def reject(reason: str) -> types.EvictionDecision:
    return EvictionDecision_Reject(reason)


def select(model_id: str) -> types.Selection:
    return Selection_Model(model_id)


def refuse(reason: str) -> types.Selection:
    return Selection_Reject(reason)


def is_evictable(m: types.Model) -> bool:
    """Ready, idle and unpinned: the host accepts evicting it."""
    return not m.pinned and m.in_flight == 0 and m.state == ModelState.READY


def bytes_freed(ids: Iterable[str], loaded: List[types.Model]) -> int:
    wanted = set(ids)
    return sum(m.size_bytes for m in loaded if m.id in wanted)


def last_active_ms(m: types.Model) -> int:
    """When the model was last used, or loaded if never used."""
    return max(m.last_used_ms, m.loaded_at_ms)


def idle_ms(m: types.Model, now_ms: int) -> int:
    return max(0, now_ms - last_active_ms(m))


def evict_until_fits(req: types.EvictionRequest, ranked: Iterable[types.Model]) -> types.EvictionDecision:
    """Evicts from `ranked`, in order, just enough to free `req.needed_bytes`; skips models the
    host would refuse; `wait` while a busy model may still go idle, `reject` when nothing can."""
    chosen: List[str] = []
    freed = 0
    may_free_later = False
    for m in ranked:
        if freed >= req.needed_bytes:
            break
        if is_evictable(m):
            if m.id not in chosen:
                freed += m.size_bytes
                chosen.append(m.id)
        elif not m.pinned and m.state in (ModelState.READY, ModelState.LOADING):
            may_free_later = True
    if freed >= req.needed_bytes:
        return evict(chosen)
    if may_free_later:
        return wait()
    return reject(
        f"{req.incoming.id} needs {req.needed_bytes} bytes freed on {req.device}, "
        f"but the models this policy may evict hold only {freed}"
    )


def named_model(req: types.Request, candidates: List[types.Model]) -> Optional[types.Model]:
    """The candidate the request names by id, else by alias."""
    for m in candidates:
        if m.id == req.model:
            return m
    for m in candidates:
        if req.model in m.aliases:
            return m
    return None


def keep_newest_that_fit(req: types.CompressionRequest) -> List[types.Message]:
    """Keeps the system messages and the newest user turn, then the newest other turns that
    fit the budget. Raises `Err` (the hook's error) when the kept ones alone do not fit."""
    messages = req.messages
    newest_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    keep = [m.role == "system" or i == newest_user for i, m in enumerate(messages)]
    used = sum(m.tokens for m, k in zip(messages, keep) if k)
    if used > req.budget_tokens:
        raise Err(
            f"the system prompt and the newest user turn need {used} tokens; "
            f"the budget is {req.budget_tokens}"
        )
    for i in range(len(messages) - 1, -1, -1):
        if keep[i]:
            continue
        if used + messages[i].tokens > req.budget_tokens:
            break
        used += messages[i].tokens
        keep[i] = True
    return [m for m, k in zip(messages, keep) if k]
