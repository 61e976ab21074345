/*
 * bench_ring.c: `evring-bench ring`, the cost of one record on the write path.
 *
 * What is measured: a writer thread writes N records of a 32-byte body whose
 * first 8 bytes are a fresh read of the segment's clock, through
 * evr_writer_reserve, stores into the reserved room and evr_writer_commit:
 * what an instrumented call site pays, timestamp included. The loop is timed
 * with CLOCK_MONOTONIC around it, so ns per record = elapsed / N. Cases:
 *
 *   tsc_read          the baseline: N evr_clock_tsc() reads and nothing else
 *   record_exclusive  each thread on its own lane (plain stores, no RMW)
 *   record_shared     every thread on the shared lane (CAS reservations)
 *
 * each on 1 and 2 threads, thread i pinned to the i-th allowed CPU modulo
 * their count. For 2 threads a run's value is the mean of the two threads' ns
 * per record: the per-thread cost is what an instrumented thread sees, and
 * the mean keeps one descheduled thread on a shared VM from standing in for
 * both. Each case runs --runs times, interleaved (one run of every case, then
 * the next), so a slow spell of the machine spreads over all cases rather
 * than landing on one; each row gives median, min and max over the runs, and
 * record rows their ratio to the 1-thread tsc_read median of the same
 * invocation.
 *
 * What is kept out of the timed loop: the lanes are 64 MiB (the largest a
 * record's size field allows) and N is bounded so that two threads' records
 * fit in the shared lane, so no timed record ever takes the drop path; every
 * page of every lane is faulted in before the first run; and between runs a
 * reader drains the lanes (outside the timing), which also checks that every
 * committed record is delivered intact. A drop or a missing record in a timed
 * run is reported and makes the exit status 1. Timings never do.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <evring/ring.h>

#include "bench.h"

#define RING_BODY 32u			  /* body bytes per record */
#define RING_RECORDS 640000u		  /* per thread per run; see ring_records_max */
#define RING_RECORDS_QUICK 100000u
#define RING_THREADS_MAX 2u
#define RING_LANES (RING_THREADS_MAX + 1) /* an exclusive lane per thread, and the shared lane */
#define RING_TARGET 1.5			  /* record_exclusive / tsc_read, from the issue */

enum ring_kind { RING_TSC, RING_EXCLUSIVE, RING_SHARED };

static const struct ring_case {
	const char *bench;
	enum ring_kind kind;
} ring_cases[] = {
	{ "tsc_read", RING_TSC },
	{ "record_exclusive", RING_EXCLUSIVE },
	{ "record_shared", RING_SHARED },
};
#define RING_NCASES (sizeof(ring_cases) / sizeof(ring_cases[0]))

static const unsigned ring_threads[] = { 1, 2 };
#define RING_NTHREADS (sizeof(ring_threads) / sizeof(ring_threads[0]))

struct ring_bench {
	struct evr_segment seg;
	struct evr_reader reader;
	uint8_t *buf;	  /* the reader's copy of a body */
	uint64_t records; /* per thread per run */
	bool shared;	  /* the case being run writes to the shared lane */
	uint32_t pid;
	int err[RING_THREADS_MAX]; /* a worker's set-up error, -errno */
	volatile uint64_t sink[RING_THREADS_MAX];
};

/* ---- worker threads --------------------------------------------------- */

/*
 * The baseline. rdtsc is volatile asm, so the compiler can neither drop nor
 * merge the reads; the sum keeps their results live and is stored to the
 * volatile sink once, because a volatile store per iteration would add a
 * store the record loop does not have.
 */
static double tsc_thread(struct bench_thread *t)
{
	struct ring_bench *b = t->arg;
	uint64_t n = b->records, sum = 0, t0, t1;

	bench_thread_ready(t);
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++)
		sum += evr_clock_tsc();
	t1 = bench_now_ns();
	b->sink[t->index] = sum;
	return (double)(t1 - t0) / (double)n;
}

/*
 * One writer: opens its writer (claiming a lane, or joining the shared lane),
 * waits for the others, then times N records. The body is what a call site
 * would store: the timestamp, then three words of payload (thread, index,
 * and a check word).
 */
