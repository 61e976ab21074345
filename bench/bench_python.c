/*
 * bench_python.c: `evring-bench python`, evring from Python: ns per
 * evring.event with 3 fields (int, float, str) and per span pair (`with
 * evring.span(...)`), against Python's logging to a file and a json.dumps
 * line to a file, with an empty Python function call as the floor and the
 * same calls with EVRING=off, all measured in the same run.
 *
 * The measuring is bench/bench_python.py's, run with the build's interpreter
 * (EVR_BENCH_PYTHON) and package (EVR_BENCH_PYTHONPATH) as
 * `bench_python.py --samples --runs N --calls M`: one line per case, its
 * name and one ns-per-call figure per run. This file turns them into the
 * suite's rows, ratios and target verdicts, so that `evring-bench all`
 * (and `make bench`) carries them.
 *
 * Targets (issue 17): event <= 300 ns, span pair <= 700 ns, and logging at
 * least 10x slower than an event.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#ifndef EVR_BENCH_PYTHON
#define EVR_BENCH_PYTHON "python3"
#endif
#ifndef EVR_BENCH_PY_PRELOAD
#define EVR_BENCH_PY_PRELOAD "" /* the ASan build's: the sanitizer runtimes, ahead of the interpreter */
#endif
#ifndef EVR_BENCH_PYTHONPATH
#define EVR_BENCH_PYTHONPATH ""
#endif
#ifndef EVR_BENCH_PYTHON_SCRIPT
#define EVR_BENCH_PYTHON_SCRIPT "bench/bench_python.py"
#endif

#define PY_CALLS 200000u
#define PY_CASES 7

/* The script's cases: its name for each, and the row it becomes. */
static const struct {
	const char *key, *bench, *system;
} py_cases[PY_CASES] = {
	{ "event", "py_event3", "evring" },	  { "span", "py_span", "evring" },
	{ "event_off", "py_event3", "evring_off" }, { "span_off", "py_span", "evring_off" },
	{ "logging", "py_event3", "logging" },	  { "json", "py_event3", "json_dumps" },
	{ "floor", "py_call", "python" },
};

struct py_bench {
	double *v[PY_CASES];
	unsigned n[PY_CASES];
	unsigned runs;
	uint64_t calls;
};

static struct py_bench pb;

static void py_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench python [options]\n\n"
		   "ns per evring.event (3 fields: int, float, str) and per span pair from Python, against\n"
		   "logging.info to a file and a json.dumps line to a file, with an empty function call as the\n"
		   "floor and EVRING=off, medians over runs, in one run of %s\n"
		   "with %s. No consumer attached.\n\n",
		EVR_BENCH_PYTHON_SCRIPT, EVR_BENCH_PYTHON);
	bench_opts_usage(f);
}

static int py_setup(struct bench_sub *s, void *ctx)
{
	(void)ctx;
	bench_machine_read(&s->m);
	pb.runs = s->o.runs < 5 ? 5 : s->o.runs;
	pb.calls = s->o.records ? s->o.records : s->o.quick ? PY_CALLS / 4 : PY_CALLS;
	for (unsigned c = 0; c < PY_CASES; c++) {
		pb.v[c] = calloc(pb.runs, sizeof(double));
		if (!pb.v[c])
			return 1;
	}
	return -1;
}

/* Reads one "name v1 v2 ..." line into its case. */
static void py_line(char *line)
{
	char *save = NULL, *tok = strtok_r(line, " \n", &save);

	if (!tok)
		return;
	for (unsigned c = 0; c < PY_CASES; c++) {
		if (strcmp(tok, py_cases[c].key) != 0)
			continue;
		while ((tok = strtok_r(NULL, " \n", &save)) && pb.n[c] < pb.runs)
			pb.v[c][pb.n[c]++] = strtod(tok, NULL);
		return;
	}
}

