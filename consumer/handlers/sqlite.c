/*
 * sqlite.c: the "sqlite=PATH[,OPTION=VALUE...]" handler, the run store: runs,
 * their parameters, spans, events, metric samples, terminal log lines,
 * losses and gaps written into one SQLite database (README.md, "The run
 * store", documents every table and column; SCHEMA below is the truth).
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

#include <sqlite3.h>

#include "builtin.h"
#include "json.h"

#define SQLITE_SCHEMA_VERSION 1
#define STR_(x) #x
#define STR(x) STR_(x)
#define BATCH_DEFAULT 4096u
#define FLUSH_MS_DEFAULT 200u
#define BUSY_MS_DEFAULT 2000u
#define STDIO_DISPATCHER "evring.stdio"

/* Changing a table here changes the format: bump SQLITE_SCHEMA_VERSION and say so in README.md. */
static const char SCHEMA[] =
	"CREATE TABLE schema_version(version INTEGER NOT NULL);"
	"CREATE TABLE runs(run_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, session TEXT NOT NULL,"
	" pid INTEGER, program TEXT, cmdline TEXT, start_ns INTEGER NOT NULL, end_ns INTEGER,"
	" params TEXT NOT NULL DEFAULT '{}', spans INTEGER NOT NULL DEFAULT 0, events INTEGER NOT NULL DEFAULT 0,"
	" logs INTEGER NOT NULL DEFAULT 0, metrics INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,"
	" lost INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0,"
	" output_tokens INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE params(run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT, PRIMARY KEY(run_id, key));"
	"CREATE TABLE spans(run_id TEXT NOT NULL, trace_id TEXT, span_id TEXT NOT NULL, parent_id TEXT,"
	" name TEXT, dispatcher TEXT, start_ns INTEGER, end_ns INTEGER, duration_ns INTEGER, status TEXT NOT NULL,"
	" flags INTEGER NOT NULL, pid INTEGER, tid INTEGER, events INTEGER, fields TEXT NOT NULL, model TEXT,"
	" input_tokens INTEGER, output_tokens INTEGER, total_tokens INTEGER, error_type TEXT);"
	"CREATE INDEX spans_trace ON spans(trace_id);"
	"CREATE INDEX spans_name ON spans(name);"
	"CREATE INDEX spans_start ON spans(start_ns);"
	"CREATE TABLE events(run_id TEXT NOT NULL, name TEXT, dispatcher TEXT, ts_ns INTEGER NOT NULL,"
	" span_id TEXT, trace_id TEXT, pid INTEGER, tid INTEGER, late INTEGER NOT NULL, fields TEXT NOT NULL);"
	"CREATE INDEX events_ts ON events(ts_ns);"
	"CREATE TABLE metrics(run_id TEXT, session TEXT NOT NULL, pid INTEGER, ts_ns INTEGER NOT NULL,"
	" name TEXT NOT NULL, value REAL, unit TEXT);"
	"CREATE INDEX metrics_run ON metrics(run_id, name, ts_ns);"
	"CREATE TABLE logs(run_id TEXT NOT NULL, pid INTEGER, tid INTEGER, ts_ns INTEGER NOT NULL,"
	" stream TEXT NOT NULL, text TEXT, truncated INTEGER NOT NULL);"
	"CREATE INDEX logs_run ON logs(run_id, ts_ns);"
	"CREATE TABLE losses(run_id TEXT NOT NULL, pid INTEGER, tid INTEGER, lane INTEGER, ts_ns INTEGER,"
	" first_ns INTEGER, count INTEGER NOT NULL, reports INTEGER NOT NULL);"
	"CREATE TABLE gaps(session TEXT NOT NULL, first_ns INTEGER, last_ns INTEGER, count INTEGER NOT NULL,"
	" events INTEGER, span_begins INTEGER, span_ends INTEGER, traces INTEGER, stalled INTEGER);";

enum stmt_id {
	ST_SPAN,
	ST_EVENT,
	ST_METRIC,
	ST_LOG,
	ST_LOSS,
	ST_GAP,
	ST_RUN,
	ST_PARAM,
	ST_RUN_UPDATE,
	ST_SPAN_FLAGS,
	ST_N
};

