/*
 * jsonl.c: the "jsonl[=PATH]" handler, one JSON object per line in the
 * format of docs/FORMAT.md (jsonl), appended to PATH (default "evring.log", as
 * aiconfig's CallbackManager logs to aiconfig.log):
 *
 *   {"kind":"span","name":"llm.chat","dispatcher":"llm.chat","trace_id":"1c","span_id":"1f",
 *    "parent_id":"1e","start_ns":1714564800000000000,"end_ns":1714564800250000000,"status":"ok",
 *    "pid":4242,"tid":4243,"fields":{"gen_ai.request.model":"gpt-4o","gen_ai.usage.input_tokens":12}}
 *   {"kind":"event","name":"llm.chat.in_progress","dispatcher":"llm.chat","ts_ns":1714564800100000000,
 *    "span_id":"1f","trace_id":"1c","pid":4242,"tid":4243,"fields":{"chunk.index":0}}
 *   {"kind":"lost","count":12,"ts_ns":1714564801000000000,"pid":4242,"tid":4243,"first_ns":...,"lane":3}
 *   {"kind":"skipped","count":530,"handler":"jsonl","first_ns":1714564801000000000,"last_ns":...,
 *    "events":500,"span_begins":0,"span_ends":30,"traces":0,"stalled":0}
 *   {"kind":"run","run_id":"9f..","experiment":"default","start_ns":1714564799000000000,"pid":4242,
 *    "params":{"program":"chat","cmdline":"./chat -v",...,"app.model":"gpt-4o"}}
 *   {"kind":"metric","name":"process.cpu.user","value":48.5,"unit":"%","ts_ns":...,"pid":4242}
 *
 * (each on one line). The keys of §8 come first, in its order; extra keys
 * only ever follow them:
 *   - span "flags": ["no_begin","evicted","producer_died","detached","producer_exited"], only the
 *     set ones, only when any is; missing_parent is known only when the span's trace goes out,
 *     after the span's line was written, so it comes on a line of its own then:
 *     {"kind":"span_flags","trace_id","span_id","parent_id","pid","tid","flags":["missing_parent"]};
 *   - event "late": true, only when the merge delivered it after later records;
 *   - lost "first_ns" (when the first of the drops happened) and "lane"; "reports" when the
 *     consumer added several LOST records into one (its queue was full: struct evr_lost);
 * A "skipped" line is a gap: records the consumer did not hand this handler
 * (its queue was full, or it was stalled past the timeout), written where
 * they would have been: how many, which handler, the times of the first and
 * the last, and how many of each callback (span_ends are span lines, events
 * event lines, traces the trace ends whose span_flags lines are missing;
 * jsonl takes no span_begins) and of them how many while it was stalled.
 * Losses are never in a gap.
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
 * Rotation (for a long-running consumer, evring agent): the spec
 * "jsonl=PATH,rotate-size=MIB,rotate-time=S,keep=N" renames PATH to PATH.1
 * (PATH.1 to PATH.2, ..., the oldest past PATH.N removed; keep defaults to
 * 5) and starts a new PATH once PATH holds MIB mebibytes (checked when the
 * buffer is written out, so it may pass by up to 64 KiB) or was started S
 * seconds ago (checked at each line and when the handler is idle). A line
 * is never split between two files; every rename happens between writes.
 *
 * Buffering: lines are formatted (without printf or a stdio call per value)
 * into a 64 KiB buffer of the handler's own, which goes to the file in one
 * write when full, when a root span (parent "0") ends, when a line is written
 * 100 ms or more after the last flush, and at close. A consumer killed
 * mid-run loses at most the lines written since the last flush; a consumer
 * that closes normally loses nothing. Line buffering would cost a write(2)
 * per record on the handler's thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "builtin.h"
#include "json.h"

#define JSONL_DEFAULT_PATH "evring.log"
#define JSONL_BUF (64u << 10)
#define JSONL_FLUSH_NS 100000000ull
#define MEMO_N 64u /* sites remembered, direct-mapped by pointer */
#define JSONL_KEEP_DEFAULT 5u
#define JSONL_KEEP_MAX 1000u

