/*
 * test_stress.c: writer threads emitting events and nested spans through the
 * producer API while a reader thread drains the segment and decodes every
 * record, as a consumer would. Checks: every record decodes and names a
 * registered site; no span id is ever given twice; every END carries what its
 * BEGIN said, or its BEGIN is missing and a loss was reported; every event
 * names a span that began or was lost; and delivered + lost == emitted,
 * exactly. Run with more writers than exclusive lanes (the shared lane takes
 * the rest) and with a lane each. ThreadSanitizer runs it with fewer records.
 */
#include <sched.h>

#include "producer_test.h"

#define WRITERS 6
/* Rounds per writer; each emits RECORDS_PER_ROUND records. ThreadSanitizer runs fewer. */
#ifdef EVR_UNDER_TSAN
#define ROUNDS 4000u
#define YIELD_EVERY 4u /* the reader, slower under TSan, needs more turns to read a fair share */
#else
#define ROUNDS 10000u
#define YIELD_EVERY 32u
#endif
#define RECORDS_PER_ROUND 8u
#define WINDOW 64u /* records written and not yet read before writers yield: less than a lane holds */

struct run {
	unsigned writers;
	int writers_done;
	int stop;
	uint64_t emitted_all; /* records emitted so far, all writers */
	uint64_t accounted;   /* records the reader has seen delivered or reported lost */
	uint64_t emitted[WRITERS];
	uint64_t first_span[WRITERS], last_span[WRITERS];
};

struct writer_arg {
	struct run *run;
	uint32_t idx;
};

/*
 * Writers outrun the reader by far (a dropped record costs a few ns): left
 * alone they would drop nearly everything and the reader would decode little.
 * So in three phases of four, while many records wait in the lanes unread, a
 * writer yields; in the fourth it runs free, the lanes fill, and the drop and
 * LOST paths run. Unread = emitted - (read + reported lost + lost not yet
 * reported). The wait is bounded, so a bug here cannot hang the test.
 */
static void throttle(struct run *run, struct evr_segment *seg, uint32_t round)
{
	if ((round / 512) % 4 == 3)
		return;
	for (int spins = 0; spins < 100000; spins++) {
		uint64_t unread = __atomic_load_n(&run->emitted_all, __ATOMIC_RELAXED) -
				  __atomic_load_n(&run->accounted, __ATOMIC_RELAXED);
		for (uint32_t l = 0; l < seg->lane_count; l++)
			unread -= evr_ld_64(&seg->lanes[l].lost_pending);
		if ((int64_t)unread < (int64_t)WINDOW)
			return;
		sched_yield();
	}
}

