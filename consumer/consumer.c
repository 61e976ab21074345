/*
 * consumer.c: the consumer, wired from its stages; the only file that knows
 * all of them. Records flow one way: a stage calls only stages after it
 * (the drain has decode make each rec, then queues it on the merge), through
 * their headers, which say what each takes and what it gives:
 *
 *   attach.c --> drain.c --> decode.c --> merge.c --> spans*.c --> hub/ --> handlers
 *   (segments,   (lanes in    (bodies ->   (time order,  (span trees, (a queue and   (handlers/,
 *    the slot)    batches)     evr_rec)     watermark)    traces)      thread each,   plugin.c)
 *                                  |                                   watchdog)
 *                                  v
 *                              source.c (a segment's metadata tables)      capture.c <-- the stream
 *                              mpcheck.c (msgpack checked before unpack)   replay.c  --> (sink) --> spans*.c
 *                              rec.c, objects.c (what flows, and its memory)
 *
 *   sampler.c --> merge.c (metric samples, run updates: a queue per source)
 *   sampler.c --> spans*.c (a source's run, at the poll after its attach)
 *   (runs and /proc samples of live sources; procinfo.c reads /proc, ELF, git)
 *
 * Below the stages, anyone may use source.h, mpcheck.h, rec.h and objects.h;
 * none of them calls a stage. The counters every stage adds to are one plain
 * struct (struct evr_consumer_stats, here), handed to each stage when it is
 * made; recs come from one pool (struct evr_rec_pool, here) and the span
 * builder gives them back. capture.c is a tap: it writes what the merge
 * delivers; replay.c reads a capture back into a sink this file provides,
 * which feeds the span builder as the merge did.
 *
 * One round (evr_consumer_poll): runs of sources joined since the last
 * round go to the span builder, every source is drained into the merge,
 * the sampler queues the samples that are due,
 * then everything the merge's watermark lets out goes to the span builder
 * (and the capture), dead producers' open spans end as abandoned, and time
 * passes for orphans; the span builder hands the hub its objects in batches.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <urcu.h>

#include "attach.h"
#include "capture.h"
#include "capture_raw.h"
#include "drain.h"
#include "handlers.h"
#include "hub.h"
#include "merge.h"
#include "objects.h"
#include "rec.h"
#include "replay.h"
#include "sampler.h"
#include "source.h"
#include "spans.h"

struct evr_consumer {
	struct evr_consumer_opts o;
	struct evr_src **srcs; /* attached, in attach order; retired ones leave (SOURCE LIFETIME) */
	uint32_t nsrc;
	uint32_t next_index;   /* the next source's index: never reused */
	uint64_t skips_gone;   /* ring skips of sources let go (ring_skipped adds up every source's) */
	struct evr_consumer_stats st; /* the counters every stage adds to */
	struct evr_rec_pool recs;
	struct evr_drain *drain;
	struct evr_merge *merge;
	struct evr_spans *spans;
	struct evr_hub *hub;
	struct evr_sampler *sampler; /* runs and metrics of live sources, into the merge */
	struct evr_capture *cap; /* evr_consumer_capture: the stream is written here too */
	struct evr_rawcap *raw;	 /* evr_consumer_capture_raw: the lanes' bytes are written here instead */
	bool raw_decode;	 /* and decoded live as well (EVR_CAPTURE_RAW_DECODE) */
	bool raw_round;		 /* a raw capture's replay: a round is open, at raw_now */
	uint64_t raw_now;
	uint64_t cap_clock;	 /* the span builder's clock as the capture last recorded it */
	bool finished;		 /* evr_consumer_finish ran: nothing more is delivered */
	bool replaying;		 /* evr_consumer_replay: records come from a capture, not the merge */
	bool replay_clock_set;	 /* the capture's first clock was taken */
	volatile int stop;
};

