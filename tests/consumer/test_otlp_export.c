/*
 * test_otlp_export.c: the OTLP/HTTP exporter (handlers/otlp_export.c)
 * against a local receiver that fails on cue (otlp_fault_server.py, one
 * python3 process per test, on 127.0.0.1, killed at the end of the test and
 * with the test process). Jobs are fixed bodies; what the receiver got is
 * read back from its record file, one line per request. Each test asserts
 * the exact counters, and that every job was freed once:
 *   - bodies arrive intact (SHA-256 compared), gzipped when asked, over one
 *     kept-alive connection; the configured headers arrive percent-decoded;
 *     malformed header lists and URLs are refused by new;
 *   - 503 with Retry-After (delta-seconds and HTTP-date) waits that long;
 *     429 is retried with backoff; 400 fails at once and the next job goes;
 *     a receiver that is not there yet is retried until it is; one that
 *     closes every connection fails the job after max_elapsed;
 *   - partial successes (protobuf and JSON) count rejected items;
 *   - the queue's cap drops what does not fit and submit never waits;
 *   - flush's deadline drops the queue and cuts the request in flight short,
 *     on time, and the next job still goes; free does the same;
 *   - tick keeps its period, during a slow request too, and may submit;
 *   - and, without a receiver, the wire's pieces (otlp_http.c): Retry-After
 *     values, partial-success bodies, gzip, which outcomes are retried.
 * Options are given per Test(): the ThreadSanitizer runner has no TestSuite().
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <evring/consumer.h>

#include "handlers/otlp_export.h"
#include "handlers/otlp_http.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define BODY_LEN 3000u
/* A submit takes the exporter's mutex for a few instructions; ThreadSanitizer makes each of them 5-15 times longer. */
#ifdef EVR_UNDER_TSAN
#define SUBMIT_MAX_NS (50 * MS)
#else
#define SUBMIT_MAX_NS (5 * MS)
#endif

static struct {
	pid_t pid;
	int port;
	char dir[64], record[96], port_file[96], traces[96], logs[96];
} srv;

static int frees;
static uint8_t body[BODY_LEN];
static char body_sha[65];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- the receiver ------------------------------------------------------------------------------------------ */

/* Starts otlp_fault_server.py with the given mode arguments (NULL-terminated) on port (0: any). */
static void server_start(int port, const char *const *mode)
{
	const char *argv[24] = { "python3", EVR_OTLP_FAULT_SERVER, "--port-file", srv.port_file, "--record",
				 srv.record, "--port" };
	char port_s[16];
	pid_t parent = getpid();
	int n = 7;
	FILE *f;

	snprintf(port_s, sizeof(port_s), "%d", port);
	argv[n++] = port_s;
	for (int i = 0; mode && mode[i]; i++)
		argv[n++] = mode[i];
	argv[n] = NULL;
	unlink(srv.port_file);
	srv.pid = fork();
	cr_assert_geq(srv.pid, 0);
	if (srv.pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test, whatever ends it */
		if (getppid() != parent)
			_exit(1);
		execvp("python3", (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		int st;

		f = fopen(srv.port_file, "r");
		if (f) {
			cr_assert_eq(fscanf(f, "%d", &srv.port), 1);
			fclose(f);
			snprintf(srv.traces, sizeof(srv.traces), "http://127.0.0.1:%d/v1/traces", srv.port);
			snprintf(srv.logs, sizeof(srv.logs), "http://127.0.0.1:%d/v1/logs", srv.port);
			return;
		}
		cr_assert_eq(waitpid(srv.pid, &st, WNOHANG), 0, "the fault server exited at start");
		sleep_ms(10);
	}
	cr_assert_fail("the fault server did not start in 10 s");
}

static void server_stop(void)
{
	if (srv.pid > 0) {
		kill(srv.pid, SIGTERM);
		waitpid(srv.pid, NULL, 0);
	}
	srv.pid = 0;
}

/* A port nothing listens on (bound, read, released). */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* The record's lines (requests in order), and how many. */
static char **record_lines(int *n)
{
	FILE *f = fopen(srv.record, "r");
	char **lines = calloc(256, sizeof(*lines)), *line = NULL;
	size_t cap = 0;

	*n = 0;
	cr_assert_not_null(lines);
	if (!f)
		return lines;
	while (*n < 255 && getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = 0;
		lines[(*n)++] = strdup(line);
	}
	free(line);
	fclose(f);
	return lines;
}

static void lines_free(char **lines)
{
	for (int i = 0; lines[i]; i++)
		free(lines[i]);
	free(lines);
}

/* A numeric field ("t=", "len=", "peer=") of a record line. */
static double field(const char *line, const char *name)
{
	char key[32];
	const char *p;

	snprintf(key, sizeof(key), "%s=", name);
	p = strstr(line, key);
	cr_assert_not_null(p, "no %s in %s", key, line);
	return strtod(p + strlen(key), NULL);
}

static void setup(void)
{
	char path[128], cmd[160];
	FILE *f;

	snprintf(srv.dir, sizeof(srv.dir), "/tmp/evr-otlp-XXXXXX");
	cr_assert_not_null(mkdtemp(srv.dir));
	snprintf(srv.record, sizeof(srv.record), "%s/record", srv.dir);
	snprintf(srv.port_file, sizeof(srv.port_file), "%s/port", srv.dir);
	/* A body like an encoded request: some structure, some noise (it compresses, not to nothing). */
	for (unsigned i = 0; i < BODY_LEN; i++)
		body[i] = i % 64 < 40 ? (uint8_t)"resource.spans.llm.chat.gen_ai.request.model"[i % 40]
				      : (uint8_t)(i * 2654435761u >> 24);
	snprintf(path, sizeof(path), "%s/body", srv.dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(body, 1, BODY_LEN, f), BODY_LEN);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "sha256sum %s", path);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%64s", body_sha), 1);
	pclose(f);
	unlink(path);
}

static void teardown(void)
{
	server_stop();
	unlink(srv.record);
	unlink(srv.port_file);
	rmdir(srv.dir);
}

/* ---- jobs -------------------------------------------------------------------------------------------------- */

struct tjob {
	struct evr_otlp_job j;
	const void *body;
	size_t len;
};

static int tjob_encode(struct evr_otlp_job *j, bool json, uint8_t **out, size_t *len)
{
	struct tjob *t = (struct tjob *)j;

	(void)json;
	*out = malloc(t->len);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, t->body, t->len);
	*len = t->len;
	return 0;
}

