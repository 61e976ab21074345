/*
 * consumer.c: the drain loop. One round (evr_consumer_poll) reads every lane
 * of every attached segment in batches, decodes each body, queues it on its
 * lane's merge queue, publishes the lanes' heads so writers get their room
 * back, then feeds the span builder everything the merge's watermark lets
 * out. Now and then it looks at whether each producer still lives, frees the
 * lanes of dead threads, refines the clock mapping and beats its heartbeat.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "internal.h"

#define LIVENESS_NS 100000000ull /* look at producers' pids every 100 ms */
#define REFINE_NS 1000000000ull	 /* refine the clock mapping every second */

struct evr_consumer {
	struct evr_consumer_opts o;
	struct evr_src **srcs;
	uint32_t nsrc;
	struct evr_merge *merge;
	struct evr_spans *spans;
	struct evr_hub *hub;
	struct evr_consumer_stats st;
	msgpack_zone zone;
	struct evr_rec *free_recs;
	struct evr_capture *cap; /* evr_consumer_capture: the stream is written here too */
	uint64_t cap_clock;	 /* the span builder's clock as the capture last recorded it */
	bool finished;		 /* evr_consumer_finish ran: nothing more is delivered */
	bool replaying;		 /* evr_consumer_replay: records come from a capture, not the merge */
	bool replay_clock_set;	 /* the capture's first clock was taken */
	volatile int stop;
	uint8_t buf[EVR_BODY_MAX];
};

struct msgpack_zone *evr__consumer_zone(struct evr_consumer *c)
{
	return &c->zone;
}

struct evr_consumer_stats *evr__consumer_stats(struct evr_consumer *c)
{
	return &c->st;
}

struct evr_rec *evr__rec_alloc(struct evr_consumer *c)
{
	struct evr_rec *r = c->free_recs;

	if (r) {
		c->free_recs = r->next;
		return r;
	}
	return malloc(sizeof(*r));
}

void evr__rec_free(struct evr_consumer *c, struct evr_rec *r)
{
	if (!r)
		return;
	if (r->fields)
		evr__fields_unref(r->fields);
	r->fields = NULL;
	r->next = c->free_recs;
	c->free_recs = r;
}

struct evr_consumer *evr_consumer_new(const struct evr_consumer_opts *opts, char *err, size_t errlen)
{
	struct evr_consumer *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (opts)
		c->o = *opts;
	if (!c->o.timeout_ns)
		c->o.timeout_ns = 5000000000ull;
	if (!c->o.merge_window_ns)
		c->o.merge_window_ns = 2000000ull;
	if (!c->o.orphan_grace_ns)
		c->o.orphan_grace_ns = 1000000000ull;
	if (!c->o.max_open_spans)
		c->o.max_open_spans = 100000;
	if (!c->o.batch)
		c->o.batch = 256;
	if (!c->o.log)
		c->o.log = stderr;
	if (!msgpack_zone_init(&c->zone, 8192) || !(c->merge = evr__merge_new(64)) ||
	    !(c->hub = evr__hub_new(&c->o, &c->st)) || !(c->spans = evr__spans_new(&c->o, c->hub, &c->st))) {
		snprintf(err, errlen, "out of memory");
		evr_consumer_close(c);
		return NULL;
	}
	return c;
}

static int add_source(struct evr_consumer *c, const char *shm, unsigned flags, char *err, size_t errlen)
{
	struct evr_src *s = calloc(1, sizeof(*s)), **t;
	int rc;

	if (!s)
		return -ENOMEM;
	for (uint32_t i = 0; i < c->nsrc; i++) {
		if (!strcmp(c->srcs[i]->shm_name, shm)) {
			free(s);
			return (int)i; /* attached already */
		}
	}
	rc = evr__src_open(s, shm, c->nsrc, flags, err, errlen);
	if (rc) {
		free(s);
		return rc;
	}
	t = realloc(c->srcs, (c->nsrc + 1) * sizeof(*t));
	if (!t) {
		evr__src_close(s);
		free(s);
		return -ENOMEM;
	}
	c->srcs = t;
	c->srcs[c->nsrc] = s;
	evr__src_meta_refresh(s, &c->st);
	if (c->cap)
		evr__capture_source(c->cap, s);
	return (int)c->nsrc++;
}

