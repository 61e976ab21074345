/*
 * bench_producer.c: `evring-bench producer`, the cost of the producer API as
 * an instrumented thread pays it, per call, through the public macros of
 * <evring/evring.h>:
 *
 *   disabled   EVR_EVENT with three fields, on a site a consumer has disabled
 *   event0     EVR_EVENT with no fields
 *   event3     EVR_EVENT(EVR_U64("a", i), EVR_U32("b", i), EVR_STR("c", "abcdef"))
 *   span       EVR_SPAN_BEGIN + EVR_SPAN_END, the pair
 *
 * and, in the same invocation, the same three-field event through its peers
 * (bench_producer_peers.c):
 *
 *   noop       a call to an empty function (not inlined) with the same three
 *              arguments: the floor under any call that records something
 *   mutex_ring one ring in process memory behind a pthread mutex, shared by
 *              all threads: the timestamp read, the same msgpack encoding of
 *              the same body into the ring under the lock
 *   fprintf    a line with the timestamp and the three fields, fprintf to a
 *              file with stdio's default buffering; with 2 threads both write
 *              to the one FILE*, which stdio locks for each call
 *   lttng_ust  an LTTng-UST tracepoint with the same fields, recorded by a
 *              user-space session in discard mode (bench_lttng.h) with
 *              LTTng's default buffers (4 x 512 KiB per CPU in 2.13); only
 *              when LTTng-UST was found at build time and lttng-tools at run
 *              time
 *   lttng_ust_4m8  the same with 8 sub-buffers of 4 MiB per CPU, enough to
 *              hold a run, so that no event takes the cheaper discard path
 *
 * each on 1 and 2 threads, thread i pinned to the i-th allowed CPU. A run's
 * value is ns per call per thread (for 2 threads the mean of the two, as in
 * the ring bench). Cases run --runs times, interleaved, after one untimed
 * warm-up round (LTTng-UST with default buffers runs after the others, in a
 * session of its own, with its own warm-up); each row gives median, min and max over the runs, peer rows
 * their ratio to the evring event3 median with as many threads, and 2-thread
 * rows their scaling (2-thread median / 1-thread median).
 *
 * Kept out of the timed loops: opening the segment (evr_open with 64 MiB
 * lanes, the most a lane may be, and N bounded so a run always fits in one),
 * faulting in every page of the lanes and of the mutex ring, each thread's
 * lane claim (one untimed event before the start barrier), registering the
 * sites (the warm-up round), and draining: between runs this process reads
 * its own segment (evr_segment_current) like a consumer, checks that every
 * record written arrived, and releases the room. A record dropped in a timed
 * run, a record missing, or a writer sent to the shared lane makes the exit
 * status 1. Timings never do.
 *
 * The notes say what one clock read costs on 1 and 2 threads (the floor
 * under every recording case and its scaling) and how much CPU time other
 * processes took during the runs: on a small shared machine a busy neighbour
 * is the first suspect for a poor 2-thread figure.
 *
 * The disabled site is disabled as a consumer would disable it: after its
 * first use registered it, the EVR_SITE_DISABLED bit is set in the flags of
 * its metadata entry, found by walking the metadata area for the site named
 * "disabled" of the dispatcher "bench".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evring/evring.h>

#include "bench.h"
#include "bench_producer.h"

#define PROD_CALLS 400000u	   /* per thread per run; see prod_calls_max */
#define PROD_CALLS_QUICK 20000u
#define PROD_DISABLED_MULT 16u	   /* the disabled site is cheap: more calls for a measurable run */
#define PROD_LANES (PROD_THREADS_MAX + 1) /* an exclusive lane per thread, and the shared lane */
#define PROD_LANE_BYTES EVR_LANE_BYTES_MAX
#define PROD_NAME "evring-bench"

/*
 * Records' upper sizes: commit word, body at msgpack's widest forms, rounded
 * up to 8 (evr_rec_bytes). The mutex ring's records are no larger.
 */
#define PROD_REC_EVENT3 64u /* [ts, site, span, a, b, "abcdef"]: body 1 + 9*4 + 5 + 7 = 49 */
#define PROD_REC_SPAN 144u  /* begin [5 words]: body 46 -> 56; end [8 words]: body 73 -> 88 */
#define PROD_REC_SLACK (2u * EVR_RECORD_MAX) /* the pad at a wrap, and the thread's first event */

/*
 * Targets, as ratios to one read of the segment clock measured in the same
 * run (nanoseconds depend on what that read costs on the host); reported,
 * never enforced.
 */