static const char *const STMTS[ST_N] = {
	[ST_SPAN] = "INSERT INTO spans VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
	[ST_EVENT] = "INSERT INTO events VALUES(?,?,?,?,?,?,?,?,?,?)",
	[ST_METRIC] = "INSERT INTO metrics VALUES(?,?,?,?,?,?,?)",
	[ST_LOG] = "INSERT INTO logs VALUES(?,?,?,?,?,?,?)",
	[ST_LOSS] = "INSERT INTO losses VALUES(?,?,?,?,?,?,?,?)",
	[ST_GAP] = "INSERT INTO gaps VALUES(?,?,?,?,?,?,?,?,?)",
	[ST_RUN] = "INSERT INTO runs(run_id, experiment, session, pid, program, cmdline, start_ns, end_ns, params)"
		   " VALUES(?,?,?,?,?,?,?,?,?)",
	[ST_PARAM] = "INSERT OR REPLACE INTO params VALUES(?,?,?)",
	[ST_RUN_UPDATE] = "UPDATE runs SET end_ns=?2, spans=?3, events=?4, logs=?5, metrics=?6, errors=?7, lost=?8,"
			  " input_tokens=?9, output_tokens=?10 WHERE run_id=?1",
	[ST_SPAN_FLAGS] = "UPDATE spans SET flags=flags|?4 WHERE run_id=?1 AND trace_id=?2 AND span_id=?3",
};

/* One run: created at its source's first record (or on_run), freed at its on_source_end. */
struct run {
	char id[33];
	uint32_t pid;
	uint64_t end_ns; /* the latest record time seen */
	uint64_t spans, events, logs, metrics, errors, lost, input_tokens, output_tokens;
	bool dirty; /* counters changed since its row was last written */
};

/*
 * The handler. Written by its thread only (the constructor before). runs
 * maps (source index + 1, 0) to a struct run *.
 */
