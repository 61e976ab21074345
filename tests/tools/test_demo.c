/*
 * test_demo.c: evring-demo as its users run it. The real binary, started
 * with fork and exec: its JSON totals and its lines on stderr; tracing off;
 * a consumer attached by pid that must see every request as one trace of
 * the documented shape (ok, failed in its tool call, or timed out in its
 * stream), in the shares asked for, with nothing lost; SIGINT and SIGTERM
 * ending a run cleanly; bad options refused with status 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <evring/consumer.h>

#ifndef EVR_DEMO_PATH
#error "EVR_DEMO_PATH: the evring-demo binary, set by tests/tools/CMakeLists.txt"
#endif

#define WAIT_MS 60000 /* the longest a demo may take past what it was asked for (ASan, a loaded machine) */

extern char **environ;

/* ---- running the demo ------------------------------------------------------ */

struct demo {
	pid_t pid;
	int out, err; /* read ends of its stdout and stderr */
	char outbuf[4096], errbuf[65536];
	size_t outn, errn;
	int status;
};

/* The environment without any EVRING* setting of ours, plus extra ("NAME=value", NULL-terminated). */
static char **env_with(const char *const *extra)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	for (const char *const *e = extra; e && *e; e++)
		n++;
	env = calloc(n + 1, sizeof(*env));
	cr_assert_not_null(env);
	for (char **e = environ; *e; e++)
		if (strncmp(*e, "EVRING", 6) != 0)
			env[k++] = *e;
	for (const char *const *e = extra; e && *e; e++)
		env[k++] = (char *)*e;
	env[k] = NULL;
	return env;
}

/* Starts the demo with args (NULL-terminated, without argv[0]) and env extras. */
static void demo_start(struct demo *d, const char *const *env_extra, const char *const *args)
{
	const char *argv[32] = { EVR_DEMO_PATH };
	char **env = env_with(env_extra);
	int out[2], err[2];
	size_t n = 1;

	memset(d, 0, sizeof(*d));
	for (; args && args[n - 1]; n++) {
		cr_assert_lt(n, 31);
		argv[n] = args[n - 1];
	}
	argv[n] = NULL;
	cr_assert_eq(pipe(out), 0);
	cr_assert_eq(pipe(err), 0);
	fflush(NULL);
	d->pid = fork();
	cr_assert_geq(d->pid, 0);
	if (d->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test must not leave a demo running */
		dup2(out[1], 1);
		dup2(err[1], 2);
		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		execve(EVR_DEMO_PATH, (char *const *)argv, env);
		_exit(127);
	}
	free(env);
	close(out[1]);
	close(err[1]);
	d->out = out[0];
	d->err = err[0];
}

/* Reads what is there from the demo's pipes within ms; returns false when both are at their end. */
static bool demo_read(struct demo *d, int ms)
{
	struct pollfd p[2] = { { d->out, POLLIN, 0 }, { d->err, POLLIN, 0 } };
	char *buf[2] = { d->outbuf, d->errbuf };
	size_t cap[2] = { sizeof(d->outbuf) - 1, sizeof(d->errbuf) - 1 }, *len[2] = { &d->outn, &d->errn };

	if (d->out < 0 && d->err < 0)
		return false;
	if (poll(p, 2, ms) <= 0)
		return true;
	for (int i = 0; i < 2; i++) {
		int *fd = i ? &d->err : &d->out;
		if (*fd < 0 || !p[i].revents)
			continue;
		char tmp[4096];
		ssize_t r = read(*fd, tmp, sizeof(tmp));
		if (r <= 0) {
			close(*fd);
			*fd = -1;
			continue;
		}
		size_t take = (size_t)r < cap[i] - *len[i] ? (size_t)r : cap[i] - *len[i];
		memcpy(buf[i] + *len[i], tmp, take);
		*len[i] += take;
		buf[i][*len[i]] = 0;
	}
	return true;
}

