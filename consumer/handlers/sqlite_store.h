/*
 * handlers/sqlite_store.h: the run store's database side, private to
 * sqlite.c (the callbacks: rows from records) and sqlite_store.c (the
 * schema, opening, options, transactions). The handler's comment in
 * sqlite.c says what it stores and how it fails.
 */
#ifndef EVRING_CONSUMER_SQLITE_STORE_H
#define EVRING_CONSUMER_SQLITE_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <sqlite3.h>

#include "builtin.h"

#define SQLITE_SCHEMA_VERSION 1
#define BATCH_DEFAULT 4096u
#define FLUSH_MS_DEFAULT 200u
#define BUSY_MS_DEFAULT 2000u
#define STDIO_DISPATCHER "evring.stdio"

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
	ST_RUN_PARAMS,
	ST_SPAN_FLAGS,
	ST_N
};

/* One run: created at its source's first record (or on_run), freed at its on_source_end. */
struct sqlite_run {
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
struct sqlite_store {
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

/* CLOCK_MONOTONIC_COARSE in ns. */
uint64_t evr__sqlite_now_ns(void);

static inline void evr__sqlite_bind_u64(sqlite3_stmt *s, int col, uint64_t v)
{
	/* SQLite integers are signed 64-bit: a time or count past 2^63 is stored as a real. */
	if (v > (uint64_t)INT64_MAX)
		sqlite3_bind_double(s, col, (double)v);
	else
		sqlite3_bind_int64(s, col, (sqlite3_int64)v);
}

/* A write that failed (what: "insert", "commit"...): counted, printed the first time and at powers of two. -EIO. */
int evr__sqlite_write_failed(struct sqlite_store *st, const char *what);
/* Writes a run's counters into its row. 0 or -EIO. */
int evr__sqlite_run_update(struct sqlite_store *st, struct sqlite_run *r);
/* Opens a transaction when none is open. 0 or -EIO. */
int evr__sqlite_tx_begin(struct sqlite_store *st);
/* Commits the open transaction with the counters of the runs changed in it; 0 or -EIO (its rows counted lost). */
int evr__sqlite_tx_commit(struct sqlite_store *st);
/* Steps a bound insert in the transaction, then resets it; commits a full or old batch. 0 or -EIO. */
int evr__sqlite_row_insert(struct sqlite_store *st, sqlite3_stmt *s);
/* Parses "PATH[,OPTION=VALUE...]" into st. 0 or -errno with err set. */
int evr__sqlite_parse_arg(struct sqlite_store *st, const char *arg, char *err, size_t errlen);
/* Opens st->path, checks or creates the schema, prepares the statements; -1 with the cause in msg. */
int evr__sqlite_store_open(struct sqlite_store *st, char *msg, size_t msglen);
/* Frees st and everything it holds (the runs, the statements, the connection). */
void evr__sqlite_store_free(struct sqlite_store *st);

#endif /* EVRING_CONSUMER_SQLITE_STORE_H */
