/*
 * plugin_host.c: the child side of an isolated plug-in (plugin_isolate.c),
 * run by the evring-plugin-host program. It loads the plug-in as the
 * consumer would (evr__plugin_handler), says what the plug-in takes, then
 * reads one call at a time from its socket (plugin_wire.h), rebuilds the
 * object the consumer's callback received, calls the plug-in and replies
 * with its return.
 *
 * The objects are built with the consumer's own constructors (objects.c), so
 * a plug-in that keeps one with evr_obj_ref and drops it later with
 * evr_obj_unref works as it does in the consumer. Sources and sites live
 * until the process ends, one per source index and per (source, site id),
 * so their pointers are stable as in the consumer; so do the handler names
 * gaps carry (one copy of each).
 *
 * The frames come from the consumer that started this process, but they are
 * still checked: a malformed one ends the process with status 2 (the
 * consumer reports it as a crash) rather than being misread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "handlers.h"
#include "handlers/builtin.h"
#include "hub.h"
#include "objects.h"
#include "plugin_wire.h"
#include "source.h"

/* A handler name a gap carried: kept until the process ends, as the consumer's lives as long as its handler. */
struct gap_name {
	struct gap_name *next;
	char s[];
};

struct host {
	int fd;
	struct evr_handler h;
	struct evr_src **srcs; /* by source index */
	uint32_t nsrc;
	struct evr__pairmap sites; /* (source index + 1, site id) -> struct evr_site_info * */
	struct gap_name *gap_names; /* in practice one: the wrapper's handler's */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	bool bad; /* a frame did not have the shape plugin_wire.h gives it */
};

/* ---- reading msgpack values --------------------------------------------------------------------------------- */

static const msgpack_object nil_obj = { .type = MSGPACK_OBJECT_NIL };

/* Element i of an array, nil past its end or when o is no array (then h->bad). */
static const msgpack_object *at(struct host *h, const msgpack_object *o, uint32_t i)
{
	if (o->type != MSGPACK_OBJECT_ARRAY || i >= o->via.array.size) {
		h->bad = true;
		return &nil_obj;
	}
	return &o->via.array.ptr[i];
}

static uint64_t u64(const msgpack_object *o)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return o->via.u64;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return (uint64_t)o->via.i64;
	return 0;
}

static bool boolean(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
}

static char *str_dup(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_STR ? strndup(o->via.str.ptr, o->via.str.size) : NULL;
}

static uint32_t arr_n(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_ARRAY ? o->via.array.size : 0;
}

/* ---- objects ---------------------------------------------------------------------------------------------------- */

static struct evr_src *get_src(struct host *h, const msgpack_object *o)
{
	uint32_t idx = (uint32_t)u64(at(h, o, 0));
	struct evr_src *s;

	if (o->type != MSGPACK_OBJECT_ARRAY || idx > 1u << 20) {
		h->bad = true;
		return NULL;
	}
	if (idx >= h->nsrc) {
		struct evr_src **t = realloc(h->srcs, (idx + 1) * sizeof(*t));

		if (!t)
			return NULL;
		memset(t + h->nsrc, 0, (idx + 1 - h->nsrc) * sizeof(*t));
		h->srcs = t;
		h->nsrc = idx + 1;
	}
	s = h->srcs[idx];
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return NULL;
		s->pub.index = idx;
		s->pub.pid = (uint32_t)u64(at(h, o, 1));
		s->pub.program = str_dup(at(h, o, 2));
		s->pub.cmdline = str_dup(at(h, o, 3));
		s->pub.shm_name = str_dup(at(h, o, 4));
		h->srcs[idx] = s;
	}
	s->pub.dead = boolean(at(h, o, 5)); /* it changes as the consumer learns it */
	return s;
}

