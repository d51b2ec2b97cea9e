// A modelyard policy in JavaScript (contract 0.2): LRU eviction, task-based model selection,
// and compression that keeps the system prompt, the newest user turn and the newest turns that
// fit.
//
// It makes the same decisions as the Rust built-ins `lru` (eviction, compression) and
// `specialization` (selection). Change the rankings; the helpers keep them within the host's
// rules. The host keeps one instance of the component across calls, so module state lives from
// one call to the next (a trap, a deadline or a reload starts a fresh one, configured again).

import { log } from 'modelyard:policy/host@0.2.0';
import {
  compare,
  evictUntilFits,
  keepNewestThatFit,
  lastActiveMs,
  modelId,
  named,
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

/** The catalogue, from `configure`. @type {import('modelyard:policy/types@0.2.0').Catalogue | undefined} */
let catalogue;

/** The index of the task named `name`, or undefined when no model has it. */
const taskIndex = (name) => {
  const i = catalogue?.tasks.indexOf(name) ?? -1;
  return i < 0 ? undefined : i;
};

const has = (m, task) => task !== undefined && (catalogue?.models[m.index]?.tags.includes(task) ?? false);

function taskScore(m, task) {
  if (has(m, task)) return EXACT_TAG;
  if (has(m, taskIndex('general'))) return GENERAL_TAG;
  return OTHER;
}

function inferTask(text) {
  const lower = text.toLowerCase();
  if (SUMMARY_WORDS.some((k) => lower.includes(k))) return 'summarize';
  if (CODE_WORDS.some((k) => lower.includes(k))) return 'code';
  return 'chat';
}

// Each hook's object is typed by the contract (`npm run types` writes the typings into types/).
/** @type {typeof import('modelyard:policy/lifecycle@0.2.0')} */
export const lifecycle = {
  configure(given) {
    catalogue = given;
    // Asked only about `auto` requests (the host routes ids and aliases), with their text.
    return { selection: { model: false, alias: false, auto: true, unknown: false }, text: true };
  },
};

/** @type {typeof import('modelyard:policy/eviction@0.2.0')} */
export const eviction = {
  chooseEviction(req) {
    const ranked = [...req.loaded].sort(
      (a, b) => compare(lastActiveMs(a), lastActiveMs(b)) || compare(a.index, b.index),
    );
    return evictUntilFits(req, ranked);
  },
};

/** @type {typeof import('modelyard:policy/selection@0.2.0')} */
export const selection = {
  selectModel(req, candidates, _telemetry) {
    const index = named(req.asked);
    if (index !== undefined) return select(index);
    if (req.asked.tag === 'unknown') return refuse(`no model is named "${req.asked.val}"`);
    let task;
    if (req.task === undefined) task = taskIndex(inferTask(req.text ?? ''));
    else if (req.task.tag === 'tag') task = req.task.val;
    if (candidates.length === 0) return refuse('no model is configured');
    // Highest score; then a ready model; then higher priority; then the smaller index.
    const better = (a, b) =>
      compare(taskScore(a, task), taskScore(b, task)) ||
      compare(a.state === 'ready', b.state === 'ready') ||
      compare(a.priority, b.priority) ||
      compare(b.index, a.index);
    const best = candidates.reduce((best, m) => (better(m, best) > 0 ? m : best));
    log('debug', `auto goes to ${modelId(catalogue, best.index)}`);
    return select(best.index);
  },
};

/** @type {typeof import('modelyard:policy/compression@0.2.0')} */
export const compression = {
  compressContext(req) {
    return keepNewestThatFit(req);
  },
};