/* Jobs freed so far (the export thread frees most of them). */
static int freed(void)
{
	return __atomic_load_n(&frees, __ATOMIC_RELAXED);
}

static void tjob_free(struct evr_otlp_job *j)
{
	__atomic_fetch_add(&frees, 1, __ATOMIC_RELAXED);
	free(j);
}

static struct evr_otlp_job *job_of(enum evr_otlp_signal sig, uint64_t items, const void *b, size_t len)
{
	struct tjob *t = calloc(1, sizeof(*t));

	cr_assert_not_null(t);
	t->j.signal = sig;
	t->j.items = items;
	t->j.bytes = 1000;
	t->j.encode = tjob_encode;
	t->j.free = tjob_free;
	t->body = b;
	t->len = len;
	return &t->j;
}

static struct evr_otlp_job *job(enum evr_otlp_signal sig, uint64_t items)
{
	return job_of(sig, items, body, BODY_LEN);
}

static struct evr_otlp_export_config config(void)
{
	return (struct evr_otlp_export_config){ .traces_url = srv.traces, .logs_url = srv.logs };
}

static struct evr_otlp_exporter *exporter(const struct evr_otlp_export_config *c)
{
	char err[256] = "";
	struct evr_otlp_exporter *x = evr__otlp_export_new(c, err, sizeof(err));

	cr_assert_not_null(x, "new: %s", err);
	return x;
}

static struct evr_otlp_export_stats stats(struct evr_otlp_exporter *x)
{
	struct evr_otlp_export_stats s;

	evr__otlp_export_stats(x, &s);
	return s;
}

static void wait_requests(struct evr_otlp_exporter *x, uint64_t n)
{
	for (int i = 0; i < 500 && stats(x).requests < n; i++)
		sleep_ms(10);
	cr_assert_geq(stats(x).requests, n);
}

/* ---- delivery ---------------------------------------------------------------------------------------------- */

