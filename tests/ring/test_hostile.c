/*
 * test_hostile.c: the segment code and the reader against a segment that
 * lies. The producer is not trusted: its header, lane table, records and
 * metadata may hold any bytes. A bad segment must be refused with a message
 * that says what is wrong; a bad record must be counted and stepped over;
 * nothing may be read outside the mapping, and what was accepted before the
 * damage must still come out intact.
 *
 * Most rounds run the reader on a copy of a real segment laid out between two
 * PROT_NONE pages, so a read past the last lane (or before the header) faults
 * at once instead of landing in whatever the kernel mapped next; ASan covers
 * the reader's own buffers.
 */
#include "ring_test.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define META_SMALL 4096u
#define PAGE 4096u
/*
 * One timeout for every test here: Criterion 2.4.1 leaks a timer entry (and
 * LeakSanitizer fails the run) when tests with different timeouts overlap.
 */
#define TEST_TIMEOUT_S 120

/* ---- helpers ----------------------------------------------------------- */

/* splitmix64: every round is reproducible from its seed alone. */
static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
	return n ? rnd(s) % n : 0;
}

static void fill_random(uint64_t *s, void *dst, size_t len)
{
	uint8_t *p = dst;

	while (len >= 8) {
		uint64_t v = rnd(s);
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	while (len--)
		*p++ = (uint8_t)rnd(s);
}

/* Names of the shm objects this test process created, unlinked even when an assertion aborts it. */
static char created[8][128];
static int ncreated;

static void unlink_created(void)
{
	for (int i = 0; i < ncreated; i++)
		evr_segment_unlink(created[i]);
	ncreated = 0;
}

static void remember(const char *name)
{
	for (int i = 0; i < ncreated; i++)
		if (!strcmp(created[i], name))
			return;
	cr_assert_lt(ncreated, 8, "too many segments in one test");
	snprintf(created[ncreated++], sizeof(created[0]), "%s", name);
}

/* A real segment with a small metadata area, so copies and rounds stay cheap. */
static void make_segment(struct evr_segment *seg, const char *tag, uint32_t lanes, uint64_t lane_bytes,
			 uint64_t meta_bytes)
{
	struct evr_segment_config cfg = { .lanes = lanes,
					  .lane_bytes = lane_bytes,
					  .meta_bytes = meta_bytes,
					  .clock_kind = EVR_CLOCK_MONOTONIC,
					  .program = "evring-hostile" };
	char name[128], err[EVR_ERR_MAX];
	int rc;

	cr_assert_gt(evr_segment_name(name, sizeof(name), getpid(), tag), 0);
	evr_segment_unlink(name);
	remember(name);
	rc = evr_segment_create(seg, name, &cfg, err, sizeof(err));
	cr_assert_eq(rc, 0, "create %s: %s", name, err);
}

/*
 * A private copy of a segment with a PROT_NONE page on each side. The copy's
 * pointers are the original's rebased, so the reader sees the same layout.
 */
struct guarded {
	uint8_t *map;
	size_t map_bytes;
	struct evr_segment seg;
};

static void guarded_copy(struct guarded *g, const struct evr_segment *src)
{
	uint8_t *base;

	g->map_bytes = src->bytes + 2 * PAGE;
	g->map = mmap(NULL, g->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(g->map, MAP_FAILED, "mmap %zu bytes", g->map_bytes);
	cr_assert_eq(mprotect(g->map, PAGE, PROT_NONE), 0);
	cr_assert_eq(mprotect(g->map + PAGE + src->bytes, PAGE, PROT_NONE), 0);
	base = g->map + PAGE;
	memcpy(base, src->base, src->bytes);
	g->seg = *src;
	g->seg.base = base;
	g->seg.hdr = (struct evr_seg_header *)(void *)base;
	g->seg.lanes = (struct evr_lane *)(void *)(base + ((uint8_t *)src->lanes - src->base));
	g->seg.slot_lanes = (struct evr_slot_lane *)(void *)(base + ((uint8_t *)src->slot_lanes - src->base));
	g->seg.meta = base + (src->meta - src->base);
	g->seg.data = base + (src->data - src->base);
	g->seg.creator = false;
	cr_assert_eq(evr_segment_validate(base, src->bytes, NULL, 0), 0, "the guarded copy must validate");
	/* The last lane must end exactly at the guard page, or the guard proves nothing. */
	cr_assert_eq(evr_segment_lane_data(&g->seg, g->seg.lane_count - 1) + g->seg.lane_bytes, base + src->bytes);
}

static void guarded_free(struct guarded *g)
{
	munmap(g->map, g->map_bytes);
}

/* The pid of a process that has exited and been reaped: an owner that is certainly dead. */
static uint32_t dead_pid(void)
{
	pid_t pid = fork();
	int st;

	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0)
		_exit(0);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return (uint32_t)pid;
}

/* True when /proc/self/maps maps a file whose path holds name. */
static bool mapped(const char *name)
{
	char line[512];
	bool found = false;
	FILE *f = fopen("/proc/self/maps", "r");

	cr_assert_not_null(f, "open /proc/self/maps");
	while (fgets(line, sizeof(line), f))
		if (strstr(line, name))
			found = true;
	fclose(f);
	return found;
}

/* ---- (a) evr_segment_validate on a buffer ------------------------------ */

static void expect_validate(const uint8_t *img, uint64_t bytes, int expect, const char *needle, const char *what)
{
	char err[EVR_ERR_MAX] = "";
	int rc = evr_segment_validate(img, bytes, err, sizeof(err));

	cr_assert_eq(rc, expect, "%s: validate returned %d (%s), expected %d", what, rc, err, expect);
	if (expect == 0)
		return;
	cr_assert_str_not_empty(err, "%s: refused without a message", what);
	if (needle)
		cr_assert_not_null(strstr(err, needle), "%s: message \"%s\" does not mention \"%s\"", what, err,
				   needle);
}

/* Restores the pristine image, applies stmt to its header h and checks the verdict. */
#define HDR_CASE(expect, needle, stmt)                                                 \
	do {                                                                           \
		memcpy(img, pristine, bytes);                                          \
		{                                                                      \
			struct evr_seg_header *h = (struct evr_seg_header *)(void *)img; \
			stmt;                                                          \
		}                                                                      \
		expect_validate(img, bytes, (expect), (needle), #stmt);                \
	} while (0)

Test(hostile, validate_refuses_bad_headers, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment seg;
	uint8_t *img, *pristine;
	uint64_t bytes;

	make_segment(&seg, "validate", 2, EVR_LANE_BYTES_MIN, META_SMALL);
	bytes = seg.bytes;
	/* Heap copies of the whole segment: ASan reports any read past their end. */
	pristine = malloc(bytes);
	img = malloc(bytes);
	cr_assert(pristine && img);
	memcpy(pristine, seg.base, bytes);
	test_segment_destroy(&seg);
	expect_validate(pristine, bytes, 0, NULL, "pristine copy");

	/* An object not yet published, or too small to hold a header. */
	memset(img, 0, bytes);
	expect_validate(img, bytes, -EAGAIN, "being created", "all-zero header");
	HDR_CASE(-EAGAIN, NULL, memset(h->magic, 0, 4));
	expect_validate(pristine, EVR_HEADER_BYTES - 1, -EBADMSG, "smaller", "mapping shorter than a header");
	expect_validate(pristine, 0, -EBADMSG, "smaller", "empty mapping");

	/* Magic and version. */
	HDR_CASE(-EBADMSG, "magic", memcpy(h->magic, "EVRINX\0\0", 8));
	HDR_CASE(-EBADMSG, "magic", memcpy(h->magic, "evring\0\0", 8));
	HDR_CASE(-EBADMSG, "magic", h->magic[7] = 1);
	HDR_CASE(-EPROTO, "3.0", (h->abi_major = 3, h->abi_minor = 0));
	HDR_CASE(-EPROTO, "supports 2.", h->abi_major = 3);
	HDR_CASE(-EPROTO, "3.7", (h->abi_major = 3, h->abi_minor = 7));
	/* A 1.x segment (one consumer slot, heads in the lane table) is refused by name, as 1.x refuses 2.0. */
	HDR_CASE(-EPROTO, "1.1, this reader supports 2.0", (h->abi_major = 1, h->abi_minor = 1));
	HDR_CASE(-EPROTO, "0.0", (h->abi_major = 0, h->abi_minor = 0));
	HDR_CASE(-EPROTO, "65535", h->abi_major = 0xffff);
	/* A newer minor only appends fields: still readable, unless it says this reader is too old for it. */
	HDR_CASE(0, NULL, h->abi_minor = EVR_ABI_MINOR + 9);
	HDR_CASE(-EPROTO, "needs a reader of 2.3 or later, this reader supports 2.0",
		 (h->abi_minor = 3, h->abi_minor_required = 3));
	HDR_CASE(0, NULL, (h->abi_minor = 3, h->abi_minor_required = EVR_ABI_MINOR));

	/* The consumer slots and their lines. */
	HDR_CASE(-EBADMSG, "consumer slots", h->consumer_slots = 0);
	HDR_CASE(-EBADMSG, "consumer slots", h->consumer_slots = EVR_CONSUMER_SLOTS_MAX + 1);
	HDR_CASE(-EBADMSG, "slot lanes", h->slot_lanes_offset = EVR_HEADER_BYTES);
	HDR_CASE(-EBADMSG, "slot lanes", h->slot_lanes_offset += 8);
	HDR_CASE(-EBADMSG, "slot lanes", h->slot_lanes_offset = h->meta_offset);
	HDR_CASE(-EBADMSG, "slot lanes", h->slot_lanes_offset = UINT64_MAX - 63);

	/* Sizes. */
	HDR_CASE(-EBADMSG, "header size", h->header_bytes = 2 * EVR_HEADER_BYTES);
	HDR_CASE(-EBADMSG, "header says", h->segment_bytes = bytes + PAGE);
	HDR_CASE(-EBADMSG, "header says", h->segment_bytes = bytes - 1);
	HDR_CASE(-EBADMSG, "header says", h->segment_bytes = 0);
	HDR_CASE(-EBADMSG, "header says", h->segment_bytes = UINT64_MAX);
	/* The mapping is shorter than the header claims (a truncated object). */
	expect_validate(pristine, bytes - PAGE, -EBADMSG, "header says", "truncated mapping");

	/* Lane count and lane size. */
	HDR_CASE(-EBADMSG, "lane count", h->lane_count = 0);
	HDR_CASE(-EBADMSG, "lane count", h->lane_count = 1);
	HDR_CASE(-EBADMSG, "lane count", h->lane_count = EVR_LANES_MAX + 1);
	HDR_CASE(-EBADMSG, "lane count", h->lane_count = UINT32_MAX);
	HDR_CASE(-EBADMSG, "do not fit", h->lane_count = 3);
	HDR_CASE(-EBADMSG, "lane entry", h->lane_entry_bytes = 64);
	HDR_CASE(-EBADMSG, "lane size", h->lane_bytes = 0);
	HDR_CASE(-EBADMSG, "lane size", h->lane_bytes = EVR_LANE_BYTES_MIN + 8);
	HDR_CASE(-EBADMSG, "lane size", h->lane_bytes = EVR_LANE_BYTES_MIN - 1);
	HDR_CASE(-EBADMSG, "lane size", h->lane_bytes = EVR_LANE_BYTES_MIN / 2);
	HDR_CASE(-EBADMSG, "lane size", h->lane_bytes = (uint64_t)EVR_LANE_BYTES_MAX * 2);
	HDR_CASE(-EBADMSG, "lane size", h->lane_bytes = 1ull << 63);
	HDR_CASE(-EBADMSG, "lane size", h->lane_bytes = UINT64_MAX);
	HDR_CASE(-EBADMSG, "do not fit", h->lane_bytes = 2 * EVR_LANE_BYTES_MIN);

	/* Offsets past the end, overlapping, misaligned or wrapping. */
	HDR_CASE(-EBADMSG, "lane table", h->lane_table_offset = 0);
	HDR_CASE(-EBADMSG, "lane table", h->lane_table_offset = 2 * EVR_HEADER_BYTES);
	HDR_CASE(-EBADMSG, "metadata", h->meta_offset = bytes);
	HDR_CASE(-EBADMSG, "metadata", h->meta_offset = bytes + PAGE);
	HDR_CASE(-EBADMSG, "metadata", h->meta_offset = UINT64_MAX & ~7ull);
	HDR_CASE(-EBADMSG, "metadata", h->meta_offset = EVR_HEADER_BYTES + 64); /* inside the lane table */
	HDR_CASE(-EBADMSG, "metadata", h->meta_offset = EVR_HEADER_BYTES);
	HDR_CASE(-EBADMSG, "metadata", h->meta_offset += 4);
	HDR_CASE(-EBADMSG, "metadata", h->meta_bytes = 0);
	HDR_CASE(-EBADMSG, "metadata", h->meta_bytes = META_SMALL - 8);
	HDR_CASE(-EBADMSG, "metadata", h->meta_bytes = META_SMALL + 4);
	HDR_CASE(-EBADMSG, "metadata", h->meta_bytes = (uint64_t)EVR_META_BYTES_MAX + 8);
	HDR_CASE(-EBADMSG, "metadata", h->meta_bytes = UINT64_MAX & ~7ull);
	HDR_CASE(-EBADMSG, "lane data", h->meta_bytes = 2 * META_SMALL); /* runs into the lanes */
	HDR_CASE(-EBADMSG, "lane data", h->lanes_offset = h->meta_offset + 8);
	HDR_CASE(-EBADMSG, "lane data", h->lanes_offset = bytes + 8);
	HDR_CASE(-EBADMSG, "lane data", h->lanes_offset = UINT64_MAX & ~7ull);
	HDR_CASE(-EBADMSG, "lane data", h->lanes_offset += 4);
	HDR_CASE(-EBADMSG, "do not fit", h->lanes_offset += 8);
	/* A tight but consistent layout is accepted: the checks are not just "equals what create wrote". */
	HDR_CASE(0, NULL,
		 (h->slot_lanes_offset = EVR_HEADER_BYTES + (uint64_t)h->lane_count * EVR_LANE_ENTRY_BYTES,
		  h->meta_offset = h->slot_lanes_offset + (uint64_t)h->consumer_slots * h->lane_count * EVR_SLOT_LANE_BYTES));

	/* Clock. */
	HDR_CASE(-EBADMSG, "clock kind", h->clock_kind = 0);
	HDR_CASE(-EBADMSG, "clock kind", h->clock_kind = 3);
	HDR_CASE(-EBADMSG, "clock calibration", h->clock_mult = 0);
	HDR_CASE(-EBADMSG, "clock calibration", h->clock_mult = UINT64_MAX);

	free(img);
	free(pristine);
}

/*
 * Random bytes over the header fields: whatever the verdict, a segment that
 * validates must describe a layout inside the mapping.
 */
Test(hostile, validate_random_headers, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment seg;
	uint8_t *img, *pristine;
	uint64_t bytes, accepted = 0, refused = 0;

	make_segment(&seg, "validate-rnd", 3, EVR_LANE_BYTES_MIN, META_SMALL);
	bytes = seg.bytes;
	pristine = malloc(bytes);
	img = malloc(bytes);
	cr_assert(pristine && img);
	memcpy(pristine, seg.base, bytes);
	test_segment_destroy(&seg);

	for (uint64_t seed = 1; seed <= 20000; seed++) {
		uint64_t s = seed;
		const struct evr_seg_header *h = (const struct evr_seg_header *)(const void *)img;
		char err[EVR_ERR_MAX] = "";
		int n = 1 + (int)below(&s, 8), rc;

		memcpy(img, pristine, bytes);
		for (int i = 0; i < n; i++) {
			/* Mostly the layout fields (8-191); sometimes the magic or the whole header. */
			uint64_t at = below(&s, 4) ? 8 + below(&s, 184) : below(&s, EVR_HEADER_BYTES);
			img[at] = below(&s, 2) ? (uint8_t)rnd(&s) : img[at] ^ (uint8_t)(1u << below(&s, 8));
		}
		if (below(&s, 16) == 0)
			fill_random(&s, img + 8, 184);
		rc = evr_segment_validate(img, bytes, err, sizeof(err));
		cr_assert(rc == 0 || rc == -EBADMSG || rc == -EPROTO || rc == -EAGAIN,
			  "seed %llu: validate returned %d (%s)", (unsigned long long)seed, rc, err);
		if (rc) {
			refused++;
			cr_assert_str_not_empty(err, "seed %llu: refused without a message", (unsigned long long)seed);
			continue;
		}
		accepted++;
		cr_assert(h->lane_count >= 2 && h->lane_count <= EVR_LANES_MAX, "seed %llu", (unsigned long long)seed);
		cr_assert(h->lane_bytes >= EVR_LANE_BYTES_MIN && !(h->lane_bytes & (h->lane_bytes - 1)));
		cr_assert_leq(h->lane_table_offset + (uint64_t)h->lane_count * EVR_LANE_ENTRY_BYTES, h->meta_offset,
			      "seed %llu: accepted a lane table running into the metadata", (unsigned long long)seed);
		cr_assert_leq(h->meta_offset + h->meta_bytes, h->lanes_offset,
			      "seed %llu: accepted metadata running into the lanes", (unsigned long long)seed);
		cr_assert_leq(h->lanes_offset + (uint64_t)h->lane_count * h->lane_bytes, bytes,
			      "seed %llu: accepted lanes past the mapping", (unsigned long long)seed);
	}
	/* Both verdicts must have been exercised, or the fuzzing proved nothing. */
	cr_assert_gt(accepted, 100, "only %llu random headers validated", (unsigned long long)accepted);
	cr_assert_gt(refused, 1000, "only %llu random headers were refused", (unsigned long long)refused);
	free(img);
	free(pristine);
}

/* ---- (b) evr_segment_open on a corrupted shm object -------------------- */

enum corruption { C_NONE, C_MAGIC, C_ABI, C_SIZE, C_LANES, C_UNPUBLISHED, C_TRUNCATED, C_TINY };

static void open_corrupted(enum corruption what, int expect, const char *needle)
{
	struct evr_segment seg, rd;
	char name[128], err[EVR_ERR_MAX] = "";
	uint64_t bytes;
	int fd, rc;

	make_segment(&seg, "open", 4, EVR_LANE_BYTES_MIN, META_SMALL);
	snprintf(name, sizeof(name), "%s", seg.shm_name);
	bytes = seg.bytes;
	switch (what) {
	case C_NONE:
		break;
	case C_MAGIC:
		memcpy(seg.hdr->magic, "NOTRING!", 8);
		break;
	case C_ABI:
		seg.hdr->abi_major = 3;
		seg.hdr->abi_minor = 0;
		break;
	case C_SIZE:
		seg.hdr->segment_bytes = bytes * 2;
		break;
	case C_LANES:
		seg.hdr->lane_count = 100000;
		break;
	case C_UNPUBLISHED:
		memset(seg.hdr->magic, 0, 8);
		break;
	case C_TRUNCATED:
	case C_TINY:
		fd = shm_open(name, O_RDWR, 0);
		cr_assert_geq(fd, 0);
		cr_assert_eq(ftruncate(fd, what == C_TINY ? 100 : (off_t)(bytes - PAGE)), 0);
		close(fd);
		break;
	}
	evr_segment_close(&seg);
	cr_assert(!mapped(name + 1), "the creator's mapping of %s is still there", name);

	rc = evr_segment_open(&rd, name, err, sizeof(err));
	cr_assert_eq(rc, expect, "corruption %d: open returned %d (%s), expected %d", what, rc, err, expect);
	if (expect == 0) {
		cr_assert(mapped(name + 1), "a successful open must show in /proc/self/maps");
		evr_segment_close(&rd);
		evr_segment_unlink(name);
		return;
	}
	cr_assert_null(rd.base, "a refused segment left a mapping in the handle");
	cr_assert(!mapped(name + 1), "corruption %d: the refused segment %s is still mapped", what, name);
	cr_assert_str_not_empty(err);
	if (needle)
		cr_assert_not_null(strstr(err, needle), "message \"%s\" does not mention \"%s\"", err, needle);
	evr_segment_unlink(name);
}

Test(hostile, open_refuses_corrupt_objects, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment rd;
	char name[128], err[EVR_ERR_MAX] = "";

	/* The control case first: the same steps with no damage open and map. */
	open_corrupted(C_NONE, 0, NULL);
	open_corrupted(C_MAGIC, -EBADMSG, "magic");
	open_corrupted(C_ABI, -EPROTO, "3.0");
	open_corrupted(C_SIZE, -EBADMSG, "header says");
	open_corrupted(C_LANES, -EBADMSG, "lane count");
	open_corrupted(C_UNPUBLISHED, -EAGAIN, "being created");
	open_corrupted(C_TRUNCATED, -EBADMSG, "header says");
	open_corrupted(C_TINY, -EBADMSG, "too small");

	cr_assert_gt(evr_segment_name(name, sizeof(name), getpid(), "never-created"), 0);
	evr_segment_unlink(name);
	cr_assert_eq(evr_segment_open(&rd, name, err, sizeof(err)), -ENOENT, "%s", err);
	cr_assert_null(rd.base);
	cr_assert_not_null(strstr(err, name), "message \"%s\" does not name the segment", err);
}

/* ---- (c) random lane table and lane data ------------------------------- */

enum first { FIRST_NONE, FIRST_BAD, FIRST_WAIT, FIRST_RECORD, FIRST_PAD, FIRST_STUCK };

/* What the crafted word at the reader's starting position must lead to. */
struct lane_expect {
	enum first first;
	uint64_t pos;	/* the reader's cursor after init: where the crafted chain starts */
	uint64_t bytes; /* size of the first crafted record */
	uint32_t type;
	uint64_t got;	/* records delivered on the lane this round */
	bool seen;	/* the first delivered record was checked */
};

struct owners {
	uint64_t alive_thread, alive_process, dead;
};

struct fuzz_totals {
	uint64_t rounds, delivered, first_bad, first_wait, first_record, skipped_bad, skipped_dead, skipped_stuck, pads,
		reclaimed, lost_records;
};

/* Every kind of type byte: delivered, skipped, shared-lane states and ones nobody writes. */
static const uint32_t fuzz_types[] = {
	EVR_REC_EVENT, EVR_REC_SPAN_BEGIN, EVR_REC_SPAN_END, EVR_REC_LOST, EVR_REC_PAD, 6, EVR_REC_USER_FIRST,
	EVR_REC_DELIVERABLE_MAX, 0, 64, 0x7f, EVR_REC_BUSY, EVR_REC_SKIPPED, EVR_REC_ABANDONED, 0x83, 0xff,
	EVR_REC_EVENT | EVR_REC_TID, EVR_REC_SPAN_END | EVR_REC_TID, EVR_REC_PAD | EVR_REC_TID,
};

static uint64_t pick_owner(uint64_t *s, const struct owners *o)
{
	switch (below(s, 6)) {
	case 0:
		return 0;
	case 1:
		return o->alive_thread;
	case 2:
		return o->alive_process;
	case 3:
		return o->dead;
	case 4:
		return (o->alive_process) | (uint32_t)rnd(s); /* a live process, a thread it does not have */
	default:
		return rnd(s);
	}
}

static uint64_t pick_head(uint64_t *s, uint64_t lane_bytes)
{
	switch (below(s, 6)) {
	case 0:
		return 0;
	case 1:
		return below(s, 8 * lane_bytes) & ~7ull;
	case 2:
		return rnd(s) & ~7ull;
	case 3:
		return rnd(s); /* off the 8-byte grid */
	case 4:
		return (0 - below(s, 2 * lane_bytes)) & ~7ull; /* positions about to wrap past 2^64 */
	default:
		return below(s, 8 * lane_bytes);
	}
}

static uint64_t pick_tail(uint64_t *s, uint64_t head, uint64_t lane_bytes)
{
	switch (below(s, 7)) {
	case 0:
		return head;
	case 1:
	case 2:
		return head + 8 * below(s, lane_bytes / 8 + 1);
	case 3:
		return head + lane_bytes + 8 * (1 + below(s, 4)); /* more than a lane ahead */
	case 4:
		return head - 8 * (1 + below(s, 4)); /* behind the head */
	case 5:
		return head + below(s, lane_bytes); /* off the grid */
	default:
		return rnd(s);
	}
}

static void fuzz_table(struct evr_segment *seg, uint64_t *s, const struct owners *o)
{
	for (uint32_t i = 0; i < seg->lane_count; i++) {
		struct evr_lane *l = &seg->lanes[i];
		uint64_t head = pick_head(s, seg->lane_bytes);

		if (below(s, 8) == 0) {
			fill_random(s, l, sizeof(*l));
		} else {
			l->owner = pick_owner(s, o);
			evr_segment_slot_lane(seg, 0, i)->head = head;
			l->tail = pick_tail(s, head, seg->lane_bytes);
			l->records = rnd(s);
			l->lost = rnd(s);
			l->lost_pending = below(s, 2) ? 0 : rnd(s);
			l->lost_first_ts = rnd(s);
			l->lost_last_ts = rnd(s);
			l->claims = (uint32_t)rnd(s);
			l->kind = (uint32_t)below(s, 4);
		}
		l->skipped = 0; /* counted by this round's reader, checked below */
	}
}

static void fuzz_data(struct evr_segment *seg, uint64_t *s)
{
	memset(seg->data, 0, (uint64_t)seg->lane_count * seg->lane_bytes);
	for (uint32_t i = 0; i < seg->lane_count; i++) {
		uint8_t *d = evr_segment_lane_data(seg, i);
		uint64_t size = seg->lane_bytes, from, len;

		switch (below(s, 4)) {
		case 0:
			break;
		case 1: /* scattered words */
			for (uint64_t k = below(s, size / 64); k; k--) {
				uint64_t v = rnd(s);
				memcpy(d + (below(s, size / 8) * 8), &v, 8);
			}
			break;
		case 2: /* a random stretch */
			from = below(s, size);
			len = below(s, size - from + 1);
			fill_random(s, d + from, len);
			break;
		default:
			fill_random(s, d, size);
			break;
		}
	}
}

/* A LOST body the reader must refuse: a container claiming billions of elements. */
static void hostile_lost_body(uint64_t *s, uint8_t *body, uint64_t len)
{
	static const uint8_t forms[][6] = {
		{ 0x93, 0xdd, 0xff, 0xff, 0xff, 0xff }, /* [array32(4G), ...] */
		{ 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00 }, /* array32(4G) */
		{ 0xdf, 0xff, 0xff, 0xff, 0xff, 0x00 }, /* map32(4G) */
		{ 0x93, 0xdf, 0x7f, 0xff, 0xff, 0xff }, /* [map32(2G), ...] */
		{ 0x93, 0xc6, 0xff, 0xff, 0xff, 0xf0 }, /* [bin32 past the end, ...] */
		{ 0x92, 0x01, 0x02, 0x00, 0x00, 0x00 }, /* two elements, not three */
	};
	const uint8_t *f = forms[below(s, sizeof(forms) / sizeof(forms[0]))];

	fill_random(s, body, len);
	memcpy(body, f, len < 6 ? len : 6);
}

/*
 * Writes a chain of records, good and bad, starting at the reader's cursor,
 * and notes what the first one must lead to.
 */
static void craft(struct evr_segment *seg, const struct evr_reader *r, uint32_t lane, uint64_t *s,
		  struct lane_expect *e)
{
	const struct evr_cursor *c = &r->cur[lane];
	uint64_t mask = seg->lane_bytes - 1, start = c->pos, p = start;
	uint8_t *data = evr_segment_lane_data(seg, lane);
	bool shared = lane + 1 == seg->lane_count;
	bool before_attach = start - c->deliver_from > UINT64_MAX / 2;
	uint64_t tail = seg->lanes[lane].tail;
	/* A bad word is skipped only when the writers' tail says bytes were written past it. */
	bool covered = !(tail & 7) && tail != start && tail - start <= seg->lane_bytes;
	int n = (int)below(s, 12);

	memset(e, 0, sizeof(*e));
	e->pos = start;
	for (int j = 0; j < n && p - start + EVR_WORD_BYTES <= seg->lane_bytes; j++) {
		uint64_t off = p & mask, room = seg->lane_bytes - off, bytes, w;
		uint32_t type = fuzz_types[below(s, sizeof(fuzz_types) / sizeof(fuzz_types[0]))];
		bool tag_ok = below(s, 8) != 0, plausible, hostile = false, lost_ok = false;
		enum first what;

		if (room < EVR_WORD_BYTES)
			break; /* only a cursor off the grid can get here */
		switch (below(s, 10)) {
		case 0:
			bytes = 0;
			break;
		case 1:
			bytes = 8;
			break;
		case 2:
			bytes = 16;
			break;
		case 3:
		case 4:
			bytes = 8 + 8 * below(s, 64);
			break;
		case 5:
			bytes = room;
			break;
		case 6:
			bytes = room + 8; /* one word past the lane's end */
			break;
		case 7:
			bytes = EVR_RECORD_MAX + 8 * below(s, 2);
			break;
		case 8:
			bytes = (uint64_t)0xffffff << 3; /* the largest size a word can say */
			break;
		default:
			bytes = 8 * below(s, room / 8 + 1);
			break;
		}
		w = evr_rec_word(p, seg->salt, bytes, type);
		bytes = evr_word_bytes(w);
		if (!tag_ok) /* a word left from an earlier lap */
			w = (w & ~(uint64_t)UINT32_MAX) |
			    evr_rec_tag(p - seg->lane_bytes * (1 + below(s, 3)), seg->salt);
		plausible = bytes >= EVR_WORD_BYTES && bytes <= room;
		if (type >= 1 && type <= EVR_REC_DELIVERABLE_MAX)
			plausible = plausible && (type == EVR_REC_PAD || bytes <= EVR_RECORD_MAX);
		else if ((type & EVR_REC_TID) && type != (EVR_REC_TID | EVR_REC_PAD) && (type & ~EVR_REC_TID) >= 1 &&
			 (type & ~EVR_REC_TID) <= EVR_REC_DELIVERABLE_MAX)
			plausible = plausible && bytes >= EVR_WORD_BYTES + EVR_TID_BYTES &&
				    bytes <= EVR_RECORD_MAX + EVR_TID_BYTES;
		else
			plausible = plausible && (type == EVR_REC_SKIPPED || type == EVR_REC_ABANDONED ||
						  (type == EVR_REC_BUSY && shared));
		/* A body must not wrap onto the chain's own first word. */
		if (tag_ok && plausible && p - start + bytes > seg->lane_bytes)
			break;
		memcpy(data + off, &w, sizeof(w));
		if (tag_ok && plausible) {
			uint8_t *body = data + off + EVR_WORD_BYTES;
			uint64_t len = bytes - EVR_WORD_BYTES;

			if (type == EVR_REC_LOST && len >= 32 && below(s, 2))
				lost_ok = evr_lost_encode(body, rnd(s), 1 + below(s, 1000), rnd(s)) > 0;
			else if ((hostile = type == EVR_REC_LOST && len >= 6 && below(s, 2)))
				hostile_lost_body(s, body, len);
			else if (len >= sizeof(struct test_body) + 64 && !(off & 7) && below(s, 2))
				test_body_fill(body, (uint32_t)rnd(s), rnd(s), (uint32_t)below(s, 64));
			else
				fill_random(s, body, len);
		}
		if (j == 0) {
			if (!tag_ok)
				what = FIRST_NONE;
			else if (!plausible)
				what = covered ? FIRST_BAD : FIRST_WAIT;
			else if (hostile) /* a LOST body the decoder refuses, unless read past unopened */
				what = before_attach ? FIRST_NONE : FIRST_BAD;
			else if (type == EVR_REC_PAD || type == EVR_REC_SKIPPED || type == EVR_REC_ABANDONED)
				what = FIRST_PAD;
			else if (type == EVR_REC_BUSY)
				what = FIRST_STUCK;
			else if (type == EVR_REC_LOST && !lost_ok)
				what = FIRST_NONE; /* random bytes that might still decode: no claim */
			else
				what = before_attach ? FIRST_NONE : FIRST_RECORD;
			e->first = what;
			e->bytes = bytes;
			e->type = type;
		}
		p += tag_ok && plausible ? bytes : 8 * (1 + below(s, 4));
	}
}

static void check_record(const struct evr_segment *seg, uint32_t lane, const struct evr_record *rec,
			 const uint8_t *buf, struct lane_expect *e, uint64_t seed)
{
	uint64_t off = rec->pos & (seg->lane_bytes - 1), w, tid_bytes;
	const uint8_t *at = evr_segment_lane_data(seg, lane) + off;
	unsigned long long sd = (unsigned long long)seed;

	cr_assert_eq(rec->lane, lane, "seed %llu: record of lane %u returned for lane %u", sd, rec->lane, lane);
	cr_assert(rec->type >= 1 && rec->type <= EVR_REC_DELIVERABLE_MAX && rec->type != EVR_REC_PAD,
		  "seed %llu: delivered a record of type %u", sd, rec->type);
	cr_assert_leq(rec->body_len, EVR_BODY_MAX, "seed %llu: body of %u bytes", sd, rec->body_len);
	cr_assert_eq(rec->pos & 7, 0, "seed %llu: record at %llu is off the 8-byte grid", sd,
		     (unsigned long long)rec->pos);
	cr_assert_leq(off + EVR_WORD_BYTES + rec->body_len, seg->lane_bytes,
		      "seed %llu: record at offset %llu of %u bytes runs past the lane", sd, (unsigned long long)off,
		      rec->body_len);
	cr_assert_lt(rec->pos - e->pos, (uint64_t)1 << 62, "seed %llu: record before the reader's start", sd);
	cr_assert_eq(rec->body, buf, "seed %llu: body not in the caller's buffer", sd);
	memcpy(&w, at, sizeof(w));
	cr_assert_eq(evr_word_tag(w), evr_rec_tag(rec->pos, seg->salt), "seed %llu: delivered a word with a wrong tag",
		     sd);
	tid_bytes = evr_word_type(w) & EVR_REC_TID ? EVR_TID_BYTES : 0;
	cr_assert_eq(evr_word_bytes(w), (uint64_t)rec->body_len + EVR_WORD_BYTES + tid_bytes, "seed %llu", sd);
	cr_assert_eq(evr_word_type(w) & ~(uint32_t)EVR_REC_TID, rec->type, "seed %llu", sd);
	if (tid_bytes) {
		uint64_t tid;

		memcpy(&tid, at + EVR_WORD_BYTES + rec->body_len, sizeof(tid));
		cr_assert_eq(rec->tid, tid <= UINT32_MAX ? tid : 0, "seed %llu: the trailer's tid", sd);
	} else {
		cr_assert_eq(rec->tid, 0, "seed %llu: a tid without a trailer", sd);
	}
	cr_assert(memcmp(buf, at + EVR_WORD_BYTES, rec->body_len) == 0, "seed %llu: body differs from the lane's",
		  sd);
	if (!e->seen) {
		e->seen = true;
		if (e->first == FIRST_RECORD) {
			cr_assert_eq(rec->pos, e->pos, "seed %llu lane %u: the crafted record at %llu was not first", sd,
				     lane, (unsigned long long)e->pos);
			cr_assert_eq(rec->type, e->type & ~(uint32_t)EVR_REC_TID, "seed %llu", sd);
			cr_assert_eq((uint64_t)rec->body_len + EVR_WORD_BYTES + tid_bytes, e->bytes, "seed %llu", sd);
		}
		if (e->first == FIRST_PAD || e->first == FIRST_BAD || e->first == FIRST_STUCK)
			cr_assert_neq(rec->pos, e->pos, "seed %llu lane %u: delivered a record it had to skip", sd, lane);
	}
}

#define PASSES_MAX 6000
#define PASSES_IDLE 200 /* > 2 x GAP_POLLS: a gap is looked at, timed, then skipped */

/* Reads every lane until nothing moves for PASSES_IDLE passes; reaps now and then. */
static void drain(struct evr_segment *seg, struct evr_reader *r, struct lane_expect *e, uint64_t seed)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_record rec;
	int pass, idle = 0;

	for (pass = 0; pass < PASSES_MAX && idle < PASSES_IDLE; pass++) {
		bool moved = false;

		for (uint32_t l = 0; l < seg->lane_count; l++) {
			int rc;

			while ((rc = evr_reader_next(r, l, &rec, buf, sizeof(buf))) == 1) {
				check_record(seg, l, &rec, buf, &e[l], seed);
				moved = true;
				/* Static bytes hold at most one lap of tags: more means the reader looped. */
				cr_assert_leq(++e[l].got, seg->lane_bytes / 8,
					      "seed %llu lane %u: more records than a lane can hold",
					      (unsigned long long)seed, l);
			}
			cr_assert_eq(rc, 0, "seed %llu: evr_reader_next returned %d", (unsigned long long)seed, rc);
			evr_reader_release(r, l);
		}
		if (pass % 16 == 15) {
			int freed = evr_reader_reap(r);

			cr_assert(freed >= 0 && (uint32_t)freed < seg->lane_count, "seed %llu: reap returned %d",
				  (unsigned long long)seed, freed);
			moved |= freed > 0;
		}
		idle = moved ? 0 : idle + 1;
	}
	cr_assert_lt(pass, PASSES_MAX, "seed %llu: the reader never settled on a segment nobody writes",
		     (unsigned long long)seed);
}

static void fuzz_round(struct evr_segment *seg, uint64_t seed, const struct owners *o, struct fuzz_totals *t)
{
	uint64_t s = seed * 0x2545f4914f6cdd1dull;
	struct lane_expect e[16];
	struct evr_reader r;
	unsigned long long sd = (unsigned long long)seed;

	cr_assert_leq(seg->lane_count, 16);
	fuzz_table(seg, &s, o);
	fuzz_data(seg, &s);
	cr_assert_eq(evr_reader_init(&r, seg, below(&s, 4) ? EVR_READ_FROM_OLDEST : 0), 0);
	r.stuck_timeout_ns = below(&s, 2) ? 0 : 1000; /* the gap and stuck paths run within a round */
	for (uint32_t l = 0; l < seg->lane_count; l++)
		craft(seg, &r, l, &s, &e[l]);
	drain(seg, &r, e, seed);

	for (uint32_t l = 0; l < seg->lane_count; l++) {
		switch (e[l].first) {
		case FIRST_BAD:
			t->first_bad++;
			cr_assert_geq(seg->lanes[l].skipped, 1, "seed %llu lane %u: a bad record at the start was not counted",
				      sd, l);
			cr_assert_geq(r.stats.skipped_bad, 1, "seed %llu lane %u: skipped_bad not counted", sd, l);
			break;
		case FIRST_WAIT:
			t->first_wait++;
			cr_assert_eq(r.cur[l].pos, e[l].pos, "seed %llu lane %u: stepped past a bad word the tail does not cover",
				     sd, l);
			cr_assert_eq(seg->lanes[l].skipped, 0, "seed %llu lane %u: counted %llu skips for one bad word", sd, l,
				     (unsigned long long)seg->lanes[l].skipped);
			cr_assert_eq(e[l].got, 0, "seed %llu lane %u", sd, l);
			break;
		case FIRST_RECORD:
			t->first_record++;
			cr_assert(e[l].seen, "seed %llu lane %u: the good record at the start was not delivered", sd, l);
			break;
		case FIRST_STUCK:
			cr_assert_geq(seg->lanes[l].skipped, 1, "seed %llu lane %u: a stuck reservation was never skipped",
				      sd, l);
			cr_assert_geq(r.stats.skipped_stuck + r.stats.skipped_dead, 1, "seed %llu", sd);
			break;
		case FIRST_PAD:
			cr_assert_geq(r.stats.pads, 1, "seed %llu lane %u: padding not stepped over", sd, l);
			break;
		case FIRST_NONE:
			break;
		}
	}
	/* The delivered count agrees with what the callers saw; nothing is delivered twice. */
	{
		uint64_t got = 0;
		for (uint32_t l = 0; l < seg->lane_count; l++)
			got += e[l].got;
		cr_assert_eq(r.stats.delivered, got, "seed %llu: stats say %llu delivered, the caller got %llu", sd,
			     (unsigned long long)r.stats.delivered, (unsigned long long)got);
	}
	t->rounds++;
	t->delivered += r.stats.delivered;
	t->skipped_bad += r.stats.skipped_bad;
	t->skipped_dead += r.stats.skipped_dead;
	t->skipped_stuck += r.stats.skipped_stuck;
	t->pads += r.stats.pads;
	t->reclaimed += r.stats.reclaimed;
	t->lost_records += r.stats.lost_records;
	evr_reader_fini(&r);
}

static void owners_init(struct owners *o)
{
	o->alive_process = (uint64_t)getpid() << 32;
	o->alive_thread = o->alive_process | test_tid();
	o->dead = ((uint64_t)dead_pid() << 32) | 1;
}

static void check_totals(const struct fuzz_totals *t, const char *what)
{
	cr_log_info("%s: %llu rounds, %llu delivered, %llu bad starts, skipped bad %llu dead %llu stuck %llu, "
		    "%llu pads, %llu reclaimed, %llu LOST",
		    what, (unsigned long long)t->rounds, (unsigned long long)t->delivered,
		    (unsigned long long)t->first_bad, (unsigned long long)t->skipped_bad,
		    (unsigned long long)t->skipped_dead, (unsigned long long)t->skipped_stuck,
		    (unsigned long long)t->pads, (unsigned long long)t->reclaimed, (unsigned long long)t->lost_records);
	/* Every path the rounds are meant to reach was reached. */
	cr_assert_gt(t->delivered, 0, "%s: nothing was ever delivered", what);
	cr_assert_gt(t->first_bad, 0, "%s: no round started on a bad record", what);
	cr_assert_gt(t->first_record, 0, "%s: no round started on a good record", what);
	cr_assert_gt(t->first_wait, 0, "%s: no round started on a bad word past the tail", what);
	cr_assert_gt(t->skipped_bad, 0, "%s", what);
	cr_assert_gt(t->skipped_dead, 0, "%s", what);
	cr_assert_gt(t->skipped_stuck, 0, "%s", what);
	cr_assert_gt(t->pads, 0, "%s", what);
	cr_assert_gt(t->reclaimed, 0, "%s", what);
	cr_assert_gt(t->lost_records, 0, "%s", what);
}

Test(hostile, random_lanes_guarded, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment small, big;
	struct guarded gs, gb;
	struct fuzz_totals ts = { 0 }, tb = { 0 };
	struct owners o;

	owners_init(&o);
	/* The smallest lanes: every length is close to a lane's end. */
	make_segment(&small, "fuzz-small", 4, EVR_LANE_BYTES_MIN, META_SMALL);
	guarded_copy(&gs, &small);
	test_segment_destroy(&small);
	/* Lanes larger than EVR_RECORD_MAX: a record can be too long without leaving the lane. */
	make_segment(&big, "fuzz-big", 3, 128u << 10, META_SMALL);
	guarded_copy(&gb, &big);
	test_segment_destroy(&big);

	for (uint64_t seed = 1; seed <= 2000; seed++)
		fuzz_round(&gs.seg, seed, &o, &ts);
	for (uint64_t seed = 100001; seed <= 100250; seed++)
		fuzz_round(&gb.seg, seed, &o, &tb);
	check_totals(&ts, "4 KiB lanes");
	cr_assert_gt(tb.delivered, 0);
	cr_assert_gt(tb.first_bad, 0);
	guarded_free(&gs);
	guarded_free(&gb);
}

/* The same rounds through evr_segment_open's own mapping of a real object. */
Test(hostile, random_lanes_opened, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment creator, rd;
	struct fuzz_totals t = { 0 };
	struct owners o;
	char err[EVR_ERR_MAX];

	owners_init(&o);
	make_segment(&creator, "fuzz-open", 5, EVR_LANE_BYTES_MIN, META_SMALL);
	cr_assert_eq(evr_segment_open(&rd, creator.shm_name, err, sizeof(err)), 0, "%s", err);
	for (uint64_t seed = 500001; seed <= 500400; seed++)
		fuzz_round(&rd, seed, &o, &t);
	cr_assert_gt(t.delivered, 0);
	cr_assert_gt(t.first_bad, 0);
	cr_assert_gt(t.skipped_bad, 0);
	evr_segment_close(&rd);
	test_segment_destroy(&creator);
}

/* ---- (d) what was accepted before the damage still comes out ----------- */

#define FILLER 40u

/* Writes records first..first+n-1 of writer id; notes where each landed. */
static void write_records(struct evr_writer *w, uint32_t id, uint64_t first, int n, uint64_t *pos)
{
	uint8_t body[sizeof(struct test_body) + FILLER];

	for (int i = 0; i < n; i++) {
		uint32_t len = test_body_fill(body, id, first + (uint64_t)i, FILLER);
		void *p = evr_writer_reserve(w, len);

		cr_assert_not_null(p, "record %llu dropped in a lane with room", (unsigned long long)first + i);
		memcpy(p, body, len);
		if (pos)
			pos[i] = evr_writer_resv_pos(w);
		evr_writer_commit(w, len, EVR_REC_EVENT);
	}
}

struct seen {
	uint64_t seq[64];
	int n;
	uint64_t lost; /* sum of LOST counts */
};

/* Reads a lane until it settles; every EVENT must be intact. */
static void read_lane(struct evr_reader *r, uint32_t lane, struct seen *out)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_record rec;

	for (int pass = 0, idle = 0; pass < 2000 && idle < PASSES_IDLE; pass++) {
		int rc;

		idle++;
		while ((rc = evr_reader_next(r, lane, &rec, buf, sizeof(buf))) == 1) {
			idle = 0;
			if (rec.type == EVR_REC_LOST) {
				uint64_t ts, count, first;
				cr_assert_eq(evr_lost_decode(rec.body, rec.body_len, &ts, &count, &first), 0);
				out->lost += count;
				continue;
			}
			if (rec.type == EVR_REC_THREAD)
				continue; /* the writer's first record opens its run */
			cr_assert_eq(rec.type, EVR_REC_EVENT, "unexpected record type %u at %llu", rec.type,
				     (unsigned long long)rec.pos);
			cr_assert(test_body_ok(rec.body, rec.body_len), "record at %llu delivered damaged",
				  (unsigned long long)rec.pos);
			cr_assert_lt(out->n, 64);
			out->seq[out->n++] = ((const struct test_body *)(const void *)rec.body)->seq;
		}
		cr_assert_eq(rc, 0);
		evr_reader_release(r, lane);
	}
}

