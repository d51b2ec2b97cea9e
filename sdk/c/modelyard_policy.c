/* modelyard's C policy SDK: see modelyard_policy.h. */
#include "modelyard_policy.h"

#include <stdlib.h>
#include <string.h>

bool my_str_eq(const my_string_t *s, const char *c) {
  size_t n = strlen(c);
  return s->len == n && memcmp(s->ptr, c, n) == 0;
}

static bool same(const my_string_t *a, const my_string_t *b) {
  return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
}

bool my_list_has(const policy_list_string_t *list, const my_string_t *s) {
  for (size_t i = 0; i < list->len; i++)
    if (same(&list->ptr[i], s)) return true;
  return false;
}

bool my_list_has_cstr(const policy_list_string_t *list, const char *c) {
  for (size_t i = 0; i < list->len; i++)
    if (my_str_eq(&list->ptr[i], c)) return true;
  return false;
}

int my_str_cmp(const my_string_t *a, const my_string_t *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  int c = memcmp(a->ptr, b->ptr, n);
  if (c != 0) return c < 0 ? -1 : 1;
  return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

bool my_is_evictable(const my_model_t *m) {
  return !m->pinned && m->in_flight == 0 && m->state == MODELYARD_POLICY_TYPES_MODEL_STATE_READY;
}

uint64_t my_last_active_ms(const my_model_t *m) {
  return m->last_used_ms > m->loaded_at_ms ? m->last_used_ms : m->loaded_at_ms;
}

static void copy(my_string_t *to, const my_string_t *from) {
  policy_string_dup_n(to, (const char *)from->ptr, from->len);
}

void my_evict(my_eviction_decision_t *ret, const my_string_t *const *ids, size_t n) {
  ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_EVICT;
  ret->val.evict.len = n;
  ret->val.evict.ptr = n ? malloc(n * sizeof(my_string_t)) : NULL;
  for (size_t i = 0; i < n; i++) copy(&ret->val.evict.ptr[i], ids[i]);
}

void my_wait(my_eviction_decision_t *ret) { ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_WAIT; }

void my_reject(my_eviction_decision_t *ret, const char *reason) {
  ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_REJECT;
  policy_string_dup(&ret->val.reject, reason);
}

void my_select(my_selection_t *ret, const my_string_t *id) {
  ret->tag = MODELYARD_POLICY_TYPES_SELECTION_MODEL;
  copy(&ret->val.model, id);
}

void my_refuse(my_selection_t *ret, const char *reason) {
  ret->tag = MODELYARD_POLICY_TYPES_SELECTION_REJECT;
  policy_string_dup(&ret->val.reject, reason);
}

void my_evict_until_fits(const my_eviction_request_t *req, const my_model_t *const *ranked,
                         size_t n, my_eviction_decision_t *ret) {
  const my_string_t **chosen = malloc((n ? n : 1) * sizeof(*chosen));
  size_t count = 0;
  uint64_t freed = 0;
  bool may_free_later = false;
  for (size_t i = 0; i < n && freed < req->needed_bytes; i++) {
    const my_model_t *m = ranked[i];
    if (my_is_evictable(m)) {
      bool dup = false;
      for (size_t j = 0; j < count; j++) dup = dup || same(chosen[j], &m->id);
      if (!dup) {
        freed += m->size_bytes;
        chosen[count++] = &m->id;
      }
    } else if (!m->pinned && (m->state == MODELYARD_POLICY_TYPES_MODEL_STATE_READY ||
                              m->state == MODELYARD_POLICY_TYPES_MODEL_STATE_LOADING)) {
      may_free_later = true;
    }
  }
  if (freed >= req->needed_bytes) {
    my_evict(ret, chosen, count);
  } else if (may_free_later) {
    my_wait(ret);
  } else {
    my_text_t t = {0};
    my_text_str(&t, &req->incoming.id);
    my_text_cstr(&t, " needs ");
    my_text_u64(&t, req->needed_bytes);
    my_text_cstr(&t, " bytes freed on ");
    my_text_str(&t, &req->device);
    my_text_cstr(&t, ", but the models this policy may evict hold only ");
    my_text_u64(&t, freed);
    ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_REJECT;
    my_text_finish(&t, &ret->val.reject);
  }
  free(chosen);
}

const my_model_t *my_named_model(const my_request_t *req, const my_list_model_t *candidates) {
  for (size_t i = 0; i < candidates->len; i++)
    if (same(&candidates->ptr[i].id, &req->model)) return &candidates->ptr[i];
  for (size_t i = 0; i < candidates->len; i++)
    if (my_list_has(&candidates->ptr[i].aliases, &req->model)) return &candidates->ptr[i];
  return NULL;
}

bool my_keep_newest_that_fit(const my_compression_request_t *req, my_list_message_t *ret,
                             my_string_t *err) {
  size_t n = req->messages.len;
  const my_message_t *messages = req->messages.ptr;
  bool *keep = calloc(n ? n : 1, sizeof(bool));
  size_t newest_user = n;
  for (size_t i = 0; i < n; i++)
    if (my_str_eq(&messages[i].role, "user")) newest_user = i;
  uint64_t used = 0;
  for (size_t i = 0; i < n; i++) {
    keep[i] = my_str_eq(&messages[i].role, "system") || i == newest_user;
    if (keep[i]) used += messages[i].tokens;
  }
  if (used > req->budget_tokens) {
    my_text_t t = {0};
    my_text_cstr(&t, "the system prompt and the newest user turn need ");
    my_text_u64(&t, used);
    my_text_cstr(&t, " tokens; the budget is ");
    my_text_u64(&t, req->budget_tokens);
    my_text_finish(&t, err);
    free(keep);
    return false;
  }
  for (size_t i = n; i-- > 0;) {
    if (keep[i]) continue;
    if (used + messages[i].tokens > req->budget_tokens) break;
    used += messages[i].tokens;
    keep[i] = true;
  }
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) kept += keep[i];
  ret->len = kept;
  ret->ptr = kept ? malloc(kept * sizeof(my_message_t)) : NULL;
  for (size_t i = 0, k = 0; i < n; i++) {
    if (!keep[i]) continue;
    copy(&ret->ptr[k].role, &messages[i].role);
    copy(&ret->ptr[k].content, &messages[i].content);
    ret->ptr[k].tokens = messages[i].tokens;
    k++;
  }
  free(keep);
  return true;
}

