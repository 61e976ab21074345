/*
 * test_runs.c: the run store (-H sqlite=DB) and `evring runs`, end to end:
 * real producers in child processes, the real evring tool attached to them
 * with jsonl and sqlite side by side, and the database read back with
 * SQLite. Every span and event row equals its jsonl line; latencies a
 * producer sets show in --compare; a second run appends; a corrupt, locked
 * or read-only database breaks the sqlite handler alone (jsonl beside it
 * complete); runs and metric samples through the handler's callbacks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include <evring/consumer.h>
#include <evring/evring.h>
#include <evring/llm.h>

#include "../consumer/producer_child.h"
#include "cli_child.h"

#ifndef EVR_CLI_PATH
#error "EVR_CLI_PATH is set by tests/tools/CMakeLists.txt"
#endif

#define WAIT_MS 60000

struct run {
	int status;
	char out[1 << 18];
	char err[1 << 16];
};

static char tmpdir[64];

/*
 * The build tree must be reachable for the tool to run as nobody: a checkout
 * in a private directory (mktemp -d, 0700) is not. Every directory above the
 * tool without search permission for others gets it until reach_restore().
 */
static char reach_dirs[16][256];
static mode_t reach_modes[16];
static int reach_n;

static void reach_for_nobody(const char *path)
{
	char p[256];

	snprintf(p, sizeof(p), "%s", path);
	for (char *slash = strchr(p + 1, '/'); slash && reach_n < 16; slash = strchr(slash + 1, '/')) {
		struct stat st;

		*slash = 0;
		if (stat(p, &st) == 0 && !(st.st_mode & S_IXOTH) && chmod(p, (st.st_mode & 07777) | S_IXOTH) == 0) {
			snprintf(reach_dirs[reach_n], sizeof(reach_dirs[0]), "%s", p);
			reach_modes[reach_n++] = st.st_mode & 07777;
		}
		*slash = '/';
	}
}

static void reach_restore(void)
{
	while (reach_n > 0) {
		reach_n--;
		chmod(reach_dirs[reach_n], reach_modes[reach_n]);
	}
}

/* A path in the test's directory, valid for the whole test (each call has its own buffer). */
static char *tmp_path(const char *name)
{
	static char bufs[64][160];
	static unsigned n;

	cr_assert_lt(n, 64u, "more paths than tmp_path holds");
	snprintf(bufs[n], sizeof(bufs[n]), "%s/%s", tmpdir, name);
	return bufs[n++];
}

static struct run *cli(const char *const *args)
{
	static struct run r;
	static int seq;
	const char *argv[40] = { EVR_CLI_PATH };
	char out[128], err[128];
	size_t n = 1;
	pid_t pid;

	for (; args[n - 1]; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	snprintf(out, sizeof(out), "%s/cli%d.out", tmpdir, seq);
	snprintf(err, sizeof(err), "%s/cli%d.err", tmpdir, seq++);
	pid = spawn(argv, out, err);
	r.status = wait_for(pid, WAIT_MS);
	slurp(out, r.out, sizeof(r.out));
	slurp(err, r.err, sizeof(r.err));
	return &r;
}

#define CLI(...) cli((const char *const[]){ __VA_ARGS__, NULL })

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/evring-runs-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	chmod(tmpdir, 0777);
}

