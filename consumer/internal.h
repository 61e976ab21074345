/*
 * internal.h: what the consumer's stages share; not installed.
 *
 *   attach.c    find, open, validate and claim segments (struct evr_src)
 *   decode.c    metadata (sites, dispatchers, threads) and record bodies -> struct evr_rec
 *   merge.c     per-lane queues and the time-ordered merge with a watermark
 *   spans.c     span trees: open spans, traces, orphans, deaths, eviction
 *   objects.c   the immutable, reference-counted objects handlers receive
 *   hub.c       handler registry (RCU), delivery, flush, close (hub_internal.h, hub_queue.h)
 *   hub_thread.c the handler threads
 *   watchdog.c  per-call timeouts: stalls, skips, recovery, on_error
 *   plugin.c    handler plug-ins (dlopen, versioned entry point)
 *   capture.c   capture files: written from the delivered stream, replayed through it
 *   consumer.c  the drain loop that ties them together
 *   handlers/   the built-in handlers
 *
 * Ownership: a struct evr_rec owns one reference to its fields; the stage
 * that consumes a rec releases it with evr__rec_free. Objects handed to the
 * hub are referenced once per handler queue they enter.
 */
#ifndef EVRING_CONSUMER_INTERNAL_H
#define EVRING_CONSUMER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <evring/consumer.h>
#include <evring/ring.h>

struct evr_consumer;

/* ---- sources (attach.c, decode.c) ----------------------------------------- */

struct evr_dispatcher_info {
	char *path;
	bool propagate;
};

struct evr_thread_info {
	uint32_t tid;
	uint32_t lane;
	char name[32];
};

struct evr_src {
	struct evr_source pub; /* what handlers see; first, so the two convert */
	struct evr_segment seg;
	struct evr_reader reader;
	struct evr_clock_map clock;
	uint64_t meta_cursor;
	bool slot_held;

	/* Sites by id: open addressing, power-of-two capacity. */
	struct evr_site_info **sites;
	uint32_t sites_cap, sites_n;
	struct evr_dispatcher_info *dispatchers;
	uint32_t dispatchers_n, dispatchers_cap;
	struct evr_thread_info *threads;
	uint32_t threads_n, threads_cap;

	uint64_t next_liveness_ns; /* when to look at the producer's pid again */
	uint64_t next_refine_ns;   /* when to refine the clock mapping */
	uint64_t dead_ns;	   /* CLOCK_MONOTONIC when its death was seen */
	bool drained_after_death;
	struct evr_lane_state *lanes;
	char program[64], cmdline[512], shm_name[128];
};

/* Per lane: the thread whose records are being read (from EVR_REC_THREAD records). */
struct evr_lane_state {
	uint32_t tid;
};

/* Opens, validates and claims one segment; fills *s. Returns 0 or -errno with err set. */
int evr__src_open(struct evr_src *s, const char *shm_name, uint32_t index, unsigned flags, char *err,
		  size_t errlen);
void evr__src_close(struct evr_src *s);
void evr__src_tables_free(struct evr_src *s);

/* Calls fn for each /dev/shm/evring.<pid>.<name> matching pid (0: any) and name (NULL: any). Returns matches or -errno. */
int evr__shm_each(uint32_t pid, const char *name, int (*fn)(void *arg, const char *shm, uint32_t pid), void *arg);
/* The error for a pid with no segment: -ESRCH (no such process) or -ENOENT, with err set. */
int evr__no_segment(uint32_t pid, char *err, size_t errlen);

/* Reads metadata entries appended since the last call. Returns entries read or -errno. */
int evr__src_meta_refresh(struct evr_src *s, struct evr_consumer_stats *st);

const struct evr_site_info *evr__src_site(const struct evr_src *s, uint64_t id);
const struct evr_thread_info *evr__src_thread(const struct evr_src *s, uint32_t tid);

/* True when records of dispatcher `from` reach handlers of `to` (a prefix of it), honouring propagate. */
bool evr__src_dispatch_reaches(const struct evr_src *s, const char *from, const char *to);

/* ---- decoded records (decode.c) ---------------------------------------------- */