static double record_thread(struct bench_thread *t)
{
	struct ring_bench *b = t->arg;
	struct evr_writer w;
	uint64_t n = b->records, idx = t->index, t0, t1;
	int rc;

	rc = evr_writer_open(&w, &b->seg, b->pid, (uint32_t)syscall(SYS_gettid),
			     b->shared ? EVR_WRITER_FORCE_SHARED : 0);
	if (rc == 0 && w.shared != b->shared) {
		/* An exclusive case that fell back to the shared lane would measure the wrong thing. */
		evr_writer_close(&w);
		rc = -EBUSY;
	}
	b->err[t->index] = rc;
	bench_thread_ready(t);
	if (rc)
		return -1;

	t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		/* Bodies start 8 bytes into 8-aligned records: word stores, as an encoder makes them. */
		uint64_t *p = evr_writer_reserve(&w, RING_BODY);
		uint64_t ts;

		if (EVR_UNLIKELY(!p))
			continue; /* dropped: lane.lost counts it, and the run reports it */
		ts = evr_clock_read(w.clock_kind);
		p[0] = ts;
		p[1] = idx;
		p[2] = i;
		p[3] = ts ^ i; /* lets the drain check the body arrived whole */
		evr_writer_commit(&w, RING_BODY, EVR_REC_EVENT);
	}
	t1 = bench_now_ns();
	evr_writer_close(&w);
	return (double)(t1 - t0) / (double)n;
}

/* ---- the segment ------------------------------------------------------ */

/* The most records per thread per run for which every thread's records fit in one lane. */
static uint64_t ring_records_max(uint64_t lane_bytes)
{
	/* A record never wraps, so one PAD record (< one record) may precede the wrap. The shared lane's carry a tid. */
	uint64_t rec = evr_rec_bytes(RING_BODY) + EVR_TID_BYTES;

	return (lane_bytes - rec) / (RING_THREADS_MAX * rec);
}

/*
 * Faults in every page of the lanes before anything is timed, so no timed
 * record pays for a page fault. Each page is rewritten with the byte it
 * holds: a write (a read fault might map the page read-only and fault again
 * on the first store) that changes nothing a reader could see.
 */
static void ring_prefault(struct ring_bench *b)
{
	volatile uint8_t *p = evr_segment_lane_data(&b->seg, 0);
	uint64_t bytes = (uint64_t)b->seg.lane_count * b->seg.lane_bytes;
	long page = sysconf(_SC_PAGESIZE);

	for (uint64_t off = 0; off < bytes; off += (uint64_t)(page > 0 ? page : 4096))
		p[off] = p[off];
	memset(b->buf, 0, EVR_BODY_MAX);
}

static int ring_open(struct ring_bench *b)
{
	struct evr_segment_config cfg = {
		.lanes = RING_LANES,
		.lane_bytes = EVR_LANE_BYTES_MAX,
		.program = "evring-bench",
	};
	char name[128], err[EVR_ERR_MAX];
	int rc;

	b->pid = (uint32_t)getpid();
	evr_segment_name(name, sizeof(name), (pid_t)b->pid, "evring-bench");
	rc = evr_segment_create(&b->seg, name, &cfg, err, sizeof(err));
	if (rc == -EEXIST) {
		/* Left by an earlier process of our pid that died before unlinking it. */
		evr_segment_unlink(name);
		rc = evr_segment_create(&b->seg, name, &cfg, err, sizeof(err));
	}
	if (rc) {
		fprintf(stderr, "evring-bench ring: %s\n", err);
		return rc;
	}
	/* Nobody else attaches to it; unlinked now, it cannot outlive a crash. */
	evr_segment_unlink(name);
	b->buf = malloc(EVR_BODY_MAX);
	rc = b->buf ? evr_reader_init(&b->reader, &b->seg, EVR_READ_FROM_OLDEST) : -ENOMEM;
	if (rc) {
		fprintf(stderr, "evring-bench ring: %s\n", strerror(-rc));
		free(b->buf);
		evr_segment_close(&b->seg);
		return rc;
	}
	ring_prefault(b);
	return 0;
}

static void ring_close(struct ring_bench *b)
{
	evr_reader_fini(&b->reader);
	free(b->buf);
	evr_segment_close(&b->seg);
}

/* Records dropped on all lanes since the segment was made: lane.lost, and oversize refusals. */
static uint64_t ring_dropped(const struct ring_bench *b)
{
	uint64_t n = evr_ld_64(&b->seg.hdr->writer_oversize);

	for (uint32_t i = 0; i < b->seg.lane_count; i++)
		n += evr_ld_64(&b->seg.lanes[i].lost);
	return n;
}

/*
 * Reads every lane to its end and hands the room back to the writers (R3),
 * so the next run starts on empty lanes. Returns the EVENT records delivered;
 * *bad counts those whose body did not arrive as written.
 */
static uint64_t ring_drain(struct ring_bench *b, uint64_t *bad)
{
	struct evr_record rec;
	uint64_t got = 0;

	for (uint32_t l = 0; l < b->seg.lane_count; l++) {
		while (evr_reader_next(&b->reader, l, &rec, b->buf, EVR_BODY_MAX) == 1) {
			uint64_t v[RING_BODY / 8];

			if (rec.type != EVR_REC_EVENT)
				continue;
			got++;
			memcpy(v, rec.body, sizeof(v));
			if (rec.body_len != RING_BODY || v[3] != (v[0] ^ v[2]))
				(*bad)++;
		}
		evr_reader_release(&b->reader, l);
	}
	return got;
}