static bool deliver_round(struct evr_consumer *c, uint64_t now);
static void deliver(struct evr_consumer *c, struct evr_rec *r);

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
	if (!(c->merge = evr__merge_new(64)) || !(c->drain = evr__drain_new(c->merge, &c->recs, &c->st, c->o.batch)) ||
	    !(c->hub = evr__hub_new(&c->o, &c->st)) || !(c->spans = evr__spans_new(&c->o, c->hub, &c->st, &c->recs)) ||
	    !(c->sampler = evr__sampler_new(&c->o, c->merge, &c->recs, &c->st))) {
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
		if (!strcmp(c->srcs[i]->shm_name, shm) && !c->srcs[i]->end_sent && !c->srcs[i]->detached) {
			free(s);
			return (int)c->srcs[i]->pub.index; /* attached already */
		}
	}
	if (c->next_index > INT32_MAX) {
		free(s);
		snprintf(err, errlen, "too many sources attached over this consumer's life");
		return -EOVERFLOW;
	}
	rc = evr__src_open(s, shm, c->next_index, flags, err, errlen);
	if (rc) {
		free(s);
		return rc;
	}
	t = realloc(c->srcs, (c->nsrc + 1) * sizeof(*t));
	if (!t || evr__merge_lanes(c->merge, s->pub.index, s->seg.lane_count) != 0) {
		if (t)
			c->srcs = t;
		evr__merge_forget(c->merge, s->pub.index);
		evr__src_close(s);
		free(s);
		return -ENOMEM;
	}
	c->srcs = t;
	c->srcs[c->nsrc++] = s;
	s->attached_ns = (uint64_t)evr_clock_realtime_ns();
	evr__src_meta_refresh(s, &c->st);
	if (c->cap)
		evr__capture_source(c->cap, s);
	if (c->raw)
		evr__rawcap_source(c->raw, s);
	evr__sampler_join(c->sampler, s, evr_clock_monotonic_ns()); /* its run goes out at the next poll */
	return (int)c->next_index++;
}

static void raw_round_end(struct evr_consumer *c);

/* Replay's sink: a source read back from a capture joins (it is the consumer's from here). */
static int replay_source(void *arg, struct evr_src *s)
{
	struct evr_consumer *c = arg;
	struct evr_src **t;

	/* A live source joins between rounds: the round before it ends without it, as it did live. */
	raw_round_end(c);
	t = realloc(c->srcs, (c->nsrc + 1) * sizeof(*t));
	if (t)
		c->srcs = t;
	if (!t || evr__merge_lanes(c->merge, c->next_index, s->seg.lane_count) != 0) {
		free(s->lanes);
		free(s);
		return -ENOMEM;
	}
	s->pub.index = c->next_index++;
	/* A decoded capture's records come as recs: nothing to drain. A raw capture's come through the drain. */
	s->drained_after_death = s->seg.lane_count == 0;
	c->srcs[c->nsrc++] = s;
	return (int)s->pub.index;
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
	evr__spans_record(c->spans, r);
}

/* A dead producer's spans still open end as abandoned (once: dead_ns is cleared). */
static void deliver_death(struct evr_consumer *c, struct evr_src *s)
{
	if (s->faulted && !c->o.quiet)
		fprintf(stderr,
			"evring: segment %s (pid %u) shrank under the consumer (SIGBUS at offset %llu of %llu bytes): "
			"detached, its open spans closed; the other segments go on\n",
			s->shm_name, s->pub.pid, (unsigned long long)s->fault_offset, (unsigned long long)s->seg.bytes);
	if (c->cap) {
		capture_clock(c);
		evr__capture_dead(c->cap, s, s->dead_ns);
	}
	evr__spans_source_dead(c->spans, s, s->dead_ns);
	s->dead_ns = 0;
}

/* Replay's sink: a record, in delivery order. */
static void replay_rec(void *arg, struct evr_rec *r)
{
	struct evr_consumer *c = arg;

	/*
	 * Offline nothing is lost to a slow handler: every 64 records (at most
	 * three objects each, far below any queue's room) wait for the handlers.
	 */
	if ((c->st.records & 63) == 63)
		evr__hub_flush(c->hub);
	c->st.records++;
	c->st.late += r->late;
	evr__spans_record(c->spans, r); /* frees r */
	c->st.open_spans = evr__spans_open(c->spans);
}

