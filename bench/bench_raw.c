/*
 * bench_raw.c: `evring-bench raw`, the drain rate of `evring record --raw`
 * on one core: small records (a 12-byte body, 24 bytes with the commit
 * word) that fill every lane of a segment, then drained by a consumer
 * writing a raw capture to /dev/shm, exactly as `evring record --raw` does
 * (evr_consumer_capture_raw, evr_consumer_poll until every record is read;
 * the file is written, runs copied out, heads released). Against, in the
 * same run and on the same pinned CPU:
 *
 *   reader  the same records read one by one with evr_reader_next, the live
 *           drain's reader stage alone (no decoding): what a live consumer
 *           pays before it decodes anything
 *   memcpy  the same bytes copied out of the lanes with memcpy: memory speed
 *
 * Rows are Mrec/s (median over the runs); "vs_memcpy" is a row's median
 * over memcpy's, the share of memory speed it reaches. The target,
 * 50 M records/s for raw_drain, is reported, never enforced. A record
 * missing, lost or skipped makes the run invalid (exit 1).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evring/consumer.h>
#include <evring/ring.h>

#include "bench.h"

#define RAW_LANES 4u			/* exclusive lanes written (the segment has one more, shared) */
#define RAW_LANE_BYTES (16u << 20)	/* half of each is written per run */
#define RAW_LANE_BYTES_QUICK (1u << 20)
#define RAW_BODY 12u			/* msgpack [ts u64, site, span]: 1 + 9 + 1 + 1 */
#define RAW_TARGET_MRECS 50.0		/* the target */
#define RAW_NAME "evr-bench-raw"
#define RAW_COPY (1u << 19)		/* memcpy's piece: what one run copies at most (drain.c's RUN_BYTES) */

enum raw_case { RAW_DRAIN, RAW_READER, RAW_MEMCPY, RAW_NCASES };
static const char *const raw_bench[RAW_NCASES] = { "raw_drain", "reader_drain", "memcpy" };
static const char *const raw_system[RAW_NCASES] = { "evring", "evring", "memcpy" };

static struct raw_state {
	struct evr_segment seg;
	struct evr_consumer *c; /* attached once (its mapping faulted in by the warm-up), in slot 0 */
	struct evr_reader rd;	/* the reader case's, in a slot of its own */
	int rd_slot;
	struct evr_writer w[RAW_LANES];
	char shm[128], cap[160];
	uint64_t per_lane;    /* records written per lane per fill */
	uint64_t filled[RAW_LANES][2]; /* per lane: the first and the end position of the last fill */
	uint8_t *copy;	      /* memcpy's destination */
	double samples[RAW_NCASES][BENCH_RUNS_MAX];
	uint64_t missing, lost, skipped; /* runs that did not deliver what was written; records lost, skipped */
	struct evr_raw_stats last;	 /* the last raw run's counts */
	struct bench_load load;
	int err;
} raw_state;

static void raw_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench raw [options]\n\n"
		   "Records per second `evring record --raw` drains on one CPU (the capture on /dev/shm), against\n"
		   "evr_reader_next alone and memcpy of the same bytes, in the same run. %u lanes of %u MiB\n"
		   "(--quick: %u MiB), half of each written with %u-byte bodies per run.\n\n",
		RAW_LANES, RAW_LANE_BYTES >> 20, RAW_LANE_BYTES_QUICK >> 20, RAW_BODY);
	bench_opts_usage(f);
}

/* Writes per_lane records into every lane (nothing dropped: half a lane each). */
static void raw_fill(struct raw_state *rs)
{
	uint8_t body[RAW_BODY] = { 0x93, 0xcf, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00 };

	for (uint32_t i = 0; i < RAW_LANES; i++) {
		rs->filled[i][0] = rs->w[i].tail;
		for (uint64_t k = 0; k < rs->per_lane; k++) {
			uint64_t ts = k;

			memcpy(body + 2, &ts, sizeof(ts)); /* any value: the bench decodes nothing */
			if (!evr_writer_write(&rs->w[i], EVR_REC_EVENT, body, sizeof(body))) {
				rs->err = 1;
				fprintf(stderr, "evring-bench raw: lane %u refused a record of the fill\n", i);
				return;
			}
		}
		rs->filled[i][1] = rs->w[i].tail;
	}
}

