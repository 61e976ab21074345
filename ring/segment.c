/*
 * segment.c: creating, opening and validating a segment; the metadata area;
 * the consumer slot. The layout is drawn atop evring/ring.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <evring/ring.h>

_Static_assert(sizeof(struct evr_seg_header) == EVR_HEADER_BYTES, "header is 4 KiB");
_Static_assert(offsetof(struct evr_seg_header, abi_major) == 8, "ABI");
_Static_assert(offsetof(struct evr_seg_header, segment_bytes) == 16, "ABI");
_Static_assert(offsetof(struct evr_seg_header, clock_kind) == 40, "ABI");
_Static_assert(offsetof(struct evr_seg_header, clock_mult) == 72, "ABI");
_Static_assert(offsetof(struct evr_seg_header, lane_count) == 80, "ABI");
_Static_assert(offsetof(struct evr_seg_header, lanes_offset) == 120, "ABI");
_Static_assert(offsetof(struct evr_seg_header, program) == 128, "ABI");
_Static_assert(offsetof(struct evr_seg_header, meta_used) == 192, "producer line");
_Static_assert(offsetof(struct evr_seg_header, exited_real_ns) == 248, "ABI");
_Static_assert(offsetof(struct evr_seg_header, consumer_pid) == 256, "consumer line");
_Static_assert(offsetof(struct evr_seg_header, records_skipped) == 288, "ABI");
_Static_assert(offsetof(struct evr_seg_header, creator_start_ticks) == 296, "ABI");
_Static_assert(offsetof(struct evr_seg_header, trace_id_high) == 304, "ABI");
_Static_assert(offsetof(struct evr_seg_header, consumer_slots) == 312, "ABI 2.0");
_Static_assert(offsetof(struct evr_seg_header, stale_ns) == 320, "ABI 2.0");
_Static_assert(offsetof(struct evr_seg_header, slot_lanes_offset) == 336, "ABI 2.0");
_Static_assert(offsetof(struct evr_seg_header, slots) == EVR_SLOT_TABLE_OFFSET, "ABI 2.0: slot table");
_Static_assert(sizeof(struct evr_consumer_slot) == 64, "a slot is a cache line");
_Static_assert(sizeof(struct evr_slot_lane) == EVR_SLOT_LANE_BYTES, "a slot-lane is a cache line");
_Static_assert(offsetof(struct evr_slot_lane, evicted) == 16, "ABI 2.0");
_Static_assert(offsetof(struct evr_slot_lane, reported) == 40, "ABI 2.0");
_Static_assert(sizeof(struct evr_lane) == EVR_LANE_ENTRY_BYTES, "lane entry is 128 bytes");
_Static_assert(offsetof(struct evr_lane, tail) == 8, "ABI");
_Static_assert(offsetof(struct evr_lane, lost_pending) == 32, "ABI");
_Static_assert(offsetof(struct evr_lane, kind) == 60, "ABI");
_Static_assert(offsetof(struct evr_lane, head) == 64, "consumer fields on the second line");
_Static_assert(sizeof(struct evr_meta_entry) == 16, "ABI");

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

int evr_segment_name(char *buf, size_t len, pid_t pid, const char *name)
{
	int n;

	if (!name || !*name || strchr(name, '/') || strlen(name) > EVR_NAME_MAX)
		return -EINVAL;
	n = snprintf(buf, len, "/evring.%d.%s", (int)pid, name);
	if (n < 0 || (size_t)n >= len)
		return -EINVAL;
	return n;
}

struct layout {
	uint64_t slot_lanes_offset, meta_offset, lanes_offset, total;
};

static int plan(const struct evr_segment_config *cfg, uint32_t *lanes, uint64_t *lane_bytes,
		uint64_t *meta_bytes, struct layout *l, char *err, size_t errlen)
{
	*lanes = cfg && cfg->lanes ? cfg->lanes : EVR_DEFAULT_LANES;
	*lane_bytes = cfg && cfg->lane_bytes ? cfg->lane_bytes : EVR_DEFAULT_LANE_BYTES;
	*meta_bytes = cfg && cfg->meta_bytes ? cfg->meta_bytes : EVR_DEFAULT_META_BYTES;

	if (*lanes < 2 || *lanes > EVR_LANES_MAX)
		return fail(err, errlen, -EINVAL, "lanes=%u: must be 2..%u (exclusive lanes plus the shared one)",
			    *lanes, EVR_LANES_MAX);
	if (!is_pow2(*lane_bytes) || *lane_bytes < EVR_LANE_BYTES_MIN || *lane_bytes > EVR_LANE_BYTES_MAX)
		return fail(err, errlen, -EINVAL, "lane bytes=%llu: must be a power of two in %u..%u",
			    (unsigned long long)*lane_bytes, EVR_LANE_BYTES_MIN, EVR_LANE_BYTES_MAX);
	if (*meta_bytes < 4096 || *meta_bytes > EVR_META_BYTES_MAX)
		return fail(err, errlen, -EINVAL, "metadata bytes=%llu: must be in 4096..%u",
			    (unsigned long long)*meta_bytes, EVR_META_BYTES_MAX);
	*meta_bytes = align_up(*meta_bytes, 4096);
	l->slot_lanes_offset = EVR_HEADER_BYTES + align_up((uint64_t)*lanes * EVR_LANE_ENTRY_BYTES, 4096);
	l->meta_offset = l->slot_lanes_offset + align_up((uint64_t)EVR_CONSUMER_SLOTS * *lanes * EVR_SLOT_LANE_BYTES, 4096);
	l->lanes_offset = l->meta_offset + *meta_bytes;
	l->total = l->lanes_offset + (uint64_t)*lanes * *lane_bytes;
	return 0;
}

/*
 * Takes the geometry from h, the header as validated: a reader passes its
 * private copy, since the producer may rewrite the live header at any time
 * and a second read could disagree with what was checked.
 */
