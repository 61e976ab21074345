/*
 * make_corpus.c: writes fuzz_consumer's seed corpus into a directory.
 *
 *   make_corpus DIR
 *
 * Segment seeds are real segments: created in /dev/shm with the ring's own
 * API (the smallest geometry, FUZZ_LANES lanes of 4 KiB and 4 KiB of
 * metadata: 24 KiB an image), filled by real writers with the metadata and
 * record bodies a producer writes (producer/meta.c's maps, the EVR_EVENT /
 * span macros' arrays), read part way by a real reader where a state needs
 * one (a wrapped lane, a LOST record, a skipped and an abandoned shared-lane
 * reservation), then copied byte for byte into DIR and unlinked, with owner
 * and creator pids rewritten to FUZZ_FAKE_PID, a pid no process has, so the
 * seeds read the same wherever the fuzzer runs. Record and msgpack seeds are
 * bodies shaped the same way, decoded against the same sites (fuzz_common.c).
 * Seeds differ from run to run only in clock readings, the tag salt and the
 * creator's uid and pid namespace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>

#include "fuzz_common.h"

static const char *out_dir;
static uint64_t ids[FUZZ_SITES];
static uint32_t clock_kind = EVR_CLOCK_MONOTONIC;
static int seq;

/* ---- bodies ----------------------------------------------------------------------- */

struct enc {
	char p[2048];
	size_t len;
};

static int enc_write(void *data, const char *src, size_t len)
{
	struct enc *e = data;

	if (len > sizeof(e->p) - e->len)
		return -1;
	memcpy(e->p + e->len, src, len);
	e->len += len;
	return 0;
}

static void enc_init(struct enc *e, msgpack_packer *pk)
{
	e->len = 0;
	msgpack_packer_init(pk, e, enc_write);
}

static uint64_t now(void)
{
	return evr_clock_read(clock_kind);
}

/* EVR_EVENT(app.llm, llm.token, model, tokens, temperature, ok, delta); a cut model name as the producer cuts it. */
static void body_token(struct enc *e, uint64_t span, bool cut)
{
	static const char model[] = "gpt-4o-mini-2024-07-18";
	msgpack_packer pk;

	enc_init(e, &pk);
	msgpack_pack_array(&pk, 3 + 5);
	msgpack_pack_uint64(&pk, now());
	msgpack_pack_uint64(&pk, ids[FUZZ_SITE_TOKEN]);
	msgpack_pack_uint64(&pk, span);
	if (cut)
		msgpack_pack_ext_with_body(&pk, model, 6, EVR_EXT_TRUNCATED);
	else
		msgpack_pack_str_with_body(&pk, model, sizeof(model) - 1);
	msgpack_pack_uint64(&pk, 42);
	msgpack_pack_double(&pk, 0.7);
	msgpack_pack_true(&pk);
	msgpack_pack_int64(&pk, -3);
}

static void body_begin(struct enc *e, uint64_t span, uint64_t parent, uint64_t trace, uint64_t *ts)
{
	msgpack_packer pk;

	*ts = now();
	enc_init(e, &pk);
	msgpack_pack_array(&pk, 5 + 1);
	msgpack_pack_uint64(&pk, *ts);
	msgpack_pack_uint64(&pk, ids[FUZZ_SITE_QUERY_BEGIN]);
	msgpack_pack_uint64(&pk, span);
	msgpack_pack_uint64(&pk, parent);
	msgpack_pack_uint64(&pk, trace);
	msgpack_pack_str_with_body(&pk, "what is a ring buffer?", 22);
}

static void body_end(struct enc *e, uint64_t span, uint64_t parent, uint64_t trace, uint64_t start, uint8_t status)
{
	msgpack_packer pk;

	enc_init(e, &pk);
	msgpack_pack_array(&pk, 8 + 2);
	msgpack_pack_uint64(&pk, now());
	msgpack_pack_uint64(&pk, ids[FUZZ_SITE_QUERY_BEGIN]);
	msgpack_pack_uint64(&pk, span);
	msgpack_pack_uint64(&pk, parent);
	msgpack_pack_uint64(&pk, trace);
	msgpack_pack_uint64(&pk, start);
	msgpack_pack_uint64(&pk, status);
	msgpack_pack_uint64(&pk, ids[FUZZ_SITE_QUERY_END]);
	msgpack_pack_uint32(&pk, 3);
	msgpack_pack_str_with_body(&pk, "a bounded queue", 15);
}

