/*
 * fuzz_consumer.c: libFuzzer over what a consumer reads from a producer's
 * segment, which it must treat as hostile: the header, the lane table, the
 * metadata area, commit words and record bodies.
 *
 * The first input byte picks the mode (fuzz_common.h):
 *
 *   segment image  The rest is a whole segment. It is copied into fresh
 *                  anonymous memory between two PROT_NONE guard pages, its
 *                  (8-byte padded) end against the upper one, or with
 *                  FUZZ_FLAG_LOW its start against the lower one, so a read
 *                  past that end faults even where AddressSanitizer does not
 *                  look: the ring reads shared memory through ck_pr's inline
 *                  assembly, which ASan does not instrument. The rest of the
 *                  readable pages is poisoned for ASan.
 *                  evr_segment_validate runs on it; when it passes, a
 *                  consumer source (struct evr_src) is built over it as
 *                  evr__src_open builds one over a mapped object (consumer
 *                  slot, reader from the oldest record or from now, clock
 *                  map), its metadata is read with evr__src_meta_refresh, and
 *                  every lane is drained with evr_reader_next until it stays
 *                  idle, twice, with evr_reader_reap after each round as the
 *                  drain loop does (with FUZZ_FLAG_REWRITE, the original
 *                  image is written back over the first round's stores in
 *                  between, as a hostile producer could). Every delivered
 *                  body is copied into a buffer of exactly its length (ASan
 *                  sees a read past it) and decoded with evr__decode; the
 *                  metadata is walked again with evr_meta_next and
 *                  evr_meta_entry_at, and the tables read from it are
 *                  queried as handlers' filters query them.
 *   msgpack        The rest is a body: evr__msgpack_sane must agree with
 *                  msgpack-c on it. What the walk accepts msgpack_unpack must
 *                  unpack; the object must take exactly the bytes the walk
 *                  accepts (its own bytes pass, one fewer fails) and nest no
 *                  deeper than the limit.
 *   record         [type] [lane] body: one body through evr__decode against a
 *                  source whose sites are the fixed ones of fuzz_common.c.
 *   capture        (byte 0x83) The rest is a capture file, raw or decoded,
 *                  replayed by evr__replay_file from a memfd into a sink that
 *                  does what the consumer's does: a raw capture's runs and
 *                  records go through the drain's decode stage
 *                  (evr__drain_run, evr__drain_record) into a merge, its
 *                  rounds end as live rounds do; every rec that comes out is
 *                  checked against its source and freed.
 *
 * Beyond what the sanitizers catch, a violated contract aborts: a lane that
 * never goes idle (a reader loop that does not end), a metadata walk that
 * does not end, a payload or entry outside the metadata area, validation and
 * evr_segment_map_buffer disagreeing, a decoded record inconsistent with its
 * site.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <msgpack.h>

#include "fuzz_common.h"
#include "attach.h"
#include "decode.h"
#include "drain.h"
#include "merge.h"
#include "mpcheck.h"
#include "rec.h"
#include "replay.h"
#include "objects.h"
#include "source.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define FUZZ_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define FUZZ_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#endif
#endif
#ifndef FUZZ_POISON
#define FUZZ_POISON(p, n) ((void)(p), (void)(n))
#define FUZZ_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/*
 * evr_reader_next returns 0 for GAP_POLLS (64) polls before it looks at the
 * writers' tail, and an exclusive lane's gap is stepped over on the second
 * look (stuck timeout 0 unless FUZZ_FLAG_PATIENT): 200 empty polls in a row
 * mean idle.
 */
#define IDLE_POLLS 200

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct evr_consumer_stats st; /* the counters every stage adds to */
static struct evr_decoder dec;       /* its msgpack zone, for evr__decode */
static bool verbose;		      /* EVR_FUZZ_VERBOSE=1: one line per segment input, to check seeds */
static uint64_t decoded[EVR_REC_THREAD + 1];
static uint8_t body_buf[EVR_BODY_MAX];

/* The source the record mode decodes against: a real segment holding the fixed sites. */
static struct evr_src fixed;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fuzz_consumer: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort(); /* libFuzzer saves the input as a crash */
}