/* Waits for the start-up line; returns it (in errbuf). */
static const char *demo_wait_started(struct demo *d)
{
	for (int waited = 0; !strchr(d->errbuf, '\n'); waited += 100) {
		cr_assert_lt(waited, WAIT_MS, "no start-up line from the demo; stderr: %s", d->errbuf);
		cr_assert(demo_read(d, 100), "the demo closed stderr before its start-up line");
	}
	return d->errbuf;
}

/* Reads the pipes to their end and reaps the demo; kills it if it overstays. */
static void demo_finish(struct demo *d)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (demo_read(d, 100)) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 > WAIT_MS) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &d->status, 0);
			cr_assert_fail("the demo did not end; stderr: %s", d->errbuf);
		}
	}
	cr_assert_eq(waitpid(d->pid, &d->status, 0), d->pid);
}

static void demo_run(struct demo *d, const char *const *env_extra, const char *const *args)
{
	demo_start(d, env_extra, args);
	demo_finish(d);
}

static bool exited_ok(const struct demo *d)
{
	return WIFEXITED(d->status) && WEXITSTATUS(d->status) == 0;
}

/* A number of the JSON line on stdout; fails the test if the key is missing. */
static double json_num(const struct demo *d, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(d->outbuf, pat);
	cr_assert_not_null(p, "no %s in the JSON line: %s", key, d->outbuf);
	return strtod(p + strlen(pat), NULL);
}

struct totals {
	uint64_t requests, failed, timed_out, tokens, threads;
	double seconds, rps;
};

static struct totals json_totals(const struct demo *d)
{
	struct totals t;

	cr_assert_eq(d->outbuf[0], '{', "stdout is not one JSON line: %s", d->outbuf);
	cr_assert_not_null(strchr(d->outbuf, '\n'));
	cr_assert_eq(strchr(d->outbuf, '\n')[1], 0, "more than one line on stdout: %s", d->outbuf);
	t.requests = (uint64_t)json_num(d, "requests");
	t.failed = (uint64_t)json_num(d, "failed");
	t.timed_out = (uint64_t)json_num(d, "timed_out");
	t.tokens = (uint64_t)json_num(d, "tokens");
	t.threads = (uint64_t)json_num(d, "threads");
	t.seconds = json_num(d, "seconds");
	t.rps = json_num(d, "rps");
	return t;
}

/* The exit summary on stderr; returns its request count. */
static uint64_t summary_requests(const struct demo *d)
{
	const char *p = strstr(d->errbuf, " requests in ");
	unsigned long long n = 0, f = 0, to = 0;
	double s = 0, r = 0;

	cr_assert_not_null(p, "no summary line; stderr: %s", d->errbuf);
	while (p > d->errbuf && p[-1] != '\n')
		p--;
	cr_assert_eq(sscanf(p, "evring-demo: %llu requests in %lf s, %lf req/s, %llu failed, %llu timed out", &n, &s, &r,
			    &f, &to),
		     5, "summary line: %s", p);
	return n;
}

/* ---- JSON, rate, tracing off, options ---------------------------------------- */

