/*
 * test_cli.c: the `evring` tool end to end, as its users run it: the real
 * binary against real evring-demo processes. Every subcommand, `top --once`
 * parsed, record -> replay giving the same jsonl as the live run, and every
 * error with its one line and its exit status: no such process, no segment,
 * permission denied, another ABI version, every consumer slot held, a bad
 * segment, a bad capture, bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

#include <evring/ring.h>

#include "cli_child.h"

#ifndef EVR_CLI_PATH
#error "EVR_CLI_PATH and EVR_DEMO_PATH are set by tests/tools/CMakeLists.txt"
#endif

#define WAIT_MS 60000 /* the longest a command may take past what it was asked for */

/* ---- processes ------------------------------------------------------------- */

struct run {
	int status; /* exit status, or 128 + signal */
	char out[1 << 20];
	char err[1 << 16];
};

static char tmpdir[64];

static void tmp_path(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", tmpdir, name);
}

/* Waits for a process started with spawn() and collects what it printed. */
static void collect(struct run *r, pid_t pid, const char *out, const char *err)
{
	r->status = wait_for(pid, WAIT_MS);
	slurp(out, r->out, sizeof(r->out));
	slurp(err, r->err, sizeof(r->err));
}

static void start_cli(const char *const *args, pid_t *pid, char *out, char *err, size_t cap)
{
	const char *argv[40] = { EVR_CLI_PATH };
	static int seq;
	size_t n = 1;

	for (; args[n - 1]; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	snprintf(out, cap, "%s/cli%d.out", tmpdir, seq);
	snprintf(err, cap, "%s/cli%d.err", tmpdir, seq++);
	*pid = spawn(argv, out, err);
}

/* Runs `evring args...` to the end. */
static struct run *cli(const char *const *args)
{
	static struct run r;
	char out[128], err[128];
	pid_t pid;

	start_cli(args, &pid, out, err, sizeof(out));
	collect(&r, pid, out, err);
	return &r;
}

#define CLI(...) cli((const char *const[]){ __VA_ARGS__, NULL })

/* Starts evring-demo with extra args and waits until its segment exists. */
static pid_t demo(const char *const *args)
{
	const char *argv[24] = { EVR_DEMO_PATH, "--quiet" };
	char out[128], err[128], seg[128];
	static int seq;
	size_t n = 2;
	pid_t pid;
	uint64_t end = now_ms() + WAIT_MS;

	for (; args && args[n - 2]; n++)
		argv[n] = args[n - 2];
	argv[n] = NULL;
	snprintf(out, sizeof(out), "%s/demo%d.out", tmpdir, seq);
	snprintf(err, sizeof(err), "%s/demo%d.err", tmpdir, seq++);
	pid = spawn(argv, out, err);
	snprintf(seg, sizeof(seg), "/dev/shm/evring.%d.evring-demo", (int)pid);
	while (access(seg, F_OK) != 0) {
		cr_assert(now_ms() < end, "evring-demo (pid %d) made no segment", (int)pid);
		sleep_ms(5);
	}
	sleep_ms(100); /* its workers claim their lanes */
	return pid;
}

#define DEMO(...) demo((const char *const[]){ __VA_ARGS__, NULL })

/* Waits until process consumer holds a consumer slot of demo's segment (it has attached). */
static void wait_attached(pid_t demo_pid, pid_t consumer)
{
	char shm[128], e[EVR_ERR_MAX];
	struct evr_segment seg;
	uint64_t end = now_ms() + WAIT_MS;
	bool held = false;

	cr_assert_gt(evr_segment_name(shm, sizeof(shm), demo_pid, "evring-demo"), 0);
	cr_assert_eq(evr_segment_open(&seg, shm, e, sizeof(e)), 0, "%s", e);
	while (!held) {
		for (uint32_t k = 0; k < seg.slots && !held; k++)
			held = evr_ld_64(&seg.hdr->slots[k].pid) == (uint64_t)consumer;
		cr_assert(held || now_ms() < end, "pid %d did not attach to %s", (int)consumer, shm);
		if (!held)
			sleep_ms(5);
	}
	evr_segment_close(&seg);
}

static void demo_stop(pid_t pid)
{
	char seg[128];

	kill(pid, SIGTERM);
	cr_expect_eq(wait_for(pid, WAIT_MS), 0, "evring-demo exits 0 on SIGTERM");
	snprintf(seg, sizeof(seg), "/evring.%d.evring-demo", (int)pid);
	evr_segment_unlink(seg); /* the demo leaves its segment for late consumers; tests tidy up */
}

static char pidstr[32];

static const char *str_pid(pid_t pid)
{
	snprintf(pidstr, sizeof(pidstr), "%d", (int)pid);
	return pidstr;
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/evring-cli-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 240);

/* The one error line: "evring <cmd>: ..." and nothing else. */
static void one_error_line(const struct run *r, const char *cmd, const char *needle)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "evring %s: ", cmd);
	cr_expect(!strncmp(r->err, prefix, strlen(prefix)), "stderr starts with '%s': %s", prefix, r->err);
	cr_expect(strstr(r->err, needle) != NULL, "stderr names '%s': %s", needle, r->err);
	cr_expect(strchr(r->err, '\n') == r->err + strlen(r->err) - 1, "one line: %s", r->err);
}

/* ---- help and usage ---------------------------------------------------------- */