static void body_tick(struct enc *e, uint64_t span)
{
	msgpack_packer pk;

	enc_init(e, &pk);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_uint64(&pk, now());
	msgpack_pack_uint64(&pk, ids[FUZZ_SITE_TICK]);
	msgpack_pack_uint64(&pk, span);
}

static void body_thread(struct enc *e, uint32_t tid)
{
	msgpack_packer pk;

	enc_init(e, &pk);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint64(&pk, now());
	msgpack_pack_uint32(&pk, tid);
}

static bool put(struct evr_writer *w, uint32_t type, const struct enc *e)
{
	return evr_writer_write(w, type, e->p, (uint32_t)e->len);
}

/* A root span with an event inside and a child span. */
static void trace(struct evr_writer *w, uint64_t trace_id)
{
	uint64_t root = trace_id << 8, child = root + 1, t_root, t_child;
	struct enc e;

	body_begin(&e, root, 0, trace_id, &t_root);
	put(w, EVR_REC_SPAN_BEGIN, &e);
	body_token(&e, root, false);
	put(w, EVR_REC_EVENT, &e);
	body_begin(&e, child, root, trace_id, &t_child);
	put(w, EVR_REC_SPAN_BEGIN, &e);
	body_token(&e, child, true);
	put(w, EVR_REC_EVENT, &e);
	body_end(&e, child, root, trace_id, t_child, 1);
	put(w, EVR_REC_SPAN_END, &e);
	body_end(&e, root, 0, trace_id, t_root, 0);
	put(w, EVR_REC_SPAN_END, &e);
}

/* ---- files ------------------------------------------------------------------------------ */

static void write_file(const char *name, uint8_t mode, const void *a, size_t alen, const void *b, size_t blen)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", out_dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(&mode, 1, 1, f) != 1 || fwrite(a, 1, alen, f) != alen ||
	    (blen && fwrite(b, 1, blen, f) != blen) || fclose(f) != 0) {
		fprintf(stderr, "make_corpus: cannot write %s\n", path);
		exit(1);
	}
}

static void seg_open_meta(struct evr_segment *seg, char *name, size_t len, uint32_t lanes, uint64_t meta_bytes)
{
	struct evr_segment_config cfg = { .lanes = lanes, .lane_bytes = FUZZ_LANE_BYTES,
					  .meta_bytes = meta_bytes, .clock_kind = clock_kind,
					  .program = "fuzz-seed" };
	char err[EVR_ERR_MAX], tag[32];

	snprintf(tag, sizeof(tag), "fuzzseed-%d", seq++);
	evr_segment_name(name, len, getpid(), tag);
	if (evr_segment_create(seg, name, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "make_corpus: %s\n", err);
		exit(1);
	}
	if (fuzz_meta_define(seg, ids) != 0) {
		fprintf(stderr, "make_corpus: metadata does not fit in %llu bytes\n", (unsigned long long)meta_bytes);
		exit(1);
	}
}

static void seg_open(struct evr_segment *seg, char *name, size_t len, uint32_t lanes)
{
	seg_open_meta(seg, name, len, lanes, FUZZ_META_BYTES);
}