/* ---- a segment image between guard pages ---------------------------------------- */

struct image {
	uint8_t *map;
	size_t map_bytes, page;
	uint8_t *lo, *hi; /* the readable pages */
	uint8_t *base;	  /* the image: 8-byte aligned, against one of the guards */
	uint64_t bytes;
};

static bool image_map(struct image *im, const uint8_t *data, size_t len, bool low)
{
	size_t span = (len + 7) & ~(size_t)7;
	size_t data_pages;

	im->page = (size_t)sysconf(_SC_PAGESIZE);
	data_pages = span ? (span + im->page - 1) & ~(im->page - 1) : im->page;
	im->map_bytes = data_pages + 2 * im->page;
	im->map = mmap(NULL, im->map_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (im->map == MAP_FAILED)
		return false;
	im->lo = im->map + im->page;
	im->hi = im->lo + data_pages;
	if (mprotect(im->lo, data_pages, PROT_READ | PROT_WRITE) != 0) {
		munmap(im->map, im->map_bytes);
		return false;
	}
	im->base = low ? im->lo : im->hi - span;
	im->bytes = len;
	memcpy(im->base, data, len);
	FUZZ_POISON(im->lo, (size_t)(im->base - im->lo));
	FUZZ_POISON(im->base + len, (size_t)(im->hi - (im->base + len)));
	return true;
}

static void image_unmap(struct image *im)
{
	/* Shadow memory outlives munmap: a later mapping at this address must not inherit the poison. */
	FUZZ_UNPOISON(im->lo, (size_t)(im->hi - im->lo));
	munmap(im->map, im->map_bytes);
}

/* ---- a consumer source over a mapped segment ------------------------------------------- */

/* What evr__src_open does after evr_segment_open, minus the shm object. */
static int src_init(struct evr_src *s, unsigned read_flags, bool dead, bool patient)
{
	struct evr_seg_header *h = s->seg.hdr;
	struct evr_clock_calib cal;

	if (evr_reader_init(&s->reader, &s->seg, read_flags) != 0)
		return -ENOMEM;
	if (!patient)
		s->reader.stuck_timeout_ns = 0; /* take the stuck and dead-writer paths at once, not after 1 s */
	s->lanes = calloc(s->seg.lane_count, sizeof(*s->lanes));
	if (!s->lanes) {
		evr_reader_fini(&s->reader);
		return -ENOMEM;
	}
	cal = (struct evr_clock_calib){ s->seg.clock_kind, h->clock_anchor_ticks, h->clock_anchor_mono_ns,
					h->clock_anchor_real_ns, h->clock_mult };
	evr_clock_map_init(&s->clock, &cal);
	snprintf(s->program, sizeof(s->program), "%.*s", (int)strnlen(h->program, sizeof(h->program)), h->program);
	snprintf(s->shm_name, sizeof(s->shm_name), "%s", s->seg.shm_name);
	s->pub.pid = h->creator_pid;
	s->pub.program = s->program;
	s->pub.cmdline = s->cmdline;
	s->pub.shm_name = s->shm_name;
	s->pub.dead = dead;
	return 0;
}

static void src_fini(struct evr_src *s)
{
	evr_reader_fini(&s->reader);
	evr__src_tables_free(s);
	free(s->lanes);
	s->lanes = NULL;
}

/* ---- records ------------------------------------------------------------------------------ */

/* What a handler would read of a decoded record: every field, every string to its NUL. */
static void check_rec(const struct evr_rec *r)
{
	const struct evr_site_info *named = r->type == EVR_REC_SPAN_END ? r->end_site : r->site;
	volatile size_t sum = 0;

	if (r->type < EVR_REC_EVENT || r->type > EVR_REC_LOST)
		die("decoded a record of type %u", r->type);
	if (r->type == EVR_REC_LOST) {
		if (r->fields)
			die("a LOST record with fields");
		return;
	}
	if (!r->fields || !named || r->fields->n != named->nfields)
		die("record of type %u: fields do not match its site", r->type);
	for (uint32_t i = 0; i < r->fields->n; i++) {
		const struct evr_field *f = &r->fields->f[i];

		sum += strlen(f->name);
		if (f->v.type == EVR_V_STR) {
			if (f->v.s[f->v.len] != 0)
				die("string field %u is not NUL-terminated at its length", i);
			sum += strlen(f->v.s);
		} else if (f->v.type > EVR_V_STR) {
			die("field %u of unknown value type %u", i, f->v.type);
		}
	}
	(void)sum;
}

/* One delivered record, as drain_lane handles it. body must be exactly body_len bytes. */
static void deliver(struct evr_src *s, const struct evr_record *rec)
{
	struct evr_rec out;

	if (rec->type == EVR_REC_THREAD) {
		(void)evr__decode_thread(&dec, s, rec);
		decoded[EVR_REC_THREAD]++;
		return;
	}
	memset(&out, 0, sizeof(out));
	if (evr__decode(&dec, s, rec, &out) != 0)
		return;
	decoded[out.type]++;
	check_rec(&out);
	evr__fields_unref(out.fields);
}

/* Delivers a record read from a lane through an exact-size copy of its body. */
static void deliver_copy(struct evr_src *s, const struct evr_record *rec)
{
	struct evr_record r = *rec;
	uint8_t *copy = malloc(rec->body_len ? rec->body_len : 1);

	if (!copy)
		return;
	memcpy(copy, rec->body, rec->body_len);
	r.body = copy;
	deliver(s, &r);
	free(copy);
}

/* Reads a lane until IDLE_POLLS polls in a row find nothing; a lane that never gets there is a hang. */
static void drain_lane(struct evr_src *s, uint32_t lane)
{
	uint64_t slots = s->seg.lane_bytes / EVR_WORD_BYTES;
	uint64_t budget = (slots + 2) * (IDLE_POLLS + 2) * 2;
	struct evr_record rec;

	for (unsigned idle = 0; idle < IDLE_POLLS;) {
		int rc;

		if (budget-- == 0)
			die("lane %u of %llu bytes never goes idle", lane, (unsigned long long)s->seg.lane_bytes);
		rc = evr_reader_next(&s->reader, lane, &rec, body_buf, sizeof(body_buf));
		if (rc < 0)
			die("evr_reader_next: %d", rc);
		if (rc == 0) {
			idle++;
			continue;
		}
		idle = 0;
		if (rec.lane != lane || rec.body_len > EVR_BODY_MAX || rec.body != body_buf || rec.type < 1 ||
		    rec.type > EVR_REC_DELIVERABLE_MAX || rec.type == EVR_REC_PAD)
			die("delivered a record it should not have: lane %u type %u len %u", rec.lane, rec.type,
			    rec.body_len);
		deliver_copy(s, &rec);
	}
	evr_reader_release(&s->reader, lane);
}

/* ---- metadata ------------------------------------------------------------------------------ */

static void check_entry(const struct evr_segment *seg, uint64_t id)
{
	const struct evr_meta_entry *e = evr_meta_entry_at(seg, id);

	if (e && ((const uint8_t *)e < seg->meta || (const uint8_t *)(e + 1) > seg->meta + seg->meta_bytes))
		die("metadata entry %llu outside the area", (unsigned long long)id);
}

/* Every entry, as a late consumer would walk them, with and without dead writers. */
static void walk_meta(const struct evr_segment *seg, bool writer_dead)
{
	uint64_t cursor = 0, limit = seg->meta_bytes / sizeof(struct evr_meta_entry) + 2;
	struct evr_meta_view v;
	volatile uint8_t sum = 0;

	for (uint64_t n = 0;; n++) {
		int rc;

		if (n > limit)
			die("evr_meta_next does not reach the end of %llu bytes", (unsigned long long)seg->meta_bytes);
		rc = evr_meta_next(seg, &cursor, &v, writer_dead);
		if (rc == -ESTALE)
			continue;
		if (rc <= 0)
			break;
		if (v.payload < seg->meta || v.len > seg->meta_bytes ||
		    v.payload + v.len > seg->meta + seg->meta_bytes)
			die("metadata payload %llu+%u outside the area", (unsigned long long)v.id, v.len);
		for (uint32_t i = 0; i < v.len; i++)
			sum ^= v.payload[i];
		check_entry(seg, v.id);
	}
	check_entry(seg, cursor);
	check_entry(seg, seg->meta_bytes - sizeof(struct evr_meta_entry));
	check_entry(seg, evr_ld_64(&seg->hdr->meta_used));
	(void)sum;
}

/* What handlers' filters ask of the tables read from the metadata. */
static void check_tables(const struct evr_src *s)
{
	for (uint32_t i = 0; i < s->sites_cap; i++) {
		const struct evr_site_info *si = s->sites[i];

		if (!si)
			continue;
		if (evr__src_site(s, si->id) != si)
			die("site %llu is not found by its id", (unsigned long long)si->id);
		evr__src_dispatch_reaches(s, si->dispatcher, "");
		for (uint32_t d = 0; d < s->dispatchers_n; d++)
			evr__src_dispatch_reaches(s, si->dispatcher, s->dispatchers[d].path);
	}
	for (uint32_t t = 0; t < s->threads_n; t++)
		if (!evr__src_thread(s, s->threads[t].tid))
			die("thread %u is not found by its tid", s->threads[t].tid);
}

/* ---- modes ------------------------------------------------------------------------------------ */

static void fuzz_segment(const uint8_t *data, size_t len, uint8_t mode)
{
	char err[EVR_ERR_MAX], err2[EVR_ERR_MAX];
	struct evr_src *s;
	struct image im;
	uint32_t holder;
	int v, m;

	if (!image_map(&im, data, len, mode & FUZZ_FLAG_LOW))
		return;
	s = calloc(1, sizeof(*s));
	if (!s) {
		image_unmap(&im);
		return;
	}
	err[0] = err2[0] = 0;
	v = evr_segment_validate(im.base, im.bytes, err, sizeof(err));
	m = evr_segment_map_buffer(&s->seg, im.base, im.bytes, err2, sizeof(err2));
	if (v != m || strcmp(err, err2) != 0)
		die("evr_segment_validate (%d, %s) and evr_segment_map_buffer (%d, %s) disagree", v, err, m, err2);
	if (v != 0) {
		if (!err[0] || strnlen(err, sizeof(err)) == sizeof(err))
			die("refused (%d) without a message", v);
		if (verbose)
			fprintf(stderr, "segment refused (%d): %s\n", v, err);
		goto out;
	}
	memset(decoded, 0, sizeof(decoded));
	if ((mode & 3) == FUZZ_SEGMENT_LIVE)
		s->seg.foreign_pidns = true; /* every pid is alive: the paths that wait instead of skip */
	else
		s->seg.foreign_pidns = false;
	if (src_init(s, mode & FUZZ_FLAG_FROM_NOW ? 0 : EVR_READ_FROM_OLDEST, mode & FUZZ_FLAG_DEAD,
		     mode & FUZZ_FLAG_PATIENT) != 0)
		goto out;

	/* As evr__src_open: take the consumer slot (a hostile holder pid included), let it go at the end. */
	s->slot_held = evr_consumer_slot_claim(&s->seg, (uint32_t)getpid(), &holder) >= 0;
	evr__src_meta_refresh(s, &st);
	for (int round = 0; round < 2; round++) {
		for (uint32_t l = 0; l < s->seg.lane_count; l++)
			drain_lane(s, l);
		evr_reader_reap(&s->reader);
		/* A hostile producer undoes what the reader stored; the reader keeps its own cursors. */
		if (round == 0 && (mode & FUZZ_FLAG_REWRITE)) {
			memcpy(im.base, data, len);
			evr__src_meta_refresh(s, &st);
		}
	}
	evr__src_meta_refresh(s, &st);
	walk_meta(&s->seg, false);
	walk_meta(&s->seg, true);
	check_tables(s);
	if (verbose)
		fprintf(stderr,
			"segment: %u lanes, %u sites; decoded %llu events, %llu begins, %llu ends, %llu losses, "
			"%llu threads; reader: %llu delivered, %llu pads, %llu bad, %llu stuck, %llu dead, "
			"%llu reclaimed; %llu bad bodies\n",
			s->seg.lane_count, s->sites_n, (unsigned long long)decoded[EVR_REC_EVENT],
			(unsigned long long)decoded[EVR_REC_SPAN_BEGIN], (unsigned long long)decoded[EVR_REC_SPAN_END],
			(unsigned long long)decoded[EVR_REC_LOST], (unsigned long long)decoded[EVR_REC_THREAD],
			(unsigned long long)s->reader.stats.delivered, (unsigned long long)s->reader.stats.pads,
			(unsigned long long)s->reader.stats.skipped_bad, (unsigned long long)s->reader.stats.skipped_stuck,
			(unsigned long long)s->reader.stats.skipped_dead, (unsigned long long)s->reader.stats.reclaimed,
			(unsigned long long)st.bad);
	if (s->slot_held)
		evr_consumer_slot_release(&s->seg, (uint32_t)getpid());
	src_fini(s);
out:
	free(s);
	image_unmap(&im);
}

/* Nesting depth of an unpacked object: a scalar 0, [1] 1, [[1]] 2. */
static unsigned obj_depth(const msgpack_object *o)
{
	unsigned d = 0;

	if (o->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			unsigned c = obj_depth(&o->via.array.ptr[i]);
			d = c > d ? c : d;
		}
		return d + 1;
	}
	if (o->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			unsigned k = obj_depth(&o->via.map.ptr[i].key), v = obj_depth(&o->via.map.ptr[i].val);
			d = k > d ? k : d;
			d = v > d ? v : d;
		}
		return d + 1;
	}
	return 0;
}

