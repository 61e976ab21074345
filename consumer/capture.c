/*
 * capture.c: capture files (`evring record`) and their replay (`evring replay`).
 *
 * A capture is a msgpack stream any msgpack client reads: a header map, then
 * one array per entry, its first element a string naming the kind:
 *
 *   {"format": "evring-capture", "version": 1, "created_ns": UTC ns}
 *   ["source", {"index", "pid", "program", "cmdline", "shm"}]
 *   ["meta",   source, kind, id, {payload}]          a segment metadata entry as the
 *                                                   producer wrote it (site, dispatcher,
 *                                                   thread, process: ring.h, evr_meta_kind)
 *   ["event",  source, lane, tid, mono_ns, real_ns, late, site, span, [values]]
 *   ["begin",  source, lane, tid, mono_ns, real_ns, late, site, span, parent, trace, [values]]
 *   ["end",    source, lane, tid, mono_ns, real_ns, late, site, span, parent, trace,
 *              start_mono_ns, start_real_ns, status, end_site, [values]]
 *   ["lost",   source, lane, tid, mono_ns, real_ns, late, count, first_real_ns]
 *   ["tick",   mono_ns]                             the span builder's clock moved (it times
 *                                                   orphans' grace): before the first record,
 *                                                   and wherever it moved before a record or
 *                                                   while a trace waited
 *   ["dead",   source, mono_ns]                     its producer died, seen then
 *   ["stats",  {consumer counters}]                 the trailer, at the end of a run
 *
 * Records come in the order the merge delivered them, with the times the
 * live consumer computed, so a replay hands handlers the same stream the live
 * run did: the same jsonl, the same trees. A site is 0 when unknown (an end
 * whose begin site was never described). Values keep the producer's encoding:
 * a string the producer truncated is msgpack ext type 1 (EVR_EXT_TRUNCATED).
 *
 * A capture file is input like a segment is: replay validates every entry,
 * refuses one over CAPTURE_ENTRY_MAX bytes before msgpack-c sizes anything
 * for it, and stops at the first bad one with an error naming its position.
 * A metadata entry the live consumer could not use is not written at all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <msgpack/fbuffer.h>

#include "internal.h"

#define CAPTURE_VERSION 1
#define CAPTURE_ENTRY_MAX (1u << 20) /* far above any record (EVR_BODY_MAX) or metadata entry */

struct cap_src {
	const struct evr_src *src;
	uint64_t meta_cursor; /* the capture's own cursor over the source's metadata */
};

struct evr_capture {
	FILE *f;
	msgpack_packer pk;
	msgpack_zone zone; /* checks metadata entries before they are written */
	uint8_t *copy;	   /* their private copies */
	size_t copy_cap;
	struct cap_src *srcs;
	uint32_t nsrc;
	int err; /* the first write error, -errno */
};

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	pack_str(pk, k);
	pack_str(pk, v ? v : "");
}

static void pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	pack_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

static int check(struct evr_capture *cap)
{
	if (!cap->err && ferror(cap->f))
		cap->err = -EIO;
	return cap->err;
}

