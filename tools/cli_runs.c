/*
 * cli_runs.c: `evring runs DB`, the runs a run store (the sqlite=PATH
 * handler) holds, and `evring runs DB --compare RUN_A RUN_B`, two of them
 * side by side.
 *
 * The list: one line a run, oldest first: id (its first 12 hex digits;
 * --long: all 32), experiment, program, start (UTC), duration, spans,
 * tokens (input + output), errors (spans dropped or carrying error.type).
 *
 * The comparison, per span name (the names of either run): count, p50 and
 * p99 duration and tokens of A and of B, and B's change against A in
 * percent; per metric name: mean and max of A and of B. Percentiles are
 * nearest-rank over the run's spans of that name that have a duration:
 * the value at rank ceil(p/100 * n) of the n durations in ascending order
 * (so always one that was measured). Run ids may be given by any prefix
 * that names one run.
 *
 * The database is opened read-only; a missing file, one that is not an
 * SQLite database, one that is not a run store and one of a newer schema
 * version each give one line naming the path and exit status 8.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "cli.h"

#define RUNS_SCHEMA_VERSION 1 /* the newest consumer/handlers/sqlite.c writes */

static void runs_usage(FILE *f)
{
	fprintf(f, "usage: evring runs DB [--experiment NAME] [--long] [--json]\n"
		   "            [--compare RUN_A RUN_B]\n\n"
		   "  The runs in a run store (written by -H sqlite=DB): id, experiment, program,\n"
		   "  start (UTC), duration, spans, tokens, errors. With --compare, per span name the\n"
		   "  count, p50 and p99 latency (nearest rank) and tokens of two runs and the change,\n"
		   "  and per metric its mean and max. A run id may be shortened to any unique prefix.\n\n"
		   "  --experiment NAME   only the runs of this experiment\n"
		   "  --long              whole run ids\n"
		   "  --compare A B       the two runs side by side, B's change against A in percent\n"
		   "  --json              JSON instead of a table\n\n"
		   "examples:\n"
		   "  evring attach 1234 -H sqlite=runs.db      store a run\n"
		   "  evring runs runs.db                       list the runs\n"
		   "  evring runs runs.db --compare 3f2a 9c01   compare two (id prefixes)\n");
}

static void json_str(FILE *f, const char *s)
{
	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* Opens DB read-only and checks that it is a run store this evring reads. Returns 0 or an exit status. */
static int runs_open(const char *path, sqlite3 **db)
{
	struct stat sb;
	sqlite3_stmt *s = NULL;
	int rc, version = -1;

	if (stat(path, &sb) != 0)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "cannot open '%s': %s", path, strerror(errno));
	rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL);
	if (rc != SQLITE_OK)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "cannot open '%s': %s", path,
				    *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
	sqlite3_busy_timeout(*db, 2000);
	rc = sqlite3_prepare_v2(*db, "SELECT count(*) FROM sqlite_master WHERE name='schema_version'", -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW && sqlite3_column_int(s, 0) == 1) {
		sqlite3_finalize(s);
		s = NULL;
		rc = sqlite3_prepare_v2(*db, "SELECT max(version) FROM schema_version", -1, &s, NULL);
		if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
			version = sqlite3_column_int(s, 0);
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "'%s': %s", path, sqlite3_errmsg(*db));
	if (version < 1)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "'%s' is not an evring run store (no schema_version)",
				    path);
	if (version > RUNS_SCHEMA_VERSION)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT,
				    "'%s': schema version %d is newer than this evring reads (%d)", path, version,
				    RUNS_SCHEMA_VERSION);
	return 0;
}

static void fmt_utc(char *buf, size_t len, int64_t ns)
{
	time_t secs = (time_t)(ns / 1000000000);
	struct tm tm;

	if (ns <= 0 || !gmtime_r(&secs, &tm))
		snprintf(buf, len, "-");
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void fmt_dur(char *buf, size_t len, int64_t ns)
{
	int64_t s = ns / 1000000000;

	if (ns < 0)
		snprintf(buf, len, "-");
	else if (s < 60)
		snprintf(buf, len, "%.3f s", (double)ns / 1e9);
	else if (s < 3600)
		snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)(s % 60));
	else
		snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)(s / 60 % 60));
}

