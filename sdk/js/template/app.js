// A modelyard policy in JavaScript: LRU eviction, task-based model selection, and compression
// that keeps the system prompt, the newest user turn and the newest turns that fit.
//
// It makes the same decisions as the Rust built-ins `lru` (eviction, compression) and
// `specialization` (selection). Change the rankings; the helpers keep them within the host's
// rules.

import { log } from 'modelyard:policy/host@0.1.0';
import {
  compare,
  evictUntilFits,
  keepNewestThatFit,
  lastActiveMs,
  namedModel,
  refuse,
  select,
} from './modelyard_policy.js';

// How well a model's tags fit a task: an exact tag, a `general` model, anything else.
const EXACT_TAG = 1.0;
const GENERAL_TAG = 0.7;
const OTHER = 0.3;
const CODE_WORDS = ['```', 'code', 'function', 'compile', 'bug', 'stack trace', 'python', 'rust',
  'javascript', 'typescript', 'def ', 'fn ', 'regex', 'sql'];
const SUMMARY_WORDS = ['summarize', 'summarise', 'summary', 'tl;dr', 'tldr'];

function taskScore(m, task) {
  if (m.tags.includes(task)) return EXACT_TAG;
  if (m.tags.includes('general')) return GENERAL_TAG;
  return OTHER;
}

function inferTask(text) {
  const lower = text.toLowerCase();
  if (SUMMARY_WORDS.some((k) => lower.includes(k))) return 'summarize';
  if (CODE_WORDS.some((k) => lower.includes(k))) return 'code';
  return 'chat';
}

// Each hook's object is typed by the contract (`npm run types` writes the typings into types/).
/** @type {typeof import('modelyard:policy/eviction@0.1.0')} */
export const eviction = {
  chooseEviction(req) {
    const ranked = [...req.loaded].sort(
      (a, b) => compare(lastActiveMs(a), lastActiveMs(b)) || compare(a.id, b.id),
    );
    return evictUntilFits(req, ranked);
  },
};

/** @type {typeof import('modelyard:policy/selection@0.1.0')} */
export const selection = {
  selectModel(req, candidates, _telemetry) {
    const named = namedModel(req, candidates);
    if (named !== undefined) return select(named.id);
    if (req.model !== 'auto') return refuse(`no model is named "${req.model}"`);
    const task = req.task ?? inferTask(req.lastUserMessage);
    if (candidates.length === 0) return refuse('no model is configured');
    // Highest score; then a ready model; then higher priority; then the smaller id.
    const better = (a, b) =>
      compare(taskScore(a, task), taskScore(b, task)) ||
      compare(a.state === 'ready', b.state === 'ready') ||
      compare(a.priority, b.priority) ||
      compare(b.id, a.id);
    const best = candidates.reduce((best, m) => (better(m, best) > 0 ? m : best));
    if (req.model === 'auto') log('debug', `auto: ${task} goes to ${best.id}`);
    return select(best.id);
  },
};

/** @type {typeof import('modelyard:policy/compression@0.1.0')} */
export const compression = {
  compressContext(req) {
    return keepNewestThatFit(req);
  },
};