#define TARGET_EVENT3_CLOCKS 1.5
#define TARGET_SCALING 1.15
#define TARGET_DISABLED_NS 1.0
#define TARGET_SPAN_CLOCKS 3.0

/* ---- evring workers --------------------------------------------------- */

/*
 * Claims the thread's lane (and writes its first record) before the timed
 * loop, as any thread's first record would; every evring worker calls it
 * before bench_thread_ready.
 */
static void prod_thread_open(void)
{
	EVR_EVENT("bench", "thread_open");
}

/*
 * One worker per evring case: set up, wait for the others, time `calls`
 * iterations of STMT (which may use the loop index i). Each expansion holds
 * its own static call sites, so each case times its own site.
 */
#define PROD_EVR_WORKER(fn, STMT)                                                      \
	static double fn(struct bench_thread *t)                                       \
	{                                                                              \
		struct prod_bench *b = t->arg;                                         \
		uint64_t n = b->calls, t0, t1;                                         \
                                                                                       \
		prod_thread_open();                                                    \
		bench_thread_ready(t);                                                 \
		t0 = bench_now_ns();                                                   \
		for (uint64_t i = 0; i < n; i++) {                                     \
			STMT;                                                          \
		}                                                                      \
		t1 = bench_now_ns();                                                   \
		return (double)(t1 - t0) / (double)n;                                  \
	}

PROD_EVR_WORKER(disabled_thread, BENCH_PROD_DISABLED(i))
PROD_EVR_WORKER(event0_thread, BENCH_PROD_EVENT0(i))
PROD_EVR_WORKER(event3_thread, BENCH_PROD_EVENT3(i))
PROD_EVR_WORKER(span_thread, BENCH_PROD_SPAN(i))

/*
 * The clock alone, for the notes: what one timestamp read costs here on 1
 * and on 2 threads, the floor under every case that records and under its
 * scaling (on some machines the clock read itself does not scale). The sum
 * keeps the reads live.
 */
static double clock_thread(struct bench_thread *t)
{
	struct prod_bench *b = t->arg;
	uint32_t kind = b->seg->clock_kind;
	uint64_t n = b->calls, sum = 0, t0, t1;

	bench_thread_ready(t);
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++)
		sum += evr_clock_read(kind);
	t1 = bench_now_ns();
	b->sink[t->index] = sum;
	return (double)(t1 - t0) / (double)n;
}

/* ---- the segment ------------------------------------------------------ */

/*
 * The most calls per thread per run for which a run's records fit: a
 * thread's span pairs in its lane, and every thread's events in the mutex
 * ring, which all threads share.
 */
static uint64_t prod_calls_max(void)
{
	uint64_t lane = (PROD_LANE_BYTES - PROD_REC_SLACK) / PROD_REC_SPAN;
	uint64_t ring = (PROD_MRING_BYTES - PROD_REC_SLACK) / (PROD_THREADS_MAX * PROD_REC_EVENT3);

	return lane < ring ? lane : ring;
}

/* Rewrites every page of the lanes with the byte it holds, so no timed record takes a page fault. */
static void prod_prefault(const struct evr_segment *seg)
{
	volatile uint8_t *p = evr_segment_lane_data(seg, 0);
	uint64_t bytes = (uint64_t)seg->lane_count * seg->lane_bytes;
	long page = sysconf(_SC_PAGESIZE);

	for (uint64_t off = 0; off < bytes; off += (uint64_t)(page > 0 ? page : 4096))
		p[off] = p[off];
}

static int prod_open(struct prod_bench *b)
{
	struct evr_config cfg = {
		.name = PROD_NAME,
		.lanes = PROD_LANES,
		.lane_bytes = PROD_LANE_BYTES,
		.capture_content = 0,
	};
	int rc = evr_open(&cfg);

	if (rc != 0 || !(b->seg = evr_segment_current())) {
		fprintf(stderr, "evring-bench producer: cannot open the segment: %s\n",
			evr_last_error()[0] ? evr_last_error() : strerror(-rc));
		return -1;
	}
	b->buf = malloc(EVR_BODY_MAX);
	rc = b->buf ? evr_reader_init(&b->reader, b->seg, EVR_READ_FROM_OLDEST) : -ENOMEM;
	if (rc) {
		fprintf(stderr, "evring-bench producer: %s\n", strerror(-rc));
		free(b->buf);
		evr_close();
		return -1;
	}
	prod_prefault(b->seg);
	return 0;
}

static void prod_close(struct prod_bench *b)
{
	evr_reader_fini(&b->reader);
	free(b->buf);
	evr_close();
}

