/*
 * bench_all.c: `evring-bench all`, the whole suite in one command, and the
 * results writer:
 *
 *   evring-bench all [--quick] [--runs N] [--out DIR] [--json FILE] [--md FILE]
 *                    [--only NAME,...] [--no-lttng] [--plot FILE]
 *
 * runs every benchmark below, each as `evring-bench <name> --json` in a
 * child process of its own (forked while this process has no other thread),
 * so that each starts from a clean process: its own segment, its own LTTng
 * registration, no pages or caches left by the one before. The child hands
 * its table back through a pipe (bench_capture, bench.h); its JSON goes to
 * /dev/null, its messages to stderr.
 *
 *   producer  hot path, ns per call, 1 and 2 threads, against its peers
 *   ring      the ring's write path alone
 *   loss      the loss sweep: records lost at offered rates from 1 M/s to full
 *             speed, per system; each system's lossless rate
 *   latency   hot-path latency percentiles: consumer attached, stopped, absent
 *   consumer  consumer throughput, one CPU
 *   demo      evring-demo's requests per second: tracing off, on, consumed
 *   otlp      the otlp handler: spans per CPU-second mapped, encoded and sent
 *   agent     evring agent: attach latency, CPU per million records
 *   raw       `evring record --raw`'s drain rate, one CPU, against memcpy
 *   python    evring.event and span pairs from Python, against logging and json.dumps
 *
 * Then it writes, with --out DIR, DIR/latest.json (every row, the shape of
 * bench.h, every note prefixed by its benchmark), DIR/latest.md (a table per
 * benchmark under the machine it ran on, the command and the targets: what
 * the README quotes) and DIR/latest.png (bench/plot.gp over DIR/latest.dat,
 * when gnuplot is installed). --json / --md write those two elsewhere ("-":
 * stdout); without --out, --json or --md the Markdown goes to stdout.
 *
 * --quick passes --quick and (unless --runs says otherwise) --runs 5 to each
 * benchmark: every figure stays a median over 5 runs, of shorter runs. A
 * benchmark that fails, or runs past its time limit (300 s, 60 s with
 * --quick; the loss sweep 900 s and 150 s), is reported in the notes; the
 * others still run. The exit status is 1 when one failed, 0 otherwise:
 * timings never fail the suite.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <libgen.h>
#include <unistd.h>

#include "bench.h"

#define ALL_LIMIT_S 300u
#define ALL_LIMIT_QUICK_S 60u
/*
 * The suite's budget: 10 minutes for the rest, plus 5 for the loss sweep
 * (4 systems x 7 steps x 3 runs of 5 s, and each run's consumer or LTTng
 * session started and stopped: about 8 minutes with every system there).
 */
#define ALL_BUDGET_S 900.0
#define ALL_BUDGET_QUICK_S 90.0

struct all_section {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *title;
	const char *hide; /* extra columns left out of the Markdown table, comma-separated */
	bool lttng;	  /* takes --no-lttng */
	unsigned limit_s, limit_quick_s; /* its time limit; 0: ALL_LIMIT_S, ALL_LIMIT_QUICK_S */
	void (*md)(FILE *f, const struct bench_table *t); /* its own Markdown tables; NULL: one row a line */
};

static void md_loss(FILE *f, const struct bench_table *t);

/* In the order they run; the chart reads four of them by index. */
enum { SEC_PRODUCER, SEC_RING, SEC_LOSS, SEC_LATENCY, SEC_CONSUMER, SEC_DEMO };

static const struct all_section sections[] = {
	{ .name = "producer", .fn = bench_producer_main, .title = "Hot path: ns per call", .hide = ",calls,dropped,",
	  .lttng = true },
	{ .name = "ring", .fn = bench_ring_main, .title = "Ring write path: ns per record", .hide = ",records,dropped," },
	{ .name = "loss", .fn = bench_loss_main, .title = "Loss sweep: records lost by offered rate, consumer attached",
	  .hide = ",", .lttng = true, .limit_s = 900, .limit_quick_s = 150, .md = md_loss },
	{ .name = "latency", .fn = bench_latency_main,
	  .title = "Never blocks: hot-path latency, consumer attached, stopped, absent", .hide = "," },
	{ .name = "consumer", .fn = bench_consumer_main, .title = "Consumer throughput, one core",
	  .hide = ",d_cpu,h_cpu,lag_ms,queue,tail_cpu," },
	{ .name = "demo", .fn = bench_demo_main, .title = "Real overhead: evring-demo", .hide = "," },
	{ .name = "otlp", .fn = bench_otlp_main, .title = "OTLP export: spans per CPU-second, one core", .hide = "," },
	{ .name = "agent", .fn = bench_agent_main, .title = "evring agent: attach latency, CPU per million records",
	  .hide = "," },
	{ .name = "raw", .fn = bench_raw_main,
	  .title = "Raw capture: records per second `evring record --raw` drains, one core", .hide = "," },
	{ .name = "python", .fn = bench_python_main,
	  .title = "Python: ns per call, against logging and json.dumps to a file", .hide = "," },
};
#define ALL_NSECTIONS (sizeof(sections) / sizeof(sections[0]))

