/*
 * cli_top.c: `evring top`, a live table refreshed each interval: per span
 * name, the rate of spans ended, p50 / p99 latency over the interval, errors
 * (dropped or abandoned spans) and output tokens per second; then the
 * records read per second and the lost, skipped and late counts; then a
 * line per process with its latest CPU %, RSS and threads (the consumer's
 * metric samples, every second).
 *
 * The aggregation is a handler like any other: it runs on its own thread and
 * hands the drawing thread its interval's samples under a mutex.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define MAX_NAMES 256
#define MAX_PROCS 64

struct top_row {
	char name[64];
	uint64_t count, errors, tokens;
	uint64_t *lat; /* durations (ns) of the spans ended this interval */
	size_t nlat, cap;
};

/* A process's latest samples, by the names below (NAN: none yet). */
static const char *const proc_metrics[] = { "process.cpu.user", "process.cpu.system", "process.memory.rss",
					    "process.threads" };
enum { PM_USER, PM_SYSTEM, PM_RSS, PM_THREADS, PM_N };

struct top_proc {
	uint32_t pid;
	char program[32];
	double v[PM_N];
};

struct top {
	pthread_mutex_t mu;
	struct top_row rows[MAX_NAMES];
	int nrows;
	uint64_t other; /* spans past MAX_NAMES distinct names */
	struct top_proc procs[MAX_PROCS];
	int nprocs;
};

static int top_metric(void *ctx, const struct evr_metric *m)
{
	struct top *t = ctx;
	struct top_proc *p = NULL;
	int k = 0;

	while (k < PM_N && strcmp(m->name, proc_metrics[k]) != 0)
		k++;
	if (!m->src || k == PM_N)
		return 0;
	pthread_mutex_lock(&t->mu);
	for (int i = 0; i < t->nprocs && !p; i++)
		if (t->procs[i].pid == m->src->pid)
			p = &t->procs[i];
	if (!p && t->nprocs < MAX_PROCS) {
		p = &t->procs[t->nprocs++];
		*p = (struct top_proc){ .pid = m->src->pid, .v = { NAN, NAN, NAN, NAN } };
		snprintf(p->program, sizeof(p->program), "%s", m->src->program ? m->src->program : "");
	}
	if (p)
		p->v[k] = m->value;
	pthread_mutex_unlock(&t->mu);
	return 0;
}

static struct top_row *row_of(struct top *t, const char *name)
{
	for (int i = 0; i < t->nrows; i++)
		if (!strcmp(t->rows[i].name, name))
			return &t->rows[i];
	if (t->nrows == MAX_NAMES)
		return NULL;
	snprintf(t->rows[t->nrows].name, sizeof(t->rows[0].name), "%s", name);
	return &t->rows[t->nrows++];
}

static uint64_t output_tokens(const struct evr_span_rec *sp)
{
	const struct evr_fields *fs[] = { sp->end_fields, sp->begin_fields };

	for (int k = 0; k < 2; k++)
		for (uint32_t i = 0; fs[k] && i < fs[k]->n; i++)
			if (!strcmp(fs[k]->f[i].name, "gen_ai.usage.output_tokens") && fs[k]->f[i].v.type == EVR_V_U64)
				return fs[k]->f[i].v.u;
	return 0;
}

static int top_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct top *t = ctx;
	const char *name = sp->site && sp->site->name ? sp->site->name : "(unknown)";
	struct top_row *r;

	if (sp->status == EVR_SPAN_OPEN || (sp->flags & EVR_SPAN_DETACHED))
		return 0; /* not ended: the consumer is detaching */
	pthread_mutex_lock(&t->mu);
	r = row_of(t, name);
	if (!r) {
		t->other++;
	} else {
		r->count++;
		r->errors += sp->status != EVR_SPAN_OK;
		r->tokens += output_tokens(sp);
		if (r->nlat == r->cap) {
			size_t cap = r->cap ? r->cap * 2 : 256;
			uint64_t *l = realloc(r->lat, cap * sizeof(*l));
			if (l) {
				r->lat = l;
				r->cap = cap;
			}
		}
		if (r->nlat < r->cap)
			r->lat[r->nlat++] = sp->end_ns > sp->start_ns ? sp->end_ns - sp->start_ns : 0;
	}
	pthread_mutex_unlock(&t->mu);
	return 0;
}