/* Records dropped since the segment was made: every lane's lost count, and oversize refusals. */
static uint64_t prod_dropped(const struct evr_segment *seg)
{
	uint64_t n = evr_ld_64(&seg->hdr->writer_oversize);

	for (uint32_t i = 0; i < seg->lane_count; i++)
		n += evr_ld_64(&seg->lanes[i].lost);
	return n;
}

/* Reads every lane to its end and releases the room (R3). Returns the records delivered (LOST excepted). */
static uint64_t prod_drain(struct prod_bench *b)
{
	struct evr_record rec;
	uint64_t got = 0;

	for (uint32_t l = 0; l < b->seg->lane_count; l++) {
		while (evr_reader_next(&b->reader, l, &rec, b->buf, EVR_BODY_MAX) == 1)
			if (rec.type != EVR_REC_LOST && rec.type != EVR_REC_THREAD)
				got++;
		evr_reader_release(&b->reader, l);
	}
	return got;
}

/* ---- running the cases ------------------------------------------------ */

/* In the order of enum prod_kind: prod_cases[k].kind == k. */
static const struct prod_case {
	const char *bench, *system;
	enum prod_kind kind;
	bench_thread_fn fn;
	unsigned records; /* evring records per call */
} prod_cases[] = {
	{ "clock_read", "-", K_CLOCK, clock_thread, 0 },
	{ "disabled", "evring", K_DISABLED, disabled_thread, 0 },
	{ "event0", "evring", K_EVENT0, event0_thread, 1 },
	{ "event3", "evring", K_EVENT3, event3_thread, 1 },
	{ "span", "evring", K_SPAN, span_thread, 2 },
	{ "event3", "noop", K_NOOP, prod_noop_thread, 0 },
	{ "event3", "mutex_ring", K_MUTEX, prod_mutex_thread, 0 },
	{ "event3", "fprintf", K_FPRINTF, prod_fprintf_thread, 0 },
	{ "event3", "lttng_ust_4m8", K_LTTNG4M, prod_lttng_thread, 0 },
	{ "event3", "lttng_ust", K_LTTNG, prod_lttng_thread, 0 },
};
#define PROD_NCASES (sizeof(prod_cases) / sizeof(prod_cases[0]))

static const unsigned prod_threads[] = { 1, 2 };
#define PROD_NTHREADS (sizeof(prod_threads) / sizeof(prod_threads[0]))

static bool case_evring(enum prod_kind k)
{
	return k == K_DISABLED || k == K_EVENT0 || k == K_EVENT3 || k == K_SPAN;
}

struct prod_totals {
	uint64_t dropped[PROD_NCASES][PROD_NTHREADS]; /* over the timed runs */
	uint64_t mismatch;  /* records missing or extra, any run */
	uint64_t fallbacks; /* writers sent to the shared lane, any run */
	uint64_t skipped;
	bool file_error;
};

/* Calls per thread for a case's run. */
static uint64_t case_calls(enum prod_kind k, uint64_t calls)
{
	return k == K_DISABLED || k == K_CLOCK ? calls * PROD_DISABLED_MULT : calls;
}

/*
 * One run of one case on nthreads threads, then the drain and the checks.
 * Returns the per-thread ns per call (mean over the threads).
 */
static double prod_run(struct prod_bench *b, const struct prod_case *c, unsigned nthreads, uint64_t calls,
		       uint64_t *dropped, struct prod_totals *tot)
{
	double res[PROD_THREADS_MAX], sum = 0;
	uint64_t lost0 = prod_dropped(b->seg), fb0 = evr_ld_64(&b->seg->hdr->lane_fallbacks);
	uint64_t got, want, lost;

	b->calls = calls;
	bench_threads_run(nthreads, c->fn, b, res);
	for (unsigned i = 0; i < nthreads; i++)
		sum += res[i];

	lost = prod_dropped(b->seg) - lost0;
	tot->fallbacks += evr_ld_64(&b->seg->hdr->lane_fallbacks) - fb0;
	got = prod_drain(b);
	want = case_evring(c->kind) ? nthreads * (1 + calls * c->records) : 0;
	if (c->kind == K_MUTEX) {
		uint64_t mlost;
		got = prod_mring_drain(&b->mr, &mlost);
		want = nthreads * calls;
		lost += mlost;
	} else if (c->kind == K_FPRINTF && prod_file_reset(b->file) != 0) {
		tot->file_error = true;
	}
	*dropped += lost;
	/* Every record is delivered or counted as dropped; the disabled site writes none. */
	tot->mismatch += got + lost > want ? got + lost - want : want - got - lost;
	tot->skipped = b->reader.stats.skipped_bad + b->reader.stats.skipped_stuck + b->reader.stats.skipped_dead;
	return sum / nthreads;
}