struct all_result {
	struct bench_table t; /* the section's rows and notes */
	bool ran;
	int status;	      /* exit status, or -1: killed, -2: did not start */
	double seconds;
};

/* ---- running one benchmark ------------------------------------------- */

/*
 * Runs a section in a child: its main with argv, stdout to /dev/null, the
 * table through a pipe into r->t. Returns its exit status as r->status.
 */
static void all_run(const struct all_section *s, char **argv, int argc, unsigned limit_s, struct all_result *r)
{
	uint64_t t0 = bench_now_ns(), deadline = t0 + (uint64_t)limit_s * 1000000000u;
	char buf[8192], line[8192];
	size_t have = 0;
	int pfd[2], st;
	bool killed = false;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	r->ran = true;
	r->status = -2;
	fflush(stdout);
	fflush(stderr);
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return;
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		close(pfd[0]);
		setpgid(0, 0); /* its own group: a limit stops it and every process it started */
		if (devnull >= 0)
			dup2(devnull, 1);
		bench_capture = fdopen(pfd[1], "w");
		exit(s->fn(argc, argv));
	}
	setpgid(pid, pid);
	close(pfd[1]);
	for (;;) {
		struct pollfd p = { pfd[0], POLLIN, 0 };
		uint64_t now = bench_now_ns();
		ssize_t n;
		char *nl;

		if (now >= deadline) {
			killed = true;
			kill(-pid, SIGKILL);
			break;
		}
		if (poll(&p, 1, (int)((deadline - now) / 1000000u) + 1) <= 0)
			continue;
		n = read(pfd[0], buf + have, sizeof(buf) - have - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		while ((nl = memchr(buf, '\n', have)) != NULL) {
			size_t len = (size_t)(nl - buf);

			memcpy(line, buf, len);
			line[len] = '\0';
			bench_capture_read(&r->t, line);
			memmove(buf, nl + 1, have - len - 1);
			have -= len + 1;
		}
		if (have == sizeof(buf) - 1)
			have = 0; /* a line longer than any the capture writes: drop it */
	}
	close(pfd[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (killed)
		kill(-pid, SIGKILL); /* what it left behind */
	r->seconds = (double)(bench_now_ns() - t0) / 1e9;
	r->status = killed ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	if (killed)
		bench_table_note(&r->t, "stopped: ran past its limit of %u s", limit_s);
	else if (!WIFEXITED(st))
		bench_table_note(&r->t, "ended by signal %d", WTERMSIG(st));
}

/* ---- Markdown --------------------------------------------------------- */

/* A number with about three significant digits. */
static void md_num(FILE *f, double v)
{
	double a = fabs(v);

	if (!isfinite(v))
		fputs("-", f);
	else if (a >= 1e6)
		fprintf(f, "%.3g", v);
	else if (a >= 100)
		fprintf(f, "%.0f", v);
	else if (a >= 10)
		fprintf(f, "%.1f", v);
	else if (a >= 1)
		fprintf(f, "%.2f", v);
	else
		fprintf(f, "%.3f", v);
}

static const struct bench_extra *extra_of(const struct bench_result *r, const char *key)
{
	for (unsigned i = 0; i < r->nextra; i++)
		if (!strcmp(r->extra[i].key, key))
			return &r->extra[i];
	return NULL;
}

/* What the Markdown calls an extra column. */
static const char *md_col(const char *key)
{
	static const struct {
		const char *key, *title;
	} names[] = {
		{ "ratio", "ratio" },	    { "scaling", "2-thr scaling" }, { "p50", "p50 ns" },
		{ "p99", "p99 ns" },	    { "p999", "p99.9 ns" },	    { "dropped", "dropped %" },
		{ "p99_ratio", "p99 / attached" }, { "mrate", "achieved Mrec/s" }, { "lost_runs", "runs with loss" },
		{ "offered", "offered Mrec/s" }, { "reached", "reached" }, { "buf_mib", "buffer MiB" },
		{ "at_least", "at least" },
		{ "ns_rec", "ns/rec" },	    { "skipped", "skipped" },	    { "vs_off", "vs off" },
		{ "overhead", "overhead %" }, { "lost", "lost %" },	    { "cons_cpu", "consumer CPU-s/s" },
		{ "vs_stats", "vs stats" },   { "wall", "wall kspan/s" },   { "us_span", "CPU us/span" },
		{ "map_cpu", "mapping share" }, { "B_span", "bytes/span" },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(names[i].key, key))
			return names[i].title;
	return key;
}

static bool hidden(const struct all_section *s, const char *key)
{
	char pat[BENCH_KEY_MAX + 3];

	snprintf(pat, sizeof(pat), ",%s,", key);
	return strstr(s->hide, pat) != NULL;
}

/* Whether a column is one of the latency table's own (p50, p99, p999): printed first, not among the extras. */
static bool md_latency_col(const char *key)
{
	return !strcmp(key, "p50") || !strcmp(key, "p99") || !strcmp(key, "p999");
}

/*
 * The extra columns a section's rows have, in the order first seen, those it
 * hides left out, into cols (at most max); *latency: whether they are
 * latency rows (a p50 column). Returns how many.
 */
static unsigned md_columns(const struct all_section *s, const struct bench_table *t, char (*cols)[BENCH_KEY_MAX],
			   unsigned max, bool *latency)
{
	unsigned ncols = 0;

	*latency = false;
	for (size_t i = 0; i < t->n; i++)
		for (unsigned k = 0; k < t->rows[i].nextra; k++) {
			const char *key = t->rows[i].extra[k].key;
			bool seen = false;

			if (hidden(s, key))
				continue;
			*latency |= !strcmp(key, "p50");
			for (unsigned c = 0; c < ncols; c++)
				seen |= !strcmp(cols[c], key);
			if (!seen && ncols < max)
				snprintf(cols[ncols++], BENCH_KEY_MAX, "%s", key);
		}
	return ncols;
}

/* One row: its fixed columns (percentiles for latency rows, median/min/max/runs otherwise), then the extras. */
static void md_row(FILE *f, const struct bench_table *t, const struct bench_result *row, char (*cols)[BENCH_KEY_MAX],
		   unsigned ncols, bool latency)
{
	fprintf(f, "| %s | %s | %u | ", row->bench, row->system, row->threads);
	if (latency) {
		const struct bench_extra *p50 = extra_of(row, "p50"), *p99 = extra_of(row, "p99"),
					 *p999 = extra_of(row, "p999");
		md_num(f, p50 ? p50->value : NAN);
		fputs(" | ", f);
		md_num(f, p99 ? p99->value : NAN);
		fputs(" | ", f);
		md_num(f, p999 ? p999->value : NAN);
		fputs(" | ", f);
		md_num(f, row->st.max);
	} else {
		md_num(f, row->st.median);
		if (strcmp(row->unit, t->rows[0].unit) != 0)
			fprintf(f, " %s", row->unit);
		fputs(" | ", f);
		md_num(f, row->st.min);
		fputs(" | ", f);
		md_num(f, row->st.max);
		fprintf(f, " | %u", row->st.runs);
	}
	for (unsigned c = 0; c < ncols; c++) {
		const struct bench_extra *e;

		if (latency && md_latency_col(cols[c]))
			continue;
		e = extra_of(row, cols[c]);
		fputs(" | ", f);
		if (!e)
			fputs("-", f);
		else if (e->integer)
			fprintf(f, "%.0f", e->value);
		else
			md_num(f, e->value);
	}
	fputs(" |\n", f);
}

/* A section's table: its header line, the alignment line, a line per row. */
static void md_table(FILE *f, const struct all_section *s, const struct bench_table *t)
{
	char cols[BENCH_EXTRA_MAX * 3][BENCH_KEY_MAX];
	bool latency;
	unsigned ncols = md_columns(s, t, cols, sizeof(cols) / sizeof(cols[0]), &latency);

	if (latency)
		fputs("| case | system | threads | p50 ns | p99 ns | p99.9 ns | max ns", f);
	else
		fprintf(f, "| bench | system | threads | median %s | min | max | runs", t->rows[0].unit);
	for (unsigned c = 0; c < ncols; c++)
		if (!latency || !md_latency_col(cols[c]))
			fprintf(f, " | %s", md_col(cols[c]));
	fputs(" |\n|---|---|--:|--:|--:|--:|--:", f);
	for (unsigned c = 0; c < ncols; c++)
		if (!latency || !md_latency_col(cols[c]))
			fputs("|--:", f);
	fputs("|\n", f);
	for (size_t i = 0; i < t->n; i++)
		md_row(f, t, &t->rows[i], cols, ncols, latency);
}

/* The loss sweep's systems, in their columns' order. */
static const char *const loss_systems[] = { "evring_live", "evring_raw", "lttng_default", "lttng_8x4m" };
#define LOSS_NSYSTEMS (sizeof(loss_systems) / sizeof(loss_systems[0]))

/* The loss row of system at offered rate (0: the full-speed row), or NULL. */
static const struct bench_result *loss_row(const struct bench_table *t, const char *system, double offered)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct bench_result *r = &t->rows[i];
		const struct bench_extra *o = extra_of(r, "offered");

		if (strcmp(r->system, system))
			continue;
		if (offered == 0 ? !strcmp(r->bench, "loss_max") : !strcmp(r->bench, "loss") && o && o->value == offered)
			return r;
	}
	return NULL;
}

