/*
 * fuzz_common.h: what the fuzzer and its seed generator must agree on.
 *
 * The fuzz input's first byte picks a mode (below). Segment images are
 * whole segments, header first, exactly as a producer leaves them in
 * /dev/shm. Record and msgpack inputs are decoded against the fixed set of
 * metadata entries fuzz_meta_define appends: the generator appends the same
 * entries in the same order into its segments, so a site's id (its entry's
 * offset in the metadata area) is the same number on both sides, and the
 * generator's record seeds name sites the fuzzer knows.
 */
#ifndef EVR_FUZZ_COMMON_H
#define EVR_FUZZ_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include <evring/ring.h>

/*
 * Byte 0 of an input. Bits 0-1 are the mode; in the segment modes, the bits
 * above are flags.
 *
 *   SEGMENT      [0x00 | flags] segment image: owners judged alive or dead by /proc
 *   SEGMENT_LIVE [0x01 | flags] segment image: every owner alive (a foreign pid namespace)
 *   MSGPACK      [0x02] [depth] body: evr__msgpack_sane against msgpack_unpack
 *   RECORD       [0x03] [type] [lane] body: one record body through evr__decode
 *   CAPTURE      [0x83] a capture file (`evring record`, raw or decoded) through the replay,
 *                its raw runs through the drain's decode stage and the merge
 */
enum fuzz_mode { FUZZ_SEGMENT = 0, FUZZ_SEGMENT_LIVE = 1, FUZZ_MSGPACK = 2, FUZZ_RECORD = 3 };
#define FUZZ_CAPTURE 0x83u /* FUZZ_RECORD with bit 7: a whole capture file */

enum fuzz_flags {
	FUZZ_FLAG_DEAD = 1u << 2,     /* the producer is gone: evr_meta_next steps over dead writers' entries */
	FUZZ_FLAG_FROM_NOW = 1u << 3, /* attach "from now" instead of from the oldest record */
	FUZZ_FLAG_LOW = 1u << 4,      /* the image starts at the lower guard (page-aligned, as mmap places
					 it) instead of ending at the upper one */
	FUZZ_FLAG_PATIENT = 1u << 5,  /* the reader's default stuck timeout (1 s): it waits instead of skipping */
	FUZZ_FLAG_REWRITE = 1u << 6,  /* between the two drain rounds the producer writes the whole image
					 back: consumer fields, CAS-ed words, counters */
};

/* The sites fuzz_meta_define declares, in order. */
enum fuzz_site {
	FUZZ_SITE_TOKEN,      /* event "llm.token" in app.llm: model str, tokens u64, temperature f64, ok bool, delta i64 */
	FUZZ_SITE_QUERY_BEGIN, /* span_begin "query" in app: query str (content) */
	FUZZ_SITE_QUERY_END,  /* span_end "query" in app: results u32, answer str (content) */
	FUZZ_SITE_TICK,	      /* event "tick" in app.engine: no fields */
	FUZZ_SITES
};

#define FUZZ_LANES 3u
#define FUZZ_LANE_BYTES 4096u
#define FUZZ_META_BYTES 4096u
#define FUZZ_TID 4242u
#define FUZZ_FAKE_PID 4194305u /* past PID_MAX_LIMIT (2^22): no process has it */

/*
 * Appends the process, dispatcher, thread and site entries, shaped as
 * producer/meta.c writes them, and returns the sites' ids. Returns 0 or the
 * -errno of evr_meta_append.
 */
int fuzz_meta_define(struct evr_segment *seg, uint64_t site_ids[FUZZ_SITES]);

/* A dispatcher entry, {path, propagate}. Returns 0 or the -errno of evr_meta_append. */
int fuzz_meta_dispatcher(struct evr_segment *seg, const char *path, bool propagate);

/* Site "extra.<i>": an event without fields in app.extra.deep. Returns 0 or the -errno of evr_meta_append. */
int fuzz_meta_extra_site(struct evr_segment *seg, uint32_t i, uint64_t *id);

#endif /* EVR_FUZZ_COMMON_H */
