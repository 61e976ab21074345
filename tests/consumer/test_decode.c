/*
 * test_decode.c: record bodies and metadata as the consumer reads them. The
 * msgpack pre-check must accept every well-formed object and refuse every
 * container that claims more than its bytes; decoded records must carry the
 * values the producer's macros wrote, named by their sites.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <msgpack.h>

#include <evring/evring.h>

#include "attach.h"
#include "decode.h"
#include "mpcheck.h"
#include "objects.h"
#include "source.h"

static int sbuf_write(void *data, const char *buf, size_t len)
{
	return msgpack_sbuffer_write(data, buf, len);
}

Test(decode, sane_accepts_what_msgpack_c_writes)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, sbuf_write);
	msgpack_pack_array(&pk, 9);
	msgpack_pack_uint64(&pk, UINT64_MAX);
	msgpack_pack_int64(&pk, INT64_MIN);
	msgpack_pack_double(&pk, -1.5);
	msgpack_pack_float(&pk, 2.5f);
	msgpack_pack_str_with_body(&pk, "hello", 5);
	msgpack_pack_bin_with_body(&pk, "\0\1", 2);
	msgpack_pack_ext_with_body(&pk, "abc", 3, 1);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_nil(&pk);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_true(&pk);
	msgpack_pack_false(&pk);
	msgpack_pack_array(&pk, 0);
	cr_assert(evr__msgpack_sane((const uint8_t *)sb.data, sb.size, 4));
	/* Every proper prefix is refused: something is missing. */
	for (size_t n = 0; n < sb.size; n++)
		cr_assert(!evr__msgpack_sane((const uint8_t *)sb.data, n, 4), "a %zu-byte prefix passed", n);
	cr_assert(!evr__msgpack_sane((const uint8_t *)sb.data, sb.size, 1), "nesting past the depth limit");
	msgpack_sbuffer_destroy(&sb);
}

Test(decode, sane_refuses_counts_larger_than_the_bytes)
{
	static const uint8_t array32[] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02 };
	static const uint8_t map16[] = { 0xde, 0x00, 0x02, 0x01, 0x02, 0x03 };
	static const uint8_t str32[] = { 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a' };
	static const uint8_t ext32[] = { 0xc9, 0x00, 0x00, 0x10, 0x00, 0x01, 'a' };
	static const uint8_t never_used[] = { 0xc1 };
	static const uint8_t fixarray_ok[] = { 0x93, 0x01, 0x02, 0x03 };

	cr_assert(!evr__msgpack_sane(array32, sizeof(array32), 4));
	cr_assert(!evr__msgpack_sane(map16, sizeof(map16), 4), "a map of 2 needs 4 objects");
	cr_assert(!evr__msgpack_sane(str32, sizeof(str32), 4));
	cr_assert(!evr__msgpack_sane(ext32, sizeof(ext32), 4));
	cr_assert(!evr__msgpack_sane(never_used, 1, 4));
	cr_assert(evr__msgpack_sane(fixarray_ok, sizeof(fixarray_ok), 4));
}

Test(decode, sane_agrees_with_the_unpacker_on_random_bytes)
{
	unsigned seed = 12345;
	uint8_t buf[64];
	int accepted = 0;

	for (int round = 0; round < 200000; round++) {
		size_t len = 1 + (size_t)(rand_r(&seed) % sizeof(buf));

		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rand_r(&seed);
		if (!evr__msgpack_sane(buf, len, 8))
			continue;
		/* What the walk accepts, msgpack-c unpacks, and cheaply: it cannot claim more than len elements. */
		msgpack_zone *z = msgpack_zone_new(256);
		msgpack_object o;
		size_t off = 0;
		cr_assert(evr__unpacked(msgpack_unpack((const char *)buf, len, &off, z, &o)),
			     "round %d: sane but not unpackable", round);
		msgpack_zone_free(z);
		accepted++;
	}
	cr_assert_gt(accepted, 1000, "random bytes often are one small object");
}

/* Reads this process's own segment through the consumer's decoder. */
struct fixture {
	struct evr_consumer_stats st;
	struct evr_decoder dec;
	struct evr_src src;
	uint8_t buf[EVR_BODY_MAX];
};

static void fixture_open(struct fixture *f, const char *name)
{
	struct evr_config cfg = { .name = name, .capture_content = 1 };

	cr_assert_eq(evr_open(&cfg), 0, "%s", evr_last_error());
	memset(&f->st, 0, sizeof(f->st));
	cr_assert_eq(evr__decoder_init(&f->dec, &f->st), 0);
}