static void expect_seqs(const struct seen *got, const uint64_t *want, int n, const char *what)
{
	cr_assert_eq(got->n, n, "%s: %d records delivered, expected %d", what, got->n, n);
	for (int i = 0; i < n; i++)
		cr_assert_eq(got->seq[i], want[i], "%s: record %d is seq %llu, expected %llu", what, i,
			     (unsigned long long)got->seq[i], (unsigned long long)want[i]);
}

/* The writer picks its lane from its tid: the tests read wherever it landed. */
static uint32_t writer_lane(const struct evr_segment *seg, const struct evr_writer *w)
{
	return (uint32_t)(w->lane - seg->lanes);
}

static void put_word(struct evr_segment *seg, uint32_t lane, uint64_t pos, uint64_t w)
{
	memcpy(evr_segment_lane_data(seg, lane) + (pos & (seg->lane_bytes - 1)), &w, sizeof(w));
}

/* Bad commit words a writer never stores: each must be counted once, never delivered. */
static uint64_t bad_word(const struct evr_segment *seg, uint64_t pos, int kind)
{
	uint64_t room = seg->lane_bytes - (pos & (seg->lane_bytes - 1));

	switch (kind) {
	case 0:
		return evr_rec_word(pos, seg->salt, 64, 0xff); /* unknown type */
	case 1:
		return evr_rec_word(pos, seg->salt, 0, EVR_REC_EVENT); /* shorter than a word */
	case 2:
		return evr_rec_word(pos, seg->salt, room + 8, EVR_REC_EVENT); /* past the lane's end */
	case 3:
		return evr_rec_word(pos, seg->salt, (uint64_t)0xffffff << 3, EVR_REC_EVENT); /* huge */
	default:
		return evr_rec_word(pos, seg->salt, 64, EVR_REC_BUSY); /* BUSY on an exclusive lane */
	}
}

