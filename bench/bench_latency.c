/*
 * bench_latency.c: `evring-bench latency`, the distribution of the hot
 * path's latency, call by call, in the three states a consumer can be in:
 *
 *   latency_two_attached  two consumers (`evring-bench attach` with the
 *                     built-in "stats" handler, both pinned to the second
 *                     CPU), each in its own slot, drain the segment while the
 *                     producer writes: its free space is bounded by the
 *                     slower of them
 *   latency_attached  one of them ended: one consumer drains
 *   latency_stopped   the same consumer, stopped by SIGSTOP: the lanes fill
 *                     and the producer's records are dropped and counted
 *   latency_absent    no consumer at all
 *
 * evring promises that the producer never waits for its consumers, so no
 * state may be slower than one consumer attached: with nobody reading, a
 * full lane costs the producer a cached comparison and a counter increment;
 * a second consumer only adds a head to the slow path's minimum.
 *
 * The producer is this process's main thread, pinned to the first allowed
 * CPU, writing the three-field event of `evring-bench producer` into a
 * segment of evring's default sizes, paced at --rate calls per second
 * (default 200000: a consumer with a handler keeps up with it on its CPU).
 * Each call is timed alone between two reads of the segment's clock
 * (converted to ns with a rate measured against CLOCK_MONOTONIC), so each
 * figure includes one clock read; the note gives that floor. A run is
 * --seconds long (default 1, --quick 0.2); a round makes one run of each
 * state, in the order above (two consumers attach for the first, one of them
 * ends before the second, the other is stopped for the third, resumed until
 * it has caught up and then ended for the fourth).
 *
 * Rows: median and min over the runs of each run's p50; p50, p99, p999: the
 * medians over the runs of each run's percentile; max: the slowest call of
 * any run (it replaces the row's max over runs, see bench.h); dropped: the
 * share of the calls whose record was dropped (the drop path was measured);
 * p99_ratio: the row's p99 over the attached row's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <evring/evring.h>

#include "bench.h"

#define LAT_RATE 200000.0
#define LAT_SECONDS 1.0
#define LAT_SECONDS_QUICK 0.2
#define LAT_CATCHUP_MS 5000u
#define LAT_NAME "evr-bench-lat"
#define LAT_TOLERANCE 1.05 /* "no slower": within 5%, the noise of a quiet machine */

enum { C_TWO, C_ATTACHED, C_STOPPED, C_ABSENT, C_COUNT };

static const char *const case_name[C_COUNT] = { "latency_two_attached", "latency_attached", "latency_stopped",
						"latency_absent" };

struct lat_run {
	double p50, p99, p999, max; /* ns */
	double dropped_pct;
};

struct lat_bench {
	struct evr_segment *seg;
	uint32_t kind;
	double ns_per_tick;
	uint64_t period_ticks;
	uint32_t *samples; /* ticks per call */
	uint64_t n;	   /* calls per run */
};

static uint64_t lat_lost(const struct evr_segment *seg)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < seg->lane_count; i++)
		n += evr_ld_64(&seg->lanes[i].lost);
	return n;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* The segment clock's ns per tick, against CLOCK_MONOTONIC over ms milliseconds. */
static double lat_calibrate(uint32_t kind, unsigned ms)
{
	struct timespec ts = { 0, (long)ms * 1000000L };
	uint64_t n0 = bench_now_ns(), k0 = evr_clock_read(kind), n1, k1;

	nanosleep(&ts, NULL);
	n1 = bench_now_ns();
	k1 = evr_clock_read(kind);
	return k1 > k0 ? (double)(n1 - n0) / (double)(k1 - k0) : 1.0;
}

/* The p-th quantile (0..1) of sorted v[0..n-1], nearest rank. */
static uint32_t quantile(const uint32_t *v, uint64_t n, double p)
{
	uint64_t i = (uint64_t)(p * (double)n);

	return v[i < n ? i : n - 1];
}