static bool case_lttng(enum prod_kind k)
{
	return k == K_LTTNG || k == K_LTTNG4M;
}

/* Whether a case runs now: an LTTng-UST case only while its session records. */
static bool case_on(const struct prod_bench *b, const struct prod_case *c)
{
	return !case_lttng(c->kind) || (b->lt.on && b->lt_kind == c->kind);
}

/* Whether a case has rows: it ran. */
static bool case_ran(const bool *lt_ran, const struct prod_case *c)
{
	return !case_lttng(c->kind) || lt_ran[c->kind == K_LTTNG];
}

/* ---- output ----------------------------------------------------------- */

static void prod_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench producer [options] [--no-lttng]\n\n"
		   "Median ns per call of the producer API, per thread, on 1 and 2 threads: a disabled site,\n"
		   "an event with no fields, an event with three fields (u64, u32, a 6-byte string), a span\n"
		   "begin + end pair; and the three-field event through an empty call (the floor), a\n"
		   "mutex-protected ring, fprintf to a buffered file, and an LTTng-UST tracepoint with\n"
		   "LTTng's default buffers and with 8 x 4 MiB (when liblttng-ust-dev was found at build\n"
		   "time and lttng-tools is installed: the bench starts lttng-sessiond if none runs, and a\n"
		   "user-space session in discard mode, and stops both at the end).\n"
		   "Calls per thread per run: %u (--quick: %u), the disabled site %ux that.\n\n"
		   "  --no-lttng     do not measure LTTng-UST (nothing is started)\n\n",
		PROD_CALLS, PROD_CALLS_QUICK, PROD_DISABLED_MULT);
	bench_opts_usage(f);
}

static const char *met(bool ok)
{
	return bench_verdict(ok);
}

/* ---- the stages ------------------------------------------------------- */

/* The subcommand's state: what it measures with, the samples, and what the runs counted. */
static struct prod_state {
	struct prod_bench b;
	bool no_lttng;	/* --no-lttng */
	uint64_t calls; /* per thread per run, the disabled site's multiple aside */
	double samples[PROD_NCASES][PROD_NTHREADS][BENCH_RUNS_MAX];
	struct prod_totals tot;
	uint64_t dropped; /* in timed runs, every evring and mutex_ring case */
	/* LTTng-UST's two sessions: [0] 8 x 4 MiB, [1] default buffers */
	bool lt_ran[2], lt_known[2];
	uint64_t lt_discarded[2];
	char lt_buffers[2][64];
	double clock_ns[PROD_NTHREADS]; /* one segment clock read, median */
	double instr[BENCH_COUNT_CASES];
	bool counted;
	char count_why[200];
	struct bench_load load;
	double others_s, others_share;
} prod_state;

static const struct bench_own prod_own[] = { { "--no-lttng", &prod_state.no_lttng, NULL, NULL, 0 } };

/* LTTng-UST with 8 x 4 MiB, the first session; one note, in either view, when it is not measured. */
static void prod_lttng_start(struct bench_sub *s, struct prod_state *ps)
{
	char why[BENCH_NOTE_BYTES - 64];

	if (ps->no_lttng) {
		memset(&ps->b.lt, 0, sizeof(ps->b.lt));
		bench_table_note(&s->t, "LTTng-UST not measured: --no-lttng");
	} else if (bench_lttng_setup(&ps->b.lt, &BENCH_LTTNG_4M8, why, sizeof(why)) != 0) {
		bench_table_note(&s->t, "LTTng-UST not measured: %s", why);
	} else {
		ps->b.lt_kind = K_LTTNG4M;
		ps->lt_ran[0] = true;
		snprintf(ps->lt_buffers[0], sizeof(ps->lt_buffers[0]), "%s", ps->b.lt.buffers);
	}
}