static void teardown(void)
{
	reach_restore(); /* a failed test's too */
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(runs, .init = setup, .fini = teardown, .timeout = 240);

/* ---- producers ------------------------------------------------------------------------------------------ */

static unsigned step_ms = 2;	   /* how long each "step" span of steps() lasts */
static uint64_t step_tokens = 10; /* the input tokens each carries */

/* Spans, nested, with LLM fields; events in and out of spans; a dropped span; terminal lines. */
static void mixed(void)
{
	for (uint32_t i = 0; i < 5; i++) {
		struct evr_span q = EVR_SPAN_BEGIN("app", "query", EVR_STR("route", "search"), EVR_U32("i", i));
		struct evr_span chat = evr_llm_chat_start("vllm", "llama-3-8b", "hi \"there\"\n", 64, 0.25, true);

		for (uint32_t k = 0; k < 3; k++)
			evr_llm_chat_chunk(&chat, k, 1, "tok");
		evr_llm_chat_end(&chat, "llama-3-8b", 100 + i, 7, "stop", "answer");
		EVR_EVENT("app", "tick", EVR_U32("i", i), EVR_F64("score", 0.5 + i), EVR_BOOL("ok", i % 2));
		if (i == 3) {
			struct evr_span t = EVR_SPAN_BEGIN("app", "tool");
			EVR_SPAN_DROP(t, EVR_STR(EVR_ERROR_TYPE, "timeout"));
		}
		EVR_SPAN_END(q, EVR_U32("results", i * 2));
	}
	EVR_EVENT("evring.stdio", "stdout", EVR_STR("text", "hello from stdout"));
	EVR_EVENT("evring.stdio", "stderr", EVR_STR("text", "a long line, cut"), EVR_BOOL("truncated", true));
	EVR_EVENT("app", "outside");
}

static void steps(void)
{
	for (int i = 0; i < 11; i++) {
		struct evr_span s = EVR_SPAN_BEGIN("app", "step", EVR_U32("i", (uint32_t)i));

		sleep_ms(step_ms);
		EVR_SPAN_END(s, EVR_U64(EVR_GENAI_INPUT_TOKENS, step_tokens));
	}
}

static void nothing(void)
{
}

/*
 * Runs fn in a producer (before the consumer attaches, so that the
 * consumer reads it all with --from oldest), then `evring attach` with the
 * given handlers until it is done.
 */
static struct run *traced(void (*fn)(void), const char *const *handlers)
{
	struct evr_config cfg = { .name = "runs-test", .capture_content = 1 };
	const char *argv[24] = { "attach", NULL, "--from", "oldest", "--duration", "1.5" };
	char pid[32];
	struct child ch;
	struct run *r;
	size_t n = 6;

	child_start_cfg(&ch, &cfg, fn, nothing, true);
	snprintf(pid, sizeof(pid), "%d", (int)ch.pid);
	argv[1] = pid;
	for (; *handlers; handlers++) {
		argv[n++] = "-H";
		argv[n++] = *handlers;
	}
	argv[n] = NULL;
	r = cli(argv);
	child_go(&ch);
	child_wait_done(&ch);
	kill(ch.pid, SIGKILL);
	child_reap(&ch, SIGKILL);
	return r;
}

#define TRACED(fn, ...) traced(fn, (const char *const[]){ __VA_ARGS__, NULL })

/* Whether a consumer holds a slot of this process's segment. */
static bool consumer_attached(void)
{
	struct evr_segment *seg = evr_segment_current();

	for (uint32_t k = 0; seg && k < seg->slots; k++)
		if (__atomic_load_n(&seg->hdr->slots[k].pid, __ATOMIC_ACQUIRE))
			return true;
	return false;
}

/* A parameter after the consumer attached, then about a second of busy spans for the samples to see. */
static void param_before(void)
{
	evr_run_param("model", "m-1");
}

static void params_and_work(void)
{
	uint64_t give_up = now_ms() + 10000;

	while (!consumer_attached() && now_ms() < give_up)
		sleep_ms(5);
	sleep_ms(300); /* the consumer's first pass has read the metadata */
	evr_run_param("dataset", "d-2");
	for (int i = 0; i < 6; i++) {
		struct evr_span s = EVR_SPAN_BEGIN("app", "work", EVR_U32("i", (uint32_t)i));
		uint64_t until = now_ms() + 150;

		while (now_ms() < until) /* busy: the samples see CPU */
			;
		EVR_SPAN_END(s);
	}
}

/* ---- reading back ------------------------------------------------------------------------------------------ */

static sqlite3 *db_open(const char *path)
{
	sqlite3 *db = NULL;

	cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK, "open %s", path);
	return db;
}

/* The first column of the first row of sql as an integer (-1: no row). */
static long long db_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	long long v = -1;

	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static void db_text(sqlite3 *db, const char *sql, char *out, size_t cap)
{
	sqlite3_stmt *s;

	out[0] = 0;
	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
		snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t n = 0;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_neq(getdelim(&buf, &n, 0, f), -1);
	fclose(f);
	return buf;
}

