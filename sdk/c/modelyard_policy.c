/* modelyard's C policy SDK: see modelyard_policy.h. */
#include "modelyard_policy.h"

#include <stdlib.h>
#include <string.h>

bool my_str_eq(const my_string_t *s, const char *c) {
  size_t n = strlen(c);
  return s->len == n && memcmp(s->ptr, c, n) == 0;
}

bool my_list_has_u32(const policy_list_u32_t *list, uint32_t n) {
  for (size_t i = 0; i < list->len; i++)
    if (list->ptr[i] == n) return true;
  return false;
}

int64_t my_list_find_cstr(const policy_list_string_t *list, const char *c) {
  for (size_t i = 0; i < list->len; i++)
    if (my_str_eq(&list->ptr[i], c)) return (int64_t)i;
  return -1;
}

bool my_is_evictable(const my_model_t *m) {
  return !m->pinned && m->in_flight == 0 && m->state == MODELYARD_POLICY_TYPES_MODEL_STATE_READY;
}

uint64_t my_last_active_ms(const my_model_t *m) {
  return m->last_used_ms > m->loaded_at_ms ? m->last_used_ms : m->loaded_at_ms;
}

double my_load_ms(const my_model_t *m) {
  return m->mean_load_ms > 0 ? (double)m->mean_load_ms : 2000.0 + (double)m->size_bytes / 2e6;
}

const my_model_t *my_incoming(const my_eviction_request_t *req) {
  return req->reason.tag == MODELYARD_POLICY_TYPES_EVICTION_REASON_LOAD ? &req->reason.val.load
                                                                         : NULL;
}

static void copy(my_string_t *to, const my_string_t *from) {
  policy_string_dup_n(to, (const char *)from->ptr, from->len);
}

static void indices(policy_list_u32_t *to, const uint32_t *from, size_t n) {
  to->len = n;
  to->ptr = n ? malloc(n * sizeof(uint32_t)) : NULL;
  if (n) memcpy(to->ptr, from, n * sizeof(uint32_t));
}

void my_evict(my_eviction_decision_t *ret, const uint32_t *from, size_t n) {
  ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_EVICT;
  indices(&ret->val.evict, from, n);
}

void my_drain(my_eviction_decision_t *ret, const uint32_t *from, size_t n) {
  ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_DRAIN;
  indices(&ret->val.drain, from, n);
}

void my_wait(my_eviction_decision_t *ret, bool after, uint32_t after_ms) {
  ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_WAIT;
  ret->val.wait.is_some = after;
  ret->val.wait.val = after_ms;
}

void my_reject(my_eviction_decision_t *ret, const char *reason) {
  ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_REJECT;
  policy_string_dup(&ret->val.reject, reason);
}

void my_select(my_selection_t *ret, uint32_t index) {
  ret->tag = MODELYARD_POLICY_TYPES_SELECTION_MODEL;
  ret->val.model = index;
}

void my_refuse(my_selection_t *ret, const char *reason) {
  ret->tag = MODELYARD_POLICY_TYPES_SELECTION_REJECT;
  policy_string_dup(&ret->val.reject, reason);
}

void my_evict_until_fits(const my_eviction_request_t *req, const my_model_t *const *ranked,
                         size_t n, my_eviction_decision_t *ret) {
  uint32_t *chosen = malloc((n ? n : 1) * sizeof(*chosen));
  size_t count = 0;
  uint64_t freed = 0;
  bool may_free_later = false;
  for (size_t i = 0; i < n && freed < req->needed_bytes; i++) {
    const my_model_t *m = ranked[i];
    if (my_is_evictable(m)) {
      bool dup = false;
      for (size_t j = 0; j < count; j++) dup = dup || chosen[j] == m->index;
      if (!dup) {
        freed += m->size_bytes;
        chosen[count++] = m->index;
      }
    } else if (!m->pinned && (m->state == MODELYARD_POLICY_TYPES_MODEL_STATE_READY ||
                              m->state == MODELYARD_POLICY_TYPES_MODEL_STATE_LOADING)) {
      may_free_later = true;
    }
  }
  if (freed >= req->needed_bytes) {
    my_evict(ret, chosen, count);
  } else if (may_free_later) {
    my_wait(ret, false, 0);
  } else {
    my_text_t t = {0};
    my_text_u64(&t, req->needed_bytes);
    my_text_cstr(&t, " bytes must be freed, but the models this policy may evict hold only ");
    my_text_u64(&t, freed);
    ret->tag = MODELYARD_POLICY_TYPES_EVICTION_DECISION_REJECT;
    my_text_finish(&t, &ret->val.reject);
  }
  free(chosen);
}

bool my_named(const my_request_t *req, uint32_t *index) {
  switch (req->asked.tag) {
  case MODELYARD_POLICY_TYPES_ASKED_MODEL:
    *index = req->asked.val.model;
    return true;
  case MODELYARD_POLICY_TYPES_ASKED_ALIAS:
    *index = req->asked.val.alias;
    return true;
  default:
    return false;
  }
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

void my_catalogue_free(my_catalogue_t *c) { modelyard_policy_types_catalogue_free(c); }
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
