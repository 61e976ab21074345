/*
 * bench_demo.c: `evring-bench demo`, what tracing costs a whole program:
 * evring-demo (tools/evring-demo.c, a mock inference server whose model
 * compute is a calibrated CPU loop, so that time spent tracing comes out of
 * its throughput) at its default load (no --rate: its worker threads serve
 * requests as fast as they can), in three states:
 *
 *   off        EVRING=off: every site is a disabled branch
 *   on         traced, no consumer: the lanes fill, then records are dropped
 *              and counted
 *   consumer   traced, with `evring-bench attach` running the built-in
 *              "stats" and "jsonl=/dev/null" handlers
 *
 * Pinning, on a machine of two CPUs: evring-demo (all its threads) on the
 * first allowed CPU, the consumer on the second. The demo's throughput then
 * measures what tracing costs the instrumented threads themselves; what the
 * consumer costs is its own CPU time, reported beside (cons_cpu: its CPU
 * seconds per second). With the consumer sharing the demo's CPUs the
 * throughput would fall by whatever CPU the consumer takes, which says how
 * busy the consumer is, not how costly the hot path is.
 *
 * Rows: bench "demo", requests per second (median, min, max over the runs),
 * with vs_off (median over the "off" median) and overhead (1 - vs_off, in
 * percent); bench "demo_records", the records per second the traced runs
 * produced (committed and dropped, from the segment's lane counters read
 * when the demo has exited; divided by its run time), with lost, the share
 * of them dropped, in percent. Runs cycle through the three states.
 *
 * Without evring-demo (not built yet, or --demo names nothing) the rows are
 * missing and a note says why; the exit status stays 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evring/ring.h>

#include "bench.h"

#define DEMO_SECONDS 3.0
#define DEMO_SECONDS_QUICK 0.5
#define DEMO_START_MS 15000u /* from exec to its start-up line: it calibrates first */

enum { D_OFF, D_ON, D_CONSUMER, D_COUNT };

static const char *const demo_system[D_COUNT] = { "off", "on", "consumer" };

struct demo_run {
	double rps;
	double recs;	 /* records per second, committed + dropped */
	double lost_pct; /* of those */
	double cons_cpu; /* consumer CPU-s per second */
	unsigned threads;
};

/* The evring-demo to run: --demo, the one built beside this program, or none. */
static const char *demo_path(const char *opt, char *buf, size_t len)
{
	char self[PATH_MAX];

	if (opt)
		return opt;
#ifdef EVR_BENCH_DEMO
	if (access(EVR_BENCH_DEMO, X_OK) == 0)
		return EVR_BENCH_DEMO;
#endif
	snprintf(self, sizeof(self), "%s", bench_self_exe());
	snprintf(buf, len, "%s/evring-demo", dirname(self)); /* installed: beside it in bin/ */
	if (access(buf, X_OK) == 0)
		return buf;
	snprintf(self, sizeof(self), "%s", bench_self_exe());
	snprintf(buf, len, "%s/../tools/evring-demo", dirname(self));
	return buf;
}