static void fuzz_msgpack(const uint8_t *data, size_t len)
{
	/* msgpack-c's unpacker stops at 32 levels (MSGPACK_EMBED_STACK_SIZE): stay below. */
	unsigned depth = len ? data[0] & 15 : 0;
	const uint8_t *body = data + (len ? 1 : 0);
	size_t n = len ? len - 1 : 0, off = 0;
	uint64_t ts, count, first;
	msgpack_zone *zone;
	msgpack_object obj;
	bool sane;
	int rc;

	sane = evr__msgpack_sane(body, n, depth);
	if (sane && !evr__msgpack_sane(body, n, depth + 1))
		die("a deeper limit refused what depth %u took", depth);
	if (n <= UINT32_MAX && evr_lost_decode(body, (uint32_t)n, &ts, &count, &first) == 0 &&
	    !evr__msgpack_sane(body, n, 1))
		die("evr_lost_decode took a body the walk refuses");
	if (!sane)
		return; /* unchecked, msgpack-c would size its zone from a hostile count */
	zone = &dec.zone;
	msgpack_zone_clear(zone);
	rc = msgpack_unpack((const char *)body, n, &off, zone, &obj);
	if (!evr__unpacked(rc))
		die("the walk took %zu bytes msgpack_unpack refuses (%d)", n, rc);
	if (off == 0 || off > n)
		die("msgpack_unpack consumed %zu of %zu bytes", off, n);
	if (!evr__msgpack_sane(body, off, depth))
		die("the walk refuses the object's own %zu bytes", off);
	if (evr__msgpack_sane(body, off - 1, depth))
		die("the walk takes %zu bytes of a %zu-byte object", off - 1, off);
	if (obj_depth(&obj) > depth)
		die("the walk took an object nested %u deep at limit %u", obj_depth(&obj), depth);
}