struct store {
	char *path, *experiment;
	bool experiment_set; /* given as an option: it wins over on_run's */
	uint32_t batch;
	uint64_t flush_ns;
	uint32_t busy_ms;
	sqlite3 *db;
	sqlite3_stmt *st[ST_N];
	bool broken;	    /* never opened: every callback fails */
	bool in_tx;
	uint32_t pending;   /* rows in the open transaction */
	uint64_t tx_ns;	    /* CLOCK_MONOTONIC_COARSE at its first row */
	uint64_t rows_written, rows_failed, write_errors;
	char session[33];
	struct evr__pairmap runs;
	FILE *mf; /* a memory stream for field JSON */
	char *mbuf;
	size_t msize;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void random_id(char out[33])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[16];
	size_t got = 0;

	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);

		if (n <= 0) { /* no entropy source: the clock and the address space, still unique enough per run */
			uint64_t t = now_ns() ^ (uint64_t)(uintptr_t)out;
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

static void bind_u64(sqlite3_stmt *s, int col, uint64_t v)
{
	/* SQLite integers are signed 64-bit: a time or count past 2^63 is stored as a real. */
	if (v > (uint64_t)INT64_MAX)
		sqlite3_bind_double(s, col, (double)v);
	else
		sqlite3_bind_int64(s, col, (sqlite3_int64)v);
}

/* ---- errors ------------------------------------------------------------------------------------------ */

/* A write that failed: counted; the first and then every power of two printed. Returns -EIO. */
static int write_failed(struct store *st, const char *what)
{
	uint64_t n = ++st->write_errors;

	if ((n & (n - 1)) == 0)
		fprintf(stderr, "evring: handler \"sqlite\": '%s': %s: %s (%" PRIu64 " write error%s so far)\n",
			st->path, what, sqlite3_errmsg(st->db), n, n == 1 ? "" : "s");
	return -EIO;
}

/* ---- transactions ------------------------------------------------------------------------------------- */

static int exec(struct store *st, const char *sql)
{
	return sqlite3_exec(st->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

static int run_row_update(struct store *st, struct run *r)
{
	sqlite3_stmt *s = st->st[ST_RUN_UPDATE];
	int rc;

	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	bind_u64(s, 2, r->end_ns);
	bind_u64(s, 3, r->spans);
	bind_u64(s, 4, r->events);
	bind_u64(s, 5, r->logs);
	bind_u64(s, 6, r->metrics);
	bind_u64(s, 7, r->errors);
	bind_u64(s, 8, r->lost);
	bind_u64(s, 9, r->input_tokens);
	bind_u64(s, 10, r->output_tokens);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return -EIO;
	r->dirty = false;
	return 0;
}

/* Commits the open transaction, with the counters of every run changed in it. Returns 0 or -EIO. */
static int tx_commit(struct store *st)
{
	int rc = 0;

	if (!st->in_tx)
		return 0;
	for (uint32_t i = 0; i < st->runs.cap && rc == 0; i++) {
		struct evr__pair_slot *sl = &st->runs.slots[i];
		struct run *r = (struct run *)(uintptr_t)sl->v;

		if ((sl->a || sl->b) && r->dirty)
			rc = run_row_update(st, r);
	}
	if (rc == 0 && exec(st, "COMMIT") == 0) {
		st->rows_written += st->pending;
	} else {
		rc = write_failed(st, "commit");
		st->rows_failed += st->pending;
		if (!sqlite3_get_autocommit(st->db))
			exec(st, "ROLLBACK");
	}
	st->in_tx = false;
	st->pending = 0;
	return rc;
}

/* Opens a transaction when none is. Returns 0 or -EIO. */
static int tx_begin(struct store *st)
{
	if (st->in_tx)
		return 0;
	if (exec(st, "BEGIN") != 0)
		return write_failed(st, "begin");
	st->in_tx = true;
	st->tx_ns = now_ns();
	return 0;
}

/*
 * Steps an insert inside the transaction (opened here when the row before
 * committed it); commits when the batch is full or old. Returns 0 or -EIO.
 */
static int row_insert(struct store *st, sqlite3_stmt *s)
{
	int rc = tx_begin(st);

	if (rc != 0) {
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		st->rows_failed++;
		return rc;
	}
	rc = sqlite3_step(s);

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE) {
		st->rows_failed++;
		rc = write_failed(st, "insert");
		if (sqlite3_get_autocommit(st->db)) { /* SQLite rolled the transaction back */
			st->rows_failed += st->pending;
			st->pending = 0;
			st->in_tx = false;
		} else if (!st->pending) {
			/*
			 * Nothing written in it yet (the first insert could not take
			 * the write lock): end it, so that the next row starts from
			 * a fresh snapshot rather than one another writer moved past.
			 */
			exec(st, "ROLLBACK");
			st->in_tx = false;
		}
		return rc;
	}
	st->pending++;
	if (st->pending >= st->batch || now_ns() - st->tx_ns >= st->flush_ns)
		return tx_commit(st);
	return 0;
}

/* ---- runs -------------------------------------------------------------------------------------------- */

/* params as one JSON object, in st->mbuf (length returned), or -1 without memory. */
static long params_json(struct store *st, const struct evr_param *p, uint32_t n)
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

/*
 * Creates the run of src (its runs row and params rows). run: from on_run,
 * or NULL for one of the handler's own. Returns the run, or NULL (no
 * memory, or a write error: counted).
 */
static struct run *run_create(struct store *st, const struct evr_source *src, const struct evr_run_info *info,
			      uint64_t start_ns)
{
	struct evr_param own[2];
	const struct evr_param *params;
	uint32_t nparams;
	sqlite3_stmt *s = st->st[ST_RUN];
	struct run *r = calloc(1, sizeof(*r));
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
	if (tx_begin(st) != 0)
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
	bind_u64(s, 7, start_ns);
	bind_u64(s, 8, start_ns);
	sqlite3_bind_text(s, 9, st->mbuf, (int)len, SQLITE_STATIC);
	if (row_insert(st, s) != 0)
		goto fail;
	for (uint32_t i = 0; i < nparams; i++) {
		if (!params[i].key)
			continue;
		sqlite3_bind_text(st->st[ST_PARAM], 1, r->id, 32, SQLITE_STATIC);
		bind_cstr(st->st[ST_PARAM], 2, params[i].key);
		bind_cstr(st->st[ST_PARAM], 3, params[i].value);
		if (row_insert(st, st->st[ST_PARAM]) != 0)
			goto fail;
	}
	if (!src)
		return r; /* never for records: a source-less run is not kept */
	slot = evr__pairmap_put(&st->runs, (uint64_t)src->index + 1, 0, &added);
	if (!slot)
		goto fail;
	if (!added)
		free((struct run *)(uintptr_t)*slot);
	*slot = (uint64_t)(uintptr_t)r;
	return r;
fail:
	free(r);
	return NULL;
}

/* The run of src, created (one of the handler's own) at its first record. */
static struct run *run_of(struct store *st, const struct evr_source *src, uint64_t ts_ns)
{
	uint64_t *v = src ? evr__pairmap_get(&st->runs, (uint64_t)src->index + 1, 0) : NULL;
	struct run *r = v ? (struct run *)(uintptr_t)*v : NULL;

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
static long fields_json(struct store *st, const struct evr_fields *a, const struct evr_fields *b)
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
	struct store *st = ctx;
	sqlite3_stmt *s = st->st[ST_SPAN];
	uint64_t in = 0, out = 0;
	bool has_in, has_out;
	const char *err_type;
	char tb[17], sb[17], pb[17];
	struct run *r;
	long len;

	if (st->broken)
		return -EIO;
	if (!(r = run_of(st, sp->src, sp->end_ns ? sp->end_ns : sp->start_ns)) || tx_begin(st) != 0)
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
	bind_u64(s, 7, sp->start_ns);
	if (sp->end_ns) {
		bind_u64(s, 8, sp->end_ns);
		bind_u64(s, 9, evr__span_duration_ns(sp));
	}
	bind_cstr(s, 10, evr__span_status_name(sp->status));
	sqlite3_bind_int64(s, 11, sp->flags);
	sqlite3_bind_int64(s, 12, sp->src ? sp->src->pid : 0);
	sqlite3_bind_int64(s, 13, sp->tid);
	sqlite3_bind_int64(s, 14, sp->events);
	sqlite3_bind_text(s, 15, st->mbuf, (int)len, SQLITE_STATIC);
	bind_cstr(s, 16, str_value(span_field(sp, "gen_ai.request.model")));
	if (has_in)
		bind_u64(s, 17, in);
	if (has_out)
		bind_u64(s, 18, out);
	if (has_in || has_out)
		bind_u64(s, 19, in + out);
	bind_cstr(s, 20, err_type);
	r->spans++;
	r->errors += sp->status == EVR_SPAN_DROPPED || err_type;
	r->input_tokens += in;
	r->output_tokens += out;
	return row_insert(st, s);
}

/* A line of the producer's stdout or stderr (dispatcher evring.stdio): a logs row. */
static int log_insert(struct store *st, struct run *r, const struct evr_event *ev)
{
	sqlite3_stmt *s = st->st[ST_LOG];
	const struct evr_value *text = evr__field_find(ev->fields, "text");
	const struct evr_value *cut = evr__field_find(ev->fields, "truncated");
	bool truncated = (cut && cut->type == EVR_V_BOOL && cut->b) || (text && text->truncated);

	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, ev->src->pid);
	sqlite3_bind_int64(s, 3, ev->tid);
	bind_u64(s, 4, ev->ts_ns);
	bind_cstr(s, 5, evr__site_name(ev->site));
	if (text && text->type == EVR_V_STR)
		sqlite3_bind_text(s, 6, text->s, (int)text->len, SQLITE_STATIC);
	sqlite3_bind_int(s, 7, truncated);
	r->logs++;
	return row_insert(st, s);
}

static int sqlite_event(void *ctx, const struct evr_event *ev)
{
	struct store *st = ctx;
	sqlite3_stmt *s = st->st[ST_EVENT];
	const char *disp = evr__site_dispatcher(ev->site);
	char sb[17], tb[17];
	struct run *r;
	long len;

	if (st->broken)
		return -EIO;
	if (!(r = run_of(st, ev->src, ev->ts_ns)) || tx_begin(st) != 0)
		return -EIO;
	if (disp && !strcmp(disp, STDIO_DISPATCHER))
		return log_insert(st, r, ev);
	if ((len = fields_json(st, ev->fields, NULL)) < 0)
		return -ENOMEM;
	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	bind_cstr(s, 2, evr__site_name(ev->site));
	bind_cstr(s, 3, disp);
	bind_u64(s, 4, ev->ts_ns);
	bind_id(s, 5, ev->span_id, sb);
	bind_id(s, 6, ev->trace_id, tb);
	sqlite3_bind_int64(s, 7, ev->src ? ev->src->pid : 0);
	sqlite3_bind_int64(s, 8, ev->tid);
	sqlite3_bind_int(s, 9, ev->late);
	sqlite3_bind_text(s, 10, st->mbuf, (int)len, SQLITE_STATIC);
	r->events++;
	return row_insert(st, s);
}

/* A span whose parent never arrived is known only when its trace goes out: its flags row is updated then. */
static int sqlite_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct store *st = ctx;
	sqlite3_stmt *s = st->st[ST_SPAN_FLAGS];
	char tb[17], sb[17];
	struct run *r;
	int rc = 0;

	if (st->broken)
		return -EIO;
	for (uint32_t i = 0; i < tr->nspans && rc == 0; i++) {
		const struct evr_span_rec *sp = tr->spans[i];

		if (!(sp->flags & EVR_SPAN_MISSING_PARENT))
			continue;
		if (!(r = run_of(st, sp->src, sp->end_ns)) || tx_begin(st) != 0)
			return -EIO;
		sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
		bind_id(s, 2, sp->trace_id, tb);
		bind_id(s, 3, sp->span_id, sb);
		sqlite3_bind_int64(s, 4, EVR_SPAN_MISSING_PARENT);
		rc = row_insert(st, s);
	}
	return rc;
}