static size_t count_lines(const char *s, const char *needle)
{
	size_t n = 0;

	for (const char *p = s; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static const char *col(sqlite3_stmt *s, int i)
{
	const char *t = (const char *)sqlite3_column_text(s, i);

	return t ? t : "";
}

/* A text column as jsonl writes it: quoted, or "0" for a NULL id. */
static const char *id_or_0(sqlite3_stmt *s, int i)
{
	return sqlite3_column_type(s, i) == SQLITE_NULL ? "0" : col(s, i);
}

/*
 * The jsonl line of every span and event, rebuilt from the rows: equal to
 * the jsonl handler's lines of the same run, in the same order. Lines of
 * dispatcher evring.stdio are in logs, checked apart.
 */
static void check_rows_equal_jsonl(sqlite3 *db, const char *jsonl, size_t *nspans, size_t *nevents)
{
	sqlite3_stmt *s;
	char line[1 << 14];
	const char *p;

	*nspans = *nevents = 0;
	cr_assert_eq(sqlite3_prepare_v2(db,
					"SELECT name, dispatcher, trace_id, span_id, parent_id, start_ns, end_ns, status, pid,"
					" tid, fields FROM spans ORDER BY rowid",
					-1, &s, NULL),
		     SQLITE_OK);
	p = jsonl;
	while (sqlite3_step(s) == SQLITE_ROW) {
		snprintf(line, sizeof(line),
			 "{\"kind\":\"span\",\"name\":\"%s\",\"dispatcher\":\"%s\",\"trace_id\":\"%s\",\"span_id\":\"%s\","
			 "\"parent_id\":\"%s\",\"start_ns\":%s,\"end_ns\":%s,\"status\":\"%s\",\"pid\":%s,\"tid\":%s,"
			 "\"fields\":%s}\n",
			 col(s, 0), col(s, 1), id_or_0(s, 2), id_or_0(s, 3), id_or_0(s, 4), col(s, 5), col(s, 6),
			 col(s, 7), col(s, 8), col(s, 9), col(s, 10));
		p = strstr(p, "{\"kind\":\"span\"");
		cr_assert_not_null(p, "span row %zu has no jsonl line: %s", *nspans, line);
		cr_assert_eq(strncmp(p, line, strlen(line)), 0, "span row %zu:\n%s\njsonl:\n%.*s", *nspans, line,
			     (int)(strchr(p, '\n') - p + 1), p);
		p++;
		++*nspans;
	}
	sqlite3_finalize(s);
	cr_assert_null(strstr(p, "{\"kind\":\"span\""), "jsonl has spans the database lacks");

	cr_assert_eq(sqlite3_prepare_v2(db,
					"SELECT name, dispatcher, ts_ns, span_id, trace_id, pid, tid, fields FROM events"
					" ORDER BY rowid",
					-1, &s, NULL),
		     SQLITE_OK);
	p = jsonl;
	while (sqlite3_step(s) == SQLITE_ROW) {
		snprintf(line, sizeof(line),
			 "{\"kind\":\"event\",\"name\":\"%s\",\"dispatcher\":\"%s\",\"ts_ns\":%s,\"span_id\":\"%s\","
			 "\"trace_id\":\"%s\",\"pid\":%s,\"tid\":%s,\"fields\":%s}\n",
			 col(s, 0), col(s, 1), col(s, 2), id_or_0(s, 3), id_or_0(s, 4), col(s, 5), col(s, 6), col(s, 7));
		for (;;) { /* the next event line that is not a terminal line */
			p = strstr(p, "{\"kind\":\"event\"");
			cr_assert_not_null(p, "event row %zu has no jsonl line: %s", *nevents, line);
			const char *eol = strchr(p, '\n');

			if (!memmem(p, (size_t)(eol - p), "\"dispatcher\":\"evring.stdio\"", 27))
				break;
			p++;
		}
		cr_assert_eq(strncmp(p, line, strlen(line)), 0, "event row %zu:\n%s\njsonl:\n%.*s", *nevents, line,
			     (int)(strchr(p, '\n') - p + 1), p);
		p++;
		++*nevents;
	}
	sqlite3_finalize(s);
}

/* ---- tests ------------------------------------------------------------------------------------------------- */

Test(runs, rows_equal_the_jsonl_of_the_same_run)
{
	char *jl = tmp_path("a.jsonl"), *dbp = tmp_path("a.db"), spec_j[160], spec_s[160], buf[512];
	struct run *r;
	size_t nspans, nevents;
	sqlite3 *db;
	char *jsonl;

	snprintf(spec_j, sizeof(spec_j), "jsonl=%s", jl);
	snprintf(spec_s, sizeof(spec_s), "sqlite=%s,experiment=exp-a", dbp);
	r = TRACED(mixed, spec_j, spec_s);
	cr_assert_eq(r->status, 0, "attach: %s", r->err);
	jsonl = read_all(jl);
	db = db_open(dbp);
	check_rows_equal_jsonl(db, jsonl, &nspans, &nevents);
	cr_expect_eq(nspans, count_lines(jsonl, "\"kind\":\"span\""));
	cr_expect_eq(nspans, 5 + 5 + 1, "5 queries, 5 chats, 1 tool");
	cr_expect_eq(nevents, 5 * 3 + 5 + 1, "15 chunks, 5 ticks, 1 outside");
	cr_expect_eq(nevents + 2, count_lines(jsonl, "\"kind\":\"event\""));

	/* The GenAI columns. */
	cr_expect_eq(db_int(db, "SELECT count(*) FROM spans WHERE name='llm.chat' AND model='llama-3-8b'"), 5);
	cr_expect_eq(db_int(db, "SELECT sum(input_tokens) FROM spans WHERE name='llm.chat'"), 100 + 101 + 102 + 103 + 104);
	cr_expect_eq(db_int(db, "SELECT sum(output_tokens) FROM spans"), 35);
	cr_expect_eq(db_int(db, "SELECT sum(total_tokens) FROM spans"), 510 + 35);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM spans WHERE error_type='timeout' AND status='dropped'"), 1);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM spans WHERE input_tokens IS NOT NULL AND name!='llm.chat'"), 0);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM spans WHERE parent_id IS NULL"), 5, "the queries are roots");

	/* The terminal lines, in logs. */
	cr_expect_eq(db_int(db, "SELECT count(*) FROM logs"), 2);
	db_text(db, "SELECT stream || '|' || text || '|' || truncated FROM logs ORDER BY rowid LIMIT 1", buf, sizeof(buf));
	cr_expect_str_eq(buf, "stdout|hello from stdout|0");
	db_text(db, "SELECT stream || '|' || text || '|' || truncated FROM logs ORDER BY rowid LIMIT 1 OFFSET 1", buf,
		sizeof(buf));
	cr_expect_str_eq(buf, "stderr|a long line, cut|1");

	/* The run, made by the handler itself (no run tracking in this consumer); its program the source's. */
	char comm[64], want[256], sql[256];
	db_text(db, "SELECT program FROM runs", comm, sizeof(comm));
	cr_expect_gt(strlen(comm), 0, "the source's program");
	cr_expect_eq(db_int(db, "SELECT count(*) FROM runs"), 1);
	db_text(db, "SELECT experiment || '|' || program || '|' || spans || '|' || events || '|' || logs || '|' ||"
		    " errors || '|' || input_tokens || '|' || output_tokens FROM runs",
		buf, sizeof(buf));
	snprintf(want, sizeof(want), "exp-a|%s|11|21|2|1|510|35", comm);
	cr_expect_str_eq(buf, want);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM runs WHERE length(run_id)=32 AND end_ns>=start_ns"), 1);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM spans s JOIN runs r USING(run_id)"), 11);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM params WHERE key='program' AND value='%s'", comm);
	cr_expect_eq(db_int(db, sql), 1);
	cr_expect_eq(db_int(db, "SELECT version FROM schema_version"), 1);
	db_text(db, "PRAGMA journal_mode", buf, sizeof(buf));
	cr_expect_str_eq(buf, "wal");
	sqlite3_close(db);
	free(jsonl);

	/* `evring runs` lists it. */
	r = CLI("runs", dbp);
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_expect_not_null(strstr(r->out, "exp-a"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, comm), "%s", r->out);
}