int evr__consumer_adopt(struct evr_consumer *c, struct evr_src *s)
{
	struct evr_src **t = realloc(c->srcs, (c->nsrc + 1) * sizeof(*t));

	if (!t)
		return -ENOMEM;
	c->srcs = t;
	s->pub.index = c->nsrc;
	s->drained_after_death = true; /* nothing to drain: its records come from the capture */
	c->srcs[c->nsrc] = s;
	return (int)c->nsrc++;
}

/* Records the span builder's clock in the capture when it moved since the last record of it. */
static void capture_clock(struct evr_consumer *c)
{
	uint64_t t = evr__spans_clock(c->spans);

	if (t != c->cap_clock) {
		evr__capture_tick(c->cap, t);
		c->cap_clock = t;
	}
}

/* A record leaves the merge: into the capture, if one is written, then to the span builder. */
static void deliver(struct evr_consumer *c, struct evr_rec *r)
{
	if (c->cap) {
		capture_clock(c); /* the clock this record meets, so that a replay meets the same */
		evr__capture_rec(c->cap, r);
	}
	evr__spans_record(c->spans, c, r);
}

/* A dead producer's spans still open end as abandoned (once: dead_ns is cleared). */
static void deliver_death(struct evr_consumer *c, struct evr_src *s)
{
	if (c->cap) {
		capture_clock(c);
		evr__capture_dead(c->cap, s, s->dead_ns);
	}
	evr__spans_source_dead(c->spans, s, s->dead_ns);
	s->dead_ns = 0;
}

void evr__consumer_replay_rec(struct evr_consumer *c, struct evr_rec *r)
{
	/*
	 * Offline nothing is lost to a slow handler: every 64 records (at most
	 * three objects each, far below any queue's room) wait for the handlers.
	 */
	if ((c->st.records & 63) == 63)
		evr__hub_flush(c->hub);
	c->st.records++;
	c->st.late += r->late;
	evr__spans_record(c->spans, c, r); /* frees r */
	c->st.open_spans = evr__spans_open(c->spans);
}

void evr__consumer_replay_tick(struct evr_consumer *c, uint64_t mono_ns)
{
	evr__hub_flush(c->hub); /* a tick may let many traces go at once */
	if (!c->replay_clock_set) {
		/* The live run's clock, before its first record: traces are touched at the same times. */
		evr__spans_clock_set(c->spans, mono_ns);
		c->replay_clock_set = true;
	}
	evr__spans_tick(c->spans, mono_ns);
	c->st.open_spans = evr__spans_open(c->spans);
}

bool evr__consumer_stopping(const struct evr_consumer *c)
{
	return c->stop != 0;
}

void evr__consumer_replay_dead(struct evr_consumer *c, struct evr_src *s, uint64_t dead_ns)
{
	evr__hub_flush(c->hub);
	s->pub.dead = true;
	s->dead_ns = dead_ns;
	evr__spans_source_dead(c->spans, s, dead_ns);
	s->dead_ns = 0;
}

int evr_consumer_capture(struct evr_consumer *c, const char *path, char *err, size_t errlen)
{
	int rc;

	if (c->cap) {
		snprintf(err, errlen, "a capture is already being written");
		return -EBUSY;
	}
	rc = evr__capture_open(&c->cap, path, err, errlen);
	for (uint32_t i = 0; rc == 0 && i < c->nsrc; i++)
		rc = evr__capture_source(c->cap, c->srcs[i]);
	if (rc == 0) {
		c->cap_clock = evr__spans_clock(c->spans);
		rc = evr__capture_tick(c->cap, c->cap_clock); /* where the replay's clock starts */
	}
	if (rc && c->cap) {
		snprintf(err, errlen, "cannot write capture %s: %s", path, strerror(-rc));
		evr__capture_close(c->cap, &c->st);
		c->cap = NULL;
	}
	return rc;
}

int evr_consumer_capture_end(struct evr_consumer *c)
{
	struct evr_rec *r;
	int rc;

	if (!c->cap)
		return -EINVAL;
	while ((r = evr__merge_pop(c->merge, 0, true)) != NULL)
		deliver(c, r);
	for (uint32_t i = 0; i < c->nsrc; i++)
		if (c->srcs[i]->dead_ns)
			deliver_death(c, c->srcs[i]);
	c->st.late = evr__merge_late(c->merge);
	evr__hub_stats(c->hub, NULL, 0); /* folds the handlers' errors and timeouts into c->st */
	rc = evr__capture_close(c->cap, &c->st);
	c->cap = NULL;
	return rc;
}