static void *writer_main(void *p)
{
	struct writer_arg *a = p;
	struct run *run = a->run;
	struct evr_segment *seg = evr_segment_current();
	uint64_t emitted = 0;

	for (uint32_t i = 0; i < ROUNDS; i++) {
		struct evr_span root, child;

		root = EVR_SPAN_BEGIN("stress", "root", EVR_U32("writer", a->idx), EVR_U32("round", i));
		if (i == 0)
			run->first_span[a->idx] = root.id;
		EVR_EVENT("stress", "in_root", EVR_U32("writer", a->idx), EVR_STR("note", "a few bytes of text"));
		child = EVR_SPAN_BEGIN("stress", "child", EVR_U64("i", i));
		EVR_EVENT("stress", "in_child", EVR_F64("x", i * 0.5));
		{
			EVR_SPAN_SCOPED(leaf, "stress", "leaf");
		}
		if (i % 7 == 3)
			EVR_SPAN_DROP(child, EVR_STR("error", "injected"));
		else
			EVR_SPAN_END(child, EVR_BOOL("ok", true));
		run->last_span[a->idx] = root.id;
		EVR_SPAN_END(root, EVR_U32("children", 1));
		emitted += RECORDS_PER_ROUND;
		__atomic_add_fetch(&run->emitted_all, RECORDS_PER_ROUND, __ATOMIC_RELAXED);
		if (i % YIELD_EVERY == YIELD_EVERY - 1)
			throttle(run, seg, i);
	}
	run->emitted[a->idx] = emitted;
	__atomic_add_fetch(&run->writers_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* ---- the reader ---------------------------------------------------------- */

/* An open-addressing set of span ids with what their BEGIN said. */
struct span_info {
	uint64_t id, parent, trace, start, site;
	bool ended;
};

struct reader {
	struct evr_segment *seg;
	struct run *run;
	struct span_info *spans;
	size_t cap;
	uint64_t meta_cursor;
	uint64_t *sites; /* site ids known from the metadata area, and their kinds */
	uint32_t *site_kind;
	size_t nsites, capsites;
	/* Results, asserted by the test thread. */
	uint64_t delivered, lost, lost_records, begins, ends, events;
	uint64_t orphan_ends, orphan_events, orphan_parents, dup_begins, dup_ends, mismatched_ends, bad;
	char first_bad[256];
};

static void bad(struct reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad(struct reader *r, const char *fmt, ...)
{
	va_list ap;

	if (r->bad++ == 0) {
		va_start(ap, fmt);
		vsnprintf(r->first_bad, sizeof(r->first_bad), fmt, ap);
		va_end(ap);
	}
}

static struct span_info *span_slot(struct reader *r, uint64_t id)
{
	size_t i = (size_t)((id * 0x9e3779b97f4a7c15ull) >> 20) & (r->cap - 1);

	while (r->spans[i].id && r->spans[i].id != id)
		i = (i + 1) & (r->cap - 1);
	return &r->spans[i];
}

static void sites_catch_up(struct reader *r)
{
	struct evr_meta_view v;

	while (evr_meta_next(r->seg, &r->meta_cursor, &v, false) == 1) {
		msgpack_unpacked u;
		size_t off = 0;
		const msgpack_object *kind;

		if (v.kind != EVR_META_SITE)
			continue;
		msgpack_unpacked_init(&u);
		if (msgpack_unpack_next(&u, (const char *)v.payload, v.len, &off) != MSGPACK_UNPACK_SUCCESS) {
			bad(r, "site entry %llu does not decode", (unsigned long long)v.id);
			msgpack_unpacked_destroy(&u);
			continue;
		}
		kind = pt_map_get(&u.data, "kind");
		if (r->nsites == r->capsites) {
			r->capsites = r->capsites ? 2 * r->capsites : 64;
			r->sites = realloc(r->sites, r->capsites * sizeof(*r->sites));
			r->site_kind = realloc(r->site_kind, r->capsites * sizeof(*r->site_kind));
		}
		r->sites[r->nsites] = v.id;
		r->site_kind[r->nsites++] = pt_str_is(kind, "event")	    ? EVR_REC_EVENT
					    : pt_str_is(kind, "span_begin") ? EVR_REC_SPAN_BEGIN
									    : EVR_REC_SPAN_END;
		msgpack_unpacked_destroy(&u);
	}
}

/* The kind of a site id (EVR_REC_*), or 0 when no entry has it. */
static uint32_t site_kind(struct reader *r, uint64_t id)
{
	struct evr_meta_view v;

	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < r->nsites; i++)
			if (r->sites[i] == id)
				return r->site_kind[i];
		sites_catch_up(r); /* the entry was published before the record that names it */
	}
	/* The in-order scan is held at an entry another writer has not published yet: read ahead. */
	if (evr_meta_read(r->seg, id, &v) == 1 && v.kind == EVR_META_SITE) {
		msgpack_unpacked u;
		size_t off = 0;
		uint32_t kind = 0;

		msgpack_unpacked_init(&u);
		if (msgpack_unpack_next(&u, (const char *)v.payload, v.len, &off) == MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *k = pt_map_get(&u.data, "kind");
			kind = pt_str_is(k, "event")	    ? EVR_REC_EVENT
			       : pt_str_is(k, "span_begin") ? EVR_REC_SPAN_BEGIN
			       : pt_str_is(k, "span_end")   ? EVR_REC_SPAN_END
							    : 0;
		}
		msgpack_unpacked_destroy(&u);
		return kind;
	}
	return 0;
}

static void on_record(struct reader *r, const struct evr_record *rec, msgpack_unpacked *u)
{
	const msgpack_object *v;
	size_t off = 0;
	uint32_t n, head;
	struct span_info *s;

	if (msgpack_unpack_next(u, (const char *)rec->body, rec->body_len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    u->data.type != MSGPACK_OBJECT_ARRAY) {
		bad(r, "type %u record at lane %u pos %llu does not decode", rec->type, rec->lane,
		    (unsigned long long)rec->pos);
		return;
	}
	v = u->data.via.array.ptr;
	n = u->data.via.array.size;
	if (rec->type == EVR_REC_LOST) {
		r->lost += v[1].via.u64;
		r->lost_records++;
		return;
	}
	if (rec->type == EVR_REC_THREAD) {
		if (n != 2 || rec->lane + 1 == r->seg->lane_count)
			bad(r, "a THREAD record with %u elements on lane %u", n, rec->lane);
		return;
	}
	head = pt_head(rec->type);
	if (rec->type < EVR_REC_EVENT || rec->type > EVR_REC_SPAN_END || n < head) {
		bad(r, "type %u record with %u elements", rec->type, n);
		return;
	}
	for (uint32_t i = 0; i < head; i++) {
		if (v[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
			bad(r, "type %u record: element %u is not an unsigned integer", rec->type, i);
			return;
		}
	}
	if (site_kind(r, v[PT_SITE].via.u64) != (rec->type == EVR_REC_SPAN_END ? EVR_REC_SPAN_BEGIN : rec->type) ||
	    (rec->type == EVR_REC_SPAN_END && site_kind(r, v[PT_END_SITE].via.u64) != EVR_REC_SPAN_END)) {
		bad(r, "type %u record names site %llu, not one of its kind", rec->type,
		    (unsigned long long)v[PT_SITE].via.u64);
		return;
	}
	r->delivered++;
	switch (rec->type) {
	case EVR_REC_EVENT:
		r->events++;
		if (v[PT_SPAN].via.u64 && !span_slot(r, v[PT_SPAN].via.u64)->id)
			r->orphan_events++; /* its span's begin was lost */
		break;
	case EVR_REC_SPAN_BEGIN:
		r->begins++;
		s = span_slot(r, v[PT_SPAN].via.u64);
		if (s->id) {
			r->dup_begins++;
			break;
		}
		*s = (struct span_info){ v[PT_SPAN].via.u64, v[PT_PARENT].via.u64, v[PT_TRACE].via.u64,
					 v[PT_TS].via.u64,  v[PT_SITE].via.u64,	  false };
		if (s->parent && !span_slot(r, s->parent)->id)
			r->orphan_parents++; /* the parent's begin was lost */
		break;
	case EVR_REC_SPAN_END:
		r->ends++;
		s = span_slot(r, v[PT_SPAN].via.u64);
		if (!s->id) {
			r->orphan_ends++;
			break;
		}
		if (s->ended)
			r->dup_ends++;
		s->ended = true;
		if (s->parent != v[PT_PARENT].via.u64 || s->trace != v[PT_TRACE].via.u64 ||
		    s->start != v[PT_START].via.u64 || s->site != v[PT_SITE].via.u64 || v[PT_STATUS].via.u64 > 1)
			r->mismatched_ends++;
		break;
	}
}

static uint64_t drain_once(struct reader *r, struct evr_reader *rd)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_record rec;
	msgpack_unpacked u;
	uint64_t n = 0;

	msgpack_unpacked_init(&u);
	for (uint32_t lane = 0; lane < r->seg->lane_count; lane++) {
		while (evr_reader_next(rd, lane, &rec, buf, sizeof(buf)) == 1) {
			on_record(r, &rec, &u);
			n++;
		}
		evr_reader_release(rd, lane);
	}
	__atomic_store_n(&r->run->accounted, r->delivered + r->lost, __ATOMIC_RELAXED);
	msgpack_unpacked_destroy(&u);
	return n;
}

static void *reader_main(void *p)
{
	struct reader *r = p;
	struct evr_reader rd;

	if (evr_reader_init(&rd, r->seg, EVR_READ_FROM_OLDEST) != 0) {
		bad(r, "evr_reader_init failed");
		return NULL;
	}
	while (!__atomic_load_n(&r->run->stop, __ATOMIC_ACQUIRE))
		drain_once(r, &rd);
	/* The writers have exited (their lanes closed, pending losses reported where there was room). */
	while (drain_once(r, &rd) != 0)
		;
	if (rd.stats.lost != r->lost)
		bad(r, "reader counted %llu lost, LOST records said %llu", (unsigned long long)rd.stats.lost,
		    (unsigned long long)r->lost);
	evr_reader_fini(&rd);
	return NULL;
}

static void stress(const char *name, uint32_t lanes, uint64_t lane_bytes)
{
	struct evr_config cfg = { .name = name, .lanes = lanes, .lane_bytes = lane_bytes, .capture_content = 0 };
	struct run run;
	struct reader r;
	struct writer_arg args[WRITERS];
	pthread_t writers[WRITERS], reader;
	struct evr_segment *seg;
	uint64_t emitted = 0, pending = 0, lost_all_time = 0;

	memset(&run, 0, sizeof(run));
	memset(&r, 0, sizeof(r));
	pt_env_clear();
	cr_assert_eq(evr_open(&cfg), 0, "%s", evr_last_error());
	seg = evr_segment_current();
	r.seg = seg;
	r.run = &run;
	r.cap = 1;
	while (r.cap < 2ull * WRITERS * ROUNDS * 3) /* 3 spans a round; at most half full */
		r.cap <<= 1;
	r.spans = calloc(r.cap, sizeof(*r.spans));
	cr_assert_not_null(r.spans);

	cr_assert_eq(pthread_create(&reader, NULL, reader_main, &r), 0);
	for (uint32_t i = 0; i < WRITERS; i++) {
		args[i] = (struct writer_arg){ &run, i };
		cr_assert_eq(pthread_create(&writers[i], NULL, writer_main, &args[i]), 0);
	}
	for (uint32_t i = 0; i < WRITERS; i++)
		cr_assert_eq(pthread_join(writers[i], NULL), 0);
	__atomic_store_n(&run.stop, 1, __ATOMIC_RELEASE);
	cr_assert_eq(pthread_join(reader, NULL), 0);

	for (uint32_t i = 0; i < WRITERS; i++)
		emitted += run.emitted[i];
	for (uint32_t l = 0; l < seg->lane_count; l++) {
		pending += seg->lanes[l].lost_pending; /* losses no later record had room to report */
		lost_all_time += seg->lanes[l].lost;
		if (l + 1 < seg->lane_count)
			cr_assert_eq(seg->lanes[l].owner, 0, "lane %u kept after its writer exited", l);
	}
	cr_log_info("%s: emitted %llu delivered %llu lost %llu (%llu LOST records) pending %llu, fallbacks %llu",
		    name, (unsigned long long)emitted, (unsigned long long)r.delivered, (unsigned long long)r.lost,
		    (unsigned long long)r.lost_records, (unsigned long long)pending,
		    (unsigned long long)seg->hdr->lane_fallbacks);
	cr_assert_eq(r.bad, 0, "%llu bad records; first: %s", (unsigned long long)r.bad, r.first_bad);
	cr_assert_eq(emitted, (uint64_t)WRITERS * ROUNDS * RECORDS_PER_ROUND);
	cr_assert_geq(r.delivered, emitted / 10, "the throttled writers left the reader too little to read");
	cr_assert_eq(r.delivered + r.lost + pending, emitted,
		     "delivered %llu + lost %llu + pending %llu != emitted %llu", (unsigned long long)r.delivered, (unsigned long long)r.lost, (unsigned long long)pending,
		     (unsigned long long)emitted);
	cr_assert_eq(lost_all_time, r.lost + pending, "the lanes' all-time loss counts disagree");
	cr_assert_eq(r.dup_begins, 0, "a span id was given twice");
	cr_assert_eq(r.dup_ends, 0, "a span ended twice");
	cr_assert_eq(r.mismatched_ends, 0, "an END disagrees with its BEGIN");
	cr_assert_leq(r.orphan_ends, r.lost + pending, "ENDs without a BEGIN, yet fewer losses");
	cr_assert_leq(r.orphan_events, r.lost + pending);
	cr_assert_leq(r.orphan_parents, r.lost + pending);
	if (r.lost + pending == 0) {
		cr_assert_eq(r.begins, r.ends);
		cr_assert_eq(r.orphan_ends, 0);
	}
	/* Span ids: a thread serial in the high bits, a counter below. */
	for (uint32_t i = 0; i < WRITERS; i++)
		for (uint32_t j = i + 1; j < WRITERS; j++)
			cr_assert_neq(run.first_span[i] >> 40, run.first_span[j] >> 40, "two writers share a serial");
	for (uint32_t i = 0; i < WRITERS; i++)
		cr_assert_eq(run.last_span[i] >> 40, run.first_span[i] >> 40);
	free(r.spans);
	free(r.sites);
	free(r.site_kind);
	evr_close();
}

/* Three exclusive lanes for six writers: three share the last lane, writing with CAS. */
Test(stress, writers_and_a_reader_with_a_shared_lane, .timeout = 300)
{
	stress("stress-shared", 4, 64 << 10);
}

Test(stress, writers_and_a_reader_each_on_its_lane, .timeout = 300)
{
	stress("stress-exclusive", 0, 16 << 10);
}