/* The records of a fill; the THREAD records of the first are not counted (read, not written by the bench). */
static uint64_t raw_records(const struct raw_state *rs)
{
	return rs->per_lane * RAW_LANES;
}

/* The consumer's ring readers' counters, all sources. */
static void raw_counts(struct raw_state *rs, struct evr_raw_stats *st)
{
	memset(st, 0, sizeof(*st));
	evr_consumer_raw_stats(rs->c, st);
}

/*
 * `evring record --raw`'s drain: a raw capture at path, polled until the
 * fill is read. Returns Mrec/s.
 */
static double raw_drain_into(struct raw_state *rs, const char *path)
{
	struct evr_raw_stats a, b;
	char err[512];
	uint64_t t0, t1, want = raw_records(rs);

	if (evr_consumer_capture_raw(rs->c, path, 0, err, sizeof(err)) != 0) {
		fprintf(stderr, "evring-bench raw: %s\n", err);
		rs->err = 1;
		return 0;
	}
	raw_counts(rs, &a);
	t0 = bench_now_ns();
	do {
		evr_consumer_poll(rs->c);
		raw_counts(rs, &b);
	} while (b.delivered - a.delivered < want && bench_now_ns() - t0 < 60000000000ull);
	t1 = bench_now_ns();
	rs->last = b;
	/* THREAD records (one per lane, first fill) come in runs too: never more than the lanes. */
	if (b.delivered - a.delivered < want || b.delivered - a.delivered > want + RAW_LANES)
		rs->missing++;
	rs->lost += b.lost - a.lost;
	rs->skipped += b.skipped - a.skipped;
	if (evr_consumer_capture_end(rs->c) != 0)
		rs->err = 1;
	return (double)want / ((double)(t1 - t0) / 1e3); /* records per microsecond: Mrec/s */
}

static double raw_run_drain(struct raw_state *rs)
{
	double v = raw_drain_into(rs, rs->cap);

	unlink(rs->cap);
	return v;
}

static double raw_run_reader(struct raw_state *rs)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_record rec;
	uint64_t n = 0, t0, t1, want = raw_records(rs);

	t0 = bench_now_ns();
	for (uint32_t l = 0; l < rs->seg.lane_count; l++) {
		while (evr_reader_next(&rs->rd, l, &rec, buf, sizeof(buf)) == 1)
			n += rec.type == EVR_REC_EVENT;
		evr_reader_release(&rs->rd, l);
	}
	t1 = bench_now_ns();
	if (n != want)
		rs->missing += n > want ? n - want : want - n;
	return (double)want / ((double)(t1 - t0) / 1e3);
}

/* The fill's bytes copied out lane by lane (a fill never wraps a lap more than once: two pieces at most). */
static double raw_run_memcpy(struct raw_state *rs)
{
	uint64_t t0 = bench_now_ns(), t1, mask = rs->seg.lane_bytes - 1;

	for (uint32_t l = 0; l < RAW_LANES; l++) {
		uint64_t from = rs->filled[l][0], to = rs->filled[l][1], off = from & mask, n = to - from;
		const uint8_t *data = evr_segment_lane_data(&rs->seg, l);
		uint64_t first = n < rs->seg.lane_bytes - off ? n : rs->seg.lane_bytes - off;

		/* In pieces of a run's size into one buffer, as the drain copies runs. */
		for (uint64_t at = 0; at < n; at += RAW_COPY) {
			uint64_t k = n - at < RAW_COPY ? n - at : RAW_COPY, o = (off + at) & mask;
			uint64_t a = k < rs->seg.lane_bytes - o ? k : rs->seg.lane_bytes - o;

			memcpy(rs->copy, data + o, a);
			memcpy(rs->copy + a, data, k - a);
			__asm__ __volatile__("" ::"r"(rs->copy) : "memory"); /* the copy is used */
		}
		(void)first;
	}
	t1 = bench_now_ns();
	return (double)raw_records(rs) / ((double)(t1 - t0) / 1e3);
}