int evr__capture_open(struct evr_capture **out, const char *path, char *err, size_t errlen)
{
	struct evr_capture *cap = calloc(1, sizeof(*cap));
	struct timespec ts;

	if (!cap) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	cap->f = fopen(path, "wb");
	if (!cap->f) {
		int e = errno;
		snprintf(err, errlen, "cannot write capture %s: %s", path, strerror(e));
		free(cap);
		return -e;
	}
	if (!msgpack_zone_init(&cap->zone, 4096)) {
		fclose(cap->f);
		free(cap);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	setvbuf(cap->f, NULL, _IOFBF, 1 << 20);
	msgpack_packer_init(&cap->pk, cap->f, msgpack_fbuffer_write);
	clock_gettime(CLOCK_REALTIME, &ts);
	msgpack_pack_map(&cap->pk, 3);
	pack_kv_str(&cap->pk, "format", "evring-capture");
	pack_kv_u64(&cap->pk, "version", CAPTURE_VERSION);
	pack_kv_u64(&cap->pk, "created_ns", (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
	*out = cap;
	return check(cap);
}

static struct cap_src *cap_src_of(struct evr_capture *cap, const struct evr_src *s)
{
	for (uint32_t i = 0; i < cap->nsrc; i++)
		if (cap->srcs[i].src == s)
			return &cap->srcs[i];
	return NULL;
}

/*
 * Writes one metadata entry as the producer wrote it, if the live consumer
 * could use it: a private copy, checked as the consumer checks it, and only
 * the one map's exact bytes (trailing bytes would read back as entries).
 */
static void put_meta(struct evr_capture *cap, const struct evr_src *s, const struct evr_meta_view *v)
{
	msgpack_object obj;
	size_t off = 0;

	if (v->len > cap->copy_cap) {
		uint8_t *t = realloc(cap->copy, v->len);
		if (!t) {
			cap->err = cap->err ? cap->err : -ENOMEM;
			return;
		}
		cap->copy = t;
		cap->copy_cap = v->len;
	}
	memcpy(cap->copy, v->payload, v->len);
	msgpack_zone_clear(&cap->zone);
	if (!evr__msgpack_sane(cap->copy, v->len, 6) ||
	    !evr__unpacked(msgpack_unpack((const char *)cap->copy, v->len, &off, &cap->zone, &obj)) ||
	    obj.type != MSGPACK_OBJECT_MAP)
		return;
	msgpack_pack_array(&cap->pk, 5);
	pack_str(&cap->pk, "meta");
	msgpack_pack_uint32(&cap->pk, s->pub.index);
	msgpack_pack_uint32(&cap->pk, v->kind);
	msgpack_pack_uint64(&cap->pk, v->id);
	msgpack_fbuffer_write(cap->f, (const char *)cap->copy, off);
}

/* Copies the metadata entries the source gained since the last call, in order. */
static void sync_meta(struct evr_capture *cap, struct cap_src *cs)
{
	const struct evr_src *s = cs->src;
	struct evr_meta_view v;
	int rc;

	if (evr_ld_64(&s->seg.hdr->meta_used) == cs->meta_cursor)
		return;
	while ((rc = evr_meta_next(&s->seg, &cs->meta_cursor, &v, s->pub.dead)) != 0) {
		if (rc == 1)
			put_meta(cap, s, &v);
		else if (rc != -ESTALE) /* -ESTALE: never finished by its writer, the consumer counted it */
			break;
	}
}

/*
 * A site the in-order copy has not reached (an earlier entry is reserved
 * but not yet published): written ahead, as the consumer read it ahead. The
 * in-order copy writes it again later; a replay keeps the first.
 */
static void site_ahead(struct evr_capture *cap, const struct cap_src *cs, const struct evr_site_info *si)
{
	struct evr_meta_view v;

	if (si && si->id >= cs->meta_cursor && evr_meta_read(&cs->src->seg, si->id, &v) == 1 &&
	    v.kind == EVR_META_SITE)
		put_meta(cap, cs->src, &v);
}

int evr__capture_source(struct evr_capture *cap, struct evr_src *s)
{
	struct cap_src *t;
	msgpack_packer *pk = &cap->pk;

	if (cap_src_of(cap, s))
		return check(cap);
	t = realloc(cap->srcs, (cap->nsrc + 1) * sizeof(*t));
	if (!t)
		return cap->err = -ENOMEM;
	cap->srcs = t;
	cap->srcs[cap->nsrc] = (struct cap_src){ s, 0 };
	msgpack_pack_array(pk, 2);
	pack_str(pk, "source");
	msgpack_pack_map(pk, 5);
	pack_kv_u64(pk, "index", s->pub.index);
	pack_kv_u64(pk, "pid", s->pub.pid);
	pack_kv_str(pk, "program", s->pub.program);
	pack_kv_str(pk, "cmdline", s->pub.cmdline);
	pack_kv_str(pk, "shm", s->pub.shm_name);
	sync_meta(cap, &cap->srcs[cap->nsrc++]);
	return check(cap);
}

static void pack_values(msgpack_packer *pk, const struct evr_fields *f)
{
	uint32_t n = f ? f->n : 0;

	msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		const struct evr_value *v = &f->f[i].v;

		switch (v->type) {
		case EVR_V_BOOL:
			if (v->b)
				msgpack_pack_true(pk);
			else
				msgpack_pack_false(pk);
			break;
		case EVR_V_I64:
			msgpack_pack_int64(pk, v->i);
			break;
		case EVR_V_U64:
			msgpack_pack_uint64(pk, v->u);
			break;
		case EVR_V_F64:
			msgpack_pack_double(pk, v->f);
			break;
		case EVR_V_STR:
			if (v->truncated) {
				msgpack_pack_ext(pk, v->len, EVR_EXT_TRUNCATED);
				msgpack_pack_ext_body(pk, v->s, v->len);
			} else {
				msgpack_pack_str(pk, v->len);
				msgpack_pack_str_body(pk, v->s, v->len);
			}
			break;
		default:
			msgpack_pack_nil(pk);
			break;
		}
	}
}

int evr__capture_rec(struct evr_capture *cap, const struct evr_rec *r)
{
	static const char *kinds[] = { "", "event", "begin", "end", "lost" };
	static const uint32_t sizes[] = { 0, 10, 12, 16, 9 };
	struct cap_src *cs = cap_src_of(cap, r->src);
	msgpack_packer *pk = &cap->pk;

	if (!cs || r->type < EVR_REC_EVENT || r->type > EVR_REC_LOST)
		return check(cap);
	sync_meta(cap, cs); /* the sites this record names go first */
	site_ahead(cap, cs, r->site);
	site_ahead(cap, cs, r->end_site);
	msgpack_pack_array(pk, sizes[r->type]);
	pack_str(pk, kinds[r->type]);
	msgpack_pack_uint32(pk, r->src->pub.index);
	msgpack_pack_uint32(pk, r->lane);
	msgpack_pack_uint32(pk, r->tid);
	msgpack_pack_uint64(pk, r->mono_ns);
	msgpack_pack_uint64(pk, r->real_ns);
	if (r->late)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
	if (r->type == EVR_REC_LOST) {
		msgpack_pack_uint64(pk, r->lost_count);
		msgpack_pack_uint64(pk, r->lost_first_real_ns);
		return check(cap);
	}
	msgpack_pack_uint64(pk, r->site ? r->site->id : 0);
	msgpack_pack_uint64(pk, r->span_id);
	if (r->type != EVR_REC_EVENT) {
		msgpack_pack_uint64(pk, r->parent_id);
		msgpack_pack_uint64(pk, r->trace_id);
	}
	if (r->type == EVR_REC_SPAN_END) {
		msgpack_pack_uint64(pk, r->start_mono_ns);
		msgpack_pack_uint64(pk, r->start_real_ns);
		msgpack_pack_uint8(pk, r->status);
		msgpack_pack_uint64(pk, r->end_site ? r->end_site->id : 0);
	}
	pack_values(pk, r->fields);
	return check(cap);
}

int evr__capture_tick(struct evr_capture *cap, uint64_t mono_ns)
{
	msgpack_pack_array(&cap->pk, 2);
	pack_str(&cap->pk, "tick");
	msgpack_pack_uint64(&cap->pk, mono_ns);
	return check(cap);
}

int evr__capture_dead(struct evr_capture *cap, const struct evr_src *s, uint64_t dead_ns)
{
	msgpack_pack_array(&cap->pk, 3);
	pack_str(&cap->pk, "dead");
	msgpack_pack_uint32(&cap->pk, s->pub.index);
	msgpack_pack_uint64(&cap->pk, dead_ns);
	return check(cap);
}

int evr__capture_close(struct evr_capture *cap, const struct evr_consumer_stats *st)
{
	msgpack_packer *pk = &cap->pk;
	int rc;

	if (!cap)
		return 0;
	msgpack_pack_array(pk, 2);
	pack_str(pk, "stats");
	msgpack_pack_map(pk, 7);
	pack_kv_u64(pk, "records", st->records);
	pack_kv_u64(pk, "events", st->events);
	pack_kv_u64(pk, "spans_ended", st->spans_ended);
	pack_kv_u64(pk, "lost", st->lost);
	pack_kv_u64(pk, "late", st->late);
	pack_kv_u64(pk, "bad", st->bad);
	pack_kv_u64(pk, "ring_skipped", st->ring_skipped);
	rc = check(cap);
	if (fclose(cap->f) != 0 && !rc)
		rc = -errno;
	msgpack_zone_destroy(&cap->zone);
	free(cap->copy);
	free(cap->srcs);
	free(cap);
	return rc;
}

/* ---- replay: entries return 1 for a record, 0 for anything else, or -errno ------------------------------------------------------------------------------ */

struct replay {
	struct evr_consumer *c;
	const char *path;
	struct evr_src **srcs; /* by capture index; owned by the consumer once adopted */
	uint32_t nsrc;
	uint64_t entry; /* entries read, for error messages */
	char *err;
	size_t errlen;
};

static int bad(struct replay *rp, const char *what)
{
	snprintf(rp->err, rp->errlen, "capture %s: entry %llu: %s", rp->path, (unsigned long long)rp->entry, what);
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
	v = map_at(m, "pid");
	s->pub.pid = v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= UINT32_MAX ? (uint32_t)v->via.u64 : 0;
	s->pub.program = s->program;
	s->pub.cmdline = s->cmdline;
	s->pub.shm_name = s->shm_name;
	rc = evr__consumer_adopt(rp->c, s);
	if (rc < 0) {
		free(s);
		return rc;
	}
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
		evr__consumer_stats(rp->c)->bad++; /* counted and skipped, as the live consumer does */
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
	if (!(r = evr__rec_alloc(rp->c)))
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
			evr__rec_free(rp->c, r);
			return bad(rp, "a span end with an unknown status");
		}
		break;
	}
	if (type != EVR_REC_LOST) {
		const struct evr_site_info *fsite = type == EVR_REC_SPAN_END ? r->end_site : r->site;

		if (vals->type != MSGPACK_OBJECT_ARRAY ||
		    !(r->fields = evr__fields_decode(fsite, vals->via.array.ptr, vals->via.array.size)) ||
		    (type != EVR_REC_SPAN_END && !r->site)) {
			evr__rec_free(rp->c, r);
			return bad(rp, "a record whose site or values do not match the capture's metadata");
		}
	}
	evr__consumer_replay_rec(rp->c, r);
	return 1;
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
	for (uint8_t t = EVR_REC_EVENT; t <= EVR_REC_LOST; t++)
		if (str_is(&a[0], recs[t]))
			return replay_rec(rp, t, a, n);
	if (str_is(&a[0], "meta"))
		return replay_meta(rp, a, n);
	if (str_is(&a[0], "source"))
		return replay_source(rp, a, n);
	if (str_is(&a[0], "dead")) {
		struct evr_src *s = n == 3 ? src_at(rp, a) : NULL;
		uint64_t ns;

		if (!s || !u64_at(a, 2, &ns))
			return bad(rp, "a malformed death entry");
		evr__consumer_replay_dead(rp->c, s, ns);
		return 0;
	}
	if (str_is(&a[0], "tick")) {
		uint64_t ns;

		if (n != 2 || !u64_at(a, 1, &ns))
			return bad(rp, "a malformed tick entry");
		evr__consumer_replay_tick(rp->c, ns);
		return 0;
	}
	if (str_is(&a[0], "stats"))
		return 0; /* the live run's counters: for readers of the file */
	return bad(rp, "an entry of unknown kind");
}