Test(demo, json_totals_are_sane, .timeout = 120)
{
	struct demo d;
	const char *const args[] = { "--duration", "1", "--json", "--quiet", "--threads", "2",
				     "--tokens", "8", "--work-us", "20", NULL };

	demo_run(&d, NULL, args);
	cr_assert(exited_ok(&d), "status %d; stderr: %s", d.status, d.errbuf);
	struct totals t = json_totals(&d);
	cr_assert_gt(t.requests, 0);
	cr_assert_leq(t.failed + t.timed_out, t.requests);
	cr_assert_eq(t.threads, 2);
	cr_assert(t.seconds >= 0.99 && t.seconds < 30, "seconds %f", t.seconds);
	cr_assert_leq(t.tokens, t.requests * 8);
	cr_assert_geq(t.tokens, (t.requests - t.failed - t.timed_out) * 8);
	double rps = (double)t.requests / t.seconds;
	cr_assert(t.rps > rps * 0.99 && t.rps < rps * 1.01, "rps %f, requests / seconds %f", t.rps, rps);
	/* The model's compute is real: 8 tokens of 20 us cap each worker at 6250 requests a second. */
	cr_assert_lt(t.rps, 2 * 6250 * 1.1, "rps %f: the compute loop does not take --work-us", t.rps);
	cr_assert_not_null(strstr(d.outbuf, "\"tracing\":true"), "%s", d.outbuf);
	cr_assert_eq(summary_requests(&d), t.requests);
	char line[128];
	snprintf(line, sizeof(line), "evring-demo: pid %d, tracing to /dev/shm/evring.%d.evring-demo\n", (int)d.pid, (int)d.pid);
	cr_assert_eq(strncmp(d.errbuf, line, strlen(line)), 0, "start-up line: %s", d.errbuf);
	cr_assert_null(strstr(d.errbuf, " req/s (requests"), "--quiet printed periodic lines: %s", d.errbuf);
}

Test(demo, rate_paces_the_requests, .timeout = 120)
{
	struct demo d;
	const char *const args[] = { "--duration", "2", "--rate", "25", "--threads", "2", "--json", "--quiet", NULL };

	demo_run(&d, NULL, args);
	cr_assert(exited_ok(&d), "status %d; stderr: %s", d.status, d.errbuf);
	struct totals t = json_totals(&d);
	cr_assert(t.requests >= 20 && t.requests <= 52, "25 req/s for 2 s served %" PRIu64, t.requests);
}

Test(demo, evring_off_reports_tracing_false, .timeout = 120)
{
	struct demo d;
	const char *const env[] = { "EVRING=off", NULL };
	const char *const args[] = { "--duration", "0.5", "--json", "--quiet", NULL };

	demo_run(&d, env, args);
	cr_assert(exited_ok(&d), "status %d; stderr: %s", d.status, d.errbuf);
	cr_assert_not_null(strstr(d.outbuf, "\"tracing\":false"), "%s", d.outbuf);
	cr_assert_gt(json_totals(&d).requests, 0);
	cr_assert_not_null(strstr(d.errbuf, ", tracing off\n"), "%s", d.errbuf);
}

Test(demo, bad_options_exit_2_with_one_line, .timeout = 60)
{
	static const char *const bad[][3] = {
		{ "--threads", "0", NULL },	 { "--threads", "x", NULL },   { "--rate", "-1", NULL },
		{ "--duration", "0", NULL },	 { "--tokens", "0", NULL },    { "--fail-rate", "1.5", NULL },
		{ "--timeout-rate", "nan", NULL }, { "--report-ms", "1e3", NULL }, { "--bogus", NULL, NULL },
		{ "--rate", NULL, NULL },	 { "extra", NULL, NULL },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct demo d;
		demo_run(&d, NULL, bad[i]);
		cr_assert(WIFEXITED(d.status) && WEXITSTATUS(d.status) == 2, "%s %s: status %d", bad[i][0],
			  bad[i][1] ? bad[i][1] : "", d.status);
		cr_assert(d.errn > 0 && strchr(d.errbuf, '\n') == d.errbuf + d.errn - 1, "%s: not one line: %s",
			  bad[i][0], d.errbuf);
		cr_assert_eq(d.outn, 0);
	}
	struct demo d;
	const char *const help[] = { "--help", NULL };
	demo_run(&d, NULL, help);
	cr_assert(exited_ok(&d));
	cr_assert_not_null(strstr(d.outbuf, "--timeout-rate"));
}

/* ---- signals ------------------------------------------------------------------- */