/* Saves the image under name with its mode byte, its pids rewritten to FUZZ_FAKE_PID. */
static void seg_snapshot(const struct evr_segment *seg, const char *name, uint8_t mode)
{
	uint8_t *copy = malloc(seg->bytes);
	struct evr_seg_header *h = (struct evr_seg_header *)(void *)copy;
	struct evr_lane *lanes = (struct evr_lane *)(void *)(copy + EVR_HEADER_BYTES);

	if (!copy)
		exit(1);
	memcpy(copy, seg->base, seg->bytes);
	for (uint32_t i = 0; i < seg->lane_count; i++)
		if ((uint32_t)(lanes[i].owner >> 32) == h->creator_pid)
			lanes[i].owner = (uint64_t)FUZZ_FAKE_PID << 32 | (uint32_t)lanes[i].owner;
	h->creator_pid = FUZZ_FAKE_PID;
	h->consumer_pid = 0;
	for (uint32_t k = 0; k < EVR_CONSUMER_SLOTS_MAX; k++)
		h->slots[k].pid = 0;
	write_file(name, mode, copy, seg->bytes, NULL, 0);
	free(copy);
}

/* The last snapshot of a segment: saved, then removed from /dev/shm. */
static void seg_save(struct evr_segment *seg, const char *shm, const char *name, uint8_t mode)
{
	seg_snapshot(seg, name, mode);
	evr_segment_close(seg);
	evr_segment_unlink(shm);
}

static void open_writer(struct evr_writer *w, struct evr_segment *seg, uint32_t tid, unsigned flags)
{
	if (evr_writer_open(w, seg, (uint32_t)getpid(), tid, flags) != 0) {
		fprintf(stderr, "make_corpus: cannot open a writer\n");
		exit(1);
	}
}

/* Every record kind a producer writes, on an exclusive lane and on the shared one. */
static void seed_basic(void)
{
	struct evr_segment seg;
	struct evr_writer w, sw;
	char shm[128];
	struct enc e;

	seg_open(&seg, shm, sizeof(shm), FUZZ_LANES);
	open_writer(&w, &seg, FUZZ_TID, 0);
	open_writer(&sw, &seg, FUZZ_TID + 1, EVR_WRITER_FORCE_SHARED);
	trace(&w, 1);
	body_tick(&e, 0);
	put(&w, EVR_REC_EVENT, &e);
	body_token(&e, 0, false);
	put(&sw, EVR_REC_EVENT, &e);
	body_tick(&e, 0);
	put(&sw, EVR_REC_EVENT, &e);
	trace(&sw, 2);
	evr_writer_close(&w);
	evr_writer_close(&sw);
	seg_save(&seg, shm, "seg-basic", FUZZ_SEGMENT);
	/* The same, read "from now" by a consumer that finds the producer gone. */
	seg_open(&seg, shm, sizeof(shm), FUZZ_LANES);
	open_writer(&w, &seg, FUZZ_TID, 0);
	trace(&w, 3);
	seg_save(&seg, shm, "seg-from-now-dead", FUZZ_SEGMENT | FUZZ_FLAG_FROM_NOW | FUZZ_FLAG_DEAD);
}

/* A lane that filled, was read, dropped more, and wrapped: PAD and LOST records, a head mid-lane. */
static void seed_wrap_lost(void)
{
	struct evr_segment seg;
	struct evr_reader r;
	struct evr_record rec;
	struct evr_writer w;
	static uint8_t buf[EVR_BODY_MAX];
	char shm[128];
	struct enc e;
	int dropped = 0;

	seg_open(&seg, shm, sizeof(shm), FUZZ_LANES);
	open_writer(&w, &seg, FUZZ_TID, 0);
	body_tick(&e, 0); /* shifts the records so that the LOST record does not fill the lane's end exactly */
	put(&w, EVR_REC_EVENT, &e);
	for (int i = 0; dropped < 5 && i < 1000; i++) {
		body_token(&e, (uint64_t)i, i & 1);
		if (!put(&w, EVR_REC_EVENT, &e))
			dropped++;
	}
	if (evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST) != 0)
		exit(1);
	for (int i = 0; i < 20 && evr_reader_next(&r, 0, &rec, buf, sizeof(buf)) == 1; i++)
		;
	evr_reader_release(&r, 0);
	evr_reader_fini(&r);
	for (int i = 0; i < 12; i++) {
		body_tick(&e, (uint64_t)i);
		put(&w, EVR_REC_EVENT, &e);
	}
	trace(&w, 4);
	seg_save(&seg, shm, "seg-wrap-lost", FUZZ_SEGMENT);
}

