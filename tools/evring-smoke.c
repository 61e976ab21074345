/*
 * evring-smoke: the ring on its own, end to end, in one process. Two writer
 * threads each write a run of records into their lanes while a reader thread
 * drains them; the program prints what was written, delivered and lost, and
 * exits non-zero if the three do not reconcile.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <evring/ring.h>

#define WRITERS 2
#define RECORDS 2000000u

static struct evr_segment seg;
static volatile int writers_done;

static void *writer_main(void *arg)
{
	uint64_t id = (uintptr_t)arg;
	struct evr_writer w;
	uint64_t body[4];

	evr_writer_open(&w, &seg, (uint32_t)getpid(), (uint32_t)syscall(SYS_gettid), 0);
	for (uint64_t i = 0; i < RECORDS; i++) {
		body[0] = evr_clock_read(w.clock_kind);
		body[1] = id;
		body[2] = i;
		body[3] = body[0] ^ i;
		evr_writer_write(&w, EVR_REC_EVENT, body, sizeof(body));
	}
	evr_writer_close(&w);
	__atomic_add_fetch(&writers_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

int main(void)
{
	struct evr_segment_config cfg = { .lanes = 4, .lane_bytes = 1u << 20, .program = "evring-smoke" };
	char name[128], err[EVR_ERR_MAX];
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_reader r;
	struct evr_record rec;
	pthread_t th[WRITERS];
	uint64_t t0, t1, bad = 0;
	struct evr_clock_map map;
	struct evr_clock_calib cal;

	evr_segment_name(name, sizeof(name), getpid(), "evring-smoke");
	if (evr_segment_create(&seg, name, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "evring-smoke: %s\n", err);
		return 1;
	}
	evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST);
	printf("evring-smoke: segment /dev/shm%s, %u lanes of %" PRIu64 " KiB, clock %s\n", name,
	       seg.lane_count, seg.lane_bytes >> 10, seg.clock_kind == EVR_CLOCK_TSC ? "TSC" : "CLOCK_MONOTONIC");

	t0 = evr_clock_monotonic_ns();
	for (uintptr_t i = 0; i < WRITERS; i++)
		pthread_create(&th[i], NULL, writer_main, (void *)i);
	for (;;) {
		int done = __atomic_load_n(&writers_done, __ATOMIC_ACQUIRE) == WRITERS;
		uint64_t got = 0;
		for (uint32_t l = 0; l < seg.lane_count; l++) {
			while (evr_reader_next(&r, l, &rec, buf, sizeof(buf)) == 1) {
				const uint64_t *b = (const uint64_t *)(const void *)rec.body;
				got++;
				if (rec.type == EVR_REC_EVENT && b[3] != (b[0] ^ b[2]))
					bad++;
			}
			evr_reader_release(&r, l);
		}
		if (done && got == 0)
			break;
	}
	t1 = evr_clock_monotonic_ns();
	for (uintptr_t i = 0; i < WRITERS; i++)
		pthread_join(th[i], NULL);

	cal = (struct evr_clock_calib){ seg.clock_kind, seg.hdr->clock_anchor_ticks, seg.hdr->clock_anchor_mono_ns,
					seg.hdr->clock_anchor_real_ns, seg.hdr->clock_mult };
	evr_clock_map_init(&map, &cal);
	uint64_t written = (uint64_t)WRITERS * RECORDS;
	uint64_t events = r.stats.delivered - r.stats.lost_records;
	uint64_t pending = 0;
	for (uint32_t l = 0; l < seg.lane_count; l++)
		pending += seg.lanes[l].lost_pending;
	printf("  written    %" PRIu64 " records by %d threads in %.1f ms\n", written, WRITERS, (t1 - t0) / 1e6);
	printf("  delivered  %" PRIu64 "\n  lost       %" PRIu64 " (reported in %" PRIu64 " LOST records, %" PRIu64
	       " still pending)\n",
	       events, r.stats.lost + pending, r.stats.lost_records, pending);
	printf("  corrupt    %" PRIu64 "   skipped %" PRIu64 "\n", bad, r.stats.skipped_bad + r.stats.skipped_stuck);
	printf("  clock      TSC->ns rate %.6f ns/tick after refining\n", (double)map.mult / 4294967296.0);
	evr_reader_fini(&r);
	evr_segment_unlink(name);
	evr_segment_close(&seg);
	if (events + r.stats.lost + pending != written || bad) {
		printf("evring-smoke: FAILED: delivered + lost != written\n");
		return 1;
	}
	printf("evring-smoke: ok, delivered + lost == written\n");
	return 0;
}