Test(cli, help_for_every_command)
{
	static const char *cmds[] = { "ls", "attach", "record", "replay", "stats", "top" };
	struct run *r = CLI("--help");

	cr_assert_eq(r->status, 0);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char want[64];

		cr_expect(strstr(r->out, cmds[i]) != NULL, "evring --help lists %s", cmds[i]);
		r = CLI(cmds[i], "--help");
		snprintf(want, sizeof(want), "usage: evring %s", cmds[i]);
		cr_expect_eq(r->status, 0, "evring %s --help exits 0", cmds[i]);
		cr_expect(strstr(r->out, want) != NULL, "evring %s --help: %s", cmds[i], r->out);
		r = CLI("--help");
	}
}

Test(cli, usage_errors_exit_2)
{
	struct run *r = CLI("frobnicate");

	cr_expect_eq(r->status, 2);
	cr_expect(strstr(r->err, "unknown command 'frobnicate'") != NULL, "%s", r->err);
	r = CLI("attach");
	cr_expect_eq(r->status, 2, "attach without a target");
	r = CLI("attach", "1", "--duration", "soon");
	cr_expect_eq(r->status, 2);
	one_error_line(r, "attach", "--duration wants seconds");
	r = CLI("attach", "1", "--from", "yesterday");
	cr_expect_eq(r->status, 2);
	r = CLI("record", "1");
	cr_expect_eq(r->status, 2);
	one_error_line(r, "record", "-o FILE");
	r = CLI("top", "1", "--interval-ms", "0");
	cr_expect_eq(r->status, 2);
	r = CLI("ls", "extra");
	cr_expect_eq(r->status, 2);
	r = CLI("ls", "--all-users");
	cr_expect_eq(r->status, 2);
	one_error_line(r, "ls", "--all-users goes with --clean");
	r = CLI("attach", "1", "-H", "nosuchhandler");
	cr_expect_eq(r->status, 2, "an unknown handler is a usage error: %s", r->err);
}

/* ---- ls, stats ---------------------------------------------------------------- */

/* The JSON object of pid in `ls --json` output, or NULL. */
static const char *ls_entry(const char *json, pid_t pid)
{
	char key[48];

	snprintf(key, sizeof(key), "{\"pid\":%d,", (int)pid);
	return strstr(json, key);
}

static unsigned long long json_u64(const char *obj, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(obj, k);
	cr_assert_not_null(p, "no %s in %.200s", key, obj);
	return strtoull(p + strlen(k), NULL, 10);
}

Test(cli, ls_lists_live_and_stale_and_cleans)
{
	pid_t live = DEMO("--rate", "200"), dead = DEMO("--rate", "200");
	struct run *r;
	const char *e;
	char seg[128];

	kill(dead, SIGKILL); /* leaves its segment behind: stale */
	wait_for(dead, WAIT_MS);
	r = CLI("ls", "--json");
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_assert_eq(r->out[0], '[');
	e = ls_entry(r->out, live);
	cr_assert_not_null(e, "live demo %d listed: %s", (int)live, r->out);
	cr_expect(!strncmp(strstr(e, "\"program\":"), "\"program\":\"evring-demo\"", 23));
	cr_expect(strstr(e, "\"state\":\"live\"") != NULL && strstr(e, "\"state\":\"live\"") < strchr(e, '}'));
	cr_expect_gt(json_u64(e, "records"), 0);
	cr_expect_gt(json_u64(e, "lanes_in_use"), 0);
	e = ls_entry(r->out, dead);
	cr_assert_not_null(e, "killed demo %d listed", (int)dead);
	cr_expect(strstr(e, "\"state\":\"stale\"") != NULL && strstr(e, "\"state\":\"stale\"") < strchr(e, '}'));

	r = CLI("ls");
	cr_assert_eq(r->status, 0);
	cr_expect(strstr(r->out, "PID") == r->out, "a header: %s", r->out);
	cr_expect(strstr(r->out, str_pid(live)) != NULL);

	r = CLI("ls", "--clean");
	cr_assert_eq(r->status, 0, "%s", r->err);
	snprintf(seg, sizeof(seg), "/dev/shm/evring.%d.evring-demo", (int)dead);
	cr_expect_neq(access(seg, F_OK), 0, "the stale segment is removed");
	snprintf(seg, sizeof(seg), "/dev/shm/evring.%d.evring-demo", (int)live);
	cr_expect_eq(access(seg, F_OK), 0, "the live one stays");
	r = CLI("ls", "--json");
	cr_expect_null(ls_entry(r->out, dead));
	demo_stop(live);
}

Test(cli, stats_reads_without_the_slot)
{
	pid_t d = DEMO("--rate", "300");
	char out[128], err[128];
	struct run held, *r;
	pid_t attach;

	r = CLI("stats", str_pid(d), "--json");
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_expect_gt(json_u64(r->out, "records"), 0);
	cr_expect_eq(json_u64(r->out, "consumer_pid"), 0);
	cr_expect_eq(json_u64(r->out, "lost"), 0);

	/* While a consumer holds the slot, stats still reads, and names it. */
	start_cli((const char *const[]){ "attach", str_pid(d), "-H", "stats", "--duration", "3", NULL }, &attach, out,
		  err, sizeof(out));
	sleep_ms(1000);
	r = CLI("stats", str_pid(d), "--json");
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_expect_eq(json_u64(r->out, "consumer_pid"), (unsigned long long)attach);
	r = CLI("stats", str_pid(d));
	cr_expect_eq(r->status, 0);
	cr_expect(strstr(r->out, "lane_claims") != NULL && strstr(r->out, "LANE") != NULL, "%s", r->out);
	collect(&held, attach, out, err);
	cr_expect_eq(held.status, 0, "%s", held.err);
	demo_stop(d);
}

/* ---- attach --------------------------------------------------------------------- */

