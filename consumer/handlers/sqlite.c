/*
 * sqlite.c: the "sqlite=PATH[,OPTION=VALUE...]" handler, the run store: runs,
 * their parameters, spans, events, metric samples, terminal log lines,
 * losses and gaps written into one SQLite database (README.md, "The run
 * store", documents every table and column; SCHEMA in sqlite_store.c is
 * the truth).
 *
 * Options: experiment=NAME (the experiment of runs whose consumer gives
 * none, and of every run when given), batch=N (rows per transaction,
 * default 4096), flush-ms=T (a partial batch is committed once its first
 * row is T ms old, default 200; also when the handler is idle),
 * busy-ms=T (how long to wait for a lock another writer holds, default
 * 2000).
 *
 * A run is one followed process in one consumer session. on_run gives its
 * id, experiment and parameters; a source whose run never arrives (a
 * consumer without run tracking) gets a run of the handler's own: a random
 * id, the experiment above, program, cmdline and pid from struct
 * evr_source. There is no processes table: a run is one process, so its
 * pid, program and cmdline are columns of runs. Opening a database that
 * holds runs already appends new ones.
 *
 * Rows go into one transaction at a time (prepared statements, WAL,
 * synchronous=NORMAL): committed every `batch` rows, when the oldest
 * uncommitted row is flush-ms old, when the handler is idle, at a source's
 * end and at the end. A consumer killed mid-run loses at most the rows of
 * the open transaction. A run's counters (spans, events, tokens, errors,
 * end_ns) are written into its row at each commit.
 *
 * Errors: a database that cannot be opened (a corrupt file, one locked by
 * another writer past busy-ms, a read-only file or directory, a newer
 * schema) leaves the handler broken, never the consumer: the cause is
 * printed on stderr once, naming the path and SQLite's message, and every
 * later callback returns -EIO, so the consumer counts and reports each
 * record not stored as the handler's error while the other handlers go on.
 * A write that fails mid-run (a full disk) loses the rows of its
 * transaction: they are counted (rows_failed), the first failure and then
 * every power of two printed, the callback returns -EIO, and the next
 * transaction tries again. At the end a line says how many rows were lost.
 *
 * Field JSON is written by json.c, as the jsonl handler writes its
 * "fields": a span's begin and end fields in one object, the end's value
 * winning on a repeated name, "<name>.truncated":true after a string the
 * producer cut.
 *
 * Threads: every callback runs on the handler's thread; the constructor
 * runs on the caller's, before the first of them. The connection is only
 * ever used by one thread at a time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "sqlite_store.h"

static void random_id(char out[33])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[16];
	size_t got = 0;

	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);

		if (n <= 0) { /* no entropy source: the clock and the address space, still unique enough per run */
			uint64_t t = evr__sqlite_now_ns() ^ (uint64_t)(uintptr_t)out;
			for (; got < sizeof(b); got++, t = t * 6364136223846793005ull + 1442695040888963407ull)
				b[got] = (unsigned char)(t >> 56);
			break;
		}
		got += (size_t)n;
	}
	for (int i = 0; i < 16; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[32] = '\0';
}

/* An id as jsonl writes it (lower-case hex without leading zeros); 0 binds NULL. */
static void bind_id(sqlite3_stmt *s, int col, uint64_t id, char buf[17])
{
	static const char hex[] = "0123456789abcdef";
	int n = 0;
	char tmp[16];

	if (!id) {
		sqlite3_bind_null(s, col);
		return;
	}
	while (id) {
		tmp[n++] = hex[id & 15];
		id >>= 4;
	}
	for (int i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	sqlite3_bind_text(s, col, buf, n, SQLITE_STATIC);
}

static void bind_cstr(sqlite3_stmt *s, int col, const char *v)
{
	if (v)
		sqlite3_bind_text(s, col, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, col);
}

/* ---- runs -------------------------------------------------------------------------------------------- */

/* params as one JSON object, in st->mbuf (length returned), or -1 without memory. */
static long params_json(struct sqlite_store *st, const struct evr_param *p, uint32_t n)
{
	fseeko(st->mf, 0, SEEK_SET);
	fputc_unlocked('{', st->mf);
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			fputc_unlocked(',', st->mf);
		evr__json_cstr(st->mf, p[i].key ? p[i].key : "");
		fputc_unlocked(':', st->mf);
		evr__json_cstr(st->mf, p[i].value);
	}
	fputc_unlocked('}', st->mf);
	if (fflush(st->mf) != 0)
		return -1;
	return (long)ftello(st->mf);
}

