/*
 * bench_stdio.c: `evring-bench stdio`, what the stdio tee (EVRING_CAPTURE_STDIO=1)
 * adds to an application's write(1, line, 100): ns per write, median over
 * runs, with the tee off and on, and their ratio, measured in the same run.
 *
 *   off   fd 1 is /dev/null: the write system call alone
 *   on    fd 1 is the tee's pipe, its original /dev/null: the write into the
 *         pipe, while evring's thread reads it, sends it on to /dev/null and
 *         writes each line into the ring (a 1 MiB lane that no consumer
 *         drains: after it fills, each line is a counted drop)
 *
 * Each case runs in a forked child of its own (the tee replaces the
 * process's fd 1), which times --records writes (default 200000) per run
 * and reports ns per write. The application's write waits only when the
 * pipe is full, so `on` also tells how far the tee thread keeps up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <evring/evring.h>

#include "bench.h"

#define STDIO_WRITES 200000u

/* In the child: times runs x n writes of a 100-byte line to fd 1; ns per write to out[]. */
static int stdio_child(bool tee, unsigned runs, uint64_t n, int report)
{
	struct evr_config cfg = { .name = "bench_stdio", .lane_bytes = 1 << 20, .capture_content = 0 };
	char line[100];
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\n';
	if (null < 0 || dup2(null, 1) < 0)
		return 2;
	unsetenv("EVRING");
	if (tee)
		setenv("EVRING_CAPTURE_STDIO", "1", 1);
	else
		unsetenv("EVRING_CAPTURE_STDIO");
	if (evr_open(&cfg) != 0)
		return 3;
	for (unsigned r = 0; r < runs; r++) {
		uint64_t t0 = bench_now_ns(), t1;
		double ns;

		for (uint64_t i = 0; i < n; i++)
			if (write(1, line, sizeof(line)) != (ssize_t)sizeof(line))
				return 4;
		t1 = bench_now_ns();
		ns = (double)(t1 - t0) / (double)n;
		if (write(report, &ns, sizeof(ns)) != sizeof(ns))
			return 5;
	}
	evr_close();
	return 0;
}

/* Runs one case in a child; its per-run figures into v[]. Returns 0 or -1 after a message. */
static int stdio_case(bool tee, unsigned runs, uint64_t n, double *v)
{
	int p[2], status;
	pid_t pid;

	if (pipe(p) != 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(p[0]);
		_exit(stdio_child(tee, runs, n, p[1]));
	}
	close(p[1]);
	for (unsigned r = 0; r < runs; r++)
		if (read(p[0], &v[r], sizeof(v[r])) != sizeof(v[r])) {
			fprintf(stderr, "evring-bench stdio: the %s child reported %u runs of %u\n", tee ? "tee" : "plain",
				r, runs);
			close(p[0]);
			waitpid(pid, &status, 0);
			return -1;
		}
	close(p[0]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "evring-bench stdio: the %s child failed (status %d)\n", tee ? "tee" : "plain", status);
		return -1;
	}
	return 0;
}

static void stdio_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench stdio [options]\n\n"
		   "ns per write(1, line, 100) with the stdio tee off and on (EVRING_CAPTURE_STDIO=1), fd 1\n"
		   "/dev/null, medians over runs, and their ratio.\n\n");
	bench_opts_usage(f);
}

int bench_stdio_main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_stats off, on;
	double *v;
	uint64_t n;
	int rc = bench_args(&o, argc, argv, NULL, 0, stdio_usage);

	if (rc >= 0)
		return rc;
	n = o.records ? o.records : o.quick ? STDIO_WRITES / 10 : STDIO_WRITES;
	v = calloc(o.runs, sizeof(*v));
	if (!v)
		return 1;
	if (stdio_case(false, o.runs, n, v) != 0)
		goto fail;
	bench_stats_of(&off, v, o.runs);
	if (stdio_case(true, o.runs, n, v) != 0)
		goto fail;
	bench_stats_of(&on, v, o.runs);
	free(v);
	if (o.json) {
		printf("{\"bench\":\"stdio\",\"writes\":%llu,\"runs\":%u,\"off_ns\":%.1f,\"on_ns\":%.1f,"
		       "\"on_min_ns\":%.1f,\"on_max_ns\":%.1f,\"ratio\":%.2f}\n",
		       (unsigned long long)n, o.runs, off.median, on.median, on.min, on.max, on.median / off.median);
		return 0;
	}
	printf("write(1, line, 100): %llu writes per run, %u runs, medians\n", (unsigned long long)n, o.runs);
	printf("  tee off (fd 1 /dev/null)              %8.1f ns  (min %.1f, max %.1f)\n", off.median, off.min, off.max);
	printf("  tee on  (pipe, thread, ring event)    %8.1f ns  (min %.1f, max %.1f)\n", on.median, on.min, on.max);
	printf("  ratio on / off                        %8.2f\n", on.median / off.median);
	return 0;
fail:
	free(v);
	return 1;
}