static int prod_setup(struct bench_sub *s, void *ctx)
{
	struct prod_state *ps = ctx;
	struct prod_bench *b = &ps->b;

	ps->calls = s->o.records ? s->o.records : s->o.quick ? PROD_CALLS_QUICK : PROD_CALLS;
	if (ps->calls > prod_calls_max()) {
		fprintf(stderr,
			"evring-bench producer: --records %" PRIu64 " would fill a lane or the mutex ring (at most "
			"%" PRIu64 " calls per thread)\n",
			ps->calls, prod_calls_max());
		return 2;
	}
	/* Before anything else runs: the count is a child of its own, under callgrind. */
	ps->counted = bench_count_measure(ps->instr, ps->count_why, sizeof(ps->count_why)) == 0;
	bench_cpus_init();
	bench_machine_read(&s->m);
	if (prod_open(b))
		return 1;
	snprintf(s->m.segment_clock, sizeof(s->m.segment_clock), "%s", bench_clock_name(b->seg->clock_kind));
	if (prod_mring_init(&b->mr, b->seg->clock_kind) != 0 || !(b->file = prod_file_open())) {
		fprintf(stderr, "evring-bench producer: cannot set up the mutex ring or the fprintf file: %s\n",
			strerror(errno ? errno : ENOMEM));
		prod_close(b);
		return 1;
	}
	prod_lttng_start(s, ps);
	return -1;
}

/* Case i of a round: thread count i / PROD_NCASES, case i % PROD_NCASES; an LTTng-UST case only in its session. */
static bool prod_round(void *ctx, unsigned i, unsigned r, bool timed)
{
	struct prod_state *ps = ctx;
	unsigned ti = i / PROD_NCASES, c = i % PROD_NCASES;
	const struct prod_case *pc = &prod_cases[c];
	uint64_t warm_dropped = 0;
	double v;

	if (!case_on(&ps->b, pc))
		return true;
	v = prod_run(&ps->b, pc, prod_threads[ti], case_calls(pc->kind, ps->calls),
		     timed ? &ps->tot.dropped[c][ti] : &warm_dropped, &ps->tot);
	if (timed)
		ps->samples[c][ti][r] = v;
	return true;
}

/* LTTng-UST with its default buffers: thread count i, in the session restarted for it. */
static bool prod_lttng_round(void *ctx, unsigned ti, unsigned r, bool timed)
{
	struct prod_state *ps = ctx;
	uint64_t warm_dropped = 0;
	double v = prod_run(&ps->b, &prod_cases[K_LTTNG], prod_threads[ti], ps->calls,
			    timed ? &ps->tot.dropped[K_LTTNG][ti] : &warm_dropped, &ps->tot);

	if (timed)
		ps->samples[K_LTTNG][ti][r] = v;
	return true;
}

/*
 * LTTng-UST with its default buffers: a session of its own, after the
 * others (the module stays registered; only the session changes). Then
 * the sessions end, and with them their discarded counts are read.
 */
static void prod_lttng_finish(struct bench_sub *s, struct prod_state *ps)
{
	struct bench_lttng *lt = &ps->b.lt;
	char why[BENCH_NOTE_BYTES - 64];

	if (lt->on) {
		if (bench_lttng_session_restart(lt, &BENCH_LTTNG_DEFAULT, why, sizeof(why)) != 0) {
			bench_table_note(&s->t, "LTTng-UST with default buffers not measured: %s", why);
		} else {
			ps->b.lt_kind = K_LTTNG;
			ps->lt_ran[1] = true;
			snprintf(ps->lt_buffers[1], sizeof(ps->lt_buffers[1]), "%s", lt->buffers);
			bench_rounds(PROD_NTHREADS, 1, s->o.runs, prod_lttng_round, ps);
		}
		/* The restart read the 4 MiB session's count. */
		ps->lt_discarded[0] = lt->discarded;
		ps->lt_known[0] = lt->discarded_known;
	}
	ps->b.calls = ps->calls;
	ps->others_s = bench_load_others(&ps->load, &ps->others_share);
	bench_lttng_teardown(lt);
	if (ps->lt_ran[0] || ps->lt_ran[1]) {
		unsigned last = ps->lt_ran[1] ? 1 : 0; /* the session the teardown ended */

		ps->lt_discarded[last] = lt->discarded;
		ps->lt_known[last] = lt->discarded_known;
	}
}

static int prod_runs(struct bench_sub *s, void *ctx)
{
	struct prod_state *ps = ctx;
	uint64_t d = 0;

	memset(&ps->tot, 0, sizeof(ps->tot));
	bench_load_start(&ps->load);
	/* The disabled site's first use registers it (one record); then a consumer would turn it off. */
	prod_run(&ps->b, &prod_cases[K_DISABLED], 1, 1, &d, &ps->tot);
	ps->tot.mismatch = 0;
	if (bench_site_disable(ps->b.seg, "bench", "disabled") < 1) {
		fprintf(stderr, "evring-bench producer: the disabled site is not in the metadata area\n");
		return 1;
	}
	/* Warm-up: every case once, untimed: sites register, caches and predictors settle. */
	bench_rounds(PROD_NTHREADS * PROD_NCASES, 1, s->o.runs, prod_round, ps);
	prod_lttng_finish(s, ps);
	return -1;
}