static int runs_list(sqlite3 *db, const char *path, const char *experiment, bool wide, bool json)
{
	sqlite3_stmt *s;
	int rc, n = 0;

	rc = sqlite3_prepare_v2(db,
				"SELECT run_id, experiment, program, start_ns, end_ns, spans,"
				" input_tokens + output_tokens, errors, pid FROM runs"
				" WHERE ?1 IS NULL OR experiment = ?1 ORDER BY start_ns, run_id",
				-1, &s, NULL);
	if (rc != SQLITE_OK)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "'%s': %s", path, sqlite3_errmsg(db));
	if (experiment)
		sqlite3_bind_text(s, 1, experiment, -1, SQLITE_STATIC);
	if (json)
		fputc('[', stdout);
	else
		printf("%-*s %-16s %-20s %-20s %10s %9s %12s %7s\n", wide ? 32 : 12, "RUN", "EXPERIMENT", "PROGRAM",
		       "START", "DURATION", "SPANS", "TOKENS", "ERRORS");
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(s, 0);
		const char *exp = (const char *)sqlite3_column_text(s, 1);
		const char *prog = (const char *)sqlite3_column_text(s, 2);
		int64_t start = sqlite3_column_int64(s, 3), end = sqlite3_column_int64(s, 4);
		char ts[32], dur[32];

		if (json) {
			printf("%s{\"run_id\":", n ? "," : "");
			json_str(stdout, id);
			printf(",\"experiment\":");
			json_str(stdout, exp);
			printf(",\"program\":");
			json_str(stdout, prog);
			printf(",\"pid\":%lld,\"start_ns\":%lld,\"end_ns\":%lld,\"spans\":%lld,\"tokens\":%lld,"
			       "\"errors\":%lld}",
			       (long long)sqlite3_column_int64(s, 8), (long long)start, (long long)end,
			       (long long)sqlite3_column_int64(s, 5), (long long)sqlite3_column_int64(s, 6),
			       (long long)sqlite3_column_int64(s, 7));
		} else {
			fmt_utc(ts, sizeof(ts), start);
			fmt_dur(dur, sizeof(dur), end >= start ? end - start : -1);
			printf("%-*.*s %-16.16s %-20.20s %-20s %10s %9lld %12lld %7lld\n", wide ? 32 : 12,
			       wide ? 32 : 12, id ? id : "", exp ? exp : "", prog ? prog : "-", ts, dur,
			       (long long)sqlite3_column_int64(s, 5), (long long)sqlite3_column_int64(s, 6),
			       (long long)sqlite3_column_int64(s, 7));
		}
		n++;
	}
	sqlite3_finalize(s);
	if (json)
		fputs("]\n", stdout);
	if (rc != SQLITE_DONE)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "'%s': %s", path, sqlite3_errmsg(db));
	return EVR_EXIT_OK;
}

/* The one run whose id starts with prefix (hex digits), into id. Returns 0 or an exit status. */
static int run_resolve(sqlite3 *db, const char *prefix, char id[33])
{
	sqlite3_stmt *s;
	size_t len = strlen(prefix);
	int n = 0, rc;

	if (!len || len > 32 || strspn(prefix, "0123456789abcdef") != len)
		return evr_cli_fail("runs", EVR_EXIT_USAGE, "'%s' is not a run id (1 to 32 lower-case hex digits)",
				    prefix);
	rc = sqlite3_prepare_v2(db, "SELECT run_id FROM runs WHERE substr(run_id, 1, ?2) = ?1 LIMIT 2", -1, &s, NULL);
	if (rc != SQLITE_OK)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "%s", sqlite3_errmsg(db));
	sqlite3_bind_text(s, 1, prefix, (int)len, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, (int)len);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n++ == 0)
			snprintf(id, 33, "%s", (const char *)sqlite3_column_text(s, 0));
	}
	sqlite3_finalize(s);
	if (n == 0)
		return evr_cli_fail("runs", EVR_EXIT_USAGE, "no run '%s'", prefix);
	if (n > 1)
		return evr_cli_fail("runs", EVR_EXIT_USAGE, "run id prefix '%s' is ambiguous: give more digits",
				    prefix);
	return 0;
}