struct evr_rec {
	uint8_t type;	    /* EVR_REC_EVENT, _SPAN_BEGIN, _SPAN_END, _LOST */
	uint8_t status;	    /* SPAN_END: 0 ok, 1 dropped */
	bool late;	    /* set by the merge */
	struct evr_src *src;
	uint32_t lane, tid;
	uint64_t mono_ns, real_ns;		/* the record's timestamp */
	const struct evr_site_info *site;	/* EVENT, BEGIN: its site; END: the begin site (NULL if unknown) */
	const struct evr_site_info *end_site;	/* END: the end call site */
	uint64_t span_id, parent_id, trace_id;	/* EVENT: span_id only */
	uint64_t start_mono_ns, start_real_ns;	/* END */
	uint64_t lost_count, lost_first_real_ns; /* LOST */
	struct evr_fields *fields;		/* EVENT, BEGIN, END: its values (one reference) */
	bool fields_in_event;			/* fields came from evr__event_fields_new */
	struct evr_rec *next;			/* free list / queues */
};

/*
 * Decodes one record body (copied out of the lane) into *out. Validates the
 * msgpack structure before msgpack-c allocates anything for it, the element
 * count and types against the body kind and the site's field list. Returns
 * 0, or -EBADMSG (counted by the caller and skipped).
 */
int evr__decode(struct evr_consumer *c, struct evr_src *s, const struct evr_record *r, struct evr_rec *out);

/*
 * True when buf[0..len) holds one well-formed msgpack object whose every
 * container count fits the bytes that remain, nested at most max_depth deep.
 * Allocates nothing: it runs before msgpack-c's unpacker sizes a zone.
 */
bool evr__msgpack_sane(const uint8_t *buf, size_t len, unsigned max_depth);

/* True for msgpack_unpack's results that yielded an object (trailing padding allowed). */
bool evr__unpacked(int rc);

struct msgpack_zone;
struct msgpack_zone *evr__consumer_zone(struct evr_consumer *c); /* reused for every body */
struct evr_consumer_stats *evr__consumer_stats(struct evr_consumer *c);

struct evr_rec *evr__rec_alloc(struct evr_consumer *c);
void evr__rec_free(struct evr_consumer *c, struct evr_rec *r);

/* ---- merge (merge.c) ------------------------------------------------------------- */

struct evr_merge;
struct evr_merge *evr__merge_new(uint32_t lanes_hint);
void evr__merge_free(struct evr_merge *m);
/* The queue of one lane of one source (created on first use). */
int evr__merge_push(struct evr_merge *m, uint32_t src, uint32_t lane, struct evr_rec *r);
/* Tells the merge a lane was polled at mono_ns and found empty: its future records come after mono_ns - window. */
void evr__merge_idle(struct evr_merge *m, uint32_t src, uint32_t lane, uint64_t mono_ns);
/* The next record in time order whose time is at or below the watermark, or NULL. flush: ignore the watermark. */
struct evr_rec *evr__merge_pop(struct evr_merge *m, uint64_t window_ns, bool flush);
uint64_t evr__merge_late(const struct evr_merge *m);
/* True when no record of this source waits in the merge. */
bool evr__merge_src_empty(const struct evr_merge *m, uint32_t src);

/* ---- objects (objects.c) ---------------------------------------------------------- */

/*
 * Objects and fields blocks come from per-thread pools (see objects.c): any
 * thread may drop the last reference, none of them calls free() on another
 * thread's behalf.
 */

/* A fields block with room for n fields and `bytes` of string data after them. */
struct evr_fields *evr__fields_new(uint32_t n, size_t bytes, char **strings);
/*
 * The same, embedded in the block of the event that will carry them (one
 * allocation per event): a reference to these fields is a reference to that
 * event, and evr__event_new given a rec holding them takes the rec's
 * reference over. Decoding an EVENT record uses this.
 */
struct evr_fields *evr__event_fields_new(uint32_t n, size_t bytes, char **strings);
struct evr_fields *evr__fields_empty(void); /* a shared, never-freed empty block */
void evr__fields_ref(struct evr_fields *f);
void evr__fields_unref(struct evr_fields *f);

