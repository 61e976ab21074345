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
 * and, in the same invocation, the same three-field event through its peers:
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
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evring/evring.h>

#include "bench.h"
#include "bench_lttng.h"

#define PROD_CALLS 400000u	   /* per thread per run; see prod_calls_max */
#define PROD_CALLS_QUICK 20000u
#define PROD_DISABLED_MULT 16u	   /* the disabled site is cheap: more calls for a measurable run */
#define PROD_THREADS_MAX 2u
#define PROD_LANES (PROD_THREADS_MAX + 1) /* an exclusive lane per thread, and the shared lane */
#define PROD_LANE_BYTES EVR_LANE_BYTES_MAX
#define PROD_MRING_BYTES (64u << 20)
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

enum prod_kind { K_CLOCK, K_DISABLED, K_EVENT0, K_EVENT3, K_SPAN, K_NOOP, K_MUTEX, K_FPRINTF, K_LTTNG4M, K_LTTNG };

/* The in-process ring behind a mutex: the baseline a lock-free ring has to beat. */
struct mring {
	pthread_mutex_t lock;
	uint8_t *buf;
	uint64_t mask;	  /* bytes - 1 */
	uint64_t tail;	  /* next position, absolute; under the lock */
	uint64_t head;	  /* the consumer's position; moved between runs */
	uint64_t records; /* committed; under the lock */
	uint64_t lost;	  /* dropped for want of room; under the lock */
	uint32_t clock_kind;
};

struct prod_bench {
	struct evr_segment *seg;
	struct evr_reader reader;
	uint8_t *buf;	      /* the reader's copy of a body */
	uint64_t calls;	      /* per thread in the run being made */
	struct mring mr;
	FILE *file;	      /* the fprintf peer's */
	struct bench_lttng lt;
	enum prod_kind lt_kind; /* the LTTng-UST case the running session serves */
	volatile uint64_t sink[PROD_THREADS_MAX];
};

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

/* ---- the no-op -------------------------------------------------------- */

/* An empty call with event3's arguments; the asm keeps them (and the call) from being optimised away. */
__attribute__((noinline)) static void noop_event3(uint64_t a, uint32_t b, const char *c)
{
	__asm__ volatile("" : : "r"(a), "r"(b), "r"(c) : "memory");
}

static double noop_thread(struct bench_thread *t)
{
	struct prod_bench *b = t->arg;
	uint64_t n = b->calls, t0, t1;

	bench_thread_ready(t);
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++)
		noop_event3(i, (uint32_t)i, "abcdef");
	t1 = bench_now_ns();
	return (double)(t1 - t0) / (double)n;
}

/* ---- the mutex ring --------------------------------------------------- */

/* msgpack-c's packer writing into the ring; defined here so the encoder inlines as evring's does. */
struct mring_enc {
	uint8_t *p;
};

static inline int mring_enc_write(void *data, const char *buf, size_t len)
{
	struct mring_enc *e = data;

	memcpy(e->p, buf, len);
	e->p += len;
	return 0;
}

/*
 * One event3 record: the timestamp (read before the lock, as cheap for the
 * baseline as it can be), then under the lock a reservation bounded like
 * evring's, the same msgpack body, and a release store of a length word.
 * Returns false when the ring was full (counted).
 */