static int sqlite_lost(void *ctx, const struct evr_lost *l)
{
	struct store *st = ctx;
	sqlite3_stmt *s = st->st[ST_LOSS];
	struct run *r;

	if (st->broken)
		return -EIO;
	if (!(r = run_of(st, l->src, l->ts_ns)) || tx_begin(st) != 0)
		return -EIO;
	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, l->src ? l->src->pid : 0);
	sqlite3_bind_int64(s, 3, l->tid);
	sqlite3_bind_int64(s, 4, l->lane);
	bind_u64(s, 5, l->ts_ns);
	bind_u64(s, 6, l->first_ns);
	bind_u64(s, 7, l->count);
	sqlite3_bind_int64(s, 8, l->reports);
	r->lost += l->count;
	return row_insert(st, s);
}

static int sqlite_skipped(void *ctx, const struct evr_skipped *g)
{
	struct store *st = ctx;
	sqlite3_stmt *s = st->st[ST_GAP];

	if (st->broken)
		return -EIO;
	if (tx_begin(st) != 0)
		return -EIO;
	sqlite3_bind_text(s, 1, st->session, 32, SQLITE_STATIC);
	bind_u64(s, 2, g->first_ns);
	bind_u64(s, 3, g->last_ns);
	bind_u64(s, 4, g->count);
	bind_u64(s, 5, g->events);
	bind_u64(s, 6, g->span_begins);
	bind_u64(s, 7, g->span_ends);
	bind_u64(s, 8, g->traces);
	bind_u64(s, 9, g->stalled);
	return row_insert(st, s);
}