static void top_destroy(void *ctx)
{
	struct top *t = ctx;

	for (int i = 0; i < t->nrows; i++)
		free(t->rows[i].lat);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The nearest-rank percentile of sorted v[0..n). */
static double pct_ms(const uint64_t *v, size_t n, double p)
{
	size_t k;

	if (n == 0)
		return 0;
	k = (size_t)(p / 100.0 * (double)n + 0.999999);
	k = k ? k - 1 : 0;
	return (double)v[k < n ? k : n - 1] / 1e6;
}

/* A line per handler that exports (-H otlp=...): what became of what it sent, all time. */
static void draw_exports(struct evr_consumer *c)
{
	struct evr_handler_stats hs[64];
	int n = evr_consumer_handler_stats(c, hs, (int)(sizeof(hs) / sizeof(hs[0])));

	for (int i = 0; i < n; i++)
		if (strcmp(hs[i].name, "top") && (hs[i].exported || hs[i].export_retries || hs[i].export_dropped ||
						  hs[i].export_failed || !strcmp(hs[i].name, "otlp")))
			printf("%s: exported %" PRIu64 "  retried %" PRIu64 "  dropped %" PRIu64 "  failed %" PRIu64
			       "  skipped %" PRIu64 "\n",
			       hs[i].name, hs[i].exported, hs[i].export_retries, hs[i].export_dropped, hs[i].export_failed,
			       hs[i].skipped);
}

static void draw(struct top *t, struct evr_consumer *c, double secs, uint64_t prev_records, bool clear,
		 const char *target)
{
	struct evr_consumer_stats st;
	time_t now = time(NULL);
	char when[32];

	evr_consumer_stats(c, &st);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&now));
	if (clear)
		fputs("\033[H\033[2J", stdout);
	printf("evring top %s  %s  interval %.2f s\n", target, when, secs);
	printf("%-32s %10s %10s %10s %8s %10s\n", "SPAN", "RATE/S", "P50_MS", "P99_MS", "ERRORS", "TOKENS/S");
	pthread_mutex_lock(&t->mu);
	for (int i = 0; i < t->nrows; i++) {
		struct top_row *r = &t->rows[i];

		qsort(r->lat, r->nlat, sizeof(*r->lat), cmp_u64);
		printf("%-32s %10.1f %10.3f %10.3f %8" PRIu64 " %10.1f\n", r->name, (double)r->count / secs,
		       pct_ms(r->lat, r->nlat, 50), pct_ms(r->lat, r->nlat, 99), r->errors, (double)r->tokens / secs);
		r->count = r->errors = r->tokens = 0;
		r->nlat = 0;
	}
	if (t->other)
		printf("(%" PRIu64 " spans of further names not shown)\n", t->other);
	t->other = 0;
	if (t->nprocs)
		printf("%-8s %-24s %8s %10s %8s\n", "PID", "PROGRAM", "CPU%", "RSS_MIB", "THREADS");
	for (int i = 0; i < t->nprocs; i++) {
		const struct top_proc *p = &t->procs[i];

		printf("%-8" PRIu32 " %-24s %8.1f %10.1f %8.0f\n", p->pid, p->program, p->v[PM_USER] + p->v[PM_SYSTEM],
		       p->v[PM_RSS] / 1048576.0, p->v[PM_THREADS]);
	}
	pthread_mutex_unlock(&t->mu);
	printf("records/s %.1f  lost %" PRIu64 "  skipped %" PRIu64 "  late %" PRIu64 "  bad %" PRIu64
	       "  open spans %" PRIu64 "  handler timeouts %" PRIu64 "\n",
	       (double)(st.records - prev_records) / secs, st.lost, st.handler_skipped + st.ring_skipped, st.late,
	       st.bad, st.open_spans, st.handler_timeouts);
	draw_exports(c);
	fflush(stdout);
}