/*
 * The loss sweep as two tables: each system's lossless rate, then the loss
 * at each step, a column per system (the JSON has every row and column).
 */
static void md_loss(FILE *f, const struct bench_table *t)
{
	double rates[32];
	unsigned nrates = 0;
	bool any[LOSS_NSYSTEMS] = { false };

	fputs("Lossless rate: the highest offered rate at which no run lost a record, nor at any rate below.\n\n"
	      "| system | lossless M records/s | consumer CPU-s/s there | ring buffer memory MiB |\n"
	      "|---|--:|--:|--:|\n",
	      f);
	for (size_t s = 0; s < LOSS_NSYSTEMS; s++) {
		const struct bench_result *r = bench_table_find(t, "lossless", loss_systems[s], 2);
		const struct bench_extra *cpu, *buf, *all;

		if (!r)
			continue;
		any[s] = true;
		cpu = extra_of(r, "cons_cpu");
		buf = extra_of(r, "buf_mib");
		all = extra_of(r, "at_least");
		fprintf(f, "| %s | %s", r->system, all && all->value ? "at least " : "");
		md_num(f, r->st.median);
		fputs(" | ", f);
		md_num(f, cpu ? cpu->value : NAN);
		fputs(" | ", f);
		md_num(f, buf ? buf->value : NAN);
		fputs(" |\n", f);
	}
	for (size_t i = 0; i < t->n && nrates < sizeof(rates) / sizeof(rates[0]) - 1; i++) {
		const struct bench_extra *o = extra_of(&t->rows[i], "offered");
		bool seen = false;

		if (strcmp(t->rows[i].bench, "loss") || !o)
			continue;
		for (unsigned k = 0; k < nrates; k++)
			seen |= rates[k] == o->value;
		if (!seen) {
			unsigned k = nrates++;
			while (k > 0 && rates[k - 1] > o->value) /* ascending */
				rates[k] = rates[k - 1], k--;
			rates[k] = o->value;
		}
	}
	rates[nrates++] = 0; /* full speed */
	fputs("\nLoss at each step: records lost, % of those offered (median over the runs) / the consumer's "
	      "CPU-s per second; \"k/n lost\": k of the n runs lost records; \"at R\": the writers achieved only "
	      "R M records/s.\n\n| offered M records/s",
	      f);
	for (size_t s = 0; s < LOSS_NSYSTEMS; s++)
		if (any[s])
			fprintf(f, " | %s", loss_systems[s]);
	fputs(" |\n|--:", f);
	for (size_t s = 0; s < LOSS_NSYSTEMS; s++)
		if (any[s])
			fputs("|--:", f);
	fputs("|\n", f);
	for (unsigned k = 0; k < nrates; k++) {
		if (rates[k])
			fprintf(f, "| %g", rates[k]);
		else
			fputs("| max", f);
		for (size_t s = 0; s < LOSS_NSYSTEMS; s++) {
			const struct bench_result *r;
			const struct bench_extra *cpu, *lost, *reached, *mrate;

			if (!any[s])
				continue;
			fputs(" | ", f);
			if (!(r = loss_row(t, loss_systems[s], rates[k]))) {
				fputs("-", f);
				continue;
			}
			cpu = extra_of(r, "cons_cpu");
			lost = extra_of(r, "lost_runs");
			reached = extra_of(r, "reached");
			mrate = extra_of(r, "mrate");
			if (r->st.median == 0)
				fputs("0", f);
			else
				md_num(f, r->st.median);
			fputs(" / ", f);
			md_num(f, cpu ? cpu->value : NAN);
			if (lost && lost->value > 0 && lost->value < r->st.runs)
				fprintf(f, " (%.0f/%u lost)", lost->value, r->st.runs);
			if (mrate && (!rates[k] || (reached && !reached->value))) {
				fputs(" at ", f);
				md_num(f, mrate->value);
			}
		}
		fputs(" |\n", f);
	}
}

