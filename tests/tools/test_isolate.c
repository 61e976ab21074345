/*
 * test_isolate.c: handler plug-ins that crash, abort, exit or hang, run by
 * the real `evring replay` over a capture recorded from a real evring-demo.
 * In the consumer's process (plugin=PATH.so) such a plug-in ends the
 * consumer with its status, as README and consumer.h say; isolated
 * (plugin=PATH.so,isolate) its process's death is reported and counted, the
 * other handler gets every record, the plug-in is restarted and gets the
 * later ones, and the consumer ends with its summary and status 0. A plug-in
 * that behaves gets the same items, the same content, isolated or not.
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

#ifndef EVR_CRASH_PLUGIN
#error "EVR_CLI_PATH, EVR_DEMO_PATH and EVR_CRASH_PLUGIN are set by tests/tools/CMakeLists.txt"
#endif

#define WAIT_MS 120000

struct run {
	int status; /* exit status, or 128 + signal */
	char err[1 << 16];
};

static char tmpdir[64], cap[128];

/* cli_child.h's spawn, but a fault or an abort in a sanitizer build is the process's own. */
static pid_t spawn_faulting(const char *const *argv, const char *err)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0) {
		int o = open("/dev/null", O_WRONLY), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* In a sanitizer build, a fault or an abort is the process's own, as in any other. */
		{
			const char *a = getenv("ASAN_OPTIONS");
			char opts[1024];

			snprintf(opts, sizeof(opts), "%s%shandle_segv=0:handle_abort=0", a ? a : "", a && *a ? ":" : "");
			setenv("ASAN_OPTIONS", opts, 1);
		}
		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(127);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static char *read_all(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long len;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = malloc((size_t)len + 1);
	cr_assert_not_null(buf);
	*n = fread(buf, 1, (size_t)len, f);
	buf[*n] = 0;
	fclose(f);
	return buf;
}

/* `evring args...`, to the end; stderr kept. */
static struct run *cli(const char *const *args)
{
	static struct run r;
	const char *argv[24] = { EVR_CLI_PATH };
	char err[128];
	size_t n = 1, len = 0;
	char *e;

	for (; args[n - 1]; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	snprintf(err, sizeof(err), "%s/cli.err", tmpdir);
	r.status = wait_for(spawn_faulting(argv, err), WAIT_MS);
	e = read_all(err, &len);
	snprintf(r.err, sizeof(r.err), "%s", e);
	free(e);
	return &r;
}

#define CLI(...) cli((const char *const[]){ __VA_ARGS__, NULL })

/* A handler's figure in the summary: "handler crash: ... N <what>". */
static unsigned long long handler_num(const char *err, const char *what)
{
	const char *line = strstr(err, "handler crash: ");
	const char *p;

	if (!line)
		return ~0ull;
	p = strstr(line, what);
	if (!p)
		return ~0ull;
	while (p > line && p[-1] == ' ')
		p--;
	while (p > line && p[-1] >= '0' && p[-1] <= '9')
		p--;
	return strtoull(p, NULL, 10);
}

/* The summary's first figure: "evring CMD: N events, ...". */
static unsigned long long summary_events(const char *err)
{
	const char *p = strstr(err, " events, ");

	if (!p)
		return ~0ull;
	while (p > err && p[-1] >= '0' && p[-1] <= '9')
		p--;
	return strtoull(p, NULL, 10);
}

static void path(char *buf, size_t cap_, const char *name)
{
	snprintf(buf, cap_, "%s/%s", tmpdir, name);
}

static char demo_pid[32];

/* Starts evring-demo for duration seconds (spans, events, failures) and waits for its segment. */
static pid_t demo(const char *duration)
{
	const char *argv[] = { EVR_DEMO_PATH, "--quiet", "--rate", "300", "--duration", duration, "--fail-rate", "0.2",
			       NULL };
	char seg[128], err[128];
	uint64_t end;
	pid_t d;

	path(err, sizeof(err), "demo.err");
	d = spawn_faulting(argv, err);
	snprintf(seg, sizeof(seg), "/dev/shm/evring.%d.evring-demo", (int)d);
	for (end = now_ms() + WAIT_MS; access(seg, F_OK) != 0;) {
		cr_assert(now_ms() < end, "evring-demo made no segment");
		sleep_ms(5);
	}
	snprintf(demo_pid, sizeof(demo_pid), "%d", (int)d);
	return d;
}

static void demo_end(pid_t d)
{
	char seg[128];

	cr_assert_eq(wait_for(d, WAIT_MS), 0);
	snprintf(seg, sizeof(seg), "/evring.%d.evring-demo", (int)d);
	evr_segment_unlink(seg);
}

/* A capture of evring-demo: the records most tests replay. */
static void setup(void)
{
	struct run *r;
	pid_t d;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/evring-iso-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	path(cap, sizeof(cap), "run.evrcap");
	d = demo("0.6");
	r = CLI("record", demo_pid, "-o", cap, "--from", "oldest");
	cr_assert_eq(r->status, 0, "%s", r->err);
	demo_end(d);
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(isolate, .init = setup, .fini = teardown, .timeout = 600);

static size_t count_lines(const char *s, const char *prefix)
{
	size_t n = 0, pl = strlen(prefix);

	for (const char *p = s; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, prefix, pl))
			n++;
	return n;
}

static const struct {
	const char *mode;
	int status;	  /* of the consumer, the plug-in in its process */
	const char *how;  /* in the isolated report */
} modes[] = {
	{ "segv", 128 + SIGSEGV, "killed by signal 11" },
	{ "abort", 128 + SIGABRT, "killed by signal 6" },
	{ "exit", 3, "exited with status 3" },
};

Test(isolate, in_process_crash_ends_the_consumer)
{
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		char out[128], spec[512], jl[128], js[160];
		struct run *r;

		snprintf(out, sizeof(out), "%s/inproc-%s.txt", tmpdir, modes[i].mode);
		snprintf(spec, sizeof(spec), "plugin=%s:%s:%s:5", EVR_CRASH_PLUGIN, out, modes[i].mode);
		snprintf(jl, sizeof(jl), "%s/inproc-%s.jsonl", tmpdir, modes[i].mode);
		snprintf(js, sizeof(js), "jsonl=%s", jl);
		r = CLI("replay", cap, "-H", js, "-H", spec);
		cr_expect_eq(r->status, modes[i].status, "%s in the consumer's process: status %d, %s", modes[i].mode,
			     r->status, r->err);
		cr_expect(strstr(r->err, "events,") == NULL, "%s: no summary: %s", modes[i].mode, r->err);
	}
}

Test(isolate, isolated_crash_is_reported_counted_and_restarted)
{
	char clean[128], cs[160];
	size_t nclean, nj, no;
	char *want;
	struct run *r;

	path(clean, sizeof(clean), "clean.jsonl");
	snprintf(cs, sizeof(cs), "jsonl=%s", clean);
	r = CLI("replay", cap, "-H", cs);
	cr_assert_eq(r->status, 0, "%s", r->err);
	want = read_all(clean, &nclean);
	cr_assert_gt(nclean, 1000);

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		char out[128], spec[512], jl[128], js[160];
		unsigned long long events;
		char *j, *o, *mis;

		snprintf(out, sizeof(out), "%s/iso-%s.txt", tmpdir, modes[i].mode);
		snprintf(spec, sizeof(spec), "plugin=%s,isolate:%s:%s:5", EVR_CRASH_PLUGIN, out, modes[i].mode);
		snprintf(jl, sizeof(jl), "%s/iso-%s.jsonl", tmpdir, modes[i].mode);
		snprintf(js, sizeof(js), "jsonl=%s", jl);
		r = CLI("replay", cap, "-H", js, "-H", spec);
		cr_expect_eq(r->status, 0, "%s isolated: status %d, %s", modes[i].mode, r->status, r->err);
		events = summary_events(r->err);
		cr_expect(events > 10 && events != ~0ull, "the summary: %s", r->err);
		cr_expect(strstr(r->err, modes[i].how) != NULL, "the report says how: %s", r->err);
		cr_expect(strstr(r->err, "handler \"crash\": plug-in process") != NULL, "names the handler: %s", r->err);
		cr_expect(strstr(r->err, "in on_event '") != NULL, "names the item: %s", r->err);
		cr_expect_eq(handler_num(r->err, "crashes"), 1, "counted once: %s", r->err);
		cr_expect_eq(handler_num(r->err, "skipped"), 0, "restarted at once, nothing skipped: %s", r->err);

		j = read_all(jl, &nj);
		cr_expect(nj == nclean && memcmp(j, want, nj) == 0, "%s: the other handler got every record",
			  modes[i].mode);
		o = read_all(out, &no);
		mis = strstr(o, "misbehaving: ");
		cr_expect_not_null(mis, "%s", modes[i].mode);
		/* The fifth event killed it; the restarted process got everything after, to on_close. */
		cr_expect_eq(count_lines(o, "event"), (size_t)events - 1, "%s: every event but the fatal one (%zu of %llu)",
			     modes[i].mode, count_lines(o, "event"), events);
		cr_expect(mis && count_lines(mis, "event") == events - 5, "%s: the restarted plug-in got the later events",
			  modes[i].mode);
		cr_expect(mis && strstr(mis, "\nclose\n") != NULL, "%s: on_close reached the restarted process",
			  modes[i].mode);
		free(j);
		free(o);
	}
	free(want);
}