/*
 * The shared lane's reservation states: one skipped by a reader (R4) and
 * given up by its writer (S4, ABANDONED), committed records after it, and a
 * reservation still BUSY at the end. Read with every owner alive.
 */
static void seed_shared_states(void)
{
	struct evr_segment seg;
	struct evr_writer a, b;
	struct evr_reader r;
	struct evr_record rec;
	static uint8_t buf[EVR_BODY_MAX];
	uint32_t shared = FUZZ_LANES - 1;
	char shm[128];
	struct enc e;
	void *p;

	seg_open(&seg, shm, sizeof(shm), FUZZ_LANES);
	open_writer(&a, &seg, FUZZ_TID, EVR_WRITER_FORCE_SHARED);
	open_writer(&b, &seg, FUZZ_TID + 1, EVR_WRITER_FORCE_SHARED);
	body_tick(&e, 1);
	put(&a, EVR_REC_EVENT, &e);
	body_token(&e, 1, false);
	p = evr_writer_reserve(&a, (uint32_t)e.len); /* S1, S2: BUSY */
	if (!p || evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST) != 0)
		exit(1);
	r.stuck_timeout_ns = 0;
	for (int i = 0; i < 4; i++)
		while (evr_reader_next(&r, shared, &rec, buf, sizeof(buf)) == 1)
			;
	/* Between R4 and S4: a later reader must hold the SKIPPED record's room while its writer lives. */
	seg_snapshot(&seg, "seg-shared-skipped", FUZZ_SEGMENT_LIVE);
	memcpy(p, e.p, e.len);
	evr_writer_commit(&a, (uint32_t)e.len, EVR_REC_EVENT); /* S3 loses: S4 stores ABANDONED */
	evr_reader_release(&r, shared);
	evr_reader_fini(&r);
	trace(&b, 5);
	body_tick(&e, 2);
	if (!evr_writer_reserve(&b, (uint32_t)e.len)) /* left BUSY: a writer stalled or dead mid-record */
		exit(1);
	seg_snapshot(&seg, "seg-shared-live", FUZZ_SEGMENT_LIVE);
	/* The same with the process gone: its BUSY reservation is stepped over at once. */
	seg_save(&seg, shm, "seg-shared-dead", FUZZ_SEGMENT);
}

/*
 * Writers that died: an exclusive lane whose last reservation was never
 * committed (its bytes written, its word not), a metadata entry whose length
 * was stored but never its commit, and two lanes only (the smallest segment).
 */
static void seed_dead(void)
{
	struct evr_segment seg;
	struct evr_meta_entry *m;
	struct evr_writer w;
	char shm[128];
	struct enc e;
	uint64_t off;
	void *p;

	seg_open(&seg, shm, sizeof(shm), 2);
	open_writer(&w, &seg, FUZZ_TID, 0);
	trace(&w, 6);
	body_token(&e, 0, false);
	p = evr_writer_reserve(&w, (uint32_t)e.len);
	if (!p)
		exit(1);
	memcpy(p, e.p, e.len);
	/* M1 and the length, but the writer "died" before M2. */
	off = evr_faa_64(&seg.hdr->meta_used, sizeof(*m) + 40);
	m = (struct evr_meta_entry *)(void *)(seg.meta + off);
	m->len = 40;
	m->kind = EVR_META_SITE;
	seg_save(&seg, shm, "seg-dead-writers", FUZZ_SEGMENT | FUZZ_FLAG_DEAD);
}

/*
 * More sites than the consumer's first site table holds (it grows), events
 * of the last ones, a dispatcher declared twice (the later one wins) and a
 * deep dispatcher path: 8 KiB of metadata.
 */