static void md_section(FILE *f, const struct all_section *s, const struct all_result *r)
{
	const struct bench_table *t = &r->t;

	fprintf(f, "\n## %s\n\n`evring-bench %s`", s->title, s->name);
	if (r->ran)
		fprintf(f, ", %.0f s", r->seconds);
	if (r->status > 0 || r->status < 0)
		fprintf(f, ", **failed** (%s %d)", r->status == -1 ? "killed," : "exit status", r->status);
	fputs("\n\n", f);
	if (!t->n)
		fputs("_Not measured (see the notes)._\n", f);
	else if (s->md)
		s->md(f, t);
	else
		md_table(f, s, t);
	if (t->nnotes)
		fputc('\n', f);
	for (unsigned i = 0; i < t->nnotes; i++)
		fprintf(f, "- %s\n", t->notes[i]);
}

static void md_write(FILE *f, const struct bench_machine *m, const struct all_result *res, const char *command,
		     double seconds, bool quick, unsigned runs, const char *chart_note)
{
	fprintf(f, "# evring benchmarks\n\n");
	fprintf(f, "Machine: **%s**, %ld cores online, clock source %s, kernel %s; segment clock %s; built with %s.\n\n",
		m->cpu, m->cores, m->clocksource, m->kernel, m->segment_clock, m->compiler);
	fprintf(f, "Command: `%s` (%s), %s, %.0f s in all.\n\n", command, quick ? "quick: short runs, a smoke test" : "full",
		m->date, seconds);
	if (runs)
		fprintf(f, "Every figure is a median over %u runs", runs);
	else
		fputs("Every figure is a median over the runs its `runs` column gives", f);
	fputs(" (min and max beside it); every ratio is taken against a baseline measured in the same run; "
	      "measured threads are pinned, one per CPU, as each section's notes say.\n", f);
	fputs("\n## Targets\n\n", f);
	for (size_t s = 0; s < ALL_NSECTIONS; s++)
		for (unsigned i = 0; i < res[s].t.nnotes; i++) {
			const char *n = res[s].t.notes[i];
			if (!strncmp(n, "target:", 7) || strstr(n, "LTTng-UST not measured") ||
			    strstr(n, "evring-demo unavailable") || strstr(n, "not measured: ")) {
				fprintf(f, "- %s: %s\n", sections[s].name, n);
			}
		}
	fprintf(f, "- suite: %.0f s, budget %.0f s: %s\n", seconds, quick ? ALL_BUDGET_QUICK_S : ALL_BUDGET_S,
		bench_verdict(seconds <= (quick ? ALL_BUDGET_QUICK_S : ALL_BUDGET_S)));
	if (chart_note)
		fprintf(f, "- chart: %s\n", chart_note);
	for (size_t s = 0; s < ALL_NSECTIONS; s++)
		if (res[s].ran)
			md_section(f, &sections[s], &res[s]);
}