static void fuzz_record(const uint8_t *data, size_t len)
{
	struct evr_record rec;

	if (len < 2 || len - 2 > EVR_BODY_MAX)
		return;
	memset(&rec, 0, sizeof(rec));
	rec.type = data[0];
	rec.lane = data[1] % fixed.seg.lane_count;
	rec.body = data + 2; /* libFuzzer's copy ends where the input does: ASan sees a read past it */
	rec.body_len = (uint32_t)(len - 2);
	memset(fixed.lanes, 0, fixed.seg.lane_count * sizeof(*fixed.lanes));
	deliver(&fixed, &rec);
}

/* ---- capture files ---------------------------------------------------------------------------- */

/* The replay's sink: what the consumer's sink does with sources, rounds, runs and recs, without handlers. */
struct cap_sink {
	struct evr_src **srcs;
	uint32_t nsrc;
	struct evr_merge *merge;
	struct evr_drain *drain;
	struct evr_rec_pool recs;
	uint64_t now;
	bool round;
};
static struct cap_sink cs;

static void cap_check_rec(struct evr_rec *r)
{
	bool known = false;

	for (uint32_t i = 0; i < cs.nsrc; i++)
		known |= r->src == cs.srcs[i];
	if (r->type == EVR_REC_SAMPLE) {
		/* A metric (of a source, or the host's) or a run (of a source), as the replay built it. */
		const struct evr_obj *o = r->item;

		if (!o || (o->kind != EVR_OBJ_METRIC && o->kind != EVR_OBJ_RUN) ||
		    (r->src ? !known : o->kind != EVR_OBJ_METRIC))
			die("a metric or run of no source, or not a metric or run");
		evr__rec_free(&cs.recs, r);
		return;
	}
	if (!known || r->type < EVR_REC_EVENT || r->type > EVR_REC_LOST || (r->src->seg.lane_count &&
								r->lane >= r->src->seg.lane_count))
		die("a rec of no source, or of a lane its source does not have");
	evr__rec_free(&cs.recs, r);
}