static void seed_many_sites(void)
{
	struct evr_segment seg;
	struct evr_writer w;
	uint64_t extra[40];
	char shm[128];
	struct enc e;
	msgpack_packer pk;

	seg_open_meta(&seg, shm, sizeof(shm), FUZZ_LANES, 2 * FUZZ_META_BYTES);
	for (uint32_t i = 0; i < 40; i++)
		if (fuzz_meta_extra_site(&seg, i, &extra[i]) != 0)
			exit(1);
	if (fuzz_meta_dispatcher(&seg, "app.extra", false) != 0 || fuzz_meta_dispatcher(&seg, "app.extra", true) != 0)
		exit(1);
	open_writer(&w, &seg, FUZZ_TID, 0);
	for (uint32_t i = 30; i < 40; i++) {
		enc_init(&e, &pk);
		msgpack_pack_array(&pk, 3);
		msgpack_pack_uint64(&pk, now());
		msgpack_pack_uint64(&pk, extra[i]);
		msgpack_pack_uint64(&pk, 0);
		put(&w, EVR_REC_EVENT, &e);
	}
	trace(&w, 7);
	seg_save(&seg, shm, "seg-many-sites", FUZZ_SEGMENT_LIVE);
}

/* ---- bodies alone ----------------------------------------------------------------------- */

static void record_seed(const char *name, uint8_t type, uint8_t lane, const struct enc *e)
{
	uint8_t head[2] = { type, lane };

	write_file(name, FUZZ_RECORD, head, sizeof(head), e->p, e->len);
}

static void msgpack_seed(const char *name, uint8_t depth, const void *p, size_t len)
{
	write_file(name, FUZZ_MSGPACK, &depth, 1, p, len);
}

static void seed_bodies(void)
{
	struct evr_segment seg;
	uint64_t start;
	uint8_t lost[32];
	char shm[128];
	msgpack_packer pk;
	struct enc e;
	uint32_t n;

	/* The sites' ids: the fuzzer appends the same entries in the same order. */
	seg_open(&seg, shm, sizeof(shm), FUZZ_LANES);
	evr_segment_close(&seg);
	evr_segment_unlink(shm);

	body_token(&e, 7, false);
	record_seed("rec-event", EVR_REC_EVENT, 0, &e);
	msgpack_seed("msgpack-event", 4, e.p, e.len);
	body_token(&e, 7, true);
	record_seed("rec-event-truncated", EVR_REC_EVENT, 1, &e);
	body_tick(&e, 0);
	record_seed("rec-event-nofields", EVR_REC_EVENT, 2, &e);
	body_begin(&e, 9, 8, 1, &start);
	record_seed("rec-span-begin", EVR_REC_SPAN_BEGIN, 0, &e);
	body_end(&e, 9, 8, 1, start, 0);
	record_seed("rec-span-end", EVR_REC_SPAN_END, 0, &e);
	msgpack_seed("msgpack-span-end", 2, e.p, e.len);
	body_thread(&e, FUZZ_TID);
	record_seed("rec-thread", EVR_REC_THREAD, 0, &e);
	n = evr_lost_encode(lost, now(), 17, now() - 1000);
	memcpy(e.p, lost, n);
	e.len = n;
	record_seed("rec-lost", EVR_REC_LOST, 1, &e);
	msgpack_seed("msgpack-lost", 1, e.p, e.len);

	/* A site's metadata map, nested 3 deep, and containers of every width. */
	enc_init(&e, &pk);
	msgpack_pack_map(&pk, 2);
	msgpack_pack_str_with_body(&pk, "fields", 6);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 2);
	msgpack_pack_str_with_body(&pk, "name", 4);
	msgpack_pack_str_with_body(&pk, "query", 5);
	msgpack_pack_str_with_body(&pk, "type", 4);
	msgpack_pack_bin_with_body(&pk, "\x01\x02", 2);
	msgpack_pack_str_with_body(&pk, "kind", 4);
	msgpack_pack_float(&pk, 1.5f);
	msgpack_seed("msgpack-map", 6, e.p, e.len);
	enc_init(&e, &pk);
	msgpack_pack_array(&pk, 16); /* array16 */
	for (int i = 0; i < 16; i++)
		msgpack_pack_int64(&pk, -(int64_t)((uint64_t)1 << (i * 4 % 62)));
	msgpack_seed("msgpack-array16", 2, e.p, e.len);
	enc_init(&e, &pk);
	msgpack_pack_map(&pk, 16); /* map16 */
	for (int i = 0; i < 16; i++) {
		msgpack_pack_uint8(&pk, (uint8_t)i);
		msgpack_pack_ext_with_body(&pk, "0123456789abcdef", (size_t)i + 1, (int8_t)i);
	}
	msgpack_seed("msgpack-map16-ext", 2, e.p, e.len);
}

