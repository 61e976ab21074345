/*
 * jsonl.c: the "jsonl[=PATH]" handler, one JSON object per line in the
 * format of DESIGN.md §8, appended to PATH (default "evring.log", as
 * aiconfig's CallbackManager logs to aiconfig.log):
 *
 *   {"kind":"span","name":"llm.chat","dispatcher":"llm.chat","trace_id":"1c","span_id":"1f",
 *    "parent_id":"1e","start_ns":1714564800000000000,"end_ns":1714564800250000000,"status":"ok",
 *    "pid":4242,"tid":4243,"fields":{"gen_ai.request.model":"gpt-4o","gen_ai.usage.input_tokens":12}}
 *   {"kind":"event","name":"llm.chat.in_progress","dispatcher":"llm.chat","ts_ns":1714564800100000000,
 *    "span_id":"1f","trace_id":"1c","pid":4242,"tid":4243,"fields":{"chunk.index":0}}
 *   {"kind":"lost","count":12,"ts_ns":1714564801000000000,"pid":4242,"tid":4243,"first_ns":...,"lane":3}
 *
 * (each on one line). The keys of §8 come first, in its order; extra keys
 * only ever follow them:
 *   - span "flags": ["no_begin","missing_parent","evicted","producer_died","detached"], only the set
 *     ones, only when any is (missing_parent is known only when the span's trace goes out, after
 *     the span was written: the consumer sets it on trace objects, so it shows in debug and chrome);
 *   - event "late": true, only when the merge delivered it after later records;
 *   - lost "first_ns" (when the first of the drops happened) and "lane".
 * Values: times are UTC nanoseconds since the epoch, as integers; ids are
 * lower-case hex strings, "0" meaning none (a root's parent_id, an event
 * outside any span); "status" is "ok", "dropped", "abandoned" or "open" (a
 * span still open when the consumer detached; its "end_ns" is then null if
 * the consumer gave it no end time). "name" and "dispatcher" are null when
 * the site is unknown (a span rebuilt from its end alone whose begin site
 * never arrived). "fields" holds a span's begin fields then its end fields in
 * one object (the end's value wins on a repeated name), typed: integers,
 * floats (always with a '.' or exponent; NaN and infinities as null),
 * true/false, strings; a string the producer truncated adds the member
 * "<name>.truncated": true after it. A span is written once, when it ends.
 *
 * A new file is created mode 0600 (it may hold prompts and completions).
 *
 * Buffering: a 64 KiB stdio buffer, flushed when a root span (parent "0")
 * ends, when a line is written 100 ms or more after the last flush, and at
 * close. A consumer killed mid-run loses at most the lines written since the
 * last flush; a consumer that closes normally loses nothing. Line buffering
 * would cost a write(2) per record on the handler's thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builtin.h"
#include "json.h"

#define JSONL_DEFAULT_PATH "evring.log"
#define JSONL_BUF (64u << 10)
#define JSONL_FLUSH_NS 100000000ull

struct jsonl {
	FILE *f;
	uint64_t last_flush_ns; /* CLOCK_MONOTONIC_COARSE */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	/* Coarse: a few ns per line instead of ~20, and a 100 ms period does not need better. */
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int end_line(struct jsonl *j, bool boundary)
{
	uint64_t now = now_ns();
	int rc = 0;

	fputs_unlocked("}\n", j->f);
	if (boundary || now - j->last_flush_ns >= JSONL_FLUSH_NS) {
		rc = fflush_unlocked(j->f);
		j->last_flush_ns = now;
	}
	if (rc || ferror_unlocked(j->f))
		rc = -EIO;
	funlockfile(j->f);
	return rc;
}

static void key(FILE *f, const char *k)
{
	/* The keys here are literals that need no escaping. */
	fputs_unlocked(k, f);
}