static int sqlite_metric(void *ctx, const struct evr_metric *m)
{
	struct store *st = ctx;
	sqlite3_stmt *s = st->st[ST_METRIC];
	struct run *r = NULL;

	if (st->broken)
		return -EIO;
	if ((m->src && !(r = run_of(st, m->src, m->ts_ns))) || tx_begin(st) != 0)
		return -EIO;
	if (r) {
		sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, m->src->pid);
		r->metrics++;
	}
	sqlite3_bind_text(s, 2, st->session, 32, SQLITE_STATIC);
	bind_u64(s, 4, m->ts_ns);
	bind_cstr(s, 5, m->name ? m->name : "");
	sqlite3_bind_double(s, 6, m->value);
	bind_cstr(s, 7, m->unit);
	return row_insert(st, s);
}

static int sqlite_run(void *ctx, const struct evr_run_info *info)
{
	struct store *st = ctx;
	uint64_t *v;

	if (st->broken)
		return -EIO;
	v = info->src ? evr__pairmap_get(&st->runs, (uint64_t)info->src->index + 1, 0) : NULL;
	if (v) /* records of the source came first after all: its run stands */
		return 0;
	if (info->src)
		return run_create(st, info->src, info, info->start_ns) ? 0 : -EIO;
	struct run *r = run_create(st, NULL, info, info->start_ns);

	free(r);
	return r ? 0 : -EIO;
}

static int sqlite_source_end(void *ctx, const struct evr_source *src)
{
	struct store *st = ctx;
	uint64_t v;
	int rc = 0;

	if (st->broken)
		return 0;
	if (!evr__pairmap_remove(&st->runs, (uint64_t)src->index + 1, 0, &v))
		return 0;
	struct run *r = (struct run *)(uintptr_t)v;

	if (r->dirty && tx_begin(st) == 0 && run_row_update(st, r) != 0)
		rc = write_failed(st, "run update");
	free(r);
	if (tx_commit(st) != 0)
		rc = -EIO;
	return rc;
}

