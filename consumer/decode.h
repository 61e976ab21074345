/*
 * decode.h: the stage after the drain. Takes one record as the ring reader
 * copied it out of a lane (struct evr_record) and gives a struct evr_rec
 * (rec.h): its times on the consumer's clocks, its site from the source's
 * tables (source.h), its values as a fields block (objects.h). Everything
 * is checked against the record kind and the site's declared fields; a
 * record that fails is refused, for the caller to count and skip.
 */
#ifndef EVR_CONSUMER_DECODE_H
#define EVR_CONSUMER_DECODE_H

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

#include "rec.h"
#include "source.h"

/* What decoding needs across records: a msgpack zone reused for every body, and the counters. */
struct evr_decoder {
	msgpack_zone zone;
	struct evr_consumer_stats *st; /* bad metadata entries met while looking a site up */
};

int evr__decoder_init(struct evr_decoder *d, struct evr_consumer_stats *st); /* 0 or -ENOMEM */
void evr__decoder_fini(struct evr_decoder *d);

/* Decodes one EVENT, SPAN_BEGIN, SPAN_END or LOST record into *out. Returns 0 or -EBADMSG. */
int evr__decode(struct evr_decoder *d, struct evr_src *s, const struct evr_record *r, struct evr_rec *out);

/* A THREAD record ([ts, tid]): the records of its exclusive lane from here on are tid's. Returns 0 or -EBADMSG. */
/*
 * Whether a count of records dropped, read from the segment (a LOST record,
 * or a dead producer's lane counters), is one a lane could have dropped: at
 * least 1, and at most one record a nanosecond since the machine booted (a
 * drop reads the clock and counts with an atomic store or add: none takes
 * under a nanosecond). A count beyond it is a corrupt or hostile segment's,
 * counted as bad rather than added to what was lost.
 */
bool evr__lost_plausible(uint64_t count);

int evr__decode_thread(struct evr_decoder *d, struct evr_src *s, const struct evr_record *r);

/* A site's values (n msgpack objects, as a record body holds them) as a fields block, or NULL when they do not fit the site. */
struct evr_fields *evr__fields_decode(const struct evr_site_info *si, const msgpack_object *vals, uint32_t n);

#endif /* EVR_CONSUMER_DECODE_H */