static void map_fields(struct evr_segment *seg, uint8_t *base, uint64_t bytes, const struct evr_seg_header *h)
{

	seg->base = base;
	seg->bytes = bytes;
	seg->hdr = (struct evr_seg_header *)(void *)base;
	seg->lanes = (struct evr_lane *)(void *)(base + h->lane_table_offset);
	seg->slot_lanes = (struct evr_slot_lane *)(void *)(base + h->slot_lanes_offset);
	seg->slots = h->consumer_slots;
	seg->stale_ticks = h->stale_ticks;
	seg->meta = base + h->meta_offset;
	seg->data = base + h->lanes_offset;
	seg->lane_count = h->lane_count;
	seg->lane_bytes = h->lane_bytes;
	seg->meta_bytes = h->meta_bytes;
	seg->clock_kind = h->clock_kind;
	seg->salt = h->tag_salt;
}

int evr_segment_create(struct evr_segment *seg, const char *shm_name, const struct evr_segment_config *cfg,
		       char *err, size_t errlen)
{
	uint32_t lanes, salt = 0;
	uint64_t lane_bytes, meta_bytes;
	struct layout l = { 0, 0, 0, 0 };
	struct evr_clock_calib cal;
	struct evr_seg_header *h;
	uint8_t *base;
	int fd, rc;

	memset(seg, 0, sizeof(*seg));
	rc = plan(cfg, &lanes, &lane_bytes, &meta_bytes, &l, err, errlen);
	if (rc)
		return rc;
	if (strlen(shm_name) >= sizeof(seg->shm_name))
		return fail(err, errlen, -EINVAL, "segment name too long: %s", shm_name);

	fd = shm_open(shm_name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return fail(err, errlen, -errno, "cannot create segment %s: %s", shm_name, strerror(errno));
	if (ftruncate(fd, (off_t)l.total) != 0) {
		rc = -errno;
		shm_unlink(shm_name);
		close(fd);
		return fail(err, errlen, rc, "cannot size segment %s to %llu bytes: %s", shm_name,
			    (unsigned long long)l.total, strerror(-rc));
	}
	base = mmap(NULL, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	rc = -errno;
	close(fd);
	if (base == MAP_FAILED) {
		shm_unlink(shm_name);
		return fail(err, errlen, rc, "cannot map segment %s: %s", shm_name, strerror(-rc));
	}

	h = (struct evr_seg_header *)(void *)base;
	h->abi_major = EVR_ABI_MAJOR;
	h->abi_minor = EVR_ABI_MINOR;
	h->header_bytes = EVR_HEADER_BYTES;
	h->segment_bytes = l.total;
	h->creator_pid = (uint32_t)getpid();
	h->creator_uid = (uint32_t)geteuid();
	h->creator_pidns = evr_pidns();
	h->start_real_ns = evr_clock_realtime_ns();
	h->creator_start_ticks = evr_proc_start_ticks(0);
	evr_clock_calibrate(cfg && cfg->clock_kind ? cfg->clock_kind : evr_clock_detect(), &cal, 2000000);
	h->clock_kind = cal.kind;
	h->clock_anchor_ticks = cal.anchor_ticks;
	h->clock_anchor_mono_ns = cal.anchor_mono_ns;
	h->clock_anchor_real_ns = cal.anchor_real_ns;
	h->clock_mult = cal.mult;
	if (getrandom(&salt, sizeof(salt), GRND_NONBLOCK) != sizeof(salt))
		salt = (uint32_t)(cal.anchor_ticks ^ ((uint64_t)getpid() << 16));
	h->tag_salt = salt;
	/* Unique across processes and hosts in practice: 64 random bits. Never 0 (0: a segment without one). */
	if (getrandom(&h->trace_id_high, sizeof(h->trace_id_high), GRND_NONBLOCK) != sizeof(h->trace_id_high))
		h->trace_id_high = evr_mix64(cal.anchor_ticks ^ h->start_real_ns ^ ((uint64_t)getpid() << 32));
	if (h->trace_id_high == 0)
		h->trace_id_high = 1;
	h->lane_count = lanes;
	h->lane_entry_bytes = EVR_LANE_ENTRY_BYTES;
	h->lane_bytes = lane_bytes;
	h->lane_table_offset = EVR_HEADER_BYTES;
	h->meta_offset = l.meta_offset;
	h->meta_bytes = meta_bytes;
	h->lanes_offset = l.lanes_offset;
	h->consumer_slots = EVR_CONSUMER_SLOTS;
	h->abi_minor_required = 0;
	h->slot_lanes_offset = l.slot_lanes_offset;
	h->stale_ns = cfg && cfg->stale_ns ? cfg->stale_ns : EVR_STALE_NS_DEFAULT;
	/* In ticks of the segment clock, which producers read anyway: ns << 32 / (ns per tick << 32). */
	h->stale_ticks = (uint64_t)(((unsigned __int128)h->stale_ns << EVR_CLOCK_SHIFT) / cal.mult);
	if (cfg && cfg->program)
		snprintf(h->program, sizeof(h->program), "%s", cfg->program);
	h->meta_used = EVR_META_FIRST;

	map_fields(seg, base, l.total, h);
	for (uint32_t i = 0; i < lanes; i++)
		seg->lanes[i].kind = i + 1 == lanes ? EVR_LANE_SHARED : EVR_LANE_EXCLUSIVE;
	/* The shared lane belongs to the creating process for its whole life. */
	seg->lanes[lanes - 1].owner = (uint64_t)h->creator_pid << 32;

	/* Publishes the header: a reader that sees the magic sees every field above. */
	memcpy(h->magic + 4, &EVR_MAGIC[4], 4);
	{
		uint32_t first4;
		memcpy(&first4, EVR_MAGIC, 4);
		evr_st_rel_32((uint32_t *)(void *)h->magic, first4); /* H1, pairs with H2 */
	}
	seg->creator = true;
	snprintf(seg->shm_name, sizeof(seg->shm_name), "%s", shm_name);
	return 0;
}

int evr_segment_validate(const void *base, uint64_t bytes, char *err, size_t errlen)
{
	const struct evr_seg_header *h = base;
	uint32_t magic4;
	uint64_t lanes_end, table_end, meta_end;

	if (bytes < EVR_HEADER_BYTES)
		return fail(err, errlen, -EBADMSG, "segment is %llu bytes, smaller than its 4096-byte header",
			    (unsigned long long)bytes);
	magic4 = evr_ld_acq_32((const uint32_t *)(const void *)h->magic);
	if (magic4 == 0)
		return fail(err, errlen, -EAGAIN, "segment is still being created");
	if (memcmp(h->magic, EVR_MAGIC, 8) != 0)
		return fail(err, errlen, -EBADMSG, "not an evring segment (bad magic)");
	if (h->abi_major != EVR_ABI_MAJOR)
		return fail(err, errlen, -EPROTO, "segment ABI version %u.%u, this reader supports %u.%u",
			    h->abi_major, h->abi_minor, EVR_ABI_MAJOR, EVR_ABI_MINOR);
	if (h->abi_minor_required > EVR_ABI_MINOR)
		return fail(err, errlen, -EPROTO,
			    "segment ABI version %u.%u needs a reader of %u.%u or later, this reader supports %u.%u",
			    h->abi_major, h->abi_minor, h->abi_major, h->abi_minor_required, EVR_ABI_MAJOR,
			    EVR_ABI_MINOR);
	if (h->header_bytes != EVR_HEADER_BYTES)
		return fail(err, errlen, -EBADMSG, "header size %u, expected %u", h->header_bytes, EVR_HEADER_BYTES);
	if (h->segment_bytes != bytes)
		return fail(err, errlen, -EBADMSG, "header says %llu bytes, the object has %llu",
			    (unsigned long long)h->segment_bytes, (unsigned long long)bytes);
	if (h->lane_count < 2 || h->lane_count > EVR_LANES_MAX)
		return fail(err, errlen, -EBADMSG, "lane count %u out of range 2..%u", h->lane_count, EVR_LANES_MAX);
	if (h->lane_entry_bytes != EVR_LANE_ENTRY_BYTES)
		return fail(err, errlen, -EBADMSG, "lane entry size %u, expected %u", h->lane_entry_bytes,
			    EVR_LANE_ENTRY_BYTES);
	if (!is_pow2(h->lane_bytes) || h->lane_bytes < EVR_LANE_BYTES_MIN || h->lane_bytes > EVR_LANE_BYTES_MAX)
		return fail(err, errlen, -EBADMSG, "lane size %llu is not a power of two in range",
			    (unsigned long long)h->lane_bytes);
	if (h->lane_table_offset != EVR_HEADER_BYTES)
		return fail(err, errlen, -EBADMSG, "lane table at %llu, expected %u",
			    (unsigned long long)h->lane_table_offset, EVR_HEADER_BYTES);
	table_end = h->lane_table_offset + (uint64_t)h->lane_count * EVR_LANE_ENTRY_BYTES;
	if (h->meta_offset < table_end || h->meta_offset > bytes || (h->meta_offset & 7) ||
	    h->meta_bytes < 4096 || h->meta_bytes > EVR_META_BYTES_MAX || (h->meta_bytes & 7) ||
	    h->meta_bytes > bytes - h->meta_offset)
		return fail(err, errlen, -EBADMSG, "metadata area %llu+%llu is outside the segment or overlaps",
			    (unsigned long long)h->meta_offset, (unsigned long long)h->meta_bytes);
	if (h->consumer_slots < 1 || h->consumer_slots > EVR_CONSUMER_SLOTS_MAX)
		return fail(err, errlen, -EBADMSG, "%u consumer slots, out of range 1..%u", h->consumer_slots,
			    EVR_CONSUMER_SLOTS_MAX);
	/* Slot-lanes: after the lane table, before the metadata, on cache lines (both factors bounded: no overflow). */
	if (h->slot_lanes_offset < table_end || (h->slot_lanes_offset & (EVR_SLOT_LANE_BYTES - 1)) ||
	    h->slot_lanes_offset > h->meta_offset ||
	    (uint64_t)h->consumer_slots * h->lane_count * EVR_SLOT_LANE_BYTES > h->meta_offset - h->slot_lanes_offset)
		return fail(err, errlen, -EBADMSG, "consumer slot lanes at %llu are outside the segment or overlap",
			    (unsigned long long)h->slot_lanes_offset);
	meta_end = h->meta_offset + h->meta_bytes;
	if (meta_end > bytes || h->lanes_offset < meta_end || (h->lanes_offset & 7) || h->lanes_offset > bytes)
		return fail(err, errlen, -EBADMSG, "lane data at %llu is outside the segment or overlaps",
			    (unsigned long long)h->lanes_offset);
	lanes_end = h->lanes_offset + (uint64_t)h->lane_count * h->lane_bytes; /* both bounded: no overflow */
	if (lanes_end > bytes)
		return fail(err, errlen, -EBADMSG, "%u lanes of %llu bytes do not fit in the segment", h->lane_count,
			    (unsigned long long)h->lane_bytes);
	if (h->clock_kind != EVR_CLOCK_TSC && h->clock_kind != EVR_CLOCK_MONOTONIC)
		return fail(err, errlen, -EBADMSG, "unknown clock kind %u", h->clock_kind);
	if (h->clock_mult == 0 || h->clock_mult > ((uint64_t)1000 << EVR_CLOCK_SHIFT))
		return fail(err, errlen, -EBADMSG, "clock calibration %llu is not plausible",
			    (unsigned long long)h->clock_mult);
	return 0;
}

int evr_segment_open(struct evr_segment *seg, const char *shm_name, char *err, size_t errlen)
{
	return evr_segment_open_flags(seg, shm_name, 0, err, errlen);
}

int evr_segment_open_flags(struct evr_segment *seg, const char *shm_name, unsigned flags, char *err, size_t errlen)
{
	struct evr_seg_header copy;
	struct stat st;
	uint8_t *base;
	int fd, rc;

	memset(seg, 0, sizeof(*seg));
	if (strlen(shm_name) >= sizeof(seg->shm_name))
		return fail(err, errlen, -EINVAL, "segment name too long: %s", shm_name);
	fd = shm_open(shm_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		return fail(err, errlen, rc, "cannot open segment %s: %s", shm_name, strerror(-rc));
	}
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		close(fd);
		return fail(err, errlen, rc, "cannot stat segment %s: %s", shm_name, strerror(-rc));
	}
	/*
	 * Another user's segment is refused: a user is not handed memory that
	 * someone else writes. Root is the exception, as it is for every file:
	 * a host-wide consumer (evring agent as a service) follows every user's
	 * processes, and the consumer treats any segment as hostile input.
	 */
	if (st.st_uid != geteuid() && geteuid() != 0) {
		close(fd);
		return fail(err, errlen, -EACCES, "segment %s is owned by uid %u, not by this user (uid %u)",
			    shm_name, (unsigned)st.st_uid, (unsigned)geteuid());
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(flags & EVR_SEGMENT_ALLOW_WRITABLE)) {
		close(fd);
		return fail(err, errlen, -EACCES,
			    "segment %s has mode %04o: users other than its owner may write it, and so shrink or "
			    "rewrite it under this consumer; refused (evring producers create 0600; --allow-writable "
			    "attaches anyway)",
			    shm_name, (unsigned)(st.st_mode & 07777));
	}
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)EVR_HEADER_BYTES) {
		close(fd);
		return fail(err, errlen, -EBADMSG, "segment %s is %lld bytes, too small to be evring's", shm_name,
			    (long long)st.st_size);
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	rc = -errno;
	close(fd);
	if (base == MAP_FAILED)
		return fail(err, errlen, rc, "cannot map segment %s: %s", shm_name, strerror(-rc));
	/* The magic first, with acquire (it is stored last), then one copy: what is checked is what is used. */
	if (evr_ld_acq_32((const uint32_t *)(const void *)base) == 0) { /* H2, pairs with H1 */
		munmap(base, (size_t)st.st_size);
		return fail(err, errlen, -EAGAIN, "segment %s is still being created", shm_name);
	}
	memcpy(&copy, base, sizeof(copy));
	rc = evr_segment_validate(&copy, (uint64_t)st.st_size, err, errlen);
	if (rc) {
		munmap(base, (size_t)st.st_size);
		return rc;
	}
	map_fields(seg, base, (uint64_t)st.st_size, &copy);
	seg->foreign_pidns = copy.creator_pidns != 0 && copy.creator_pidns != evr_pidns();
	snprintf(seg->shm_name, sizeof(seg->shm_name), "%s", shm_name);
	return 0;
}