/* One span name of one run. */
struct name_row {
	char *name;
	uint64_t count, timed, p50, p99, tokens;
};

/* Nearest rank: the value at rank ceil(p/100 * n) of n sorted values. */
static uint64_t nearest_rank(const uint64_t *v, uint64_t n, unsigned p)
{
	uint64_t rank = (n * p + 99) / 100;

	return n ? v[(rank ? rank : 1) - 1] : 0;
}

/* The span names of a run with their statistics, sorted by name. Returns the count, or -1 with the error printed. */
static long span_rows(sqlite3 *db, const char *run, struct name_row **out)
{
	sqlite3_stmt *s;
	struct name_row *rows = NULL;
	uint64_t *d = NULL;
	size_t n = 0, cap = 0, nd = 0, dcap = 0;
	int rc;

	*out = NULL;
	rc = sqlite3_prepare_v2(db,
				"SELECT coalesce(name, '(unknown)'), duration_ns, coalesce(total_tokens, 0) FROM spans"
				" WHERE run_id = ?1 ORDER BY 1, duration_ns IS NULL, duration_ns",
				-1, &s, NULL);
	if (rc != SQLITE_OK) {
		evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "%s", sqlite3_errmsg(db));
		return -1;
	}
	sqlite3_bind_text(s, 1, run, -1, SQLITE_STATIC);
	for (;;) {
		rc = sqlite3_step(s);
		const char *name = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;

		if (n && (!name || strcmp(name, rows[n - 1].name) != 0)) { /* the previous name is complete */
			rows[n - 1].timed = nd;
			rows[n - 1].p50 = nearest_rank(d, nd, 50);
			rows[n - 1].p99 = nearest_rank(d, nd, 99);
		}
		if (!name)
			break;
		if (!n || strcmp(name, rows[n - 1].name) != 0) {
			if (n == cap) {
				cap = cap ? 2 * cap : 16;
				struct name_row *g = realloc(rows, cap * sizeof(*rows));
				if (!g)
					goto nomem;
				rows = g;
			}
			memset(&rows[n], 0, sizeof(rows[n]));
			if (!(rows[n++].name = strdup(name)))
				goto nomem;
			nd = 0;
		}
		struct name_row *r = &rows[n - 1];
		r->count++;
		r->tokens += (uint64_t)sqlite3_column_int64(s, 2);
		if (sqlite3_column_type(s, 1) != SQLITE_NULL) {
			if (nd == dcap) {
				dcap = dcap ? 2 * dcap : 1024;
				uint64_t *g = realloc(d, dcap * sizeof(*d));
				if (!g)
					goto nomem;
				d = g;
			}
			d[nd++] = (uint64_t)sqlite3_column_int64(s, 1);
		}
	}
	sqlite3_finalize(s);
	free(d);
	if (rc != SQLITE_DONE) {
		evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "%s", sqlite3_errmsg(db));
		n = 0;
	}
	*out = rows;
	return rc == SQLITE_DONE ? (long)n : -1;
nomem:
	sqlite3_finalize(s);
	free(d);
	*out = rows;
	evr_cli_fail("runs", EVR_EXIT_FAIL, "out of memory");
	return -1;
}

static void rows_free(struct name_row *rows, long n)
{
	for (long i = 0; rows && i < n; i++)
		free(rows[i].name);
	free(rows);
}

/* B against A in percent, or "-" / "new" / "gone". */
static void fmt_change(char *buf, size_t len, double a, double b, bool has_a, bool has_b)
{
	if (!has_a && has_b)
		snprintf(buf, len, "new");
	else if (has_a && !has_b)
		snprintf(buf, len, "gone");
	else if (!has_a || a == 0)
		snprintf(buf, len, b == 0 ? "0%%" : "-");
	else
		snprintf(buf, len, "%+.1f%%", (b - a) / a * 100.0);
}