static const struct evr_site_info *get_site(struct host *h, const struct evr_src *s, const msgpack_object *o)
{
	struct evr_site_info *si;
	uint64_t id, *slot;
	const msgpack_object *fl;
	bool added;
	uint32_t n;

	if (o->type == MSGPACK_OBJECT_NIL || !s)
		return NULL;
	id = u64(at(h, o, 0));
	slot = evr__pairmap_put(&h->sites, s->pub.index + 1ull, id, &added);
	if (!slot)
		return NULL;
	if (!added)
		return (const struct evr_site_info *)(uintptr_t)*slot;
	fl = at(h, o, 7);
	n = arr_n(fl);
	si = calloc(1, sizeof(*si));
	if (!si)
		return NULL;
	si->id = id;
	si->kind = (uint8_t)u64(at(h, o, 1));
	si->line = (uint32_t)u64(at(h, o, 2));
	si->name = str_dup(at(h, o, 3));
	si->dispatcher = str_dup(at(h, o, 4));
	si->file = str_dup(at(h, o, 5));
	si->func = str_dup(at(h, o, 6));
	si->nfields = n;
	if (n) {
		const char **names = calloc(n, sizeof(*names));
		uint8_t *types = calloc(n, 1);
		bool *content = calloc(n, sizeof(*content));

		for (uint32_t i = 0; names && types && content && i < n; i++) {
			const msgpack_object *f = at(h, fl, i);

			names[i] = str_dup(at(h, f, 0));
			types[i] = (uint8_t)u64(at(h, f, 1));
			content[i] = boolean(at(h, f, 2));
		}
		si->field_names = names;
		si->field_types = types;
		si->field_content = content;
	}
	*slot = (uint64_t)(uintptr_t)si;
	return si;
}

/*
 * The stable copy of a gap's handler name: NULL for nil, the copy kept from an
 * earlier gap when it is the same name. A name that is neither a string nor
 * nil makes the frame bad.
 */
static const char *get_gap_name(struct host *h, const msgpack_object *o)
{
	struct gap_name *n;

	if (o->type == MSGPACK_OBJECT_NIL)
		return NULL;
	if (o->type != MSGPACK_OBJECT_STR) {
		h->bad = true;
		return NULL;
	}
	for (n = h->gap_names; n; n = n->next)
		if (strlen(n->s) == o->via.str.size && !memcmp(n->s, o->via.str.ptr, o->via.str.size))
			return n->s;
	n = malloc(sizeof(*n) + o->via.str.size + 1);
	if (!n)
		return NULL;
	memcpy(n->s, o->via.str.ptr, o->via.str.size);
	n->s[o->via.str.size] = 0;
	n->next = h->gap_names;
	h->gap_names = n;
	return n->s;
}

static struct evr_fields *get_fields(struct host *h, const msgpack_object *o)
{
	uint32_t n = arr_n(o);
	size_t bytes = 0;
	struct evr_fields *f;
	char *p;

	if (o->type != MSGPACK_OBJECT_ARRAY) {
		h->bad = true;
		return NULL;
	}
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *fl = at(h, o, i), *name = at(h, fl, 0), *v = at(h, fl, 4);

		bytes += (name->type == MSGPACK_OBJECT_STR ? name->via.str.size : 0) + 1;
		bytes += (v->type == MSGPACK_OBJECT_STR ? v->via.str.size : 0) + 1;
	}
	f = evr__fields_new(n, bytes, &p);
	if (!f)
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *fl = at(h, o, i), *name = at(h, fl, 0), *v = at(h, fl, 4);
		struct evr_field *d = &f->f[i];

		if (name->type == MSGPACK_OBJECT_STR) {
			memcpy(p, name->via.str.ptr, name->via.str.size);
			p[name->via.str.size] = 0;
			d->name = p;
			p += name->via.str.size + 1;
		}
		d->content = boolean(at(h, fl, 1));
		d->v.type = (uint8_t)u64(at(h, fl, 2));
		d->v.truncated = boolean(at(h, fl, 3));
		switch (d->v.type) {
		case EVR_V_BOOL:
			d->v.b = boolean(v);
			break;
		case EVR_V_I64:
			d->v.i = (int64_t)u64(v);
			break;
		case EVR_V_U64:
			d->v.u = u64(v);
			break;
		case EVR_V_F64:
			d->v.f = v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32 ? v->via.f64 : 0;
			break;
		case EVR_V_STR:
			d->v.len = v->type == MSGPACK_OBJECT_STR ? v->via.str.size : 0;
			if (d->v.len)
				memcpy(p, v->via.str.ptr, d->v.len);
			p[d->v.len] = 0;
			d->v.s = p;
			p += d->v.len + 1;
			break;
		default:
			break;
		}
	}
	return f;
}

static struct evr_span_rec *get_span(struct host *h, const msgpack_object *o)
{
	struct evr_span_rec *sp = evr__span_new();
	struct evr_src *s = get_src(h, at(h, o, 0));
	struct evr_fields *bf, *ef;