Test(otlp_export, bodies_arrive_intact_on_one_connection, .init = setup, .fini = teardown, .timeout = 30)
{
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	char **lines, sha[80];
	int n;

	server_start(0, NULL);
	c = config();
	x = exporter(&c);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 4)), 0);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_LOGS, 2)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 5 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.exported[0], 12);
	cr_assert_eq(s.exported[1], 2);
	cr_assert_eq(s.rejected[0] + s.rejected[1] + s.failed[0] + s.failed[1] + s.dropped[0] + s.dropped[1], 0);
	cr_assert_eq(s.requests, 4);
	cr_assert_eq(s.retries, 0);
	cr_assert_eq(s.bytes_sent, 4 * BODY_LEN);
	cr_assert_eq(s.last_status, 200);
	cr_assert_eq(s.queue_bytes, 0);
	cr_assert_geq(s.queue_bytes_max, 1000);
	cr_assert_leq(s.queue_bytes_max, 4000);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 4);

	lines = record_lines(&n);
	cr_assert_eq(n, 4);
	snprintf(sha, sizeof(sha), "\tsha=%s\t", body_sha);
	for (int i = 0; i < 4; i++) {
		const char *path = i < 3 ? "\tpath=/v1/traces\t" : "\tpath=/v1/logs\t";

		cr_assert_not_null(strstr(lines[i], path), "%s", lines[i]);
		cr_assert_not_null(strstr(lines[i], sha), "%s", lines[i]);
		cr_assert_eq(field(lines[i], "len"), BODY_LEN);
		cr_assert_not_null(strstr(lines[i], "\tcontent-type: application/x-protobuf"), "%s", lines[i]);
		cr_assert_not_null(strstr(lines[i], "\tuser-agent: evring/"), "%s", lines[i]);
		cr_assert_null(strstr(lines[i], "content-encoding"), "%s", lines[i]);
		cr_assert_null(strstr(lines[i], "\texpect:"), "%s", lines[i]);
		/* keep-alive: every request on the first one's connection */
		cr_assert_eq(field(lines[i], "peer"), field(lines[0], "peer"), "%s", lines[i]);
	}
	lines_free(lines);
}

Test(otlp_export, gzip_bodies_gunzip_to_the_same_bytes, .init = setup, .fini = teardown, .timeout = 30)
{
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	char **lines, sha[80];
	double sent = 0;
	int n;

	server_start(0, NULL);
	c = config();
	c.gzip = true;
	x = exporter(&c);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 3)), 0);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_LOGS, 1)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 5 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.exported[0], 3);
	cr_assert_eq(s.exported[1], 1);
	cr_assert_eq(s.requests, 2);
	lines = record_lines(&n);
	cr_assert_eq(n, 2);
	snprintf(sha, sizeof(sha), "\tsha=%s\t", body_sha);
	for (int i = 0; i < n; i++) {
		cr_assert_not_null(strstr(lines[i], "\tcontent-encoding: gzip"), "%s", lines[i]);
		cr_assert_not_null(strstr(lines[i], sha), "%s", lines[i]);
		cr_assert_lt(field(lines[i], "len"), BODY_LEN);
		sent += field(lines[i], "len");
	}
	cr_assert_eq(s.bytes_sent, (uint64_t)sent, "bytes_sent counts the compressed bodies");
	lines_free(lines);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 2);
}

Test(otlp_export, configured_headers_arrive_decoded, .init = setup, .fini = teardown, .timeout = 30)
{
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	char **lines;
	int n;

	server_start(0, NULL);
	c = config();
	c.headers = " api-key = secret%20x , X-Tenant=a%2Cb%3d,,empty= ,";
	c.user_agent = "test-agent/1";
	x = exporter(&c);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 1)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 5 * SEC), 0);
	cr_assert_eq(stats(x).exported[0], 1);
	evr__otlp_export_free(x);
	lines = record_lines(&n);
	cr_assert_eq(n, 1);
	cr_assert_not_null(strstr(lines[0], "\tapi-key: secret x\t"), "%s", lines[0]);
	cr_assert_not_null(strstr(lines[0], "\tx-tenant: a,b=\t"), "%s", lines[0]);
	cr_assert_not_null(strstr(lines[0], "\tempty: "), "%s", lines[0]);
	cr_assert_not_null(strstr(lines[0], "\tuser-agent: test-agent/1"), "%s", lines[0]);
	lines_free(lines);
}

Test(otlp_export, malformed_headers_and_urls_are_refused, .timeout = 30)
{
	static const char *bad_headers[] = { "novalue", "=v", "k=%zz", "k=ab%4", "bad key=v", "k=a%0Ab", "k=a%00",
					     "Content-Type=text/plain", "a=b,c" };
	static const char *bad_urls[] = { "ftp://127.0.0.1/v1/traces", "not a url", "" };
	struct evr_otlp_export_config c = { .traces_url = "http://127.0.0.1:1/v1/traces",
					    .logs_url = "http://127.0.0.1:1/v1/logs" };
	char err[256];

	for (size_t i = 0; i < sizeof(bad_headers) / sizeof(bad_headers[0]); i++) {
		c.headers = bad_headers[i];
		err[0] = 0;
		cr_assert_null(evr__otlp_export_new(&c, err, sizeof(err)), "headers '%s' accepted", bad_headers[i]);
		cr_assert_not_null(strstr(err, "otlp: headers:"), "'%s': %s", bad_headers[i], err);
	}
	c.headers = NULL;
	for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
		c.logs_url = bad_urls[i];
		err[0] = 0;
		cr_assert_null(evr__otlp_export_new(&c, err, sizeof(err)), "URL '%s' accepted", bad_urls[i]);
		cr_assert_not_null(strstr(err, "logs"), "'%s': %s", bad_urls[i], err);
	}
}