static unsigned long long summary_num(const char *err, const char *what)
{
	/* "evring attach: 123 events, 45 spans, 0 lost, 0 skipped, 0 handler timeouts (130 records read ...)" */
	char key[48];
	const char *p;

	snprintf(key, sizeof(key), " %s", what);
	p = strstr(err, key);
	cr_assert_not_null(p, "summary has %s: %s", what, err);
	while (p > err && p[-1] >= '0' && p[-1] <= '9')
		p--;
	return strtoull(p, NULL, 10);
}

Test(cli, attach_runs_handlers_and_summarises)
{
	pid_t d = DEMO("--rate", "300");
	char jsonl[128], arg[160];
	struct run *r;
	FILE *f;
	char line[8192];
	unsigned spans = 0, queries = 0, events = 0;

	tmp_path(jsonl, sizeof(jsonl), "live.jsonl");
	snprintf(arg, sizeof(arg), "jsonl=%s", jsonl);
	r = CLI("attach", str_pid(d), "-H", arg, "-H", "stats", "--duration", "1.5", "--timeout-ms", "2000");
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->err, "evring attach: ") != NULL, "%s", r->err);
	cr_expect_gt(summary_num(r->err, "records read"), 0);
	cr_expect_gt(summary_num(r->err, "spans,"), 0);
	cr_expect_eq(summary_num(r->err, "lost,"), 0);
	cr_expect_eq(summary_num(r->err, "skipped,"), 0);
	cr_expect_eq(summary_num(r->err, "handler timeouts"), 0);
	cr_expect(strstr(r->out, "llm.chat") != NULL, "the stats table: %s", r->out);
	f = fopen(jsonl, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		/* Spans still open when the run ended come out as "open" (detached): not counted as ended. */
		spans += strncmp(line, "{\"kind\":\"span\"", 14) == 0 && !strstr(line, "\"status\":\"open\"");
		events += strncmp(line, "{\"kind\":\"event\"", 15) == 0;
		queries += strstr(line, "{\"kind\":\"span\",\"name\":\"query\"") == line;
	}
	fclose(f);
	cr_expect_eq(spans, summary_num(r->err, "spans,"), "a jsonl line per span ended");
	cr_expect_gt(queries, 100, "1.5 s at 300 requests/s");
	cr_expect_gt(events, 0);

	/* --filter: only the llm.chat dispatcher (and what propagates below it) reaches the handlers. */
	snprintf(arg, sizeof(arg), "jsonl=%s.chat", jsonl);
	r = CLI("attach", str_pid(d), "-H", arg, "--duration", "1", "--filter", "llm.chat");
	cr_assert_eq(r->status, 0, "%s", r->err);
	f = fopen(arg + 6, "r");
	cr_assert_not_null(f);
	spans = 0;
	while (fgets(line, sizeof(line), f)) {
		/* A process's run and metrics belong to no dispatcher: a filter passes them, as it does losses. */
		if (!strncmp(line, "{\"kind\":\"run\"", 13) || !strncmp(line, "{\"kind\":\"metric\"", 16))
			continue;
		spans++;
		cr_expect(strstr(line, "\"dispatcher\":\"llm.chat\"") != NULL, "filtered out: %.200s", line);
	}
	fclose(f);
	cr_expect_gt(spans, 100, "the chat spans and their chunks came through");

	/* Default handler tail. */
	r = CLI("attach", str_pid(d), "--duration", "0.5");
	cr_expect_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->out, "query") != NULL, "tail prints the spans: %.300s", r->out);
	demo_stop(d);
}

Test(cli, attach_ends_when_the_process_exits_and_on_sigint)
{
	pid_t d = DEMO("--rate", "200", "--duration", "1");
	char out[128], err[128];
	struct run r;
	pid_t a;

	start_cli((const char *const[]){ "attach", str_pid(d), "-H", "tokens", NULL }, &a, out, err, sizeof(out));
	collect(&r, a, out, err);
	cr_expect_eq(r.status, 0, "attach ends with its process: %s", r.err);
	cr_expect(strstr(r.err, "records read from the lanes") != NULL);
	wait_for(d, WAIT_MS);

	d = DEMO("--rate", "200");
	start_cli((const char *const[]){ "attach", str_pid(d), "-H", "debug", NULL }, &a, out, err, sizeof(out));
	sleep_ms(700);
	kill(a, SIGINT);
	collect(&r, a, out, err);
	cr_expect_eq(r.status, 0, "SIGINT ends attach cleanly: %s", r.err);
	cr_expect(strstr(r.err, "evring attach: ") != NULL, "and it prints its summary: %s", r.err);
	demo_stop(d);
}

/* ---- record, replay ------------------------------------------------------------------ */

static char *read_all(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long len;

	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)len + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	buf[len] = 0;
	*n = (size_t)len;
	return buf;
}