/* ---- running the cases ------------------------------------------------ */

struct ring_totals {
	uint64_t dropped[RING_NCASES][RING_NTHREADS]; /* over the timed runs */
	uint64_t mismatch, bad, skipped;	      /* any run, warm-up included */
	int err;
};

/*
 * One run of one case on nthreads threads. Returns the per-thread ns per
 * record (mean over the threads), or NAN after an error.
 */
static double ring_run(struct ring_bench *b, enum ring_kind kind, unsigned nthreads, uint64_t *dropped,
		       struct ring_totals *tot)
{
	double res[RING_THREADS_MAX], sum = 0;
	uint64_t before, got, lost, bad = 0;
	const struct evr_reader_stats *st = &b->reader.stats;

	memset(b->err, 0, sizeof(b->err));
	b->shared = kind == RING_SHARED;
	before = ring_dropped(b);
	bench_threads_run(nthreads, kind == RING_TSC ? tsc_thread : record_thread, b, res);
	lost = ring_dropped(b) - before;
	*dropped += lost;
	got = ring_drain(b, &bad);
	for (unsigned i = 0; i < nthreads; i++) {
		if (b->err[i]) {
			if (!tot->err && b->err[i] == -EBUSY)
				fprintf(stderr, "evring-bench ring: writer %u found every exclusive lane taken\n", i);
			else if (!tot->err)
				fprintf(stderr, "evring-bench ring: writer %u cannot open its lane: %s\n", i,
					strerror(-b->err[i]));
			tot->err = b->err[i];
			return NAN;
		}
		sum += res[i];
	}
	/* Every record was either delivered or counted as dropped; anything else is a ring bug. */
	if (kind != RING_TSC) {
		uint64_t want = (uint64_t)nthreads * b->records;
		tot->mismatch += got + lost > want ? got + lost - want : want - got - lost;
	}
	tot->bad += bad;
	tot->skipped = st->skipped_bad + st->skipped_stuck + st->skipped_dead;
	return sum / nthreads;
}

static void ring_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench ring [options]\n\n"
		   "Median ns per record written with a %u-byte body and its timestamp read, on 1 and 2\n"
		   "threads, exclusive lanes and the shared lane, against rdtsc alone in the same run.\n"
		   "Records per thread per run: %u (--quick: %u).\n\n",
		RING_BODY, RING_RECORDS, RING_RECORDS_QUICK);
	bench_opts_usage(f);
}

/* ---- the stages ------------------------------------------------------- */

/* The subcommand's state: the segment, what the runs measured and what they counted. */
static struct ring_state {
	struct ring_bench b;
	struct ring_totals tot;
	double samples[RING_NCASES][RING_NTHREADS][BENCH_RUNS_MAX];
	uint64_t dropped; /* in timed runs, every case */
} ring_state;

static int ring_setup(struct bench_sub *s, void *ctx)
{
	struct ring_state *rs = ctx;
	uint64_t max = ring_records_max(EVR_LANE_BYTES_MAX);

	rs->b.records = s->o.records ? s->o.records : s->o.quick ? RING_RECORDS_QUICK : RING_RECORDS;
	if (rs->b.records > max) {
		fprintf(stderr,
			"evring-bench ring: --records %" PRIu64 " would fill a lane (at most %" PRIu64
			" records per thread)\n",
			rs->b.records, max);
		return 2;
	}
	bench_cpus_init();
	bench_machine_read(&s->m);
	if (ring_open(&rs->b))
		return 1;
	snprintf(s->m.segment_clock, sizeof(s->m.segment_clock), "%s", bench_clock_name(rs->b.seg.clock_kind));
	memset(&rs->tot, 0, sizeof(rs->tot));
	return -1;
}

/* Case i of a round: thread count i / RING_NCASES, case i % RING_NCASES (the order of the rows). */
static bool ring_round(void *ctx, unsigned i, unsigned r, bool timed)
{
	struct ring_state *rs = ctx;
	unsigned ti = i / RING_NCASES, c = i % RING_NCASES;
	uint64_t warm_dropped = 0;
	double v = ring_run(&rs->b, ring_cases[c].kind, ring_threads[ti],
			    timed ? &rs->tot.dropped[c][ti] : &warm_dropped, &rs->tot);

	if (timed)
		rs->samples[c][ti][r] = v;
	return !rs->tot.err;
}

/* Warm-up: every case once, untimed, so caches, branch predictors and clocks settle; then the timed rounds. */
static int ring_runs(struct bench_sub *s, void *ctx)
{
	return bench_rounds(RING_NTHREADS * RING_NCASES, 1, s->o.runs, ring_round, ctx) ? -1 : 1;
}