int evr_consumer_replay(struct evr_consumer *c, const char *path, char *err, size_t errlen)
{
	if (c->nsrc || c->replaying || c->cap) {
		snprintf(err, errlen, "a replay needs a consumer attached to nothing, capturing nothing, replaying once");
		return -EINVAL;
	}
	c->replaying = true;
	return evr__replay_file(c, path, err, errlen);
}

struct attach_ctx {
	struct evr_consumer *c;
	unsigned flags;
	char *err;
	size_t errlen;
	int first;
};

static int attach_one(void *arg, const char *shm, uint32_t pid)
{
	struct attach_ctx *a = arg;
	int rc;

	(void)pid;
	rc = add_source(a->c, shm, a->flags, a->err, a->errlen);
	if (rc < 0)
		return rc;
	if (a->first < 0)
		a->first = rc;
	return 0;
}

int evr_consumer_attach_pid(struct evr_consumer *c, uint32_t pid, unsigned flags, char *err, size_t errlen)
{
	struct attach_ctx a = { c, flags, err, errlen, -1 };
	int rc;

	if (pid == 0) {
		snprintf(err, errlen, "no such process: 0");
		return -ESRCH;
	}
	rc = evr__shm_each(pid, NULL, attach_one, &a);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return evr__no_segment(pid, err, errlen);
	return a.first;
}

int evr_consumer_attach_name(struct evr_consumer *c, const char *name, unsigned flags, char *err, size_t errlen)
{
	struct attach_ctx a = { c, flags, err, errlen, -1 };
	char shm[300];
	unsigned long pid;
	char *end;
	int rc;

	if (!name || !*name) {
		snprintf(err, errlen, "no segment name given");
		return -EINVAL;
	}
	if (name[0] == '/')
		return add_source(c, name, flags, err, errlen);
	if (!strncmp(name, "evring.", 7)) {
		snprintf(shm, sizeof(shm), "/%s", name);
		return add_source(c, shm, flags, err, errlen);
	}
	pid = strtoul(name, &end, 10);
	if (end != name && *end == '.' && pid) {
		snprintf(shm, sizeof(shm), "/evring.%s", name);
		return add_source(c, shm, flags, err, errlen);
	}
	/* A program name: every live process's segment of that name. */
	rc = evr__shm_each(0, name, attach_one, &a);
	if (rc < 0)
		return rc;
	if (a.first < 0) {
		snprintf(err, errlen, "no evring segment named %s in /dev/shm", name);
		return -ENOENT;
	}
	return a.first;
}

int evr_consumer_add_handler(struct evr_consumer *c, const struct evr_handler *h)
{
	return evr__hub_add(c->hub, h);
}

int evr_consumer_add_builtin(struct evr_consumer *c, const char *spec, FILE *out, char *err, size_t errlen)
{
	struct evr_handler h;
	int rc;

	memset(&h, 0, sizeof(h));
	if (!strncmp(spec, "plugin=", 7))
		rc = evr__plugin_handler(spec + 7, &h, err, errlen);
	else
		rc = evr__builtin_handler(spec, out, &h, err, errlen);
	if (rc)
		return rc;
	if (!h.dispatcher && c->o.dispatcher && *c->o.dispatcher)
		h.dispatcher = c->o.dispatcher;
	rc = evr__hub_add(c->hub, &h);
	if (rc < 0) {
		snprintf(err, errlen, "cannot start handler %s: %s", spec, strerror(-rc));
		if (h.destroy)
			h.destroy(h.ctx);
	}
	return rc;
}

int evr_consumer_remove_handler(struct evr_consumer *c, int id)
{
	return evr__hub_remove(c->hub, id);
}

/* [ts, tid]: the records of this exclusive lane from here on are tid's. */
static void thread_record(struct evr_consumer *c, struct evr_src *s, const struct evr_record *rec)
{
	msgpack_object obj;
	size_t off = 0;

	msgpack_zone_clear(&c->zone);
	if (rec->lane + 1 == s->seg.lane_count || !evr__msgpack_sane(rec->body, rec->body_len, 2) ||
	    !evr__unpacked(msgpack_unpack((const char *)rec->body, rec->body_len, &off, &c->zone, &obj)) ||
	    obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size != 2 ||
	    obj.via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    obj.via.array.ptr[1].via.u64 > UINT32_MAX) {
		c->st.bad++;
		return;
	}
	s->lanes[rec->lane].tid = (uint32_t)obj.via.array.ptr[1].via.u64;
}

