/*
 * bench_producer_peers.c: the peers `evring-bench producer` measures
 * evring's three-field event against (bench_producer.c describes them and
 * runs them): an empty call, a ring in process memory behind a mutex,
 * fprintf to a buffered file, and an LTTng-UST tracepoint. Each worker times
 * b->calls calls on its thread, as the evring workers do.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_producer.h"

/* ---- the no-op -------------------------------------------------------- */

/* An empty call with event3's arguments; the asm keeps them (and the call) from being optimised away. */
__attribute__((noinline)) static void noop_event3(uint64_t a, uint32_t b, const char *c)
{
	__asm__ volatile("" : : "r"(a), "r"(b), "r"(c) : "memory");
}

double prod_noop_thread(struct bench_thread *t)
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

double prod_mutex_thread(struct bench_thread *t)
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

int prod_mring_init(struct mring *r, uint32_t clock_kind)
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
uint64_t prod_mring_drain(struct mring *r, uint64_t *lost)
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

double prod_fprintf_thread(struct bench_thread *t)
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
FILE *prod_file_open(void)
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
int prod_file_reset(FILE *f)
{
	int bad = fflush(f) != 0 || ferror(f);

	if (ftruncate(fileno(f), 0) != 0)
		bad = 1;
	rewind(f);
	return bad ? -EIO : 0;
}

/* ---- LTTng-UST -------------------------------------------------------- */

double prod_lttng_thread(struct bench_thread *t)
{
	struct prod_bench *b = t->arg;
	uint64_t n = b->calls, t0, t1;

	bench_thread_ready(t);
	t0 = bench_now_ns();
	b->lt.loop(n);
	t1 = bench_now_ns();
	return (double)(t1 - t0) / (double)n;
}