int evr_segment_map_buffer(struct evr_segment *seg, void *base, uint64_t bytes, char *err, size_t errlen)
{
	struct evr_seg_header copy;
	int rc;

	memset(seg, 0, sizeof(*seg));
	/* The lanes' words are read with 8-byte atomics: a misaligned image cannot be read as one. */
	if ((uintptr_t)base & 7)
		return fail(err, errlen, -EINVAL, "segment image at %p is not 8-byte aligned", base);
	if (bytes < sizeof(copy))
		return evr_segment_validate(base, bytes, err, errlen);
	/* One copy, as evr_segment_open takes: what is checked is what is used. */
	memcpy(&copy, base, sizeof(copy));
	rc = evr_segment_validate(&copy, bytes, err, errlen);
	if (rc)
		return rc;
	map_fields(seg, base, bytes, &copy);
	seg->foreign_pidns = copy.creator_pidns != 0 && copy.creator_pidns != evr_pidns();
	snprintf(seg->shm_name, sizeof(seg->shm_name), "(image at %p)", base);
	return 0;
}

void evr_segment_close(struct evr_segment *seg)
{
	if (seg->base)
		munmap(seg->base, seg->bytes);
	seg->base = NULL;
}

int evr_segment_unlink(const char *shm_name)
{
	return shm_unlink(shm_name) == 0 ? 0 : -errno;
}