static void cap_pop(bool flush)
{
	struct evr_rec *r;

	while ((r = evr__merge_pop(cs.merge, 2000000, flush)) != NULL)
		cap_check_rec(r);
}

static int cap_source(void *arg, struct evr_src *s)
{
	struct evr_src **t = realloc(cs.srcs, (cs.nsrc + 1) * sizeof(*t));

	(void)arg;
	if (t)
		cs.srcs = t;
	if (!t || evr__merge_lanes(cs.merge, cs.nsrc, s->seg.lane_count) != 0) { /* as the consumer's sink */
		free(s->lanes);
		free(s);
		return -ENOMEM;
	}
	s->pub.index = cs.nsrc;
	s->drained_after_death = s->seg.lane_count == 0;
	cs.srcs[cs.nsrc++] = s;
	return (int)s->pub.index;
}

static void cap_rec(void *arg, struct evr_rec *r)
{
	(void)arg;
	cap_check_rec(r);
}

static void cap_tick(void *arg, uint64_t ns)
{
	(void)arg;
	(void)ns;
}

static void cap_dead(void *arg, struct evr_src *s, uint64_t ns)
{
	(void)arg;
	s->dead_ns = ns;
}

static bool cap_stopping(void *arg)
{
	(void)arg;
	return false;
}