static void stops_cleanly_on(int sig)
{
	struct demo d;
	const char *const args[] = { "--report-ms", "100", "--tokens", "8", NULL };
	unsigned long long rate, n, f, to;

	demo_start(&d, NULL, args);
	demo_wait_started(&d);
	while (!strstr(d.errbuf, " req/s (requests"))
		cr_assert(demo_read(&d, 100));
	kill(d.pid, sig);
	demo_finish(&d);
	cr_assert(exited_ok(&d), "signal %d: status %d; stderr: %s", sig, d.status, d.errbuf);
	const char *p = strstr(d.errbuf, "\nevring-demo: ");
	cr_assert_eq(sscanf(p, "\nevring-demo: %llu req/s (requests %llu, failed %llu, timed out %llu)", &rate, &n, &f,
			    &to),
		     4, "periodic line: %s", d.errbuf);
	cr_assert_gt(summary_requests(&d), 0);
	cr_assert_eq(d.outn, 0, "stdout without --json: %s", d.outbuf);
}

Test(demo, sigint_ends_with_status_0_and_the_summary, .timeout = 120)
{
	stops_cleanly_on(SIGINT);
}

Test(demo, sigterm_ends_with_status_0_and_the_summary, .timeout = 120)
{
	stops_cleanly_on(SIGTERM);
}

/* ---- a consumer attached to the demo ---------------------------------------------- */

/* What the handler saw; written on the handler's thread, read after evr_consumer_close. */
struct seen {
	uint32_t tokens; /* --tokens of the run */
	uint64_t traces, ok, failed, timed_out, bad, incomplete;
	uint64_t chunks, requests, tags, lost;
	char first_bad[512];
};

static const struct evr_field *field(const struct evr_fields *fs, const char *name)
{
	for (uint32_t i = 0; i < fs->n; i++)
		if (strcmp(fs->f[i].name, name) == 0)
			return &fs->f[i];
	return NULL;
}

static bool field_is(const struct evr_fields *fs, const char *name, const char *value)
{
	const struct evr_field *f = field(fs, name);

	return f && f->v.type == EVR_V_STR && strcmp(f->v.s, value) == 0;
}

/* The tree under span i: "name(child,child)", a '!' after a dropped span's name, '?' after any other non-ok. */
static void describe(const struct evr_trace *tr, int i, char *buf, size_t len)
{
	const struct evr_span_rec *sp = tr->spans[i];
	size_t n = strlen(buf);

	snprintf(buf + n, len - n, "%s%s", sp->site->name,
		 sp->status == EVR_SPAN_OK ? "" : sp->status == EVR_SPAN_DROPPED ? "!" : "?");
	if (!tr->first_child[i])
		return;
	for (uint32_t c = tr->first_child[i]; c; c = tr->next_sibling[c - 1]) {
		n = strlen(buf);
		snprintf(buf + n, len - n, "%s", c == tr->first_child[i] ? "(" : ",");
		describe(tr, (int)c - 1, buf, len);
	}
	n = strlen(buf);
	snprintf(buf + n, len - n, ")");
}

static int find(const struct evr_trace *tr, const char *name)
{
	for (uint32_t i = 0; i < tr->nspans; i++)
		if (strcmp(tr->spans[i]->site->name, name) == 0)
			return (int)i;
	return -1;
}