/* The number after "key": in a JSON line; -1 when absent. */
static double json_num(const char *line, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(line, pat);
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

/* Committed and dropped records of every lane. */
static void seg_counts(const struct evr_segment *seg, uint64_t *records, uint64_t *lost)
{
	*records = *lost = 0;
	for (uint32_t i = 0; i < seg->lane_count; i++) {
		*records += evr_ld_64(&seg->lanes[i].records);
		*lost += evr_ld_64(&seg->lanes[i].lost);
	}
}

/*
 * Reads evring-demo's start-up line ("evring-demo: pid N, tracing to
 * /dev/shm/evring.N.evring-demo", or "... tracing off"); traced (s is not
 * D_OFF), opens its segment into seg and sets *mapped. 0, or -1 with why.
 */
static int demo_segment(struct bench_proc *demo, unsigned s, struct evr_segment *seg, bool *mapped, char *why,
			size_t whylen)
{
	char line[1024], shm[256] = "", err[256];
	int lr;

	while ((lr = bench_proc_line(demo, line, sizeof(line), DEMO_START_MS)) == 1) {
		char *p = strstr(line, "tracing to ");
		if (p) {
			p += strlen("tracing to ");
			if (!strncmp(p, "/dev/shm/", 9))
				p += 8; /* the shm name is what follows /dev/shm: "/evring.N.evring-demo" */
			snprintf(shm, sizeof(shm), "%s", p);
			break;
		}
		if (strstr(line, "tracing off"))
			break;
	}
	if (lr != 1) {
		snprintf(why, whylen, "evring-demo said nothing of its tracing (%s)", lr ? "timed out" : "it exited");
		return -1;
	}
	if (s == D_OFF)
		return 0;
	if (!shm[0]) {
		snprintf(why, whylen, "evring-demo is not tracing with EVRING=on: %.120s", line);
		return -1;
	}
	if (evr_segment_open(seg, shm, err, sizeof(err)) != 0) {
		snprintf(why, whylen, "cannot open evring-demo's segment %.60s: %.80s", shm, err);
		return -1;
	}
	*mapped = true;
	return 0;
}

/*
 * The end of a run: evring-demo's closing JSON line and its exit; the
 * records its lanes counted (seg, when mapped); with a consumer (peer), the
 * consumer's report once it has read everything. 0, or -1 with why.
 */
static int demo_collect(struct bench_proc *demo, struct bench_proc *peer, const struct evr_segment *seg,
			bool mapped, double seconds, struct demo_run *out, char *why, size_t whylen)
{
	struct bench_peer_report rep = { 0 };
	char line[1024];
	bool got = false;
	double secs;

	while (bench_proc_line(demo, line, sizeof(line), (unsigned)(seconds * 1000) + 30000) == 1)
		if (line[0] == '{' && json_num(line, "rps") >= 0) {
			got = true;
			break;
		}
	if (!got) {
		snprintf(why, whylen, "evring-demo printed no JSON line at its end");
		return -1;
	}
	out->rps = json_num(line, "rps");
	out->threads = (unsigned)json_num(line, "threads");
	secs = json_num(line, "seconds");
	if (bench_proc_stop(demo, 0, 10000) < 0) {
		snprintf(why, whylen, "evring-demo did not exit after its run");
		return -1;
	}
	if (mapped) {
		uint64_t records, lost;

		seg_counts(seg, &records, &lost);
		out->recs = secs > 0 ? (double)(records + lost) / secs : 0;
		out->lost_pct = records + lost ? 100.0 * (double)lost / (double)(records + lost) : 0;
	}
	if (peer->pid) {
		/* It ends by itself once the demo has exited and it has read everything. */
		if (bench_consumer_peer_end(peer, false, 10000, &rep) != 0) {
			snprintf(why, whylen, "the consumer gave no report");
			return -1;
		}
		out->cons_cpu = secs > 0 ? rep.cpu_s / secs : 0;
	}
	return 0;
}

/*
 * One run of evring-demo in state s. Returns 0 with *out filled, or -1 with
 * why (the run is then not counted).
 */
static int demo_run(const char *path, unsigned s, double seconds, int demo_cpu, int cons_cpu, struct demo_run *out,
		    char *why, size_t whylen)
{
	static const char *const handlers[] = { "stats", "jsonl=/dev/null", NULL };
	char dur[32];
	char *argv[] = { (char *)path, "--duration", dur, "--json", "--quiet", NULL };
	char *env[] = { s == D_OFF ? "EVRING=off" : "EVRING=on", NULL };
	struct bench_proc demo, peer = { .pid = 0, .out = -1 };
	struct evr_segment seg;
	bool mapped = false;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	snprintf(dur, sizeof(dur), "%.3f", seconds);
	if (bench_proc_start(&demo, argv, env, demo_cpu, true, why, whylen) != 0)
		return -1;
	if (demo_segment(&demo, s, &seg, &mapped, why, whylen) != 0)
		goto out;
	if (s == D_CONSUMER && bench_consumer_peer_start(&peer, demo.pid, handlers, cons_cpu, why, whylen) != 0)
		goto out;
	rc = demo_collect(&demo, &peer, &seg, mapped, seconds, out, why, whylen);
out:
	if (peer.pid)
		bench_proc_stop(&peer, SIGTERM, 5000);
	if (demo.pid)
		bench_proc_stop(&demo, SIGTERM, 5000);
	if (mapped)
		evr_segment_close(&seg);
	return rc;
}

static void demo_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench demo [options] [--demo PATH] [--seconds S]\n\n"
		   "Requests per second of evring-demo at its default load, S seconds a run (default %.2g,\n"
		   "--quick %.2g), with tracing off (EVRING=off), on with no consumer, and on with a consumer\n"
		   "running the stats and jsonl handlers; and the records per second that load produced.\n"
		   "evring-demo is pinned to the first CPU, the consumer to the second.\n\n"
		   "  --demo PATH    the evring-demo to run (default: the one built beside evring-bench)\n"
		   "  --seconds S    length of a run\n\n",
		DEMO_SECONDS, DEMO_SECONDS_QUICK);
	bench_opts_usage(f);
}