static int replay_header(struct replay *rp, const msgpack_object *o)
{
	const msgpack_object *f = map_at(o, "format"), *v = map_at(o, "version");

	if (!f || !str_is(f, "evring-capture"))
		return bad(rp, "not an evring capture (no header map with format \"evring-capture\")");
	if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 != CAPTURE_VERSION) {
		snprintf(rp->err, rp->errlen, "capture %s: version %llu, this evring reads version %d", rp->path,
			 v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (unsigned long long)v->via.u64 : 0ull,
			 CAPTURE_VERSION);
		return -EPROTO;
	}
	return 0;
}

int evr__replay_file(struct evr_consumer *c, const char *path, char *err, size_t errlen)
{
	struct replay rp = { c, path, NULL, 0, 0, err, errlen };
	msgpack_unpacker up;
	msgpack_unpacked res;
	FILE *f = fopen(path, "rb");
	int rc = 0, ur;
	uint64_t records = 0;
	bool eof = false;

	if (!f) {
		int e = errno;
		snprintf(err, errlen, "cannot read capture %s: %s", path, strerror(e));
		return -e;
	}
	if (!msgpack_unpacker_init(&up, 1 << 16)) {
		fclose(f);
		return -ENOMEM;
	}
	msgpack_unpacked_init(&res);
	while (rc >= 0 && !evr__consumer_stopping(c)) {
		ur = msgpack_unpacker_next(&up, &res);
		if (ur == MSGPACK_UNPACK_SUCCESS) {
			rc = rp.entry == 0 ? replay_header(&rp, &res.data) : replay_entry(&rp, &res.data);
			records += rc > 0;
			rp.entry++;
			continue;
		}
		if (ur != MSGPACK_UNPACK_CONTINUE) {
			rc = bad(&rp, "not msgpack");
			break;
		}
		/* Bytes held for the entry so far (msgpack-c sizes its objects by them): bounded. */
		if (msgpack_unpacker_message_size(&up) > CAPTURE_ENTRY_MAX) {
			rc = bad(&rp, "an entry larger than 1 MiB");
			break;
		}
		if (eof) {
			if (msgpack_unpacker_message_size(&up) != 0) /* an entry that never completed */
				rc = bad(&rp, "the file ends inside an entry (truncated)");
			else if (rp.entry == 0)
				rc = bad(&rp, "an empty file");
			break;
		}
		if (!msgpack_unpacker_reserve_buffer(&up, 1 << 16)) {
			rc = -ENOMEM;
			break;
		}
		size_t got = fread(msgpack_unpacker_buffer(&up), 1, msgpack_unpacker_buffer_capacity(&up), f);
		msgpack_unpacker_buffer_consumed(&up, got);
		if (got == 0) {
			if (ferror(f)) {
				snprintf(err, errlen, "cannot read capture %s: %s", path, strerror(errno));
				rc = -EIO;
			}
			eof = true;
		}
	}
	msgpack_unpacked_destroy(&res);
	msgpack_unpacker_destroy(&up);
	fclose(f);
	free(rp.srcs);
	if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory replaying %s", path);
	return rc < 0 ? rc : (int)(records > INT32_MAX ? INT32_MAX : records);
}