/* Reads up to a batch from one lane. Returns the records read; *full when the batch filled. */
static uint32_t drain_lane(struct evr_consumer *c, struct evr_src *s, uint32_t lane, uint64_t now, bool *full)
{
	struct evr_record rec;
	uint64_t last = now;
	uint32_t n = 0;

	while (n < c->o.batch && evr_reader_next(&s->reader, lane, &rec, c->buf, sizeof(c->buf)) == 1) {
		struct evr_rec *r;

		n++;
		if (rec.type == EVR_REC_THREAD) {
			thread_record(c, s, &rec);
			continue;
		}
		r = evr__rec_alloc(c);
		if (!r)
			break;
		r->fields = NULL;
		if (evr__decode(c, s, &rec, r) != 0) {
			c->st.bad++;
			evr__rec_free(c, r);
			continue;
		}
		last = r->mono_ns;
		if (evr__merge_push(c->merge, s->pub.index, lane, r) != 0) {
			c->st.bad++;
			evr__rec_free(c, r);
		}
	}
	evr_reader_release(&s->reader, lane); /* the writer may reuse what was read */
	*full = n == c->o.batch;
	/* An empty lane's next record comes after now; a lane with more waiting, after its last read. */
	evr__merge_idle(c->merge, s->pub.index, lane, *full ? last : now);
	return n;
}

/*
 * A producer that died, or exited with its lane full, may leave drops it
 * never got to report in a LOST record: they are still counted in the lane.
 * Nothing will write that lane again, so the consumer reports them itself.
 */
static void report_pending_loss(struct evr_consumer *c, struct evr_src *s, uint32_t lane, uint64_t now)
{
	struct evr_lane *l = &s->seg.lanes[lane];
	uint64_t pending = evr_ld_64(&l->lost_pending), first = evr_ld_64(&l->lost_first_ts);
	struct evr_rec *r;

	if (pending == 0 || pending > evr_ld_64(&l->lost) || !(r = evr__rec_alloc(c)))
		return; /* none, or a count the lane's own total contradicts */
	memset(r, 0, sizeof(*r));
	r->type = EVR_REC_LOST;
	r->src = s;
	r->lane = lane;
	r->tid = s->lanes[lane].tid;
	r->mono_ns = now;
	r->real_ns = now + (uint64_t)s->clock.real_minus_mono_ns;
	r->lost_count = pending;
	r->lost_first_real_ns = first ? evr_clock_to_real_ns(&s->clock, first) : r->real_ns;
	if (evr__merge_push(c->merge, s->pub.index, lane, r) != 0)
		evr__rec_free(c, r);
}

static uint64_t ring_skips(const struct evr_src *s)
{
	const struct evr_reader_stats *r = &s->reader.stats;

	return r->skipped_bad + r->skipped_stuck + r->skipped_dead;
}

int evr_consumer_poll(struct evr_consumer *c)
{
	uint64_t now = evr_clock_monotonic_ns(), skips = 0;
	struct evr_rec *r;
	int total = 0;

	if (c->finished)
		return 0;
	for (uint32_t i = 0; i < c->nsrc; i++) {
		struct evr_src *s = c->srcs[i];
		bool more = false, full;

		if (s->drained_after_death) {
			skips += ring_skips(s);
			continue;
		}
		if (evr_ld_64(&s->seg.hdr->meta_used) != s->meta_cursor)
			evr__src_meta_refresh(s, &c->st);
		if (!s->pub.dead && now >= s->next_liveness_ns) {
			s->next_liveness_ns = now + LIVENESS_NS;
			if (!evr_segment_owner_alive(&s->seg, (uint64_t)s->pub.pid << 32)) {
				s->pub.dead = true;
				s->dead_ns = now;
			}
			evr_reader_reap(&s->reader); /* lanes of threads that died */
			evr_st_64(&s->seg.hdr->consumer_heartbeat_ns, now);
		}
		if (now >= s->next_refine_ns) {
			s->next_refine_ns = now + REFINE_NS;
			evr_clock_map_refine(&s->clock);
		}
		for (uint32_t l = 0; l < s->seg.lane_count; l++) {
			total += (int)drain_lane(c, s, l, now, &full);
			more |= full;
		}
		if (s->pub.dead && !more) {
			/* Everything the dead process committed has been read: its lanes are done. */
			evr__src_meta_refresh(s, &c->st);
			for (uint32_t l = 0; l < s->seg.lane_count; l++) {
				report_pending_loss(c, s, l, now);
				evr__merge_idle(c->merge, s->pub.index, l, UINT64_MAX);
			}
			s->drained_after_death = true;
		}
		skips += ring_skips(s);
	}
	c->st.records += (uint64_t)total;
	c->st.ring_skipped = skips;

	evr__spans_round_begin(c->spans); /* one read-side section; handlers get batches */
	while ((r = evr__merge_pop(c->merge, c->o.merge_window_ns, false)) != NULL)
		deliver(c, r);
	for (uint32_t i = 0; i < c->nsrc; i++) {
		struct evr_src *s = c->srcs[i];
		/* Its spans still open end as abandoned once every record of it went through. */
		if (s->drained_after_death && s->dead_ns && evr__merge_src_empty(c->merge, s->pub.index))
			deliver_death(c, s);
	}
	evr__spans_tick(c->spans, now);
	if (c->cap && evr__spans_waiting(c->spans))
		capture_clock(c); /* a trace waits out its grace: the replay must tick where this did */
	evr__spans_round_end(c->spans);
	c->st.late = evr__merge_late(c->merge);
	c->st.open_spans = evr__spans_open(c->spans);
	return total;
}