static void print_side_json(const struct name_row *r)
{
	if (!r) {
		fputs("null", stdout);
		return;
	}
	printf("{\"count\":%" PRIu64 ",\"timed\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64
	       ",\"tokens\":%" PRIu64 "}",
	       r->count, r->timed, r->p50, r->p99, r->tokens);
}

static int compare_spans(sqlite3 *db, const char *a, const char *b, bool json)
{
	struct name_row *ra, *rb;
	long na = span_rows(db, a, &ra), nb, i = 0, j = 0;
	bool first = true;

	if (na < 0) {
		rows_free(ra, 0);
		return EVR_EXIT_BAD_INPUT;
	}
	if ((nb = span_rows(db, b, &rb)) < 0) {
		rows_free(ra, na);
		rows_free(rb, 0);
		return EVR_EXIT_BAD_INPUT;
	}
	if (json)
		fputs(",\"spans\":[", stdout);
	else
		printf("%-28s %7s %7s %10s %10s %8s %10s %10s %8s %10s %10s %8s\n", "SPAN", "COUNT_A", "COUNT_B",
		       "P50_A_MS", "P50_B_MS", "CHANGE", "P99_A_MS", "P99_B_MS", "CHANGE", "TOKENS_A", "TOKENS_B",
		       "CHANGE");
	while (i < na || j < nb) {
		int c = i >= na ? 1 : j >= nb ? -1 : strcmp(ra[i].name, rb[j].name);
		const struct name_row *x = c <= 0 ? &ra[i] : NULL, *y = c >= 0 ? &rb[j] : NULL;
		const char *name = x ? x->name : y->name;

		if (json) {
			printf("%s{\"name\":", first ? "" : ",");
			json_str(stdout, name);
			fputs(",\"a\":", stdout);
			print_side_json(x);
			fputs(",\"b\":", stdout);
			print_side_json(y);
			fputc('}', stdout);
		} else {
			static const struct name_row none;
			const struct name_row *p = x ? x : &none, *q = y ? y : &none;
			char c1[16], c2[16], c3[16];

			fmt_change(c1, sizeof(c1), (double)p->p50, (double)q->p50, p->timed, q->timed);
			fmt_change(c2, sizeof(c2), (double)p->p99, (double)q->p99, p->timed, q->timed);
			fmt_change(c3, sizeof(c3), (double)p->tokens, (double)q->tokens, x, y);
			printf("%-28.28s %7" PRIu64 " %7" PRIu64 " %10.3f %10.3f %8s %10.3f %10.3f %8s %10" PRIu64
			       " %10" PRIu64 " %8s\n",
			       name, p->count, q->count, (double)p->p50 / 1e6, (double)q->p50 / 1e6, c1,
			       (double)p->p99 / 1e6, (double)q->p99 / 1e6, c2, p->tokens, q->tokens, c3);
		}
		first = false;
		i += c <= 0;
		j += c >= 0;
	}
	if (json)
		fputc(']', stdout);
	rows_free(ra, na);
	rows_free(rb, nb);
	return EVR_EXIT_OK;
}