/* ---- capture files (mode FUZZ_CAPTURE) ---------------------------------------------------------- */

static void pack_s(msgpack_packer *pk, const char *str)
{
	msgpack_pack_str_with_body(pk, str, strlen(str));
}

static void pack_kv(msgpack_packer *pk, const char *k, uint64_t v)
{
	pack_s(pk, k);
	msgpack_pack_uint64(pk, v);
}

/*
 * A raw capture of seg as `evring record --raw` writes one (consumer/
 * capture_raw.c): its shape, lanes, clock, metadata, then rounds of runs
 * (evr_reader_next_run) and the records between them, the death, the trailer.
 */
static void raw_capture(struct evr_segment *seg, struct evr_reader *r, msgpack_packer *pk, bool first)
{
	static uint8_t run_buf[FUZZ_LANE_BYTES], body[EVR_BODY_MAX];
	struct evr_meta_view v;
	struct evr_record rec;
	struct evr_run run;
	uint64_t cursor = 0;

	if (first) {
		msgpack_pack_map(pk, 4);
		pack_s(pk, "format");
		pack_s(pk, "evring-capture");
		pack_kv(pk, "version", 3);
		pack_kv(pk, "created_ns", now());
		pack_s(pk, "raw");
		msgpack_pack_true(pk);
		msgpack_pack_array(pk, 2);
		pack_s(pk, "source");
		msgpack_pack_map(pk, 10);
		pack_kv(pk, "index", 0);
		pack_kv(pk, "trace_id_high", 1);
		pack_kv(pk, "pid", FUZZ_FAKE_PID);
		pack_s(pk, "program");
		pack_s(pk, "fuzz-seed");
		pack_s(pk, "cmdline");
		pack_s(pk, "fuzz-seed --raw");
		pack_s(pk, "shm");
		pack_s(pk, "/evring.1.fuzz-seed");
		pack_kv(pk, "lane_count", seg->lane_count);
		pack_kv(pk, "lane_bytes", seg->lane_bytes);
		pack_kv(pk, "salt", seg->salt);
		pack_kv(pk, "clock_kind", seg->clock_kind);
		msgpack_pack_array(pk, 3);
		pack_s(pk, "lanes");
		msgpack_pack_uint32(pk, 0);
		msgpack_pack_array(pk, seg->lane_count);
		for (uint32_t i = 0; i < seg->lane_count; i++)
			msgpack_pack_uint32(pk, i + 1 < seg->lane_count ? FUZZ_TID : 0);
		msgpack_pack_array(pk, 7);
		pack_s(pk, "clock");
		msgpack_pack_uint32(pk, 0);
		msgpack_pack_uint64(pk, seg->hdr->clock_anchor_ticks);
		msgpack_pack_uint64(pk, seg->hdr->clock_anchor_mono_ns);
		msgpack_pack_uint64(pk, seg->hdr->clock_mult ? seg->hdr->clock_mult : (uint64_t)1 << EVR_CLOCK_SHIFT);
		msgpack_pack_int64(pk, (int64_t)(seg->hdr->clock_anchor_real_ns - seg->hdr->clock_anchor_mono_ns));
		msgpack_pack_uint64(pk, seg->hdr->clock_anchor_mono_ns);
		while (evr_meta_next(seg, &cursor, &v, false) == 1) {
			msgpack_pack_array(pk, 5);
			pack_s(pk, "meta");
			msgpack_pack_uint32(pk, 0);
			msgpack_pack_uint32(pk, v.kind);
			msgpack_pack_uint64(pk, v.id);
			pk->callback(pk->data, (const char *)v.payload, v.len); /* the map's bytes as written */
		}
		msgpack_pack_array(pk, 2);
		pack_s(pk, "tick");
		msgpack_pack_uint64(pk, now());
	}
	msgpack_pack_array(pk, 2);
	pack_s(pk, "round");
	msgpack_pack_uint64(pk, now());
	for (uint32_t l = 0; l < seg->lane_count; l++) {
		for (;;) {
			if (evr_reader_next_run(r, l, run_buf, sizeof(run_buf), &run) == 1) {
				msgpack_pack_array(pk, 5);
				pack_s(pk, "run");
				msgpack_pack_uint32(pk, 0);
				msgpack_pack_uint32(pk, l);
				msgpack_pack_uint64(pk, run.pos);
				msgpack_pack_bin_with_body(pk, run_buf, run.bytes);
				continue;
			}
			if (evr_reader_next(r, l, &rec, body, sizeof(body)) != 1)
				break;
			msgpack_pack_array(pk, 7);
			pack_s(pk, "record");
			msgpack_pack_uint32(pk, 0);
			msgpack_pack_uint32(pk, l);
			msgpack_pack_uint64(pk, rec.pos);
			msgpack_pack_uint32(pk, rec.type);
			msgpack_pack_uint32(pk, rec.tid);
			msgpack_pack_bin_with_body(pk, rec.body, rec.body_len);
		}
		evr_reader_release(r, l);
	}
}