static int jsonl_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct jsonl *j = ctx;
	FILE *f = j->f;
	bool first = true, any = false;

	if (!f)
		return -EBADF; /* after on_close */
	flockfile(f);
	key(f, "{\"kind\":\"span\",\"name\":");
	evr__json_cstr(f, evr__site_name(sp->site));
	key(f, ",\"dispatcher\":");
	evr__json_cstr(f, evr__site_dispatcher(sp->site));
	key(f, ",\"trace_id\":");
	evr__json_id(f, sp->trace_id);
	key(f, ",\"span_id\":");
	evr__json_id(f, sp->span_id);
	key(f, ",\"parent_id\":");
	evr__json_id(f, sp->parent_id);
	key(f, ",\"start_ns\":");
	evr__json_u64(f, sp->start_ns);
	key(f, ",\"end_ns\":");
	if (sp->end_ns)
		evr__json_u64(f, sp->end_ns);
	else
		key(f, "null");
	key(f, ",\"status\":");
	evr__json_cstr(f, evr__span_status_name(sp->status));
	key(f, ",\"pid\":");
	evr__json_u64(f, sp->src ? sp->src->pid : 0);
	key(f, ",\"tid\":");
	evr__json_u64(f, sp->tid);
	key(f, ",\"fields\":{");
	evr__json_fields(f, sp->begin_fields, sp->end_fields, &first);
	putc_unlocked('}', f);
	for (unsigned b = 0; evr__span_flag_name(b); b++) {
		if (!(sp->flags & (1u << b)))
			continue;
		key(f, any ? "," : ",\"flags\":[");
		evr__json_cstr(f, evr__span_flag_name(b));
		any = true;
	}
	if (any)
		putc_unlocked(']', f);
	return end_line(j, sp->parent_id == 0);
}

static int jsonl_event(void *ctx, const struct evr_event *ev)
{
	struct jsonl *j = ctx;
	FILE *f = j->f;
	bool first = true;

	if (!f)
		return -EBADF; /* after on_close */
	flockfile(f);
	key(f, "{\"kind\":\"event\",\"name\":");
	evr__json_cstr(f, evr__site_name(ev->site));
	key(f, ",\"dispatcher\":");
	evr__json_cstr(f, evr__site_dispatcher(ev->site));
	key(f, ",\"ts_ns\":");
	evr__json_u64(f, ev->ts_ns);
	key(f, ",\"span_id\":");
	evr__json_id(f, ev->span_id);
	key(f, ",\"trace_id\":");
	evr__json_id(f, ev->trace_id);
	key(f, ",\"pid\":");
	evr__json_u64(f, ev->src ? ev->src->pid : 0);
	key(f, ",\"tid\":");
	evr__json_u64(f, ev->tid);
	key(f, ",\"fields\":{");
	evr__json_fields(f, ev->fields, NULL, &first);
	putc_unlocked('}', f);
	if (ev->late)
		key(f, ",\"late\":true");
	return end_line(j, false);
}

static int jsonl_lost(void *ctx, const struct evr_lost *l)
{
	struct jsonl *j = ctx;
	FILE *f = j->f;

	if (!f)
		return -EBADF; /* after on_close */
	flockfile(f);
	key(f, "{\"kind\":\"lost\",\"count\":");
	evr__json_u64(f, l->count);
	key(f, ",\"ts_ns\":");
	evr__json_u64(f, l->ts_ns);
	key(f, ",\"pid\":");
	evr__json_u64(f, l->src ? l->src->pid : 0);
	key(f, ",\"tid\":");
	evr__json_u64(f, l->tid);
	key(f, ",\"first_ns\":");
	evr__json_u64(f, l->first_ns);
	key(f, ",\"lane\":");
	evr__json_u64(f, l->lane);
	/* A loss is worth seeing at once: flush as at a trace's end. */
	return end_line(j, true);
}

static void jsonl_close(void *ctx)
{
	struct jsonl *j = ctx;

	if (j->f) {
		fclose(j->f);
		j->f = NULL;
	}
}

static void jsonl_destroy(void *ctx)
{
	jsonl_close(ctx);
	free(ctx);
}

int evr__jsonl_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	const char *path = arg && *arg ? arg : JSONL_DEFAULT_PATH;
	struct jsonl *j = calloc(1, sizeof(*j));
	int e;

	(void)out;
	if (!j)
		return evr__builtin_err(err, errlen, -ENOMEM, "jsonl: out of memory");
	/* Appended, as a log is: runs add to it rather than erase the last one. */
	j->f = evr__open_output(path, true);
	if (!j->f) {
		e = errno;
		free(j);
		return evr__builtin_err(err, errlen, -e, "jsonl: cannot open '%s': %s", path, strerror(e));
	}
	setvbuf(j->f, NULL, _IOFBF, JSONL_BUF);
	j->last_flush_ns = now_ns();
	h->name = "jsonl";
	h->ctx = j;
	h->on_event = jsonl_event;
	h->on_span_end = jsonl_span_end;
	h->on_lost = jsonl_lost;
	h->on_close = jsonl_close;
	h->destroy = jsonl_destroy;
	return 0;
}