/* The event of r; takes over r's fields (r->fields becomes NULL) when they are embedded. */
struct evr_event *evr__event_new(struct evr_rec *r, uint64_t trace_id);
/* n more references at once (one atomic add); the hub's, for an object several queues take. */
void evr__obj_ref_n(const void *obj, uint32_t n);
struct evr_span_rec *evr__span_new(void);
struct evr_trace *evr__trace_new(uint32_t nspans);
struct evr_lost *evr__lost_new(const struct evr_rec *r);

/* ---- span trees (spans.c) ------------------------------------------------------------ */

struct evr_hub;
struct evr_spans;

struct evr_spans *evr__spans_new(const struct evr_consumer_opts *o, struct evr_hub *hub,
				 struct evr_consumer_stats *st);
void evr__spans_free(struct evr_spans *sp);

/*
 * Takes one record in time order (its reference), updates the trees and hands
 * the resulting objects to the hub: events (with their span's trace id),
 * span begins, span ends, whole traces, losses.
 */
void evr__spans_record(struct evr_spans *sp, struct evr_consumer *c, struct evr_rec *r);

/*
 * A round: the records (and ticks, deaths, detach) between begin and end
 * share one RCU read-side section, and what they deliver goes to the hub in
 * batches (every few hundred objects, and at end) instead of at each call's
 * return. Outside a round each call is its own section and delivers before
 * it returns. Nothing between begin and end may wait for a grace period
 * (evr__hub_remove, synchronize_rcu). Drain thread.
 */
void evr__spans_round_begin(struct evr_spans *sp);
void evr__spans_round_end(struct evr_spans *sp);

/* Time passes (CLOCK_MONOTONIC ns): orphans past their grace are delivered. */
void evr__spans_tick(struct evr_spans *sp, uint64_t now_mono_ns);

/* A producer died (seen at now_mono_ns, after its lanes were drained): its open spans end as abandoned. */
void evr__spans_source_dead(struct evr_spans *sp, const struct evr_src *src, uint64_t now_mono_ns);

/* The consumer detaches: open spans go out as EVR_SPAN_DETACHED, pending traces as incomplete. */
void evr__spans_detach(struct evr_spans *sp, uint64_t now_mono_ns);

/* Open spans of a source, for live views. */
uint64_t evr__spans_open(const struct evr_spans *sp);

/*
 * The span builder's clock (CLOCK_MONOTONIC ns: the latest tick, death or
 * detach time), which stamps when traces were last touched; and whether a
 * trace waits for its grace period, so that a tick could release it. A
 * capture records the clock so that a replay keeps the same time; a replay
 * sets it once, before its first record.
 */
uint64_t evr__spans_clock(const struct evr_spans *sp);
void evr__spans_clock_set(struct evr_spans *sp, uint64_t mono_ns);
bool evr__spans_waiting(struct evr_spans *sp);

/* ---- handler hub (hub.c) --------------------------------------------------------------- */

/*
 * Registers the calling thread with liburcu once, for the rest of its life
 * (unregistered at thread exit). The drain thread calls it before any
 * read-side section: liburcu aborts when a thread registers twice.
 */
void evr__rcu_reader(void);

enum evr_cb { EVR_CB_EVENT, EVR_CB_SPAN_BEGIN, EVR_CB_SPAN_END, EVR_CB_TRACE_END, EVR_CB_LOST };

struct evr_hub *evr__hub_new(const struct evr_consumer_opts *o, struct evr_consumer_stats *st);

/* Adds (copies) a handler, starts its thread. Returns its id or -errno (ctx then stays the caller's). Any thread. */
int evr__hub_add(struct evr_hub *hub, const struct evr_handler *h);
int evr__hub_remove(struct evr_hub *hub, int id);

/*
 * Offers an object to every handler whose filters take it (each queue that
 * takes it holds a reference; a full queue or a stalled handler skips it and
 * counts). The caller keeps its own reference. Drain thread only.
 */
void evr__hub_deliver(struct evr_hub *hub, enum evr_cb cb, const void *obj);

/* An object offered to the handlers, and the callback it is for. */
struct evr_dlv {
	enum evr_cb cb;
	const void *obj;
};

/*
 * Offers n objects, in order, as evr__hub_deliver does, but in batches: per
 * handler one publication, one fence and one wake-up check per batch rather
 * than per object. Takes over the caller's reference to each object (handed
 * to a queue, or dropped). Drain thread only.
 */