/*
 * What a line of a site always holds, escaped once (a site and its names
 * live as long as its source, so as long as any record of it): the start of
 * its event and span lines, and its field names as keys.
 */
struct site_memo {
	const struct evr_site_info *site; /* NULL: empty */
	char *ev, *sp;			  /* {"kind":"event","name":..,"dispatcher":..,"ts_ns":  / ..."trace_id": */
	size_t ev_len, sp_len;
	char **key;	 /* "name": per declared field (NULL: not built) */
	size_t *key_len;
	char **trunc;	 /* ,"name.truncated":true */
	size_t *trunc_len;
	uint32_t nkeys;	 /* entries of key and trunc */
	bool distinct; /* its field names are all different: nothing to drop as repeated */
};

struct jsonl {
	FILE *f; /* unbuffered: jb is its buffer */
	char *path;
	uint64_t rotate_bytes;	 /* 0: no rotation by size */
	uint64_t rotate_ns;	 /* 0: no rotation by age */
	uint32_t keep;		 /* rotated files kept */
	uint64_t opened_ns;	 /* CLOCK_MONOTONIC_COARSE when f was started */
	uint64_t rotations;
	char *mark; /* where the buffer stood after the last line: below it now, the buffer was written out */
	struct evr__jbuf jb;
	uint64_t last_flush_ns; /* CLOCK_MONOTONIC_COARSE */
	struct evr__jb_hi ts_hi;  /* the leading digits of the last time written */
	struct site_memo memo[MEMO_N];
};

static void memo_clear(struct site_memo *m)
{
	for (uint32_t i = 0; m->key && i < m->nkeys; i++) {
		free(m->key[i]);
		free(m->trunc[i]);
	}
	free(m->key);
	free(m->key_len);
	free(m->trunc);
	free(m->trunc_len);
	free(m->ev);
	free(m->sp);
	memset(m, 0, sizeof(*m));
}

/* "<start><name>,\"dispatcher\":<dispatcher><end>", or NULL without memory. */
static char *memo_prefix(const struct evr_site_info *site, const char *start, const char *end, size_t *len)
{
	size_t nl, dl, sl = strlen(start), el = strlen(end);
	char *name = evr__json_quote(evr__site_name(site), &nl);
	char *disp = evr__json_quote(evr__site_dispatcher(site), &dl);
	char *out = name && disp ? malloc(sl + nl + 14 + dl + el + 1) : NULL;

	if (out) {
		*len = (size_t)sprintf(out, "%s%s,\"dispatcher\":%s%s", start, name, disp, end);
	}
	free(name);
	free(disp);
	return out;
}

/*
 * start, "name", ",\"dispatcher\":", "dispatcher", end: from the site's memo
 * (made at its first use) or, without one, written out.
 */
static void put_prefix(struct evr__jbuf *b, const struct evr_site_info *site, char **memo, size_t *memo_len,
		       const char *start, const char *end)
{
	if (memo && !*memo)
		*memo = memo_prefix(site, start, end, memo_len);
	if (memo && *memo) {
		evr__jb_put(b, *memo, *memo_len);
		return;
	}
	evr__jb_put(b, start, strlen(start));
	evr__jb_cstr(b, evr__site_name(site));
	evr__jb_lit(b, ",\"dispatcher\":");
	evr__jb_cstr(b, evr__site_dispatcher(site));
	evr__jb_put(b, end, strlen(end));
}