/* The params rows of run id (a key again replaces its value). Returns 0 or -1 (a write error: counted). */
static int param_rows(struct sqlite_store *st, const char *id, const struct evr_param *params, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (!params[i].key)
			continue;
		sqlite3_bind_text(st->st[ST_PARAM], 1, id, 32, SQLITE_STATIC);
		bind_cstr(st->st[ST_PARAM], 2, params[i].key);
		bind_cstr(st->st[ST_PARAM], 3, params[i].value);
		if (evr__sqlite_row_insert(st, st->st[ST_PARAM]) != 0)
			return -1;
	}
	return 0;
}

/*
 * Creates the run of src (its runs row and params rows). run: from on_run,
 * or NULL for one of the handler's own. Returns the run, or NULL (no
 * memory, or a write error: counted).
 */
static struct sqlite_run *run_create(struct sqlite_store *st, const struct evr_source *src, const struct evr_run_info *info,
			      uint64_t start_ns)
{
	struct evr_param own[2];
	const struct evr_param *params;
	uint32_t nparams;
	sqlite3_stmt *s = st->st[ST_RUN];
	struct sqlite_run *r = calloc(1, sizeof(*r));
	uint64_t *slot;
	bool added;
	long len;

	if (!r)
		return NULL;
	if (info && info->run_id && strlen(info->run_id) == 32) {
		memcpy(r->id, info->run_id, 33);
	} else {
		random_id(r->id);
	}
	if (info) {
		params = info->params;
		nparams = info->nparams;
		start_ns = info->start_ns;
	} else {
		own[0] = (struct evr_param){ "program", src ? src->program : NULL };
		own[1] = (struct evr_param){ "cmdline", src ? src->cmdline : NULL };
		params = own;
		nparams = 2;
	}
	r->pid = src ? src->pid : 0;
	r->end_ns = start_ns;
	if (evr__sqlite_tx_begin(st) != 0)
		goto fail;
	if ((len = params_json(st, params, nparams)) < 0)
		goto fail;
	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	bind_cstr(s, 2, !st->experiment_set && info && info->experiment ? info->experiment : st->experiment);
	sqlite3_bind_text(s, 3, st->session, 32, SQLITE_STATIC);
	if (src) {
		sqlite3_bind_int64(s, 4, src->pid);
		bind_cstr(s, 5, src->program);
		bind_cstr(s, 6, src->cmdline);
	}
	evr__sqlite_bind_u64(s, 7, start_ns);
	evr__sqlite_bind_u64(s, 8, start_ns);
	sqlite3_bind_text(s, 9, st->mbuf, (int)len, SQLITE_STATIC);
	if (evr__sqlite_row_insert(st, s) != 0)
		goto fail;
	if (param_rows(st, r->id, params, nparams) != 0)
		goto fail;
	if (!src)
		return r; /* never for records: a source-less run is not kept */
	slot = evr__pairmap_put(&st->runs, (uint64_t)src->index + 1, 0, &added);
	if (!slot)
		goto fail;
	if (!added)
		free((struct sqlite_run *)(uintptr_t)*slot);
	*slot = (uint64_t)(uintptr_t)r;
	return r;
fail:
	free(r);
	return NULL;
}

/*
 * A run given again (struct evr_run_info: the producer's evr_run_param after
 * attach), or given after records made one of the handler's own: its params
 * column and rows become the ones given, its counters stay. Returns 0 or -1
 * (a write error: counted).
 */
static int run_params(struct sqlite_store *st, struct sqlite_run *r, const struct evr_run_info *info)
{
	sqlite3_stmt *s = st->st[ST_RUN_PARAMS];
	long len;

	if (evr__sqlite_tx_begin(st) != 0 || (len = params_json(st, info->params, info->nparams)) < 0)
		return -1;
	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, st->mbuf, (int)len, SQLITE_STATIC);
	if (evr__sqlite_row_insert(st, s) != 0)
		return -1;
	return param_rows(st, r->id, info->params, info->nparams);
}

/* The run of src, created (one of the handler's own) at its first record. */
static struct sqlite_run *run_of(struct sqlite_store *st, const struct evr_source *src, uint64_t ts_ns)
{
	uint64_t *v = src ? evr__pairmap_get(&st->runs, (uint64_t)src->index + 1, 0) : NULL;
	struct sqlite_run *r = v ? (struct sqlite_run *)(uintptr_t)*v : NULL;

	if (!r && src)
		r = run_create(st, src, NULL, ts_ns);
	if (r && ts_ns > r->end_ns)
		r->end_ns = ts_ns;
	if (r)
		r->dirty = true;
	return r;
}