static void cap_round_end(void)
{
	if (!cs.round)
		return;
	cs.round = false;
	for (uint32_t i = 0; i < cs.nsrc; i++)
		if (!cs.srcs[i]->drained_after_death)
			evr__drain_round_end(cs.drain, cs.srcs[i], cs.now);
	cap_pop(false);
}

static void cap_round(void *arg, uint64_t ns)
{
	(void)arg;
	cap_round_end();
	cs.round = true;
	cs.now = ns;
}

static int cap_run(void *arg, struct evr_src *s, uint32_t lane, uint64_t pos, const void *b, size_t len, size_t *off)
{
	(void)arg;
	return evr__drain_run(cs.drain, s, lane, pos, b, len, off);
}

static void cap_record(void *arg, struct evr_src *s, const struct evr_record *rec)
{
	(void)arg;
	evr__drain_record(cs.drain, s, rec);
}

static void cap_full(void *arg, struct evr_src *s, uint32_t lane)
{
	(void)arg;
	s->lanes[lane].full = true;
}

static void cap_pending(void *arg, struct evr_src *s, uint32_t lane, uint64_t n, uint64_t lost, uint64_t first)
{
	(void)arg;
	evr__drain_pending(cs.drain, s, lane, n, lost, first, cs.now);
}

static void cap_died(void *arg, struct evr_src *s, uint64_t ns, bool exited)
{
	(void)arg;
	s->pub.dead = true;
	s->dead_ns = ns;
	s->exited = exited;
}