/* ---- retries ----------------------------------------------------------------------------------------------- */

Test(otlp_export, retry_after_503_is_waited_for, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--503-for", "2", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	uint64_t t0;
	char **lines;
	int n;

	server_start(0, mode);
	c = config();
	x = exporter(&c);
	t0 = now_ns();
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 5)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 10 * SEC), 0);
	cr_assert_geq(now_ns() - t0, 2 * SEC);
	s = stats(x);
	cr_assert_eq(s.exported[0], 5);
	cr_assert_eq(s.failed[0], 0);
	cr_assert_geq(s.retries, 2);
	cr_assert_leq(s.requests, 4, "Retry-After: 1 over 2 s is 3 or 4 requests, not %lu", (unsigned long)s.requests);
	cr_assert_eq(s.retries, s.requests - 1);
	cr_assert_eq(s.last_status, 200);
	lines = record_lines(&n);
	cr_assert_eq((uint64_t)n, s.requests);
	for (int i = 1; i < n; i++)
		cr_assert_geq(field(lines[i], "t") - field(lines[i - 1], "t"), 0.9, "%s after %s", lines[i],
			      lines[i - 1]);
	lines_free(lines);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 1);
}

Test(otlp_export, retry_after_as_an_http_date, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--503-for", "0.5", "--retry-after-date", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	char **lines;
	double gap;
	int n;

	server_start(0, mode);
	c = config();
	x = exporter(&c);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 2)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 10 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.exported[0], 2);
	cr_assert_eq(s.requests, 2);
	cr_assert_eq(s.retries, 1);
	lines = record_lines(&n);
	cr_assert_eq(n, 2);
	/* The date is 2 s ahead in whole seconds: the wait is over 1 s and at most 2 s. */
	gap = field(lines[1], "t") - field(lines[0], "t");
	cr_assert_geq(gap, 0.9);
	cr_assert_leq(gap, 2.5);
	lines_free(lines);
	evr__otlp_export_free(x);
}

Test(otlp_export, 429_is_retried_with_backoff, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--429-count", "2", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	uint64_t t0;

	server_start(0, mode);
	c = config();
	x = exporter(&c);
	t0 = now_ns();
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_LOGS, 7)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 10 * SEC), 0);
	/* Backoffs of at most 100 and 200 ms (full jitter: maybe none). */
	cr_assert_lt(now_ns() - t0, 2 * SEC);
	s = stats(x);
	cr_assert_eq(s.exported[1], 7);
	cr_assert_eq(s.failed[1], 0);
	cr_assert_eq(s.requests, 3);
	cr_assert_eq(s.retries, 2);
	cr_assert_eq(s.last_status, 200);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 1);
}

Test(otlp_export, 400_fails_that_job_alone, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--400-every", "2", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;

	server_start(0, mode);
	c = config();
	x = exporter(&c);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 3)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 10 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.requests, 6, "a 400 is not retried");
	cr_assert_eq(s.retries, 0);
	cr_assert_eq(s.failed[0], 9);
	cr_assert_eq(s.exported[0], 9);
	cr_assert_eq(s.last_status, 400);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 6);
}

Test(otlp_export, a_receiver_that_comes_late_gets_the_job, .init = setup, .fini = teardown, .timeout = 30)
{
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	int port = free_port(), n;
	char **lines;

	snprintf(srv.traces, sizeof(srv.traces), "http://127.0.0.1:%d/v1/traces", port);
	snprintf(srv.logs, sizeof(srv.logs), "http://127.0.0.1:%d/v1/logs", port);
	c = config();
	x = exporter(&c);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 6)), 0);
	sleep_ms(1500);
	s = stats(x);
	cr_assert_geq(s.retries, 1, "refused connections are retried");
	cr_assert_eq(s.last_status, 0);
	server_start(port, NULL);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 10 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.exported[0], 6);
	cr_assert_eq(s.failed[0], 0);
	cr_assert_eq(s.retries, s.requests - 1);
	cr_assert_eq(s.last_status, 200);
	lines = record_lines(&n);
	cr_assert_eq(n, 1);
	lines_free(lines);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 1);
}

