/* A modelyard policy in C: LRU eviction, task-based model selection, and compression that keeps
 * the system prompt, the newest user turn and the newest turns that fit.
 *
 * It makes the same decisions as the Rust built-ins `lru` (eviction, compression) and
 * `specialization` (selection). Change the rankings; the helpers keep them within the host's
 * rules. Each hook owns its arguments and frees them before returning.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "modelyard_policy.h"

/* Least recently used first; ties by id so the answer is deterministic. */
static int by_last_active(const void *a, const void *b) {
  const my_model_t *x = *(const my_model_t *const *)a, *y = *(const my_model_t *const *)b;
  uint64_t ax = my_last_active_ms(x), ay = my_last_active_ms(y);
  if (ax != ay) return ax < ay ? -1 : 1;
  return my_str_cmp(&x->id, &y->id);
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

/* How well a model's tags fit a task: an exact tag, a `general` model, anything else. */
static float task_score(const my_model_t *m, const char *task) {
  if (my_list_has_cstr(&m->tags, task)) return 1.0f;
  if (my_list_has_cstr(&m->tags, "general")) return 0.7f;
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

/* Positive when `a` is the better choice: score, then ready, then priority, then smaller id. */
static int better(const my_model_t *a, const my_model_t *b, const char *task) {
  float sa = task_score(a, task), sb = task_score(b, task);
  if (sa != sb) return sa > sb ? 1 : -1;
  bool ra = a->state == MODELYARD_POLICY_TYPES_MODEL_STATE_READY;
  bool rb = b->state == MODELYARD_POLICY_TYPES_MODEL_STATE_READY;
  if (ra != rb) return ra ? 1 : -1;
  if (a->priority != b->priority) return a->priority > b->priority ? 1 : -1;
  return -my_str_cmp(&a->id, &b->id);
}

void exports_modelyard_policy_selection_select_model(my_request_t *req,
                                                     my_list_model_t *candidates,
                                                     my_telemetry_t *telemetry,
                                                     my_selection_t *ret) {
  const my_model_t *named = my_named_model(req, candidates);
  if (named) {
    my_select(ret, &named->id);
  } else if (!my_str_eq(&req->model, "auto")) {
    my_text_t reason = {0};
    my_text_cstr(&reason, "no model is named \"");
    my_text_str(&reason, &req->model);
    my_text_cstr(&reason, "\"");
    ret->tag = MODELYARD_POLICY_TYPES_SELECTION_REJECT;
    my_text_finish(&reason, &ret->val.reject);
  } else if (candidates->len == 0) {
    my_refuse(ret, "no model is configured");
  } else {
    char *task = req->task.is_some
                     ? strndup((const char *)req->task.val.ptr, req->task.val.len)
                     : strdup(infer_task(&req->last_user_message));
    const my_model_t *best = &candidates->ptr[0];
    for (size_t i = 1; i < candidates->len; i++)
      if (better(&candidates->ptr[i], best, task) > 0) best = &candidates->ptr[i];
    my_select(ret, &best->id);
    free(task);
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