/* The site's keys; false without memory (the caller then writes the generic way). */
static bool memo_keys(struct site_memo *m)
{
	const struct evr_site_info *si = m->site;
	uint32_t n = si->nfields;

	m->key = calloc(n ? n : 1, sizeof(*m->key));
	m->key_len = calloc(n ? n : 1, sizeof(*m->key_len));
	m->trunc = calloc(n ? n : 1, sizeof(*m->trunc));
	m->trunc_len = calloc(n ? n : 1, sizeof(*m->trunc_len));
	if (!m->key || !m->key_len || !m->trunc || !m->trunc_len)
		goto fail;
	m->nkeys = n;
	m->distinct = true;
	for (uint32_t i = 0; i < n; i++) {
		const char *name = si->field_names && si->field_names[i] ? si->field_names[i] : "";
		size_t q;
		char *quoted = evr__json_quote(name, &q);

		if (!quoted)
			goto fail;
		m->key[i] = malloc(q + 2);
		m->trunc[i] = malloc(q + 17);
		if (!m->key[i] || !m->trunc[i]) {
			free(quoted);
			goto fail;
		}
		m->key_len[i] = (size_t)sprintf(m->key[i], "%s:", quoted);
		quoted[q - 1] = 0; /* the closing quote */
		m->trunc_len[i] = (size_t)sprintf(m->trunc[i], ",%s.truncated\":true", quoted);
		free(quoted);
		for (uint32_t k = 0; k < i && m->distinct; k++)
			if (strcmp(si->field_names && si->field_names[k] ? si->field_names[k] : "", name) == 0)
				m->distinct = false;
	}
	return true;
fail:
	for (uint32_t i = 0; m->key && i < n; i++) {
		free(m->key[i]);
		if (m->trunc)
			free(m->trunc[i]);
	}
	free(m->key);
	free(m->key_len);
	free(m->trunc);
	free(m->trunc_len);
	m->key = m->trunc = NULL;
	m->key_len = m->trunc_len = NULL;
	m->nkeys = 0;
	return false;
}

/* The memo of a known site (NULL for an unknown one: written the generic way). */
static struct site_memo *memo_of(struct jsonl *j, const struct evr_site_info *site)
{
	struct site_memo *m;

	if (!site)
		return NULL;
	m = &j->memo[((uintptr_t)site >> 4 ^ (uintptr_t)site >> 12) & (MEMO_N - 1)];
	if (m->site != site) {
		memo_clear(m);
		m->site = site;
	}
	return m;
}

/*
 * An event's fields the quick way: its site's keys, when the block holds
 * exactly the site's declared fields with distinct names (as every decoded
 * event does). Returns false to have them written the generic way.
 */