static void fixture_attach(struct fixture *f)
{
	char err[EVR_ERR_MAX];

	cr_assert_eq(evr__src_open(&f->src, evr_segment_current()->shm_name, 0, EVR_ATTACH_FROM_OLDEST, err,
				   sizeof(err)),
		     0, "%s", err);
	cr_assert_geq(evr__src_meta_refresh(&f->src, &f->st), 1);
}

/* The next decoded record of any lane (THREAD records are read past). */
static bool next(struct fixture *f, struct evr_rec *out)
{
	struct evr_record rec;

	for (uint32_t l = 0; l < f->src.seg.lane_count; l++) {
		while (evr_reader_next(&f->src.reader, l, &rec, f->buf, sizeof(f->buf)) == 1) {
			if (rec.type == EVR_REC_THREAD)
				continue;
			cr_assert_eq(evr__decode(&f->dec, &f->src, &rec, out), 0, "type %u on lane %u", rec.type, l);
			return true;
		}
	}
	return false;
}

static void fixture_close(struct fixture *f)
{
	evr__src_close(&f->src);
	evr__decoder_fini(&f->dec);
	evr_close();
}

static const struct evr_field *field(const struct evr_rec *r, const char *name)
{
	for (uint32_t i = 0; i < r->fields->n; i++)
		if (!strcmp(r->fields->f[i].name, name))
			return &r->fields->f[i];
	cr_assert_fail("no field %s", name);
	return NULL;
}

Test(decode, event_fields_round_trip)
{
	struct fixture f;
	struct evr_rec r;
	char big[400];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	fixture_open(&f, "dec-fields");
	EVR_EVENT("app.test", "all_types", EVR_I64("i", -5), EVR_U64("u", UINT64_MAX), EVR_I32("i32", INT32_MIN),
		  EVR_U32("u32", 7), EVR_F64("f", 0.25), EVR_BOOL("b", true), EVR_STR("s", "hi \"there\""),
		  EVR_STR("null", NULL), EVR_STR("long", big), EVR_CONTENT("prompt", "secret"));
	fixture_attach(&f);
	cr_assert(next(&f, &r));
	cr_assert_eq(r.type, EVR_REC_EVENT);
	cr_assert_str_eq(r.site->name, "all_types");
	cr_assert_str_eq(r.site->dispatcher, "app.test");
	cr_assert_eq(r.fields->n, 10);
	cr_assert_eq(field(&r, "i")->v.type, EVR_V_I64);
	cr_assert_eq(field(&r, "i")->v.i, -5);
	cr_assert_eq(field(&r, "u")->v.u, UINT64_MAX);
	cr_assert_eq(field(&r, "i32")->v.i, INT32_MIN);
	cr_assert_eq(field(&r, "u32")->v.u, 7);
	cr_assert_eq(field(&r, "f")->v.type, EVR_V_F64);
	cr_assert(fabs(field(&r, "f")->v.f - 0.25) < 1e-12);
	cr_assert(field(&r, "b")->v.b);
	cr_assert_str_eq(field(&r, "s")->v.s, "hi \"there\"");
	cr_assert_eq(field(&r, "null")->v.type, EVR_V_NIL);
	cr_assert(field(&r, "long")->v.truncated);
	cr_assert_eq(field(&r, "long")->v.len, EVR_STR_LIMIT);
	cr_assert(field(&r, "prompt")->content);
	cr_assert_str_eq(field(&r, "prompt")->v.s, "secret");
	/* Its time is now, give or take the test. */
	uint64_t real = evr_clock_realtime_ns();
	cr_assert(r.real_ns <= real && real - r.real_ns < 5000000000ull);
	evr__fields_unref(r.fields);
	fixture_close(&f);
}

Test(decode, spans_carry_ids_times_and_both_sites)
{
	struct fixture f;
	struct evr_rec b, e;

	fixture_open(&f, "dec-spans");
	struct evr_span s = EVR_SPAN_BEGIN("app", "query", EVR_STR("route", "/q"));
	EVR_SPAN_DROP(s, EVR_STR("error.type", "timeout"));
	fixture_attach(&f);
	cr_assert(next(&f, &b));
	cr_assert(next(&f, &e));
	cr_assert_eq(b.type, EVR_REC_SPAN_BEGIN);
	cr_assert_eq(e.type, EVR_REC_SPAN_END);
	cr_assert_eq(b.span_id, e.span_id);
	cr_assert_eq(b.trace_id, b.span_id, "a root span's trace is its own id");
	cr_assert_eq(e.site, b.site, "the end names the span through its begin site");
	cr_assert_str_eq(e.end_site->name, "");
	cr_assert_eq(e.status, 1);
	cr_assert_eq(e.start_real_ns, b.real_ns);
	cr_assert_geq(e.real_ns, b.real_ns);
	cr_assert_str_eq(field(&e, "error.type")->v.s, "timeout");
	cr_assert_str_eq(field(&b, "route")->v.s, "/q");
	evr__fields_unref(b.fields);
	evr__fields_unref(e.fields);
	fixture_close(&f);
}