/* The p50 of span "step" in --compare --json's side "a" or "b". */
static unsigned long long step_p50(const char *out, const char *side)
{
	char key[16];
	const char *p = strstr(out, "{\"name\":\"step\"");

	cr_assert_not_null(p, "%s", out);
	snprintf(key, sizeof(key), "\"%s\":{", side);
	p = strstr(p, key);
	cr_assert_not_null(p, "%s", out);
	p = strstr(p, "\"p50_ns\":");
	cr_assert_not_null(p);
	return strtoull(p + 9, NULL, 10);
}

Test(runs, compare_shows_the_latencies_the_runs_had_and_runs_append)
{
	char *dbp = tmp_path("c.db"), spec[160], ids[2][33], buf[64];
	struct run *r;
	sqlite3 *db;

	snprintf(spec, sizeof(spec), "sqlite=%s", dbp);
	step_ms = 2;
	step_tokens = 10;
	cr_assert_eq(TRACED(steps, spec)->status, 0);
	step_ms = 12;
	step_tokens = 30;
	r = TRACED(steps, spec);
	cr_assert_eq(r->status, 0, "%s", r->err);

	db = db_open(dbp);
	cr_assert_eq(db_int(db, "SELECT count(*) FROM runs"), 2, "the second run is appended");
	cr_expect_eq(db_int(db, "SELECT count(*) FROM schema_version"), 1);
	cr_expect_eq(db_int(db, "SELECT count(DISTINCT run_id) FROM spans"), 2);
	db_text(db, "SELECT run_id FROM runs ORDER BY start_ns LIMIT 1", ids[0], 33);
	db_text(db, "SELECT run_id FROM runs ORDER BY start_ns LIMIT 1 OFFSET 1", ids[1], 33);
	sqlite3_close(db);

	r = CLI("runs", dbp, "--long");
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->out, ids[0]) && strstr(r->out, ids[1]) && strstr(r->out, ids[0]) < strstr(r->out, ids[1]),
		  "%s", r->out);

	/* By prefixes of 8 digits. */
	snprintf(buf, sizeof(buf), "%.8s", ids[0]);
	char pb[16];
	snprintf(pb, sizeof(pb), "%.8s", ids[1]);
	r = CLI("runs", dbp, "--compare", buf, pb, "--json");
	cr_assert_eq(r->status, 0, "%s", r->err);
	unsigned long long a = step_p50(r->out, "a"), b = step_p50(r->out, "b");
	cr_expect(a >= 2000000 && a < 10000000, "run A's steps slept 2 ms: p50 %llu ns", a);
	cr_expect(b >= 12000000 && b < 40000000, "run B's steps slept 12 ms: p50 %llu ns", b);
	cr_expect_not_null(strstr(r->out, "\"count\":11,\"timed\":11"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, "\"tokens\":110}"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, "\"tokens\":330}"), "%s", r->out);

	/* The table says the same, with the change. */
	r = CLI("runs", dbp, "--compare", buf, pb);
	cr_assert_eq(r->status, 0, "%s", r->err);
	const char *line = strstr(r->out, "\nstep ");
	cr_assert_not_null(line, "%s", r->out);
	cr_expect_not_null(strstr(line, "+200.0%"), "tokens 110 -> 330: %s", r->out);

	/* A prefix two runs share is refused; so is one no run has. */
	db = NULL;
	cr_assert_eq(sqlite3_open(dbp, &db), SQLITE_OK);
	snprintf(spec, sizeof(spec), "INSERT INTO runs(run_id, experiment, session, start_ns) VALUES('%.12s%s', 'x', 's', 1)",
		 ids[0], "00000000000000000000");
	cr_assert_eq(sqlite3_exec(db, spec, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
	sqlite3_close(db);
	snprintf(buf, sizeof(buf), "%.12s", ids[0]);
	r = CLI("runs", dbp, "--compare", buf, pb);
	cr_expect_eq(r->status, 2);
	cr_expect_not_null(strstr(r->err, "ambiguous"), "%s", r->err);
	r = CLI("runs", dbp, "--compare", "fffffffffffffffffff", pb);
	cr_expect_eq(r->status, 2);
	cr_expect_not_null(strstr(r->err, "no run"), "%s", r->err);
}

/* Replays cap with jsonl and sqlite=db; the jsonl must be whole and the sqlite handler's error clear. */
static void replay_with_bad_db(const char *cap, const char *dbp, const char *want, const char *ref_jsonl)
{
	static int seq;
	char name[32], spec_j[160], spec_s[160];
	struct run *r;
	char *got, *ref;

	snprintf(name, sizeof(name), "bad%d.jsonl", seq++);
	snprintf(spec_j, sizeof(spec_j), "jsonl=%s", tmp_path(name));
	snprintf(spec_s, sizeof(spec_s), "sqlite=%s,busy-ms=300", dbp);
	r = CLI("replay", cap, "-H", spec_j, "-H", spec_s);
	cr_expect_eq(r->status, 9, "a handler failed: exit 9, not %d (%s)", r->status, r->err);
	cr_expect_not_null(strstr(r->err, dbp), "the error names the file: %s", r->err);
	cr_expect_not_null(strstr(r->err, want), "SQLite's reason '%s': %s", want, r->err);
	cr_expect_not_null(strstr(r->err, "handler sqlite:"), "counted as the handler's errors: %s", r->err);
	got = read_all(tmp_path(name));
	ref = read_all(ref_jsonl);
	cr_expect_str_eq(got, ref, "jsonl beside the broken sqlite handler is complete");
	free(got);
	free(ref);
}

Test(runs, a_corrupt_locked_or_read_only_database_leaves_the_other_handlers_whole)
{
	char *cap = tmp_path("cap.evr"), *ref = tmp_path("ref.jsonl"), *bad = tmp_path("corrupt.db");
	char *locked = tmp_path("locked.db"), *ro = tmp_path("ro.db"), spec[160];
	struct evr_config cfg = { .name = "runs-test", .capture_content = 1 };
	struct child ch;
	char pid[32];
	struct run *r;
	sqlite3 *db;
	int fd;

	/* A capture of one run, and the jsonl a replay of it gives alone. */
	child_start_cfg(&ch, &cfg, mixed, nothing, true);
	snprintf(pid, sizeof(pid), "%d", (int)ch.pid);
	r = CLI("record", pid, "-o", cap, "--from", "oldest", "--duration", "1");
	cr_assert_eq(r->status, 0, "record: %s", r->err);
	child_go(&ch);
	child_wait_done(&ch);
	kill(ch.pid, SIGKILL);
	child_reap(&ch, SIGKILL);
	chmod(cap, 0644);
	snprintf(spec, sizeof(spec), "jsonl=%s", ref);
	r = CLI("replay", cap, "-H", spec);
	cr_assert_eq(r->status, 0, "%s", r->err);

	/* Corrupt: not a database at all. */
	fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	for (int i = 0; i < 64; i++)
		cr_assert_eq(write(fd, "this is not an SQLite database, just text ", 42), 42);
	close(fd);
	replay_with_bad_db(cap, bad, "file is not a database", ref);

	/* Locked: another writer holds it. */
	cr_assert_eq(sqlite3_open(locked, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); BEGIN EXCLUSIVE; INSERT INTO t VALUES(1)",
				  NULL, NULL, NULL),
		     SQLITE_OK, "%s", sqlite3_errmsg(db));
	replay_with_bad_db(cap, locked, "database is locked", ref);
	sqlite3_close(db);

	/* Read-only: a run store the user may not write (root may write anything: the tool then runs as nobody). */
	snprintf(spec, sizeof(spec), "sqlite=%s", ro);
	r = CLI("replay", cap, "-H", spec);
	cr_assert_eq(r->status, 0, "%s", r->err);
	chmod(ro, 0444);
	unlink(tmp_path("ro.db-wal"));
	unlink(tmp_path("ro.db-shm"));
	spawn_as_nobody = geteuid() == 0;
	if (spawn_as_nobody)
		reach_for_nobody(EVR_CLI_PATH);
	replay_with_bad_db(cap, ro, "read-only", ref);

	/* A directory the user may not write: the database cannot be created there. */
	char *rodir = tmp_path("rodir");
	cr_assert_eq(mkdir(rodir, 0555), 0);
	char *indir = tmp_path("rodir/new.db");
	replay_with_bad_db(cap, indir, "unable to open database file", ref);
	spawn_as_nobody = false;
	reach_restore();
}