/* Replay's sink: the span builder's clock moved, as it did live. */
static void replay_tick(void *arg, uint64_t mono_ns)
{
	struct evr_consumer *c = arg;

	evr__hub_flush(c->hub); /* a tick may let many traces go at once */
	if (!c->replay_clock_set) {
		/* The live run's clock, before its first record: traces are touched at the same times. */
		evr__spans_clock_set(c->spans, mono_ns);
		c->replay_clock_set = true;
	}
	evr__spans_tick(c->spans, mono_ns);
	c->st.open_spans = evr__spans_open(c->spans);
}

/* Replay's sink: true once evr_consumer_stop was called (a signal). */
static bool replay_stopping(void *arg)
{
	const struct evr_consumer *c = arg;

	return c->stop != 0;
}

/* Replay's sink: a source's producer died at dead_ns. */
static void replay_dead(void *arg, struct evr_src *s, uint64_t dead_ns)
{
	struct evr_consumer *c = arg;

	evr__hub_flush(c->hub);
	s->pub.dead = true;
	s->dead_ns = dead_ns;
	evr__spans_source_dead(c->spans, s, dead_ns);
	s->dead_ns = 0;
}

/* Replay's sink, raw captures: the open round ends as a live round did (the merge's hints, then delivery). */
static void raw_round_end(struct evr_consumer *c)
{
	if (!c->raw_round)
		return;
	c->raw_round = false;
	for (uint32_t i = 0; i < c->nsrc; i++)
		if (!c->srcs[i]->drained_after_death)
			evr__drain_round_end(c->drain, c->srcs[i], c->raw_now);
	deliver_round(c, c->raw_now);
	evr__hub_flush(c->hub); /* offline nothing is lost to a slow handler */
}

static void replay_round(void *arg, uint64_t mono_ns)
{
	struct evr_consumer *c = arg;

	raw_round_end(c);
	c->raw_round = true;
	c->raw_now = mono_ns;
}

static int replay_run(void *arg, struct evr_src *s, uint32_t lane, uint64_t pos, const void *bytes, size_t len,
		      size_t *bad_off)
{
	struct evr_consumer *c = arg;
	int n = evr__drain_run(c->drain, s, lane, pos, bytes, len, bad_off);

	if (n > 0) {
		c->st.records += (uint64_t)n;
		s->records += (uint64_t)n;
	}
	return n;
}

static void replay_record(void *arg, struct evr_src *s, const struct evr_record *rec)
{
	struct evr_consumer *c = arg;

	evr__drain_record(c->drain, s, rec);
	c->st.records++;
	s->records++;
}

static void replay_full(void *arg, struct evr_src *s, uint32_t lane)
{
	(void)arg;
	s->lanes[lane].full = true;
}

static void replay_pending(void *arg, struct evr_src *s, uint32_t lane, uint64_t count, uint64_t lost, uint64_t first)
{
	struct evr_consumer *c = arg;

	evr__drain_pending(c->drain, s, lane, count, lost, first, c->raw_now);
}

static void replay_died(void *arg, struct evr_src *s, uint64_t mono_ns, bool exited)
{
	(void)arg;
	s->pub.dead = true;
	s->dead_ns = mono_ns;
	s->exited = exited;
}

static void replay_drained(void *arg, struct evr_src *s)
{
	struct evr_consumer *c = arg;

	evr__drain_done(c->drain, s);
}

int evr_consumer_capture_raw(struct evr_consumer *c, const char *path, unsigned flags, char *err, size_t errlen)
{
	int rc;

	if (c->cap || c->raw || c->replaying) {
		snprintf(err, errlen, "a capture is already being written, or the consumer replays one");
		return -EBUSY;
	}
	rc = evr__rawcap_open(&c->raw, path, err, errlen);
	if (rc)
		return rc;
	c->raw_decode = (flags & EVR_CAPTURE_RAW_DECODE) != 0;
	evr__rawcap_tick(c->raw, evr__spans_clock(c->spans)); /* where the replay's span clock starts */
	for (uint32_t i = 0; rc == 0 && i < c->nsrc; i++)
		rc = evr__rawcap_source(c->raw, c->srcs[i]);
	if (rc) {
		snprintf(err, errlen, "cannot write capture %s: %s", path, strerror(-rc));
		evr__rawcap_close(c->raw, &c->st, &(struct evr_reader_stats){ 0 });
		c->raw = NULL;
	}
	return rc;
}