/* Ratios against the 1-thread tsc_read. */
static const struct bench_result *ring_base(const struct bench_table *t, const struct bench_result *r)
{
	return strcmp(r->bench, "tsc_read") ? bench_table_find(t, "tsc_read", "evring", 1) : NULL;
}

static void ring_report(struct bench_sub *s, void *ctx)
{
	struct ring_state *rs = ctx;

	bench_table_column(&s->t, "ratio", 2);
	bench_table_column(&s->t, "dropped", 0);
	for (unsigned ti = 0; ti < RING_NTHREADS; ti++)
		for (unsigned c = 0; c < RING_NCASES; c++) {
			struct bench_result *row = bench_table_add(&s->t, ring_cases[c].bench, "evring", ring_threads[ti],
								   "ns", rs->samples[c][ti], s->o.runs);
			if (!row)
				continue;
			bench_result_set_int(row, "records", rs->b.records);
			if (ring_cases[c].kind == RING_TSC)
				continue;
			rs->dropped += rs->tot.dropped[c][ti];
			bench_result_set_int(row, "dropped", rs->tot.dropped[c][ti]);
		}
	bench_table_ratio(&s->t, "ratio", ring_base); /* last: every row must exist first */
}

/* The text view's closing lines: how it was measured, what was dropped, the target. */
static void ring_print_notes(const struct bench_sub *s, void *ctx)
{
	const struct ring_state *rs = ctx;
	const struct ring_bench *b = &rs->b;
	const struct bench_opts *o = &s->o;
	const struct bench_table *t = &s->t;
	const struct bench_result *tsc = bench_table_find(t, "tsc_read", "evring", 1);
	const struct bench_result *rec = bench_table_find(t, "record_exclusive", "evring", 1);
	const struct bench_result *rec2 = bench_table_find(t, "record_exclusive", "evring", 2);

	printf("\n%" PRIu64 " records per thread per run, %u-byte body + 8-byte commit word, one %s read per "
	       "record;\n%u timed runs per case after one warm-up; 2-thread rows give the mean of the threads' "
	       "ns/record;\nratio = median / 1-thread tsc_read median.\n",
	       b->records, RING_BODY, bench_clock_name(b->seg.clock_kind), o->runs);
	printf("threads pinned: thread 0 on CPU %d, thread 1 on CPU %d.\n", bench_cpu_of(0), bench_cpu_of(1));
	if (o->runs < 5)
		printf("note: %u runs; a measurement wants at least 5.\n", o->runs);
	printf("dropped in timed runs: %" PRIu64 "%s\n", rs->dropped,
	       rs->dropped ? " (INVALID: the drop path was measured)" : "");
	if (!tsc || !rec || !(tsc->st.median > 0))
		return;
	if (rs->dropped) {
		printf("target: not judged, records were dropped\n");
		return;
	}
	printf("target: record_exclusive within %.1fx of tsc_read: %s (1 thread %.2fx, %.2f vs %.2f ns",
	       RING_TARGET, bench_verdict(rec->st.median <= RING_TARGET * tsc->st.median),
	       rec->st.median / tsc->st.median, rec->st.median, tsc->st.median);
	if (rec2)
		printf("; 2 threads %.2fx", rec2->st.median / tsc->st.median);
	printf(")\n");
	if (b->seg.clock_kind != EVR_CLOCK_TSC)
		printf("note: the segment clock is %s, not the TSC: each record pays clock_gettime.\n",
		       bench_clock_name(b->seg.clock_kind));
}

/* A drop, or a record missing or damaged, makes the run invalid: exit status 1. */
static int ring_check(struct bench_sub *s, void *ctx)
{
	const struct ring_state *rs = ctx;
	const struct ring_totals *tot = &rs->tot;
	int rc = 0;

	(void)s;
	if (rs->dropped) {
		fprintf(stderr, "evring-bench ring: %" PRIu64 " records dropped in timed runs: the lane filled\n",
			rs->dropped);
		rc = 1;
	}
	if (tot->mismatch || tot->bad || tot->skipped) {
		fprintf(stderr,
			"evring-bench ring: the drain's count differs from what was written by %" PRIu64
			" records; %" PRIu64 " damaged, %" PRIu64 " skipped\n",
			tot->mismatch, tot->bad, tot->skipped);
		rc = 1;
	}
	return rc;
}

static void ring_teardown(struct bench_sub *s, void *ctx, int status)
{
	(void)s;
	(void)status;
	ring_close(&((struct ring_state *)ctx)->b);
}

static const struct bench_stages ring_stages = {
	.usage = ring_usage,
	.setup = ring_setup,
	.run = ring_runs,
	.report = ring_report,
	.notes = ring_print_notes,
	.check = ring_check,
	.teardown = ring_teardown,
};

int bench_ring_main(int argc, char **argv)
{
	return bench_sub_main(&ring_stages, &ring_state, argc, argv);
}