	if (!sp)
		return NULL;
	sp->src = s ? &s->pub : NULL;
	sp->site = get_site(h, s, at(h, o, 1));
	sp->span_id = u64(at(h, o, 2));
	sp->parent_id = u64(at(h, o, 3));
	sp->trace_id = u64(at(h, o, 4));
	sp->start_ns = u64(at(h, o, 5));
	sp->end_ns = u64(at(h, o, 6));
	sp->start_mono_ns = u64(at(h, o, 7));
	sp->end_mono_ns = u64(at(h, o, 8));
	sp->tid = (uint32_t)u64(at(h, o, 9));
	sp->status = (uint8_t)u64(at(h, o, 10));
	sp->flags = (uint32_t)u64(at(h, o, 11));
	sp->events = (uint32_t)u64(at(h, o, 12));
	bf = get_fields(h, at(h, o, 13));
	ef = get_fields(h, at(h, o, 14));
	if (bf) {
		evr__fields_unref(sp->begin_fields);
		sp->begin_fields = bf;
	}
	if (ef) {
		evr__fields_unref(sp->end_fields);
		sp->end_fields = ef;
	}
	return sp;
}

static void *get_obj(struct host *h, unsigned cb, const msgpack_object *o)
{
	switch (cb) {
	case EVR_CB_EVENT: {
		struct evr_rec r = { .type = EVR_REC_EVENT };
		struct evr_event *ev;

		r.src = get_src(h, at(h, o, 0));
		r.site = get_site(h, r.src, at(h, o, 1));
		r.real_ns = u64(at(h, o, 2));
		r.mono_ns = u64(at(h, o, 3));
		r.span_id = u64(at(h, o, 4));
		r.tid = (uint32_t)u64(at(h, o, 6));
		r.late = boolean(at(h, o, 7));
		r.fields = get_fields(h, at(h, o, 8));
		if (!r.src)
			h->bad = true;
		if (h->bad) {
			if (r.fields)
				evr__fields_unref(r.fields);
			return NULL;
		}
		ev = evr__event_new(&r, u64(at(h, o, 5)));
		if (r.fields)
			evr__fields_unref(r.fields); /* the event took its own reference */
		return ev;
	}
	case EVR_CB_SPAN_BEGIN:
	case EVR_CB_SPAN_END:
		return get_span(h, o);
	case EVR_CB_TRACE_END: {
		const msgpack_object *spans = at(h, o, 6), *par = at(h, o, 7), *fc = at(h, o, 8), *ns = at(h, o, 9);
		uint32_t n = arr_n(spans);
		struct evr_src *s = get_src(h, at(h, o, 0));
		struct evr_trace *tr;

		if (arr_n(par) != n || arr_n(fc) != n || arr_n(ns) != n)
			h->bad = true;
		if (h->bad || !(tr = evr__trace_new(n)))
			return NULL;
		tr->src = s ? &s->pub : NULL;
		tr->trace_id = u64(at(h, o, 1));
		tr->root = (int32_t)u64(at(h, o, 2));
		tr->start_ns = u64(at(h, o, 3));
		tr->end_ns = u64(at(h, o, 4));
		tr->incomplete = boolean(at(h, o, 5));
		for (uint32_t i = 0; i < n; i++) {
			tr->spans[i] = get_span(h, at(h, spans, i));
			tr->parent[i] = (int32_t)u64(at(h, par, i));
			tr->first_child[i] = (uint32_t)u64(at(h, fc, i));
			tr->next_sibling[i] = (uint32_t)u64(at(h, ns, i));
			if (!tr->spans[i])
				h->bad = true;
		}
		return tr;
	}
	case EVR_CB_LOST: {
		struct evr_rec r = { .type = EVR_REC_LOST };

		r.src = get_src(h, at(h, o, 0));
		r.tid = (uint32_t)u64(at(h, o, 1));
		r.lane = (uint32_t)u64(at(h, o, 2));
		r.lost_count = u64(at(h, o, 3));
		r.real_ns = u64(at(h, o, 4));
		r.lost_first_real_ns = u64(at(h, o, 5));
		return r.src && !h->bad ? evr__lost_new(&r) : NULL;
	}
	case EVR_WIRE_SKIPPED: {
		const msgpack_object *name = at(h, o, 0);
		struct evr_skipped g = { .handler = get_gap_name(h, name) };

		if (name->type == MSGPACK_OBJECT_STR && !g.handler)
			return NULL; /* no memory for the name */
		g.count = u64(at(h, o, 1));
		g.events = u64(at(h, o, 2));
		g.span_begins = u64(at(h, o, 3));
		g.span_ends = u64(at(h, o, 4));
		g.traces = u64(at(h, o, 5));
		g.stalled = u64(at(h, o, 6));
		g.first_ns = u64(at(h, o, 7));
		g.last_ns = u64(at(h, o, 8));
		return h->bad ? NULL : evr__skipped_new(&g);
	}
	}
	h->bad = true;
	return NULL;
}