/* ---- metadata area ---------------------------------------------------- */

int evr_meta_append(struct evr_segment *seg, uint32_t kind, const void *payload, uint32_t len, uint64_t *id)
{
	uint64_t total, off;
	struct evr_meta_entry *e;

	if (len > seg->meta_bytes)
		return -EINVAL;
	total = align_up(sizeof(struct evr_meta_entry) + (uint64_t)len, 8);
	off = evr_faa_64(&seg->hdr->meta_used, total); /* M1 */
	if (off < EVR_META_FIRST || off > seg->meta_bytes || total > seg->meta_bytes - off) {
		evr_faa_64(&seg->hdr->meta_dropped, 1);
		return -ENOSPC;
	}
	e = (struct evr_meta_entry *)(void *)(seg->meta + off);
	evr_st_32(&e->len, len);
	e->kind = kind;
	memcpy(e + 1, payload, len);
	evr_st_rel_32(&e->commit, EVR_META_COMMITTED); /* M2, pairs with M3 */
	if (id)
		*id = off;
	return 0;
}

struct evr_meta_entry *evr_meta_entry_at(const struct evr_segment *seg, uint64_t id)
{
	if (id < EVR_META_FIRST || (id & 7) || id > seg->meta_bytes - sizeof(struct evr_meta_entry))
		return NULL;
	return (struct evr_meta_entry *)(void *)(seg->meta + id);
}

