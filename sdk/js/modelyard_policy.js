// modelyard's JavaScript policy SDK: the helpers every strategy needs, mirroring the Rust SDK's
// (`sdk/rust/src/helpers.rs`), so a policy states only its ranking.
//
// Values follow componentize-js's mapping of the contract (`wit/policy.wit`): records are
// objects with camelCase fields, `u64` fields (bytes, milliseconds, counts) are BigInt, `u32`
// and `s32` are numbers, enums are their kebab-case names and variants are `{ tag, val }`.
// These helpers follow the rules the host enforces: a decision that breaks them is refused and
// the host's native default decides instead.

/** @typedef {import('modelyard:policy/types@0.1.0').Model} Model */
/** @typedef {import('modelyard:policy/types@0.1.0').EvictionRequest} EvictionRequest */
/** @typedef {import('modelyard:policy/types@0.1.0').EvictionDecision} EvictionDecision */
/** @typedef {import('modelyard:policy/types@0.1.0').Selection} Selection */
/** @typedef {import('modelyard:policy/types@0.1.0').Request} Request */
/** @typedef {import('modelyard:policy/types@0.1.0').CompressionRequest} CompressionRequest */
/** @typedef {import('modelyard:policy/types@0.1.0').Message} Message */

/** @param {string[]} ids @returns {EvictionDecision} */
export const evict = (ids) => ({ tag: 'evict', val: [...ids] });
/** @returns {EvictionDecision} */
export const wait = () => ({ tag: 'wait' });
/** @param {string} reason @returns {EvictionDecision} */
export const reject = (reason) => ({ tag: 'reject', val: reason });
/** @param {string} id @returns {Selection} */
export const select = (id) => ({ tag: 'model', val: id });
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

/** Orders BigInts, numbers or strings for `Array.prototype.sort`. */
export const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/** Bytes the models named by `ids` hold. @param {Iterable<string>} ids @param {Model[]} loaded */
export const bytesFreed = (ids, loaded) => {
  const wanted = new Set(ids);
  return loaded.filter((m) => wanted.has(m.id)).reduce((sum, m) => sum + m.sizeBytes, 0n);
};

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
      if (!chosen.includes(m.id)) {
        freed += m.sizeBytes;
        chosen.push(m.id);
      }
    } else if (!m.pinned && (m.state === 'ready' || m.state === 'loading')) {
      mayFreeLater = true;
    }
  }
  if (freed >= req.neededBytes) return evict(chosen);
  if (mayFreeLater) return wait();
  return reject(
    `${req.incoming.id} needs ${req.neededBytes} bytes freed on ${req.device}, ` +
      `but the models this policy may evict hold only ${freed}`,
  );
}

/** The candidate the request names by id, else by alias. @param {Request} req @param {Model[]} candidates */
export const namedModel = (req, candidates) =>
  candidates.find((m) => m.id === req.model) ??
  candidates.find((m) => m.aliases.includes(req.model));

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