static inline bool mring_event3(struct mring *r, uint64_t a, uint32_t b, const char *c)
{
	const uint64_t bound = evr_rec_bytes(3 + 9 * 3 + 9 + 5 + EVR_STR_LIMIT + 6);
	uint64_t ts = evr_clock_read(r->clock_kind), pos, off, pad, len;
	struct mring_enc e;
	msgpack_packer pk;

	pthread_mutex_lock(&r->lock);
	pos = r->tail;
	off = pos & r->mask;
	pad = off + bound > r->mask + 1 ? r->mask + 1 - off : 0; /* no record wraps: pad to the end */
	if (pos + pad + bound - r->head > r->mask + 1) {
		r->lost++;
		pthread_mutex_unlock(&r->lock);
		return false;
	}
	if (pad) {
		evr_st_rel_64((uint64_t *)(void *)(r->buf + off), pad << 8 | EVR_REC_PAD);
		pos += pad;
		off = 0;
	}
	e.p = r->buf + off + EVR_WORD_BYTES;
	msgpack_packer_init(&pk, &e, mring_enc_write);
	msgpack_pack_array(&pk, 6);
	msgpack_pack_uint64(&pk, ts);
	msgpack_pack_uint64(&pk, 1); /* the site id */
	msgpack_pack_uint64(&pk, 0); /* the span id */
	msgpack_pack_uint64(&pk, a);
	msgpack_pack_uint32(&pk, b);
	msgpack_pack_str_with_body(&pk, c, strnlen(c, EVR_STR_LIMIT));
	len = (uint64_t)(e.p - (r->buf + off));
	evr_st_rel_64((uint64_t *)(void *)(r->buf + off), len << 8 | EVR_REC_EVENT);
	r->tail = pos + ((len + 7) & ~(uint64_t)7);
	r->records++;
	pthread_mutex_unlock(&r->lock);
	return true;
}

static double mutex_thread(struct bench_thread *t)
{
	struct prod_bench *b = t->arg;
	uint64_t n = b->calls, t0, t1;

	bench_thread_ready(t);
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++)
		mring_event3(&b->mr, i, (uint32_t)i, "abcdef");
	t1 = bench_now_ns();
	return (double)(t1 - t0) / (double)n;
}

static int mring_init(struct mring *r, uint32_t clock_kind)
{
	memset(r, 0, sizeof(*r));
	r->buf = malloc(PROD_MRING_BYTES);
	if (!r->buf)
		return -ENOMEM;
	memset(r->buf, 0, PROD_MRING_BYTES); /* faults every page in */
	r->mask = PROD_MRING_BYTES - 1;
	r->clock_kind = clock_kind;
	pthread_mutex_init(&r->lock, NULL);
	return 0;
}

/* The consumer's part, between runs: takes everything. Returns the records taken; *lost the drops. */
static uint64_t mring_drain(struct mring *r, uint64_t *lost)
{
	uint64_t n;

	pthread_mutex_lock(&r->lock);
	r->head = r->tail;
	n = r->records;
	*lost = r->lost;
	r->records = 0;
	r->lost = 0;
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* ---- fprintf ---------------------------------------------------------- */

static double fprintf_thread(struct bench_thread *t)
{
	struct prod_bench *b = t->arg;
	uint32_t kind = b->seg->clock_kind;
	uint64_t n = b->calls, t0, t1;
	FILE *f = b->file;

	bench_thread_ready(t);
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++)
		fprintf(f, "%" PRIu64 " bench.event3 a=%" PRIu64 " b=%" PRIu32 " c=%s\n", evr_clock_read(kind), i,
			(uint32_t)i, "abcdef");
	t1 = bench_now_ns();
	return (double)(t1 - t0) / (double)n;
}

/* A file under $TMPDIR (or /tmp), unlinked at once: it holds nothing after the bench. */
static FILE *file_open(void)
{
	const char *dir = getenv("TMPDIR");
	char path[512];
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s/evring-bench-fprintf.XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return NULL;
	unlink(path);
	f = fdopen(fd, "w");
	if (!f)
		close(fd);
	return f;
}

/* Between runs: the lines written go (the file would grow with each run); 0 or -EIO. */
static int file_reset(FILE *f)
{
	int bad = fflush(f) != 0 || ferror(f);

	if (ftruncate(fileno(f), 0) != 0)
		bad = 1;
	rewind(f);
	return bad ? -EIO : 0;
}

/* ---- LTTng-UST -------------------------------------------------------- */