/* ---- the chart -------------------------------------------------------- */

/*
 * latest.dat, blocks for bench/plot.gp (separated by two blank lines,
 * gnuplot's "index"): 0 hot path (label, 1-thread, 2-thread ns), 1 latency
 * (case, p50, p99, p99.9 ns), 2 loss at full speed (system, median, max %),
 * 3 demo (state, median req/s), then one block per system of the loss sweep
 * (4 evring_live, 5 evring_raw, 6 lttng_default, 7 lttng_8x4m: offered
 * M records/s, or for the full-speed step the rate achieved; median loss %;
 * the same floored at LOSS_PLOT_FLOOR for the log scale; 1 for the
 * full-speed step, else 0). A block with no data holds one line with "none".
 */
#define LOSS_PLOT_FLOOR 1e-4 /* % : where the chart's log scale draws a loss of 0 */
static void dat_write(FILE *f, const struct all_result *res)
{
	const struct bench_table *p = &res[SEC_PRODUCER].t, *lat = &res[SEC_LATENCY].t, *loss = &res[SEC_LOSS].t,
				 *demo = &res[SEC_DEMO].t;
	size_t n;

	fputs("# hot path: label, 1-thread ns, 2-thread ns (evring-bench producer)\n", f);
	n = 0;
	for (size_t i = 0; i < p->n; i++) {
		const struct bench_result *r = &p->rows[i], *two;

		if (r->threads != 1)
			continue;
		two = bench_table_find(p, r->bench, r->system, 2);
		fprintf(f, "\"%s %s\" %.3f %.3f\n", r->system, r->bench, r->st.median, two ? two->st.median : NAN);
		n++;
	}
	if (!n)
		fputs("none\n", f);
	fputs("\n\n# latency: case, p50, p99, p99.9 ns (evring-bench latency)\n", f);
	n = 0;
	for (size_t i = 0; i < lat->n; i++) {
		const struct bench_result *r = &lat->rows[i];
		const struct bench_extra *a = extra_of(r, "p50"), *b = extra_of(r, "p99"), *c = extra_of(r, "p999");

		if (!a || !b || !c)
			continue;
		fprintf(f, "\"%s\" %.3f %.3f %.3f\n", r->bench + (strncmp(r->bench, "latency_", 8) ? 0 : 8), a->value,
			b->value, c->value);
		n++;
	}
	if (!n)
		fputs("none\n", f);
	fputs("\n\n# loss at full speed: system, median %, worst % (evring-bench loss)\n", f);
	n = 0;
	for (size_t i = 0; i < loss->n; i++)
		if (!strcmp(loss->rows[i].bench, "loss_max")) {
			fprintf(f, "\"%s\" %.4f %.4f\n", loss->rows[i].system, loss->rows[i].st.median,
				loss->rows[i].st.max);
			n++;
		}
	if (!n)
		fputs("none\n", f);
	fputs("\n\n# demo: state, median req/s (evring-bench demo)\n", f);
	n = 0;
	for (size_t i = 0; i < demo->n; i++)
		if (!strcmp(demo->rows[i].bench, "demo")) {
			fprintf(f, "\"%s\" %.1f\n", demo->rows[i].system, demo->rows[i].st.median);
			n++;
		}
	if (!n)
		fputs("none\n", f);
	for (size_t s = 0; s < LOSS_NSYSTEMS; s++) {
		fprintf(f,
			"\n\n# loss sweep, %s: offered M records/s (full speed: achieved), median loss %%, the same "
			"floored at %g, full speed\n",
			loss_systems[s], LOSS_PLOT_FLOOR);
		n = 0;
		for (size_t i = 0; i < loss->n; i++) {
			const struct bench_result *r = &loss->rows[i];
			const struct bench_extra *m = extra_of(r, "mrate"), *o = extra_of(r, "offered");
			bool full = !strcmp(r->bench, "loss_max");

			if (strcmp(r->system, loss_systems[s]) || !(full || !strcmp(r->bench, "loss")) || !(full ? m : o))
				continue;
			fprintf(f, "%.4f %.6f %.6f %d\n", full ? m->value : o->value, r->st.median,
				r->st.median > LOSS_PLOT_FLOOR ? r->st.median : LOSS_PLOT_FLOOR, full);
			n++;
		}
		if (!n)
			fputs("none\n", f);
	}
}

