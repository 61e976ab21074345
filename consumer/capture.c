/*
 * capture.c: capture files (`evring record`), written from the delivered
 * stream; replay.c reads them back (`evring replay`).
 *
 * A capture is a msgpack stream any msgpack client reads: a header map, then
 * one array per entry, its first element a string naming the kind:
 *
 *   {"format": "evring-capture", "version": 1, "created_ns": UTC ns}
 *   ["source", {"index", "pid", "program", "cmdline", "shm", "trace_id_high"}]
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

#include "capture.h"
#include "mpcheck.h"
#include "objects.h"

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
	msgpack_pack_map(pk, 6);
	pack_kv_u64(pk, "index", s->pub.index);
	pack_kv_u64(pk, "trace_id_high", s->trace_id_high);
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
	msgpack_pack_array(&cap->pk, 4);
	pack_str(&cap->pk, "dead");
	msgpack_pack_uint32(&cap->pk, s->pub.index);
	msgpack_pack_uint64(&cap->pk, dead_ns);
	if (s->exited)
		msgpack_pack_true(&cap->pk);
	else
		msgpack_pack_false(&cap->pk);
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