/* Peers' ratios against evring's event3 with as many threads. */
static const struct bench_result *prod_base(const struct bench_table *t, const struct bench_result *r)
{
	return strcmp(r->system, "evring") ? bench_table_find(t, "event3", "evring", r->threads) : NULL;
}

/* A row per case that ran and thread count (the clock's only in the notes), with its counts. */
static void prod_rows(struct bench_sub *s, struct prod_state *ps)
{
	for (unsigned c = 0; c < PROD_NCASES; c++)
		for (unsigned ti = 0; ti < PROD_NTHREADS; ti++) {
			const struct prod_case *pc = &prod_cases[c];
			struct bench_result *row;

			if (pc->kind == K_CLOCK || !case_ran(ps->lt_ran, pc))
				continue;
			row = bench_table_add(&s->t, pc->bench, pc->system, prod_threads[ti], "ns", ps->samples[c][ti],
					      s->o.runs);
			if (!row)
				continue;
			if (!case_lttng(pc->kind) && pc->kind != K_NOOP) {
				ps->dropped += ps->tot.dropped[c][ti];
				bench_result_set_int(row, "dropped", ps->tot.dropped[c][ti]);
			}
			bench_result_set_int(row, "calls", case_calls(pc->kind, ps->calls));
		}
}

/* Per row: ns in clock reads, instructions counted, 2-thread scaling. Last: every row must exist first. */
static void prod_derived(struct bench_sub *s, struct prod_state *ps)
{
	struct bench_table *t = &s->t;

	bench_table_ratio(t, "ratio", prod_base);
	for (size_t i = 0; i < t->n; i++) {
		struct bench_result *r = &t->rows[i];
		const struct bench_result *one = bench_table_find(t, r->bench, r->system, 1);

		if (ps->clock_ns[r->threads - 1] > 0)
			bench_result_set(r, "clocks", r->st.median / ps->clock_ns[r->threads - 1]);
		for (unsigned c = 0; ps->counted && c < BENCH_COUNT_CASES; c++)
			if (!strcmp(r->system, "evring") && !strcmp(r->bench, bench_count_cases[c].name))
				bench_result_set(r, "instr", ps->instr[c]);
		if (r->threads == 2 && one && one->st.median > 0)
			bench_result_set(r, "scaling", r->st.median / one->st.median);
	}
}

/* How many events each LTTng-UST session discarded: a discarded event took the cheaper path. */
static void prod_lttng_notes(struct bench_sub *s, const struct prod_state *ps)
{
	for (unsigned v = 0; v < 2; v++) {
		const char *sys = v ? "lttng_ust" : "lttng_ust_4m8", *buf = ps->lt_buffers[v];
		uint64_t total = 0;

		if (!ps->lt_ran[v])
			continue;
		for (unsigned ti = 0; ti < PROD_NTHREADS; ti++)
			total += (uint64_t)(s->o.runs + 1) * prod_threads[ti] * ps->calls; /* warm-up round included */
		if (ps->lt_known[v])
			bench_table_note(&s->t,
					 "%s: user-space session in discard mode, per-user buffers %s per CPU (%s); "
					 "%" PRIu64 " of %" PRIu64 " events discarded (%.1f%%)%s",
					 sys, buf[0] ? buf : "unknown", v ? "LTTng's default" : "asked for",
					 ps->lt_discarded[v], total, 100.0 * (double)ps->lt_discarded[v] / (double)total,
					 ps->lt_discarded[v] ? ": its figure includes the cheaper discard path" : "");
		else
			bench_table_note(&s->t, "%s: user-space session in discard mode, per-user buffers %s per CPU; its "
						"discarded count could not be read",
					 sys, buf[0] ? buf : "unknown");
	}
}