/* ---- the stages ------------------------------------------------------- */

/* The subcommand's state: which evring-demo, its runs in each state, and the runs that failed. */
static struct demo_state {
	const char *opt_demo, *opt_seconds; /* --demo, --seconds */
	unsigned ndemo, nseconds;
	const char *path;
	char pathbuf[PATH_MAX];
	double seconds;
	int demo_cpu, cons_cpu;
	struct demo_run runs[D_COUNT][BENCH_RUNS_MAX];
	unsigned done[D_COUNT], failed, threads;
	char why[BENCH_NOTE_BYTES - 64]; /* the last failure */
	struct bench_load load;
	double others_s, share;
} demo_state;

static const struct bench_own demo_own[] = {
	{ "--demo", NULL, &demo_state.opt_demo, &demo_state.ndemo, 1 },
	{ "--seconds", NULL, &demo_state.opt_seconds, &demo_state.nseconds, 1 },
};

static int demo_setup(struct bench_sub *s, void *ctx)
{
	struct demo_state *ds = ctx;

	ds->seconds = ds->opt_seconds ? atof(ds->opt_seconds) : s->o.quick ? DEMO_SECONDS_QUICK : DEMO_SECONDS;
	if (!(ds->seconds > 0 && ds->seconds <= 600)) {
		fprintf(stderr, "evring-bench demo: --seconds wants 0 to 600\n");
		return 2;
	}
	bench_cpus_init();
	bench_machine_read(&s->m);
	ds->demo_cpu = bench_cpu_of(0);
	ds->cons_cpu = bench_cpu_of(1);
	ds->path = demo_path(ds->opt_demo, ds->pathbuf, sizeof(ds->pathbuf));
	return -1;
}

/* Runs cycle through the three states; three failed runs end them. */
static int demo_runs(struct bench_sub *s, void *ctx)
{
	struct demo_state *ds = ctx;

	bench_load_start(&ds->load);
	if (access(ds->path, X_OK) != 0) {
		bench_table_note(&s->t, "evring-demo unavailable (%s: %s): no demo rows", ds->path, strerror(errno));
	} else {
		for (unsigned r = 0; r < s->o.runs && ds->failed < 3; r++)
			for (unsigned st = 0; st < D_COUNT && ds->failed < 3; st++) {
				struct demo_run *run = &ds->runs[st][ds->done[st]];

				if (demo_run(ds->path, st, ds->seconds, ds->demo_cpu, ds->cons_cpu, run, ds->why,
					     sizeof(ds->why)) != 0) {
					ds->failed++;
					continue;
				}
				ds->threads = run->threads;
				ds->done[st]++;
			}
		if (ds->failed)
			bench_table_note(&s->t, "%u runs of evring-demo failed%s; the last: %s", ds->failed,
					 ds->failed >= 3 ? " (gave up)" : "", ds->why);
	}
	ds->others_s = bench_load_others(&ds->load, &ds->share);
	return -1;
}