Test(cli, record_then_replay_gives_the_live_jsonl)
{
	pid_t d = DEMO("--rate", "400", "--duration", "1.5", "--fail-rate", "0.2", "--timeout-rate", "0.1");
	char cap[128], live[128], again[128], a1[160], a2[160], bad[128];
	size_t nl, nr, nc;
	char *l, *rp, *c;
	unsigned long long live_events, live_spans;
	struct run *r;
	FILE *f;

	tmp_path(cap, sizeof(cap), "run.evrcap");
	tmp_path(live, sizeof(live), "live.jsonl");
	tmp_path(again, sizeof(again), "replay.jsonl");
	snprintf(a1, sizeof(a1), "jsonl=%s", live);
	snprintf(a2, sizeof(a2), "jsonl=%s", again);
	r = CLI("record", str_pid(d), "-o", cap, "-H", a1);
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->err, "capture written to") != NULL, "%s", r->err);
	cr_expect(strstr(r->err, "records read from the lanes") != NULL, "%s", r->err);
	live_events = summary_num(r->err, "events,");
	live_spans = summary_num(r->err, "spans,");
	wait_for(d, WAIT_MS);
	r = CLI("replay", cap, "-H", a2);
	cr_assert_eq(r->status, 0, "%s", r->err);
	cr_expect_eq(summary_num(r->err, "skipped,"), 0, "a replay waits for its handlers: %s", r->err);
	/* The summary's figures of what was delivered are the live run's; the records read are named by source. */
	cr_expect_eq(summary_num(r->err, "events,"), live_events, "%s", r->err);
	cr_expect_eq(summary_num(r->err, "spans,"), live_spans, "%s", r->err);
	cr_expect(strstr(r->err, "records read from the capture") != NULL, "%s", r->err);
	l = read_all(live, &nl);
	rp = read_all(again, &nr);
	cr_assert_gt(nl, 10000, "the live run wrote its jsonl");
	cr_expect_eq(nl, nr, "replay wrote %zu bytes, live %zu", nr, nl);
	cr_expect(nl == nr && memcmp(l, rp, nl) == 0, "the replay's jsonl is the live run's");
	cr_expect(strstr(l, "\"status\":\"abandoned\"") || strstr(l, "\"status\":\"dropped\""),
		  "failures and timeouts are in it");
	free(rp);

	/* Other handlers run offline too. */
	r = CLI("replay", cap, "-H", "stats", "-H", "tokens");
	cr_expect_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->out, "llm.chat") != NULL);

	/* The README's plug-in (examples/slow_spans.c) over the same capture. */
	{
		char spec[512], want[64];

		snprintf(spec, sizeof(spec), "plugin=%s:0.5", EVR_SLOW_SPANS);
		r = CLI("replay", cap, "-H", spec);
		cr_expect_eq(r->status, 0, "%s", r->err);
		snprintf(want, sizeof(want), " of %llu spans took 0.500 ms or more", summary_num(r->err, "spans,"));
		cr_expect(strstr(r->out, want) != NULL, "slow_spans saw every span: %s", want);
		cr_expect(strstr(r->out, "slow: query ") != NULL, "queries take about 0.6 ms");
		snprintf(spec, sizeof(spec), "plugin=%s:-1", EVR_SLOW_SPANS);
		r = CLI("replay", cap, "-H", spec);
		cr_expect_eq(r->status, 2, "a plug-in refusing its argument: %s", r->err);
		one_error_line(r, "replay", "threshold");
	}

	/* A truncated capture: what came before the cut is delivered, then status 8 and the position. */
	c = read_all(cap, &nc);
	tmp_path(bad, sizeof(bad), "cut.evrcap");
	f = fopen(bad, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(c, 1, nc - 7, f), nc - 7);
	fclose(f);
	r = CLI("replay", bad, "-H", "stats");
	cr_expect_eq(r->status, 8, "a truncated capture: %s", r->err);
	cr_expect(strstr(r->err, "truncated") != NULL, "%s", r->err);
	/* Not a capture at all. */
	r = CLI("replay", live);
	cr_expect_eq(r->status, 8, "%s", r->err);
	one_error_line(r, "replay", "capture");
	r = CLI("replay", "/nonexistent/capture");
	cr_expect_eq(r->status, 1);
	one_error_line(r, "replay", "No such file");
	free(c);
	free(l);
}

/* Writes buf[0..n) to path. */
static void write_file(const char *path, const void *buf, size_t n)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(buf, 1, n, f), n);
	fclose(f);
}

/*
 * A capture cut anywhere is refused as truncated, wherever the cut falls:
 * inside a string, and on a boundary between msgpack tokens of one entry
 * (where the unpacker holds a half-built entry and no bytes). Only a cut
 * between entries reads as a shorter, complete capture.
 */
Test(cli, capture_cut_anywhere_is_refused)
{
	pid_t d = DEMO("--rate", "50", "--duration", "0.4", "--tokens", "4");
	char cap[128], cut[128];
	unsigned refused = 0, complete = 0;
	size_t n;
	char *c;
	struct run *r;

	tmp_path(cap, sizeof(cap), "small.evrcap");
	tmp_path(cut, sizeof(cut), "cut.evrcap");
	r = CLI("record", str_pid(d), "-o", cap, "-H", "stats");
	cr_assert_eq(r->status, 0, "%s", r->err);
	wait_for(d, WAIT_MS);
	c = read_all(cap, &n);
	cr_assert_gt(n, 600);
	/* Every cut in the last 300 bytes: the trailer, and the records before it. */
	for (size_t len = n - 300; len < n; len++) {
		write_file(cut, c, len);
		r = CLI("replay", cut, "-H", "stats");
		if (r->status == 8) {
			refused++;
			cr_expect(strstr(r->err, "truncated") != NULL, "cut at %zu of %zu: %s", len, n, r->err);
		} else {
			cr_expect_eq(r->status, 0, "cut at %zu of %zu: %s", len, n, r->err);
			complete++;
		}
	}
	cr_expect_gt(refused, 250, "nearly every cut is inside an entry (%u refused, %u complete)", refused, complete);
	cr_expect_lt(complete, 20, "only cuts between entries read as complete");
	free(c);
}

