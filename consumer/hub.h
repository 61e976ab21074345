/*
 * hub.h: the stage after the span builder. Takes objects (objects.h) and
 * gives each to every handler whose filters take it, through one bounded
 * queue and one thread per handler, each call under the watchdog's timeout.
 * Its files are in hub/ (hub.c the registry and delivery, hub_thread.c a
 * handler's thread and memory, watchdog.c supervised calls); what they share
 * is hub/hub_internal.h.
 */
#ifndef EVR_CONSUMER_HUB_H
#define EVR_CONSUMER_HUB_H

#include <stddef.h>
#include <stdint.h>

#include <evring/consumer.h>

/*
 * Registers the calling thread with liburcu once, for the rest of its life
 * (unregistered at thread exit). The drain thread calls it before any
 * read-side section: liburcu aborts when a thread registers twice.
 */
void evr__rcu_reader(void);

/*
 * The callbacks; EVR_CB_SKIPPED is the hub's own (a gap it marks in a
 * handler's queue), never offered. EVR_CB_SAMPLE is one callback slot for
 * the two items of the sampler (metrics, runs): the handler's thread calls
 * on_metric or on_run by the object's kind; like records they are filtered
 * by no dispatcher, queued, skipped and counted as records are. EVR_CB_SOURCE_END is offered with a
 * struct evr__source_end (objects.h): every handler's queue takes it, past
 * its filters, and like a loss it is never skipped (held until there is
 * room); the handler's thread calls on_source_end with its source.
 */
enum evr_cb {
	EVR_CB_EVENT,
	EVR_CB_SPAN_BEGIN,
	EVR_CB_SPAN_END,
	EVR_CB_TRACE_END,
	EVR_CB_LOST,
	EVR_CB_SKIPPED,
	EVR_CB_SOURCE_END,
	EVR_CB_SAMPLE /* a metric sample or a run (struct evr_metric, evr_run_info: by obj.kind) */
};

struct evr_hub *evr__hub_new(const struct evr_consumer_opts *o, struct evr_consumer_stats *st);

/* Adds (copies) a handler, starts its thread. Returns its id or -errno (ctx then stays the caller's). Any thread. */
int evr__hub_add(struct evr_hub *hub, const struct evr_handler *h);
int evr__hub_remove(struct evr_hub *hub, int id);

/*
 * Offers an object to every handler whose filters take it (each queue that
 * takes it holds a reference; a full queue or a stalled handler skips it,
 * counts, and marks the gap for a handler with on_skipped; a loss is never
 * skipped but held and merged until there is room). The caller keeps its
 * own reference. Drain thread only.
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

/*
 * Has every handler that is not stalled run on_end / on_close now, after
 * what is queued for it, and waits for them (a stalled one, or one that
 * overruns, is not waited for). Their ctx stays: their stats callbacks
 * still run (an exporter's counters after its last flush); close then runs
 * only destroy. Nothing may be delivered after it. Drain thread.
 */
void evr__hub_end(struct evr_hub *hub);

int evr__hub_stats(struct evr_hub *hub, struct evr_handler_stats *out, int n);

#endif /* EVR_CONSUMER_HUB_H */