/* Whether the loss sweep has rows of its system s. */
static int loss_has(const struct bench_table *t, size_t s)
{
	return bench_table_find(t, "lossless", loss_systems[s], 2) != NULL;
}

/* Whether the loss sweep has a full-speed row. */
static int loss_has_max(const struct bench_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->rows[i].bench, "loss_max"))
			return 1;
	return 0;
}

/* Runs gnuplot over the data. Returns 0, or -1 with why. */
static int plot(const char *script, const char *dat, const char *png, const struct all_result *res, char *why,
		size_t whylen)
{
	char expr[2048];
	char *argv[] = { "gnuplot", "-e", expr, (char *)script, NULL };
	struct bench_proc p;
	char line[512];
	int st;

	if (access(script, R_OK) != 0) {
		snprintf(why, whylen, "no chart: %.300s: %s", script, strerror(errno));
		return -1;
	}
	snprintf(expr, sizeof(expr),
		 "datafile='%.900s'; outfile='%.900s'; have_hot=%d; have_lat=%d; have_loss=%d; have_demo=%d; "
		 "have_sweep=%d; have_sys='%d %d %d %d'",
		 dat, png, res[SEC_PRODUCER].t.n > 0, res[SEC_LATENCY].t.n > 0,
		 loss_has_max(&res[SEC_LOSS].t),
		 res[SEC_DEMO].t.n > 0, res[SEC_LOSS].t.n > 0, loss_has(&res[SEC_LOSS].t, 0),
		 loss_has(&res[SEC_LOSS].t, 1), loss_has(&res[SEC_LOSS].t, 2), loss_has(&res[SEC_LOSS].t, 3));
	if (bench_proc_start(&p, argv, NULL, -1, true, why, whylen) != 0) {
		snprintf(why, whylen, "no chart: gnuplot is not installed (the Debian package gnuplot-nox)");
		return -1;
	}
	why[0] = 0;
	while (bench_proc_line(&p, line, sizeof(line), 60000) == 1)
		if (!why[0])
			snprintf(why, whylen, "gnuplot: %.400s", line);
	st = bench_proc_stop(&p, 0, 10000);
	if (st != 0) {
		if (!why[0])
			snprintf(why, whylen, "gnuplot failed");
		return -1;
	}
	why[0] = 0;
	return 0;
}

/* ---- main ------------------------------------------------------------- */

static void all_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench all [--quick] [--runs N] [--out DIR] [--json FILE] [--md FILE]\n"
		   "                        [--only NAME,...] [--no-lttng] [--plot FILE]\n\n"
		   "Runs the whole suite, each benchmark in a process of its own:\n");
	for (size_t i = 0; i < ALL_NSECTIONS; i++)
		fprintf(f, "  %-9s %s\n", sections[i].name, sections[i].title);
	fprintf(f, "\n  --out DIR      write DIR/latest.json, latest.md, latest.dat and latest.png\n"
		   "  --json FILE    the JSON there instead ('-': stdout)\n"
		   "  --md FILE      the Markdown there instead ('-': stdout; the default without --out/--json)\n"
		   "  --quick        short runs, 5 of them unless --runs says otherwise: a smoke test\n"
		   "  --runs N       runs per case for every benchmark (at least 5 for a measurement)\n"
		   "  --only LIST    only these benchmarks (comma-separated names)\n"
		   "  --no-lttng     do not measure LTTng-UST\n"
		   "  --plot FILE    the gnuplot script (default: bench/plot.gp of the source tree)\n");
}