Test(otlp_export, closed_connections_fail_the_job_after_max_elapsed, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--close", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	uint64_t t0;

	server_start(0, mode);
	c = config();
	c.max_elapsed_ms = 700;
	x = exporter(&c);
	t0 = now_ns();
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 8)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 10 * SEC), 0);
	cr_assert_lt(now_ns() - t0, 3 * SEC);
	s = stats(x);
	cr_assert_eq(s.failed[0], 8);
	cr_assert_eq(s.exported[0], 0);
	cr_assert_geq(s.requests, 2);
	cr_assert_eq(s.retries, s.requests - 1);
	cr_assert_eq(s.last_status, 0);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 1);
}

/* ---- partial success --------------------------------------------------------------------------------------- */

Test(otlp_export, partial_success_protobuf, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--partial", "3", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;

	server_start(0, mode);
	c = config();
	x = exporter(&c);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 10)), 0);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_LOGS, 5)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 5 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.exported[0], 7);
	cr_assert_eq(s.rejected[0], 3);
	cr_assert_eq(s.exported[1], 2);
	cr_assert_eq(s.rejected[1], 3);
	cr_assert_eq(s.failed[0] + s.failed[1], 0);
	evr__otlp_export_free(x);
}

Test(otlp_export, partial_success_json, .init = setup, .fini = teardown, .timeout = 30)
{
	static const char json[] = "{\"resourceSpans\":[]}";
	const char *mode[] = { "--partial", "4", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	char **lines;
	int n;

	server_start(0, mode);
	c = config();
	c.json = true;
	x = exporter(&c);
	cr_assert_eq(evr__otlp_export_submit(x, job_of(EVR_OTLP_TRACES, 10, json, strlen(json))), 0);
	cr_assert_eq(evr__otlp_export_submit(x, job_of(EVR_OTLP_LOGS, 3, json, strlen(json))), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 5 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.exported[0], 6);
	cr_assert_eq(s.rejected[0], 4);
	cr_assert_eq(s.exported[1], 0);
	cr_assert_eq(s.rejected[1], 3, "a partial success rejects at most what was sent");
	lines = record_lines(&n);
	cr_assert_eq(n, 2);
	cr_assert_not_null(strstr(lines[0], "\tcontent-type: application/json"), "%s", lines[0]);
	lines_free(lines);
	evr__otlp_export_free(x);
}

/* ---- the queue, flush and free ----------------------------------------------------------------------------- */

Test(otlp_export, the_cap_drops_what_does_not_fit_without_waiting, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--slow-ms", "300", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	uint64_t accepted = 0, worst = 0;

	server_start(0, mode);
	c = config();
	c.queue_bytes = 3 * 1000; /* three jobs' bytes */
	x = exporter(&c);
	for (int i = 0; i < 10; i++) {
		struct evr_otlp_job *j = job(EVR_OTLP_TRACES, 2);
		uint64_t t = now_ns();
		int rc = evr__otlp_export_submit(x, j);

		t = now_ns() - t;
		worst = t > worst ? t : worst;
		cr_assert(rc == 0 || rc == -ENOBUFS, "submit: %d", rc);
		accepted += rc == 0;
	}
	cr_assert_lt(worst, SUBMIT_MAX_NS, "a submit took %lu ns", (unsigned long)worst);
	/* Three queued, and a fourth if the thread had taken the first out already. */
	cr_assert_geq(accepted, 3);
	cr_assert_leq(accepted, 4);
	s = stats(x);
	cr_assert_eq(s.dropped[0], (10 - accepted) * 2);
	cr_assert_leq(s.queue_bytes_max, 3000);
	cr_assert_eq(freed(), (int)(10 - accepted), "a dropped job is freed at once");
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 10 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.exported[0], accepted * 2);
	cr_assert_eq(s.dropped[0], (10 - accepted) * 2);
	cr_assert_eq(s.requests, accepted);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 10);
}