static bool memo_fields(struct evr__jbuf *b, struct site_memo *m, const struct evr_fields *f)
{
	const struct evr_site_info *si = m->site;

	if (!f || f->n != si->nfields || !si->field_names || (!m->key && !memo_keys(m)) || !m->distinct)
		return false;
	for (uint32_t i = 0; i < f->n; i++)
		if (f->f[i].name != si->field_names[i])
			return false;
	for (uint32_t i = 0; i < f->n; i++) {
		const struct evr_field *fl = &f->f[i];

		if (i)
			evr__jb_char(b, ',');
		evr__jb_put(b, m->key[i], m->key_len[i]);
		evr__jb_value(b, &fl->v);
		if (fl->v.type == EVR_V_STR && fl->v.truncated)
			evr__jb_put(b, m->trunc[i], m->trunc_len[i]);
	}
	return true;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	/* Coarse: a few ns per line instead of ~20, and a 100 ms period does not need better. */
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * PATH -> PATH.1 -> ... -> PATH.keep (the oldest removed), then a new PATH.
 * What is buffered goes to the old file first. On failure the old file is
 * kept (appended to) and the error is the line's.
 */
static int rotate(struct jsonl *j, uint64_t now)
{
	size_t n = strlen(j->path) + 16;
	char *from = malloc(n), *to = malloc(n);
	FILE *f;
	int rc = 0;

	evr__jb_flush(&j->jb, true);
	j->last_flush_ns = now;
	j->opened_ns = now; /* also on failure: not retried at every line */
	if (!from || !to) {
		rc = -ENOMEM;
		goto out;
	}
	snprintf(to, n, "%s.%u", j->path, j->keep);
	unlink(to);
	for (uint32_t k = j->keep; k > 1; k--) {
		snprintf(from, n, "%s.%u", j->path, k - 1);
		snprintf(to, n, "%s.%u", j->path, k);
		rename(from, to); /* a missing one is no error */
	}
	snprintf(to, n, "%s.1", j->path);
	if (rename(j->path, to) != 0 && errno != ENOENT) {
		rc = -errno;
		goto out;
	}
	if (!(f = evr__open_output(j->path, true))) {
		rc = -errno; /* renamed away: the lines go on into PATH.1 */
		goto out;
	}
	setvbuf(f, NULL, _IONBF, 0);
	fclose(j->f);
	j->f = f;
	j->jb.f = f;
	j->rotations++;
out:
	free(from);
	free(to);
	return rc;
}

/* Whether the file is due for rotation (only after a flush for the size: the offset is the file's). */
static bool rotate_due(struct jsonl *j, uint64_t now, bool flushed)
{
	off_t size;

	if (j->rotate_ns && now - j->opened_ns >= j->rotate_ns)
		return true;
	if (!j->rotate_bytes || !flushed)
		return false;
	size = lseek(fileno(j->f), 0, SEEK_END);
	return size >= 0 && (uint64_t)size >= j->rotate_bytes;
}

static int end_line(struct jsonl *j, bool boundary)
{
	uint64_t now = now_ns();
	bool flushed = false;

	evr__jb_lit(&j->jb, "}\n");
	flushed = j->jb.p < j->mark; /* the buffer went out while the line was written */
	if (boundary || now - j->last_flush_ns >= JSONL_FLUSH_NS) {
		evr__jb_flush(&j->jb, true);
		j->last_flush_ns = now;
		flushed = true;
	}
	if ((j->rotate_ns || j->rotate_bytes) && rotate_due(j, now, flushed)) {
		int rc = rotate(j, now);

		if (rc && !j->jb.err)
			return rc;
	}
	j->mark = j->jb.p;
	return j->jb.err;
}

/* Idle: what is buffered goes out (a consumer killed now loses nothing written), and a rotation due by age. */
static void jsonl_idle(void *ctx)
{
	struct jsonl *j = ctx;
	uint64_t now = now_ns();

	if (!j->f)
		return;
	if (j->jb.p != j->jb.buf) {
		evr__jb_flush(&j->jb, true);
		j->last_flush_ns = now;
	}
	if ((j->rotate_ns || j->rotate_bytes) && rotate_due(j, now, true) && j->jb.p == j->jb.buf &&
	    lseek(fileno(j->f), 0, SEEK_END) > 0)
		rotate(j, now); /* an empty file is not rotated away */
}

/* A source is let go: its sites' addresses may come back as another's, so no memo may name them. */
static int jsonl_source_end(void *ctx, const struct evr_source *src)
{
	struct jsonl *j = ctx;

	(void)src;
	for (uint32_t i = 0; i < MEMO_N; i++)
		if (j->memo[i].site)
			memo_clear(&j->memo[i]);
	return 0;
}

static int jsonl_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct jsonl *j = ctx;
	struct evr__jbuf *b = &j->jb;
	bool first = true, any = false;

	struct site_memo *m = memo_of(j, sp->site);

	if (!j->f)
		return -EBADF; /* after on_close */
	put_prefix(b, sp->site, m ? &m->sp : NULL, m ? &m->sp_len : NULL, "{\"kind\":\"span\",\"name\":",
		   ",\"trace_id\":");
	evr__jb_id(b, sp->trace_id);
	evr__jb_lit(b, ",\"span_id\":");
	evr__jb_id(b, sp->span_id);
	evr__jb_lit(b, ",\"parent_id\":");
	evr__jb_id(b, sp->parent_id);
	evr__jb_lit(b, ",\"start_ns\":");
	evr__jb_u64_hi(b, &j->ts_hi, sp->start_ns);
	evr__jb_lit(b, ",\"end_ns\":");
	if (sp->end_ns)
		evr__jb_u64_hi(b, &j->ts_hi, sp->end_ns);
	else
		evr__jb_lit(b, "null");
	evr__jb_lit(b, ",\"status\":");
	evr__jb_cstr(b, evr__span_status_name(sp->status));
	evr__jb_lit(b, ",\"pid\":");
	evr__jb_u64(b, sp->src ? sp->src->pid : 0);
	evr__jb_lit(b, ",\"tid\":");
	evr__jb_u64(b, sp->tid);
	evr__jb_lit(b, ",\"fields\":{");
	evr__jb_fields(b, sp->begin_fields, sp->end_fields, &first);
	evr__jb_char(b, '}');
	for (unsigned k = 0; evr__span_flag_name(k); k++) {
		if (!(sp->flags & (1u << k)))
			continue;
		if (any)
			evr__jb_char(b, ',');
		else
			evr__jb_lit(b, ",\"flags\":[");
		evr__jb_cstr(b, evr__span_flag_name(k));
		any = true;
	}
	if (any)
		evr__jb_char(b, ']');
	return end_line(j, sp->parent_id == 0);
}

