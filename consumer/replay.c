/*
 * replay.c: a capture file (capture.c describes its entries) read back as
 * the stream it recorded, into a sink (replay.h). The file is input like a
 * segment is: every entry is validated, one over CAPTURE_ENTRY_MAX bytes is
 * refused before msgpack-c sizes anything for it, and the replay stops at
 * the first bad one with an error naming its position.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "capture.h"
#include "capture_raw.h"
#include "decode.h"
#include "mpcheck.h"
#include "objects.h"
#include "replay.h"
#include "sampler.h"

/* ---- replay: entries return 1 for a record, 0 for anything else, or -errno ------------------------------------------------------------------------------ */

struct replay {
	const struct evr_replay_sink *sink;
	const char *path;
	struct evr_src **srcs; /* by capture index; owned by the sink */
	uint64_t **next;       /* raw: by capture index, per lane, the lowest position the next entry may have */
	uint32_t nsrc;
	bool raw;	       /* a raw capture (version 3) */
	uint64_t entry; /* entries read, for error messages */
	char *err;
	size_t errlen;
};

static int bad(struct replay *rp, const char *what)
{
	snprintf(rp->err, rp->errlen, "capture %s: entry %llu: %s", rp->path, (unsigned long long)rp->entry, what);
	rp->sink->st->bad++; /* the entry that ends the replay */
	return -EBADMSG;
}