/* Raw captures of a segment whose lanes wrapped and dropped, read in two rounds; and the same cut short. */
static void seed_captures(void)
{
	struct evr_segment seg;
	struct evr_writer w, sw;
	struct evr_reader r;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char shm[128];
	struct enc e;

	seg_open(&seg, shm, sizeof(shm), FUZZ_LANES);
	open_writer(&w, &seg, FUZZ_TID, 0);
	open_writer(&sw, &seg, FUZZ_TID + 1, EVR_WRITER_FORCE_SHARED);
	if (evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST) != 0)
		exit(1);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	trace(&w, 1);
	trace(&sw, 2);
	for (int i = 0; i < 200; i++) { /* past the lane: drops, a LOST record after the round */
		body_token(&e, (uint64_t)i, i & 1);
		put(&w, EVR_REC_EVENT, &e);
	}
	raw_capture(&seg, &r, &pk, true);
	for (int i = 0; i < 40; i++) {
		body_tick(&e, (uint64_t)i);
		put(&w, EVR_REC_EVENT, &e);
		put(&sw, EVR_REC_EVENT, &e);
	}
	trace(&w, 3);
	raw_capture(&seg, &r, &pk, false);
	msgpack_pack_array(&pk, 4);
	pack_s(&pk, "died");
	msgpack_pack_uint32(&pk, 0);
	msgpack_pack_uint64(&pk, now());
	msgpack_pack_false(&pk);
	msgpack_pack_array(&pk, 2);
	pack_s(&pk, "drained");
	msgpack_pack_uint32(&pk, 0);
	msgpack_pack_array(&pk, 2);
	pack_s(&pk, "stats");
	msgpack_pack_map(&pk, 1);
	pack_kv(&pk, "records", r.stats.delivered);
	write_file("cap-raw", FUZZ_CAPTURE, sb.data, sb.size, NULL, 0);
	write_file("cap-raw-cut", FUZZ_CAPTURE, sb.data, sb.size * 2 / 3, NULL, 0);
	msgpack_sbuffer_destroy(&sb);
	evr_reader_fini(&r);
	evr_writer_close(&w);
	evr_writer_close(&sw);
	evr_segment_close(&seg);
	evr_segment_unlink(shm);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: make_corpus DIR\n");
		return 2;
	}
	out_dir = argv[1];
	seed_basic();
	seed_wrap_lost();
	seed_shared_states();
	seed_dead();
	seed_many_sites();
	seed_bodies();
	seed_captures();
	return 0;
}