/* The targets as notes, for the JSON view (the text view prints them with prod_print_notes). */
static void prod_target_notes(struct bench_table *t, uint64_t dropped, double clock_ns)
{
	const struct bench_result *e1 = bench_table_find(t, "event3", "evring", 1);
	const struct bench_result *e2 = bench_table_find(t, "event3", "evring", 2);
	const struct bench_result *d1 = bench_table_find(t, "disabled", "evring", 1);
	const struct bench_result *s1 = bench_table_find(t, "span", "evring", 1);

	if (!e1 || !e2 || !d1 || !s1 || dropped || e1->st.median <= 0)
		return;
	bench_table_note(t,
			 "target: event3 <= %.1fx one clock read: %s (%.2fx); 2 threads within %.2fx of 1: %s (%.2fx); "
			 "disabled <= %.0f ns: %s (%.2f); span pair <= %.1fx one clock read: %s (%.2fx)",
			 TARGET_EVENT3_CLOCKS, met(e1->st.median <= TARGET_EVENT3_CLOCKS * clock_ns),
			 e1->st.median / clock_ns, TARGET_SCALING, met(e2->st.median <= TARGET_SCALING * e1->st.median),
			 e2->st.median / e1->st.median, TARGET_DISABLED_NS, met(d1->st.median <= TARGET_DISABLED_NS),
			 d1->st.median, TARGET_SPAN_CLOCKS, met(s1->st.median <= TARGET_SPAN_CLOCKS * clock_ns),
			 s1->st.median / clock_ns);
}

static void prod_report(struct bench_sub *s, void *ctx)
{
	struct prod_state *ps = ctx;
	struct bench_table *t = &s->t;
	const double *clock_ns = ps->clock_ns;

	bench_table_column(t, "instr", 0);
	bench_table_column(t, "clocks", 2);
	bench_table_column(t, "ratio", 2);
	bench_table_column(t, "scaling", 2);
	bench_table_column(t, "dropped", 0);
	bench_table_column(t, "calls", 0);
	for (unsigned ti = 0; ti < PROD_NTHREADS; ti++)
		ps->clock_ns[ti] = bench_median(ps->samples[K_CLOCK][ti], s->o.runs);
	prod_rows(s, ps);
	prod_derived(s, ps);
	if (ps->counted)
		bench_table_note(t, "instr: instructions per call, counted by callgrind on the TSC path (evring-bench count), "
				    "which no host or load changes; clocks: median / one segment clock read, same run and threads");
	else
		bench_table_note(t, "instructions not counted: %s", ps->count_why);
	bench_table_note(t,
			 "segment clock %s: one read alone costs %.2f ns on 1 thread, %.2f ns per thread on 2 "
			 "(scaling %.2f); medians",
			 bench_clock_name(ps->b.seg->clock_kind), clock_ns[0], clock_ns[1],
			 clock_ns[0] > 0 ? clock_ns[1] / clock_ns[0] : NAN);
	bench_table_note_load(t, "other processes", ps->others_s, ps->others_share,
			      ": a busy machine, figures are disturbed, 2-thread ones most");
	prod_lttng_notes(s, ps);
	bench_table_note(t, "noop: an empty call (not inlined) with event3's arguments, no timestamp: the floor; "
			    "ratio = peer median / evring event3 median, same threads");
	if (s->o.json)
		prod_target_notes(t, ps->dropped, clock_ns[0]);
}

/* The 2-thread scaling of every case but event3, and of the clock read alone. */
static void prod_print_scaling(const struct bench_table *t, const struct prod_state *ps)
{
	const double *clock_ns = ps->clock_ns;

	printf("        the same scaling elsewhere:");
	for (size_t i = 0; i < t->n; i++) {
		const struct bench_result *r = &t->rows[i], *r1;
		if (r->threads != 2 || !strcmp(r->bench, "event3"))
			continue;
		r1 = bench_table_find(t, r->bench, r->system, 1);
		if (r1 && r1->st.median > 0)
			printf(" %s %.2fx", r->bench, r->st.median / r1->st.median);
	}
	printf("; the %s read alone %.2fx\n", bench_clock_name(ps->b.seg->clock_kind),
	       clock_ns[0] > 0 ? clock_ns[1] / clock_ns[0] : NAN);
}

