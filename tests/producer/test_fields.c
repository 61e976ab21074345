/*
 * test_fields.c: every field type, encoded by the inline packers and decoded
 * by msgpack-c: integers at the bounds of each msgpack width, doubles that
 * are not numbers, strings that are missing, empty, at the limit and past
 * it, and content fields with capture on and off.
 */
#include <float.h>

#include "producer_test.h"

static struct pt_log log_;

static struct pt_rec *read_one(const char *name)
{
	pt_read(&log_);
	cr_assert_eq(pt_count(&log_, EVR_REC_EVENT, name), 1, "one %s record", name);
	return pt_find(&log_, EVR_REC_EVENT, name, 0);
}

/* The value as a signed 128-bit number, whichever integer type msgpack chose. */
static __int128 int_of(const msgpack_object *o)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return (__int128)o->via.u64;
	cr_assert_eq(o->type, MSGPACK_OBJECT_NEGATIVE_INTEGER, "type %d is no integer", o->type);
	cr_assert_lt(o->via.i64, 0, "a non-negative value encoded as negative");
	return (__int128)o->via.i64;
}

Test(fields, integers_at_their_limits)
{
	struct pt_rec *r;

	pt_open("fields-ints", 0, 0);
	EVR_EVENT("f", "ints", EVR_I64("i64min", INT64_MIN), EVR_I64("i64max", INT64_MAX), EVR_I64("neg", -1),
		  EVR_I64("zero", 0), EVR_U64("u64max", UINT64_MAX), EVR_U64("u64zero", 0),
		  EVR_I32("i32min", INT32_MIN), EVR_I32("i32max", INT32_MAX), EVR_I32("i32neg", -7),
		  EVR_U32("u32max", UINT32_MAX), EVR_U32("u32zero", 0));
	r = read_one("ints");
	cr_assert_eq(pt_nvalues(r), 11);
	cr_assert_eq(pt_field(r, "i64min")->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
	cr_assert_eq(pt_field(r, "i64min")->via.i64, INT64_MIN);
	cr_assert_eq(pt_field(r, "i64max")->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	cr_assert_eq(pt_field(r, "i64max")->via.u64, (uint64_t)INT64_MAX);
	cr_assert_eq(pt_field(r, "neg")->via.i64, -1);
	cr_assert(int_of(pt_field(r, "zero")) == 0);
	cr_assert_eq(pt_field(r, "u64max")->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	cr_assert_eq(pt_field(r, "u64max")->via.u64, UINT64_MAX);
	cr_assert(int_of(pt_field(r, "u64zero")) == 0);
	cr_assert(int_of(pt_field(r, "i32min")) == INT32_MIN);
	cr_assert(int_of(pt_field(r, "i32max")) == INT32_MAX);
	cr_assert(int_of(pt_field(r, "i32neg")) == -7);
	cr_assert(int_of(pt_field(r, "u32max")) == UINT32_MAX);
	cr_assert(int_of(pt_field(r, "u32zero")) == 0);
	pt_log_free(&log_);
	evr_close();
}

static void emit_sweep(int64_t v)
{
	EVR_EVENT("f", "sweep", EVR_I64("i", v), EVR_U64("u", (uint64_t)v), EVR_I32("i32", (int32_t)v),
		  EVR_U32("u32", (uint32_t)v));
}

Test(fields, integers_round_trip_across_every_msgpack_width)
{
	/* Each side of each width boundary msgpack-c picks between (fixint, 8, 16, 32, 64 bits). */
	static const int64_t vals[] = { 0,	     1,		  127,		128,	      255,
					256,	     65535,	  65536,	4294967295LL, 4294967296LL,
					-1,	     -32,	  -33,		-128,	      -129,
					-32768,	     -32769,	  INT32_MIN,	(int64_t)INT32_MIN - 1,
					INT64_MIN,   INT64_MAX };
	enum { N = sizeof(vals) / sizeof(vals[0]) };

	pt_open("fields-sweep", 0, 0);
	for (int i = 0; i < N; i++)
		emit_sweep(vals[i]);
	pt_read(&log_);
	cr_assert_eq(pt_count(&log_, EVR_REC_EVENT, "sweep"), N);
	for (int i = 0; i < N; i++) {
		struct pt_rec *r = pt_find(&log_, EVR_REC_EVENT, "sweep", (size_t)i);
		const msgpack_object *u = pt_field(r, "u");

		cr_assert(int_of(pt_field(r, "i")) == vals[i], "i64 %lld", (long long)vals[i]);
		cr_assert_eq(u->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
		cr_assert_eq(u->via.u64, (uint64_t)vals[i], "u64 %llu", (unsigned long long)(uint64_t)vals[i]);
		cr_assert(int_of(pt_field(r, "i32")) == (int32_t)vals[i], "i32 %d", (int32_t)vals[i]);
		cr_assert(int_of(pt_field(r, "u32")) == (uint32_t)vals[i], "u32 %u", (uint32_t)vals[i]);
	}
	pt_log_free(&log_);
	evr_close();
}

Test(fields, doubles_including_nan_and_infinities)
{
	struct pt_rec *r;
	const msgpack_object *o;

	pt_open("fields-f64", 0, 0);
	EVR_EVENT("f", "doubles", EVR_F64("nan", NAN), EVR_F64("inf", INFINITY), EVR_F64("ninf", -INFINITY),
		  EVR_F64("nzero", -0.0), EVR_F64("denorm", DBL_TRUE_MIN), EVR_F64("max", DBL_MAX), EVR_F64("pi", M_PI),
		  EVR_F64("whole", 3.0));
	r = read_one("doubles");
	for (uint32_t i = 0; i < pt_nvalues(r); i++)
		cr_assert_eq(pt_val(r, i)->type, MSGPACK_OBJECT_FLOAT64, "value %u is not a float64", i);
	cr_assert(isnan(pt_field(r, "nan")->via.f64));
	cr_assert(isinf(pt_field(r, "inf")->via.f64) && pt_field(r, "inf")->via.f64 > 0);
	cr_assert(isinf(pt_field(r, "ninf")->via.f64) && pt_field(r, "ninf")->via.f64 < 0);
	o = pt_field(r, "nzero");
	cr_assert(o->via.f64 == 0.0 && signbit(o->via.f64), "-0.0 keeps its sign");
	cr_assert_eq(pt_field(r, "denorm")->via.f64, DBL_TRUE_MIN);
	cr_assert_eq(pt_field(r, "max")->via.f64, DBL_MAX);
	cr_assert_eq(pt_field(r, "pi")->via.f64, M_PI);
	cr_assert_eq(pt_field(r, "whole")->via.f64, 3.0, "a whole double stays a double");
	pt_log_free(&log_);
	evr_close();
}

Test(fields, booleans)
{
	struct pt_rec *r;
	int seven = 7;

	pt_open("fields-bool", 0, 0);
	EVR_EVENT("f", "bools", EVR_BOOL("t", true), EVR_BOOL("f", false), EVR_BOOL("nonzero", seven));
	r = read_one("bools");
	cr_assert_eq(pt_field(r, "t")->type, MSGPACK_OBJECT_BOOLEAN);
	cr_assert(pt_field(r, "t")->via.boolean);
	cr_assert_eq(pt_field(r, "f")->type, MSGPACK_OBJECT_BOOLEAN);
	cr_assert_not(pt_field(r, "f")->via.boolean);
	cr_assert(pt_field(r, "nonzero")->via.boolean, "any non-zero value is true");
	pt_log_free(&log_);
	evr_close();
}

/* A string of n bytes: a pattern, so a shifted or cut copy is caught. */
static char *pattern(size_t n)
{
	char *s = malloc(n + 1);

	cr_assert_not_null(s);
	for (size_t i = 0; i < n; i++)
		s[i] = (char)('a' + i % 23);
	s[n] = 0;
	return s;
}

static void assert_str(const msgpack_object *o, const char *want, size_t n)
{
	cr_assert_eq(o->type, MSGPACK_OBJECT_STR, "type %d, not a string", o->type);
	cr_assert_eq(o->via.str.size, n);
	cr_assert_eq(memcmp(o->via.str.ptr, want, n), 0);
}

/* A truncated string: ext type EVR_EXT_TRUNCATED holding the first `limit` bytes. */
static void assert_truncated(const msgpack_object *o, const char *want, size_t limit)
{
	cr_assert_eq(o->type, MSGPACK_OBJECT_EXT, "type %d, not a truncated string", o->type);
	cr_assert_eq(o->via.ext.type, EVR_EXT_TRUNCATED);
	cr_assert_eq(o->via.ext.size, limit);
	cr_assert_eq(memcmp(o->via.ext.ptr, want, limit), 0);
}

Test(fields, strings_nil_empty_at_and_past_the_limit)
{
	char *at = pattern(EVR_STR_LIMIT), *over = pattern(EVR_STR_LIMIT + 1), *huge = pattern(100000);
	char *below = pattern(EVR_STR_LIMIT - 1), *s31 = pattern(31), *s32 = pattern(32);
	const char *none = NULL, *utf8 = "caf\xc3\xa9 \xe2\x9c\x93";
	struct pt_rec *r;

	pt_open("fields-str", 0, 0);
	EVR_EVENT("f", "strings", EVR_STR("null", none), EVR_STR("empty", ""), EVR_STR("utf8", utf8),
		  EVR_STR("below", below), EVR_STR("at", at), EVR_STR("over", over), EVR_STR("huge", huge),
		  EVR_STR("s31", s31), EVR_STR("s32", s32));
	r = read_one("strings");
	cr_assert_eq(pt_field(r, "null")->type, MSGPACK_OBJECT_NIL, "NULL is nil");
	assert_str(pt_field(r, "empty"), "", 0);
	assert_str(pt_field(r, "utf8"), utf8, strlen(utf8));
	assert_str(pt_field(r, "below"), below, EVR_STR_LIMIT - 1);
	assert_str(pt_field(r, "at"), at, EVR_STR_LIMIT);
	assert_truncated(pt_field(r, "over"), over, EVR_STR_LIMIT);
	assert_truncated(pt_field(r, "huge"), huge, EVR_STR_LIMIT);
	assert_str(pt_field(r, "s31"), s31, 31); /* fixstr */
	assert_str(pt_field(r, "s32"), s32, 32); /* str8 */
	pt_log_free(&log_);
	evr_close();
	free(at);
	free(over);
	free(huge);
	free(below);
	free(s31);
	free(s32);
}

/* One site with every kind of string field, so capture on and off write through the same code. */
static void emit_content(const char *prompt, const char *plain)
{
	EVR_EVENT("f", "content", EVR_CONTENT("prompt", prompt), EVR_STR("plain", plain));
}

Test(fields, content_is_nil_with_capture_off)
{
	struct pt_rec *r;
	const msgpack_object *f;

	pt_open("fields-content-off", 0, 0);
	cr_assert_not(evr_capture_content());
	emit_content("a secret prompt", "visible");
	emit_content(NULL, NULL);
	pt_read(&log_);
	r = pt_find(&log_, EVR_REC_EVENT, "content", 0);
	cr_assert_eq(pt_field(r, "prompt")->type, MSGPACK_OBJECT_NIL, "content written with capture off");
	assert_str(pt_field(r, "plain"), "visible", 7);
	r = pt_find(&log_, EVR_REC_EVENT, "content", 1);
	cr_assert_eq(pt_field(r, "prompt")->type, MSGPACK_OBJECT_NIL);
	cr_assert_eq(pt_field(r, "plain")->type, MSGPACK_OBJECT_NIL);
	/* The site still says which field is content, so a consumer knows why it is empty. */
	f = pt_site_fields(r->site);
	cr_assert(pt_map_bool(&f->via.array.ptr[0], "content"));
	cr_assert(pt_str_is(pt_map_get(&f->via.array.ptr[0], "type"), "str"));
	cr_assert_not(pt_map_bool(&f->via.array.ptr[1], "content"));
	cr_assert_not(pt_map_bool(pt_meta_map(pt_meta_nth(&log_, EVR_META_PROCESS, 0)), "capture_content"));
	pt_log_free(&log_);
	evr_close();
}

Test(fields, content_is_written_with_capture_on_up_to_its_limit)
{
	char *at = pattern(EVR_CONTENT_LIMIT), *over = pattern(EVR_CONTENT_LIMIT + 1);
	char *str_over = pattern(EVR_STR_LIMIT + 1);

	pt_open("fields-content-on", 0, 1);
	cr_assert(evr_capture_content());
	emit_content("a secret prompt", "visible");
	emit_content(at, "x");
	emit_content(over, str_over);
	emit_content(NULL, "");
	emit_content("", NULL);
	pt_read(&log_);
	cr_assert_eq(pt_count(&log_, EVR_REC_EVENT, "content"), 5);
	assert_str(pt_field(pt_find(&log_, EVR_REC_EVENT, "content", 0), "prompt"), "a secret prompt", 15);
	assert_str(pt_field(pt_find(&log_, EVR_REC_EVENT, "content", 1), "prompt"), at, EVR_CONTENT_LIMIT);
	assert_truncated(pt_field(pt_find(&log_, EVR_REC_EVENT, "content", 2), "prompt"), over, EVR_CONTENT_LIMIT);
	assert_truncated(pt_field(pt_find(&log_, EVR_REC_EVENT, "content", 2), "plain"), str_over, EVR_STR_LIMIT);
	cr_assert_eq(pt_field(pt_find(&log_, EVR_REC_EVENT, "content", 3), "prompt")->type, MSGPACK_OBJECT_NIL);
	assert_str(pt_field(pt_find(&log_, EVR_REC_EVENT, "content", 3), "plain"), "", 0);
	assert_str(pt_field(pt_find(&log_, EVR_REC_EVENT, "content", 4), "prompt"), "", 0);
	cr_assert(pt_map_bool(pt_meta_map(pt_meta_nth(&log_, EVR_META_PROCESS, 0)), "capture_content"));
	pt_log_free(&log_);
	evr_close();
	free(at);
	free(over);
	free(str_over);
}

Test(fields, sixteen_fields_in_declared_order)
{
	char *big = pattern(EVR_STR_LIMIT + 10);
	struct pt_rec *r;

	pt_open("fields-sixteen", 0, 1);
	/* 16 values make a 19- and a 21-element array (array16), the largest bodies a site can have. */
	EVR_EVENT("f", "sixteen", EVR_U64("f0", 0), EVR_I64("f1", -1), EVR_U32("f2", 2), EVR_I32("f3", -3),
		  EVR_F64("f4", 4.5), EVR_BOOL("f5", true), EVR_STR("f6", big), EVR_CONTENT("f7", big),
		  EVR_STR("f8", big), EVR_STR("f9", big), EVR_STR("f10", big), EVR_STR("f11", big), EVR_STR("f12", big),
		  EVR_STR("f13", NULL), EVR_U64("f14", UINT64_MAX), EVR_I64("f15", INT64_MIN));
	{
		struct evr_span s = EVR_SPAN_BEGIN("f", "sixteen_span", EVR_U64("b0", 0), EVR_U64("b1", 1),
						   EVR_U64("b2", 2), EVR_U64("b3", 3), EVR_U64("b4", 4),
						   EVR_U64("b5", 5), EVR_U64("b6", 6), EVR_U64("b7", 7),
						   EVR_U64("b8", 8), EVR_U64("b9", 9), EVR_U64("b10", 10),
						   EVR_U64("b11", 11), EVR_U64("b12", 12), EVR_U64("b13", 13),
						   EVR_U64("b14", 14), EVR_U64("b15", 15));
		EVR_SPAN_END(s, EVR_STR("e0", big), EVR_STR("e1", big), EVR_STR("e2", big), EVR_STR("e3", big),
			     EVR_STR("e4", big), EVR_STR("e5", big), EVR_STR("e6", big), EVR_STR("e7", big),
			     EVR_STR("e8", big), EVR_STR("e9", big), EVR_STR("e10", big), EVR_STR("e11", big),
			     EVR_STR("e12", big), EVR_STR("e13", big), EVR_STR("e14", big), EVR_U64("e15", 15));
	}
	r = read_one("sixteen");
	cr_assert_eq(r->n, 19);
	cr_assert_eq(pt_val(r, 0)->via.u64, 0);
	cr_assert_eq(pt_val(r, 1)->via.i64, -1);
	cr_assert_eq(pt_val(r, 2)->via.u64, 2);
	cr_assert_eq(pt_val(r, 3)->via.i64, -3);
	cr_assert_eq(pt_val(r, 4)->via.f64, 4.5);
	cr_assert(pt_val(r, 5)->via.boolean);
	for (uint32_t i = 6; i <= 12; i++) {
		if (i == 7) /* content, whose limit is higher */
			assert_str(pt_val(r, i), big, EVR_STR_LIMIT + 10);
		else
			assert_truncated(pt_val(r, i), big, EVR_STR_LIMIT);
	}
	cr_assert_eq(pt_val(r, 13)->type, MSGPACK_OBJECT_NIL);
	cr_assert_eq(pt_val(r, 14)->via.u64, UINT64_MAX);
	cr_assert_eq(pt_val(r, 15)->via.i64, INT64_MIN);

	r = pt_find(&log_, EVR_REC_SPAN_BEGIN, "sixteen_span", 0);
	cr_assert_eq(r->n, 21);
	for (uint32_t i = 0; i < 16; i++)
		cr_assert_eq(pt_val(r, i)->via.u64, i);
	r = pt_find(&log_, EVR_REC_SPAN_END, "sixteen_span", 0);
	cr_assert_eq(r->n, 24);
	for (uint32_t i = 0; i < 15; i++)
		assert_truncated(pt_val(r, i), big, EVR_STR_LIMIT);
	cr_assert_eq(pt_field(r, "e15")->via.u64, 15);
	pt_log_free(&log_);
	evr_close();
	free(big);
}

static void emit_many_contents(void)
{
	EVR_EVENT("f", "contents", EVR_CONTENT("c0", "a"), EVR_CONTENT("c1", "b"), EVR_CONTENT("c2", "c"),
		  EVR_CONTENT("c3", "d"), EVR_CONTENT("c4", "e"), EVR_CONTENT("c5", "f"), EVR_CONTENT("c6", "g"),
		  EVR_CONTENT("c7", "h"), EVR_CONTENT("c8", "i"), EVR_CONTENT("c9", "j"), EVR_CONTENT("c10", "k"),
		  EVR_CONTENT("c11", "l"), EVR_CONTENT("c12", "m"), EVR_CONTENT("c13", "n"), EVR_CONTENT("c14", "o"),
		  EVR_CONTENT("c15", "p"));
}

static void emit_one_content(void)
{
	EVR_EVENT("f", "one_content", EVR_CONTENT("prompt", "hi"), EVR_U32("n", 1));
}

/*
 * Regression: with capture off a content field is written as nil, yet its
 * reservation was sized for EVR_CONTENT_LIMIT bytes, so a site with a content
 * field never fit a 4K lane (records there are at most 2K) and one with 16
 * never fit any lane: every record of such sites was dropped.
 */
Test(fields, regression_content_fields_take_no_room_with_capture_off)
{
	struct evr_segment *seg;

	pt_open("fields-content-room", 4096, 0);
	seg = evr_segment_current();
	emit_one_content();
	emit_many_contents();
	pt_read(&log_);
	cr_assert_eq(seg->hdr->writer_oversize, 0, "a record was refused as too large");
	cr_assert_eq(pt_count(&log_, EVR_REC_EVENT, "one_content"), 1);
	cr_assert_eq(pt_field(pt_find(&log_, EVR_REC_EVENT, "one_content", 0), "prompt")->type, MSGPACK_OBJECT_NIL);
	cr_assert_eq(pt_count(&log_, EVR_REC_EVENT, "contents"), 1);
	pt_log_free(&log_);

	/* With the default lanes, a site with 16 content fields fits once capture is off. */
	pt_open("fields-content-room2", 0, 0);
	emit_many_contents();
	pt_read(&log_);
	cr_assert_eq(pt_count(&log_, EVR_REC_EVENT, "contents"), 1);
	for (uint32_t i = 0; i < 16; i++)
		cr_assert_eq(pt_val(pt_find(&log_, EVR_REC_EVENT, "contents", 0), i)->type, MSGPACK_OBJECT_NIL);
	pt_log_free(&log_);
	evr_close();
}

/*
 * Regression: a string field read from an array smaller than the limit
 * (char model[32]) made GCC 11+ warn that strnlen's bound exceeds the array,
 * which failed -Werror builds of the caller. This file builds with -Werror.
 */
Test(fields, regression_string_in_a_small_array_builds_warning_free)
{
	char model[32], prompt[8];
	struct pt_rec *r;

	snprintf(model, sizeof(model), "model-%d", 7);
	snprintf(prompt, sizeof(prompt), "hi");
	pt_open("fields-small-array", 0, 1);
	EVR_EVENT("f", "small_arrays", EVR_STR("model", model), EVR_CONTENT("prompt", prompt));
	r = read_one("small_arrays");
	assert_str(pt_field(r, "model"), "model-7", 7);
	assert_str(pt_field(r, "prompt"), "hi", 2);
	pt_log_free(&log_);
	evr_close();
}
