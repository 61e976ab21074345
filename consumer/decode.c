/*
 * decode.c: record bodies into struct evr_rec (decode.h); metadata entries
 * are source.c's. Everything read from the segment is hostile: every
 * body is checked by evr__msgpack_sane before msgpack-c's unpacker sees it
 * (the unpacker sizes zone allocations from declared container counts, so an
 * array32 of 4G elements in a 64-byte body would ask for gigabytes), then
 * every element's type and count is checked against the record kind and the
 * site's declared fields. A record that fails is counted and skipped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "decode.h"
#include "mpcheck.h"
#include "objects.h"

/* ---- records ---------------------------------------------------------------------- */

static bool as_u64(const msgpack_object *o, uint64_t *v)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return false;
	*v = o->via.u64;
	return true;
}

/* Bytes of string data a value needs in a fields block, or -1 for a type no field may have. */
static long value_bytes(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
	case MSGPACK_OBJECT_BOOLEAN:
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return 0;
	case MSGPACK_OBJECT_STR:
		return (long)o->via.str.size + 1;
	case MSGPACK_OBJECT_EXT:
		return o->via.ext.type == EVR_EXT_TRUNCATED ? (long)o->via.ext.size + 1 : -1;
	default:
		return -1;
	}
}

/*
 * The values after the fixed elements, named by the site that declared them.
 * event: in the block of the event that will carry them (evr__event_fields_new).
 */
static struct evr_fields *fields_decode(const struct evr_site_info *si, const msgpack_object *vals, uint32_t n,
					bool event)
{
	struct evr_fields *f;
	size_t bytes = 0;
	char *str;

	if (!si || n != si->nfields)
		return NULL;
	if (n == 0)
		return evr__fields_empty();
	for (uint32_t i = 0; i < n; i++) {
		long b = value_bytes(&vals[i]);
		if (b < 0)
			return NULL;
		bytes += (size_t)b;
	}
	f = event ? evr__event_fields_new(n, bytes, &str) : evr__fields_new(n, bytes, &str);
	if (!f)
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *o = &vals[i];
		struct evr_field *fd = &f->f[i];

		fd->name = si->field_names[i];
		fd->content = si->field_content[i];
		switch (o->type) {
		case MSGPACK_OBJECT_NIL:
			fd->v.type = EVR_V_NIL;
			break;
		case MSGPACK_OBJECT_BOOLEAN:
			fd->v.type = EVR_V_BOOL;
			fd->v.b = o->via.boolean;
			break;
		case MSGPACK_OBJECT_POSITIVE_INTEGER:
			fd->v.type = EVR_V_U64;
			fd->v.u = o->via.u64;
			break;
		case MSGPACK_OBJECT_NEGATIVE_INTEGER:
			fd->v.type = EVR_V_I64;
			fd->v.i = o->via.i64;
			break;
		case MSGPACK_OBJECT_FLOAT32:
		case MSGPACK_OBJECT_FLOAT64:
			fd->v.type = EVR_V_F64;
			fd->v.f = o->via.f64;
			break;
		default: { /* STR or a truncated string (ext) */
			const char *p = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.ext.ptr;
			uint32_t len = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.ext.size;

			fd->v.type = EVR_V_STR;
			fd->v.truncated = o->type == MSGPACK_OBJECT_EXT;
			fd->v.len = len;
			memcpy(str, p, len);
			str[len] = 0;
			fd->v.s = str;
			str += len + 1;
			break;
		}
		}
	}
	return f;
}

struct evr_fields *evr__fields_decode(const struct evr_site_info *si, const msgpack_object *vals, uint32_t n)
{
	return fields_decode(si, vals, n, false);
}

/* The site with this id and kind, or NULL. */
static const struct evr_site_info *site_of(struct evr_decoder *d, struct evr_src *s, uint64_t id, uint8_t kind)
{
	const struct evr_site_info *si = evr__src_site_find(s, id, d->st);

	return si && si->kind == kind ? si : NULL;
}

int evr__decoder_init(struct evr_decoder *d, struct evr_consumer_stats *st)
{
	d->st = st;
	return msgpack_zone_init(&d->zone, 8192) ? 0 : -ENOMEM;
}

void evr__decoder_fini(struct evr_decoder *d)
{
	msgpack_zone_destroy(&d->zone);
}