Test(runs, runs_and_metrics_through_the_callbacks)
{
	char *dbp = tmp_path("m.db"), spec[160], err[256], buf[1024];
	struct evr_source src = { .pid = 4242, .index = 0, .program = "trainer", .cmdline = "trainer --lr 0.1" };
	struct evr_source src2 = { .pid = 4343, .index = 1, .program = "other", .cmdline = "other" };
	struct evr_param params[] = { { "program", "trainer" }, { "host", "box" }, { "app.model", "gpt-4o" },
				      { "env.HOME", "/root" } };
	struct evr_run_info run = { .obj = { 1, EVR_OBJ_RUN }, .src = &src,
				    .run_id = "0123456789abcdef0123456789abcdef", .experiment = "sweep-1",
				    .start_ns = 1700000000000000000ull, .nparams = 4, .params = params };
	struct evr_handler h;
	sqlite3 *db;

	snprintf(spec, sizeof(spec), "sqlite=%s,batch=3", dbp);
	cr_assert_eq(evr_handler_builtin(spec, NULL, &h, err, sizeof(err)), 0, "%s", err);
	cr_assert_not_null(h.on_run);
	cr_assert_not_null(h.on_metric);
	cr_assert_eq(h.on_run(h.ctx, &run), 0);
	for (int i = 0; i < 10; i++) {
		struct evr_metric m = { .obj = { 1, EVR_OBJ_METRIC }, .src = &src,
					.ts_ns = run.start_ns + (uint64_t)i * 1000000000ull, .name = "process.cpu.user",
					.unit = "%", .value = 40.0 + i };
		struct evr_metric rss = m;

		rss.name = "process.memory.rss";
		rss.unit = "By";
		rss.value = 104857600.0 + i;
		cr_assert_eq(h.on_metric(h.ctx, &m), 0);
		cr_assert_eq(h.on_metric(h.ctx, &rss), 0);
	}
	struct evr_metric host = { .obj = { 1, EVR_OBJ_METRIC }, .src = NULL, .ts_ns = run.start_ns,
				   .name = "host.cpus", .unit = "1", .value = 16 };
	struct evr_metric other = { .obj = { 1, EVR_OBJ_METRIC }, .src = &src2, .ts_ns = run.start_ns + 5,
				    .name = "process.threads", .unit = "1", .value = 3 };
	cr_assert_eq(h.on_metric(h.ctx, &host), 0);
	cr_assert_eq(h.on_metric(h.ctx, &other), 0, "a source with no run gets one of the handler's own");
	cr_assert_eq(h.on_source_end(h.ctx, &src), 0);
	cr_assert_eq(h.on_end(h.ctx), 0);
	h.destroy(h.ctx);

	db = db_open(dbp);
	db_text(db, "SELECT experiment || '|' || pid || '|' || program || '|' || start_ns || '|' || metrics || '|' || params"
		    " FROM runs WHERE run_id='0123456789abcdef0123456789abcdef'",
		buf, sizeof(buf));
	cr_expect_str_eq(buf, "sweep-1|4242|trainer|1700000000000000000|20|{\"program\":\"trainer\",\"host\":\"box\","
			      "\"app.model\":\"gpt-4o\",\"env.HOME\":\"/root\"}");
	cr_expect_eq(db_int(db, "SELECT count(*) FROM params WHERE run_id='0123456789abcdef0123456789abcdef'"), 4);
	db_text(db, "SELECT value FROM params WHERE key='app.model'", buf, sizeof(buf));
	cr_expect_str_eq(buf, "gpt-4o");
	cr_expect_eq(db_int(db, "SELECT count(*) FROM metrics WHERE run_id='0123456789abcdef0123456789abcdef'"), 20);
	cr_expect_eq(db_int(db, "SELECT CAST(avg(value) * 10 AS INTEGER) FROM metrics WHERE name='process.cpu.user'"), 445);
	cr_expect_eq(db_int(db, "SELECT max(value) FROM metrics WHERE name='process.memory.rss'"), 104857609);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM metrics WHERE run_id IS NULL AND pid IS NULL AND name='host.cpus'"
				" AND session=(SELECT session FROM runs LIMIT 1)"),
		     1, "a host sample belongs to the session");
	db_text(db, "SELECT experiment || '|' || pid || '|' || program || '|' || metrics FROM runs WHERE pid=4343", buf,
		sizeof(buf));
	cr_expect_str_eq(buf, "default|4343|other|1");
	sqlite3_close(db);

	/* --compare prints the metrics' mean and max. */
	struct run *r = CLI("runs", dbp, "--compare", "0123", "0123");
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_expect_not_null(strstr(r->out, "process.cpu.user"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, "44.5"), "the mean: %s", r->out);
	cr_expect_not_null(strstr(r->out, "1.04858e+08"), "the max: %s", r->out);
}