/* A spin-wait hint to the CPU. */
static inline void lat_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/* One run: n paced calls, each timed alone. */
static void lat_run(struct lat_bench *b, struct lat_run *out)
{
	uint64_t lost0 = lat_lost(b->seg), next = evr_clock_read(b->kind);

	for (uint64_t i = 0; i < b->n; i++) {
		uint64_t t0, t1;

		while (evr_clock_read(b->kind) < next)
			lat_relax();
		t0 = evr_clock_read(b->kind);
		EVR_EVENT("bench", "event3", EVR_U64("a", i), EVR_U32("b", (uint32_t)i), EVR_STR("c", "abcdef"));
		t1 = evr_clock_read(b->kind);
		b->samples[i] = t1 - t0 > UINT32_MAX ? UINT32_MAX : (uint32_t)(t1 - t0);
		next = t1 + b->period_ticks; /* no catching up: a late call does not bring a burst */
	}
	out->dropped_pct = 100.0 * (double)(lat_lost(b->seg) - lost0) / (double)b->n;
	qsort(b->samples, b->n, sizeof(*b->samples), cmp_u32);
	out->p50 = quantile(b->samples, b->n, 0.50) * b->ns_per_tick;
	out->p99 = quantile(b->samples, b->n, 0.99) * b->ns_per_tick;
	out->p999 = quantile(b->samples, b->n, 0.999) * b->ns_per_tick;
	out->max = b->samples[b->n - 1] * b->ns_per_tick;
}

/* The floor under every sample: two clock reads with nothing between, p50 in ns. */
static double lat_floor(struct lat_bench *b)
{
	uint64_t n = b->n < 100000 ? b->n : 100000;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0 = evr_clock_read(b->kind);
		uint64_t t1 = evr_clock_read(b->kind);
		b->samples[i] = (uint32_t)(t1 - t0);
	}
	qsort(b->samples, n, sizeof(*b->samples), cmp_u32);
	return quantile(b->samples, n, 0.5) * b->ns_per_tick;
}


static void lat_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench latency [options] [--seconds S] [--rate R]\n\n"
		   "Per-call latency of a three-field event (p50, p99, p99.9, max), one thread pinned, paced\n"
		   "at R calls per second (default %.0f), S seconds a run (default %.2g, --quick %.2g), with\n"
		   "a consumer attached (stats handler, pinned to another CPU), the same consumer stopped by\n"
		   "SIGSTOP, and no consumer.\n\n"
		   "  --seconds S    length of a run\n"
		   "  --rate R       calls per second\n\n",
		LAT_RATE, LAT_SECONDS, LAT_SECONDS_QUICK);
	bench_opts_usage(f);
}

/* ---- the stages ------------------------------------------------------- */

/* The subcommand's state: the producer's segment, the runs of each case, the consumer's account. */
static struct lat_state {
	struct lat_bench b;
	struct lat_run runs[C_COUNT][BENCH_RUNS_MAX];
	const char *opt_seconds, *opt_rate; /* --seconds, --rate */
	unsigned nseconds, nrate;
	double seconds, rate, floor_ns;
	int prod_cpu, cons_cpu;
	cpu_set_t old; /* this thread's CPUs before it was pinned */
	unsigned done, stop_failed, behind; /* rounds made; those where SIGSTOP or the catch-up failed */
	struct bench_load load;
	double others_s, share;
	double cons_cpu_s;
	uint64_t cons_records;
} lat_state;

static const struct bench_own lat_own[] = {
	{ "--seconds", NULL, &lat_state.opt_seconds, &lat_state.nseconds, 1 },
	{ "--rate", NULL, &lat_state.opt_rate, &lat_state.nrate, 1 },
};