static FILE *open_out(const char *path)
{
	return strcmp(path, "-") ? fopen(path, "we") : stdout;
}

static void close_out(FILE *f)
{
	if (f && f != stdout)
		fclose(f);
	else if (f)
		fflush(f);
}

/* The suite's options, and where its outputs go. */
struct all_opts {
	const char *out_dir, *json_path, *md_path, *only, *script;
	bool quick, no_lttng;
	unsigned runs; /* passed on to every benchmark; 0: theirs */
	char json_buf[4096], md_buf[4096], script_buf[4096];
	char command[1024]; /* the command line, as the results quote it */
	char runs_arg[16];
};

/* The options into *a. Returns -1 to go on, or the exit status (0 after --help). */
static int all_args(struct all_opts *a, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(o, "--quick")) {
			a->quick = true;
			bench_quick_run = true;
		} else if (!strcmp(o, "--no-lttng")) {
			a->no_lttng = true;
		} else if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
			all_usage(stdout);
			return 0;
		} else if (v && !strcmp(o, "--out")) {
			a->out_dir = v, i++;
		} else if (v && !strcmp(o, "--json")) {
			a->json_path = v, i++;
		} else if (v && !strcmp(o, "--md")) {
			a->md_path = v, i++;
		} else if (v && !strcmp(o, "--only")) {
			a->only = v, i++;
		} else if (v && !strcmp(o, "--plot")) {
			a->script = v, i++;
		} else if (v && !strcmp(o, "--runs")) {
			a->runs = (unsigned)strtoul(v, NULL, 10), i++;
			if (a->runs < 1 || a->runs > BENCH_RUNS_MAX) {
				fprintf(stderr, "evring-bench all: --runs wants 1 to %d\n", BENCH_RUNS_MAX);
				return 2;
			}
		} else {
			fprintf(stderr, "evring-bench all: unknown option '%s' (try --help)\n", o);
			return 2;
		}
	}
	return -1;
}

/*
 * Reads the command line: the chart script (the source tree's, else an
 * installed evring-bench's PREFIX/share/evring/plot.gp; --plot wins), the
 * options, where the JSON and Markdown go. Returns -1 to go on, or the exit
 * status.
 */
static int all_setup(struct all_opts *a, int argc, char **argv)
{
	size_t cl = 0;
	int rc;

#ifdef EVR_BENCH_PLOT
	a->script = EVR_BENCH_PLOT;
#else
	a->script = "bench/plot.gp";
#endif
	if (access(a->script, R_OK) != 0) {
		char self[4096];
		snprintf(self, sizeof(self), "%s", bench_self_exe());
		snprintf(a->script_buf, sizeof(a->script_buf), "%s/../share/evring/plot.gp", dirname(self));
		a->script = a->script_buf;
	}
	if ((rc = all_args(a, argc, argv)) >= 0)
		return rc;
	if (a->quick && !a->runs)
		a->runs = 5;
	if (a->out_dir) {
		if (mkdir(a->out_dir, 0777) != 0 && errno != EEXIST) {
			fprintf(stderr, "evring-bench all: cannot make %s: %s\n", a->out_dir, strerror(errno));
			return 1;
		}
		snprintf(a->json_buf, sizeof(a->json_buf), "%s/latest.json", a->out_dir);
		snprintf(a->md_buf, sizeof(a->md_buf), "%s/latest.md", a->out_dir);
		a->json_path = a->json_path ? a->json_path : a->json_buf;
		a->md_path = a->md_path ? a->md_path : a->md_buf;
	} else if (!a->json_path && !a->md_path) {
		a->md_path = "-";
	}
	for (int i = 0; i < argc && cl < sizeof(a->command) - 1; i++)
		cl += (size_t)snprintf(a->command + cl, sizeof(a->command) - cl, "%s%s", i ? " " : "evring-bench ",
				       argv[i]);
	snprintf(a->runs_arg, sizeof(a->runs_arg), "%u", a->runs);
	return -1;
}

/* Whether --only (a comma-separated list) takes a section. */
static bool all_wanted(const struct all_opts *a, const struct all_section *sec)
{
	char pat[64], list[1024];

	if (!a->only)
		return true;
	snprintf(list, sizeof(list), ",%s,", a->only);
	snprintf(pat, sizeof(pat), ",%s,", sec->name);
	return strstr(list, pat) != NULL;
}