static void sqlite_idle(void *ctx)
{
	struct store *st = ctx;

	if (!st->broken && st->in_tx)
		tx_commit(st);
}

static int sqlite_end(void *ctx)
{
	struct store *st = ctx;
	int rc;

	if (st->broken)
		return -EIO;
	rc = tx_commit(st);
	if (st->rows_failed)
		fprintf(stderr, "evring: handler \"sqlite\": '%s': %" PRIu64 " rows not written (%" PRIu64
				" written)\n",
			st->path, st->rows_failed, st->rows_written);
	return rc ? rc : st->rows_failed ? -EIO : 0;
}

static void store_free(struct store *st)
{
	for (uint32_t i = 0; i < st->runs.cap; i++)
		if (st->runs.slots[i].a || st->runs.slots[i].b)
			free((struct run *)(uintptr_t)st->runs.slots[i].v);
	evr__pairmap_free(&st->runs);
	for (int i = 0; i < ST_N; i++)
		sqlite3_finalize(st->st[i]);
	if (st->db)
		sqlite3_close(st->db);
	if (st->mf)
		fclose(st->mf);
	free(st->mbuf);
	free(st->path);
	free(st->experiment);
	free(st);
}

static void sqlite_destroy(void *ctx)
{
	store_free(ctx);
}

/* ---- opening ------------------------------------------------------------------------------------------ */