Test(otlp_export, flush_deadline_cuts_a_hanging_receiver_short, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--slow-ms", "60000", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;
	uint64_t t0, took;

	server_start(0, mode);
	c = config();
	x = exporter(&c);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 5)), 0);
	wait_requests(x, 1);
	t0 = now_ns();
	cr_assert_eq(evr__otlp_export_flush(x, t0 + 700 * MS), -ETIMEDOUT);
	took = now_ns() - t0;
	cr_assert_geq(took, 690 * MS);
	/*
	 * The contract is the deadline + 1 s; curl_multi_wakeup makes it at once
	 * (without it, the request's poll would end on curl's 1 s period: 0.2 s,
	 * 1.2 s, ... after the request began here, past this bound).
	 */
	cr_assert_lt(took, SEC, "flush took %lu ms", (unsigned long)(took / MS));
	s = stats(x);
	cr_assert_eq(s.dropped[0], 10, "the two queued");
	cr_assert_eq(s.failed[0], 5, "the one in flight");
	cr_assert_eq(s.exported[0], 0);
	cr_assert_eq(s.requests, 1, "cut short, not retried");
	cr_assert_eq(s.queue_bytes, 0);
	cr_assert_eq(freed(), 3);
	t0 = now_ns();
	evr__otlp_export_free(x);
	cr_assert_lt(now_ns() - t0, 300 * MS);
}

Test(otlp_export, after_a_flush_deadline_the_next_job_goes, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--slow-ms", "1200", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	struct evr_otlp_export_stats s;

	server_start(0, mode);
	c = config();
	x = exporter(&c);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_TRACES, 1)), 0);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_LOGS, 2)), 0);
	wait_requests(x, 1);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 300 * MS), -ETIMEDOUT);
	cr_assert_eq(evr__otlp_export_submit(x, job(EVR_OTLP_LOGS, 4)), 0);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 10 * SEC), 0);
	s = stats(x);
	cr_assert_eq(s.failed[0], 1);
	cr_assert_eq(s.dropped[1], 2);
	cr_assert_eq(s.exported[1], 4);
	cr_assert_eq(s.requests, 2);
	cr_assert_eq(s.last_status, 200);
	evr__otlp_export_free(x);
	cr_assert_eq(freed(), 3);
}

Test(otlp_export, free_cuts_short_and_frees_every_job, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--slow-ms", "60000", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	uint64_t t0;

	server_start(0, mode);
	c = config();
	x = exporter(&c);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(evr__otlp_export_submit(x, job(i % 2 ? EVR_OTLP_LOGS : EVR_OTLP_TRACES, 1)), 0);
	wait_requests(x, 1);
	sleep_ms(500); /* mid-way through one of the request's 1 s polls */
	t0 = now_ns();
	evr__otlp_export_free(x);
	cr_assert_lt(now_ns() - t0, 300 * MS);
	cr_assert_eq(freed(), 4);
}

/* ---- tick -------------------------------------------------------------------------------------------------- */

static struct {
	pthread_mutex_t lock; /* as the handler's: held across submit */
	struct evr_otlp_exporter *x;
	int calls, submitted;
	bool bad_arg;
	uint64_t first, last, min_gap, max_skew;
} tk = { .lock = PTHREAD_MUTEX_INITIALIZER, .min_gap = UINT64_MAX };

static void on_tick(void *arg, uint64_t now)
{
	uint64_t real = now_ns();

	pthread_mutex_lock(&tk.lock);
	tk.bad_arg |= arg != &tk;
	if (tk.calls && now - tk.last < tk.min_gap)
		tk.min_gap = now - tk.last;
	if (!tk.calls)
		tk.first = now;
	if (real - now > tk.max_skew)
		tk.max_skew = real - now;
	tk.last = now;
	tk.calls++;
	if (tk.calls == 1 && tk.x) /* the handler closing a batch from its tick */
		tk.submitted = evr__otlp_export_submit(tk.x, job(EVR_OTLP_TRACES, 9)) == 0;
	pthread_mutex_unlock(&tk.lock);
}

Test(otlp_export, tick_keeps_its_period_and_may_submit, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *mode[] = { "--slow-ms", "600", NULL };
	struct evr_otlp_export_config c;
	struct evr_otlp_exporter *x;
	int calls;

	server_start(0, mode);
	c = config();
	c.tick = on_tick;
	c.tick_arg = &tk;
	c.tick_ms = 50;
	pthread_mutex_lock(&tk.lock); /* no tick before tk.x is set */
	x = exporter(&c);
	tk.x = x;
	pthread_mutex_unlock(&tk.lock);
	sleep_ms(1000);
	pthread_mutex_lock(&tk.lock);
	calls = tk.calls;
	pthread_mutex_unlock(&tk.lock);
	/* 20 expected; the 600 ms request in the middle would cost 12 of them if it stopped the ticks. */
	cr_assert_geq(calls, 14, "%d ticks in 1 s", calls);
	cr_assert_leq(calls, 22, "%d ticks in 1 s", calls);
	cr_assert_geq(tk.min_gap, 20 * MS, "ticks %lu ns apart", (unsigned long)tk.min_gap);
	cr_assert_lt(tk.max_skew, 100 * MS, "tick's now is CLOCK_MONOTONIC");
	cr_assert_eq(tk.submitted, 1);
	cr_assert_not(tk.bad_arg);
	cr_assert_eq(evr__otlp_export_flush(x, now_ns() + 5 * SEC), 0);
	cr_assert_eq(stats(x).exported[0], 9);
	evr__otlp_export_free(x);
	pthread_mutex_lock(&tk.lock);
	calls = tk.calls;
	pthread_mutex_unlock(&tk.lock);
	sleep_ms(120);
	cr_assert_eq(tk.calls, calls, "no tick after free");
	cr_assert_eq(freed(), 1);
}