/* Runs every section wanted, each in its own process, into res. Returns how many failed. */
static unsigned all_sections_run(struct all_opts *a, struct all_result *res)
{
	unsigned failed = 0;

	for (size_t s = 0; s < ALL_NSECTIONS; s++) {
		const struct all_section *sec = &sections[s];
		char *sargv[8];
		int sargc = 0;

		if (!all_wanted(a, sec))
			continue;
		sargv[sargc++] = (char *)sec->name;
		sargv[sargc++] = "--json";
		if (a->quick)
			sargv[sargc++] = "--quick";
		if (a->runs) {
			sargv[sargc++] = "--runs";
			sargv[sargc++] = a->runs_arg;
		}
		if (a->no_lttng && sec->lttng)
			sargv[sargc++] = "--no-lttng";
		sargv[sargc] = NULL;
		fprintf(stderr, "evring-bench all: %s ...\n", sec->name);
		all_run(sec, sargv, sargc,
			a->quick ? (sec->limit_quick_s ? sec->limit_quick_s : ALL_LIMIT_QUICK_S)
				 : (sec->limit_s ? sec->limit_s : ALL_LIMIT_S),
			&res[s]);
		fprintf(stderr, "evring-bench all: %s: %zu rows in %.1f s%s\n", sec->name, res[s].t.n, res[s].seconds,
			res[s].status ? " (FAILED)" : "");
		failed += res[s].status != 0;
	}
	return failed;
}

/* With --out: latest.dat and the chart drawn from it. Returns why there is no chart, or NULL. */
static const char *all_chart(const struct all_opts *a, const struct all_result *res, char *why, size_t whylen)
{
	char dat[4096], png[4096];
	FILE *f;

	if (!a->out_dir)
		return NULL;
	snprintf(dat, sizeof(dat), "%s/latest.dat", a->out_dir);
	snprintf(png, sizeof(png), "%s/latest.png", a->out_dir);
	f = fopen(dat, "we");
	if (!f)
		return NULL;
	dat_write(f, res);
	fclose(f);
	if (plot(a->script, dat, png, res, why, whylen) == 0)
		return NULL;
	fprintf(stderr, "evring-bench all: %s\n", why);
	return why;
}

/* One table: every row; every note prefixed by its benchmark; then the suite's own. */
static void all_merge(struct bench_table *all, const struct all_result *res, const char *command, double seconds,
		      const char *chart_note)
{
	for (size_t s = 0; s < ALL_NSECTIONS; s++) {
		const struct bench_table *t = &res[s].t;

		if (!res[s].ran)
			continue;
		for (size_t i = 0; i < t->n; i++) {
			struct bench_result *r = bench_table_add(all, "", "", 0, "", NULL, 0);
			if (r)
				*r = t->rows[i];
		}
		for (unsigned i = 0; i < t->nnotes; i++)
			bench_table_note(all, "%s: %s", sections[s].name, t->notes[i]);
		if (res[s].status)
			bench_table_note(all, "%s: FAILED (%s %d)", sections[s].name,
					 res[s].status == -1 ? "killed or signalled," : "exit status", res[s].status);
	}
	bench_table_note(all, "suite: `%s`, %.0f s", command, seconds);
	if (chart_note)
		bench_table_note(all, "suite: %s", chart_note);
}

/* The JSON and the Markdown, where --out, --json and --md say. Returns how many could not be written. */
static unsigned all_write(const struct all_opts *a, const struct bench_machine *m, const struct bench_table *all,
			  const struct all_result *res, double seconds, const char *chart_note)
{
	unsigned failed = 0;
	FILE *f;

	if (a->json_path) {
		if (!(f = open_out(a->json_path))) {
			fprintf(stderr, "evring-bench all: cannot write %s: %s\n", a->json_path, strerror(errno));
			failed++;
		} else {
			bench_print_json(f, m, all);
			close_out(f);
		}
	}
	if (a->md_path) {
		if (!(f = open_out(a->md_path))) {
			fprintf(stderr, "evring-bench all: cannot write %s: %s\n", a->md_path, strerror(errno));
			failed++;
		} else {
			md_write(f, m, res, a->command, seconds, a->quick, a->runs, chart_note);
			close_out(f);
		}
	}
	return failed;
}

int bench_all_main(int argc, char **argv)
{
	static struct all_result res[ALL_NSECTIONS];
	static struct all_opts a;
	struct bench_table all = { 0 };
	struct bench_machine m;
	const char *chart_note;
	char why[512];
	uint64_t t0 = bench_now_ns();
	unsigned failed;
	double seconds;
	int rc;

	if ((rc = all_setup(&a, argc, argv)) >= 0)
		return rc;
	bench_machine_read(&m);
	failed = all_sections_run(&a, res);
	seconds = (double)(bench_now_ns() - t0) / 1e9;
	chart_note = all_chart(&a, res, why, sizeof(why));
	all_merge(&all, res, a.command, seconds, chart_note);
	failed += all_write(&a, &m, &all, res, seconds, chart_note);
	fprintf(stderr, "evring-bench all: %.0f s%s%s%s\n", seconds, a.out_dir ? ", results in " : "",
		a.out_dir ? a.out_dir : "", failed ? "; some benchmarks FAILED (see above)" : "");
	for (size_t s = 0; s < ALL_NSECTIONS; s++)
		bench_table_free(&res[s].t);
	bench_table_free(&all);
	return failed ? 1 : 0;
}
