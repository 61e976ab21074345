/*
 * bench_agent.c: `evring-bench agent`, what `evring agent` costs and how
 * soon it follows a new process.
 *
 *   attach_latency  a new process's segment created -> its first record
 *                   delivered to a handler, in ms: p50 (the row's median)
 *                   and p99 over the processes of every run. Each process
 *                   (forked here) takes CLOCK_REALTIME, opens its segment and
 *                   at once writes a root span carrying that time; the
 *                   agent's jsonl handler writes a root span's line and
 *                   flushes it at once, into a FIFO this process reads: the
 *                   line's arrival less the time it carries.
 *   cpu_per_mrec    the agent's CPU-seconds (user + system, from wait4) per
 *                   million records read, while 4 processes write 250000
 *                   events each (--quick: 50000) with a stats handler.
 *
 * A producer's event3 time with 0, 1 and 2 consumers attached is
 * `evring-bench latency`'s (latency_absent, latency_attached,
 * latency_two_attached), where the hot path is timed call by call. Nothing
 * here is judged: the figures are printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <evring/evring.h>

#include "bench.h"

#ifndef EVR_BENCH_CLI
#define EVR_BENCH_CLI "evring"
#endif

#define LAT_MAX 4096

struct agent_bench {
	char dir[64];
	double lat[LAT_MAX];
	unsigned nlat;
	double cpu[BENCH_RUNS_MAX];
	unsigned ncpu;
	uint64_t records;
	unsigned procs; /* processes per latency run */
};

static struct agent_bench ab;

static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void agent_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench agent [--json] [--runs N] [--quick]\n"
		   "  How soon `evring agent` delivers a new process's first record (p50, p99 in ms),\n"
		   "  and its CPU-seconds per million records read.\n");
	bench_opts_usage(f);
}

/* `evring agent` following bench processes (program evrbench-agent-<pid>*), with these handlers. */
static pid_t agent_start(const char *h1, const char *h2, const char *log)
{
	char prog[64], status[128];
	pid_t pid;

	snprintf(prog, sizeof(prog), "evrbench-agent-%d*", (int)getpid());
	snprintf(status, sizeof(status), "%s/status", ab.dir);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		int e = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600), o = open("/dev/null", O_WRONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(o, 1);
		dup2(e, 2);
		execlp(EVR_BENCH_CLI, "evring", "agent", "--program", prog, "--status-file", status, "-H", h1,
		       h2 ? "-H" : NULL, h2, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* A process named evrbench-agent-<pid>-<k>: opens its segment, writes a root span carrying when, then `events` events. */
static pid_t producer(int k, long events)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		char name[64];
		struct evr_config cfg = { .name = name };
		uint64_t t0;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(name, sizeof(name), "evrbench-agent-%d-%d", (int)getppid(), k);
		program_invocation_short_name = name; /* the header's program: what the agent's filter matches */
		t0 = real_ns();
		if (evr_open(&cfg) != 0)
			_exit(1);
		struct evr_span sp = EVR_SPAN_BEGIN("bench", "first", EVR_U64("t0", t0));
		EVR_SPAN_END(sp);
		for (long i = 0; i < events; i++) {
			EVR_EVENT("bench", "tick", EVR_U64("i", (uint64_t)i));
			if ((i & 1023) == 1023)
				usleep(4000); /* paced: about 250000 a second each, so the lanes do not overflow */
		}
		usleep(100000);
		exit(0); /* its exit handlers remove the segment */
	}
	return pid;
}

static int agent_setup(struct bench_sub *s, void *ctx)
{
	(void)ctx;
	bench_machine_read(&s->m);
	snprintf(ab.dir, sizeof(ab.dir), "/tmp/evring-bench-agent.XXXXXX");
	if (!mkdtemp(ab.dir)) {
		fprintf(stderr, "evring-bench agent: mkdtemp: %s\n", strerror(errno));
		return 1;
	}
	ab.procs = s->o.quick ? 10 : 40;
	return -1;
}