/* What a case did not read, read untimed by the other two readers: room for the next fill. */
static void raw_drain_untimed(struct raw_state *rs, enum raw_case c)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_record rec;

	if (c != RAW_READER)
		for (uint32_t l = 0; l < rs->seg.lane_count; l++) {
			while (evr_reader_next(&rs->rd, l, &rec, buf, sizeof(buf)) == 1)
				;
			evr_reader_release(&rs->rd, l);
		}
	if (c != RAW_DRAIN)
		raw_drain_into(rs, "/dev/null");
}

static int raw_setup(struct bench_sub *s, void *ctx)
{
	struct raw_state *rs = ctx;
	uint64_t lane_bytes = s->o.quick ? RAW_LANE_BYTES_QUICK : RAW_LANE_BYTES;
	struct evr_segment_config cfg = { .lanes = RAW_LANES + 1, .lane_bytes = lane_bytes, .program = RAW_NAME };
	char err[EVR_ERR_MAX];
	cpu_set_t one;

	bench_cpus_init();
	bench_machine_read(&s->m);
	CPU_ZERO(&one);
	CPU_SET(bench_cpu_of(0), &one);
	if (sched_setaffinity(0, sizeof(one), &one) != 0)
		fprintf(stderr, "evring-bench raw: cannot pin to CPU %d: %s\n", bench_cpu_of(0), strerror(errno));
	evr_segment_name(rs->shm, sizeof(rs->shm), getpid(), RAW_NAME);
	snprintf(rs->cap, sizeof(rs->cap), "/dev/shm/evr-bench-raw-%d.evrcap", (int)getpid());
	if (getenv("EVR_BENCH_RAW_CAP"))
		snprintf(rs->cap, sizeof(rs->cap), "%s", getenv("EVR_BENCH_RAW_CAP"));
	if (evr_segment_create(&rs->seg, rs->shm, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "evring-bench raw: %s\n", err);
		return 1;
	}
	snprintf(s->m.segment_clock, sizeof(s->m.segment_clock), "%s", bench_clock_name(rs->seg.clock_kind));
	for (uint32_t i = 0; i < RAW_LANES; i++)
		if (evr_writer_open(&rs->w[i], &rs->seg, (uint32_t)getpid(), (uint32_t)getpid() + i, 0) != 0 ||
		    rs->w[i].shared) {
			fprintf(stderr, "evring-bench raw: cannot open writer %u on an exclusive lane\n", i);
			return 1;
		}
	rs->per_lane = (lane_bytes / 2) / evr_rec_bytes(RAW_BODY);
	if (s->o.records && s->o.records / RAW_LANES < rs->per_lane)
		rs->per_lane = s->o.records / RAW_LANES;
	rs->copy = malloc(RAW_COPY);
	if (!rs->copy)
		return 1;
	{
		struct evr_consumer_opts o = { .quiet = true };

		rs->c = evr_consumer_new(&o, err, sizeof(err));
		if (!rs->c || evr_consumer_attach_name(rs->c, rs->shm, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)) < 0) {
			fprintf(stderr, "evring-bench raw: %s\n", err);
			return 1;
		}
		rs->rd_slot = evr_consumer_slot_claim_flags(&rs->seg, (uint32_t)getpid(), EVR_SLOT_ANOTHER, NULL, 0, NULL);
		if (rs->rd_slot < 0 || evr_reader_init_slot(&rs->rd, &rs->seg, (uint32_t)rs->rd_slot) != 0) {
			fprintf(stderr, "evring-bench raw: no second consumer slot for the reader case\n");
			return 1;
		}
	}
	bench_load_start(&rs->load);
	return -1;
}

static bool raw_round(void *ctx, unsigned c, unsigned r, bool timed)
{
	struct raw_state *rs = ctx;
	double v;

	/* Each case right after a fill of its own: the same bytes, as warm in the caches as the fill left them. */
	raw_fill(rs);
	if (rs->err)
		return false;
	v = c == RAW_DRAIN ? raw_run_drain(rs) : c == RAW_READER ? raw_run_reader(rs) : raw_run_memcpy(rs);
	raw_drain_untimed(rs, (enum raw_case)c);
	if (timed)
		rs->samples[c][r] = v;
	return !rs->err;
}