static int jsonl_event(void *ctx, const struct evr_event *ev)
{
	struct jsonl *j = ctx;
	struct evr__jbuf *b = &j->jb;
	bool first = true;

	struct site_memo *m = memo_of(j, ev->site);

	if (!j->f)
		return -EBADF; /* after on_close */
	put_prefix(b, ev->site, m ? &m->ev : NULL, m ? &m->ev_len : NULL, "{\"kind\":\"event\",\"name\":",
		   ",\"ts_ns\":");
	evr__jb_u64_hi(b, &j->ts_hi, ev->ts_ns);
	evr__jb_lit(b, ",\"span_id\":");
	evr__jb_id(b, ev->span_id);
	evr__jb_lit(b, ",\"trace_id\":");
	evr__jb_id(b, ev->trace_id);
	evr__jb_lit(b, ",\"pid\":");
	evr__jb_u64(b, ev->src ? ev->src->pid : 0);
	evr__jb_lit(b, ",\"tid\":");
	evr__jb_u64(b, ev->tid);
	evr__jb_lit(b, ",\"fields\":{");
	if (!m || !memo_fields(b, m, ev->fields))
		evr__jb_fields(b, ev->fields, NULL, &first);
	evr__jb_char(b, '}');
	if (ev->late)
		evr__jb_lit(b, ",\"late\":true");
	return end_line(j, false);
}

/*
 * A flag known only once the span's trace goes out, after its line was
 * written (missing_parent: its parent never arrived within the grace
 * period): one "span_flags" line per such span, joined to its span line by
 * span_id and pid. Traces with no such span write nothing.
 */
static int jsonl_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct jsonl *j = ctx;
	struct evr__jbuf *b = &j->jb;
	int rc = 0;

	if (!j->f)
		return -EBADF; /* after on_close */
	for (uint32_t i = 0; i < tr->nspans && rc == 0; i++) {
		const struct evr_span_rec *sp = tr->spans[i];

		if (!(sp->flags & EVR_SPAN_MISSING_PARENT))
			continue;
		evr__jb_lit(b, "{\"kind\":\"span_flags\",\"trace_id\":");
		evr__jb_id(b, sp->trace_id);
		evr__jb_lit(b, ",\"span_id\":");
		evr__jb_id(b, sp->span_id);
		evr__jb_lit(b, ",\"parent_id\":");
		evr__jb_id(b, sp->parent_id);
		evr__jb_lit(b, ",\"pid\":");
		evr__jb_u64(b, sp->src ? sp->src->pid : 0);
		evr__jb_lit(b, ",\"tid\":");
		evr__jb_u64(b, sp->tid);
		evr__jb_lit(b, ",\"flags\":[\"missing_parent\"]");
		rc = end_line(j, false);
	}
	return rc;
}

static int jsonl_lost(void *ctx, const struct evr_lost *l)
{
	struct jsonl *j = ctx;
	struct evr__jbuf *b = &j->jb;

	if (!j->f)
		return -EBADF; /* after on_close */
	evr__jb_lit(b, "{\"kind\":\"lost\",\"count\":");
	evr__jb_u64(b, l->count);
	evr__jb_lit(b, ",\"ts_ns\":");
	evr__jb_u64(b, l->ts_ns);
	evr__jb_lit(b, ",\"pid\":");
	evr__jb_u64(b, l->src ? l->src->pid : 0);
	evr__jb_lit(b, ",\"tid\":");
	evr__jb_u64(b, l->tid);
	evr__jb_lit(b, ",\"first_ns\":");
	evr__jb_u64(b, l->first_ns);
	evr__jb_lit(b, ",\"lane\":");
	evr__jb_u64(b, l->lane);
	if (l->reports > 1) {
		evr__jb_lit(b, ",\"reports\":");
		evr__jb_u64(b, l->reports);
	}
	/* A loss is worth seeing at once: flush as at a trace's end. */
	return end_line(j, true);
}