void evr__hub_deliver_many(struct evr_hub *hub, const struct evr_dlv *d, size_t n);

/*
 * evr__hub_deliver_many wakes a sleeping handler only once its queue holds
 * a thousand items or so (or a quarter of a smaller queue); this wakes every
 * handler given items since (one futex wake per sleeping handler). Call it when a batch of deliveries is over (the end
 * of a round): until then a handler may sleep on items queued for it.
 * Drain thread only.
 */
void evr__hub_kick(struct evr_hub *hub);

/* Waits until every handler that is not stalled has emptied its queue. */
void evr__hub_flush(struct evr_hub *hub);

/* Stops every handler: drain, on_close, destroy; stalled ones are abandoned. Frees the hub. */
void evr__hub_close(struct evr_hub *hub);

int evr__hub_stats(struct evr_hub *hub, struct evr_handler_stats *out, int n);

/* ---- built-in handlers (handlers/) and plug-ins (plugin.c) ------------------------------ */

/*
 * Fills *h for a built-in spec ("tail", "debug", "tokens", "stats",
 * "jsonl[=PATH]", "chrome=PATH"). Returns 0, or -EINVAL / -errno with err set.
 */
int evr__builtin_handler(const char *spec, FILE *out, struct evr_handler *h, char *err, size_t errlen);

/* Loads "PATH.so[:ARG]" and fills *h through its EVR_HANDLER_ENTRY. */
int evr__plugin_handler(const char *spec, struct evr_handler *h, char *err, size_t errlen);

/* ---- capture files (capture.c) ------------------------------------------------------------ */

struct msgpack_object;

/* Applies one metadata entry (a decoded payload map) to a source. Returns 0 or -EBADMSG. */
int evr__src_meta_apply(struct evr_src *s, uint32_t kind, uint64_t id, const struct msgpack_object *obj);

/* A site's values (n msgpack objects, as a record body holds them) as a fields block, or NULL when they do not fit the site. */
struct evr_fields *evr__fields_decode(const struct evr_site_info *si, const struct msgpack_object *vals, uint32_t n);

struct evr_capture;

/* Creates (truncates) a capture file and writes its header. Returns 0 or -errno with err set. */
int evr__capture_open(struct evr_capture **out, const char *path, char *err, size_t errlen);
/* A source joins the stream (written once, with the metadata it holds so far). */
int evr__capture_source(struct evr_capture *cap, struct evr_src *s);
/* One record, in the order the merge delivers it (metadata it needs goes first). */
int evr__capture_rec(struct evr_capture *cap, const struct evr_rec *r);
/* The span builder's clock moved to mono_ns (a poll round's tick, or before a round's first record). */
int evr__capture_tick(struct evr_capture *cap, uint64_t mono_ns);
/* A source's producer died; its open spans end as abandoned at dead_ns. */
int evr__capture_dead(struct evr_capture *cap, const struct evr_src *s, uint64_t dead_ns);
/* Writes the trailer (the consumer's counters) and closes. Returns 0 or the first write error (-errno). */
int evr__capture_close(struct evr_capture *cap, const struct evr_consumer_stats *st);

/*
 * Replays a capture file through span building and the handlers. Returns the
 * records replayed, or -errno with err set (-EBADMSG names the bad entry,
 * -EPROTO a capture version this consumer does not read).
 */
int evr__replay_file(struct evr_consumer *c, const char *path, char *err, size_t errlen);
/* For replay: a source read back from a capture joins the consumer (which frees it). Returns its index or -errno. */
int evr__consumer_adopt(struct evr_consumer *c, struct evr_src *s);
/* For replay: a record, in delivery order, goes to span building and the handlers. */
void evr__consumer_replay_rec(struct evr_consumer *c, struct evr_rec *r);
/* For replay: a source's producer died at dead_ns. */
void evr__consumer_replay_dead(struct evr_consumer *c, struct evr_src *s, uint64_t dead_ns);
/* For replay: the span builder's clock moved to mono_ns, as it did live. */
void evr__consumer_replay_tick(struct evr_consumer *c, uint64_t mono_ns);
/* For replay: true once evr_consumer_stop was called (a signal). */
bool evr__consumer_stopping(const struct evr_consumer *c);

#endif /* EVRING_CONSUMER_INTERNAL_H */
