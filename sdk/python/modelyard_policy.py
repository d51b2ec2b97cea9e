"""modelyard's Python policy SDK (contract 0.2): the helpers every strategy needs, mirroring the
Rust SDK's (`sdk/rust/src/v0_2/helpers.rs`), so a policy states only its ranking.

The types come from the bindings componentize-py generates from the contract at build time
(`wit_world.imports.types`). Records name models, devices and tasks by index into the
catalogue `configure` hands over. These helpers follow the rules the host enforces: a decision
that breaks them is refused and the host's native default decides instead.
"""

from typing import Iterable, List, Optional

from wit_world.imports import types
from wit_world.imports.types import (
    Asked_Alias,
    Asked_Model,
    EvictionDecision_Drain,
    EvictionDecision_Evict,
    EvictionDecision_Reject,
    EvictionDecision_Wait,
    EvictionReason_Load,
    ModelState,
    Selection_Model,
    Selection_Reject,
)
from componentize_py_types import Err

__all__ = [
    "types", "is_evictable", "last_active_ms", "idle_ms", "load_ms", "incoming",
    "evict_until_fits", "named", "model_id", "keep_newest_that_fit", "evict", "drain", "wait",
    "reject", "select", "refuse",
]


def evict(indices: List[int]) -> types.EvictionDecision:
    return EvictionDecision_Evict(list(indices))


def drain(indices: List[int]) -> types.EvictionDecision:
    """Stop admitting requests to these busy models, evict them once idle (loads only)."""
    return EvictionDecision_Drain(list(indices))


def wait(after_ms: Optional[int] = None) -> types.EvictionDecision:
    """Ask again when a model goes idle or is unloaded, and also after `after_ms` if given."""
    return EvictionDecision_Wait(after_ms)


def reject(reason: str) -> types.EvictionDecision:
    return EvictionDecision_Reject(reason)


def select(index: int) -> types.Selection:
    return Selection_Model(index)


def refuse(reason: str) -> types.Selection:
    return Selection_Reject(reason)


def is_evictable(m: types.Model) -> bool:
    """Ready, idle and unpinned: the host accepts evicting it."""
    return not m.pinned and m.in_flight == 0 and m.state == ModelState.READY


def last_active_ms(m: types.Model) -> int:
    """When the model was last used, or loaded if never used."""
    return max(m.last_used_ms, m.loaded_at_ms)


def idle_ms(m: types.Model, now_ms: int) -> int:
    return max(0, now_ms - last_active_ms(m))


def load_ms(m: types.Model) -> float:
    """What a load of `m` costs: its mean so far, else 2 s plus its bytes at 2 GB/s."""
    return float(m.mean_load_ms) if m.mean_load_ms > 0 else 2000.0 + m.size_bytes / 2e6


def incoming(req: types.EvictionRequest) -> Optional[types.Model]:
    """The model being loaded, when the eviction is for a load."""
    return req.reason.value if isinstance(req.reason, EvictionReason_Load) else None


def evict_until_fits(req: types.EvictionRequest, ranked: Iterable[types.Model]) -> types.EvictionDecision:
    """Evicts from `ranked`, in order, just enough to free `req.needed_bytes`; skips models the
    host would refuse; `wait` while a busy model may still go idle, `reject` when nothing can."""
    chosen: List[int] = []
    freed = 0
    may_free_later = False
    for m in ranked:
        if freed >= req.needed_bytes:
            break
        if is_evictable(m):
            if m.index not in chosen:
                freed += m.size_bytes
                chosen.append(m.index)
        elif not m.pinned and m.state in (ModelState.READY, ModelState.LOADING):
            may_free_later = True
    if freed >= req.needed_bytes:
        return evict(chosen)
    if may_free_later:
        return wait()
    return reject(
        f"{req.needed_bytes} bytes must be freed, "
        f"but the models this policy may evict hold only {freed}"
    )


def named(asked: types.Asked) -> Optional[int]:
    """The model a request names by id or alias, if any."""
    if isinstance(asked, (Asked_Model, Asked_Alias)):
        return asked.value
    return None


def model_id(catalogue: Optional[types.Catalogue], index: int) -> str:
    """The id of model `index`, or `?` when the catalogue has no such model."""
    if catalogue is None or not 0 <= index < len(catalogue.models):
        return "?"
    return catalogue.models[index].id


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