static int on_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct seen *s = ctx;
	char shape[512] = "";
	bool good = false;

	s->traces++;
	if (tr->incomplete)
		s->incomplete++;
	if (tr->root >= 0)
		describe(tr, tr->root, shape, sizeof(shape));
	if (strcmp(shape, "query(retrieve(embedding),reranking,function_call,llm.chat,synthesize)") == 0) {
		const struct evr_span_rec *chat = tr->spans[find(tr, "llm.chat")];
		const struct evr_field *out = field(chat->end_fields, "gen_ai.usage.output_tokens");
		good = chat->events == s->tokens && out && out->v.type == EVR_V_U64 && out->v.u == s->tokens &&
		       field_is(chat->begin_fields, "gen_ai.request.model", "llama-3-8b-instruct") &&
		       tr->spans[tr->root]->events == 2; /* trace.tags and request */
		s->ok += good;
	} else if (strcmp(shape, "query!(retrieve(embedding),reranking,function_call!)") == 0) {
		good = field_is(tr->spans[find(tr, "function_call")]->end_fields, "error.type", "tool_error") &&
		       field_is(tr->spans[tr->root]->end_fields, "error.type", "tool_error");
		s->failed += good;
	} else if (strcmp(shape, "query!(retrieve(embedding),reranking,function_call,llm.chat!)") == 0) {
		const struct evr_span_rec *chat = tr->spans[find(tr, "llm.chat")];
		good = chat->events >= 1 && chat->events < s->tokens &&
		       field_is(chat->end_fields, "error.type", "timeout") &&
		       field_is(tr->spans[tr->root]->end_fields, "error.type", "timeout");
		s->timed_out += good;
	}
	if (!good && s->bad++ == 0)
		snprintf(s->first_bad, sizeof(s->first_bad), "trace %" PRIx64 ": %s (%u spans, incomplete %d)",
			 tr->trace_id, shape, tr->nspans, tr->incomplete);
	return 0;
}

static int on_event(void *ctx, const struct evr_event *ev)
{
	struct seen *s = ctx;

	if (strcmp(ev->site->name, "llm.chat.in_progress") == 0)
		s->chunks++;
	else if (strcmp(ev->site->name, "request") == 0)
		s->requests++;
	else if (strcmp(ev->site->name, "trace.tags") == 0)
		s->tags++;
	return 0;
}

static int on_lost(void *ctx, const struct evr_lost *l)
{
	((struct seen *)ctx)->lost += l->count;
	return 0;
}

/*
 * Runs the demo with args and a consumer attached by pid from its start-up
 * line on, until it exits (after its --duration, or after stop_ms and a
 * SIGINT when stop_ms > 0). Fills *s and *t; asserts the demo ended with
 * status 0 and the consumer lost, skipped and abandoned nothing.
 */
static void traced_run(const char *const *args, uint32_t tokens, int stop_ms, struct seen *s, struct totals *t)
{
	const char *const env[] = { "EVRING_CAPTURE_CONTENT=1", NULL };
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_consumer_stats st;
	struct evr_handler h = { .name = "test", .ctx = s, .on_event = on_event, .on_trace_end = on_trace_end,
				 .on_lost = on_lost, .queue_len = 1u << 16 };
	struct demo d;
	char err[256] = "", line[128];
	int rc;

	memset(s, 0, sizeof(*s));
	s->tokens = tokens;
	demo_start(&d, env, args);
	demo_wait_started(&d);
	snprintf(line, sizeof(line), "evring-demo: pid %d, tracing to /dev/shm/evring.%d.", (int)d.pid, (int)d.pid);
	cr_assert_eq(strncmp(d.errbuf, line, strlen(line)), 0, "start-up line: %s", d.errbuf);

	struct evr_consumer *c = evr_consumer_new(&o, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	rc = evr_consumer_attach_pid(c, (uint32_t)d.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err));
	cr_assert_geq(rc, 0, "attach %d: %d %s", (int)d.pid, rc, err);
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	if (stop_ms > 0) {
		cr_assert_eq(evr_consumer_run(c, (uint64_t)stop_ms * 1000000ull, NULL), 0);
		kill(d.pid, SIGINT);
	}
	cr_assert_eq(evr_consumer_run(c, (uint64_t)WAIT_MS * 1000000ull, NULL), 0);
	demo_finish(&d);
	evr_consumer_stats(c, &st);
	evr_consumer_close(c);

	cr_assert(exited_ok(&d), "status %d; stderr: %s", d.status, d.errbuf);
	*t = json_totals(&d);
	cr_assert_eq(st.lost + s->lost, 0, "lost %" PRIu64 " records", st.lost);
	cr_assert_eq(st.bad + st.ring_skipped, 0, "bad %" PRIu64 ", skipped %" PRIu64, st.bad, st.ring_skipped);
	cr_assert_eq(st.spans_abandoned + st.spans_orphaned + st.spans_no_begin, 0,
		     "abandoned %" PRIu64 ", orphaned %" PRIu64 ", no begin %" PRIu64 ": a span was left open",
		     st.spans_abandoned, st.spans_orphaned, st.spans_no_begin);
	cr_assert_eq(s->incomplete, 0);
	cr_assert_gt(t->requests, 0);
	cr_assert_eq(s->traces, t->requests, "traces %" PRIu64 ", requests %" PRIu64 "; %s", s->traces, t->requests,
		     s->first_bad);
	cr_assert_eq(s->requests, t->requests);
	cr_assert_eq(s->tags, t->requests);
	cr_assert_eq(s->chunks, t->tokens, "in-progress events %" PRIu64 ", tokens %" PRIu64, s->chunks, t->tokens);
	cr_assert_eq(s->bad, 0, "%" PRIu64 " traces of a wrong shape, first: %s", s->bad, s->first_bad);
}