/* One latency run: ab.procs processes, one every 50 ms; each first line's arrival less its t0. */
static bool latency_run(void)
{
	char fifo[128], log[128], spec[160], line[4096];
	unsigned got = 0;
	pid_t agent;
	FILE *in;

	snprintf(fifo, sizeof(fifo), "%s/lines", ab.dir);
	snprintf(log, sizeof(log), "%s/agent.log", ab.dir);
	unlink(fifo);
	if (mkfifo(fifo, 0600) != 0)
		return false;
	snprintf(spec, sizeof(spec), "jsonl=%s", fifo);
	agent = agent_start(spec, NULL, log);
	if (!(in = fopen(fifo, "r"))) { /* blocks until the agent opens its side */
		kill(agent, SIGKILL);
		waitpid(agent, NULL, 0);
		return false;
	}
	usleep(200000); /* the agent's first scan is done */
	for (unsigned k = 0; k < ab.procs; k++) {
		pid_t p = producer((int)k, 0);

		while (got <= k && fgets(line, sizeof(line), in)) {
			uint64_t now = real_ns();
			const char *t = strstr(line, "\"t0\":");

			if (!t || !strstr(line, "\"kind\":\"span\""))
				continue;
			if (ab.nlat < LAT_MAX)
				ab.lat[ab.nlat++] = (double)(now - strtoull(t + 5, NULL, 10)) / 1e6;
			got++;
		}
		waitpid(p, NULL, 0);
		usleep(50000);
	}
	kill(agent, SIGTERM);
	fclose(in);
	waitpid(agent, NULL, 0);
	return got == ab.procs;
}

/* One CPU run: 4 processes of `events` each, the agent with stats; its CPU from wait4, its records from the status. */
static bool cpu_run(long events)
{
	char log[128], status[128], line[256];
	struct rusage ru;
	uint64_t records = 0;
	pid_t agent, p[4];
	FILE *f;

	snprintf(log, sizeof(log), "%s/agent.log", ab.dir);
	snprintf(status, sizeof(status), "%s/status", ab.dir);
	agent = agent_start("stats", NULL, log);
	usleep(200000);
	for (int k = 0; k < 4; k++)
		p[k] = producer(100 + k, events);
	for (int k = 0; k < 4; k++)
		waitpid(p[k], NULL, 0);
	usleep(300000);
	kill(agent, SIGTERM);
	if (wait4(agent, NULL, 0, &ru) != agent)
		return false;
	if ((f = fopen(status, "r"))) {
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "records ", 8))
				records = strtoull(line + 8, NULL, 10);
		fclose(f);
	}
	if (!records)
		return false;
	ab.records = records;
	ab.cpu[ab.ncpu++] = ((double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6) /
			    ((double)records / 1e6);
	return true;
}

static int agent_runs(struct bench_sub *s, void *ctx)
{
	unsigned runs = s->o.runs ? s->o.runs : (s->o.quick ? 1 : 3);

	(void)ctx;
	if (runs > BENCH_RUNS_MAX)
		runs = BENCH_RUNS_MAX;
	for (unsigned r = 0; r < runs; r++) {
		if (!latency_run()) {
			fprintf(stderr, "evring-bench agent: a new process's first record never arrived (is %s built?)\n",
				EVR_BENCH_CLI);
			return 1;
		}
		if (!cpu_run(s->o.quick ? 50000 : 250000)) {
			fprintf(stderr, "evring-bench agent: the CPU run failed\n");
			return 1;
		}
	}
	return -1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void agent_report(struct bench_sub *s, void *ctx)
{
	struct bench_result *r;
	double sorted[LAT_MAX];

	(void)ctx;
	bench_table_column(&s->t, "p99", 2);
	bench_table_column(&s->t, "records", 0);
	memcpy(sorted, ab.lat, ab.nlat * sizeof(double));
	qsort(sorted, ab.nlat, sizeof(double), cmp_double);
	if ((r = bench_table_add(&s->t, "attach_latency", "agent", 1, "ms", ab.lat, ab.nlat)) && ab.nlat)
		bench_result_set(r, "p99", sorted[(size_t)((ab.nlat - 1) * 0.99 + 0.5)]);
	if ((r = bench_table_add(&s->t, "cpu_per_mrec", "agent", 1, "s/Mrec", ab.cpu, ab.ncpu)))
		bench_result_set_int(r, "records", ab.records);
	bench_table_note(&s->t, "attach_latency: segment created -> first record delivered (jsonl line read), %u "
				"processes; median is p50",
			 ab.nlat);
	bench_table_note(&s->t, "cpu_per_mrec: the agent's user+system CPU-s per million records read (4 processes, "
				"stats handler), start-up included");
	bench_table_note(&s->t, "a producer's event3 time with 0/1/2 consumers: evring-bench latency (latency_absent, "
				"latency_attached, latency_two_attached)");
}

static void agent_teardown(struct bench_sub *s, void *ctx, int status)
{
	char cmd[128];

	(void)s;
	(void)ctx;
	(void)status;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", ab.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "evring-bench agent: could not remove %s\n", ab.dir);
}

static const struct bench_stages agent_stages = {
	.usage = agent_usage,
	.setup = agent_setup,
	.run = agent_runs,
	.report = agent_report,
	.teardown = agent_teardown,
};

int bench_agent_main(int argc, char **argv)
{
	return bench_sub_main(&agent_stages, &ab, argc, argv);
}