/* ---- field JSON -------------------------------------------------------------------------------------- */

/* The fields of a, then b, as one JSON object in st->mbuf; its length, or -1 (no memory). */
static long fields_json(struct sqlite_store *st, const struct evr_fields *a, const struct evr_fields *b)
{
	bool first = true;

	fseeko(st->mf, 0, SEEK_SET);
	fputc_unlocked('{', st->mf);
	evr__json_fields(st->mf, a, b, &first);
	fputc_unlocked('}', st->mf);
	if (fflush(st->mf) != 0)
		return -1;
	return (long)ftello(st->mf);
}

/* A field of the end, else of the begin. */
static const struct evr_value *span_field(const struct evr_span_rec *sp, const char *name)
{
	const struct evr_value *v = evr__field_find(sp->end_fields, name);

	return v ? v : evr__field_find(sp->begin_fields, name);
}

static const char *str_value(const struct evr_value *v)
{
	return v && v->type == EVR_V_STR ? v->s : NULL;
}

/* ---- callbacks ---------------------------------------------------------------------------------------- */

static int sqlite_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct sqlite_store *st = ctx;
	sqlite3_stmt *s = st->st[ST_SPAN];
	uint64_t in = 0, out = 0;
	bool has_in, has_out;
	const char *err_type;
	char tb[17], sb[17], pb[17];
	struct sqlite_run *r;
	long len;

	if (st->broken)
		return -EIO;
	if (!(r = run_of(st, sp->src, sp->end_ns ? sp->end_ns : sp->start_ns)) || evr__sqlite_tx_begin(st) != 0)
		return -EIO;
	if ((len = fields_json(st, sp->begin_fields, sp->end_fields)) < 0)
		return -ENOMEM;
	has_in = evr__value_u64(span_field(sp, "gen_ai.usage.input_tokens"), &in);
	has_out = evr__value_u64(span_field(sp, "gen_ai.usage.output_tokens"), &out);
	err_type = str_value(span_field(sp, "error.type"));
	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	bind_id(s, 2, sp->trace_id, tb);
	bind_id(s, 3, sp->span_id, sb);
	bind_id(s, 4, sp->parent_id, pb);
	bind_cstr(s, 5, evr__site_name(sp->site));
	bind_cstr(s, 6, evr__site_dispatcher(sp->site));
	evr__sqlite_bind_u64(s, 7, sp->start_ns);
	if (sp->end_ns) {
		evr__sqlite_bind_u64(s, 8, sp->end_ns);
		evr__sqlite_bind_u64(s, 9, evr__span_duration_ns(sp));
	}
	bind_cstr(s, 10, evr__span_status_name(sp->status));
	sqlite3_bind_int64(s, 11, sp->flags);
	sqlite3_bind_int64(s, 12, sp->src ? sp->src->pid : 0);
	sqlite3_bind_int64(s, 13, sp->tid);
	sqlite3_bind_int64(s, 14, sp->events);
	sqlite3_bind_text(s, 15, st->mbuf, (int)len, SQLITE_STATIC);
	bind_cstr(s, 16, str_value(span_field(sp, "gen_ai.request.model")));
	if (has_in)
		evr__sqlite_bind_u64(s, 17, in);
	if (has_out)
		evr__sqlite_bind_u64(s, 18, out);
	if (has_in || has_out)
		evr__sqlite_bind_u64(s, 19, in + out);
	bind_cstr(s, 20, err_type);
	r->spans++;
	r->errors += sp->status == EVR_SPAN_DROPPED || err_type;
	r->input_tokens += in;
	r->output_tokens += out;
	return evr__sqlite_row_insert(st, s);
}

/* A line of the producer's stdout or stderr (dispatcher evring.stdio): a logs row. */
static int log_insert(struct sqlite_store *st, struct sqlite_run *r, const struct evr_event *ev)
{
	sqlite3_stmt *s = st->st[ST_LOG];
	const struct evr_value *text = evr__field_find(ev->fields, "text");
	const struct evr_value *cut = evr__field_find(ev->fields, "truncated");
	bool truncated = (cut && cut->type == EVR_V_BOOL && cut->b) || (text && text->truncated);

	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, ev->src->pid);
	sqlite3_bind_int64(s, 3, ev->tid);
	evr__sqlite_bind_u64(s, 4, ev->ts_ns);
	bind_cstr(s, 5, evr__site_name(ev->site));
	if (text && text->type == EVR_V_STR)
		sqlite3_bind_text(s, 6, text->s, (int)text->len, SQLITE_STATIC);
	sqlite3_bind_int(s, 7, truncated);
	r->logs++;
	return evr__sqlite_row_insert(st, s);
}