/*
 * Live (a replay does not wait for a stalled handler: it would end before
 * the kill): the watchdog counts the timeout (a handler failure: exit 9),
 * the wrapper kills the hung process, and the restarted one gets the rest.
 */
Test(isolate, isolated_hang_is_timed_out_killed_and_restarted)
{
	char out[128], spec[512];
	size_t no;
	char *o, *mis;
	struct run *r;
	pid_t d;

	path(out, sizeof(out), "hang.txt");
	snprintf(spec, sizeof(spec), "plugin=%s,isolate:%s:hang:5", EVR_CRASH_PLUGIN, out);
	d = demo("2");
	r = CLI("attach", demo_pid, "-H", spec, "--timeout-ms", "300", "--from", "oldest");
	demo_end(d);
	cr_expect_eq(r->status, 9, "a timeout is a handler failure: %s", r->err);
	cr_expect(strstr(r->err, "overran its timeout") != NULL, "%s", r->err);
	cr_expect(strstr(r->err, "hung past the handler timeout, killed") != NULL, "%s", r->err);
	/* At least the hang's: the restarted process's first call may overrun 0.3 s too (ASan, a loaded machine). */
	cr_expect_geq(handler_num(r->err, "timeouts"), 1, "the watchdog counted the timeout: %s", r->err);
	cr_expect_eq(handler_num(r->err, "crashes"), 1, "%s", r->err);
	o = read_all(out, &no);
	mis = strstr(o, "misbehaving: hang");
	cr_expect_not_null(mis);
	cr_expect(mis && count_lines(mis, "event") > 10, "the restarted plug-in got later events: %s", r->err);
	cr_expect(mis && strstr(mis, "\nclose\n") != NULL);
	free(o);
}