void my_eviction_request_free(my_eviction_request_t *req) {
  modelyard_policy_types_eviction_request_free(req);
}
void my_request_free(my_request_t *req) { modelyard_policy_types_request_free(req); }
void my_list_model_free(my_list_model_t *list) {
  exports_modelyard_policy_selection_list_model_free(list);
}
void my_telemetry_free(my_telemetry_t *t) { modelyard_policy_types_telemetry_free(t); }
void my_compression_request_free(my_compression_request_t *req) {
  modelyard_policy_types_compression_request_free(req);
}

static void append(my_text_t *t, const char *s, size_t n) {
  if (t->len + n + 1 > t->cap) {
    t->cap = (t->len + n + 1) * 2;
    t->ptr = realloc(t->ptr, t->cap);
  }
  memcpy(t->ptr + t->len, s, n);
  t->len += n;
}
void my_text_cstr(my_text_t *t, const char *s) { append(t, s, strlen(s)); }
void my_text_str(my_text_t *t, const my_string_t *s) { append(t, (const char *)s->ptr, s->len); }
void my_text_u64(my_text_t *t, uint64_t n) {
  char digits[20];
  size_t i = sizeof digits;
  do {
    digits[--i] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  append(t, digits + i, sizeof digits - i);
}
void my_text_finish(my_text_t *t, my_string_t *out) {
  out->ptr = (uint8_t *)t->ptr;
  out->len = t->len;
  *t = (my_text_t){0};
}

void my_log(modelyard_policy_host_level_t level, const char *message) {
  my_string_t s;
  policy_string_set(&s, message);
  modelyard_policy_host_log(level, &s);
}