static int raw_runs(struct bench_sub *s, void *ctx)
{
	return bench_rounds(RAW_NCASES, 1, s->o.runs, raw_round, ctx) ? -1 : 1;
}

static const struct bench_result *raw_base(const struct bench_table *t, const struct bench_result *r)
{
	return strcmp(r->bench, "memcpy") ? bench_table_find(t, "memcpy", "memcpy", 1) : NULL;
}

static void raw_report(struct bench_sub *s, void *ctx)
{
	struct raw_state *rs = ctx;
	const struct bench_result *drain, *reader;
	double others, share;

	bench_table_column(&s->t, "vs_memcpy", 3);
	bench_table_column(&s->t, "records", 0);
	for (unsigned c = 0; c < RAW_NCASES; c++) {
		struct bench_result *row = bench_table_add(&s->t, raw_bench[c], raw_system[c], 1, "Mrec/s",
							   rs->samples[c], s->o.runs);
		if (row)
			bench_result_set_int(row, "records", raw_records(rs));
	}
	bench_table_ratio(&s->t, "vs_memcpy", raw_base);
	drain = bench_table_find(&s->t, "raw_drain", "evring", 1);
	reader = bench_table_find(&s->t, "reader_drain", "evring", 1);
	if (drain && reader && reader->st.median > 0)
		bench_table_note(&s->t,
				 "target: record --raw drains >= %.0f M small records/s on one core: %s (%.1f M/s, "
				 "%.2fx evr_reader_next alone, %.2f of memcpy speed); %" PRIu64 " runs a drain, %.0f records "
				 "a run",
				 RAW_TARGET_MRECS, bench_verdict(drain->st.median >= RAW_TARGET_MRECS), drain->st.median,
				 drain->st.median / reader->st.median,
				 bench_table_find(&s->t, "memcpy", "memcpy", 1)
					 ? drain->st.median / bench_table_find(&s->t, "memcpy", "memcpy", 1)->st.median
					 : 0.0,
				 rs->last.runs, rs->last.runs ? (double)rs->last.run_records / (double)rs->last.runs : 0.0);
	bench_table_note(&s->t, "pinned to CPU %d; %" PRIu64 " records of %u bytes (%u-byte bodies) per run over %u "
				"lanes of %" PRIu64 " KiB; the capture on /dev/shm",
			 bench_cpu_of(0), raw_records(rs), (unsigned)evr_rec_bytes(RAW_BODY), RAW_BODY, RAW_LANES,
			 rs->seg.lane_bytes >> 10);
	others = bench_load_others(&rs->load, &share);
	bench_table_note_load(&s->t, "other processes", others, share, ": a busy machine, figures are disturbed");
}

static int raw_check(struct bench_sub *s, void *ctx)
{
	const struct raw_state *rs = ctx;

	(void)s;
	if (rs->missing || rs->lost || rs->skipped || rs->err) {
		fprintf(stderr,
			"evring-bench raw: %" PRIu64 " runs with records missing, %" PRIu64 " lost, %" PRIu64
			" skipped: the runs are invalid\n",
			rs->missing, rs->lost, rs->skipped);
		return 1;
	}
	return 0;
}

static void raw_teardown(struct bench_sub *s, void *ctx, int status)
{
	struct raw_state *rs = ctx;

	(void)s;
	(void)status;
	evr_consumer_close(rs->c);
	if (rs->rd.cur) {
		evr_reader_fini(&rs->rd);
		evr_consumer_slot_release_one(&rs->seg, (uint32_t)rs->rd_slot, (uint32_t)getpid());
	}
	for (uint32_t i = 0; i < RAW_LANES; i++)
		if (rs->w[i].seg)
			evr_writer_close(&rs->w[i]);
	if (rs->seg.base) {
		evr_segment_close(&rs->seg);
		evr_segment_unlink(rs->shm);
	}
	unlink(rs->cap);
	free(rs->copy);
}

static const struct bench_stages raw_stages = {
	.usage = raw_usage,
	.setup = raw_setup,
	.run = raw_runs,
	.report = raw_report,
	.check = raw_check,
	.teardown = raw_teardown,
};

int bench_raw_main(int argc, char **argv)
{
	return bench_sub_main(&raw_stages, &raw_state, argc, argv);
}
