/* A modelyard policy in C (contract 0.2): LRU eviction, task-based model selection, and
 * compression that keeps the system prompt, the newest user turn and the newest turns that fit.
 *
 * It makes the same decisions as the Rust built-ins `lru` (eviction, compression) and
 * `specialization` (selection). Change the rankings; the helpers keep them within the host's
 * rules. Each hook owns its arguments and frees them before returning, except the catalogue,
 * which is kept: the host keeps one instance across calls, so static state lives from one call
 * to the next (a trap, a deadline or a reload starts a fresh one, configured again).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "modelyard_policy.h"

/* The catalogue from the last `configure`, or none yet. */
static my_catalogue_t catalogue;
static bool configured;

void exports_modelyard_policy_lifecycle_configure(my_catalogue_t *given, my_interests_t *ret) {
  if (configured) my_catalogue_free(&catalogue);
  catalogue = *given;
  configured = true;
  /* Asked only about `auto` requests (the host routes ids and aliases), with their text. */
  ret->selection = MODELYARD_POLICY_TYPES_SELECTION_INTEREST_AUTO;
  ret->text = true;
}

/* Least recently used first; ties by index (the catalogue's id order). */
static int by_last_active(const void *a, const void *b) {
  const my_model_t *x = *(const my_model_t *const *)a, *y = *(const my_model_t *const *)b;
  uint64_t ax = my_last_active_ms(x), ay = my_last_active_ms(y);
  if (ax != ay) return ax < ay ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

void exports_modelyard_policy_eviction_choose_eviction(my_eviction_request_t *req,
                                                       my_eviction_decision_t *ret) {
  size_t n = req->loaded.len;
  const my_model_t **ranked = malloc((n ? n : 1) * sizeof(*ranked));
  for (size_t i = 0; i < n; i++) ranked[i] = &req->loaded.ptr[i];
  qsort(ranked, n, sizeof(*ranked), by_last_active);
  my_evict_until_fits(req, ranked, n, ret);
  free(ranked);
  my_eviction_request_free(req);
}

/* Whether model `m` is tagged with the task of index `task` (-1: a task no model has). */
static bool has(const my_model_t *m, int64_t task) {
  return task >= 0 && configured && m->index < catalogue.models.len &&
         my_list_has_u32(&catalogue.models.ptr[m->index].tags, (uint32_t)task);
}

/* How well a model's tags fit a task: an exact tag, a `general` model, anything else. */
static float task_score(const my_model_t *m, int64_t task) {
  if (has(m, task)) return 1.0f;
  if (configured && has(m, my_list_find_cstr(&catalogue.tasks, "general"))) return 0.7f;
  return 0.3f;
}

static bool contains_any(const char *text, const char *const *words, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strstr(text, words[i])) return true;
  return false;
}

/* The task a message most likely asks for: `summarize`, `code` or `chat`. */
static const char *infer_task(const my_string_t *message) {
  static const char *const code[] = {"```", "code", "function", "compile", "bug", "stack trace",
                                     "python", "rust", "javascript", "typescript", "def ", "fn ",
                                     "regex", "sql"};
  static const char *const summarize[] = {"summarize", "summarise", "summary", "tl;dr", "tldr"};
  char *text = malloc(message->len + 1);
  for (size_t i = 0; i < message->len; i++) text[i] = (char)tolower(message->ptr[i]);
  text[message->len] = 0;
  const char *task = contains_any(text, summarize, 5) ? "summarize"
                     : contains_any(text, code, 14)   ? "code"
                                                      : "chat";
  free(text);
  return task;
}

/* Positive when `a` is the better choice: score, then ready, then priority, then smaller index. */
static int better(const my_model_t *a, const my_model_t *b, int64_t task) {
  float sa = task_score(a, task), sb = task_score(b, task);
  if (sa != sb) return sa > sb ? 1 : -1;
  bool ra = a->state == MODELYARD_POLICY_TYPES_MODEL_STATE_READY;
  bool rb = b->state == MODELYARD_POLICY_TYPES_MODEL_STATE_READY;
  if (ra != rb) return ra ? 1 : -1;
  if (a->priority != b->priority) return a->priority > b->priority ? 1 : -1;
  return a->index < b->index ? 1 : a->index > b->index ? -1 : 0;
}

void exports_modelyard_policy_selection_select_model(my_request_t *req,
                                                     my_list_model_t *candidates,
                                                     my_telemetry_t *telemetry,
                                                     my_selection_t *ret) {
  uint32_t named;
  if (my_named(req, &named)) {
    my_select(ret, named);
  } else if (req->asked.tag == MODELYARD_POLICY_TYPES_ASKED_UNKNOWN) {
    my_text_t reason = {0};
    my_text_cstr(&reason, "no model is named \"");
    my_text_str(&reason, &req->asked.val.unknown);
    my_text_cstr(&reason, "\"");
    ret->tag = MODELYARD_POLICY_TYPES_SELECTION_REJECT;
    my_text_finish(&reason, &ret->val.reject);
  } else if (candidates->len == 0) {
    my_refuse(ret, "no model is configured");
  } else {
    int64_t task = -1;
    if (req->task.is_some) {
      if (req->task.val.tag == MODELYARD_POLICY_TYPES_TASK_TAG) task = req->task.val.val.tag;
    } else if (configured) {
      my_string_t empty = {0};
      task = my_list_find_cstr(&catalogue.tasks,
                               infer_task(req->text.is_some ? &req->text.val : &empty));
    }
    const my_model_t *best = &candidates->ptr[0];
    for (size_t i = 1; i < candidates->len; i++)
      if (better(&candidates->ptr[i], best, task) > 0) best = &candidates->ptr[i];
    my_select(ret, best->index);
  }
  my_request_free(req);
  my_list_model_free(candidates);
  my_telemetry_free(telemetry);
}

bool exports_modelyard_policy_compression_compress_context(my_compression_request_t *req,
                                                           my_list_message_t *ret,
                                                           my_string_t *err) {
  bool ok = my_keep_newest_that_fit(req, ret, err);
  my_compression_request_free(req);
  return ok;
}