/* Frees the sources and sites (after the plug-in's destroy: nothing refers to them any more). */
static void host_free(struct host *h)
{
	for (uint32_t i = 0; i < h->sites.cap; i++) {
		struct evr_site_info *si;

		if (!h->sites.slots || (!h->sites.slots[i].a && !h->sites.slots[i].b))
			continue;
		si = (struct evr_site_info *)(uintptr_t)h->sites.slots[i].v;
		for (uint32_t f = 0; si && si->field_names && f < si->nfields; f++)
			free((char *)si->field_names[f]);
		if (si) {
			free((void *)si->field_names);
			free((void *)si->field_types);
			free((void *)si->field_content);
			free((char *)si->name);
			free((char *)si->dispatcher);
			free((char *)si->file);
			free((char *)si->func);
			free(si);
		}
	}
	evr__pairmap_free(&h->sites);
	for (uint32_t i = 0; i < h->nsrc; i++)
		if (h->srcs[i]) {
			free((char *)h->srcs[i]->pub.program);
			free((char *)h->srcs[i]->pub.cmdline);
			free((char *)h->srcs[i]->pub.shm_name);
			free(h->srcs[i]);
		}
	free(h->srcs);
	while (h->gap_names) {
		struct gap_name *n = h->gap_names;

		h->gap_names = n->next;
		free(n);
	}
	msgpack_sbuffer_destroy(&h->sb);
}

/* ---- the loop ---------------------------------------------------------------------------------------------------- */

static int send_frame(struct host *h)
{
	evr__wire_put_len((unsigned char *)h->sb.data, (uint32_t)(h->sb.size - 4));
	return evr__wire_send(h->fd, h->sb.data, h->sb.size);
}

static void frame_begin(struct host *h)
{
	msgpack_sbuffer_clear(&h->sb);
	msgpack_sbuffer_write(&h->sb, "\0\0\0\0", 4);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n;

	if (!s) {
		msgpack_pack_nil(pk);
		return;
	}
	n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_list(msgpack_packer *pk, const char *const *l)
{
	size_t n = 0;

	while (l && l[n])
		n++;
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		pack_str(pk, l[i]);
}

static int call(struct host *h, unsigned cb, void *obj)
{
	struct evr_handler *p = &h->h;

	switch (cb) {
	case EVR_CB_EVENT:
		return p->on_event ? p->on_event(p->ctx, obj) : 0;
	case EVR_CB_SPAN_BEGIN:
		return p->on_span_begin ? p->on_span_begin(p->ctx, obj) : 0;
	case EVR_CB_SPAN_END:
		return p->on_span_end ? p->on_span_end(p->ctx, obj) : 0;
	case EVR_CB_TRACE_END:
		return p->on_trace_end ? p->on_trace_end(p->ctx, obj) : 0;
	case EVR_CB_LOST:
		return p->on_lost ? p->on_lost(p->ctx, obj) : 0;
	case EVR_WIRE_SKIPPED:
		return p->on_skipped ? p->on_skipped(p->ctx, obj) : 0;
	}
	return -EINVAL;
}

/* One frame: the call it carries and the reply. Returns 0, 1 at the end of the stream, or -errno. */
static int serve_one(struct host *h)
{
	unsigned char head[4];
	msgpack_unpacked u;
	size_t off = 0;
	uint32_t len;
	char *buf;
	int rc = evr__wire_recv(h->fd, head, 4);

	if (rc == -EPIPE)
		return 1;
	if (rc)
		return rc;
	len = evr__wire_get_len(head);
	if (len == 0 || len > EVR_WIRE_FRAME_MAX || !(buf = malloc(len)))
		return -EBADMSG;
	rc = evr__wire_recv(h->fd, buf, len);
	if (rc) {
		free(buf);
		return rc;
	}
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS) {
		rc = -EBADMSG;
	} else {
		unsigned cb = (unsigned)u64(at(h, &u.data, 0));

		if (cb == EVR_WIRE_CLOSE) {
			rc = h->h.on_end ? h->h.on_end(h->h.ctx) : 0;
			if (!h->h.on_end && h->h.on_close)
				h->h.on_close(h->h.ctx);
			fflush(NULL);
		} else {
			void *obj = get_obj(h, cb, at(h, &u.data, 1));

			if (h->bad || !obj) {
				if (obj)
					evr_obj_unref(obj);
				rc = h->bad ? -EBADMSG : -ENOMEM;
			} else {
				rc = call(h, cb, obj);
				evr_obj_unref(obj);
			}
		}
		if (!h->bad) {
			frame_begin(h);
			msgpack_pack_array(&h->pk, 1);
			msgpack_pack_int(&h->pk, rc);
			rc = send_frame(h);
		}
	}
	msgpack_unpacked_destroy(&u);
	free(buf);
	return h->bad ? -EBADMSG : rc == -EPIPE ? 1 : rc;
}