Test(hostile, accepted_records_survive_bad_words, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	static const uint64_t first5[] = { 0, 1, 2, 3, 4 };
	static const uint64_t all10[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };

	for (int kind = 0; kind < 5; kind++) {
		struct evr_segment seg;
		struct evr_writer w;
		struct evr_reader r;
		struct seen got = { .n = 0 };
		uint64_t end;
		uint32_t lane;

		/* A bad word right after the last record, with a tail that claims more was written. */
		make_segment(&seg, "bad-word", 3, EVR_LANE_BYTES_MIN, META_SMALL);
		cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), test_tid(), 0), 0);
		cr_assert(!w.shared);
		lane = writer_lane(&seg, &w);
		write_records(&w, 7, 0, 5, NULL);
		end = w.tail;
		put_word(&seg, lane, end, bad_word(&seg, end, kind));
		w.lane->tail = end + 128;
		cr_assert_eq(evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST), 0);
		r.stuck_timeout_ns = 0;
		read_lane(&r, lane, &got);
		expect_seqs(&got, first5, 5, "bad word inside the tail");
		cr_assert_eq(r.stats.skipped_bad, 1, "bad word %d: counted %llu times", kind,
			     (unsigned long long)r.stats.skipped_bad);
		cr_assert_eq(r.cur[lane].pos, end + 128, "bad word %d: the reader did not step to the tail", kind);
		evr_reader_fini(&r);
		test_segment_destroy(&seg);

		/*
		 * The same word where the writer goes next, the tail not past it:
		 * the reader waits without counting, and the writer's next record
		 * replaces the word. Nothing is lost.
		 */
		make_segment(&seg, "bad-word", 3, EVR_LANE_BYTES_MIN, META_SMALL);
		cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), test_tid(), 0), 0);
		lane = writer_lane(&seg, &w);
		write_records(&w, 7, 0, 5, NULL);
		put_word(&seg, lane, w.tail, bad_word(&seg, w.tail, kind));
		cr_assert_eq(evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST), 0);
		r.stuck_timeout_ns = 0;
		got.n = 0;
		read_lane(&r, lane, &got);
		expect_seqs(&got, first5, 5, "bad word at the tail");
		cr_assert_eq(r.stats.skipped_bad, 0, "bad word %d past the tail: counted %llu skips", kind,
			     (unsigned long long)r.stats.skipped_bad);
		write_records(&w, 7, 5, 5, NULL);
		read_lane(&r, lane, &got);
		expect_seqs(&got, all10, 10, "records written over the bad word");
		evr_writer_close(&w);
		evr_reader_fini(&r);
		test_segment_destroy(&seg);
	}
}