static double lttng_thread(struct bench_thread *t)
{
	struct prod_bench *b = t->arg;
	uint64_t n = b->calls, t0, t1;

	bench_thread_ready(t);
	t0 = bench_now_ns();
	b->lt.loop(n);
	t1 = bench_now_ns();
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
	{ "event3", "noop", K_NOOP, noop_thread, 0 },
	{ "event3", "mutex_ring", K_MUTEX, mutex_thread, 0 },
	{ "event3", "fprintf", K_FPRINTF, fprintf_thread, 0 },
	{ "event3", "lttng_ust_4m8", K_LTTNG4M, lttng_thread, 0 },
	{ "event3", "lttng_ust", K_LTTNG, lttng_thread, 0 },
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
		got = mring_drain(&b->mr, &mlost);
		want = nthreads * calls;
		lost += mlost;
	} else if (c->kind == K_FPRINTF && file_reset(b->file) != 0) {
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

static void prod_print_notes(const struct prod_bench *b, const struct bench_opts *o, const struct bench_table *t,
			     const double *clock_ns, uint64_t dropped)
{
	const struct bench_result *e1 = bench_table_find(t, "event3", "evring", 1);
	const struct bench_result *e2 = bench_table_find(t, "event3", "evring", 2);
	const struct bench_result *d1 = bench_table_find(t, "disabled", "evring", 1);
	const struct bench_result *s1 = bench_table_find(t, "span", "evring", 1);
	const struct bench_result *l1 = bench_table_find(t, "event3", "lttng_ust", 1);

	printf("\n%" PRIu64 " calls per thread per run (disabled: %" PRIu64 "); %u timed runs per case after one "
	       "warm-up round;\n2-thread rows give the mean of the threads' ns/call; ratio = median / evring event3 "
	       "median, same threads;\nscaling = 2-thread median / 1-thread median.\n",
	       b->calls, b->calls * PROD_DISABLED_MULT, o->runs);
	printf("threads pinned: thread 0 on CPU %d, thread 1 on CPU %d.\n", bench_cpu_of(0), bench_cpu_of(1));
	printf("mutex_ring: one ring for all threads, same msgpack body, timestamp read before the lock.\n"
	       "fprintf: one FILE* for all threads (stdio locks it per call), default buffering, a file "
	       "under $TMPDIR.\n");
	if (o->runs < 5)
		printf("note: %u runs; a measurement wants at least 5.\n", o->runs);
	if (o->quick)
		printf("note: --quick is a smoke test: its runs are too short to measure, and 2 threads barely "
		       "overlap in them.\n");
	printf("dropped in timed runs: %" PRIu64 "%s\n", dropped, dropped ? " (INVALID: the drop path was measured)" : "");
	if (!e1 || dropped)
		return;
	printf("target: event3 <= %.1fx one clock read with 1 thread: %s (%.2f ns, %.2fx)\n", TARGET_EVENT3_CLOCKS,
	       met(e1->st.median <= TARGET_EVENT3_CLOCKS * clock_ns[0]), e1->st.median, e1->st.median / clock_ns[0]);
	if (e2 && e1->st.median > 0)
		printf("target: event3 per-thread cost with 2 threads within %.2fx of 1 thread: %s (%.2fx)\n",
		       TARGET_SCALING, met(e2->st.median <= TARGET_SCALING * e1->st.median), e2->st.median / e1->st.median);
	printf("        the same scaling elsewhere:");
	for (size_t i = 0; i < t->n; i++) {
		const struct bench_result *r = &t->rows[i], *r1;
		if (r->threads != 2 || !strcmp(r->bench, "event3"))
			continue;
		r1 = bench_table_find(t, r->bench, r->system, 1);
		if (r1 && r1->st.median > 0)
			printf(" %s %.2fx", r->bench, r->st.median / r1->st.median);
	}
	printf("; the %s read alone %.2fx\n", bench_clock_name(b->seg->clock_kind),
	       clock_ns[0] > 0 ? clock_ns[1] / clock_ns[0] : NAN);
	if (d1)
		printf("target: disabled site <= %.0f ns: %s (%.2f ns)\n", TARGET_DISABLED_NS,
		       met(d1->st.median <= TARGET_DISABLED_NS), d1->st.median);
	if (s1)
		printf("target: span pair <= %.1fx one clock read: %s (%.2f ns, %.2fx)\n", TARGET_SPAN_CLOCKS,
		       met(s1->st.median <= TARGET_SPAN_CLOCKS * clock_ns[0]), s1->st.median, s1->st.median / clock_ns[0]);
	if (l1 && e1->st.median > 0)
		printf("LTTng-UST event3, 1 thread: %.2f ns, %.1fx evring's\n", l1->st.median, l1->st.median / e1->st.median);
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

/* ---- main ------------------------------------------------------------- */

int bench_producer_main(int argc, char **argv)
{
	static struct prod_bench b;
	static double samples[PROD_NCASES][PROD_NTHREADS][BENCH_RUNS_MAX];
	struct prod_totals tot;
	struct bench_table t = { 0 };
	struct bench_machine m;
	struct bench_opts o;
	char why[BENCH_NOTE_BYTES - 64];
	int rc;
	bool no_lttng = false;
	const struct bench_own own[] = { { "--no-lttng", &no_lttng, NULL, NULL, 0 } };
	uint64_t calls, dropped = 0, lt_discarded[2] = { 0, 0 };
	bool lt_ran[2] = { false, false }, lt_known[2] = { false, false }; /* [0] 4 MiB x 8, [1] default buffers */
	char lt_buffers[2][64] = { "", "" };
	double clock_ns[PROD_NTHREADS], others_s, others_share, instr[BENCH_COUNT_CASES];
	char count_why[200];
	bool counted;
	struct bench_load load;

	rc = bench_args(&o, argc, argv, own, 1, prod_usage);
	if (rc >= 0)
		return rc;
	calls = o.records ? o.records : o.quick ? PROD_CALLS_QUICK : PROD_CALLS;
	if (calls > prod_calls_max()) {
		fprintf(stderr,
			"evring-bench producer: --records %" PRIu64 " would fill a lane or the mutex ring (at most "
			"%" PRIu64 " calls per thread)\n",
			calls, prod_calls_max());
		return 2;
	}
	/* Before anything else runs: the count is a child of its own, under callgrind. */
	counted = bench_count_measure(instr, count_why, sizeof(count_why)) == 0;
	bench_cpus_init();
	bench_machine_read(&m);
	if (prod_open(&b))
		return 1;
	snprintf(m.segment_clock, sizeof(m.segment_clock), "%s", bench_clock_name(b.seg->clock_kind));
	if (mring_init(&b.mr, b.seg->clock_kind) != 0 || !(b.file = file_open())) {
		fprintf(stderr, "evring-bench producer: cannot set up the mutex ring or the fprintf file: %s\n",
			strerror(errno ? errno : ENOMEM));
		prod_close(&b);
		return 1;
	}

	/* One line, in either view, when LTTng-UST is not measured: the table's note. */
	if (no_lttng) {
		memset(&b.lt, 0, sizeof(b.lt));
		bench_table_note(&t, "LTTng-UST not measured: --no-lttng");
	} else if (bench_lttng_setup(&b.lt, &BENCH_LTTNG_4M8, why, sizeof(why)) != 0) {
		bench_table_note(&t, "LTTng-UST not measured: %s", why);
	} else {
		b.lt_kind = K_LTTNG4M;
		lt_ran[0] = true;
		snprintf(lt_buffers[0], sizeof(lt_buffers[0]), "%s", b.lt.buffers);
	}

	memset(&tot, 0, sizeof(tot));
	bench_load_start(&load);
	/* The disabled site's first use registers it (one record); then a consumer would turn it off. */
	{
		uint64_t d = 0;
		prod_run(&b, &prod_cases[K_DISABLED], 1, 1, &d, &tot);
		tot.mismatch = 0;
		if (bench_site_disable(b.seg, "bench", "disabled") < 1) {
			fprintf(stderr, "evring-bench producer: the disabled site is not in the metadata area\n");
			bench_lttng_teardown(&b.lt);
			prod_close(&b);
			return 1;
		}
	}
	/* Warm-up: every case once, untimed: sites register, caches and predictors settle. */
	for (unsigned ti = 0; ti < PROD_NTHREADS; ti++)
		for (unsigned c = 0; c < PROD_NCASES; c++) {
			uint64_t d = 0;
			if (case_on(&b, &prod_cases[c]))
				prod_run(&b, &prod_cases[c], prod_threads[ti], case_calls(prod_cases[c].kind, calls), &d,
					 &tot);
		}
	for (unsigned r = 0; r < o.runs; r++)
		for (unsigned ti = 0; ti < PROD_NTHREADS; ti++)
			for (unsigned c = 0; c < PROD_NCASES; c++)
				if (case_on(&b, &prod_cases[c]))
					samples[c][ti][r] = prod_run(&b, &prod_cases[c], prod_threads[ti],
								     case_calls(prod_cases[c].kind, calls),
								     &tot.dropped[c][ti], &tot);
	/*
	 * LTTng-UST with its default buffers: a session of its own, after the
	 * others (the module stays registered; only the session changes).
	 */
	if (b.lt.on) {
		const struct prod_case *lc = &prod_cases[K_LTTNG];

		if (bench_lttng_session_restart(&b.lt, &BENCH_LTTNG_DEFAULT, why, sizeof(why)) != 0) {
			bench_table_note(&t, "LTTng-UST with default buffers not measured: %s", why);
		} else {
			b.lt_kind = K_LTTNG;
			lt_ran[1] = true;
			snprintf(lt_buffers[1], sizeof(lt_buffers[1]), "%s", b.lt.buffers);
			for (unsigned ti = 0; ti < PROD_NTHREADS; ti++) {
				uint64_t d = 0;
				prod_run(&b, lc, prod_threads[ti], calls, &d, &tot);
			}
			for (unsigned r = 0; r < o.runs; r++)
				for (unsigned ti = 0; ti < PROD_NTHREADS; ti++)
					samples[K_LTTNG][ti][r] =
						prod_run(&b, lc, prod_threads[ti], calls, &tot.dropped[K_LTTNG][ti], &tot);
		}
		/* The restart read the 4 MiB session's count. */
		lt_discarded[0] = b.lt.discarded;
		lt_known[0] = b.lt.discarded_known;
	}
	b.calls = calls;
	others_s = bench_load_others(&load, &others_share);
	bench_lttng_teardown(&b.lt);
	if (lt_ran[1]) {
		lt_discarded[1] = b.lt.discarded;
		lt_known[1] = b.lt.discarded_known;
	} else if (lt_ran[0]) {
		lt_discarded[0] = b.lt.discarded;
		lt_known[0] = b.lt.discarded_known;
	}

	bench_table_column(&t, "instr", 0);
	bench_table_column(&t, "clocks", 2);
	bench_table_column(&t, "ratio", 2);
	bench_table_column(&t, "scaling", 2);
	bench_table_column(&t, "dropped", 0);
	bench_table_column(&t, "calls", 0);
	for (unsigned ti = 0; ti < PROD_NTHREADS; ti++) {
		struct bench_stats cs;
		bench_stats_of(&cs, samples[K_CLOCK][ti], o.runs);
		clock_ns[ti] = cs.median;
	}
	for (unsigned c = 0; c < PROD_NCASES; c++)
		for (unsigned ti = 0; ti < PROD_NTHREADS; ti++) {
			const struct prod_case *pc = &prod_cases[c];
			struct bench_result *row;

			if (pc->kind == K_CLOCK || !case_ran(lt_ran, pc))
				continue;
			row = bench_table_add(&t, pc->bench, pc->system, prod_threads[ti], "ns", samples[c][ti], o.runs);
			if (!row)
				continue;
			if (!case_lttng(pc->kind) && pc->kind != K_NOOP) {
				dropped += tot.dropped[c][ti];
				bench_result_set_int(row, "dropped", tot.dropped[c][ti]);
			}
			bench_result_set_int(row, "calls", case_calls(pc->kind, calls));
		}
	/* Ratios and scaling last: every row must exist first. */
	for (size_t i = 0; i < t.n; i++) {
		struct bench_result *r = &t.rows[i];
		const struct bench_result *base = bench_table_find(&t, "event3", "evring", r->threads);
		const struct bench_result *one = bench_table_find(&t, r->bench, r->system, 1);

		if (strcmp(r->system, "evring") && base && base->st.median > 0)
			bench_result_set(r, "ratio", r->st.median / base->st.median);
		if (clock_ns[r->threads - 1] > 0)
			bench_result_set(r, "clocks", r->st.median / clock_ns[r->threads - 1]);
		for (unsigned c = 0; counted && c < BENCH_COUNT_CASES; c++)
			if (!strcmp(r->system, "evring") && !strcmp(r->bench, bench_count_cases[c].name))
				bench_result_set(r, "instr", instr[c]);
		if (r->threads == 2 && one && one->st.median > 0)
			bench_result_set(r, "scaling", r->st.median / one->st.median);
	}
	if (counted)
		bench_table_note(&t, "instr: instructions per call, counted by callgrind on the TSC path (evring-bench count), "
				     "which no host or load changes; clocks: median / one segment clock read, same run and threads");
	else
		bench_table_note(&t, "instructions not counted: %s", count_why);
	bench_table_note(&t,
			 "segment clock %s: one read alone costs %.2f ns on 1 thread, %.2f ns per thread on 2 "
			 "(scaling %.2f); medians",
			 bench_clock_name(b.seg->clock_kind), clock_ns[0], clock_ns[1],
			 clock_ns[0] > 0 ? clock_ns[1] / clock_ns[0] : NAN);
	if (others_s >= 0)
		bench_table_note(&t,
				 "other processes used %.1f CPU-s (%.0f%% of the CPU time) during the runs%s",
				 others_s, 100 * others_share,
				 others_share > 0.05 ? ": a busy machine, figures are disturbed, 2-thread ones most" : "");
	for (unsigned v = 0; v < 2; v++) {
		const char *sys = v ? "lttng_ust" : "lttng_ust_4m8";
		uint64_t total = 0;

		if (!lt_ran[v])
			continue;
		for (unsigned ti = 0; ti < PROD_NTHREADS; ti++)
			total += (uint64_t)(o.runs + 1) * prod_threads[ti] * calls; /* warm-up round included */
		if (lt_known[v])
			bench_table_note(&t,
					 "%s: user-space session in discard mode, per-user buffers %s per CPU (%s); "
					 "%" PRIu64 " of %" PRIu64 " events discarded (%.1f%%)%s",
					 sys, lt_buffers[v][0] ? lt_buffers[v] : "unknown", v ? "LTTng's default" : "asked for",
					 lt_discarded[v], total, 100.0 * (double)lt_discarded[v] / (double)total,
					 lt_discarded[v] ? ": its figure includes the cheaper discard path" : "");
		else
			bench_table_note(&t, "%s: user-space session in discard mode, per-user buffers %s per CPU; its "
					     "discarded count could not be read",
					 sys, lt_buffers[v][0] ? lt_buffers[v] : "unknown");
	}
	bench_table_note(&t, "noop: an empty call (not inlined) with event3's arguments, no timestamp: the floor; "
			     "ratio = peer median / evring event3 median, same threads");

	if (o.json) {
		prod_target_notes(&t, dropped, clock_ns[0]);
		bench_print_json(stdout, &m, &t);
	} else {
		bench_print_text(stdout, &m, &t);
		prod_print_notes(&b, &o, &t, clock_ns, dropped);
	}
	fflush(stdout);

	rc = 0;
	if (dropped) {
		fprintf(stderr, "evring-bench producer: %" PRIu64 " records dropped in timed runs: a ring filled\n",
			dropped);
		rc = 1;
	}
	if (tot.mismatch || tot.skipped) {
		fprintf(stderr,
			"evring-bench producer: the drain's count differs from what was written by %" PRIu64
			" records; %" PRIu64 " skipped\n",
			tot.mismatch, tot.skipped);
		rc = 1;
	}
	if (tot.fallbacks) {
		fprintf(stderr, "evring-bench producer: %" PRIu64 " writers found no exclusive lane free\n",
			tot.fallbacks);
		rc = 1;
	}
	if (tot.file_error) {
		fprintf(stderr, "evring-bench producer: writing the fprintf file failed\n");
		rc = 1;
	}
	bench_table_free(&t);
	fclose(b.file);
	free(b.mr.buf);
	prod_close(&b);
	return rc;
}