/* ---- the wire, without a receiver -------------------------------------------------------------------------- */

Test(otlp_export, retry_after_reads_seconds_and_dates, .timeout = 30)
{
	static const char *bad[] = { "soon", "1.5", "", "  ", "-1", "Wed, 32 Foo 2015 07:28:00 GMT" };
	const uint64_t date = 1445412480ull * SEC; /* Wed, 21 Oct 2015 07:28:00 GMT */
	const char *v;
	uint64_t w;

	v = "1";
	cr_assert(evr__otlp_retry_after_parse(v, strlen(v), date, &w));
	cr_assert_eq(w, SEC);
	v = " 120 \r\n"; /* as the header callback has it */
	cr_assert(evr__otlp_retry_after_parse(v, strlen(v), date, &w));
	cr_assert_eq(w, 120 * SEC);
	v = " Wed, 21 Oct 2015 07:28:00 GMT\r\n";
	cr_assert(evr__otlp_retry_after_parse(v, strlen(v), date - 2500 * MS, &w));
	cr_assert_eq(w, 2500 * MS);
	cr_assert(evr__otlp_retry_after_parse(v, strlen(v), date + SEC, &w));
	cr_assert_eq(w, 0, "a date past: at once");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		w = 77;
		cr_assert_not(evr__otlp_retry_after_parse(bad[i], strlen(bad[i]), date, &w), "'%s'", bad[i]);
		cr_assert_eq(w, 77);
	}
}