/* The schema version of an open database: 0 when it is empty (no tables), -1 when it is not a run store. */
static int schema_read(struct store *st, int *version)
{
	sqlite3_stmt *s;
	int rc, tables = 0;

	*version = -1;
	rc = sqlite3_prepare_v2(st->db, "SELECT count(*) FROM sqlite_master WHERE type='table'", -1, &s, NULL);
	if (rc != SQLITE_OK)
		return rc;
	if ((rc = sqlite3_step(s)) == SQLITE_ROW)
		tables = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return rc;
	if (!tables) {
		*version = 0;
		return SQLITE_OK;
	}
	rc = sqlite3_prepare_v2(st->db, "SELECT max(version) FROM schema_version", -1, &s, NULL);
	if (rc != SQLITE_OK)
		return SQLITE_OK; /* tables, none of them ours: -1 */
	if ((rc = sqlite3_step(s)) == SQLITE_ROW && sqlite3_column_type(s, 0) == SQLITE_INTEGER)
		*version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Opens and prepares the database; on failure writes the cause into msg and returns -1. */
static int store_open(struct store *st, char *msg, size_t msglen)
{
	int rc, version;
	const char *what;

	/* Created 0600, as jsonl's files: it may hold prompts and completions (SQLite gives its -wal the same mode). */
	int fd = open(st->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd >= 0)
		close(fd);
	rc = sqlite3_open_v2(st->path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc != SQLITE_OK) {
		what = "cannot open";
		goto fail;
	}
	sqlite3_busy_timeout(st->db, (int)st->busy_ms);
	if (sqlite3_db_readonly(st->db, "main") == 1) {
		snprintf(msg, msglen, "'%s': the file is read-only", st->path);
		return -1;
	}
	what = "cannot use it";
	if ((rc = sqlite3_exec(st->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_exec(st->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL)) != SQLITE_OK)
		goto fail;
	what = "cannot lock it for writing";
	if ((rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) != SQLITE_OK)
		goto fail;
	what = "cannot read its schema";
	if ((rc = schema_read(st, &version)) != SQLITE_OK)
		goto fail_tx;
	if (version < 0) {
		snprintf(msg, msglen, "'%s': not an evring run store (it has tables but no schema_version)", st->path);
		goto fail_quiet;
	}
	if (version > SQLITE_SCHEMA_VERSION) {
		snprintf(msg, msglen, "'%s': schema version %d is newer than this evring's (%d)", st->path, version,
			 SQLITE_SCHEMA_VERSION);
		goto fail_quiet;
	}
	if (version == 0) {
		what = "cannot create its tables";
		if ((rc = sqlite3_exec(st->db, SCHEMA, NULL, NULL, NULL)) != SQLITE_OK ||
		    (rc = sqlite3_exec(st->db, "INSERT INTO schema_version VALUES(" STR(SQLITE_SCHEMA_VERSION) ")",
				       NULL, NULL, NULL)) != SQLITE_OK)
			goto fail_tx;
	}
	what = "cannot commit its tables";
	if ((rc = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK)
		goto fail_tx;
	what = "cannot prepare a statement";
	for (int i = 0; i < ST_N; i++)
		if ((rc = sqlite3_prepare_v3(st->db, STMTS[i], -1, SQLITE_PREPARE_PERSISTENT, &st->st[i], NULL)) !=
		    SQLITE_OK)
			goto fail;
	return 0;
fail_tx:
	snprintf(msg, msglen, "'%s': %s: %s", st->path, what, sqlite3_errmsg(st->db));
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
fail_quiet:
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
fail:
	snprintf(msg, msglen, "'%s': %s: %s", st->path, what, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
	return -1;
}

static bool opt_u32(const char *s, size_t len, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;

	if (!len)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > max)
			return false;
	}
	*out = (uint32_t)v;
	return true;
}

/* "PATH[,experiment=NAME][,batch=N][,flush-ms=T][,busy-ms=T]": options from the end, the rest is the path. */
static int parse_arg(struct store *st, const char *arg, char *err, size_t errlen)
{
	const char *end = arg + strlen(arg);
	uint32_t v;

	st->batch = BATCH_DEFAULT;
	st->flush_ns = FLUSH_MS_DEFAULT * 1000000ull;
	st->busy_ms = BUSY_MS_DEFAULT;
	for (;;) {
		const char *o = end;

		while (o > arg && o[-1] != ',')
			o--;
		if (o == arg)
			break;
		size_t len = (size_t)(end - o);

		if (len > 11 && !strncmp(o, "experiment=", 11)) {
			free(st->experiment);
			if (!(st->experiment = strndup(o + 11, len - 11)))
				return evr__builtin_err(err, errlen, -ENOMEM, "sqlite: out of memory");
			st->experiment_set = true;
		} else if (len > 6 && !strncmp(o, "batch=", 6)) {
			if (!opt_u32(o + 6, len - 6, 1u << 24, &v) || !v)
				return evr__builtin_err(err, errlen, -EINVAL, "sqlite: batch wants 1 to 16777216 rows, not '%.*s'",
							(int)(len - 6), o + 6);
			st->batch = v;
		} else if (len > 9 && !strncmp(o, "flush-ms=", 9)) {
			if (!opt_u32(o + 9, len - 9, 3600000u, &v))
				return evr__builtin_err(err, errlen, -EINVAL, "sqlite: flush-ms wants 0 to 3600000, not '%.*s'",
							(int)(len - 9), o + 9);
			st->flush_ns = v * 1000000ull;
		} else if (len > 8 && !strncmp(o, "busy-ms=", 8)) {
			if (!opt_u32(o + 8, len - 8, 600000u, &v))
				return evr__builtin_err(err, errlen, -EINVAL, "sqlite: busy-ms wants 0 to 600000, not '%.*s'",
							(int)(len - 8), o + 8);
			st->busy_ms = v;
		} else {
			break; /* part of the path */
		}
		end = o - 1;
	}
	if (end == arg)
		return evr__builtin_err(err, errlen, -EINVAL, "handler 'sqlite' needs a path: sqlite=PATH");
	if (!(st->path = strndup(arg, (size_t)(end - arg))) || (!st->experiment && !(st->experiment = strdup("default"))))
		return evr__builtin_err(err, errlen, -ENOMEM, "sqlite: out of memory");
	return 0;
}

int evr__sqlite_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct store *st = calloc(1, sizeof(*st));
	char msg[1024];
	int rc;

	(void)out;
	if (!st)
		return evr__builtin_err(err, errlen, -ENOMEM, "sqlite: out of memory");
	if ((rc = parse_arg(st, arg ? arg : "", err, errlen)) != 0) {
		store_free(st);
		return rc;
	}
	if (!(st->mf = open_memstream(&st->mbuf, &st->msize))) {
		store_free(st);
		return evr__builtin_err(err, errlen, -ENOMEM, "sqlite: out of memory");
	}
	random_id(st->session);
	/*
	 * A database that cannot be used breaks this handler, not the run: the
	 * other handlers go on, and each record this one cannot store is
	 * counted as its error.
	 */
	if (store_open(st, msg, sizeof(msg)) != 0) {
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