static bool u64_at(const msgpack_object *a, uint32_t i, uint64_t *v)
{
	if (a[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return false;
	*v = a[i].via.u64;
	return true;
}

static bool str_is(const msgpack_object *o, const char *s)
{
	return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) && !memcmp(o->via.str.ptr, s, o->via.str.size);
}

static const msgpack_object *map_at(const msgpack_object *m, const char *key)
{
	for (uint32_t i = 0; m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++)
		if (str_is(&m->via.map.ptr[i].key, key))
			return &m->via.map.ptr[i].val;
	return NULL;
}

static void copy_str(char *dst, size_t cap, const msgpack_object *o)
{
	if (o && o->type == MSGPACK_OBJECT_STR)
		snprintf(dst, cap, "%.*s", (int)(o->via.str.size < cap ? o->via.str.size : cap - 1), o->via.str.ptr);
}

static bool map_u64(const msgpack_object *m, const char *key, uint64_t *v)
{
	const msgpack_object *o = map_at(m, key);

	if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return false;
	*v = o->via.u64;
	return true;
}

/* A raw capture's source: the shape of its segment, as hostile as a segment header; its lanes and positions. */
static int raw_shape(struct replay *rp, struct evr_src *s, const msgpack_object *m)
{
	uint64_t lanes, bytes, salt, kind, **t;

	if (!map_u64(m, "lane_count", &lanes) || !map_u64(m, "lane_bytes", &bytes) || !map_u64(m, "salt", &salt) ||
	    !map_u64(m, "clock_kind", &kind))
		return bad(rp, "a raw capture's source without its segment's shape (lane_count, lane_bytes, salt, clock_kind)");
	if (lanes < 2 || lanes > EVR_LANES_MAX || bytes < EVR_LANE_BYTES_MIN || bytes > EVR_LANE_BYTES_MAX ||
	    (bytes & (bytes - 1)) || salt > UINT32_MAX || (kind != EVR_CLOCK_TSC && kind != EVR_CLOCK_MONOTONIC))
		return bad(rp, "a raw capture's source with a segment shape no segment has");
	if (!(t = realloc(rp->next, (rp->nsrc + 1) * sizeof(*t))))
		return -ENOMEM;
	rp->next = t;
	if (!(rp->next[rp->nsrc] = calloc(lanes, sizeof(**t))) || !(s->lanes = calloc(lanes, sizeof(*s->lanes)))) {
		free(rp->next[rp->nsrc]);
		rp->next[rp->nsrc] = NULL;
		return -ENOMEM;
	}
	s->seg.lane_count = (uint32_t)lanes;
	s->seg.lane_bytes = bytes;
	s->seg.salt = (uint32_t)salt;
	s->seg.clock_kind = (uint32_t)kind;
	s->clock.kind = (uint32_t)kind;
	s->clock.mult = (uint64_t)1 << EVR_CLOCK_SHIFT; /* until its "clock" entry */
	for (uint64_t i = 0; i < lanes; i++)
		rp->next[rp->nsrc][i] = UINT64_MAX; /* no entry yet: any position */
	return 0;
}

static int replay_source(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	const msgpack_object *m = n == 2 ? &a[1] : NULL, *v;
	struct evr_src *s, **t;
	int rc;

	if (!m || m->type != MSGPACK_OBJECT_MAP || !(v = map_at(m, "index")) ||
	    v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 != rp->nsrc)
		return bad(rp, "a source entry out of order or malformed");
	if (!(s = calloc(1, sizeof(*s))) || !(t = realloc(rp->srcs, (rp->nsrc + 1) * sizeof(*t)))) {
		free(s);
		return -ENOMEM;
	}
	rp->srcs = t;
	copy_str(s->program, sizeof(s->program), map_at(m, "program"));
	copy_str(s->cmdline, sizeof(s->cmdline), map_at(m, "cmdline"));
	copy_str(s->shm_name, sizeof(s->shm_name), map_at(m, "shm"));
	if (rp->raw && (rc = raw_shape(rp, s, m)) != 0) {
		free(s);
		return rc;
	}
	v = map_at(m, "pid");
	s->pub.pid = v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= UINT32_MAX ? (uint32_t)v->via.u64 : 0;
	s->pub.program = s->program;
	s->pub.cmdline = s->cmdline;
	s->pub.shm_name = s->shm_name;
	/* Captures before it have none: derived as for a segment without one (no start time: 0). */
	v = map_at(m, "trace_id_high");
	s->trace_id_high = evr__src_trace_id_high(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : 0,
						  s->pub.pid, 0);
	rc = rp->sink->source(rp->sink->arg, s); /* the sink owns s (and its lanes) from here */
	if (rc < 0)
		return rc;
	rp->srcs[rp->nsrc++] = s;
	return 0;
}

static struct evr_src *src_at(struct replay *rp, const msgpack_object *a)
{
	uint64_t i;

	return u64_at(a, 1, &i) && i < rp->nsrc ? rp->srcs[i] : NULL;
}

static int replay_meta(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	struct evr_src *s = n == 5 ? src_at(rp, a) : NULL;
	uint64_t kind, id;

	if (!s || !u64_at(a, 2, &kind) || !u64_at(a, 3, &id) || kind > UINT32_MAX)
		return bad(rp, "a malformed metadata entry");
	if (evr__src_meta_apply(s, (uint32_t)kind, id, &a[4]) != 0)
		rp->sink->st->bad++; /* counted and skipped, as the live consumer does */
	if (kind == EVR_META_PROCESS && !s->pub.program[0])
		s->pub.program = s->program;
	return 0;
}

static const struct evr_site_info *site_at(struct evr_src *s, uint64_t id, uint8_t kind)
{
	const struct evr_site_info *si = id ? evr__src_site(s, id) : NULL;

	return si && si->kind == kind ? si : NULL;
}

static int replay_rec(struct replay *rp, uint8_t type, const msgpack_object *a, uint32_t n)
{
	static const uint32_t sizes[] = { 0, 10, 12, 16, 9 };
	struct evr_src *s = n == sizes[type] ? src_at(rp, a) : NULL;
	uint64_t u[15] = { 0 };
	const msgpack_object *vals;
	struct evr_rec *r;

	if (!s || a[6].type != MSGPACK_OBJECT_BOOLEAN)
		return bad(rp, "a malformed record");
	for (uint32_t i = 2; i < n - (type == EVR_REC_LOST ? 0 : 1); i++)
		if (i != 6 && !u64_at(a, i, &u[i]))
			return bad(rp, "a record field that is not an unsigned integer");
	if (u[2] > UINT32_MAX || u[3] > UINT32_MAX)
		return bad(rp, "a lane or thread id out of range");
	if (!(r = evr__rec_alloc(rp->sink->recs)))
		return -ENOMEM;
	memset(r, 0, sizeof(*r));
	r->type = type;
	r->src = s;
	r->lane = (uint32_t)u[2];
	r->tid = (uint32_t)u[3];
	r->mono_ns = u[4];
	r->real_ns = u[5];
	r->late = a[6].via.boolean;
	vals = &a[n - 1];
	switch (type) {
	case EVR_REC_LOST:
		r->lost_count = u[7];
		r->lost_first_real_ns = u[8];
		break;
	case EVR_REC_EVENT:
		r->site = site_at(s, u[7], EVR_KIND_EVENT);
		r->span_id = u[8];
		break;
	case EVR_REC_SPAN_BEGIN:
		r->site = site_at(s, u[7], EVR_KIND_SPAN_BEGIN);
		r->span_id = u[8];
		r->parent_id = u[9];
		r->trace_id = u[10];
		break;
	default: /* SPAN_END */
		r->site = site_at(s, u[7], EVR_KIND_SPAN_BEGIN);
		r->span_id = u[8];
		r->parent_id = u[9];
		r->trace_id = u[10];
		r->start_mono_ns = u[11];
		r->start_real_ns = u[12];
		r->status = (uint8_t)u[13];
		r->end_site = site_at(s, u[14], EVR_KIND_SPAN_END);
		if (u[13] > 1) {
			evr__rec_free(rp->sink->recs, r);
			return bad(rp, "a span end with an unknown status");
		}
		break;
	}
	if (type != EVR_REC_LOST) {
		const struct evr_site_info *fsite = type == EVR_REC_SPAN_END ? r->end_site : r->site;

		if (vals->type != MSGPACK_OBJECT_ARRAY ||
		    !(r->fields = evr__fields_decode(fsite, vals->via.array.ptr, vals->via.array.size)) ||
		    (type != EVR_REC_SPAN_END && !r->site)) {
			evr__rec_free(rp->sink->recs, r);
			return bad(rp, "a record whose site or values do not match the capture's metadata");
		}
	}
	rp->sink->rec(rp->sink->arg, r);
	return 1;
}

/* ---- raw captures (capture_raw.c describes their entries) ---------------------------------------------------------- */

/* The lane at a[2] of a raw entry's source, checked; its position cursor in *next. */
static bool raw_lane(struct replay *rp, const msgpack_object *a, struct evr_src **s, uint32_t *lane, uint64_t **next)
{
	uint64_t i, l;

	if (!u64_at(a, 1, &i) || i >= rp->nsrc || !u64_at(a, 2, &l) || l >= rp->srcs[i]->seg.lane_count)
		return false;
	*s = rp->srcs[i];
	*lane = (uint32_t)l;
	*next = &rp->next[i][l];
	return true;
}

/* A position that lines up: on the 8-byte grid, and not behind what this lane already gave. */
static bool raw_pos_ok(uint64_t pos, uint64_t next)
{
	return !(pos & 7) && (next == UINT64_MAX || pos - next < UINT64_MAX / 2);
}

static int raw_run(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	struct evr_src *s;
	uint64_t pos, *next, lb;
	uint32_t lane, len;
	size_t off = 0;
	int rc;

	if (n != 5 || !raw_lane(rp, a, &s, &lane, &next) || !u64_at(a, 3, &pos) || a[4].type != MSGPACK_OBJECT_BIN)
		return bad(rp, "a malformed run (source, lane, position, bytes)");
	len = a[4].via.bin.size;
	lb = s->seg.lane_bytes;
	if (len == 0 || (len & 7) || !raw_pos_ok(pos, *next) || (pos & (lb - 1)) + len > lb)
		return bad(rp, "a run whose position does not line up (off the grid, behind the lane's last, or past "
			       "the end of its lap)");
	rc = rp->sink->run(rp->sink->arg, s, lane, pos, a[4].via.bin.ptr, len, &off);
	if (rc == -EBADMSG) {
		char what[160];

		snprintf(what, sizeof(what), "a run of lane %u at position %llu: its bytes at offset %zu are not a "
			 "committed record at that position", lane, (unsigned long long)pos, off);
		return bad(rp, what);
	}
	if (rc < 0)
		return rc;
	*next = pos + len;
	return rc;
}

static int raw_record(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	struct evr_record rec;
	struct evr_src *s;
	uint64_t pos, type, tid, *next;
	uint32_t lane;

	if (n != 7 || !raw_lane(rp, a, &s, &lane, &next) || !u64_at(a, 3, &pos) || !u64_at(a, 4, &type) ||
	    !u64_at(a, 5, &tid) || a[6].type != MSGPACK_OBJECT_BIN)
		return bad(rp, "a malformed record (source, lane, position, type, tid, body)");
	if (type < 1 || type > EVR_REC_DELIVERABLE_MAX || type == EVR_REC_PAD || tid > UINT32_MAX ||
	    a[6].via.bin.size > EVR_BODY_MAX || !raw_pos_ok(pos, *next))
		return bad(rp, "a record whose type, thread, size or position no lane gives");
	rec = (struct evr_record){ .type = (uint32_t)type, .lane = lane, .body_len = a[6].via.bin.size,
				   .tid = (uint32_t)tid, .pos = pos, .body = (const uint8_t *)a[6].via.bin.ptr };
	rp->sink->record(rp->sink->arg, s, &rec);
	*next = pos; /* the reader's own LOST record stands where the next record does */
	return 1;
}

static int raw_clock(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	struct evr_src *s = n == 7 ? src_at(rp, a) : NULL;
	uint64_t t, m, mult, last;
	int64_t off;

	if (!s || !s->seg.lane_count || !u64_at(a, 2, &t) || !u64_at(a, 3, &m) || !u64_at(a, 4, &mult) ||
	    !u64_at(a, 6, &last) || mult == 0)
		return bad(rp, "a malformed clock entry");
	if (a[5].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[5].via.u64 <= INT64_MAX)
		off = (int64_t)a[5].via.u64;
	else if (a[5].type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		off = a[5].via.i64;
	else
		return bad(rp, "a malformed clock entry");
	s->clock.anchor_ticks = t;
	s->clock.anchor_mono_ns = m;
	s->clock.mult = mult;
	s->clock.real_minus_mono_ns = off;
	s->clock.last_refine_mono_ns = last;
	return 0;
}

static int raw_lanes(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	struct evr_src *s = n == 3 ? src_at(rp, a) : NULL;
	const msgpack_object *t;

	if (!s || !s->seg.lane_count || a[2].type != MSGPACK_OBJECT_ARRAY || a[2].via.array.size != s->seg.lane_count)
		return bad(rp, "a malformed lanes entry (one thread id per lane)");
	t = a[2].via.array.ptr;
	for (uint32_t i = 0; i < s->seg.lane_count; i++) {
		if (t[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER || t[i].via.u64 > UINT32_MAX)
			return bad(rp, "a lanes entry with a thread id out of range");
		s->lanes[i].tid = (uint32_t)t[i].via.u64;
	}
	return 0;
}

static int replay_raw_entry(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	struct evr_src *s;
	uint64_t u[3], *next;
	uint32_t lane;

	if (str_is(&a[0], "run"))
		return raw_run(rp, a, n);
	if (str_is(&a[0], "record"))
		return raw_record(rp, a, n);
	if (str_is(&a[0], "round")) {
		if (n != 2 || !u64_at(a, 1, &u[0]))
			return bad(rp, "a malformed round entry");
		rp->sink->round(rp->sink->arg, u[0]);
		return 0;
	}
	if (str_is(&a[0], "clock"))
		return raw_clock(rp, a, n);
	if (str_is(&a[0], "lanes"))
		return raw_lanes(rp, a, n);
	if (str_is(&a[0], "full")) {
		if (n != 3 || !raw_lane(rp, a, &s, &lane, &next))
			return bad(rp, "a malformed full entry");
		rp->sink->full(rp->sink->arg, s, lane);
		return 0;
	}
	if (str_is(&a[0], "pending")) {
		if (n != 6 || !raw_lane(rp, a, &s, &lane, &next) || !u64_at(a, 3, &u[0]) || !u64_at(a, 4, &u[1]) ||
		    !u64_at(a, 5, &u[2]))
			return bad(rp, "a malformed pending entry");
		rp->sink->pending(rp->sink->arg, s, lane, u[0], u[1], u[2]);
		return 0;
	}
	if (str_is(&a[0], "died")) {
		s = n == 4 ? src_at(rp, a) : NULL;
		if (!s || !u64_at(a, 2, &u[0]) || a[3].type != MSGPACK_OBJECT_BOOLEAN)
			return bad(rp, "a malformed died entry");
		rp->sink->died(rp->sink->arg, s, u[0], a[3].via.boolean);
		return 0;
	}
	if (str_is(&a[0], "drained")) {
		if (n != 2 || !(s = src_at(rp, a)))
			return bad(rp, "a malformed drained entry");
		rp->sink->drained(rp->sink->arg, s);
		return 0;
	}
	if (str_is(&a[0], "tick")) {
		if (n != 2 || !u64_at(a, 1, &u[0]))
			return bad(rp, "a malformed tick entry");
		rp->sink->tick(rp->sink->arg, u[0]);
		return 0;
	}
	if (str_is(&a[0], "meta"))
		return replay_meta(rp, a, n);
	if (str_is(&a[0], "source"))
		return replay_source(rp, a, n);
	if (str_is(&a[0], "stats"))
		return 0;
	return bad(rp, "an entry of unknown kind in a raw capture");
}

/* An item of the sampler's read back: a rec of type EVR_REC_SAMPLE, as the merge handed it out live. */
static int replay_item(struct replay *rp, struct evr_src *s, const void *item, uint64_t mono, uint64_t real)
{
	struct evr_rec *r;

	if (!item)
		return -ENOMEM;
	if (!(r = evr__rec_alloc(rp->sink->recs))) {
		evr_obj_unref(item);
		return -ENOMEM;
	}
	memset(r, 0, sizeof(*r));
	r->type = EVR_REC_SAMPLE;
	r->src = s;
	r->mono_ns = mono;
	r->real_ns = real;
	r->item = item;
	rp->sink->rec(rp->sink->arg, r);
	return 1;
}

/* ["metric", source|nil, mono_ns, real_ns, name, unit, value]: a name the sampler never gives is refused. */
static int replay_metric(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	struct evr_src *s = NULL;
	uint64_t mono, real;
	const char *name, *unit;
	double value;

	if (n != 7 || (a[1].type != MSGPACK_OBJECT_NIL && !(s = src_at(rp, a))) || !u64_at(a, 2, &mono) ||
	    !u64_at(a, 3, &real) || a[4].type != MSGPACK_OBJECT_STR)
		return bad(rp, "a malformed metric entry");
	if (!(name = evr__metric_name(a[4].via.str.ptr, a[4].via.str.size, &unit)))
		return bad(rp, "a metric of a name evring does not sample");
	if (a[6].type == MSGPACK_OBJECT_FLOAT64 || a[6].type == MSGPACK_OBJECT_FLOAT32)
		value = a[6].via.f64;
	else if (a[6].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		value = (double)a[6].via.u64;
	else
		return bad(rp, "a metric whose value is not a number");
	return replay_item(rp, s, evr__metric_new(s ? &s->pub : NULL, real, mono, name, unit, value), mono, real);
}

/* A string of a run entry, bounded and without NULs, into a malloc'ed C string (NULL: bad). */
static char *run_str(const msgpack_object *o)
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > 4096 || memchr(o->via.str.ptr, 0, o->via.str.size))
		return NULL;
	return strndup(o->via.str.ptr, o->via.str.size);
}

/* ["run", source, mono_ns, start_ns, run_id, experiment, {key: value}] */
static int replay_run(struct replay *rp, const msgpack_object *a, uint32_t n)
{
	struct evr_src *s = n == 7 ? src_at(rp, a) : NULL;
	uint64_t mono, start;
	struct evr_param *p = NULL;
	char *id = NULL, *exp = NULL;
	uint32_t np = 0, i;
	int rc;

	if (!s || !u64_at(a, 2, &mono) || !u64_at(a, 3, &start) || a[6].type != MSGPACK_OBJECT_MAP ||
	    a[6].via.map.size > 4096)
		return bad(rp, "a malformed run entry");
	id = run_str(&a[4]);
	exp = run_str(&a[5]);
	np = a[6].via.map.size;
	p = calloc(np ? np : 1, sizeof(*p));
	rc = id && exp && p && strlen(id) == 32 && strspn(id, "0123456789abcdef") == 32 ? 0 : -EBADMSG;
	for (i = 0; rc == 0 && i < np; i++) {
		p[i].key = run_str(&a[6].via.map.ptr[i].key);
		p[i].value = run_str(&a[6].via.map.ptr[i].val);
		if (!p[i].key || !p[i].value)
			rc = -EBADMSG;
	}
	if (rc == 0)
		rc = replay_item(rp, s, evr__run_new(&s->pub, id, exp, start, p, np), mono, start);
	for (i = 0; p && i < np; i++) {
		free((char *)p[i].key);
		free((char *)p[i].value);
	}
	free(p);
	free(id);
	free(exp);
	return rc == -EBADMSG ? bad(rp, "a run entry whose id, experiment or params are not strings as evring writes them")
			      : rc;
}

static int replay_entry(struct replay *rp, const msgpack_object *o)
{
	static const char *recs[] = { "", "event", "begin", "end", "lost" };
	const msgpack_object *a;
	uint32_t n;

	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 2)
		return bad(rp, "not an entry (an array naming its kind)");
	a = o->via.array.ptr;
	n = o->via.array.size;
	if (rp->raw)
		return replay_raw_entry(rp, a, n);
	for (uint8_t t = EVR_REC_EVENT; t <= EVR_REC_LOST; t++)
		if (str_is(&a[0], recs[t]))
			return replay_rec(rp, t, a, n);
	if (str_is(&a[0], "meta"))
		return replay_meta(rp, a, n);
	if (str_is(&a[0], "source"))
		return replay_source(rp, a, n);
	if (str_is(&a[0], "dead")) {
		/* ["dead", source, ns, exited]; version 1 has no exited. */
		struct evr_src *s = n == 3 || n == 4 ? src_at(rp, a) : NULL;
		uint64_t ns;

		if (!s || !u64_at(a, 2, &ns) || (n == 4 && a[3].type != MSGPACK_OBJECT_BOOLEAN))
			return bad(rp, "a malformed death entry");
		s->exited = n == 4 && a[3].via.boolean;
		rp->sink->dead(rp->sink->arg, s, ns);
		return 0;
	}
	if (str_is(&a[0], "tick")) {
		uint64_t ns;

		if (n != 2 || !u64_at(a, 1, &ns))
			return bad(rp, "a malformed tick entry");
		rp->sink->tick(rp->sink->arg, ns);
		return 0;
	}
	if (str_is(&a[0], "metric"))
		return replay_metric(rp, a, n);
	if (str_is(&a[0], "run"))
		return replay_run(rp, a, n);
	if (str_is(&a[0], "stats"))
		return 0; /* the live run's counters: for readers of the file */
	return bad(rp, "an entry of unknown kind");
}

static int replay_header(struct replay *rp, const msgpack_object *o)
{
	const msgpack_object *f = map_at(o, "format"), *v = map_at(o, "version"), *raw = map_at(o, "raw");

	if (!f || !str_is(f, "evring-capture"))
		return bad(rp, "not an evring capture (no header map with format \"evring-capture\")");
	if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 < 1 || v->via.u64 > CAPTURE_VERSION) {
		snprintf(rp->err, rp->errlen, "capture %s: version %llu, this evring reads versions 1 to %d", rp->path,
			 v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (unsigned long long)v->via.u64 : 0ull,
			 CAPTURE_VERSION);
		return -EPROTO;
	}
	/* Version 3 is the raw capture's, and only its. */
	rp->raw = v->via.u64 == CAPTURE_RAW_VERSION;
	if (rp->raw != (raw && raw->type == MSGPACK_OBJECT_BOOLEAN && raw->via.boolean))
		return bad(rp, "a header whose version and \"raw\" disagree");
	return 0;
}