Test(otlp_export, partial_success_bodies_decode, .timeout = 30)
{
	static const struct {
		const char *body;
		size_t len;
		bool json;
		enum evr_otlp_signal sig;
		uint64_t rejected;
	} cases[] = {
		{ "{\"partialSuccess\":{\"rejectedSpans\":\"12\",\"errorMessage\":\"x\"}}", 0, true, EVR_OTLP_TRACES,
		  12 },
		{ "{ \"partialSuccess\" : { \"rejectedSpans\" : 7 } }", 0, true, EVR_OTLP_TRACES, 7 },
		{ "{\"partial_success\":{\"rejected_log_records\":\"3\"}}", 0, true, EVR_OTLP_LOGS, 3 },
		{ "{\"partialSuccess\":{\"rejectedLogRecords\":\"3\"}}", 0, true, EVR_OTLP_TRACES, 0 },
		{ "{\"partialSuccess\":{}}", 0, true, EVR_OTLP_LOGS, 0 },
		{ "{}", 0, true, EVR_OTLP_TRACES, 0 },
		{ "\x0a\x02\x08\x05", 4, false, EVR_OTLP_TRACES, 5 },
		{ "\x0a\x02\x08\x05", 4, false, EVR_OTLP_LOGS, 5 },
		{ "\x0a\x03\x08\xac\x02", 5, false, EVR_OTLP_TRACES, 300 },
		{ "\x0a\x04\x12\x02hi", 6, false, EVR_OTLP_LOGS, 0 }, /* an error message alone: a warning */
		{ "\x0a\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 13, false, EVR_OTLP_TRACES, 0 }, /* -1 */
		{ "\xff\xff\xff", 3, false, EVR_OTLP_TRACES, 0 },
		{ "", 0, false, EVR_OTLP_TRACES, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = cases[i].json ? strlen(cases[i].body) : cases[i].len;

		cr_assert_eq(evr__otlp_rejected(cases[i].body, len, cases[i].json, cases[i].sig), cases[i].rejected,
			     "case %zu", i);
	}
}

Test(otlp_export, gzip_round_trips, .init = setup, .fini = teardown, .timeout = 30)
{
	uint8_t *gz = NULL, back[BODY_LEN + 16];
	size_t len = 0;
	z_stream zs;

	cr_assert_eq(evr__otlp_gzip(body, BODY_LEN, &gz, &len), 0);
	cr_assert_gt(len, 18);
	cr_assert_lt(len, BODY_LEN);
	cr_assert(gz[0] == 0x1f && gz[1] == 0x8b, "gzip's magic, not zlib's header");
	memset(&zs, 0, sizeof(zs));
	cr_assert_eq(inflateInit2(&zs, 15 + 16), Z_OK);
	zs.next_in = gz;
	zs.avail_in = (uInt)len;
	zs.next_out = back;
	zs.avail_out = sizeof(back);
	cr_assert_eq(inflate(&zs, Z_FINISH), Z_STREAM_END);
	cr_assert_eq(zs.total_out, BODY_LEN);
	cr_assert_eq(memcmp(back, body, BODY_LEN), 0);
	inflateEnd(&zs);
	free(gz);
}

Test(otlp_export, retried_outcomes, .timeout = 30)
{
	static const long retried[] = { 429, 502, 503, 504 };
	static const long not_retried[] = { 200, 301, 400, 401, 403, 404, 405, 408, 413, 415, 500, 501, 505 };

	for (size_t i = 0; i < sizeof(retried) / sizeof(retried[0]); i++)
		cr_assert(evr__otlp_retryable(CURLE_OK, retried[i]), "%ld", retried[i]);
	for (size_t i = 0; i < sizeof(not_retried) / sizeof(not_retried[0]); i++)
		cr_assert_not(evr__otlp_retryable(CURLE_OK, not_retried[i]), "%ld", not_retried[i]);
	cr_assert(evr__otlp_retryable(CURLE_COULDNT_CONNECT, 0));
	cr_assert(evr__otlp_retryable(CURLE_OPERATION_TIMEDOUT, 0));
	cr_assert(evr__otlp_retryable(CURLE_GOT_NOTHING, 0));
	cr_assert(evr__otlp_retryable(CURLE_RECV_ERROR, 0));
	cr_assert_not(evr__otlp_retryable(CURLE_URL_MALFORMAT, 0));
	cr_assert_not(evr__otlp_retryable(CURLE_UNSUPPORTED_PROTOCOL, 0));
}

Test(otlp_export, percent_decoding, .timeout = 30)
{
	static const struct {
		const char *in, *out;
		long rc;
	} cases[] = {
		{ "plain", "plain", 5 },     { "a%2Cb%3d", "a,b=", 4 }, { "%41%42", "AB", 2 }, { "", "", 0 },
		{ "%zz", NULL, -EINVAL },    { "ab%4", NULL, -EINVAL }, { "%", NULL, -EINVAL }, { "%-1", NULL, -EINVAL },
		{ "a%00b", NULL, -EILSEQ },
	};
	char out[32];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long rc = evr__otlp_pct_decode(cases[i].in, cases[i].in + strlen(cases[i].in), out);

		cr_assert_eq(rc, cases[i].rc, "'%s': %ld", cases[i].in, rc);
		if (rc >= 0)
			cr_assert_eq(memcmp(out, cases[i].out, (size_t)rc), 0, "'%s'", cases[i].in);
	}
}

/* Regression: the message of a bad OTEL_RESOURCE_ATTRIBUTES entry quoted it after its memory was freed. */
Test(otlp_export, bad_resource_attributes_are_named, .timeout = 30)
{
	static const struct {
		const char *env, *says;
	} cases[] = {
		{ "team=llm,novalue", "'novalue' is not key=value" },
		{ "team=llm,zone=eu%zz", "bad entry 'zone'" },
		{ " =x", "bad entry ''" },
	};
	struct evr_handler h;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		setenv("OTEL_RESOURCE_ATTRIBUTES", cases[i].env, 1);
		err[0] = 0;
		cr_assert_lt(evr_handler_builtin("otlp=http://127.0.0.1:1", NULL, &h, err, sizeof(err)), 0, "'%s' accepted",
			     cases[i].env);
		cr_assert_not_null(strstr(err, cases[i].says), "'%s': %s", cases[i].env, err);
	}
	setenv("OTEL_RESOURCE_ATTRIBUTES", "team=llm, zone = eu%2Cwest", 1);
	cr_assert_eq(evr_handler_builtin("otlp=http://127.0.0.1:1", NULL, &h, err, sizeof(err)), 0, "%s", err);
	h.destroy(h.ctx);
	unsetenv("OTEL_RESOURCE_ATTRIBUTES");
}