/* An entry claiming a huge array is refused before msgpack-c sizes anything for it. */
Test(cli, capture_with_a_huge_entry_is_refused)
{
	static const uint8_t head[] = { 0x83, 0xa6, 'f', 'o', 'r', 'm', 'a', 't', 0xae, 'e', 'v', 'r', 'i', 'n', 'g',
					'-', 'c', 'a', 'p', 't', 'u', 'r', 'e', 0xa7, 'v', 'e', 'r', 's', 'i', 'o',
					'n', 0x01, 0xaa, 'c', 'r', 'e', 'a', 't', 'e', 'd', '_', 'n', 's', 0x00,
					/* an array of 2^27 elements, then nils: 3 GiB of objects if it were sized */
					0xdd, 0x08, 0x00, 0x00, 0x00 };
	size_t n = sizeof(head) + (2u << 20);
	uint8_t *buf = calloc(1, n);
	char path[128];
	struct run *r;

	cr_assert_not_null(buf);
	memcpy(buf, head, sizeof(head));
	memset(buf + sizeof(head), 0xc0, n - sizeof(head));
	tmp_path(path, sizeof(path), "huge.evrcap");
	write_file(path, buf, n);
	r = CLI("replay", path, "-H", "stats");
	cr_expect_eq(r->status, 8, "%s", r->err);
	one_error_line(r, "replay", "larger than 1 MiB");
	free(buf);
}

/* ---- top ---------------------------------------------------------------------------- */

Test(cli, top_once_prints_one_parsable_frame)
{
	pid_t d = DEMO("--rate", "400", "--fail-rate", "0.5");
	struct run *r = CLI("top", str_pid(d), "--once", "--interval-ms", "1000");
	char *line, *save = NULL;
	bool header = false, trailer = false, query = false, chat = false;
	unsigned rows = 0;

	cr_assert_eq(r->status, 0, "%s", r->err);
	for (line = strtok_r(r->out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[64];
		double rate, p50, p99, tokens;
		unsigned long long errors;

		if (!strncmp(line, "SPAN ", 5)) {
			header = strstr(line, "RATE/S") && strstr(line, "P50_MS") && strstr(line, "P99_MS") &&
				 strstr(line, "ERRORS") && strstr(line, "TOKENS/S");
			continue;
		}
		if (!strncmp(line, "records/s ", 10)) {
			trailer = strstr(line, "lost 0") != NULL;
			continue;
		}
		if (!header || sscanf(line, "%63s %lf %lf %lf %llu %lf", name, &rate, &p50, &p99, &errors, &tokens) != 6)
			continue;
		rows++;
		cr_expect_gt(rate, 0, "%s", line);
		cr_expect_leq(p50, p99, "%s", line);
		if (!strcmp(name, "query")) {
			query = true;
			cr_expect_gt(rate, 100, "about 400 requests a second: %s", line);
			cr_expect_gt(errors, 0, "half of them fail: %s", line);
		}
		if (!strcmp(name, "llm.chat")) {
			chat = true;
			cr_expect_gt(tokens, 0, "tokens per second: %s", line);
		}
	}
	cr_expect(header, "a header line: %s", r->out);
	cr_expect(trailer, "a records/s line with no loss");
	cr_expect(query && chat, "rows for query and llm.chat among %u", rows);
	demo_stop(d);
}

/* ---- errors --------------------------------------------------------------------------- */

Test(cli, no_such_process_and_no_segment)
{
	pid_t gone = fork();
	struct run *r;

	cr_assert_neq(gone, -1);
	if (gone == 0)
		_exit(0);
	waitpid(gone, NULL, 0);
	r = CLI("attach", str_pid(gone));
	cr_expect_eq(r->status, 3, "%s", r->err);
	one_error_line(r, "attach", "no such process");
	r = CLI("stats", str_pid(gone));
	cr_expect_eq(r->status, 3, "%s", r->err);

	r = CLI("attach", str_pid(getpid())); /* this test process traces nothing */
	cr_expect_eq(r->status, 4, "%s", r->err);
	one_error_line(r, "attach", "no evring segment");
	r = CLI("top", str_pid(getpid()), "--once");
	cr_expect_eq(r->status, 4, "%s", r->err);
	r = CLI("stats", "no-such-program");
	cr_expect_eq(r->status, 4, "%s", r->err);
	r = CLI("record", "no-such-program", "-o", "/dev/null");
	cr_expect_eq(r->status, 4, "%s", r->err);
}

Test(cli, all_consumer_slots_held_names_the_holders)
{
	pid_t d = DEMO("--rate", "200");
	char out[128], err[128], holder[32], shm[128], e[EVR_ERR_MAX], msg[64];
	struct run first, *r;
	struct evr_segment seg;
	pid_t a;
	int n = 0;

	start_cli((const char *const[]){ "attach", str_pid(d), "-H", "stats", "--duration", "3", NULL }, &a, out, err,
		  sizeof(out));
	sleep_ms(1000);
	/* A second consumer attaches beside the first: a segment takes several. */
	r = CLI("attach", str_pid(d), "--duration", "0.2", "-H", "stats");
	cr_expect_eq(r->status, 0, "%s", r->err);
	r = CLI("ls", "--json");
	cr_expect(strstr(r->out, "\"consumers\":[{\"slot\":0") != NULL, "%s", r->out);
	r = CLI("ls");
	snprintf(holder, sizeof(holder), "pid %d, live", (int)a);
	cr_expect(strstr(r->out, holder) != NULL, "ls names the consumer: %s", r->out);

	/* This process takes every other slot: the next consumer is refused, told who holds them. */
	cr_assert_gt(evr_segment_name(shm, sizeof(shm), d, "evring-demo"), 0);
	cr_assert_eq(evr_segment_open(&seg, shm, e, sizeof(e)), 0, "%s", e);
	while (evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), EVR_SLOT_ANOTHER, NULL, 0, NULL) >= 0)
		n++;
	cr_assert_eq(n, (int)seg.slots - 1);
	r = CLI("attach", str_pid(d), "--duration", "0.2");
	cr_expect_eq(r->status, 7, "%s", r->err);
	snprintf(msg, sizeof(msg), "all %u consumer slots held", seg.slots);
	one_error_line(r, "attach", msg);
	snprintf(holder, sizeof(holder), "pids %d,", (int)a);
	cr_expect(strstr(r->err, holder) != NULL, "%s", r->err);
	snprintf(holder, sizeof(holder), " %d", (int)getpid());
	cr_expect(strstr(r->err, holder) != NULL, "%s", r->err);
	r = CLI("record", str_pid(d), "-o", "/dev/null", "--duration", "0.2");
	cr_expect_eq(r->status, 7, "%s", r->err);
	evr_consumer_slot_release(&seg, (uint32_t)getpid());
	evr_segment_close(&seg);
	collect(&first, a, out, err);
	cr_expect_eq(first.status, 0, "%s", first.err);
	/* Once they have gone, the slots are free again. */
	r = CLI("attach", str_pid(d), "--duration", "0.2", "-H", "stats");
	cr_expect_eq(r->status, 0, "%s", r->err);
	demo_stop(d);
}

