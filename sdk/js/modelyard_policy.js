// modelyard's JavaScript policy SDK (contract 0.2): the helpers every strategy needs, mirroring
// the Rust SDK's (`sdk/rust/src/v0_2/helpers.rs`), so a policy states only its ranking.
//
// Values follow componentize-js's mapping of the contract (`wit/deps/policy/policy.wit`):
// records are objects with camelCase fields, `u64` fields (bytes, milliseconds, counts) are
// BigInt, `u32` and `s32` are numbers, enums are their kebab-case names, variants are
// `{ tag, val }`, options are the value or `undefined`, and flags are objects of booleans.
// Records name models, devices and tasks by index into the catalogue `configure` receives.
// These helpers follow the rules the host enforces: a decision that breaks them is refused and
// the host's native default decides instead.

/** @typedef {import('modelyard:policy/types@0.2.0').Model} Model */
/** @typedef {import('modelyard:policy/types@0.2.0').Catalogue} Catalogue */
/** @typedef {import('modelyard:policy/types@0.2.0').EvictionRequest} EvictionRequest */
/** @typedef {import('modelyard:policy/types@0.2.0').EvictionDecision} EvictionDecision */
/** @typedef {import('modelyard:policy/types@0.2.0').Selection} Selection */
/** @typedef {import('modelyard:policy/types@0.2.0').Asked} Asked */
/** @typedef {import('modelyard:policy/types@0.2.0').CompressionRequest} CompressionRequest */
/** @typedef {import('modelyard:policy/types@0.2.0').Message} Message */

/** @param {Iterable<number>} indices @returns {EvictionDecision} */
export const evict = (indices) => ({ tag: 'evict', val: Uint32Array.from(indices) });
/** Stop admitting requests to these busy models, evict them once idle (loads only).
 * @param {Iterable<number>} indices @returns {EvictionDecision} */
export const drain = (indices) => ({ tag: 'drain', val: Uint32Array.from(indices) });
/** Ask again when a model goes idle or is unloaded, and also after `afterMs` if given.
 * @param {number} [afterMs] @returns {EvictionDecision} */
export const wait = (afterMs) => ({ tag: 'wait', val: afterMs });
/** @param {string} reason @returns {EvictionDecision} */
export const reject = (reason) => ({ tag: 'reject', val: reason });
/** @param {number} index @returns {Selection} */
export const select = (index) => ({ tag: 'model', val: index });
/** @param {string} reason @returns {Selection} */
export const refuse = (reason) => ({ tag: 'reject', val: reason });

/** Thrown from `compressContext`: the hook answers `err(message)`. */
export class CannotFit extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.payload = message;
  }
}

/** Ready, idle and unpinned: the host accepts evicting it. @param {Model} m */
export const isEvictable = (m) => !m.pinned && m.inFlight === 0 && m.state === 'ready';

/** When the model was last used, or loaded if never used (BigInt ms). @param {Model} m */
export const lastActiveMs = (m) => (m.lastUsedMs > m.loadedAtMs ? m.lastUsedMs : m.loadedAtMs);

/** @param {Model} m @param {bigint} nowMs */
export const idleMs = (m, nowMs) => {
  const last = lastActiveMs(m);
  return nowMs > last ? nowMs - last : 0n;
};

/** What a load of `m` costs in ms: its mean so far, else 2 s plus its bytes at 2 GB/s.
 * @param {Model} m */
export const loadMs = (m) => (m.meanLoadMs > 0 ? m.meanLoadMs : 2000 + Number(m.sizeBytes) / 2e6);

/** The model being loaded, when the eviction is for a load. @param {EvictionRequest} req */
export const incoming = (req) => (req.reason.tag === 'load' ? req.reason.val : undefined);

/** Orders BigInts, numbers or strings for `Array.prototype.sort`. */
export const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Evicts from `ranked`, in order, just enough to free `req.neededBytes`; skips models the host
 * would refuse; `wait` while a busy model may still go idle, `reject` when nothing can.
 * @param {EvictionRequest} req @param {Iterable<Model>} ranked @returns {EvictionDecision}
 */
export function evictUntilFits(req, ranked) {
  const chosen = [];
  let freed = 0n;
  let mayFreeLater = false;
  for (const m of ranked) {
    if (freed >= req.neededBytes) break;
    if (isEvictable(m)) {
      if (!chosen.includes(m.index)) {
        freed += m.sizeBytes;
        chosen.push(m.index);
      }
    } else if (!m.pinned && (m.state === 'ready' || m.state === 'loading')) {
      mayFreeLater = true;
    }
  }
  if (freed >= req.neededBytes) return evict(chosen);
  if (mayFreeLater) return wait();
  return reject(
    `${req.neededBytes} bytes must be freed, ` +
      `but the models this policy may evict hold only ${freed}`,
  );
}

/** The model a request names by id or alias, if any. @param {Asked} asked */
export const named = (asked) =>
  asked.tag === 'model' || asked.tag === 'alias' ? asked.val : undefined;

/** The id of model `index`, or `?` when the catalogue has no such model.
 * @param {Catalogue | undefined} catalogue @param {number} index */
export const modelId = (catalogue, index) => catalogue?.models[index]?.id ?? '?';

/**
 * Keeps the system messages and the newest user turn, then the newest other turns that fit the
 * budget. Throws `CannotFit` (the hook's error) when the kept ones alone do not fit.
 * @param {CompressionRequest} req @returns {Message[]}
 */
export function keepNewestThatFit(req) {
  const messages = req.messages;
  let newestUser = -1;
  messages.forEach((m, i) => {
    if (m.role === 'user') newestUser = i;
  });
  const keep = messages.map((m, i) => m.role === 'system' || i === newestUser);
  let used = messages.reduce((sum, m, i) => sum + (keep[i] ? m.tokens : 0), 0);
  if (used > req.budgetTokens) {
    throw new CannotFit(
      `the system prompt and the newest user turn need ${used} tokens; ` +
        `the budget is ${req.budgetTokens}`,
    );
  }
  for (let i = messages.length - 1; i >= 0; i--) {
    if (keep[i]) continue;
    if (used + messages[i].tokens > req.budgetTokens) break;
    used += messages[i].tokens;
    keep[i] = true;
  }
  return messages.filter((_, i) => keep[i]);
}