Test(hostile, accepted_records_survive_garbage, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	static const uint64_t first5[] = { 0, 1, 2, 3, 4 };
	static const uint64_t skip4[] = { 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12 };
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_reader r;
	struct seen got = { .n = 0 };
	uint64_t pos[10], end, s = 42;
	uint32_t lane;

	/* Random bytes past the last record and a tail that covers them; the writer is alive. */
	make_segment(&seg, "garbage", 3, EVR_LANE_BYTES_MIN, META_SMALL);
	cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), test_tid(), 0), 0);
	lane = writer_lane(&seg, &w);
	write_records(&w, 9, 0, 5, NULL);
	end = w.tail;
	fill_random(&s, evr_segment_lane_data(&seg, lane) + end, 512);
	w.lane->tail = end + 512;
	cr_assert_eq(evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST), 0);
	r.stuck_timeout_ns = 0;
	read_lane(&r, lane, &got);
	expect_seqs(&got, first5, 5, "records before random bytes");
	cr_assert_geq(r.stats.skipped_bad, 1, "random bytes inside the tail were not counted");
	cr_assert_eq(r.cur[lane].pos, end + 512);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);

	/* A record in the middle loses its commit word: the reader finds the next one and goes on. */
	make_segment(&seg, "garbage", 3, EVR_LANE_BYTES_MIN, META_SMALL);
	cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), test_tid(), 0), 0);
	lane = writer_lane(&seg, &w);
	write_records(&w, 9, 0, 10, pos);
	put_word(&seg, lane, pos[4], bad_word(&seg, pos[4], 2));
	cr_assert_eq(evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST), 0);
	got.n = 0;
	read_lane(&r, lane, &got);
	expect_seqs(&got, skip4, 9, "records around a damaged one");
	cr_assert_eq(r.stats.skipped_bad, 1);
	cr_assert_eq(seg.lanes[lane].skipped, 1);
	cr_assert_eq(seg.hdr->records_skipped, 1);
	/* The writer never noticed: it goes on, and so does the reader. */
	write_records(&w, 9, 10, 3, NULL);
	read_lane(&r, lane, &got);
	expect_seqs(&got, skip4, 12, "records after the damage");
	cr_assert_eq(evr_segment_head(&seg, 0, lane), w.tail, "the reader must have released everything");
	evr_writer_close(&w);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