/* A segment this test makes itself, named for its own pid, to damage on purpose. */
static void make_segment(struct evr_segment *seg, const char *name)
{
	struct evr_segment_config cfg = { .lanes = 2, .lane_bytes = 65536, .meta_bytes = 65536, .program = "cli-test" };
	char shm[128], err[256];

	cr_assert_gt(evr_segment_name(shm, sizeof(shm), getpid(), name), 0);
	evr_segment_unlink(shm);
	cr_assert_eq(evr_segment_create(seg, shm, &cfg, err, sizeof(err)), 0, "%s", err);
}

Test(cli, other_abi_and_bad_segment)
{
	struct evr_segment seg;
	char target[64];
	struct run *r;

	make_segment(&seg, "abi");
	seg.hdr->abi_major = (uint16_t)(EVR_ABI_MAJOR + 7);
	snprintf(target, sizeof(target), "%d.abi", (int)getpid());
	r = CLI("attach", target, "--duration", "0.1");
	cr_expect_eq(r->status, 6, "%s", r->err);
	cr_expect(strstr(r->err, "evring attach: ") == r->err, "%s", r->err);
	{
		char theirs[16], ours[16];
		snprintf(theirs, sizeof(theirs), "%d", EVR_ABI_MAJOR + 7);
		snprintf(ours, sizeof(ours), "%d", EVR_ABI_MAJOR);
		cr_expect(strstr(r->err, theirs) && strstr(r->err, ours), "names both versions: %s", r->err);
	}
	r = CLI("stats", target);
	cr_expect_eq(r->status, 6, "%s", r->err);
	evr_segment_unlink(seg.shm_name);
	evr_segment_close(&seg);

	make_segment(&seg, "bad");
	seg.hdr->lane_bytes = 12345; /* not a power of two */
	snprintf(target, sizeof(target), "%d.bad", (int)getpid());
	r = CLI("attach", target, "--duration", "0.1");
	cr_expect_eq(r->status, 8, "%s", r->err);
	one_error_line(r, "attach", "");
	r = CLI("ls", "--json");
	cr_expect_eq(r->status, 0);
	cr_expect(strstr(r->out, "\"state\":\"invalid\"") != NULL, "ls lists it as invalid: %s", r->out);
	evr_segment_unlink(seg.shm_name);
	evr_segment_close(&seg);
}

/* Root reads another user's segment (a user is refused one: test_layout). */
Test(cli, root_reads_another_users_segment)
{
	int fds[2];
	pid_t child;
	char target[64], c;
	struct run *r;

	if (geteuid() != 0) {
		cr_log_warn("not root: cannot make a segment of another user here; skipped");
		return;
	}
	cr_assert_eq(pipe(fds), 0);
	child = fork();
	cr_assert_neq(child, -1);
	if (child == 0) {
		struct evr_segment seg;
		struct evr_segment_config cfg = { .lanes = 2, .lane_bytes = 65536, .meta_bytes = 65536 };
		char shm[128], err[256];

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(1);
		evr_segment_name(shm, sizeof(shm), getpid(), "other");
		if (evr_segment_create(&seg, shm, &cfg, err, sizeof(err)) != 0)
			_exit(2);
		if (write(fds[1], "k", 1) != 1)
			_exit(3);
		pause();
		_exit(0);
	}
	close(fds[1]);
	cr_assert_eq(read(fds[0], &c, 1), 1, "the other user's process made its segment");
	snprintf(target, sizeof(target), "%d", (int)child);
	r = CLI("attach", target, "--duration", "0.1");
	cr_expect_eq(r->status, 0, "%s", r->err);
	r = CLI("stats", target);
	cr_expect_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->out, "other") != NULL, "the stats name the segment: %s", r->out);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	snprintf(target, sizeof(target), "/evring.%d.other", (int)child);
	evr_segment_unlink(target);
}

/*
 * A segment others may write is refused (they could shrink or rewrite it under
 * the consumer), naming its mode, unless --allow-writable says otherwise.
 */
Test(cli, a_segment_others_may_write_is_refused)
{
	pid_t d = DEMO("--rate", "200");
	char seg[96];
	struct run *r;

	snprintf(seg, sizeof(seg), "/dev/shm/evring.%d.evring-demo", (int)d);
	cr_assert_eq(chmod(seg, 0666), 0);
	r = CLI("attach", str_pid(d), "-H", "stats", "--duration", "0.2");
	cr_expect_eq(r->status, 5, "%s", r->err);
	cr_expect(strstr(r->err, "mode 0666") != NULL, "%s", r->err);
	one_error_line(r, "attach", "");
	r = CLI("record", str_pid(d), "-o", "/dev/null", "--duration", "0.2");
	cr_expect_eq(r->status, 5, "%s", r->err);
	r = CLI("attach", str_pid(d), "-H", "stats", "--duration", "0.3", "--allow-writable");
	cr_expect_eq(r->status, 0, "%s", r->err);
	cr_expect_gt(summary_num(r->err, "events,"), 0, "%s", r->err);
	cr_assert_eq(chmod(seg, 0620), 0);
	r = CLI("attach", str_pid(d), "-H", "stats", "--duration", "0.2");
	cr_expect_eq(r->status, 5, "group-writable is refused too: %s", r->err);
	demo_stop(d);
}