static int jsonl_skipped(void *ctx, const struct evr_skipped *g)
{
	struct jsonl *j = ctx;
	struct evr__jbuf *b = &j->jb;

	if (!j->f)
		return -EBADF; /* after on_close */
	evr__jb_lit(b, "{\"kind\":\"skipped\",\"count\":");
	evr__jb_u64(b, g->count);
	evr__jb_lit(b, ",\"handler\":");
	evr__jb_cstr(b, g->handler);
	evr__jb_lit(b, ",\"first_ns\":");
	evr__jb_u64(b, g->first_ns);
	evr__jb_lit(b, ",\"last_ns\":");
	evr__jb_u64(b, g->last_ns);
	evr__jb_lit(b, ",\"events\":");
	evr__jb_u64(b, g->events);
	evr__jb_lit(b, ",\"span_begins\":");
	evr__jb_u64(b, g->span_begins);
	evr__jb_lit(b, ",\"span_ends\":");
	evr__jb_u64(b, g->span_ends);
	evr__jb_lit(b, ",\"traces\":");
	evr__jb_u64(b, g->traces);
	evr__jb_lit(b, ",\"stalled\":");
	evr__jb_u64(b, g->stalled);
	/* As a loss: worth seeing at once. */
	return end_line(j, true);
}

/* A run: once as its source is attached, again (same run_id, every param) when its params change. */
static int jsonl_run(void *ctx, const struct evr_run_info *r)
{
	struct jsonl *j = ctx;
	struct evr__jbuf *b = &j->jb;

	if (!j->f)
		return -EBADF; /* after on_close */
	evr__jb_lit(b, "{\"kind\":\"run\",\"run_id\":");
	evr__jb_cstr(b, r->run_id);
	evr__jb_lit(b, ",\"experiment\":");
	evr__jb_cstr(b, r->experiment);
	evr__jb_lit(b, ",\"start_ns\":");
	evr__jb_u64(b, r->start_ns);
	evr__jb_lit(b, ",\"pid\":");
	evr__jb_u64(b, r->src ? r->src->pid : 0);
	evr__jb_lit(b, ",\"params\":{");
	for (uint32_t i = 0; i < r->nparams; i++) {
		if (i)
			evr__jb_char(b, ',');
		evr__jb_cstr(b, r->params[i].key);
		evr__jb_char(b, ':');
		evr__jb_cstr(b, r->params[i].value);
	}
	evr__jb_char(b, '}');
	return end_line(j, true);
}

/* A sample; "pid" null for the host's. */
static int jsonl_metric(void *ctx, const struct evr_metric *m)
{
	struct jsonl *j = ctx;
	struct evr__jbuf *b = &j->jb;

	if (!j->f)
		return -EBADF; /* after on_close */
	evr__jb_lit(b, "{\"kind\":\"metric\",\"name\":");
	evr__jb_cstr(b, m->name);
	evr__jb_lit(b, ",\"value\":");
	evr__jb_f64(b, m->value);
	evr__jb_lit(b, ",\"unit\":");
	evr__jb_cstr(b, m->unit);
	evr__jb_lit(b, ",\"ts_ns\":");
	evr__jb_u64(b, m->ts_ns);
	evr__jb_lit(b, ",\"pid\":");
	if (m->src)
		evr__jb_u64(b, m->src->pid);
	else
		evr__jb_lit(b, "null");
	return end_line(j, false);
}

/* The last lines out; 0, or the -errno of a write that failed during the run or now. */
static int jsonl_end(void *ctx)
{
	struct jsonl *j = ctx;
	int rc = 0;

	if (j->f) {
		rc = evr__jb_flush(&j->jb, true);
		errno = 0;
		if (fclose(j->f) != 0 && !rc)
			rc = errno ? -errno : -EIO;
		j->f = NULL;
	}
	return rc;
}

static void jsonl_close(void *ctx)
{
	jsonl_end(ctx);
}

static void jsonl_destroy(void *ctx)
{
	struct jsonl *j = ctx;

	jsonl_close(j);
	for (uint32_t i = 0; i < MEMO_N; i++)
		memo_clear(&j->memo[i]);
	evr__jb_free(&j->jb);
	free(j->path);
	free(j);
}