int evr_meta_next(const struct evr_segment *seg, uint64_t *cursor, struct evr_meta_view *out, bool writer_dead)
{
	uint64_t off = *cursor < EVR_META_FIRST ? EVR_META_FIRST : *cursor;
	uint64_t used = evr_ld_64(&seg->hdr->meta_used); /* relaxed: M3 below orders each entry */
	struct evr_meta_entry *e;
	uint32_t commit, len;
	uint64_t total;

	if (used > seg->meta_bytes)
		used = seg->meta_bytes; /* reservations past the end were refused */
	if (off >= used || seg->meta_bytes - off < sizeof(*e))
		return 0;
	if (off & 7)
		return -EBADMSG;
	e = (struct evr_meta_entry *)(void *)(seg->meta + off);
	commit = evr_ld_acq_32(&e->commit); /* M3, pairs with M2 */
	len = evr_ld_32(&e->len);
	total = align_up(sizeof(*e) + (uint64_t)len, 8);
	if (total > seg->meta_bytes - off) {
		if (commit == EVR_META_COMMITTED || writer_dead)
			return -EBADMSG;
		return 0;
	}
	if (commit != EVR_META_COMMITTED) {
		if (!writer_dead)
			return 0;
		if (len == 0 || off + total > used)
			return -EBADMSG; /* died before even its length was stored */
		*cursor = off + total;
		return -ESTALE;
	}
	out->id = off;
	out->kind = evr_ld_32(&e->kind);
	out->len = len;
	out->payload = (const uint8_t *)(e + 1);
	*cursor = off + total;
	return 1;
}

