/*
 * handlers/builtin.h: what the built-in handlers share; private to handlers/
 * and to tests/consumer/test_builtins.c.
 *
 * Each built-in is one file with one constructor that fills a struct
 * evr_handler with a malloc'd ctx (builtin.c picks it from the spec):
 *
 *   tail.c    a line per event, per ended span and per loss
 *   debug.c   each finished trace as an indented tree, like LlamaDebugHandler
 *   tokens.c  input / output / total tokens per model and per trace, exact
 *   stats.c   count, errors, total and p50/p95/p99 duration per span name;
 *             time to first token and inter-token latency of streamed spans
 *   jsonl.c   DESIGN.md §8, one object per line
 *   chrome.c  Trace Event Format JSON (Perfetto UI, chrome://tracing)
 *   otlp.c    OpenTelemetry spans and logs over OTLP/HTTP (otlp_json.c, otlp_export.c)
 *   sqlite.c  the run store: runs, spans, events, metrics, logs in a SQLite database
 *             (sqlite_store.c: its schema, opening, options, transactions)
 *   json.c    the JSON writer they all print values with
 *
 * Threads: a handler's callbacks run on its own thread, one at a time, so a
 * ctx needs no lock. Two handlers may share one FILE (stdout), so each
 * callback that writes holds the FILE's lock (flockfile) for its whole
 * output and writes with the _unlocked stdio calls inside.
 */
#ifndef EVRING_CONSUMER_BUILTIN_H
#define EVRING_CONSUMER_BUILTIN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "handlers.h"
#include "objects.h"
#include "source.h"

/* Constructors: arg is the text after '=' (NULL without one). Return 0 or -errno with err set. */
int evr__tail_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);
int evr__debug_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);
int evr__tokens_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);
int evr__stats_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);
int evr__jsonl_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);
int evr__chrome_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);
int evr__otlp_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);
int evr__sqlite_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);