/* A number option's value: digits only, at most max. */
static bool opt_u64(const char *v, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t x = 0;

	if (!len)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9' || x > (max - (uint64_t)(v[i] - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return true;
}

/*
 * Splits "PATH[,rotate-size=MIB][,rotate-time=S][,keep=N]": the options are
 * the trailing comma-separated parts that name one (a path may hold commas).
 * Returns 0 or -EINVAL with err set.
 */
static int parse_arg(struct jsonl *j, const char *arg, char *err, size_t errlen)
{
	const char *end = arg + strlen(arg);
	uint64_t v;

	j->keep = JSONL_KEEP_DEFAULT;
	for (;;) {
		const char *comma = end;

		while (comma > arg && comma[-1] != ',')
			comma--;
		if (comma == arg)
			break;
		const char *o = comma;
		size_t len = (size_t)(end - o);

		if (len > 12 && !strncmp(o, "rotate-size=", 12)) {
			if (!opt_u64(o + 12, len - 12, 1u << 20, &v) || !v)
				return evr__builtin_err(err, errlen, -EINVAL,
							"jsonl: rotate-size wants MiB, 1 to 1048576, not '%.*s'",
							(int)(len - 12), o + 12);
			j->rotate_bytes = v << 20;
		} else if (len > 12 && !strncmp(o, "rotate-time=", 12)) {
			if (!opt_u64(o + 12, len - 12, 100u * 365 * 86400, &v) || !v)
				return evr__builtin_err(err, errlen, -EINVAL,
							"jsonl: rotate-time wants seconds > 0, not '%.*s'", (int)(len - 12),
							o + 12);
			j->rotate_ns = v * 1000000000ull;
		} else if (len > 5 && !strncmp(o, "keep=", 5)) {
			if (!opt_u64(o + 5, len - 5, JSONL_KEEP_MAX, &v) || !v)
				return evr__builtin_err(err, errlen, -EINVAL, "jsonl: keep wants 1 to %u files, not '%.*s'",
							JSONL_KEEP_MAX, (int)(len - 5), o + 5);
			j->keep = (uint32_t)v;
		} else {
			break; /* part of the path */
		}
		end = comma - 1;
	}
	j->path = end > arg ? strndup(arg, (size_t)(end - arg)) : strdup(JSONL_DEFAULT_PATH);
	if (!j->path)
		return evr__builtin_err(err, errlen, -ENOMEM, "jsonl: out of memory");
	return 0;
}

int evr__jsonl_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct jsonl *j = calloc(1, sizeof(*j));
	int e, rc;

	(void)out;
	if (!j)
		return evr__builtin_err(err, errlen, -ENOMEM, "jsonl: out of memory");
	if ((rc = parse_arg(j, arg ? arg : "", err, errlen)) != 0) {
		free(j->path);
		free(j);
		return rc;
	}
	/* Appended, as a log is: runs add to it rather than erase the last one. */
	j->f = evr__open_output(j->path, true);
	if (!j->f) {
		e = errno;
		evr__builtin_err(err, errlen, -e, "jsonl: cannot open '%s': %s", j->path, strerror(e));
		free(j->path);
		free(j);
		return -e;
	}
	if (evr__jb_init(&j->jb, j->f, JSONL_BUF) != 0) {
		fclose(j->f);
		free(j->path);
		free(j);
		return evr__builtin_err(err, errlen, -ENOMEM, "jsonl: out of memory");
	}
	setvbuf(j->f, NULL, _IONBF, 0); /* jb is the buffer: a full one goes out in one write */
	j->last_flush_ns = j->opened_ns = now_ns();
	h->name = "jsonl";
	h->ctx = j;
	h->on_event = jsonl_event;
	h->on_span_end = jsonl_span_end;
	h->on_trace_end = jsonl_trace_end;
	h->on_lost = jsonl_lost;
	h->on_skipped = jsonl_skipped;
	h->on_end = jsonl_end;
	h->destroy = jsonl_destroy;
	h->on_source_end = jsonl_source_end;
	h->on_idle = jsonl_idle;
	h->on_run = jsonl_run;
	h->on_metric = jsonl_metric;
	return 0;
}