int evr__decode_thread(struct evr_decoder *d, struct evr_src *s, const struct evr_record *r)
{
	msgpack_object obj;
	size_t off = 0;

	msgpack_zone_clear(&d->zone);
	if (r->lane + 1 == s->seg.lane_count || !evr__msgpack_sane(r->body, r->body_len, 2) ||
	    !evr__unpacked(msgpack_unpack((const char *)r->body, r->body_len, &off, &d->zone, &obj)) ||
	    obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size != 2 ||
	    obj.via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    obj.via.array.ptr[1].via.u64 > UINT32_MAX)
		return -EBADMSG;
	s->lanes[r->lane].tid = (uint32_t)obj.via.array.ptr[1].via.u64;
	return 0;
}

bool evr__lost_plausible(uint64_t count)
{
	struct timespec ts;

	if (count == 0 || clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
		return false;
	return count <= (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* [ts, count, first_ts]: drops the writer reported. */
static int decode_lost(struct evr_src *s, const struct evr_record *r, struct evr_rec *out)
{
	uint64_t ts, count, first;

	if (evr_lost_decode(r->body, r->body_len, &ts, &count, &first) != 0 || !evr__lost_plausible(count))
		return -EBADMSG;
	memset(out, 0, sizeof(*out));
	out->type = EVR_REC_LOST;
	out->src = s;
	out->lane = r->lane;
	out->tid = r->tid ? r->tid : s->lanes[r->lane].tid; /* the shared lane's records name theirs */
	out->mono_ns = evr_clock_to_mono_ns(&s->clock, ts);
	out->real_ns = evr_clock_to_real_ns(&s->clock, ts);
	out->lost_count = count;
	out->lost_first_real_ns = evr_clock_to_real_ns(&s->clock, first);
	return 0;
}

int evr__decode(struct evr_decoder *d, struct evr_src *s, const struct evr_record *r, struct evr_rec *out)
{
	static const uint32_t fixed[] = { 0, 3, 5, 8, 3 };
	msgpack_zone *zone = &d->zone;
	const msgpack_object *a;
	msgpack_object obj;
	size_t off = 0;
	uint64_t ts, u[8];
	uint32_t n;

	if (r->type < EVR_REC_EVENT || r->type > EVR_REC_LOST)
		return -EBADMSG; /* a kind this consumer does not know: skip it */
	if (r->type == EVR_REC_LOST)
		return decode_lost(s, r, out);
	if (!evr__msgpack_sane(r->body, r->body_len, 4))
		return -EBADMSG;
	msgpack_zone_clear(zone);
	if (!evr__unpacked(msgpack_unpack((const char *)r->body, r->body_len, &off, zone, &obj)) ||
	    obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size < fixed[r->type])
		return -EBADMSG;
	a = obj.via.array.ptr;
	n = obj.via.array.size;
	for (uint32_t i = 0; i < fixed[r->type]; i++)
		if (!as_u64(&a[i], &u[i]))
			return -EBADMSG;
	ts = u[0];
	memset(out, 0, sizeof(*out));
	out->type = (uint8_t)r->type;
	out->src = s;
	out->lane = r->lane;
	out->mono_ns = evr_clock_to_mono_ns(&s->clock, ts);
	out->real_ns = evr_clock_to_real_ns(&s->clock, ts);
	switch (r->type) {
	case EVR_REC_EVENT:
		out->site = site_of(d, s, u[1], EVR_KIND_EVENT);
		out->span_id = u[2];
		out->fields = fields_decode(out->site, a + 3, n - 3, true); /* one block with its event */
		out->fields_in_event = out->fields && out->fields != evr__fields_empty();
		break;
	case EVR_REC_SPAN_BEGIN:
		out->site = site_of(d, s, u[1], EVR_KIND_SPAN_BEGIN);
		out->span_id = u[2];
		out->parent_id = u[3];
		out->trace_id = u[4];
		out->fields = evr__fields_decode(out->site, a + 5, n - 5);
		break;
	default: /* SPAN_END */
		out->site = site_of(d, s, u[1], EVR_KIND_SPAN_BEGIN);
		out->span_id = u[2];
		out->parent_id = u[3];
		out->trace_id = u[4];
		out->start_mono_ns = evr_clock_to_mono_ns(&s->clock, u[5]);
		out->start_real_ns = evr_clock_to_real_ns(&s->clock, u[5]);
		if (u[6] > 1)
			return -EBADMSG;
		out->status = (uint8_t)u[6];
		out->end_site = site_of(d, s, u[7], EVR_KIND_SPAN_END);
		out->fields = evr__fields_decode(out->end_site, a + 8, n - 8);
		break;
	}
	if (!out->fields || (r->type != EVR_REC_SPAN_END && !out->site)) {
		if (out->fields)
			evr__fields_unref(out->fields);
		out->fields = NULL;
		return -EBADMSG;
	}
	out->tid = r->tid ? r->tid : s->lanes[r->lane].tid; /* the shared lane's records name theirs */
	return 0;
}
