/* modelyard's C policy SDK (contract 0.2): short names for the contract's types and the helpers
 * every strategy needs, mirroring the Rust SDK's (`sdk/rust/src/v0_2/helpers.rs`), so a policy
 * states only its ranking.
 *
 * The types come from wit-bindgen's C output for the contract (`gen/policy.h`, generated at
 * build time). Records name models, devices and tasks by index into the catalogue `configure`
 * receives. Ownership follows wit-bindgen: a hook owns its arguments and frees them (the
 * `my_*_free` functions), or keeps them (the catalogue, say: the instance lives across calls);
 * what it returns must be heap-allocated (the `my_*` builders allocate), and the generated glue
 * frees it after the host has read it.
 */
#ifndef MODELYARD_POLICY_H
#define MODELYARD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

typedef policy_string_t my_string_t;
typedef modelyard_policy_types_catalogue_t my_catalogue_t;
typedef modelyard_policy_types_interests_t my_interests_t;
typedef modelyard_policy_types_model_t my_model_t;
typedef modelyard_policy_types_message_t my_message_t;
typedef modelyard_policy_types_request_t my_request_t;
typedef modelyard_policy_types_telemetry_t my_telemetry_t;
typedef modelyard_policy_types_eviction_request_t my_eviction_request_t;
typedef modelyard_policy_types_eviction_decision_t my_eviction_decision_t;
typedef modelyard_policy_types_selection_t my_selection_t;
typedef modelyard_policy_types_compression_request_t my_compression_request_t;
typedef exports_modelyard_policy_compression_list_message_t my_list_message_t;
typedef exports_modelyard_policy_selection_list_model_t my_list_model_t;

/* Whether `s` holds exactly the C string `c`. */
bool my_str_eq(const my_string_t *s, const char *c);
/* Whether `list` holds `n`. */
bool my_list_has_u32(const policy_list_u32_t *list, uint32_t n);
/* The index of the C string `c` in `list`, or -1. */
int64_t my_list_find_cstr(const policy_list_string_t *list, const char *c);

/* Ready, idle and unpinned: the host accepts evicting it. */
bool my_is_evictable(const my_model_t *m);
/* When the model was last used, or loaded if never used. */
uint64_t my_last_active_ms(const my_model_t *m);
/* What a load of `m` costs in ms: its mean so far, else 2 s plus its bytes at 2 GB/s. */
double my_load_ms(const my_model_t *m);
/* The model being loaded, when the eviction is for a load; NULL otherwise. */
const my_model_t *my_incoming(const my_eviction_request_t *req);

/* Decisions; each allocates what the glue frees. */
void my_evict(my_eviction_decision_t *ret, const uint32_t *indices, size_t n);
void my_drain(my_eviction_decision_t *ret, const uint32_t *indices, size_t n);
/* Ask again when a model goes idle or is unloaded, and after `after_ms` if `after` is true. */
void my_wait(my_eviction_decision_t *ret, bool after, uint32_t after_ms);
void my_reject(my_eviction_decision_t *ret, const char *reason);
void my_select(my_selection_t *ret, uint32_t index);
void my_refuse(my_selection_t *ret, const char *reason);

/* Evicts from `ranked` (n models), in order, just enough to free `req->needed_bytes`; skips
 * models the host would refuse; `wait` while a busy model may still go idle, `reject` when
 * nothing can. */
void my_evict_until_fits(const my_eviction_request_t *req, const my_model_t *const *ranked,
                         size_t n, my_eviction_decision_t *ret);

/* The model a request names by id or alias: true with its index in `*index`. */
bool my_named(const my_request_t *req, uint32_t *index);

/* Keeps the system messages and the newest user turn, then the newest other turns that fit the
 * budget, into `ret`. Returns false with `err` set when the kept ones alone do not fit. */
bool my_keep_newest_that_fit(const my_compression_request_t *req, my_list_message_t *ret,
                             my_string_t *err);

/* Frees a hook's arguments. */
void my_catalogue_free(my_catalogue_t *c);
void my_eviction_request_free(my_eviction_request_t *req);
void my_request_free(my_request_t *req);
void my_list_model_free(my_list_model_t *list);
void my_telemetry_free(my_telemetry_t *t);
void my_compression_request_free(my_compression_request_t *req);

/* A text being built, without stdio (which would make the component import WASI files). */
typedef struct {
  char *ptr;
  size_t len, cap;
} my_text_t;
void my_text_cstr(my_text_t *t, const char *s);
void my_text_str(my_text_t *t, const my_string_t *s);
void my_text_u64(my_text_t *t, uint64_t n);
/* Moves the text into `out` (a heap string the glue frees). */
void my_text_finish(my_text_t *t, my_string_t *out);

/* The host's log. */
void my_log(modelyard_policy_host_level_t level, const char *message);

#endif