/* The text view's closing lines: how it was measured, what was dropped, the targets. */
static void prod_print_notes(const struct bench_sub *s, void *ctx)
{
	const struct prod_state *ps = ctx;
	const struct bench_opts *o = &s->o;
	const struct bench_table *t = &s->t;
	const double *clock_ns = ps->clock_ns;
	const struct bench_result *e1 = bench_table_find(t, "event3", "evring", 1);
	const struct bench_result *e2 = bench_table_find(t, "event3", "evring", 2);
	const struct bench_result *d1 = bench_table_find(t, "disabled", "evring", 1);
	const struct bench_result *s1 = bench_table_find(t, "span", "evring", 1);
	const struct bench_result *l1 = bench_table_find(t, "event3", "lttng_ust", 1);

	printf("\n%" PRIu64 " calls per thread per run (disabled: %" PRIu64 "); %u timed runs per case after one "
	       "warm-up round;\n2-thread rows give the mean of the threads' ns/call; ratio = median / evring event3 "
	       "median, same threads;\nscaling = 2-thread median / 1-thread median.\n",
	       ps->b.calls, ps->b.calls * PROD_DISABLED_MULT, o->runs);
	printf("threads pinned: thread 0 on CPU %d, thread 1 on CPU %d.\n", bench_cpu_of(0), bench_cpu_of(1));
	printf("mutex_ring: one ring for all threads, same msgpack body, timestamp read before the lock.\n"
	       "fprintf: one FILE* for all threads (stdio locks it per call), default buffering, a file "
	       "under $TMPDIR.\n");
	if (o->runs < 5)
		printf("note: %u runs; a measurement wants at least 5.\n", o->runs);
	if (o->quick)
		printf("note: --quick is a smoke test: its runs are too short to measure, and 2 threads barely "
		       "overlap in them.\n");
	printf("dropped in timed runs: %" PRIu64 "%s\n", ps->dropped,
	       ps->dropped ? " (INVALID: the drop path was measured)" : "");
	if (!e1 || ps->dropped)
		return;
	printf("target: event3 <= %.1fx one clock read with 1 thread: %s (%.2f ns, %.2fx)\n", TARGET_EVENT3_CLOCKS,
	       met(e1->st.median <= TARGET_EVENT3_CLOCKS * clock_ns[0]), e1->st.median, e1->st.median / clock_ns[0]);
	if (e2 && e1->st.median > 0)
		printf("target: event3 per-thread cost with 2 threads within %.2fx of 1 thread: %s (%.2fx)\n",
		       TARGET_SCALING, met(e2->st.median <= TARGET_SCALING * e1->st.median), e2->st.median / e1->st.median);
	prod_print_scaling(t, ps);
	if (d1)
		printf("target: disabled site <= %.0f ns: %s (%.2f ns)\n", TARGET_DISABLED_NS,
		       met(d1->st.median <= TARGET_DISABLED_NS), d1->st.median);
	if (s1)
		printf("target: span pair <= %.1fx one clock read: %s (%.2f ns, %.2fx)\n", TARGET_SPAN_CLOCKS,
		       met(s1->st.median <= TARGET_SPAN_CLOCKS * clock_ns[0]), s1->st.median, s1->st.median / clock_ns[0]);
	if (l1 && e1->st.median > 0)
		printf("LTTng-UST event3, 1 thread: %.2f ns, %.1fx evring's\n", l1->st.median, l1->st.median / e1->st.median);
}

/* A record dropped or missing, a writer sent to the shared lane, a file not written: exit status 1. */
static int prod_check(struct bench_sub *s, void *ctx)
{
	const struct prod_state *ps = ctx;
	const struct prod_totals *tot = &ps->tot;
	int rc = 0;

	(void)s;
	if (ps->dropped) {
		fprintf(stderr, "evring-bench producer: %" PRIu64 " records dropped in timed runs: a ring filled\n",
			ps->dropped);
		rc = 1;
	}
	if (tot->mismatch || tot->skipped) {
		fprintf(stderr,
			"evring-bench producer: the drain's count differs from what was written by %" PRIu64
			" records; %" PRIu64 " skipped\n",
			tot->mismatch, tot->skipped);
		rc = 1;
	}
	if (tot->fallbacks) {
		fprintf(stderr, "evring-bench producer: %" PRIu64 " writers found no exclusive lane free\n",
			tot->fallbacks);
		rc = 1;
	}
	if (tot->file_error) {
		fprintf(stderr, "evring-bench producer: writing the fprintf file failed\n");
		rc = 1;
	}
	return rc;
}

/* After the runs LTTng-UST is already down; after a failed run this stops it. */
static void prod_teardown(struct bench_sub *s, void *ctx, int status)
{
	struct prod_bench *b = &((struct prod_state *)ctx)->b;

	(void)s;
	(void)status;
	bench_lttng_teardown(&b->lt);
	fclose(b->file);
	free(b->mr.buf);
	prod_close(b);
}

static const struct bench_stages prod_stages = {
	.own = prod_own,
	.nown = sizeof(prod_own) / sizeof(prod_own[0]),
	.usage = prod_usage,
	.setup = prod_setup,
	.run = prod_runs,
	.report = prod_report,
	.notes = prod_print_notes,
	.check = prod_check,
	.teardown = prod_teardown,
};

int bench_producer_main(int argc, char **argv)
{
	return bench_sub_main(&prod_stages, &prod_state, argc, argv);
}