/* The segment at evring's default sizes, the samples faulted in, this thread pinned, the clock measured. */
static int lat_open(struct lat_state *ls)
{
	struct evr_config cfg = { .name = LAT_NAME, .capture_content = 0 };
	struct lat_bench *b = &ls->b;
	cpu_set_t set;

	unsetenv("EVRING_LANES");
	unsetenv("EVRING_LANE_BYTES");
	if (evr_open(&cfg) != 0 || !(b->seg = evr_segment_current())) {
		fprintf(stderr, "evring-bench latency: cannot open the segment: %s\n", evr_last_error());
		return 1;
	}
	b->kind = b->seg->clock_kind;
	b->n = (uint64_t)(ls->rate * ls->seconds);
	b->samples = malloc(b->n * sizeof(*b->samples));
	if (!b->samples || b->n < 1000) {
		fprintf(stderr, "evring-bench latency: %s\n", b->samples ? "fewer than 1000 calls a run" : "out of memory");
		free(b->samples);
		evr_close();
		return 2;
	}
	memset(b->samples, 0, b->n * sizeof(*b->samples)); /* faulted in before any run */
	sched_getaffinity(0, sizeof(ls->old), &ls->old);
	CPU_ZERO(&set);
	CPU_SET(ls->prod_cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
	b->ns_per_tick = lat_calibrate(b->kind, 50);
	b->period_ticks = (uint64_t)(1e9 / ls->rate / b->ns_per_tick);
	ls->floor_ns = lat_floor(b);
	EVR_EVENT("bench", "event3", EVR_U64("a", 0), EVR_U32("b", 0), EVR_STR("c", "abcdef")); /* site and lane */
	return -1;
}

static int lat_setup(struct bench_sub *s, void *ctx)
{
	struct lat_state *ls = ctx;

	ls->seconds = ls->opt_seconds ? atof(ls->opt_seconds) : s->o.quick ? LAT_SECONDS_QUICK : LAT_SECONDS;
	ls->rate = ls->opt_rate ? atof(ls->opt_rate) : LAT_RATE;
	if (!(ls->seconds > 0 && ls->seconds <= 60) || !(ls->rate >= 1000 && ls->rate <= 1e8)) {
		fprintf(stderr, "evring-bench latency: --seconds wants 0 to 60, --rate 1000 to 1e8\n");
		return 2;
	}
	bench_cpus_init();
	bench_machine_read(&s->m);
	ls->prod_cpu = bench_cpu_of(0);
	ls->cons_cpu = bench_cpu_of(1);
	return lat_open(ls);
}

/*
 * One round: a run with two consumers attached, one with one of them, one
 * with it stopped, one after it has caught up and ended. Returns false when
 * a consumer did not start (noted).
 */
static bool lat_round(struct bench_sub *s, struct lat_state *ls)
{
	static const char *const handlers[] = { "stats", NULL };
	char why[BENCH_NOTE_BYTES - 64];
	struct bench_proc peer, second;
	struct bench_peer_report rep;
	int st;

	if (bench_consumer_peer_start(&peer, getpid(), handlers, ls->cons_cpu, why, sizeof(why)) != 0) {
		bench_table_note(&s->t, "stopped after %u rounds: %s", ls->done, why);
		return false;
	}
	if (bench_consumer_peer_start(&second, getpid(), handlers, ls->cons_cpu, why, sizeof(why)) != 0) {
		bench_table_note(&s->t, "stopped after %u rounds: the second consumer: %s", ls->done, why);
		bench_consumer_peer_end(&peer, true, 5000, &rep);
		return false;
	}
	lat_run(&ls->b, &ls->runs[C_TWO][ls->done]);
	bench_consumer_peer_end(&second, true, 5000, &rep);
	ls->cons_records += rep.records;
	ls->cons_cpu_s += rep.cpu_s;
	lat_run(&ls->b, &ls->runs[C_ATTACHED][ls->done]);
	kill(peer.pid, SIGSTOP);
	if (waitpid(peer.pid, &st, WUNTRACED) != peer.pid || !WIFSTOPPED(st))
		ls->stop_failed++;
	lat_run(&ls->b, &ls->runs[C_STOPPED][ls->done]);
	kill(peer.pid, SIGCONT);
	if (!bench_seg_caught_up(ls->b.seg, LAT_CATCHUP_MS))
		ls->behind++;
	bench_consumer_peer_end(&peer, true, 5000, &rep);
	ls->cons_records += rep.records;
	ls->cons_cpu_s += rep.cpu_s;
	lat_run(&ls->b, &ls->runs[C_ABSENT][ls->done]);
	ls->done++;
	return true;
}

static int lat_runs(struct bench_sub *s, void *ctx)
{
	struct lat_state *ls = ctx;

	bench_load_start(&ls->load);
	for (unsigned r = 0; r < s->o.runs && lat_round(s, ls); r++)
		;
	ls->others_s = bench_load_others(&ls->load, &ls->share);
	sched_setaffinity(0, sizeof(ls->old), &ls->old);
	return -1;
}

/* A row per case: its runs' p50 as the row's figures, the medians of their p99 and p999, the slowest call. */
static void lat_rows(struct bench_sub *s, struct lat_state *ls)
{
	for (unsigned c = 0; c < C_COUNT && ls->done; c++) {
		double p50[BENCH_RUNS_MAX], p99[BENCH_RUNS_MAX], p999[BENCH_RUNS_MAX], drop[BENCH_RUNS_MAX], max = 0;
		struct bench_result *row;

		for (unsigned r = 0; r < ls->done; r++) {
			const struct lat_run *run = &ls->runs[c][r];

			p50[r] = run->p50;
			p99[r] = run->p99;
			p999[r] = run->p999;
			drop[r] = run->dropped_pct;
			max = run->max > max ? run->max : max;
		}
		row = bench_table_add(&s->t, case_name[c], "evring", 1, "ns", p50, ls->done);
		if (!row)
			continue;
		bench_result_set(row, "p50", row->st.median);
		bench_result_set(row, "p99", bench_median(p99, ls->done));
		bench_result_set(row, "p999", bench_median(p999, ls->done));
		bench_result_set_max(row, max);
		bench_result_set(row, "dropped", bench_median(drop, ls->done));
	}
}

/* Each row's p99 over the attached row's, and the target: nobody reading must not make a call slower. */
static void lat_target(struct bench_table *t)
{
	const struct bench_result *a = bench_table_find(t, case_name[C_ATTACHED], "evring", 1);
	const struct bench_extra *a99 = NULL;
	bool ok = true;

	for (unsigned k = 0; a && k < a->nextra; k++)
		if (!strcmp(a->extra[k].key, "p99"))
			a99 = &a->extra[k];
	for (size_t i = 0; i < t->n && a99 && a99->value > 0; i++) {
		struct bench_result *r = &t->rows[i];
		for (unsigned k = 0; k < r->nextra; k++)
			if (!strcmp(r->extra[k].key, "p99")) {
				double ratio = r->extra[k].value / a99->value;
				bench_result_set(r, "p99_ratio", ratio);
				if (r != a && (ratio > LAT_TOLERANCE || r->st.median > a->st.median * LAT_TOLERANCE))
					ok = false;
			}
	}
	bench_table_note(t, "target: two consumers, a stopped one and none no slower than one attached (p50 and p99 "
			    "within %.0f%%): %s",
			 (LAT_TOLERANCE - 1) * 100, bench_verdict(ok));
}

static void lat_report(struct bench_sub *s, void *ctx)
{
	struct lat_state *ls = ctx;
	struct bench_table *t = &s->t;

	bench_table_column(t, "p50", 1);
	bench_table_column(t, "p99", 1);
	bench_table_column(t, "p999", 1);
	bench_table_column(t, "dropped", 1);
	bench_table_column(t, "p99_ratio", 2);
	lat_rows(s, ls);
	if (ls->done)
		lat_target(t);
	bench_table_note(t,
			 "1 thread pinned to CPU %d, %.0f calls/s, %.2f s a run, %u rounds; default segment (%u lanes of "
			 "%" PRIu64 " KiB); consumers: `evring-bench attach` with stats, pinned to CPU %d",
			 ls->prod_cpu, ls->rate, ls->seconds, ls->done, ls->b.seg->lane_count, ls->b.seg->lane_bytes >> 10,
			 ls->cons_cpu);
	bench_table_note(t,
			 "each call timed alone between two %s reads (floor: %.1f ns, included); median/min: over the "
			 "runs' p50; p50/p99/p999: medians over runs; max: slowest call of any run; dropped: %% of calls",
			 bench_clock_name(ls->b.kind), ls->floor_ns);
	bench_table_note(t, "the consumers read %" PRIu64 " records using %.2f CPU-s in all", ls->cons_records,
			 ls->cons_cpu_s);
	if (ls->stop_failed || ls->behind)
		bench_table_note(t, "%u rounds where SIGSTOP was not confirmed, %u where the consumer had not caught up "
				    "within %u ms before it was ended", ls->stop_failed, ls->behind, LAT_CATCHUP_MS);
	bench_table_note_load(t, "other processes", ls->others_s, ls->share, ": a busy machine, figures are disturbed");
}

/* No round at all (the consumer never started) is a failure. */
static int lat_check(struct bench_sub *s, void *ctx)
{
	(void)s;
	return ((struct lat_state *)ctx)->done ? 0 : 1;
}

static void lat_teardown(struct bench_sub *s, void *ctx, int status)
{
	struct lat_state *ls = ctx;

	(void)s;
	(void)status;
	free(ls->b.samples);
	evr_close();
}

static const struct bench_stages lat_stages = {
	.own = lat_own,
	.nown = sizeof(lat_own) / sizeof(lat_own[0]),
	.usage = lat_usage,
	.setup = lat_setup,
	.run = lat_runs,
	.report = lat_report,
	.check = lat_check,
	.teardown = lat_teardown,
};

int bench_latency_main(int argc, char **argv)
{
	return bench_sub_main(&lat_stages, &lat_state, argc, argv);
}