/* ---- the first hour's findings: closed output, failed handlers, option errors ------------- */

/* `evring attach PID | head`: the reader goes away, the run ends at once, quietly, status 0. */
Test(cli, closed_output_ends_the_run_quietly)
{
	pid_t d = DEMO("--rate", "500"), pid;
	char err[128], buf[4096];
	int fds[2], st;
	uint64_t t0;

	tmp_path(err, sizeof(err), "closed.err");
	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(fds[0]);
		if (e < 0 || dup2(fds[1], 1) < 0 || dup2(e, 2) < 0)
			_exit(127);
		execl(EVR_CLI_PATH, EVR_CLI_PATH, "attach", str_pid(d), "--duration", "60", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	cr_assert_gt(read(fds[0], buf, sizeof(buf)), 0, "attach printed nothing");
	close(fds[0]); /* as head does after its lines */
	t0 = now_ms();
	st = wait_for(pid, 20000);
	cr_expect_lt(now_ms() - t0, 15000, "the run went on after its output closed");
	cr_expect_eq(st, 0, "a closed output is no failure: status %d", st);
	slurp(err, buf, sizeof(buf));
	cr_expect_eq(buf[0], 0, "nothing on stderr: %s", buf);
	demo_stop(d);
}

/* Handlers whose output fails make the run exit 9; a Chrome file is valid or not there at all. */
Test(cli, failed_handler_output_exits_9)
{
	pid_t d = DEMO("--rate", "500");
	char chrome[128], spec[160], cmd[512];
	struct run *r;

	r = CLI("attach", str_pid(d), "-H", "jsonl=/dev/full", "--duration", "0.5");
	cr_expect_eq(r->status, 9, "jsonl=/dev/full: %s", r->err);
	cr_expect(strstr(r->err, "No space left on device") != NULL, "%s", r->err);
	cr_expect(strstr(r->err, "exit status 9") != NULL, "%s", r->err);

	r = CLI("attach", str_pid(d), "-H", "chrome=/dev/full", "--duration", "0.5");
	cr_expect_eq(r->status, 1, "an output that takes nothing is refused at the start: %s", r->err);
	one_error_line(r, "attach", "cannot write '/dev/full'");

	/* A file that fills mid-run (RLIMIT_FSIZE, SIGXFSZ ignored as by a shell's trap): removed, status 9. */
	tmp_path(chrome, sizeof(chrome), "cut.json");
	snprintf(spec, sizeof(spec), "chrome=%s", chrome);
	snprintf(cmd, sizeof(cmd), "trap '' XFSZ; ulimit -f 64; exec '%s' attach %d -H '%s' --duration 1.5", EVR_CLI_PATH,
		 (int)d, spec);
	{
		static struct run sr;
		const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
		char out[128], err[128];
		pid_t pid;

		tmp_path(out, sizeof(out), "fsize.out");
		tmp_path(err, sizeof(err), "fsize.err");
		pid = spawn(argv, out, err);
		collect(&sr, pid, out, err);
		cr_expect_eq(sr.status, 9, "a Chrome file cut short: %s", sr.err);
		cr_expect_neq(access(chrome, F_OK), 0, "the incomplete Chrome file is removed");
	}
	demo_stop(d);
}

/* Option errors: one line each, status 2; --version. */
Test(cli, option_errors_are_one_line)
{
	struct run *r = CLI("attach", "1", "--bogus");

	cr_expect_eq(r->status, 2);
	one_error_line(r, "attach", "unknown option '--bogus'");
	r = CLI("attach", "1", "--duration");
	cr_expect_eq(r->status, 2);
	one_error_line(r, "attach", "'--duration' wants a value");
	r = CLI("attach", "1", "--duration", "1e30");
	cr_expect_eq(r->status, 2);
	one_error_line(r, "attach", "at most 1e9");
	r = CLI("top", "1", "-x");
	cr_expect_eq(r->status, 2);
	one_error_line(r, "top", "unknown option '-x'");
	r = CLI("stats");
	cr_expect_eq(r->status, 2);
	one_error_line(r, "stats", "PID or NAME");
	r = CLI("--version");
	cr_expect_eq(r->status, 0);
	cr_expect(!strncmp(r->out, "evring ", 7) && strchr(r->out, '.'), "%s", r->out);
}

/* A plug-in that is not there is a command-line error (2); a bare name is looked for here first. */
Test(cli, plugin_lookup)
{
	pid_t d = DEMO("--rate", "300");
	char here[4096], link[128];
	struct run *r = CLI("attach", str_pid(d), "-H", "plugin=no-such-plugin.so", "--duration", "0.2");

	cr_expect_eq(r->status, 2, "%s", r->err);
	one_error_line(r, "attach", "no-such-plugin.so");
	/* The test's working directory: a copy of the example plug-in there, named bare. */
	tmp_path(link, sizeof(link), "slow.so");
	cr_assert_eq(symlink(EVR_SLOW_SPANS, link), 0);
	cr_assert_not_null(getcwd(here, sizeof(here)));
	cr_assert_eq(chdir(tmpdir), 0);
	r = CLI("attach", str_pid(d), "-H", "plugin=slow.so:0.5", "--duration", "0.5");
	cr_assert_eq(chdir(here), 0);
	cr_expect_eq(r->status, 0, "plugin=slow.so found in the current directory: %s", r->err);
	cr_expect(strstr(r->out, "slow_spans:") != NULL, "%s", r->out);
	demo_stop(d);
}

/* attach NAME takes a program name, whatever EVRING_NAME called its segment. */
Test(cli, attach_by_program_name)
{
	/* A program name of its own (the demo under another name), so no other test's demo is taken. */
	char prog[128], out[128], err[128], seg[128];
	const char *argv[] = { prog, "--quiet", "--rate", "300", NULL };
	struct run *r;
	uint64_t end = now_ms() + WAIT_MS;
	pid_t d;

	tmp_path(prog, sizeof(prog), "frontdoor-server");
	cr_assert_eq(symlink(EVR_DEMO_PATH, prog), 0);
	tmp_path(out, sizeof(out), "named.out");
	tmp_path(err, sizeof(err), "named.err");
	setenv("EVRING_NAME", "frontdoor", 1);
	d = spawn(argv, out, err);
	unsetenv("EVRING_NAME");
	snprintf(seg, sizeof(seg), "/dev/shm/evring.%d.frontdoor", (int)d);
	while (access(seg, F_OK) != 0) {
		cr_assert(now_ms() < end, "no segment %s", seg);
		sleep_ms(5);
	}
	sleep_ms(100);
	r = CLI("attach", "frontdoor-server", "-H", "stats", "--duration", "0.5");
	cr_expect_eq(r->status, 0, "by program name: %s", r->err);
	cr_expect_gt(summary_num(r->err, "records read"), 0, "%s", r->err);
	r = CLI("attach", "frontdoor", "-H", "stats", "--duration", "0.3");
	cr_expect_eq(r->status, 0, "by segment name: %s", r->err);
	kill(d, SIGTERM);
	wait_for(d, WAIT_MS);
	evr_segment_unlink(seg + 8);
}

/*
 * record --raw over two processes, one of them SIGKILLed mid-run: the
 * capture replays to the jsonl the live decode wrote, byte for byte, with
 * both processes in it; the summary gives the exact count; a cut capture is
 * refused with status 8, what came before the cut delivered.
 */
Test(cli, record_raw_of_two_processes_one_killed_replays_to_the_live_jsonl)
{
	char cap[128], live[128], again[128], a1[160], a2[160], cut[128], out[128], err[128], p0[32], p1[32];
	size_t nl, nr, nc;
	char *l, *rp, *c;
	struct run *r, rec;
	pid_t d[2], cli_pid;

	d[0] = DEMO("--rate", "400", "--duration", "1.5");
	d[1] = DEMO("--rate", "400", "--duration", "1.5");
	snprintf(p0, sizeof(p0), "%d", (int)d[0]);
	snprintf(p1, sizeof(p1), "%d", (int)d[1]);
	tmp_path(cap, sizeof(cap), "raw.evrcap");
	tmp_path(live, sizeof(live), "raw-live.jsonl");
	tmp_path(again, sizeof(again), "raw-replay.jsonl");
	snprintf(a1, sizeof(a1), "jsonl=%s", live);
	snprintf(a2, sizeof(a2), "jsonl=%s", again);
	start_cli((const char *const[]){ "record", p0, p1, "--raw", "-o", cap, "-H", a1, NULL }, &cli_pid, out, err,
		  sizeof(out));
	wait_attached(d[1], cli_pid); /* it attaches "from now": a slow start would find nothing of d[1] */
	sleep_ms(300);
	kill(d[1], SIGKILL);
	collect(&rec, cli_pid, out, err);
	cr_assert_eq(rec.status, 0, "%s", rec.err);
	cr_expect(strstr(rec.err, "evring record: raw: ") != NULL, "%s", rec.err);
	cr_expect(strstr(rec.err, " 0 skipped\n") != NULL, "%s", rec.err);
	wait_for(d[0], WAIT_MS);
	wait_for(d[1], WAIT_MS);
	r = CLI("replay", cap, "-H", a2);
	cr_assert_eq(r->status, 0, "%s", r->err);
	l = read_all(live, &nl);
	rp = read_all(again, &nr);
	cr_assert_gt(nl, 10000, "the live decode wrote its jsonl");
	cr_expect_eq(nl, nr, "replay wrote %zu bytes, live %zu", nr, nl);
	cr_expect(nl == nr && memcmp(l, rp, nl) == 0, "the replay's jsonl is the live decode's");
	for (int i = 0; i < 2; i++) {
		char pid[32];

		snprintf(pid, sizeof(pid), "\"pid\":%d,", (int)d[i]);
		cr_expect(strstr(l, pid) != NULL, "records of pid %d", (int)d[i]);
	}

	/* Cut in the middle: status 8, what came before delivered. */
	c = read_all(cap, &nc);
	tmp_path(cut, sizeof(cut), "raw-cut.evrcap");
	write_file(cut, c, nc / 2);
	r = CLI("replay", cut, "-H", "stats");
	cr_expect_eq(r->status, 8, "a truncated raw capture: %s", r->err);
	cr_expect(strstr(r->err, "truncated") != NULL, "%s", r->err);
	cr_expect_gt(summary_num(r->err, "records read"), 0, "%s", r->err);
	free(c);
	free(l);
	free(rp);
	for (int i = 0; i < 2; i++) {
		char seg[128];

		snprintf(seg, sizeof(seg), "/evring.%d.evring-demo", (int)d[i]);
		evr_segment_unlink(seg);
	}
}