static int sqlite_event(void *ctx, const struct evr_event *ev)
{
	struct sqlite_store *st = ctx;
	sqlite3_stmt *s = st->st[ST_EVENT];
	const char *disp = evr__site_dispatcher(ev->site);
	char sb[17], tb[17];
	struct sqlite_run *r;
	long len;

	if (st->broken)
		return -EIO;
	if (!(r = run_of(st, ev->src, ev->ts_ns)) || evr__sqlite_tx_begin(st) != 0)
		return -EIO;
	if (disp && !strcmp(disp, STDIO_DISPATCHER))
		return log_insert(st, r, ev);
	if ((len = fields_json(st, ev->fields, NULL)) < 0)
		return -ENOMEM;
	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	bind_cstr(s, 2, evr__site_name(ev->site));
	bind_cstr(s, 3, disp);
	evr__sqlite_bind_u64(s, 4, ev->ts_ns);
	bind_id(s, 5, ev->span_id, sb);
	bind_id(s, 6, ev->trace_id, tb);
	sqlite3_bind_int64(s, 7, ev->src ? ev->src->pid : 0);
	sqlite3_bind_int64(s, 8, ev->tid);
	sqlite3_bind_int(s, 9, ev->late);
	sqlite3_bind_text(s, 10, st->mbuf, (int)len, SQLITE_STATIC);
	r->events++;
	return evr__sqlite_row_insert(st, s);
}

/* A span whose parent never arrived is known only when its trace goes out: its flags row is updated then. */
static int sqlite_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct sqlite_store *st = ctx;
	sqlite3_stmt *s = st->st[ST_SPAN_FLAGS];
	char tb[17], sb[17];
	struct sqlite_run *r;
	int rc = 0;

	if (st->broken)
		return -EIO;
	for (uint32_t i = 0; i < tr->nspans && rc == 0; i++) {
		const struct evr_span_rec *sp = tr->spans[i];

		if (!(sp->flags & EVR_SPAN_MISSING_PARENT))
			continue;
		if (!(r = run_of(st, sp->src, sp->end_ns)) || evr__sqlite_tx_begin(st) != 0)
			return -EIO;
		sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
		bind_id(s, 2, sp->trace_id, tb);
		bind_id(s, 3, sp->span_id, sb);
		sqlite3_bind_int64(s, 4, EVR_SPAN_MISSING_PARENT);
		rc = evr__sqlite_row_insert(st, s);
	}
	return rc;
}

static int sqlite_lost(void *ctx, const struct evr_lost *l)
{
	struct sqlite_store *st = ctx;
	sqlite3_stmt *s = st->st[ST_LOSS];
	struct sqlite_run *r;

	if (st->broken)
		return -EIO;
	if (!(r = run_of(st, l->src, l->ts_ns)) || evr__sqlite_tx_begin(st) != 0)
		return -EIO;
	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, l->src ? l->src->pid : 0);
	sqlite3_bind_int64(s, 3, l->tid);
	sqlite3_bind_int64(s, 4, l->lane);
	evr__sqlite_bind_u64(s, 5, l->ts_ns);
	evr__sqlite_bind_u64(s, 6, l->first_ns);
	evr__sqlite_bind_u64(s, 7, l->count);
	sqlite3_bind_int64(s, 8, l->reports);
	r->lost += l->count;
	return evr__sqlite_row_insert(st, s);
}

static int sqlite_skipped(void *ctx, const struct evr_skipped *g)
{
	struct sqlite_store *st = ctx;
	sqlite3_stmt *s = st->st[ST_GAP];

	if (st->broken)
		return -EIO;
	if (evr__sqlite_tx_begin(st) != 0)
		return -EIO;
	sqlite3_bind_text(s, 1, st->session, 32, SQLITE_STATIC);
	evr__sqlite_bind_u64(s, 2, g->first_ns);
	evr__sqlite_bind_u64(s, 3, g->last_ns);
	evr__sqlite_bind_u64(s, 4, g->count);
	evr__sqlite_bind_u64(s, 5, g->events);
	evr__sqlite_bind_u64(s, 6, g->span_begins);
	evr__sqlite_bind_u64(s, 7, g->span_ends);
	evr__sqlite_bind_u64(s, 8, g->traces);
	evr__sqlite_bind_u64(s, 9, g->stalled);
	return evr__sqlite_row_insert(st, s);
}