Test(runs, runs_refuses_what_is_not_a_run_store)
{
	char *plain = tmp_path("plain.db"), *newer = tmp_path("newer.db"), *text = tmp_path("text.txt");
	char spec[160], err[256];
	struct evr_handler h;
	struct run *r;
	sqlite3 *db;
	FILE *f;

	r = CLI("runs", tmp_path("missing.db"));
	cr_expect_eq(r->status, 8);
	cr_expect_not_null(strstr(r->err, "No such file"), "%s", r->err);

	f = fopen(text, "w");
	fputs("hello\n", f);
	fclose(f);
	r = CLI("runs", text);
	cr_expect_eq(r->status, 8);
	cr_expect_not_null(strstr(r->err, "not a database"), "%s", r->err);

	cr_assert_eq(sqlite3_open(plain, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	r = CLI("runs", plain);
	cr_expect_eq(r->status, 8);
	cr_expect_not_null(strstr(r->err, "not an evring run store"), "%s", r->err);

	/* A newer schema: refused by evring runs, and by the handler (broken, not the run). */
	snprintf(spec, sizeof(spec), "sqlite=%s", newer);
	cr_assert_eq(evr_handler_builtin(spec, NULL, &h, err, sizeof(err)), 0, "%s", err);
	h.destroy(h.ctx);
	cr_assert_eq(sqlite3_open(newer, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, "UPDATE schema_version SET version=99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	r = CLI("runs", newer);
	cr_expect_eq(r->status, 8);
	cr_expect_not_null(strstr(r->err, "schema version 99 is newer"), "%s", r->err);
	cr_assert_eq(evr_handler_builtin(spec, NULL, &h, err, sizeof(err)), 0, "%s", err);
	struct evr_source src = { .pid = 1, .program = "p" };
	struct evr_metric m = { .obj = { 1, EVR_OBJ_METRIC }, .src = &src, .ts_ns = 1, .name = "x", .unit = "1" };
	cr_expect_eq(h.on_metric(h.ctx, &m), -EIO, "a broken handler fails each record");
	cr_expect_eq(h.on_end(h.ctx), -EIO);
	h.destroy(h.ctx);

	r = CLI("runs");
	cr_expect_eq(r->status, 2);
	r = CLI("runs", plain, "--compare", "ab");
	cr_expect_eq(r->status, 2);
}

Test(runs, a_write_that_fails_mid_run_is_counted_and_the_next_goes_in)
{
	char *dbp = tmp_path("w.db"), spec[160], err[256];
	struct evr_source src = { .pid = 77, .index = 0, .program = "w", .cmdline = "w" };
	struct evr_metric m = { .obj = { 1, EVR_OBJ_METRIC }, .src = &src, .ts_ns = 1000, .name = "process.threads",
				.unit = "1", .value = 1 };
	struct evr_handler h;
	sqlite3 *other, *db;

	snprintf(spec, sizeof(spec), "sqlite=%s,batch=1,busy-ms=100", dbp);
	cr_assert_eq(evr_handler_builtin(spec, NULL, &h, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(h.on_metric(h.ctx, &m), 0);

	/* Another writer takes the database: this row cannot be written. */
	cr_assert_eq(sqlite3_open(dbp, &other), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	m.ts_ns = 2000;
	m.value = 2;
	cr_expect_eq(h.on_metric(h.ctx, &m), -EIO, "a failed write is the callback's error");
	cr_assert_eq(sqlite3_exec(other, "INSERT INTO gaps(session, count) VALUES('x', 0); COMMIT", NULL, NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(other);

	/* It let go: the next row goes in, and the end says rows were lost. */
	m.ts_ns = 3000;
	m.value = 3;
	cr_expect_eq(h.on_metric(h.ctx, &m), 0);
	cr_expect_eq(h.on_end(h.ctx), -EIO, "on_end reports the rows not written");
	h.destroy(h.ctx);

	db = db_open(dbp);
	char buf[64];
	db_text(db, "SELECT group_concat(CAST(value AS INTEGER)) FROM (SELECT value FROM metrics WHERE pid=77 ORDER BY ts_ns)",
		buf, sizeof(buf));
	cr_expect_str_eq(buf, "1,3", "rows 1 and 3 stored, 2 lost");
	cr_expect_eq(db_int(db, "SELECT metrics FROM runs WHERE pid=77"), 3, "the run counts the samples it was handed");
	sqlite3_close(db);
}

Test(runs, a_parent_found_missing_at_the_trace_end_flags_the_stored_span)
{
	char *dbp = tmp_path("t.db"), spec[160], err[256];
	struct evr_source src = { .pid = 9, .index = 0, .program = "t", .cmdline = "t" };
	struct evr_site_info site = { .id = 1, .kind = EVR_KIND_SPAN_BEGIN, .name = "orphan", .dispatcher = "app" };
	struct evr_fields none = { .refs = 1u << 30, .n = 0 };
	struct evr_span_rec sp = { .obj = { 1u << 30, EVR_OBJ_SPAN }, .src = &src, .site = &site, .span_id = 0x2a,
				   .parent_id = 0x29, .trace_id = 0x7, .start_ns = 100, .end_ns = 200,
				   .status = EVR_SPAN_OK, .begin_fields = &none, .end_fields = &none };
	struct evr_span_rec *spans[1] = { &sp };
	int32_t parent[1] = { -1 };
	uint32_t zero[1] = { 0 };
	struct evr_trace tr = { .obj = { 1u << 30, EVR_OBJ_TRACE }, .src = &src, .trace_id = 0x7, .nspans = 1,
				.root = -1, .start_ns = 100, .end_ns = 200, .incomplete = true, .spans = spans,
				.parent = parent, .first_child = zero, .next_sibling = zero };
	struct evr_handler h;
	sqlite3 *db;

	snprintf(spec, sizeof(spec), "sqlite=%s", dbp);
	cr_assert_eq(evr_handler_builtin(spec, NULL, &h, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(h.on_span_end(h.ctx, &sp), 0);
	sp.flags = EVR_SPAN_MISSING_PARENT;
	cr_assert_eq(h.on_trace_end(h.ctx, &tr), 0);
	cr_assert_eq(h.on_end(h.ctx), 0);
	h.destroy(h.ctx);
	db = db_open(dbp);
	cr_expect_eq(db_int(db, "SELECT flags FROM spans WHERE span_id='2a' AND parent_id='29' AND trace_id='7'"), 2);
	cr_expect_eq(db_int(db, "SELECT duration_ns FROM spans"), 100);
	sqlite3_close(db);
}

/*
 * A live attach with run tracking and the sampler on: the consumer's own run
 * (its id, experiment and params, the producer's evr_run_param ones too, the
 * one set after attach included) is the stored run, and the samples of the
 * process and of the host are rows of it.
 */
Test(runs, a_live_run_stores_its_params_and_metrics)
{
	struct evr_config cfg = { .name = "runs-live" };
	char *jl = tmp_path("live.jsonl"), *dbp = tmp_path("live.db"), spec_j[160], spec_s[160], pid[32], buf[512];
	const char *argv[] = { EVR_CLI_PATH, "attach", pid, "--from", "oldest", "--duration", "3",
			       "--metrics-interval", "0.2", "--experiment", "exp-live", "-H", spec_j, "-H", spec_s, NULL };
	struct child ch;
	sqlite3 *db;
	char *jsonl, sql[256], run_id[64], *out = tmp_path("live.out"), *err = tmp_path("live.err");
	pid_t attach;
	int status;

	snprintf(spec_j, sizeof(spec_j), "jsonl=%s", jl);
	snprintf(spec_s, sizeof(spec_s), "sqlite=%s", dbp);
	/* The model parameter is set before the consumer attaches, the rest while it follows the process. */
	child_start_cfg(&ch, &cfg, param_before, params_and_work, true);
	snprintf(pid, sizeof(pid), "%d", (int)ch.pid);
	attach = spawn(argv, out, err);
	child_go(&ch);
	child_wait_done(&ch);
	status = wait_for(attach, WAIT_MS);
	kill(ch.pid, SIGKILL);
	child_reap(&ch, SIGKILL);
	slurp(err, buf, sizeof(buf));
	cr_assert_eq(status, 0, "attach: %s", buf);
	jsonl = read_all(jl);
	db = db_open(dbp);
	cr_assert_eq(db_int(db, "SELECT count(*) FROM runs"), 1);
	db_text(db, "SELECT run_id FROM runs", run_id, sizeof(run_id));
	snprintf(sql, sizeof(sql), "\"kind\":\"run\",\"run_id\":\"%s\"", run_id);
	cr_expect_not_null(strstr(jsonl, sql), "the stored run is the consumer's (%s)", run_id);
	db_text(db, "SELECT experiment || '|' || spans FROM runs", buf, sizeof(buf));
	cr_expect_str_eq(buf, "exp-live|6");
	cr_expect_eq(db_int(db, "SELECT count(*) FROM params WHERE key='app.model' AND value='m-1'"), 1);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM params WHERE key='app.dataset' AND value='d-2'"), 1,
		     "a parameter set after attach reaches the store");
	cr_expect_eq(db_int(db, "SELECT count(*) FROM runs WHERE json_extract(params, '$.\"app.dataset\"')='d-2'"), 1);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM params WHERE key IN ('host', 'kernel', 'exe', 'evring.version')"),
		     4);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM params WHERE key LIKE 'env.%'"), 0, "no --env-allow");
	/* Samples every 0.2 s over about a second of work, of the process and once of the host. */
	cr_expect_geq(db_int(db, "SELECT count(*) FROM metrics m JOIN runs r USING(run_id)"
				 " WHERE m.name='process.cpu.user' AND m.pid=r.pid"),
		      4);
	cr_expect_gt(db_int(db, "SELECT max(value) FROM metrics WHERE name='process.cpu.user'"), 20,
		     "a busy process's CPU shows");
	cr_expect_gt(db_int(db, "SELECT count(*) FROM metrics WHERE name='process.memory.rss' AND value > 0"), 0);
	cr_expect_eq(db_int(db, "SELECT count(*) FROM metrics WHERE name='host.cpus' AND pid IS NULL AND value >= 1"), 1);
	/* As many process samples in the store as in the jsonl beside it. */
	cr_expect_eq((size_t)db_int(db, "SELECT count(*) FROM metrics WHERE pid IS NOT NULL"),
		     count_lines(jsonl, "\"kind\":\"metric\",") - count_lines(jsonl, "\"name\":\"host."));
	sqlite3_close(db);
	free(jsonl);
}