/*
 * A shared-lane writer stalls inside its reservation: the reader skips it
 * after the timeout without handing its room back, delivers what follows,
 * and the loss is reported once the writer notices.
 */
Test(hostile, stalled_shared_reservation, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	static const uint64_t want[] = { 0, 1, 2, 3, 4, 5 };
	struct evr_segment seg;
	struct evr_writer w, stalled;
	struct evr_reader r;
	struct seen got = { .n = 0 };
	uint32_t shared;
	uint64_t at;
	uint8_t body[sizeof(struct test_body) + FILLER];
	void *p;

	make_segment(&seg, "stalled", 3, EVR_LANE_BYTES_MIN, META_SMALL);
	shared = evr_segment_shared_lane(&seg);
	cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), 1000001, EVR_WRITER_FORCE_SHARED), 0);
	cr_assert_eq(evr_writer_open(&stalled, &seg, (uint32_t)getpid(), 1000002, EVR_WRITER_FORCE_SHARED), 0);
	cr_assert(w.shared && stalled.shared);
	write_records(&w, 1, 0, 3, NULL);
	p = evr_writer_reserve(&stalled, test_body_fill(body, 2, 0, FILLER));
	cr_assert_not_null(p);
	at = stalled.resv_pos;
	write_records(&w, 1, 3, 2, NULL);

	cr_assert_eq(evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST), 0);
	r.stuck_timeout_ns = 0;
	read_lane(&r, shared, &got);
	expect_seqs(&got, want, 5, "records around a stalled reservation");
	cr_assert_eq(r.stats.skipped_stuck, 1);
	cr_assert_eq(r.cur[shared].held, at);
	cr_assert_eq(evr_segment_head(&seg, 0, shared), at, "the stalled writer's room was handed back while it may still write");

	/* The writer wakes: its commit loses to the skip, it says so and counts the record lost. */
	memcpy(p, body, sizeof(body));
	evr_writer_commit(&stalled, (uint32_t)sizeof(body), EVR_REC_EVENT);
	cr_assert_eq(seg.lanes[shared].lost, 1);
	write_records(&w, 1, 5, 1, NULL);
	read_lane(&r, shared, &got);
	expect_seqs(&got, want, 6, "records after the stalled writer woke");
	cr_assert_eq(got.lost, 1, "the abandoned record must be reported lost once");
	cr_assert_eq(r.cur[shared].held, UINT64_MAX);
	cr_assert_eq(evr_segment_head(&seg, 0, shared), r.cur[shared].pos);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