static void top_usage(FILE *f)
{
	fprintf(f, "usage: evring top PID|NAME... [--once] [--interval-ms N] [--duration S] [-H SPEC]...\n"
		   "  A live table, refreshed each interval (default 1000 ms): per span name, spans ended\n"
		   "  per second, p50 / p99 latency in ms over the interval, errors (dropped or abandoned\n"
		   "  spans), output tokens per second; then records read per second and the lost,\n"
		   "  skipped, late and bad counts; then per process its latest CPU %% (user + system, of\n"
		   "  one CPU), RSS in MiB and threads, sampled every second. Takes a consumer slot, like attach.\n"
		   "  --once           print one frame after one interval and exit (for scripts)\n"
		   "  --interval-ms N  refresh every N ms, 10 to 3600000 (default 1000)\n"
		   "  --duration S     stop after S seconds (fractions allowed)\n"
		   "  -H, --handler SPEC  a handler run beside the table, as attach's (otlp=URL: a line\n"
		   "                   per frame says what it exported, retried, dropped and failed)\n"
		   "examples:\n"
		   "  evring top 1234                    a live view of one process\n"
		   "  evring top my-server               every my-server process, merged\n"
		   "  evring top 1234 --once > frame.txt one frame, for a script\n"
		   "  evring top my-server -H otlp=http://127.0.0.1:4318  watch, and send to a Collector\n");
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int evr_cmd_top(int argc, char **argv)
{
	enum { OPT_INTERVAL = 256, OPT_DURATION };
	static const struct option opts[] = { { "once", no_argument, NULL, '1' },
					      { "interval-ms", required_argument, NULL, OPT_INTERVAL },
					      { "duration", required_argument, NULL, OPT_DURATION },
					      { "handler", required_argument, NULL, 'H' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	uint64_t interval_ns = 1000000000ull, duration_ns = 0, v, start, records = 0;
	bool once = false, clear = isatty(STDOUT_FILENO);
	struct evr_handler h = { .name = "top", .on_span_end = top_span_end, .on_metric = top_metric,
				 .destroy = top_destroy };
	struct evr_consumer *c;
	struct top *t;
	static volatile int stop; /* static: a signal handler may still write it after the loop */
	char err[512] = "";
	const char *specs[16];
	int ch, status = EVR_EXIT_OK, nspecs = 0;

	optind = 0; /* a full reset of getopt, as for a new program */
	while ((ch = evr_cli_getopt("top", argc, argv, "hH:", opts)) != -1) {
		if (ch == '1')
			once = true;
		else if (ch == 'H') {
			if (nspecs == (int)(sizeof(specs) / sizeof(specs[0])))
				return evr_cli_fail("top", EVR_EXIT_USAGE, "at most %d handlers",
						    (int)(sizeof(specs) / sizeof(specs[0])));
			specs[nspecs++] = optarg;
		}
		else if (ch == OPT_INTERVAL) {
			if (!evr_cli_uint(optarg, 3600000, &v) || v < 10)
				return evr_cli_fail("top", EVR_EXIT_USAGE, "--interval-ms wants 10..3600000, not '%s'",
						    optarg);
			interval_ns = v * 1000000;
		} else if (ch == OPT_DURATION) {
			if (!evr_cli_seconds(optarg, &duration_ns) || !duration_ns)
				return evr_cli_fail("top", EVR_EXIT_USAGE,
						    "--duration wants seconds, more than 0 and at most 1e9, not '%s'", optarg);
		} else if (ch == 'h') {
			top_usage(stdout);
			return EVR_EXIT_OK;
		} else {
			return EVR_EXIT_USAGE;
		}
	}
	if (optind == argc)
		return evr_cli_fail("top", EVR_EXIT_USAGE, "wants a PID or NAME (try evring top --help)");
	if (!(c = evr_consumer_new(NULL, err, sizeof(err))))
		return evr_cli_fail("top", EVR_EXIT_FAIL, "%s", err);
	if (!(t = calloc(1, sizeof(*t)))) {
		evr_consumer_close(c);
		return evr_cli_fail("top", EVR_EXIT_FAIL, "out of memory");
	}
	pthread_mutex_init(&t->mu, NULL);
	h.ctx = t;
	for (int i = optind; i < argc && !status; i++)
		status = evr_cli_attach("top", c, argv[i], 0);
	for (int i = 0; i < nspecs && !status; i++)
		if (evr_cli_add_handler(c, specs[i], stdout, err, sizeof(err)) < 0)
			status = evr_cli_fail("top", EVR_EXIT_USAGE, "%s", err);
	if (!status && evr_consumer_add_handler(c, &h) < 0) {
		top_destroy(t);
		status = evr_cli_fail("top", EVR_EXIT_FAIL, "cannot start the top handler");
	} else if (status) {
		top_destroy(t);
	}
	if (status) {
		evr_consumer_close(c);
		return status;
	}
	evr_cli_signals(&stop, c);
	start = mono_ns();
	while (!stop) {
		uint64_t t0 = mono_ns();
		struct evr_consumer_stats st;
		int rc = evr_consumer_run(c, interval_ns, &stop);

		if (rc < 0) {
			status = evr_cli_fail("top", EVR_EXIT_FAIL, "%s", strerror(-rc));
			break;
		}
		evr_consumer_sync(c); /* the handler has taken everything this interval delivered */
		draw(t, c, (double)(mono_ns() - t0) / 1e9, records, clear, argv[optind]);
		evr_consumer_stats(c, &st);
		records = st.records;
		if (once || (duration_ns && mono_ns() - start >= duration_ns) || mono_ns() - t0 < interval_ns / 2)
			break; /* once; the duration ran out; or run returned early: every process exited */
	}
	evr_cli_signals(NULL, NULL);
	evr_consumer_close(c);
	return status;
}
