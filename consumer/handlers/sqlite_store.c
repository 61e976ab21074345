/*
 * sqlite_store.c: the run store's database side (sqlite_store.h): the
 * schema and its version, opening a database and telling why it cannot be
 * used, the handler's options, and the batched transactions every row goes
 * through. sqlite.c turns records into rows.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sqlite_store.h"

#define STR_(x) #x
#define STR(x) STR_(x)

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
	[ST_RUN_PARAMS] = "UPDATE runs SET params=?2 WHERE run_id=?1",
	[ST_SPAN_FLAGS] = "UPDATE spans SET flags=flags|?4 WHERE run_id=?1 AND trace_id=?2 AND span_id=?3",
};

uint64_t evr__sqlite_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- errors ------------------------------------------------------------------------------------------ */

/* A write that failed: counted; the first and then every power of two printed. Returns -EIO. */
int evr__sqlite_write_failed(struct sqlite_store *st, const char *what)
{
	uint64_t n = ++st->write_errors;

	if ((n & (n - 1)) == 0)
		fprintf(stderr, "evring: handler \"sqlite\": '%s': %s: %s (%" PRIu64 " write error%s so far)\n",
			st->path, what, sqlite3_errmsg(st->db), n, n == 1 ? "" : "s");
	return -EIO;
}

/* ---- transactions ------------------------------------------------------------------------------------- */

static int exec(struct sqlite_store *st, const char *sql)
{
	return sqlite3_exec(st->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

int evr__sqlite_run_update(struct sqlite_store *st, struct sqlite_run *r)
{
	sqlite3_stmt *s = st->st[ST_RUN_UPDATE];
	int rc;

	sqlite3_bind_text(s, 1, r->id, 32, SQLITE_STATIC);
	evr__sqlite_bind_u64(s, 2, r->end_ns);
	evr__sqlite_bind_u64(s, 3, r->spans);
	evr__sqlite_bind_u64(s, 4, r->events);
	evr__sqlite_bind_u64(s, 5, r->logs);
	evr__sqlite_bind_u64(s, 6, r->metrics);
	evr__sqlite_bind_u64(s, 7, r->errors);
	evr__sqlite_bind_u64(s, 8, r->lost);
	evr__sqlite_bind_u64(s, 9, r->input_tokens);
	evr__sqlite_bind_u64(s, 10, r->output_tokens);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return -EIO;
	r->dirty = false;
	return 0;
}

/* Commits the open transaction, with the counters of every run changed in it. Returns 0 or -EIO. */
int evr__sqlite_tx_commit(struct sqlite_store *st)
{
	int rc = 0;

	if (!st->in_tx)
		return 0;
	for (uint32_t i = 0; i < st->runs.cap && rc == 0; i++) {
		struct evr__pair_slot *sl = &st->runs.slots[i];
		struct sqlite_run *r = (struct sqlite_run *)(uintptr_t)sl->v;

		if ((sl->a || sl->b) && r->dirty)
			rc = evr__sqlite_run_update(st, r);
	}
	if (rc == 0 && exec(st, "COMMIT") == 0) {
		st->rows_written += st->pending;
	} else {
		rc = evr__sqlite_write_failed(st, "commit");
		st->rows_failed += st->pending;
		if (!sqlite3_get_autocommit(st->db))
			exec(st, "ROLLBACK");
	}
	st->in_tx = false;
	st->pending = 0;
	return rc;
}

/* Opens a transaction when none is. Returns 0 or -EIO. */
int evr__sqlite_tx_begin(struct sqlite_store *st)
{
	if (st->in_tx)
		return 0;
	if (exec(st, "BEGIN") != 0)
		return evr__sqlite_write_failed(st, "begin");
	st->in_tx = true;
	st->tx_ns = evr__sqlite_now_ns();
	return 0;
}

/*
 * Steps an insert inside the transaction (opened here when the row before
 * committed it); commits when the batch is full or old. Returns 0 or -EIO.
 */
int evr__sqlite_row_insert(struct sqlite_store *st, sqlite3_stmt *s)
{
	int rc = evr__sqlite_tx_begin(st);

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
		rc = evr__sqlite_write_failed(st, "insert");
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
	if (st->pending >= st->batch || evr__sqlite_now_ns() - st->tx_ns >= st->flush_ns)
		return evr__sqlite_tx_commit(st);
	return 0;
}

void evr__sqlite_store_free(struct sqlite_store *st)
{
	for (uint32_t i = 0; i < st->runs.cap; i++)
		if (st->runs.slots[i].a || st->runs.slots[i].b)
			free((struct sqlite_run *)(uintptr_t)st->runs.slots[i].v);
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

/* ---- opening ------------------------------------------------------------------------------------------ */

/* The schema version of an open database: 0 when it is empty (no tables), -1 when it is not a run store. */
static int schema_read(struct sqlite_store *st, int *version)
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
int evr__sqlite_store_open(struct sqlite_store *st, char *msg, size_t msglen)
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
int evr__sqlite_parse_arg(struct sqlite_store *st, const char *arg, char *err, size_t errlen)
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