#define ORPHAN_GRACE_S 3 /* past the consumer's own wait (EXIT_WAIT_NS in plugin_isolate.c) */

/*
 * Ends this process when the consumer is gone and the plug-in does not come
 * back to read its socket (hung in a callback the consumer abandoned, or
 * the consumer killed): the consumer's end hung up, and a grace later this
 * process is still here. A normal end (EOF, destroy, exit) is well within it.
 */
static void *orphan_watch(void *arg)
{
	struct pollfd p = { .fd = *(int *)arg, .events = POLLRDHUP };
	struct timespec grace = { ORPHAN_GRACE_S, 0 };

	while (poll(&p, 1, -1) < 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
		;
	while (nanosleep(&grace, &grace) < 0 && errno == EINTR)
		;
	_exit(4);
	return NULL;
}

int evr__plugin_host_run(int fd, const char *spec)
{
	pthread_t watch;
	struct host h = { .fd = fd };
	char err[512] = "";
	uint32_t cbs = 0;
	int rc;

	/*
	 * An interrupt is for the consumer, which then ends the stream: this
	 * process runs on_close when told and ends at end of stream.
	 */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	if (pthread_create(&watch, NULL, orphan_watch, &h.fd) == 0)
		pthread_detach(watch);
	msgpack_sbuffer_init(&h.sb);
	msgpack_packer_init(&h.pk, &h.sb, msgpack_sbuffer_write);
	rc = evr__plugin_handler(spec, &h.h, err, sizeof(err));
	frame_begin(&h);
	if (rc) {
		msgpack_pack_array(&h.pk, 2);
		msgpack_pack_int(&h.pk, rc < 0 ? rc : -EINVAL);
		pack_str(&h.pk, err);
		send_frame(&h);
		msgpack_sbuffer_destroy(&h.sb);
		return 1;
	}
	cbs |= h.h.on_event ? 1u << EVR_CB_EVENT : 0;
	cbs |= h.h.on_span_begin ? 1u << EVR_CB_SPAN_BEGIN : 0;
	cbs |= h.h.on_span_end ? 1u << EVR_CB_SPAN_END : 0;
	cbs |= h.h.on_trace_end ? 1u << EVR_CB_TRACE_END : 0;
	cbs |= h.h.on_lost ? 1u << EVR_CB_LOST : 0;
	cbs |= h.h.on_end || h.h.on_close ? 1u << EVR_WIRE_CLOSE : 0;
	cbs |= h.h.on_skipped ? 1u << EVR_WIRE_SKIPPED : 0;
	msgpack_pack_array(&h.pk, 7);
	msgpack_pack_int(&h.pk, 0);
	pack_str(&h.pk, h.h.name);
	msgpack_pack_uint32(&h.pk, cbs);
	pack_str(&h.pk, h.h.dispatcher);
	pack_list(&h.pk, h.h.ignore_begin);
	pack_list(&h.pk, h.h.ignore_end);
	msgpack_pack_uint32(&h.pk, h.h.queue_len);
	rc = send_frame(&h);
	while (rc == 0)
		rc = serve_one(&h);
	if (h.h.destroy)
		h.h.destroy(h.h.ctx); /* also unloads the plug-in */
	host_free(&h);
	fflush(NULL);
	if (rc < 0 && rc != -EPIPE)
		fprintf(stderr, "evring-plugin-host %s: %s\n", spec, rc == -EBADMSG ? "malformed call" : strerror(-rc));
	return rc < 0 && rc != -EPIPE ? 2 : 0;
}