/* The ring readers' counters over every source, for the raw capture's trailer. */
static void reader_totals(const struct evr_consumer *c, struct evr_reader_stats *t)
{
	memset(t, 0, sizeof(*t));
	for (uint32_t i = 0; i < c->nsrc; i++) {
		const struct evr_reader_stats *r = &c->srcs[i]->reader.stats;

		t->delivered += r->delivered;
		t->lost_records += r->lost_records;
		t->lost += r->lost;
		t->pads += r->pads;
		t->skipped_bad += r->skipped_bad;
		t->skipped_stuck += r->skipped_stuck;
		t->skipped_dead += r->skipped_dead;
		t->reclaimed += r->reclaimed;
		t->overrun += r->overrun;
		t->overruns += r->overruns;
	}
}

int evr_consumer_raw_stats(struct evr_consumer *c, struct evr_raw_stats *out)
{
	struct evr_reader_stats t;
	struct evr_rawcap_stats w;

	if (!c->raw)
		return -EINVAL;
	reader_totals(c, &t);
	evr__rawcap_stats(c->raw, &w);
	*out = (struct evr_raw_stats){ .runs = w.runs,
				       .run_bytes = w.run_bytes,
				       .run_records = w.run_records,
				       .singles = w.singles,
				       .delivered = t.delivered,
				       .lost = t.lost,
				       .overrun = t.overrun,
				       .skipped = t.skipped_bad + t.skipped_stuck + t.skipped_dead };
	return 0;
}