static void cap_drained(void *arg, struct evr_src *s)
{
	(void)arg;
	evr__drain_done(cs.drain, s);
}

static void fuzz_capture(const uint8_t *data, size_t len)
{
	static int fd = -1;
	struct evr_replay_sink sink = { .source = cap_source, .rec = cap_rec, .tick = cap_tick, .dead = cap_dead,
					.stopping = cap_stopping, .round = cap_round, .run = cap_run,
					.record = cap_record, .full = cap_full, .pending = cap_pending,
					.died = cap_died, .drained = cap_drained, .recs = &cs.recs, .st = &st };
	char path[64], err[512];

	if (fd < 0 && (fd = memfd_create("fuzz-capture", 0)) < 0)
		die("memfd_create: %s", strerror(errno));
	if (ftruncate(fd, 0) != 0 || pwrite(fd, data, len, 0) != (ssize_t)len)
		die("cannot write the capture to its memfd");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (!(cs.merge = evr__merge_new(8)) || !(cs.drain = evr__drain_new(cs.merge, &cs.recs, &st, 256)))
		die("out of memory");
	evr__replay_file(&sink, path, err, sizeof(err));
	cap_round_end();
	cap_pop(true);
	if (verbose)
		fprintf(stderr, "capture: %u sources, %s\n", cs.nsrc, err);
	for (uint32_t i = 0; i < cs.nsrc; i++) {
		evr__src_tables_free(cs.srcs[i]);
		free(cs.srcs[i]->lanes);
		free(cs.srcs[i]);
	}
	free(cs.srcs);
	evr__drain_free(cs.drain);
	evr__merge_free(cs.merge);
	evr__rec_pool_fini(&cs.recs);
	memset(&cs, 0, sizeof(cs));
}

/* ---- libFuzzer ------------------------------------------------------------------------------- */

static void fixed_open(void)
{
	struct evr_segment_config cfg = { .lanes = FUZZ_LANES, .lane_bytes = FUZZ_LANE_BYTES,
					  .meta_bytes = FUZZ_META_BYTES, .program = "fuzz" };
	uint64_t ids[FUZZ_SITES];
	char name[128], err[EVR_ERR_MAX];
	int rc;

	evr_segment_name(name, sizeof(name), getpid(), "fuzz-fixed");
	rc = evr_segment_create(&fixed.seg, name, &cfg, err, sizeof(err));
	if (rc != 0)
		die("cannot create the record mode's segment: %s", err);
	evr_segment_unlink(name); /* the mapping stays; nothing is left in /dev/shm */
	if (fuzz_meta_define(&fixed.seg, ids) != 0 || src_init(&fixed, EVR_READ_FROM_OLDEST, false, false) != 0)
		die("cannot set up the record mode's sites");
	if (evr__src_meta_refresh(&fixed, &st) < FUZZ_SITES)
		die("the record mode's sites did not load");
	for (int i = 0; i < FUZZ_SITES; i++)
		if (!evr__src_site(&fixed, ids[i]))
			die("site %d (id %llu) did not load", i, (unsigned long long)ids[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	verbose = getenv("EVR_FUZZ_VERBOSE") && *getenv("EVR_FUZZ_VERBOSE") == '1';
	if (evr__decoder_init(&dec, &st) != 0)
		die("out of memory");
	fixed_open();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] & 3) {
	case FUZZ_SEGMENT:
	case FUZZ_SEGMENT_LIVE:
		fuzz_segment(data + 1, size - 1, data[0]);
		break;
	case FUZZ_MSGPACK:
		fuzz_msgpack(data + 1, size - 1);
		break;
	default:
		if (data[0] == FUZZ_CAPTURE)
			fuzz_capture(data + 1, size - 1);
		else
			fuzz_record(data + 1, size - 1);
		break;
	}
	return 0;
}