/*
 * The file is read into a window of READ_WINDOW bytes, and an entry goes to
 * msgpack-c only once it lies whole in it: evr__msgpack_len walks it first
 * without allocating, so no declared count (an array32 of 2^31 elements in
 * a few bytes) sizes anything, and an entry the window cannot hold is
 * refused as too large.
 */
#define READ_WINDOW (CAPTURE_ENTRY_MAX + (1u << 16))
#define ENTRY_DEPTH 16 /* a capture entry nests a metadata map (6) in an entry array, with room */

int evr__replay_file(const struct evr_replay_sink *sink, const char *path, char *err, size_t errlen)
{
	struct replay rp = { .sink = sink, .path = path, .err = err, .errlen = errlen };
	uint8_t *win = malloc(READ_WINDOW);
	msgpack_zone zone;
	FILE *f = fopen(path, "rb");
	size_t have = 0, at = 0;
	int rc = 0;
	uint64_t records = 0;
	bool eof = false;

	if (!f) {
		int e = errno;
		snprintf(err, errlen, "cannot read capture %s: %s", path, strerror(e));
		free(win);
		return -e;
	}
	if (!win || !msgpack_zone_init(&zone, 1 << 16)) {
		fclose(f);
		free(win);
		snprintf(err, errlen, "out of memory replaying %s", path);
		return -ENOMEM;
	}
	while (rc >= 0 && !sink->stopping(sink->arg)) {
		size_t n = evr__msgpack_len(win + at, have - at, ENTRY_DEPTH), off = 0;
		msgpack_object obj;

		if (n > 0) {
			msgpack_zone_clear(&zone);
			if (!evr__unpacked(msgpack_unpack((const char *)win + at, n, &off, &zone, &obj)) || off != n) {
				rc = bad(&rp, "not msgpack");
				break;
			}
			at += n;
			rc = rp.entry == 0 ? replay_header(&rp, &obj) : replay_entry(&rp, &obj);
			records += rc > 0 ? (uint64_t)rc : 0;
			rp.entry++;
			continue;
		}
		if (have - at > CAPTURE_ENTRY_MAX) {
			rc = bad(&rp, "not msgpack, or an entry larger than 1 MiB");
			break;
		}
		if (eof) {
			if (have != at) /* an entry that never completed */
				rc = bad(&rp, "the file ends inside an entry (truncated)");
			else if (rp.entry == 0)
				rc = bad(&rp, "an empty file");
			break;
		}
		memmove(win, win + at, have - at); /* the entry so far to the window's start */
		have -= at;
		at = 0;
		size_t got = fread(win + have, 1, READ_WINDOW - have, f);
		have += got;
		if (got == 0) {
			if (ferror(f)) {
				snprintf(err, errlen, "cannot read capture %s: %s", path, strerror(errno));
				rc = -EIO;
			}
			eof = true;
		}
	}
	msgpack_zone_destroy(&zone);
	free(win);
	fclose(f);
	for (uint32_t i = 0; rp.next && i < rp.nsrc; i++)
		free(rp.next[i]);
	free(rp.next);
	free(rp.srcs);
	if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory replaying %s", path);
	return rc < 0 ? rc : (int)(records > INT32_MAX ? INT32_MAX : records);
}