Test(demo_traced, every_request_is_one_trace_of_the_pipeline, .timeout = 180)
{
	const char *const args[] = { "--duration", "1.5", "--rate", "100", "--threads", "2", "--tokens", "12",
				     "--fail-rate", "0", "--timeout-rate", "0", "--json", "--quiet", NULL };
	struct seen s;
	struct totals t;

	traced_run(args, 12, 0, &s, &t);
	cr_assert_eq(s.ok, t.requests);
	cr_assert_eq(t.failed + t.timed_out, 0);
}

Test(demo_traced, fail_rate_1_fails_every_tool_call, .timeout = 180)
{
	const char *const args[] = { "--duration", "1", "--rate", "100", "--tokens", "12", "--fail-rate", "1",
				     "--timeout-rate", "0", "--json", "--quiet", NULL };
	struct seen s;
	struct totals t;

	traced_run(args, 12, 0, &s, &t);
	cr_assert_eq(t.failed, t.requests);
	cr_assert_eq(s.failed, t.requests);
	cr_assert_eq(t.tokens, 0);
}

Test(demo_traced, timeout_rate_1_abandons_every_stream, .timeout = 180)
{
	const char *const args[] = { "--duration", "1", "--rate", "100", "--tokens", "12", "--fail-rate", "0",
				     "--timeout-rate", "1", "--json", "--quiet", NULL };
	struct seen s;
	struct totals t;

	traced_run(args, 12, 0, &s, &t);
	cr_assert_eq(t.timed_out, t.requests);
	cr_assert_eq(s.timed_out, t.requests);
}

/* Mixed shares, stopped by SIGINT mid-run: every span still ends, the counts match the trees exactly. */
Test(demo_traced, shares_match_the_trees_and_sigint_ends_every_span, .timeout = 180)
{
	const char *const args[] = { "--rate", "200", "--threads", "3", "--tokens", "6", "--fail-rate", "0.3",
				     "--timeout-rate", "0.25", "--json", "--quiet", NULL };
	struct seen s;
	struct totals t;

	traced_run(args, 6, 1500, &s, &t);
	cr_assert_eq(s.failed, t.failed);
	cr_assert_eq(s.timed_out, t.timed_out);
	cr_assert_eq(s.ok, t.requests - t.failed - t.timed_out);
	cr_assert_geq(t.requests, 100, "200 req/s for 1.5 s served %" PRIu64, t.requests);
	/* Binomial over >= 100 requests: these bounds are more than 3 standard deviations wide. */
	double fail = (double)t.failed / (double)t.requests, timeout = (double)t.timed_out / (double)t.requests;
	cr_assert(fail > 0.15 && fail < 0.45, "failed share %f for --fail-rate 0.3", fail);
	cr_assert(timeout > 0.11 && timeout < 0.39, "timed-out share %f for --timeout-rate 0.25", timeout);
}
