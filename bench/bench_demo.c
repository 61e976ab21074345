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
 * One run of evring-demo in state s. Returns 0 with *out filled, or -1 with
 * why (the run is then not counted).
 */
static int demo_run(const char *path, unsigned s, double seconds, int demo_cpu, int cons_cpu, struct demo_run *out,
		    char *why, size_t whylen)
{
	static const char *const handlers[] = { "stats", "jsonl=/dev/null", NULL };
	char dur[32], line[1024], shm[256] = "";
	char *argv[] = { (char *)path, "--duration", dur, "--json", "--quiet", NULL };
	char *env[] = { s == D_OFF ? "EVRING=off" : "EVRING=on", NULL };
	struct bench_proc demo, peer = { .pid = 0, .out = -1 };
	struct bench_peer_report rep = { 0 };
	struct evr_segment seg;
	bool mapped = false, got = false;
	int rc = -1, lr;

	memset(out, 0, sizeof(*out));
	snprintf(dur, sizeof(dur), "%.3f", seconds);
	if (bench_proc_start(&demo, argv, env, demo_cpu, true, why, whylen) != 0)
		return -1;
	/* "evring-demo: pid N, tracing to /dev/shm/evring.N.evring-demo", or "... tracing off". */
	while ((lr = bench_proc_line(&demo, line, sizeof(line), DEMO_START_MS)) == 1) {
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
		goto out;
	}
	if (s != D_OFF) {
		char err[256];

		if (!shm[0]) {
			snprintf(why, whylen, "evring-demo is not tracing with EVRING=on: %.120s", line);
			goto out;
		}
		if (evr_segment_open(&seg, shm, err, sizeof(err)) != 0) {
			snprintf(why, whylen, "cannot open evring-demo's segment %.60s: %.80s", shm, err);
			goto out;
		}
		mapped = true;
	}
	if (s == D_CONSUMER && bench_consumer_peer_start(&peer, demo.pid, handlers, cons_cpu, why, whylen) != 0)
		goto out;
	while ((lr = bench_proc_line(&demo, line, sizeof(line), (unsigned)(seconds * 1000) + 30000)) == 1)
		if (line[0] == '{' && json_num(line, "rps") >= 0) {
			got = true;
			break;
		}
	if (!got) {
		snprintf(why, whylen, "evring-demo printed no JSON line at its end");
		goto out;
	}
	out->rps = json_num(line, "rps");
	out->threads = (unsigned)json_num(line, "threads");
	if (bench_proc_stop(&demo, 0, 10000) < 0) {
		snprintf(why, whylen, "evring-demo did not exit after its run");
		goto out;
	}
	if (mapped) {
		uint64_t records, lost;
		double secs = json_num(line, "seconds");

		seg_counts(&seg, &records, &lost);
		out->recs = secs > 0 ? (double)(records + lost) / secs : 0;
		out->lost_pct = records + lost ? 100.0 * (double)lost / (double)(records + lost) : 0;
	}
	if (s == D_CONSUMER) {
		/* It ends by itself once the demo has exited and it has read everything. */
		if (bench_consumer_peer_end(&peer, false, 10000, &rep) != 0) {
			snprintf(why, whylen, "the consumer gave no report");
			goto out;
		}
		out->cons_cpu = json_num(line, "seconds") > 0 ? rep.cpu_s / json_num(line, "seconds") : 0;
	}
	rc = 0;
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

int bench_demo_main(int argc, char **argv)
{
	static struct demo_run runs[D_COUNT][BENCH_RUNS_MAX];
	struct bench_table t = { 0 };
	struct bench_machine m;
	struct bench_opts o;
	struct bench_load load;
	char why[BENCH_NOTE_BYTES - 64] = "", pathbuf[PATH_MAX];
	const char *opt_demo = NULL, *opt_seconds = NULL, *path;
	unsigned done[D_COUNT] = { 0 }, failed = 0, threads = 0, ndemo = 0, nseconds = 0;
	const struct bench_own own[] = { { "--demo", NULL, &opt_demo, &ndemo, 1 },
					 { "--seconds", NULL, &opt_seconds, &nseconds, 1 } };
	int rc, demo_cpu, cons_cpu;
	double seconds, others_s, share;

	rc = bench_args(&o, argc, argv, own, 2, demo_usage);
	if (rc >= 0)
		return rc;
	seconds = opt_seconds ? atof(opt_seconds) : o.quick ? DEMO_SECONDS_QUICK : DEMO_SECONDS;
	if (!(seconds > 0 && seconds <= 600)) {
		fprintf(stderr, "evring-bench demo: --seconds wants 0 to 600\n");
		return 2;
	}
	bench_cpus_init();
	bench_machine_read(&m);
	demo_cpu = bench_cpu_of(0);
	cons_cpu = bench_cpu_of(1);
	path = demo_path(opt_demo, pathbuf, sizeof(pathbuf));

	bench_load_start(&load);
	if (access(path, X_OK) != 0) {
		bench_table_note(&t, "evring-demo unavailable (%s: %s): no demo rows", path, strerror(errno));
	} else {
		for (unsigned r = 0; r < o.runs && failed < 3; r++)
			for (unsigned s = 0; s < D_COUNT && failed < 3; s++) {
				if (demo_run(path, s, seconds, demo_cpu, cons_cpu, &runs[s][done[s]], why, sizeof(why)) != 0) {
					failed++;
					continue;
				}
				threads = runs[s][done[s]].threads;
				done[s]++;
			}
		if (failed)
			bench_table_note(&t, "%u runs of evring-demo failed%s; the last: %s", failed,
					 failed >= 3 ? " (gave up)" : "", why);
	}
	others_s = bench_load_others(&load, &share);

	bench_table_column(&t, "vs_off", 3);
	bench_table_column(&t, "overhead", 2);
	bench_table_column(&t, "lost", 2);
	bench_table_column(&t, "cons_cpu", 2);
	for (unsigned s = 0; s < D_COUNT; s++) {
		double v[BENCH_RUNS_MAX];
		struct bench_result *row;

		if (!done[s])
			continue;
		for (unsigned r = 0; r < done[s]; r++)
			v[r] = runs[s][r].rps;
		row = bench_table_add(&t, "demo", demo_system[s], threads, "req/s", v, done[s]);
		if (row && s == D_CONSUMER) {
			struct bench_stats cs;
			for (unsigned r = 0; r < done[s]; r++)
				v[r] = runs[s][r].cons_cpu;
			bench_stats_of(&cs, v, done[s]);
			bench_result_set(row, "cons_cpu", cs.median);
		}
	}
	for (unsigned s = D_ON; s < D_COUNT; s++) {
		double v[BENCH_RUNS_MAX], l[BENCH_RUNS_MAX];
		struct bench_result *row;
		struct bench_stats ls;

		if (!done[s])
			continue;
		for (unsigned r = 0; r < done[s]; r++) {
			v[r] = runs[s][r].recs;
			l[r] = runs[s][r].lost_pct;
		}
		row = bench_table_add(&t, "demo_records", demo_system[s], threads, "rec/s", v, done[s]);
		if (!row)
			continue;
		bench_stats_of(&ls, l, done[s]);
		bench_result_set(row, "lost", ls.median);
	}
	{
		const struct bench_result *off = bench_table_find(&t, "demo", "off", threads);
		bool ok = true, any = false;
		char detail[160] = "";
		size_t dl = 0;

		for (size_t i = 0; i < t.n && off && off->st.median > 0; i++) {
			struct bench_result *r = &t.rows[i];
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
			bench_table_note(&t, "target: under 1%% loss of throughput at the demo's default load: %s (%s)",
					 bench_verdict(ok), detail);
	}
	if (done[D_OFF])
		bench_table_note(&t,
				 "evring-demo at its default load (%u worker threads, no --rate), %.2f s a run, pinned to "
				 "CPU %d; consumer `evring-bench attach` with stats and jsonl=/dev/null, pinned to CPU %d; "
				 "%u/%u/%u runs (off/on/consumer), interleaved",
				 threads, seconds, demo_cpu, cons_cpu, done[D_OFF], done[D_ON], done[D_CONSUMER]);
	if (done[D_ON])
		bench_table_note(&t, "demo_records: committed + dropped records per second of the demo's run (lane "
				     "counters); lost: %% dropped (the \"on\" runs have no consumer: their lanes fill)");
	if (others_s >= 0)
		bench_table_note(&t, "other processes (not evring-demo nor its consumer) used %.1f CPU-s (%.0f%% of the "
				     "CPU time) during the runs%s",
				 others_s, 100 * share, share > 0.05 ? ": a busy machine, figures are disturbed" : "");

	if (o.json)
		bench_print_json(stdout, &m, &t);
	else
		bench_print_text(stdout, &m, &t);
	fflush(stdout);
	bench_table_free(&t);
	/* A run that failed is a broken measurement, not a slow one: say so in the status. */
	if (failed) {
		fprintf(stderr, "evring-bench demo: %u runs of evring-demo failed; the last: %s\n", failed, why);
		return 1;
	}
	return 0;
}