/* ---- (e) the metadata area --------------------------------------------- */

struct meta_good {
	uint64_t id;
	uint32_t kind, len;
	uint8_t payload[100];
};

static void expect_meta(const struct evr_meta_view *v, const struct meta_good *g, const char *what)
{
	cr_assert_eq(v->id, g->id, "%s: id %llu, expected %llu", what, (unsigned long long)v->id,
		     (unsigned long long)g->id);
	cr_assert_eq(v->kind, g->kind, "%s", what);
	cr_assert_eq(v->len, g->len, "%s", what);
	cr_assert(memcmp(v->payload, g->payload, g->len) == 0, "%s: payload of entry %llu damaged", what,
		  (unsigned long long)g->id);
}

Test(hostile, meta_garbage, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment seg;
	struct meta_good good[3];
	uint64_t used, s = 7;
	const uint64_t mb = 8192;
	uint64_t stop_bad = 0, stop_end = 0, stale = 0;

	make_segment(&seg, "meta", 2, EVR_LANE_BYTES_MIN, mb);
	cr_assert_eq(seg.meta_bytes, mb);
	for (int i = 0; i < 3; i++) {
		good[i].kind = 10 + (uint32_t)i;
		good[i].len = i == 0 ? 5 : i == 1 ? 100 : 0;
		fill_random(&s, good[i].payload, sizeof(good[i].payload));
		cr_assert_eq(evr_meta_append(&seg, good[i].kind, good[i].payload, good[i].len, &good[i].id), 0);
		cr_assert_eq(evr_meta_entry_at(&seg, good[i].id)->len, good[i].len);
	}
	used = seg.hdr->meta_used;

	for (uint64_t seed = 1; seed <= 3000; seed++) {
		uint64_t cursor = 0, before;
		struct evr_meta_view v;
		bool dead = below(&s, 2);
		int rc = 0, n = 0, steps;

		/* Garbage after the good entries: scattered, a stretch, or crafted entry headers. */
		memset(seg.meta + used, 0, mb - used);
		if (below(&s, 2))
			fill_random(&s, seg.meta + used, below(&s, mb - used + 1));
		for (uint64_t k = below(&s, 6); k; k--) {
			struct evr_meta_entry e = {
				.len = below(&s, 3) ? (uint32_t)below(&s, 2 * mb) : (uint32_t)rnd(&s),
				.kind = (uint32_t)rnd(&s),
				.commit = below(&s, 2) ? EVR_META_COMMITTED : (uint32_t)rnd(&s),
			};
			uint64_t at = used + 8 * below(&s, (mb - used) / 8);
			if (at + sizeof(e) <= mb)
				memcpy(seg.meta + at, &e, sizeof(e));
		}
		/* A bump pointer anywhere at or past the good entries, on the grid or not. */
		switch (below(&s, 6)) {
		case 0:
			seg.hdr->meta_used = used;
			break;
		case 1:
			seg.hdr->meta_used = used + below(&s, mb);
			break;
		case 2:
			seg.hdr->meta_used = mb;
			break;
		case 3:
			seg.hdr->meta_used = mb + 8 + below(&s, 1u << 20);
			break;
		case 4:
			seg.hdr->meta_used = UINT64_MAX - below(&s, 64);
			break;
		default:
			seg.hdr->meta_used = used + 8 * below(&s, (mb - used) / 8);
			break;
		}

		/* The entries appended before the garbage come back first and intact. */
		for (int i = 0; i < 3; i++) {
			cr_assert_eq(evr_meta_next(&seg, &cursor, &v, dead), 1, "seed %llu: good entry %d not returned",
				     (unsigned long long)seed, i);
			expect_meta(&v, &good[i], "before garbage");
		}
		/* Then anything but a crash, an entry outside the area or an endless walk. */
		for (steps = 0; steps <= (int)(mb / 8); steps++) {
			before = cursor;
			rc = evr_meta_next(&seg, &cursor, &v, dead);
			if (rc == 1) {
				n++;
				cr_assert_geq(v.id, EVR_META_FIRST);
				cr_assert_leq(v.id + sizeof(struct evr_meta_entry) + v.len, mb,
					      "seed %llu: entry %llu of %u bytes runs past the area",
					      (unsigned long long)seed, (unsigned long long)v.id, v.len);
				cr_assert_eq(v.payload, seg.meta + v.id + sizeof(struct evr_meta_entry));
			} else if (rc == -ESTALE) {
				cr_assert(dead, "seed %llu: -ESTALE without writer_dead", (unsigned long long)seed);
				stale++;
			} else {
				break;
			}
			cr_assert_gt(cursor, before, "seed %llu: the cursor did not advance", (unsigned long long)seed);
			cr_assert_leq(cursor, mb, "seed %llu: cursor %llu past the area", (unsigned long long)seed,
				      (unsigned long long)cursor);
		}
		cr_assert(rc == 0 || rc == -EBADMSG, "seed %llu: evr_meta_next returned %d", (unsigned long long)seed,
			  rc);
		cr_assert_eq(cursor, before, "seed %llu: the cursor moved on a refusal", (unsigned long long)seed);
		stop_bad += rc == -EBADMSG;
		stop_end += rc == 0;

		/* Cursors and ids from nowhere. */
		for (int k = 0; k < 8; k++) {
			uint64_t c = k < 4 ? rnd(&s) : below(&s, mb + 64);
			uint64_t id = k & 1 ? rnd(&s) : below(&s, mb + 64);
			struct evr_meta_entry *e = evr_meta_entry_at(&seg, id);

			rc = evr_meta_next(&seg, &c, &v, dead);
			cr_assert(rc == 1 || rc == 0 || rc == -EBADMSG || rc == -ESTALE, "rc %d", rc);
			if (rc == 1)
				cr_assert_leq(v.id + sizeof(struct evr_meta_entry) + v.len, mb);
			if (e)
				cr_assert((uint8_t *)e >= seg.meta + EVR_META_FIRST &&
					  (uint8_t *)(e + 1) <= seg.meta + mb,
					  "evr_meta_entry_at(%llu) points outside the area", (unsigned long long)id);
		}
	}
	cr_assert_gt(stop_bad, 0, "no round ended on a corrupt entry");
	cr_assert_gt(stop_end, 0, "no round ended at the end");
	cr_assert_gt(stale, 0, "no round stepped over a dead writer's entry");
	seg.hdr->meta_used = used;
	test_segment_destroy(&seg);
}