static bool all_done(struct evr_consumer *c)
{
	for (uint32_t i = 0; i < c->nsrc; i++)
		if (!c->srcs[i]->drained_after_death || c->srcs[i]->dead_ns)
			return false;
	return true;
}

int evr_consumer_run(struct evr_consumer *c, uint64_t duration_ns, volatile int *stop)
{
	uint64_t start = evr_clock_monotonic_ns();

	while (!c->stop && !(stop && *stop)) {
		int n = evr_consumer_poll(c);

		if (n < 0)
			return n;
		if (all_done(c))
			break;
		if (duration_ns && evr_clock_monotonic_ns() - start >= duration_ns)
			break;
		if (n == 0) {
			struct timespec ts = { 0, 1000000 }; /* idle: 1 ms */
			nanosleep(&ts, NULL);
		}
	}
	return 0;
}

void evr_consumer_sync(struct evr_consumer *c)
{
	evr__hub_flush(c->hub);
}

void evr_consumer_stop(struct evr_consumer *c)
{
	c->stop = 1;
}

void evr_consumer_stats(struct evr_consumer *c, struct evr_consumer_stats *st)
{
	evr__hub_stats(c->hub, NULL, 0); /* folds in errors and timeouts seen while no record came */
	*st = c->st;
}

int evr_consumer_handler_stats(struct evr_consumer *c, struct evr_handler_stats *out, int n)
{
	return evr__hub_stats(c->hub, out, n);
}

void evr_consumer_finish(struct evr_consumer *c)
{
	struct evr_rec *r;

	if (c->finished)
		return;
	c->finished = true;
	if (c->merge && c->spans) {
		if (c->cap)
			evr_consumer_capture_end(c);
		evr__spans_round_begin(c->spans);
		while ((r = evr__merge_pop(c->merge, 0, true)) != NULL)
			deliver(c, r);
		for (uint32_t i = 0; i < c->nsrc; i++)
			if (c->srcs[i]->dead_ns)
				deliver_death(c, c->srcs[i]);
		evr__spans_detach(c->spans, evr_clock_monotonic_ns());
		evr__spans_round_end(c->spans);
	}
	evr__hub_flush(c->hub);
	evr__hub_stats(c->hub, NULL, 0); /* folds the handlers' errors and timeouts into c->st */
	if (!c->replaying) /* a replay counted its late records as they came */
		c->st.late = evr__merge_late(c->merge);
	c->st.open_spans = evr__spans_open(c->spans);
}

void evr_consumer_close(struct evr_consumer *c)
{
	struct evr_rec *r;

	if (!c)
		return;
	if (c->merge && c->spans && c->hub)
		evr_consumer_finish(c);
	if (c->spans)
		evr__spans_free(c->spans);
	if (c->hub)
		evr__hub_close(c->hub);
	for (uint32_t i = 0; i < c->nsrc; i++) {
		evr__src_close(c->srcs[i]);
		free(c->srcs[i]);
	}
	free(c->srcs);
	evr__merge_free(c->merge);
	while ((r = c->free_recs) != NULL) {
		c->free_recs = r->next;
		free(r);
	}
	msgpack_zone_destroy(&c->zone);
	free(c);
}
