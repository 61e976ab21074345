/*
 * capture_io.h: what both capture writers share (capture_io.c): the file and
 * its msgpack packer, the header, the entries whose shape is the same in a
 * decoded capture (capture.c) and a raw one (capture_raw.c): metadata
 * entries, a source's identity, a death, the consumer's counters in the
 * trailer. Each writer keeps its own entries and its own sources; it passes
 * the index a source has in its capture. docs/FORMAT.md gives the format.
 * Drain thread (one writer, one thread).
 */
#ifndef EVR_CONSUMER_CAPTURE_IO_H
#define EVR_CONSUMER_CAPTURE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <msgpack.h>

#include <evring/consumer.h>

#include "source.h"

/*
 * One capture file being written. Everything is the owning writer's; the
 * hook is set once after evr__capio_open and never changes.
 */
struct evr_capio {
	FILE *f;
	msgpack_packer pk;
	msgpack_zone zone; /* checks metadata entries before they are written */
	uint8_t *copy;	   /* their private copies */
	size_t copy_cap;
	int err; /* the first error, -errno */
	/* Called before every entry evr__capio_entry begins (a raw capture writes its round there); may be NULL. */
	void (*before_entry)(void *ctx);
	void *ctx;
};

/* Writes a msgpack string; a key and its string value ("" for NULL); a key and its unsigned value; a bool. */
void evr__capio_str(msgpack_packer *pk, const char *s);
void evr__capio_kv_str(msgpack_packer *pk, const char *k, const char *v);
void evr__capio_kv_u64(msgpack_packer *pk, const char *k, uint64_t v);
void evr__capio_bool(msgpack_packer *pk, bool b);

/*
 * Creates (truncates) the file at path and writes the header map: format,
 * version, created_ns, and "raw": true when raw. Returns 0, the header
 * written or its write error kept in io->err (evr__capio_check), or -errno
 * with err set and nothing left to close.
 */
int evr__capio_open(struct evr_capio *io, const char *path, uint32_t version, bool raw, char *err, size_t errlen);

/* The first error so far (a write error of the file found here), or 0. */
int evr__capio_check(struct evr_capio *io);

/* An entry begins: its array of n elements, the first the string naming its kind. */
void evr__capio_entry(struct evr_capio *io, uint32_t n, const char *kind);

/*
 * ["meta", index, kind, id, {payload}]: a metadata entry as the producer
 * wrote it, if the live consumer could use it; otherwise nothing.
 */
void evr__capio_meta(struct evr_capio *io, uint32_t index, const struct evr_meta_view *v);

/* The metadata entries s gained since *cursor (the capture's own cursor over them), in order. */
void evr__capio_sync_meta(struct evr_capio *io, const struct evr_src *s, uint32_t index, uint64_t *cursor);

/*
 * ["source", {index, trace_id_high, pid, program, cmdline, shm, ...}]: the
 * entry and the map's first six pairs; the writer adds its extra pairs.
 */
void evr__capio_source(struct evr_capio *io, const struct evr_src *s, uint32_t index, uint32_t extra);

/* [kind, index, mono_ns, exited]: a source's producer died ("dead" in a capture, "died" in a raw one). */
void evr__capio_death(struct evr_capio *io, const char *kind, uint32_t index, uint64_t mono_ns, bool exited);

/*
 * ["stats", {records, events, spans_ended, lost, late, bad, ring_skipped, ...}]:
 * the trailer's entry and its first seven pairs (lost as given); the writer
 * adds its extra pairs.
 */
void evr__capio_stats(struct evr_capio *io, const struct evr_consumer_stats *st, uint64_t lost, uint32_t extra);

/* Closes the file and frees what io holds. Returns 0 or the first error (-errno). */
int evr__capio_close(struct evr_capio *io);

#endif /* EVR_CONSUMER_CAPTURE_IO_H */
