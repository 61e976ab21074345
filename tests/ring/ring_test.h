/* ring_test.h: helpers the ring tests share. */
#ifndef EVRING_RING_TEST_H
#define EVRING_RING_TEST_H

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <evring/ring.h>

#ifdef EVR_UNDER_TSAN
#define EVR_TEST_SCALE 10 /* ThreadSanitizer runs the same tests with fewer records */
#else
#define EVR_TEST_SCALE 1
#endif

static inline uint32_t test_tid(void)
{
	return (uint32_t)syscall(SYS_gettid);
}

/* Creates a fresh segment with a name unique to this process and tag; unlinks any leftover first. */
/* A segment whose consumers go stale after stale_ns (0: the default). */
static inline void test_segment_stale(struct evr_segment *seg, const char *tag, uint32_t lanes, uint64_t lane_bytes,
				      uint64_t stale_ns)
{
	struct evr_segment_config cfg = { .lanes = lanes, .lane_bytes = lane_bytes, .program = "evring-test",
					  .stale_ns = stale_ns };
	char name[128], err[EVR_ERR_MAX];
	int rc;

	cr_assert(evr_segment_name(name, sizeof(name), getpid(), tag) > 0);
	evr_segment_unlink(name);
	rc = evr_segment_create(seg, name, &cfg, err, sizeof(err));
	cr_assert_eq(rc, 0, "create %s: %s", name, err);
}

static inline void test_segment(struct evr_segment *seg, const char *tag, uint32_t lanes, uint64_t lane_bytes)
{
	test_segment_stale(seg, tag, lanes, lane_bytes, 0);
}

static inline void test_segment_destroy(struct evr_segment *seg)
{
	evr_segment_unlink(seg->shm_name);
	evr_segment_close(seg);
}

/*
 * A test record body: sequence number, writer id and a checksum over both and
 * the filler, so a torn or foreign body is detected.
 */
struct test_body {
	uint64_t seq;
	uint32_t writer;
	uint32_t len; /* bytes of filler that follow */
	uint64_t check;
};

static inline uint64_t test_mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static inline uint32_t test_body_fill(void *dst, uint32_t writer, uint64_t seq, uint32_t filler)
{
	struct test_body *b = dst;
	uint8_t *f = (uint8_t *)(b + 1);
	uint64_t h = test_mix(seq * 31 + writer);

	b->seq = seq;
	b->writer = writer;
	b->len = filler;
	for (uint32_t i = 0; i < filler; i++) {
		f[i] = (uint8_t)(h >> ((i & 7) * 8));
		h += f[i];
	}
	b->check = test_mix(h ^ seq ^ ((uint64_t)writer << 40) ^ filler);
	return (uint32_t)sizeof(*b) + filler;
}

/* True when a body delivered by the reader is exactly what test_body_fill wrote. */
static inline bool test_body_ok(const void *src, uint32_t body_len)
{
	const struct test_body *b = src;
	const uint8_t *f = (const uint8_t *)(b + 1);
	uint64_t h;

	if (body_len < sizeof(*b) || b->len > body_len - sizeof(*b))
		return false;
	h = test_mix(b->seq * 31 + b->writer);
	for (uint32_t i = 0; i < b->len; i++) {
		if (f[i] != (uint8_t)(h >> ((i & 7) * 8)))
			return false;
		h += f[i];
	}
	return b->check == test_mix(h ^ b->seq ^ ((uint64_t)b->writer << 40) ^ b->len);
}

#endif /* EVRING_RING_TEST_H */