int evr_meta_read(const struct evr_segment *seg, uint64_t id, struct evr_meta_view *out)
{
	struct evr_meta_entry *e = evr_meta_entry_at(seg, id);
	uint64_t used = evr_ld_64(&seg->hdr->meta_used); /* relaxed: M3 below orders the entry */
	uint32_t len;

	if (!e || id >= used)
		return id < seg->meta_bytes && e ? 0 : -EBADMSG; /* not reserved yet, or no entry */
	if (evr_ld_acq_32(&e->commit) != EVR_META_COMMITTED) /* M3, pairs with M2 */
		return 0;
	len = evr_ld_32(&e->len);
	if ((uint64_t)len > seg->meta_bytes - id - sizeof(*e))
		return -EBADMSG;
	out->id = id;
	out->kind = evr_ld_32(&e->kind);
	out->len = len;
	out->payload = (const uint8_t *)(e + 1);
	return 1;
}

/* ---- processes -------------------------------------------------------- */

uint64_t evr_pidns(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

bool evr_segment_owner_alive(const struct evr_segment *seg, uint64_t owner)
{
	/* Pids of another namespace mean nothing in /proc here: never judge them dead. */
	return seg->foreign_pidns || evr_owner_alive(owner);
}

bool evr_owner_alive(uint64_t owner)
{
	char path[64], buf[512];
	uint32_t pid = (uint32_t)(owner >> 32), tid = (uint32_t)owner;
	const char *p;
	ssize_t n;
	int fd;

	if (pid == 0 || pid > INT_MAX || tid > INT_MAX)
		return false;
	if (tid)
		snprintf(path, sizeof(path), "/proc/%u/task/%u/stat", pid, tid);
	else
		snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno != ENOENT && errno != ESRCH;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n == 0 ? false : errno != ESRCH; /* only a vanished task is dead: anything else, assume alive */
	buf[n] = 0;
	p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
	if (!p || p[1] != ' ')
		return true;
	return p[2] != 'Z' && p[2] != 'X' && p[2] != 'x';
}