static int sqlite_metric(void *ctx, const struct evr_metric *m)
{
	struct sqlite_store *st = ctx;
	sqlite3_stmt *s = st->st[ST_METRIC];
	struct sqlite_run *r = NULL;

	if (st->broken)
		return -EIO;
	if ((m->src && !(r = run_of(st, m->src, m->ts_ns))) || evr__sqlite_tx_begin(st) != 0)
		return -EIO;
	if (r) {
		sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, m->src->pid);
		r->metrics++;
	}
	sqlite3_bind_text(s, 2, st->session, 32, SQLITE_STATIC);
	evr__sqlite_bind_u64(s, 4, m->ts_ns);
	bind_cstr(s, 5, m->name ? m->name : "");
	sqlite3_bind_double(s, 6, m->value);
	bind_cstr(s, 7, m->unit);
	return evr__sqlite_row_insert(st, s);
}

static int sqlite_run(void *ctx, const struct evr_run_info *info)
{
	struct sqlite_store *st = ctx;
	uint64_t *v;

	if (st->broken)
		return -EIO;
	v = info->src ? evr__pairmap_get(&st->runs, (uint64_t)info->src->index + 1, 0) : NULL;
	if (v) /* the run again, its params changed (or records came first): the params are the new ones */
		return run_params(st, (struct sqlite_run *)(uintptr_t)*v, info) ? -EIO : 0;
	if (info->src)
		return run_create(st, info->src, info, info->start_ns) ? 0 : -EIO;
	struct sqlite_run *r = run_create(st, NULL, info, info->start_ns);

	free(r);
	return r ? 0 : -EIO;
}

static int sqlite_source_end(void *ctx, const struct evr_source *src)
{
	struct sqlite_store *st = ctx;
	uint64_t v;
	int rc = 0;

	if (st->broken)
		return 0;
	if (!evr__pairmap_remove(&st->runs, (uint64_t)src->index + 1, 0, &v))
		return 0;
	struct sqlite_run *r = (struct sqlite_run *)(uintptr_t)v;

	if (r->dirty && evr__sqlite_tx_begin(st) == 0 && evr__sqlite_run_update(st, r) != 0)
		rc = evr__sqlite_write_failed(st, "run update");
	free(r);
	if (evr__sqlite_tx_commit(st) != 0)
		rc = -EIO;
	return rc;
}

static void sqlite_idle(void *ctx)
{
	struct sqlite_store *st = ctx;

	if (!st->broken && st->in_tx)
		evr__sqlite_tx_commit(st);
}

static int sqlite_end(void *ctx)
{
	struct sqlite_store *st = ctx;
	int rc;

	if (st->broken)
		return -EIO;
	rc = evr__sqlite_tx_commit(st);
	if (st->rows_failed)
		fprintf(stderr, "evring: handler \"sqlite\": '%s': %" PRIu64 " rows not written (%" PRIu64
				" written)\n",
			st->path, st->rows_failed, st->rows_written);
	return rc ? rc : st->rows_failed ? -EIO : 0;
}

static void sqlite_destroy(void *ctx)
{
	evr__sqlite_store_free(ctx);
}

int evr__sqlite_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct sqlite_store *st = calloc(1, sizeof(*st));
	char msg[1024];
	int rc;

	(void)out;
	if (!st)
		return evr__builtin_err(err, errlen, -ENOMEM, "sqlite: out of memory");
	if ((rc = evr__sqlite_parse_arg(st, arg ? arg : "", err, errlen)) != 0) {
		evr__sqlite_store_free(st);
		return rc;
	}
	if (!(st->mf = open_memstream(&st->mbuf, &st->msize))) {
		evr__sqlite_store_free(st);
		return evr__builtin_err(err, errlen, -ENOMEM, "sqlite: out of memory");
	}
	random_id(st->session);
	/*
	 * A database that cannot be used breaks this handler, not the run: the
	 * other handlers go on, and each record this one cannot store is
	 * counted as its error.
	 */
	if (evr__sqlite_store_open(st, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "evring: handler \"sqlite\": %s; nothing will be stored\n", msg);
		st->broken = true;
	}
	h->name = "sqlite";
	h->ctx = st;
	h->on_event = sqlite_event;
	h->on_span_end = sqlite_span_end;
	h->on_trace_end = sqlite_trace_end;
	h->on_lost = sqlite_lost;
	h->on_skipped = sqlite_skipped;
	h->on_metric = sqlite_metric;
	h->on_run = sqlite_run;
	h->on_source_end = sqlite_source_end;
	h->on_idle = sqlite_idle;
	h->on_end = sqlite_end;
	h->destroy = sqlite_destroy;
	return 0;
}