int evr_consumer_capture(struct evr_consumer *c, const char *path, char *err, size_t errlen)
{
	int rc;

	if (c->cap || c->raw) {
		snprintf(err, errlen, "a capture is already being written");
		return -EBUSY;
	}
	rc = evr__capture_open(&c->cap, path, err, errlen);
	for (uint32_t i = 0; rc == 0 && i < c->nsrc; i++) {
		/* A source attached before the capture: its run went to the handlers; the capture gets it now. */
		struct evr_rec *run;

		rc = evr__capture_source(c->cap, c->srcs[i]);
		if (rc == 0 && (run = evr__sampler_run_rec(c->sampler, c->srcs[i])) != NULL) {
			rc = evr__capture_rec(c->cap, run);
			evr__rec_free(&c->recs, run);
		}
	}
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

	if (c->raw) {
		struct evr_reader_stats t;

		/* What the raw drain read is all in the file: the trailer adds the counters, the stream goes on. */
		reader_totals(c, &t);
		evr__hub_stats(c->hub, NULL, 0);
		rc = evr__rawcap_close(c->raw, &c->st, &t);
		c->raw = NULL;
		return rc;
	}
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
	struct evr_replay_sink sink = { .arg = c,
					.source = replay_source,
					.rec = replay_rec,
					.tick = replay_tick,
					.dead = replay_dead,
					.stopping = replay_stopping,
					.round = replay_round,
					.run = replay_run,
					.record = replay_record,
					.full = replay_full,
					.pending = replay_pending,
					.died = replay_died,
					.drained = replay_drained,
					.recs = &c->recs,
					.st = &c->st };
	int rc;

	c->replaying = true;
	rc = evr__replay_file(&sink, path, err, errlen);
	raw_round_end(c); /* a raw capture's last round, however the file ended */
	return rc;
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
		rc = evr__plugin_from_spec(spec + 7, &c->o, &h, err, errlen);
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

/* Why a source is let go (enum evr_source_end). */
static int end_reason(const struct evr_src *s)
{
	if (s->faulted)
		return EVR_SOURCE_FAULTED;
	if (s->detached)
		return EVR_SOURCE_DETACHED;
	return s->exited ? EVR_SOURCE_EXITED : EVR_SOURCE_DIED;
}

/*
 * Step 3 of SOURCE LIFETIME (consumer.h): sources whose end marker every
 * handler passed are freed, one RCU grace period after the span index let
 * go of their nodes (a reader of it may still hold one, and its site).
 * Outside a round: the drain thread holds no read-side section here.
 */
static void sources_reap(struct evr_consumer *c)
{
	bool any = false, synced = false;
	uint32_t k = 0;

	for (uint32_t i = 0; i < c->nsrc; i++)
		if (c->srcs[i]->end_sent && __atomic_load_n(&c->srcs[i]->released, __ATOMIC_ACQUIRE))
			any = true; /* pairs with the release in objects.c's free of the marker */
	if (!any)
		return;
	for (uint32_t i = 0; i < c->nsrc; i++) {
		struct evr_src *s = c->srcs[i];

		if (!s->end_sent || !__atomic_load_n(&s->released, __ATOMIC_ACQUIRE)) {
			c->srcs[k++] = s;
			continue;
		}
		if (!synced) {
			synchronize_rcu();
			synced = true;
		}
		if (c->o.on_source_gone)
			c->o.on_source_gone(c->o.on_source_arg, &s->pub, end_reason(s));
		/* Counters that add up what every source did keep what this one did. */
		c->skips_gone += evr__drain_skips(s);
		evr__merge_forget(c->merge, s->pub.index);
		evr__src_close(s);
		free(s);
	}
	c->nsrc = k;
}

/*
 * Step 2 of SOURCE LIFETIME: a source that will give nothing more (its
 * producer gone or detached, every record of it delivered, its death
 * delivered) gets its end marker, queued for every handler after all of it.
 * Not while a capture is written: it names sources by address.
 */
static void sources_end(struct evr_consumer *c)
{
	struct evr_dlv d[64];
	size_t n = 0;

	if (!c->o.retire_sources || c->cap || c->raw || c->replaying)
		return;
	for (uint32_t i = 0; i < c->nsrc; i++) {
		struct evr_src *s = c->srcs[i];
		struct evr__source_end *e;

		if (s->end_sent || !s->drained_after_death || s->dead_ns || !evr__merge_src_empty(c->merge, s->pub.index))
			continue;
		if (!(e = evr__source_end_new(s)))
			break; /* no memory now: the next round tries again */
		s->end_sent = true;
		d[n++] = (struct evr_dlv){ EVR_CB_SOURCE_END, e };
		if (n == sizeof(d) / sizeof(d[0])) {
			evr__hub_deliver_many(c->hub, d, n);
			n = 0;
		}
	}
	if (n)
		evr__hub_deliver_many(c->hub, d, n);
	evr__hub_kick(c->hub);
}

/*
 * The second half of a round at now: everything the merge's watermark lets
 * out goes to the span builder (and the capture), dead producers' open spans
 * end as abandoned, time passes for orphans. Returns whether the round did
 * more than move the span builder's clock: records or a death went out, or
 * the tick had traces waiting out their grace or events held, which time
 * alone lets go (a raw capture keeps such rounds for its replay).
 */
static bool deliver_round(struct evr_consumer *c, uint64_t now)
{
	struct evr_rec *r;
	bool acted;

	evr__spans_round_begin(c->spans); /* one read-side section; handlers get batches */
	r = evr__merge_pop(c->merge, c->o.merge_window_ns, false);
	acted = r != NULL; /* tested once, outside the loop, which is every record's */
	for (; r; r = evr__merge_pop(c->merge, c->o.merge_window_ns, false))
		deliver(c, r);
	for (uint32_t i = 0; i < c->nsrc; i++) {
		struct evr_src *s = c->srcs[i];
		/* Its spans still open end as abandoned once every record of it went through. */
		if (s->drained_after_death && s->dead_ns && evr__merge_src_empty(c->merge, s->pub.index)) {
			deliver_death(c, s);
			acted = true;
		}
	}
	if (c->raw && !acted)
		acted = evr__spans_timed(c->spans);
	evr__spans_tick(c->spans, now);
	if (c->cap && evr__spans_waiting(c->spans))
		capture_clock(c); /* a trace waits out its grace: the replay must tick where this did */
	evr__spans_round_end(c->spans);
	sources_end(c);
	c->st.late = evr__merge_late(c->merge);
	c->st.open_spans = evr__spans_open(c->spans);
	return acted;
}

int evr_consumer_poll(struct evr_consumer *c)
{
	uint64_t now = evr_clock_monotonic_ns(), skips = c->skips_gone;
	int total = 0;
	bool acted;

	if (c->finished)
		return 0;
	if (c->o.retire_sources)
		sources_reap(c);
	if (c->raw)
		evr__rawcap_round(c->raw, now);
	else
		/* Runs of sources joined since the last poll, before anything of them reaches a handler. */
		for (struct evr_rec *run; (run = evr__sampler_run_due(c->sampler)) != NULL;)
			deliver(c, run);
	for (uint32_t i = 0; i < c->nsrc; i++) {
		uint32_t n = c->raw ? evr__drain_source_raw(c->drain, c->srcs[i], now, c->raw, c->raw_decode)
				    : evr__drain_source(c->drain, c->srcs[i], now);

		c->srcs[i]->records += n;
		total += (int)n;
		skips += evr__drain_skips(c->srcs[i]);
	}
	c->st.records += (uint64_t)total;
	c->st.ring_skipped = skips;
	if (!c->raw)
		evr__sampler_poll(c->sampler, c->srcs, c->nsrc, now); /* between the drain and the merge's round */
	acted = deliver_round(c, now);
	if (c->raw)
		evr__rawcap_round_end(c->raw, acted);
	return total;
}

int evr_consumer_detach(struct evr_consumer *c, uint32_t index)
{
	for (uint32_t i = 0; i < c->nsrc; i++) {
		if (c->srcs[i]->pub.index == index) {
			c->srcs[i]->detached = true; /* the next poll stops reading it */
			return 0;
		}
	}
	return -ENOENT;
}

int evr_consumer_sources(struct evr_consumer *c, struct evr_source_stats *out, int n)
{
	for (uint32_t i = 0; i < c->nsrc && (int)i < n; i++) {
		const struct evr_src *s = c->srcs[i];

		out[i] = (struct evr_source_stats){
			.src = &s->pub,
			.records = s->records,
			.lost = s->lost,
			.ring_skipped = evr__drain_skips(s),
			.attached_ns = s->attached_ns,
			.ending = s->detached || s->pub.dead,
		};
	}
	return (int)c->nsrc;
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
		if (c->cap || c->raw)
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

void evr_consumer_end(struct evr_consumer *c)
{
	evr_consumer_finish(c);
	evr__hub_end(c->hub);
	evr__hub_stats(c->hub, NULL, 0); /* errors of the handlers' last calls (on_end) into c->st */
}

void evr_consumer_close(struct evr_consumer *c)
{
	if (!c)
		return;
	if (c->merge && c->spans && c->hub)
		evr_consumer_finish(c);
	if (c->spans)
		evr__spans_free(c->spans);
	if (c->hub)
		evr__hub_close(c->hub);
	for (uint32_t i = 0; i < c->nsrc; i++) {
		struct evr_src *s = c->srcs[i];

		evr__src_close(s);
		/*
		 * Its end marker not let go: a handler abandoned in a stalled call
		 * still holds it and will mark it released when the call returns.
		 * The struct stays for that store (a leak, as the handler's own).
		 */
		if (!s->end_sent || __atomic_load_n(&s->released, __ATOMIC_ACQUIRE))
			free(s);
	}
	free(c->srcs);
	evr__sampler_free(c->sampler);
	evr__merge_free(c->merge);
	evr__drain_free(c->drain);
	evr__rec_pool_fini(&c->recs);
	free(c);
}
