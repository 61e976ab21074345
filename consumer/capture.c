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
 *                                                   thread, process: ring.h, evr_meta_kind;
 *                                                   a run parameter's payload is [key, value])
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
 *   ["metric", source|nil, mono_ns, real_ns, name, unit, value]
 *                                                   a sample (struct evr_metric; nil: the host's)
 *   ["run",    source, mono_ns, start_ns, run_id, experiment, {key: value}]
 *                                                   a run, or its update (struct evr_run_info)
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
 *
 * The file, its header and the entries a raw capture writes alike (meta,
 * source, the death, the trailer's counters) are capture_io.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "capture_io.h"
#include "objects.h"

struct cap_src {
	const struct evr_src *src;
	uint64_t meta_cursor; /* the capture's own cursor over the source's metadata */
};

struct evr_capture {
	struct evr_capio io; /* the file, its packer, the first error (capture_io.h) */
	struct cap_src *srcs;
	uint32_t nsrc;
};

int evr__capture_open(struct evr_capture **out, const char *path, char *err, size_t errlen)
{
	struct evr_capture *cap = calloc(1, sizeof(*cap));
	int rc;

	if (!cap) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = evr__capio_open(&cap->io, path, CAPTURE_VERSION, false, err, errlen);
	if (rc < 0) {
		free(cap);
		return rc;
	}
	*out = cap;
	return evr__capio_check(&cap->io);
}

static struct cap_src *cap_src_of(struct evr_capture *cap, const struct evr_src *s)
{
	for (uint32_t i = 0; i < cap->nsrc; i++)
		if (cap->srcs[i].src == s)
			return &cap->srcs[i];
	return NULL;
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
		evr__capio_meta(&cap->io, cs->src->pub.index, &v);
}

int evr__capture_source(struct evr_capture *cap, struct evr_src *s)
{
	struct cap_src *t;

	if (cap_src_of(cap, s))
		return evr__capio_check(&cap->io);
	t = realloc(cap->srcs, (cap->nsrc + 1) * sizeof(*t));
	if (!t)
		return cap->io.err = -ENOMEM;
	cap->srcs = t;
	cap->srcs[cap->nsrc] = (struct cap_src){ s, 0 };
	evr__capio_source(&cap->io, s, s->pub.index, 0);
	evr__capio_sync_meta(&cap->io, s, s->pub.index, &cap->srcs[cap->nsrc++].meta_cursor);
	return evr__capio_check(&cap->io);
}

static void pack_values(msgpack_packer *pk, const struct evr_fields *f)
{
	uint32_t n = f ? f->n : 0;

	msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		const struct evr_value *v = &f->f[i].v;

		switch (v->type) {
		case EVR_V_BOOL:
			evr__capio_bool(pk, v->b);
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

/* A metric sample or a run (sampler.h). */
static int capture_item(struct evr_capture *cap, const struct evr_rec *r)
{
	msgpack_packer *pk = &cap->io.pk;
	const struct evr_obj *o = r->item;

	if (!o)
		return evr__capio_check(&cap->io);
	if (o->kind == EVR_OBJ_METRIC) {
		const struct evr_metric *m = r->item;

		evr__capio_entry(&cap->io, 7, "metric");
		if (r->src)
			msgpack_pack_uint32(pk, r->src->pub.index);
		else
			msgpack_pack_nil(pk);
		msgpack_pack_uint64(pk, r->mono_ns);
		msgpack_pack_uint64(pk, m->ts_ns);
		msgpack_pack_str_with_body(pk, m->name, strlen(m->name));
		msgpack_pack_str_with_body(pk, m->unit, strlen(m->unit));
		msgpack_pack_double(pk, m->value);
	} else {
		const struct evr_run_info *run = r->item;

		if (!r->src)
			return evr__capio_check(&cap->io);
		evr__capio_entry(&cap->io, 7, "run");
		msgpack_pack_uint32(pk, r->src->pub.index);
		msgpack_pack_uint64(pk, r->mono_ns);
		msgpack_pack_uint64(pk, run->start_ns);
		msgpack_pack_str_with_body(pk, run->run_id, strlen(run->run_id));
		msgpack_pack_str_with_body(pk, run->experiment, strlen(run->experiment));
		msgpack_pack_map(pk, run->nparams);
		for (uint32_t i = 0; i < run->nparams; i++) {
			msgpack_pack_str_with_body(pk, run->params[i].key, strlen(run->params[i].key));
			msgpack_pack_str_with_body(pk, run->params[i].value, strlen(run->params[i].value));
		}
	}
	return evr__capio_check(&cap->io);
}

int evr__capture_rec(struct evr_capture *cap, const struct evr_rec *r)
{
	static const char *kinds[] = { "", "event", "begin", "end", "lost" };
	static const uint32_t sizes[] = { 0, 10, 12, 16, 9 };
	struct cap_src *cs = cap_src_of(cap, r->src);
	msgpack_packer *pk = &cap->io.pk;

	if (r->type == EVR_REC_SAMPLE)
		return capture_item(cap, r);
	if (!cs || r->type < EVR_REC_EVENT || r->type > EVR_REC_LOST)
		return evr__capio_check(&cap->io);
	/* The sites this record names go first. */
	evr__capio_sync_meta(&cap->io, cs->src, cs->src->pub.index, &cs->meta_cursor);
	site_ahead(cap, cs, r->site);
	site_ahead(cap, cs, r->end_site);
	evr__capio_entry(&cap->io, sizes[r->type], kinds[r->type]);
	msgpack_pack_uint32(pk, r->src->pub.index);
	msgpack_pack_uint32(pk, r->lane);
	msgpack_pack_uint32(pk, r->tid);
	msgpack_pack_uint64(pk, r->mono_ns);
	msgpack_pack_uint64(pk, r->real_ns);
	evr__capio_bool(pk, r->late);
	if (r->type == EVR_REC_LOST) {
		msgpack_pack_uint64(pk, r->lost_count);
		msgpack_pack_uint64(pk, r->lost_first_real_ns);
		return evr__capio_check(&cap->io);
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
	return evr__capio_check(&cap->io);
}

int evr__capture_tick(struct evr_capture *cap, uint64_t mono_ns)
{
	evr__capio_entry(&cap->io, 2, "tick");
	msgpack_pack_uint64(&cap->io.pk, mono_ns);
	return evr__capio_check(&cap->io);
}

int evr__capture_dead(struct evr_capture *cap, const struct evr_src *s, uint64_t dead_ns)
{
	evr__capio_death(&cap->io, "dead", s->pub.index, dead_ns, s->exited);
	return evr__capio_check(&cap->io);
}

int evr__capture_close(struct evr_capture *cap, const struct evr_consumer_stats *st)
{
	int rc;

	if (!cap)
		return 0;
	evr__capio_stats(&cap->io, st, st->lost, 0);
	rc = evr__capio_close(&cap->io);
	free(cap->srcs);
	free(cap);
	return rc;
}