/*
 * A record names a site published after an entry another thread reserved
 * earlier and has not yet published: the in-order scan stops at that entry,
 * so the site is read ahead at its id, not refused as unknown.
 */
Test(decode, site_behind_an_unpublished_entry_is_read_ahead)
{
	/* {"path": "app.held"}: a dispatcher declaration */
	static const uint8_t dispatcher[] = { 0x81, 0xa4, 'p', 'a', 't', 'h', 0xa8, 'a', 'p', 'p', '.', 'h', 'e', 'l', 'd' };
	struct fixture f;
	struct evr_rec r;
	struct evr_meta_entry *held;
	uint64_t id;

	fixture_open(&f, "dec-ahead");
	cr_assert_eq(evr_meta_append(evr_segment_current(), EVR_META_DISPATCHER, dispatcher, sizeof(dispatcher), &id),
		     0);
	held = evr_meta_entry_at(evr_segment_current(), id);
	cr_assert_not_null(held);
	held->commit = 0; /* as if its writer were still between M1 and M2 */
	EVR_EVENT("app", "after_the_held_entry", EVR_U32("n", 1));
	fixture_attach(&f);
	cr_assert(next(&f, &r));
	cr_assert_str_eq(r.site->name, "after_the_held_entry");
	cr_assert_eq(field(&r, "n")->v.u, 1);
	evr__fields_unref(r.fields);
	cr_assert_eq(f.st.bad, 0);
	/* Published at last: the scan goes on past it and meets the site again, harmlessly. */
	held->commit = EVR_META_COMMITTED;
	cr_assert_geq(evr__src_meta_refresh(&f.src, &f.st), 2);
	cr_assert_eq(f.st.bad, 0);
	fixture_close(&f);
}

Test(decode, bodies_that_do_not_match_their_site_are_refused)
{
	struct fixture f;
	struct evr_record rec = { 0 };
	struct evr_rec out;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	fixture_open(&f, "dec-bad");
	EVR_EVENT("app", "two", EVR_U64("a", 1), EVR_U64("b", 2));
	fixture_attach(&f);
	cr_assert(next(&f, &out));
	uint64_t site = out.site->id;
	evr__fields_unref(out.fields);

	/* The right site with one value too few, an unknown site, a map where a value goes, a bad status. */
	for (int k = 0; k < 4; k++) {
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, sbuf_write);
		if (k == 3) {
			msgpack_pack_array(&pk, 8);
			for (int i = 0; i < 6; i++)
				msgpack_pack_uint64(&pk, i == 1 ? site : 1);
			msgpack_pack_uint64(&pk, 7); /* status 7 */
			msgpack_pack_uint64(&pk, site);
		} else {
			msgpack_pack_array(&pk, k == 0 ? 4 : 5);
			msgpack_pack_uint64(&pk, 1);
			msgpack_pack_uint64(&pk, k == 1 ? 999999 : site);
			msgpack_pack_uint64(&pk, 0);
			msgpack_pack_uint64(&pk, 1);
			if (k == 2)
				msgpack_pack_map(&pk, 0);
			else if (k == 1)
				msgpack_pack_uint64(&pk, 2);
		}
		rec.type = k == 3 ? EVR_REC_SPAN_END : EVR_REC_EVENT;
		rec.body = (const uint8_t *)sb.data;
		rec.body_len = (uint32_t)sb.size;
		cr_assert_eq(evr__decode(&f.dec, &f.src, &rec, &out), -EBADMSG, "case %d decoded", k);
		msgpack_sbuffer_destroy(&sb);
	}
	fixture_close(&f);
}

/* A LOST record's count is believed only when a lane could have dropped that many (one a ns since boot). */
Test(decode, lost_counts_no_lane_could_have_dropped_are_refused)
{
	static const uint64_t counts[] = { 12, 0, 10584391872832293435ull, 18446744073709551600ull };
	struct fixture f;
	struct evr_record rec = { 0 };
	struct evr_rec out;
	uint8_t body[64];

	fixture_open(&f, "dec-lost");
	EVR_EVENT("app", "one");
	fixture_attach(&f);
	for (unsigned k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		rec.type = EVR_REC_LOST;
		rec.body = body;
		rec.body_len = evr_lost_encode(body, 1000, counts[k], 900);
		cr_assert_eq(evr__decode(&f.dec, &f.src, &rec, &out), k == 0 ? 0 : -EBADMSG, "count %llu",
			     (unsigned long long)counts[k]);
		if (k == 0)
			cr_assert_eq(out.lost_count, 12);
	}
	fixture_close(&f);
}