static int py_run(struct bench_sub *s, void *ctx)
{
	char runs[16], calls[32], line[65536];
	int p[2], st;
	FILE *f;
	pid_t pid;

	(void)s, (void)ctx;
	snprintf(runs, sizeof(runs), "%u", pb.runs);
	snprintf(calls, sizeof(calls), "%llu", (unsigned long long)pb.calls);
	if (pipe(p) != 0)
		return 1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		if (EVR_BENCH_PYTHONPATH[0])
			setenv("PYTHONPATH", EVR_BENCH_PYTHONPATH, 1);
		unsetenv("EVRING");
		if (EVR_BENCH_PY_PRELOAD[0]) {
			setenv("LD_PRELOAD", EVR_BENCH_PY_PRELOAD, 1);
			setenv("ASAN_OPTIONS", "detect_leaks=0", 1); /* the interpreter's own allocations live to its exit */
		}
		execlp(EVR_BENCH_PYTHON, EVR_BENCH_PYTHON, EVR_BENCH_PYTHON_SCRIPT, "--samples", "--runs", runs,
		       "--calls", calls, (char *)NULL);
		fprintf(stderr, "evring-bench python: cannot run %s: %m\n", EVR_BENCH_PYTHON);
		_exit(127);
	}
	close(p[1]);
	f = fdopen(p[0], "r");
	while (f && fgets(line, sizeof(line), f))
		py_line(line);
	if (f)
		fclose(f);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "evring-bench python: %s failed (status %d)\n", EVR_BENCH_PYTHON_SCRIPT, st);
		return 1;
	}
	for (unsigned c = 0; c < PY_CASES; c++)
		if (pb.n[c] != pb.runs) {
			fprintf(stderr, "evring-bench python: %u runs of %s, %u asked for\n", pb.n[c], py_cases[c].key,
				pb.runs);
			return 1;
		}
	return -1;
}

/* Every row's ratio: its median over evring's of the same bench (logging / evring.event: "x_evring"). */
static const struct bench_result *py_base(const struct bench_table *t, const struct bench_result *r)
{
	return bench_table_find(t, r->bench, "evring", 1);
}

static void py_report(struct bench_sub *s, void *ctx)
{
	const struct bench_result *ev, *sp, *lg;

	(void)ctx;
	bench_table_column(&s->t, "x_evring", 2);
	for (unsigned c = 0; c < PY_CASES; c++)
		bench_table_add(&s->t, py_cases[c].bench, py_cases[c].system, 1, "ns", pb.v[c], pb.n[c]);
	bench_table_ratio(&s->t, "x_evring", py_base);
	ev = bench_table_find(&s->t, "py_event3", "evring", 1);
	sp = bench_table_find(&s->t, "py_span", "evring", 1);
	lg = bench_table_find(&s->t, "py_event3", "logging", 1);
	bench_table_note(&s->t, "%llu calls a run; no consumer attached (a fresh segment, its pages faulted in, "
				"before each evring run); interpreter %s",
			 (unsigned long long)pb.calls, EVR_BENCH_PYTHON);
	if (ev && sp && lg)
		bench_table_note(&s->t,
				 "target: event <= 300 ns %s (%.0f), span pair <= 700 ns %s (%.0f), >= 10x "
				 "faster than logging %s (%.1fx)",
				 bench_verdict(ev->st.median <= 300), ev->st.median, bench_verdict(sp->st.median <= 700),
				 sp->st.median, bench_verdict(lg->st.median >= 10 * ev->st.median),
				 lg->st.median / ev->st.median);
}

static void py_teardown(struct bench_sub *s, void *ctx, int status)
{
	(void)s, (void)ctx, (void)status;
	for (unsigned c = 0; c < PY_CASES; c++)
		free(pb.v[c]);
}

static const struct bench_stages py_stages = {
	.usage = py_usage,
	.setup = py_setup,
	.run = py_run,
	.report = py_report,
	.teardown = py_teardown,
};

int bench_python_main(int argc, char **argv)
{
	return bench_sub_main(&py_stages, &pb, argc, argv);
}