/* ---- concurrent metadata appends --------------------------------------- */

#define META_THREADS 4
#define META_PER_THREAD 3000

struct meta_payload {
	uint32_t thread, index;
	uint64_t check;
	uint8_t filler[40];
};

struct meta_arg {
	struct evr_segment *seg;
	uint32_t thread;
	int ok, nospc, finished;
	uint64_t ids[META_PER_THREAD];
	volatile int *go;
};

static uint32_t meta_fill(struct meta_payload *p, uint32_t thread, uint32_t index)
{
	uint32_t extra = (thread * 7 + index) % 41;

	p->thread = thread;
	p->index = index;
	p->check = test_mix(((uint64_t)thread << 32) | index);
	memset(p->filler, (int)(p->check & 0xff), extra);
	return (uint32_t)offsetof(struct meta_payload, filler) + extra;
}

static bool meta_payload_ok(const uint8_t *payload, uint32_t len)
{
	struct meta_payload p;
	uint32_t head = (uint32_t)offsetof(struct meta_payload, filler);

	if (len < head || len > sizeof(p))
		return false;
	memcpy(&p, payload, len);
	if (p.thread >= META_THREADS || p.index >= META_PER_THREAD)
		return false;
	if (p.check != test_mix(((uint64_t)p.thread << 32) | p.index) || len != head + (p.thread * 7 + p.index) % 41)
		return false;
	for (uint32_t i = 0; i < len - head; i++)
		if (p.filler[i] != (uint8_t)(p.check & 0xff))
			return false;
	return true;
}