/* Rows "demo" (req/s per state) and "demo_records" (rec/s of the traced states). */
static void demo_rows(struct bench_sub *s, const struct demo_state *ds)
{
	double v[BENCH_RUNS_MAX], l[BENCH_RUNS_MAX];
	struct bench_result *row;

	for (unsigned st = 0; st < D_COUNT; st++) {
		if (!ds->done[st])
			continue;
		for (unsigned r = 0; r < ds->done[st]; r++)
			v[r] = ds->runs[st][r].rps;
		row = bench_table_add(&s->t, "demo", demo_system[st], ds->threads, "req/s", v, ds->done[st]);
		if (row && st == D_CONSUMER) {
			for (unsigned r = 0; r < ds->done[st]; r++)
				v[r] = ds->runs[st][r].cons_cpu;
			bench_result_set(row, "cons_cpu", bench_median(v, ds->done[st]));
		}
	}
	for (unsigned st = D_ON; st < D_COUNT; st++) {
		if (!ds->done[st])
			continue;
		for (unsigned r = 0; r < ds->done[st]; r++) {
			v[r] = ds->runs[st][r].recs;
			l[r] = ds->runs[st][r].lost_pct;
		}
		row = bench_table_add(&s->t, "demo_records", demo_system[st], ds->threads, "rec/s", v, ds->done[st]);
		if (row)
			bench_result_set(row, "lost", bench_median(l, ds->done[st]));
	}
}

/* Each traced state against "off": vs_off, overhead, and the target. */
static void demo_vs_off(struct bench_table *t, unsigned threads)
{
	const struct bench_result *off = bench_table_find(t, "demo", "off", threads);
	bool ok = true, any = false;
	char detail[160] = "";
	size_t dl = 0;

	for (size_t i = 0; i < t->n && off && off->st.median > 0; i++) {
		struct bench_result *r = &t->rows[i];
		double vs;

		if (strcmp(r->bench, "demo") || r == off)
			continue;
		vs = r->st.median / off->st.median;
		bench_result_set(r, "vs_off", vs);
		bench_result_set(r, "overhead", 100 * (1 - vs));
		ok &= 100 * (1 - vs) < 1.0;
		any = true;
		dl += (size_t)snprintf(detail + dl, sizeof(detail) - dl, "%s%s %.2f%%", dl ? ", " : "", r->system,
				       100 * (1 - vs));
		if (dl >= sizeof(detail))
			dl = sizeof(detail) - 1;
	}
	if (any)
		bench_table_note(t, "target: under 1%% loss of throughput at the demo's default load: %s (%s)",
				 bench_verdict(ok), detail);
}

static void demo_report(struct bench_sub *s, void *ctx)
{
	struct demo_state *ds = ctx;
	struct bench_table *t = &s->t;

	bench_table_column(t, "vs_off", 3);
	bench_table_column(t, "overhead", 2);
	bench_table_column(t, "lost", 2);
	bench_table_column(t, "cons_cpu", 2);
	demo_rows(s, ds);
	demo_vs_off(t, ds->threads);
	if (ds->done[D_OFF])
		bench_table_note(t,
				 "evring-demo at its default load (%u worker threads, no --rate), %.2f s a run, pinned to "
				 "CPU %d; consumer `evring-bench attach` with stats and jsonl=/dev/null, pinned to CPU %d; "
				 "%u/%u/%u runs (off/on/consumer), interleaved",
				 ds->threads, ds->seconds, ds->demo_cpu, ds->cons_cpu, ds->done[D_OFF], ds->done[D_ON],
				 ds->done[D_CONSUMER]);
	if (ds->done[D_ON])
		bench_table_note(t, "demo_records: committed + dropped records per second of the demo's run (lane "
				    "counters); lost: %% dropped (the \"on\" runs have no consumer: their lanes fill)");
	bench_table_note_load(t, "other processes (not evring-demo nor its consumer)", ds->others_s, ds->share,
			      ": a busy machine, figures are disturbed");
}

/* A run that failed is a broken measurement, not a slow one: say so in the status. */
static int demo_check(struct bench_sub *s, void *ctx)
{
	const struct demo_state *ds = ctx;

	(void)s;
	if (!ds->failed)
		return 0;
	fprintf(stderr, "evring-bench demo: %u runs of evring-demo failed; the last: %s\n", ds->failed, ds->why);
	return 1;
}

static const struct bench_stages demo_stages = {
	.own = demo_own,
	.nown = sizeof(demo_own) / sizeof(demo_own[0]),
	.usage = demo_usage,
	.setup = demo_setup,
	.run = demo_runs,
	.report = demo_report,
	.check = demo_check,
};

int bench_demo_main(int argc, char **argv)
{
	return bench_sub_main(&demo_stages, &demo_state, argc, argv);
}