/* Writes "<what>: <msg>" into err (if any); returns rc. */
int evr__builtin_err(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Opens an output file for writing (append: at its end, else truncated),
 * close-on-exec, created mode 0600: with content capture on it holds prompts
 * and completions, as private as the segment they came from. An existing
 * file keeps its mode. Returns NULL with errno set.
 */
FILE *evr__open_output(const char *path, bool append);

/*
 * Flushes f (locked by the caller, or not: unlocked stdio) and says whether
 * everything written to it got out: 0, or the -errno of the failure (-EPIPE
 * when the reader of a pipe went away, which a tool treats as "output
 * closed" rather than as an error), -EIO when stdio kept no errno.
 */
int evr__out_status(FILE *f);

/* ---- helpers on the objects ---------------------------------------------- */

/* The site's name / dispatcher, or NULL when the site is unknown (a span whose begin site never arrived). */
const char *evr__site_name(const struct evr_site_info *site);
const char *evr__site_dispatcher(const struct evr_site_info *site);

/* The last field called name in f (the producer's later value wins), or NULL. */
const struct evr_value *evr__field_find(const struct evr_fields *f, const char *name);

/* A non-negative integer value (u64, i64 >= 0, or an integral f64 below 2^64). */
bool evr__value_u64(const struct evr_value *v, uint64_t *out);

/*
 * A span's duration: CLOCK_MONOTONIC ends when both are known (immune to the
 * wall-clock mapping being refined during the span), UTC otherwise; 0 if the
 * end is before the start.
 */
uint64_t evr__span_duration_ns(const struct evr_span_rec *sp);

/* "ok", "dropped", "abandoned", "open", or "unknown". */
const char *evr__span_status_name(uint8_t status);

/* Names of the set bits of enum evr_span_flags, in bit order; NULL past the last. */
const char *evr__span_flag_name(unsigned bit);

/* "2024-05-01T12:34:56.123456789Z"; buf holds at least 32 bytes. */
char *evr__fmt_utc(char *buf, size_t len, uint64_t ns);

/* Decimal text of an unsigned 128-bit integer; buf holds at least 40 bytes. */
char *evr__fmt_u128(char *buf, size_t len, unsigned __int128 v);

/* Nanoseconds as milliseconds with three decimals ("12.345"); buf holds at least 48 bytes. */
char *evr__fmt_ms(char *buf, size_t len, unsigned __int128 ns);

/*
 * A name for a table cell: control bytes become '?', and past max bytes it is
 * cut at a character boundary and ends in "..."; buf holds max + 4 bytes.
 */
char *evr__fmt_label(char *buf, size_t max, const char *s);

/*
 * A trace's spans depth-first, each once: the root's tree, then the trees of
 * spans without a parent in the trace (orphans), then any span bad links
 * left out; children in the order the trace links them (start order). A
 * parent always comes before its children, which is the order trace viewers
 * need for spans that start at the same time. The arrays are scratch kept
 * across calls (grown to the largest trace); evr__walk_free releases them.
 */
struct evr__walk {
	uint32_t *order, *depth; /* the result: span index and its depth, n of them */
	uint32_t *stack, *sdepth;
	uint8_t *seen;
	uint32_t n, cap;
};
/* Returns the number of spans walked (tr->nspans) or -ENOMEM. */
int evr__trace_walk(struct evr__walk *w, const struct evr_trace *tr);
void evr__walk_free(struct evr__walk *w);

/* ---- small hash maps ----------------------------------------------------------- */

/*
 * Strings to dense indexes 0, 1, 2 ... in insertion order (the caller keeps
 * its rows in an array by that index). Keys are copied. Open addressing,
 * linear probing, power-of-two capacity.
 */
struct evr__strmap {
	char **keys;	 /* by index */
	uint32_t *slots; /* index + 1, 0: empty */
	uint32_t cap, n;
};
/* Finds or adds key; *idx is its index. Returns 1 if added, 0 if found, -ENOMEM. */
int evr__strmap_intern(struct evr__strmap *m, const char *key, uint32_t *idx);
void evr__strmap_free(struct evr__strmap *m);

/*
 * Pairs of 64-bit keys to 64-bit values, with removal (backward shift, no
 * tombstones). Key (0, 0) is reserved for empty slots; callers key by a
 * non-null source pointer or a pid together with an id.
 */
struct evr__pairmap {
	struct evr__pair_slot {
		uint64_t a, b, v;
	} *slots;
	uint32_t cap, n;
};
/* A pointer to the value of (a, b), or NULL. Valid until the next put or remove. */
uint64_t *evr__pairmap_get(struct evr__pairmap *m, uint64_t a, uint64_t b);
/* Finds or adds (a, b) (a new value is 0). Returns a pointer to its value, or NULL (no memory). */
uint64_t *evr__pairmap_put(struct evr__pairmap *m, uint64_t a, uint64_t b, bool *added);
bool evr__pairmap_remove(struct evr__pairmap *m, uint64_t a, uint64_t b, uint64_t *v);
/* Removes every entry whose first key is a, handing each (b, value) to fn (may be NULL) after; returns how many. */
uint32_t evr__pairmap_remove_a(struct evr__pairmap *m, uint64_t a, void (*fn)(void *arg, uint64_t b, uint64_t v),
			       void *arg);
void evr__pairmap_free(struct evr__pairmap *m);

/* ---- what tests read back ----------------------------------------------------------- */

/* Token sums of one model, one trace, or all: exact (128-bit sums of 64-bit counts). */
struct evr__tok_sum {
	unsigned __int128 input, output, total;
	uint64_t spans;
};
/* The sums of a model (NULL: every span) or of the trace (pid, trace_id); false if never seen. */
bool evr__tokens_model(void *ctx, const char *model, struct evr__tok_sum *out);
bool evr__tokens_trace(void *ctx, uint32_t pid, uint64_t trace_id, struct evr__tok_sum *out);

/* One span name's statistics; durations in ns, percentiles as described in stats.c. */
struct evr__stats_row {
	uint64_t count, errors, open, timed;
	unsigned __int128 total_ns;
	uint64_t p50, p95, p99, min, max;
	uint64_t streams, chunks;
	uint64_t ttft_p50, ttft_p99, itl_p50, itl_p99;
};
bool evr__stats_get(void *ctx, const char *name, struct evr__stats_row *out);

/* The duration histogram of stats.c on its own, for tests: value -> bucket -> representative. */
uint32_t evr__hist_index(uint64_t v);
uint64_t evr__hist_value(uint32_t idx);

#endif /* EVRING_CONSUMER_BUILTIN_H */
