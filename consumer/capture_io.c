/*
 * capture_io.c: the file under both capture writers (capture.c, decoded;
 * capture_raw.c, raw) and the entries they write alike. A capture is a
 * msgpack stream: a header map, then one array per entry whose first element
 * names its kind (docs/FORMAT.md). The bytes written here are part of the
 * format: changing them alters both kinds of capture.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack/fbuffer.h>

#include "capture_io.h"
#include "mpcheck.h"

void evr__capio_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

void evr__capio_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	evr__capio_str(pk, k);
	evr__capio_str(pk, v ? v : "");
}

void evr__capio_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	evr__capio_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

void evr__capio_bool(msgpack_packer *pk, bool b)
{
	if (b)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

int evr__capio_check(struct evr_capio *io)
{
	if (!io->err && ferror(io->f))
		io->err = -EIO;
	return io->err;
}

int evr__capio_open(struct evr_capio *io, const char *path, uint32_t version, bool raw, char *err, size_t errlen)
{
	struct timespec ts;

	memset(io, 0, sizeof(*io));
	if (!msgpack_zone_init(&io->zone, 4096)) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	io->f = fopen(path, "wb");
	if (!io->f) {
		int e = errno;
		snprintf(err, errlen, "cannot write capture %s: %s", path, strerror(e));
		msgpack_zone_destroy(&io->zone);
		return -e;
	}
	setvbuf(io->f, NULL, _IOFBF, 1 << 20);
	msgpack_packer_init(&io->pk, io->f, msgpack_fbuffer_write);
	clock_gettime(CLOCK_REALTIME, &ts);
	msgpack_pack_map(&io->pk, raw ? 4 : 3);
	evr__capio_kv_str(&io->pk, "format", "evring-capture");
	evr__capio_kv_u64(&io->pk, "version", version);
	evr__capio_kv_u64(&io->pk, "created_ns", (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
	if (raw) {
		evr__capio_str(&io->pk, "raw");
		msgpack_pack_true(&io->pk);
	}
	return 0;
}

void evr__capio_entry(struct evr_capio *io, uint32_t n, const char *kind)
{
	if (io->before_entry)
		io->before_entry(io->ctx);
	msgpack_pack_array(&io->pk, n);
	evr__capio_str(&io->pk, kind);
}

/*
 * The entry is checked as the consumer checks it, on a private copy (the
 * producer may still be writing the segment), and only the one map's exact
 * bytes are written (trailing bytes would read back as entries).
 */
void evr__capio_meta(struct evr_capio *io, uint32_t index, const struct evr_meta_view *v)
{
	msgpack_object obj;
	size_t off = 0;

	if (v->len > io->copy_cap) {
		uint8_t *t = realloc(io->copy, v->len);
		if (!t) {
			io->err = io->err ? io->err : -ENOMEM;
			return;
		}
		io->copy = t;
		io->copy_cap = v->len;
	}
	memcpy(io->copy, v->payload, v->len);
	msgpack_zone_clear(&io->zone);
	if (!evr__msgpack_sane(io->copy, v->len, 6) ||
	    !evr__unpacked(msgpack_unpack((const char *)io->copy, v->len, &off, &io->zone, &obj)) ||
	    (obj.type != MSGPACK_OBJECT_MAP && !(v->kind == EVR_META_PARAM && obj.type == MSGPACK_OBJECT_ARRAY)))
		return;
	evr__capio_entry(io, 5, "meta");
	msgpack_pack_uint32(&io->pk, index);
	msgpack_pack_uint32(&io->pk, v->kind);
	msgpack_pack_uint64(&io->pk, v->id);
	msgpack_fbuffer_write(io->f, (const char *)io->copy, off);
}

void evr__capio_sync_meta(struct evr_capio *io, const struct evr_src *s, uint32_t index, uint64_t *cursor)
{
	struct evr_meta_view v;
	int rc;

	/* Relaxed: only whether there is more to look at; each entry is published by M2 and read through M3. */
	if (evr_ld_64(&s->seg.hdr->meta_used) == *cursor)
		return;
	while ((rc = evr_meta_next(&s->seg, cursor, &v, s->pub.dead)) != 0) {
		if (rc == 1)
			evr__capio_meta(io, index, &v);
		else if (rc != -ESTALE) /* -ESTALE: never finished by its writer, the consumer counts it */
			break;
	}
}

void evr__capio_source(struct evr_capio *io, const struct evr_src *s, uint32_t index, uint32_t extra)
{
	msgpack_packer *pk = &io->pk;

	evr__capio_entry(io, 2, "source");
	msgpack_pack_map(pk, 6 + extra);
	evr__capio_kv_u64(pk, "index", index);
	evr__capio_kv_u64(pk, "trace_id_high", s->trace_id_high);
	evr__capio_kv_u64(pk, "pid", s->pub.pid);
	evr__capio_kv_str(pk, "program", s->pub.program);
	evr__capio_kv_str(pk, "cmdline", s->pub.cmdline);
	evr__capio_kv_str(pk, "shm", s->pub.shm_name);
}

void evr__capio_death(struct evr_capio *io, const char *kind, uint32_t index, uint64_t mono_ns, bool exited)
{
	evr__capio_entry(io, 4, kind);
	msgpack_pack_uint32(&io->pk, index);
	msgpack_pack_uint64(&io->pk, mono_ns);
	evr__capio_bool(&io->pk, exited);
}

void evr__capio_stats(struct evr_capio *io, const struct evr_consumer_stats *st, uint64_t lost, uint32_t extra)
{
	msgpack_packer *pk = &io->pk;

	evr__capio_entry(io, 2, "stats");
	msgpack_pack_map(pk, 7 + extra);
	evr__capio_kv_u64(pk, "records", st->records);
	evr__capio_kv_u64(pk, "events", st->events);
	evr__capio_kv_u64(pk, "spans_ended", st->spans_ended);
	evr__capio_kv_u64(pk, "lost", lost);
	evr__capio_kv_u64(pk, "late", st->late);
	evr__capio_kv_u64(pk, "bad", st->bad);
	evr__capio_kv_u64(pk, "ring_skipped", st->ring_skipped);
}

int evr__capio_close(struct evr_capio *io)
{
	int rc = evr__capio_check(io);

	if (fclose(io->f) != 0 && !rc)
		rc = -errno;
	msgpack_zone_destroy(&io->zone);
	free(io->copy);
	return rc;
}