static int compare_metrics(sqlite3 *db, const char *a, const char *b, bool json)
{
	sqlite3_stmt *s;
	int rc;
	bool first = true;

	/* Per metric name of either run: mean and max of each (NULL where the run has none). */
	rc = sqlite3_prepare_v2(db,
				"SELECT name, avg(CASE WHEN run_id = ?1 THEN value END),"
				" max(CASE WHEN run_id = ?1 THEN value END), avg(CASE WHEN run_id = ?2 THEN value END),"
				" max(CASE WHEN run_id = ?2 THEN value END), max(unit) FROM metrics"
				" WHERE run_id IN (?1, ?2) GROUP BY name ORDER BY name",
				-1, &s, NULL);
	if (rc != SQLITE_OK)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "%s", sqlite3_errmsg(db));
	sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, b, -1, SQLITE_STATIC);
	if (json)
		fputs(",\"metrics\":[", stdout);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(s, 0);
		const char *unit = (const char *)sqlite3_column_text(s, 5);
		bool ha = sqlite3_column_type(s, 1) != SQLITE_NULL, hb = sqlite3_column_type(s, 3) != SQLITE_NULL;
		double v[4];

		for (int k = 0; k < 4; k++)
			v[k] = sqlite3_column_double(s, k + 1);
		if (json) {
			printf("%s{\"name\":", first ? "" : ",");
			json_str(stdout, name);
			fputs(",\"unit\":", stdout);
			json_str(stdout, unit);
			if (ha)
				printf(",\"a\":{\"mean\":%.17g,\"max\":%.17g}", v[0], v[1]);
			else
				fputs(",\"a\":null", stdout);
			if (hb)
				printf(",\"b\":{\"mean\":%.17g,\"max\":%.17g}}", v[2], v[3]);
			else
				fputs(",\"b\":null}", stdout);
		} else {
			char c1[16], c2[16];

			if (first)
				printf("\n%-36s %-4s %14s %14s %8s %14s %14s %8s\n", "METRIC", "UNIT", "MEAN_A", "MEAN_B",
				       "CHANGE", "MAX_A", "MAX_B", "CHANGE");
			fmt_change(c1, sizeof(c1), v[0], v[2], ha, hb);
			fmt_change(c2, sizeof(c2), v[1], v[3], ha, hb);
			printf("%-36.36s %-4.4s %14.6g %14.6g %8s %14.6g %14.6g %8s\n", name, unit ? unit : "", v[0],
			       v[2], c1, v[1], v[3], c2);
		}
		first = false;
	}
	sqlite3_finalize(s);
	if (json)
		fputc(']', stdout);
	if (rc != SQLITE_DONE)
		return evr_cli_fail("runs", EVR_EXIT_BAD_INPUT, "%s", sqlite3_errmsg(db));
	return EVR_EXIT_OK;
}

static int runs_compare(sqlite3 *db, const char *pa, const char *pb, bool json)
{
	char a[33], b[33];
	int st;

	if ((st = run_resolve(db, pa, a)) != 0 || (st = run_resolve(db, pb, b)) != 0)
		return st;
	if (json)
		printf("{\"a\":\"%s\",\"b\":\"%s\"", a, b);
	else
		printf("A %s\nB %s\n\n", a, b);
	if ((st = compare_spans(db, a, b, json)) != 0 || (st = compare_metrics(db, a, b, json)) != 0)
		return st;
	if (json)
		fputs("}\n", stdout);
	return EVR_EXIT_OK;
}

int evr_cmd_runs(int argc, char **argv)
{
	static const struct option opts[] = { { "experiment", required_argument, NULL, 'e' },
					      { "compare", no_argument, NULL, 'c' },
					      { "long", no_argument, NULL, 'l' },
					      { "json", no_argument, NULL, 'j' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	const char *experiment = NULL, *path;
	bool compare = false, wide = false, json = false;
	sqlite3 *db = NULL;
	int ch, st;

	optind = 0;
	while ((ch = evr_cli_getopt("runs", argc, argv, "", opts)) != -1) {
		if (ch == 'e')
			experiment = optarg;
		else if (ch == 'c')
			compare = true;
		else if (ch == 'l')
			wide = true;
		else if (ch == 'j')
			json = true;
		else if (ch == 'h') {
			runs_usage(stdout);
			return EVR_EXIT_OK;
		} else {
			return EVR_EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return evr_cli_fail("runs", EVR_EXIT_USAGE, "which database? evring runs DB (try evring runs --help)");
	path = argv[optind++];
	if (compare && argc - optind != 2)
		return evr_cli_fail("runs", EVR_EXIT_USAGE, "--compare takes two runs: evring runs DB --compare RUN_A RUN_B");
	if (!compare && optind < argc)
		return evr_cli_fail("runs", EVR_EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
	if ((st = runs_open(path, &db)) == 0)
		st = compare ? runs_compare(db, argv[optind], argv[optind + 1], json)
			     : runs_list(db, path, experiment, wide, json);
	sqlite3_close(db);
	return st;
}