Test(isolate, restarts_are_bounded_and_the_rest_is_skipped)
{
	char out[128], spec[512];
	unsigned long long events, skipped;
	size_t no;
	char *o;
	struct run *r;

	path(out, sizeof(out), "always.txt");
	snprintf(spec, sizeof(spec), "plugin=%s,isolate:%s:always:1", EVR_CRASH_PLUGIN, out);
	r = CLI("replay", cap, "-H", spec);
	cr_expect_eq(r->status, 0, "%s", r->err);
	events = summary_events(r->err);
	cr_expect(events > 6 && events != ~0ull, "%s", r->err);
	/* The first process and five restarts, each dead at its first event; then a minute down. */
	cr_expect_eq(handler_num(r->err, "crashes"), 6, "%s", r->err);
	cr_expect(strstr(r->err, "restarted 5 times within a minute") != NULL, "%s", r->err);
	skipped = handler_num(r->err, "skipped");
	cr_expect(skipped > 0 && skipped != ~0ull, "%s", r->err);
	o = read_all(out, &no);
	cr_expect_eq(count_lines(o, "event"), 0, "no event got through: %zu", count_lines(o, "event"));
	free(o);
}

Test(isolate, a_plugin_that_behaves_gets_the_same_items_isolated)
{
	char a[128], b[128], sa[512], sb[512];
	size_t na, nb;
	char *x, *y;
	struct run *r;

	path(a, sizeof(a), "inproc.txt");
	path(b, sizeof(b), "isolated.txt");
	snprintf(sa, sizeof(sa), "plugin=%s:%s", EVR_CRASH_PLUGIN, a);
	snprintf(sb, sizeof(sb), "plugin=%s,isolate:%s", EVR_CRASH_PLUGIN, b);
	r = CLI("replay", cap, "-H", sa);
	cr_assert_eq(r->status, 0, "%s", r->err);
	r = CLI("replay", cap, "-H", sb);
	cr_assert_eq(r->status, 0, "%s", r->err);
	x = read_all(a, &na);
	y = read_all(b, &nb);
	cr_expect_gt(count_lines(x, "event"), 10);
	cr_expect_gt(count_lines(x, "end"), 10);
	cr_expect_gt(count_lines(x, "trace"), 5);
	cr_expect_gt(count_lines(x, "begin"), 10);
	cr_expect_eq(na, nb, "isolated wrote %zu bytes, in-process %zu", nb, na);
	cr_expect(na == nb && memcmp(x, y, na) == 0, "the same items, the same content");
	free(x);
	free(y);
}

Test(isolate, bad_specs_are_one_clear_error)
{
	char spec[512];
	struct run *r;

	snprintf(spec, sizeof(spec), "plugin=%s,sandbox:x", EVR_CRASH_PLUGIN);
	r = CLI("replay", cap, "-H", spec);
	cr_expect_eq(r->status, 2, "%s", r->err);
	cr_expect(strstr(r->err, "unknown option 'sandbox'") != NULL, "%s", r->err);
	/* The plug-in's own refusal comes back from its process. */
	snprintf(spec, sizeof(spec), "plugin=%s,isolate", EVR_CRASH_PLUGIN);
	r = CLI("replay", cap, "-H", spec);
	cr_expect_eq(r->status, 2, "%s", r->err);
	cr_expect(strstr(r->err, "needs an output file") != NULL, "%s", r->err);
	r = CLI("replay", cap, "-H", "plugin=/nonexistent/nope.so,isolate");
	cr_expect_neq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->err, "nope.so") != NULL, "%s", r->err);
}
