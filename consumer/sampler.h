/*
 * sampler.h: runs and system metrics of the followed processes
 * (sampler.c, its /proc and ELF readers in procinfo.c). Takes the sources
 * the consumer follows and the time; gives items of the stream (struct
 * evr_run_info, struct evr_metric), each in a rec of type EVR_REC_SAMPLE:
 *
 *   - a run when a source joins (evr__sampler_run_due hands it out at the
 *     next poll, before that poll drains anything: the caller gives it to
 *     the span builder at once, so that it reaches every handler before
 *     any record of its source), and again, with the same
 *     run_id and the whole set of params, whenever the producer's
 *     EVR_META_PARAM entries change (queued on the merge like samples);
 *   - every interval, one sample per metric name of each live source,
 *     queued on the merge in a queue of the source's own (lane
 *     EVR_SAMPLER_LANE), so they meet the records in time order;
 *   - once a consumer session, at the first poll with a source, the host's samples
 *     (src NULL, merge source EVR_SAMPLER_HOST).
 *
 * Reading /proc is cheap (a few small files per process per interval) and
 * happens on the drain thread between rounds, never while a round holds
 * the merge. A file that cannot be read leaves its samples out and counts
 * (metrics_unreadable); nothing fails. Counters: metrics, metrics_unreadable,
 * runs, run_params_bad. Drain thread only.
 */
#ifndef EVR_CONSUMER_SAMPLER_H
#define EVR_CONSUMER_SAMPLER_H
#include <stdint.h>

#include <evring/consumer.h>

#include "merge.h"
#include "rec.h"
#include "source.h"

#define EVR_SAMPLER_LANE UINT32_MAX /* a source's queue of samples in the merge */
#define EVR_SAMPLER_HOST UINT32_MAX /* the merge source of the host's samples */

struct evr_sampler;

struct evr_sampler *evr__sampler_new(const struct evr_consumer_opts *o, struct evr_merge *m,
				     struct evr_rec_pool *recs, struct evr_consumer_stats *st);
void evr__sampler_free(struct evr_sampler *sm);

/*
 * A live source joined (its metadata read once): reads its params and takes
 * the baseline of its counters; its run is due (evr__sampler_run_due).
 * Returns 0 or -ENOMEM.
 */
int evr__sampler_join(struct evr_sampler *sm, struct evr_src *s, uint64_t now_mono);

/*
 * The rec of a run due (a source joined since the last call), or NULL when
 * none is. Call until NULL before draining: each goes to the span builder
 * ahead of its source's records.
 */
struct evr_rec *evr__sampler_run_due(struct evr_sampler *sm);

/*
 * Between rounds: samples each source of srcs whose interval has passed
 * (not dead, not detached), queues a run update for each whose params
 * changed, and forgets sources no longer listed.
 */
void evr__sampler_poll(struct evr_sampler *sm, struct evr_src *const *srcs, uint32_t n, uint64_t now_mono);

/*
 * The rec of a source's run as it stands (its id, its params now), for a
 * capture that begins after the run went out: NULL when the source is not
 * the sampler's, its run is still due (the capture will see it go), or out
 * of memory.
 */
struct evr_rec *evr__sampler_run_rec(struct evr_sampler *sm, const struct evr_src *s);

/*
 * The sampler's own name of a metric (a static string) and its unit, for a
 * name read back from a capture; NULL for a name it never gives.
 */
const char *evr__metric_name(const char *name, size_t len, const char **unit);

#endif /* EVR_CONSUMER_SAMPLER_H */