static void *meta_appender(void *arg)
{
	struct meta_arg *a = arg;
	struct meta_payload p;

	while (!__atomic_load_n(a->go, __ATOMIC_ACQUIRE))
		;
	for (uint32_t i = 0; i < META_PER_THREAD; i++) {
		uint32_t len = meta_fill(&p, a->thread, i);
		uint64_t id = 0;
		int rc = evr_meta_append(a->seg, 100 + a->thread, &p, len, &id);

		a->ids[i] = rc == 0 ? id : 0;
		a->ok += rc == 0;
		a->nospc += rc == -ENOSPC;
	}
	__atomic_store_n(&a->finished, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * Appends from several threads while a reader walks the area: ids are
 * distinct, every entry is returned once and intact, in id order; in an
 * area too small, the refusals are counted and none is returned.
 */
static void meta_concurrent(uint64_t meta_bytes, bool expect_full)
{
	static struct meta_arg args[META_THREADS];
	static uint8_t seen[META_THREADS][META_PER_THREAD];
	struct evr_segment seg;
	struct evr_meta_view v;
	pthread_t th[META_THREADS];
	volatile int go = 0;
	uint64_t cursor = 0, last_id = 0, returned = 0, ok = 0, nospc = 0;
	int rc, done;

	make_segment(&seg, "meta-mt", 2, EVR_LANE_BYTES_MIN, meta_bytes);
	memset(seen, 0, sizeof(seen));
	for (uint32_t t = 0; t < META_THREADS; t++) {
		args[t] = (struct meta_arg){ .seg = &seg, .thread = t, .go = &go };
		cr_assert_eq(pthread_create(&th[t], NULL, meta_appender, &args[t]), 0);
	}
	__atomic_store_n(&go, 1, __ATOMIC_RELEASE);
	/* Read while the appenders run: an entry is returned only once it is published (M2/M3). */
	do {
		done = 1;
		for (uint32_t t = 0; t < META_THREADS; t++)
			done &= __atomic_load_n(&args[t].finished, __ATOMIC_ACQUIRE);
		while ((rc = evr_meta_next(&seg, &cursor, &v, false)) == 1) {
			const struct meta_payload *p = (const struct meta_payload *)(const void *)v.payload;

			cr_assert(meta_payload_ok(v.payload, v.len), "entry %llu returned damaged", (unsigned long long)v.id);
			cr_assert_eq(v.kind, 100 + p->thread);
			cr_assert_gt(v.id, last_id, "entry ids must grow along the walk");
			cr_assert_eq(seen[p->thread][p->index]++, 0, "entry %u/%u returned twice", p->thread, p->index);
			last_id = v.id;
			returned++;
		}
		cr_assert(rc == 0, "evr_meta_next returned %d during appends", rc);
	} while (!done);
	for (uint32_t t = 0; t < META_THREADS; t++)
		pthread_join(th[t], NULL);
	while ((rc = evr_meta_next(&seg, &cursor, &v, false)) == 1) {
		const struct meta_payload *p = (const struct meta_payload *)(const void *)v.payload;

		cr_assert(meta_payload_ok(v.payload, v.len));
		cr_assert_eq(seen[p->thread][p->index]++, 0, "entry %u/%u returned twice", p->thread, p->index);
		returned++;
	}
	cr_assert_eq(rc, 0);

	for (uint32_t t = 0; t < META_THREADS; t++) {
		ok += (uint64_t)args[t].ok;
		nospc += (uint64_t)args[t].nospc;
		cr_assert_eq(args[t].ok + args[t].nospc, META_PER_THREAD, "appends failed with another error");
		for (uint32_t i = 0; i < META_PER_THREAD; i++) {
			if (!args[t].ids[i])
				continue;
			cr_assert_eq(seen[t][i], 1, "entry %u/%u (id %llu) was appended but never returned", t, i,
				     (unsigned long long)args[t].ids[i]);
			cr_assert_eq(evr_meta_entry_at(&seg, args[t].ids[i])->kind, 100 + t);
		}
	}
	cr_assert_eq(returned, ok, "%llu entries returned, %llu appended", (unsigned long long)returned,
		     (unsigned long long)ok);
	cr_assert_eq(seg.hdr->meta_dropped, nospc, "meta_dropped %llu, appends refused %llu",
		     (unsigned long long)seg.hdr->meta_dropped, (unsigned long long)nospc);
	if (expect_full)
		cr_assert(nospc > 0 && ok > 0, "a small area must fill: %llu ok, %llu refused", (unsigned long long)ok,
			  (unsigned long long)nospc);
	else
		cr_assert_eq(nospc, 0);
	test_segment_destroy(&seg);
}

Test(hostile, meta_concurrent_appends, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	meta_concurrent(1u << 20, false);
	meta_concurrent(16384, true);
}

/* ---- a producer that rewrites the segment while it is read ------------- */

struct live_arg {
	struct evr_segment *seg;
	struct evr_cursor *cur; /* the reader's cursors: aim the damage where it is about to read */
	struct owners owners;
	int stop;
	uint64_t changes;
};

static void *live_mutator(void *p)
{
	struct live_arg *a = p;
	struct evr_segment *seg = a->seg;
	uint64_t s = 0x11fe, mask = seg->lane_bytes - 1;

	while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
		uint32_t l = (uint32_t)below(&s, seg->lane_count);
		struct evr_lane *lane = &seg->lanes[l];
		uint8_t *data = evr_segment_lane_data(seg, l);
		uint64_t cur = __atomic_load_n(&a->cur[l].pos, __ATOMIC_RELAXED);
		uint64_t pos = (cur + 8 * below(&s, 64)) & ~7ull;
		uint32_t type = fuzz_types[below(&s, sizeof(fuzz_types) / sizeof(fuzz_types[0]))];
		uint64_t bytes = below(&s, 4) ? 8 + 8 * below(&s, 128) : rnd(&s) & ((uint64_t)0xffffff << 3);

		switch (below(&s, 8)) {
		case 0:
			__atomic_store_n((uint64_t *)(void *)(data + (below(&s, seg->lane_bytes / 8) * 8)), rnd(&s),
					 __ATOMIC_RELAXED);
			break;
		case 1:
		case 2:
		case 3: /* a word with the right tag where the reader goes next */
			__atomic_store_n((uint64_t *)(void *)(data + (pos & mask)), evr_rec_word(pos, seg->salt, bytes, type),
					 __ATOMIC_RELEASE);
			break;
		case 4:
			__atomic_store_n(&lane->tail, below(&s, 4) ? cur + 8 * below(&s, seg->lane_bytes / 8 + 2) : rnd(&s),
					 __ATOMIC_RELAXED);
			break;
		case 5:
			__atomic_store_n(&lane->owner, pick_owner(&s, &a->owners), __ATOMIC_RELAXED);
			break;
		case 6:
			__atomic_store_n(&evr_segment_slot_lane(seg, 0, l)->head, rnd(&s), __ATOMIC_RELAXED);
			break;
		default: {
			uint64_t off = below(&s, seg->lane_bytes);
			fill_random(&s, data + off, below(&s, seg->lane_bytes - off + 1) % 512);
			break;
		}
		}
		a->changes++;
	}
	return NULL;
}

/*
 * Nothing the reader takes from shared memory may be trusted twice: a word,
 * a tail or a length can change between two loads. Bounds must come from a
 * single load and the lane, never from a second look.
 */
Test(hostile, random_lanes_live, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_segment seg;
	struct guarded g;
	struct evr_reader r;
	struct evr_record rec;
	struct live_arg a;
	pthread_t th;
	uint64_t passes = 0, got = 0, t_end;

	make_segment(&seg, "live", 4, EVR_LANE_BYTES_MIN, META_SMALL);
	guarded_copy(&g, &seg);
	test_segment_destroy(&seg);
	cr_assert_eq(evr_reader_init(&r, &g.seg, EVR_READ_FROM_OLDEST), 0);
	r.stuck_timeout_ns = 0;
	a = (struct live_arg){ .seg = &g.seg, .cur = r.cur };
	owners_init(&a.owners);
	cr_assert_eq(pthread_create(&th, NULL, live_mutator, &a), 0);

	t_end = evr_clock_monotonic_ns() + 700000000u;
	while (evr_clock_monotonic_ns() < t_end) {
		for (uint32_t l = 0; l < g.seg.lane_count; l++) {
			int rc, n = 0;

			while (n++ < 1024 && (rc = evr_reader_next(&r, l, &rec, buf, sizeof(buf))) == 1) {
				uint64_t off = rec.pos & (g.seg.lane_bytes - 1);

				cr_assert(rec.type >= 1 && rec.type <= EVR_REC_DELIVERABLE_MAX && rec.type != EVR_REC_PAD,
					  "delivered type %u", rec.type);
				cr_assert_eq(rec.pos & 7, 0);
				cr_assert_leq(rec.body_len, EVR_BODY_MAX);
				cr_assert_leq(off + EVR_WORD_BYTES + rec.body_len, g.seg.lane_bytes,
					      "record at offset %llu of %u bytes runs past its lane", (unsigned long long)off,
					      rec.body_len);
				got++;
			}
			evr_reader_release(&r, l);
		}
		if (++passes % 16 == 0)
			evr_reader_reap(&r);
	}
	__atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	cr_log_info("live: %llu passes, %llu changes, %llu delivered, skipped bad %llu dead %llu stuck %llu",
		    (unsigned long long)passes, (unsigned long long)a.changes, (unsigned long long)got,
		    (unsigned long long)r.stats.skipped_bad, (unsigned long long)r.stats.skipped_dead,
		    (unsigned long long)r.stats.skipped_stuck);
	cr_assert_gt(a.changes, 1000);
	cr_assert_gt(got, 0, "nothing delivered while the words changed");
	cr_assert_gt(r.stats.skipped_bad, 0);
	evr_reader_fini(&r);
	guarded_free(&g);
}

/* ---- (f) the producer against a hostile consumer ------------------------ */

/*
 * The consumer's fields (each lane's head and skipped count, the header's
 * consumer slot) are the consumer's to write, so the producer trusts none of
 * them: a head past what was written, far behind it or all ones must not let
 * it write over unread records, outside its lane, or stall; each record it
 * cannot place is dropped and counted, and it goes on once the head makes
 * sense again.
 */
static bool put_seq(struct evr_writer *w, uint64_t seq)
{
	uint8_t body[sizeof(struct test_body) + 16];
	uint32_t len = test_body_fill(body, 7, seq, 16);

	return evr_writer_write(w, EVR_REC_EVENT, body, len);
}

/*
 * Garbage in every byte a consumer may write, the heads aside: the retired
 * slot of 1.x and the fields beside it, every slot's line but its pid (a
 * claimed slot gone stale holds nothing back by design: test_slots), and
 * every slot-lane line but slot 0's head.
 */
static void scribble_consumer_fields(struct evr_segment *seg, uint8_t fill)
{
	memset(&seg->hdr->consumer_pid, fill, offsetof(struct evr_seg_header, trace_id_high) -
						      offsetof(struct evr_seg_header, consumer_pid));
	for (uint32_t k = 0; k < EVR_CONSUMER_SLOTS_MAX; k++)
		memset(&seg->hdr->slots[k].start_ticks, fill, sizeof(seg->hdr->slots[k]) - 8);
	for (uint32_t k = 0; k < seg->slots; k++)
		for (uint32_t i = 0; i < seg->lane_count; i++) {
			struct evr_slot_lane *sl = evr_segment_slot_lane(seg, k, i);
			memset(k ? (void *)sl : (void *)&sl->count_from, fill, k ? sizeof(*sl) : sizeof(*sl) - 8);
		}
	for (uint32_t i = 0; i < seg->lane_count; i++) {
		memset(&seg->lanes[i].skipped, fill, 8);
		memset(seg->lanes[i].pad_consumer, fill, sizeof(seg->lanes[i].pad_consumer));
	}
}

static void hostile_heads(struct evr_segment *seg, struct evr_writer *w, uint32_t lane)
{
	struct evr_lane *l = &seg->lanes[lane];
	uint64_t *hp = &evr_segment_slot_lane(seg, 0, lane)->head; /* slot 0's: no slot claimed */
	uint64_t size = seg->lane_bytes, seq = 0;
	size_t total = (size_t)seg->lane_count * size;
	uint8_t *before = malloc(total);

	cr_assert_not_null(before);
	for (int round = 0; round < 4; round++) {
		uint64_t tail, records, lost;
		const uint64_t bad[] = { 0, 8, size, size + 8, 3 * size, (uint64_t)1 << 40, UINT64_MAX, UINT64_MAX - size,
					 (uint64_t)1 << 63, 5 };
		int written = 0;

		/* The consumer read everything so far, then nothing: the lane fills, and the next record is dropped. */
		evr_st_rel_64(hp, evr_ld_64(&l->tail));
		while (put_seq(w, seq++))
			cr_assert_lt(++written, 100000, "round %d: the lane never filled", round);
		cr_assert_gt(written, 0, "round %d: nothing fit in an empty lane", round);
		tail = evr_ld_64(&l->tail);
		records = evr_ld_64(&l->records);
		lost = evr_ld_64(&l->lost);
		memcpy(before, seg->data, total);
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			/* Relative to the tail: past it, far behind it, and absolute garbage. */
			uint64_t heads[] = { tail + bad[i], tail - size - 8 - bad[i], bad[i] };

			for (size_t k = 0; k < 3; k++) {
				if (heads[k] <= tail && tail - heads[k] <= size)
					continue; /* a head a consumer could really have published */
				evr_st_rel_64(hp, heads[k]);
				scribble_consumer_fields(seg, (uint8_t)(0x5a + i + k));
				for (int n = 0; n < 20; n++)
					cr_assert(!put_seq(w, seq++), "round %d: head %#llx (tail %#llx) let a record in",
						  round, (unsigned long long)heads[k], (unsigned long long)tail);
			}
		}
		cr_assert(memcmp(before, seg->data, total) == 0, "round %d: a hostile head let the writer overwrite data",
			  round);
		cr_assert_eq(evr_ld_64(&l->records), records, "round %d", round);
		cr_assert_eq(evr_ld_64(&l->tail), tail, "round %d", round);
		cr_assert_gt(evr_ld_64(&l->lost), lost, "round %d: the refused records were not counted", round);
		/* Every refused record is counted: written + lost is all that was tried. */
		cr_assert_eq(evr_ld_64(&l->records) + evr_ld_64(&l->lost), seq, "round %d: %llu + %llu != %llu tried",
			     round, (unsigned long long)evr_ld_64(&l->records), (unsigned long long)evr_ld_64(&l->lost),
			     (unsigned long long)seq);
	}
	/* A head that makes sense again: the writer goes on, first with the LOST record for what it dropped. */
	evr_st_rel_64(hp, evr_ld_64(&l->tail));
	cr_assert(put_seq(w, seq++), "the writer did not recover");
	cr_assert_eq(evr_ld_64(&l->lost_pending), 0, "the drops were reported");
	free(before);
}

Test(hostile, producer_ignores_hostile_heads_exclusive, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment seg;
	struct evr_writer w;

	make_segment(&seg, "heads-x", 3, EVR_LANE_BYTES_MIN, META_SMALL);
	cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), 2, 0), 0); /* tid 2: lane 0 */
	cr_assert(!w.shared);
	cr_assert_eq(w.lane, &seg.lanes[0]);
	evr_writer_skip_thread_record(&w);
	hostile_heads(&seg, &w, 0);
	evr_writer_close(&w);
	test_segment_destroy(&seg);
}

Test(hostile, producer_ignores_hostile_heads_shared, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment seg;
	struct evr_writer w;

	make_segment(&seg, "heads-s", 3, EVR_LANE_BYTES_MIN, META_SMALL);
	cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), 2, EVR_WRITER_FORCE_SHARED), 0);
	cr_assert(w.shared);
	hostile_heads(&seg, &w, evr_segment_shared_lane(&seg));
	evr_writer_close(&w);
	test_segment_destroy(&seg);
}

/* A writer that opens a lane whose head is garbage from the start never trusts it. */
Test(hostile, producer_opens_a_lane_with_a_hostile_head, .fini = unlink_created, .timeout = TEST_TIMEOUT_S)
{
	struct evr_segment seg;
	struct evr_writer w;
	uint64_t tried = 0, size;

	make_segment(&seg, "heads-o", 3, EVR_LANE_BYTES_MIN, META_SMALL);
	size = seg.lane_bytes;
	/* An earlier owner wrote three laps; the consumer's head is all ones. */
	evr_st_64(&seg.lanes[0].tail, 3 * size);
	evr_st_64(&evr_segment_slot_lane(&seg, 0, 0)->head, UINT64_MAX);
	cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), 2, 0), 0);
	cr_assert_eq(w.lane, &seg.lanes[0]);
	evr_writer_skip_thread_record(&w);
	for (int i = 0; i < 1000; i++)
		cr_assert(!put_seq(&w, tried++), "record %d went in over a head of all ones", i);
	cr_assert_eq(evr_ld_64(&seg.lanes[0].lost), tried);
	cr_assert_eq(evr_ld_64(&seg.lanes[0].tail), 3 * size);
	evr_st_rel_64(&evr_segment_slot_lane(&seg, 0, 0)->head, 3 * size);
	cr_assert(put_seq(&w, tried++));
	evr_writer_close(&w);
	test_segment_destroy(&seg);
}
