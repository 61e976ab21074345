/*
 * test_plugin_isolate.c: an isolated plug-in (plugin_isolate.c and the
 * evring-plugin-host program) receives what the same plug-in receives in
 * the consumer's process, field for field, for every kind of object: an
 * event with every value type (a truncated string, negative and huge
 * integers, doubles, booleans, content fields), span begins and ends, a
 * trace with its tree, a loss, and the same object twice (the site and
 * source pointers a plug-in may key on stay stable), and a gap (on_skipped)
 * with every count and time as given. Driven callback by callback on
 * hand-built objects; evr_crash_plugin's lines are compared. Then crashes
 * in on_event and in on_skipped: counted, reported to on_error with the
 * callback, the item and -ECHILD, and the next call restarts it.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "handlers.h"
#include "objects.h"
#include "source.h"

static const char *fnames[] = { "model", "tokens", "delta", "temp", "stream", "prompt" };
static const uint8_t ftypes[] = { 5, 2, 3, 4, 1, 5 };
static const bool fcontent[] = { false, false, false, false, false, true };
static const struct evr_site_info site = {
	.id = 4242, .kind = EVR_KIND_EVENT, .line = 17, .nfields = 6, .name = "llm.chunk", .dispatcher = "app.llm",
	.file = "app.c", .func = "main", .field_names = fnames, .field_types = ftypes, .field_content = fcontent,
};
static const struct evr_site_info span_site = {
	.id = 7, .kind = EVR_KIND_SPAN_BEGIN, .line = 9, .name = "llm.chat", .dispatcher = "app",
	.file = "app.c", .func = "chat",
};

static struct evr_fields *fields(void)
{
	char *p;
	struct evr_fields *f = evr__fields_new(6, 64, &p);

	cr_assert_not_null(f);
	for (int i = 0; i < 6; i++) {
		f->f[i].name = fnames[i];
		f->f[i].content = fcontent[i];
	}
	strcpy(p, "llama\xc3\xa9");
	f->f[0].v = (struct evr_value){ .type = EVR_V_STR, .len = 7, .s = p };
	f->f[1].v = (struct evr_value){ .type = EVR_V_I64, .i = INT64_MIN };
	f->f[2].v = (struct evr_value){ .type = EVR_V_U64, .u = UINT64_MAX };
	f->f[3].v = (struct evr_value){ .type = EVR_V_F64, .f = -0.1 };
	f->f[4].v = (struct evr_value){ .type = EVR_V_BOOL, .b = true };
	strcpy(p + 16, "a prompt cut he");
	f->f[5].v = (struct evr_value){ .type = EVR_V_STR, .truncated = true, .len = 15, .s = p + 16 };
	return f;
}

static struct evr_span_rec *span(struct evr_src *s, uint64_t id, uint64_t parent, bool ended)
{
	struct evr_span_rec *sp = evr__span_new();

	cr_assert_not_null(sp);
	sp->src = &s->pub;
	sp->site = &span_site;
	sp->span_id = id;
	sp->parent_id = parent;
	sp->trace_id = 0x77;
	sp->start_ns = 1700000000000000000ull + id;
	sp->start_mono_ns = 5000 + id;
	sp->tid = 99;
	sp->status = ended ? EVR_SPAN_DROPPED : EVR_SPAN_OPEN;
	if (ended) {
		sp->end_ns = sp->start_ns + 1000;
		sp->end_mono_ns = sp->start_mono_ns + 1000;
		sp->flags = EVR_SPAN_NO_BEGIN | EVR_SPAN_PRODUCER_EXITED;
		sp->events = 3;
		evr__fields_unref(sp->end_fields);
		sp->end_fields = fields();
	}
	return sp;
}

/* A gap as the hub hands it on: every count distinct, a time at each end of the range. */
static const struct evr_skipped gap = {
	.handler = "crash", .count = 7, .events = 3, .span_begins = 1, .span_ends = 2, .traces = 1, .stalled = 4,
	.first_ns = 1700000000000000001ull, .last_ns = UINT64_MAX,
};
#define GAP_LINE                                                                                                  \
	"skipped handler=crash n=7 ev=3 begin=1 end=2 tr=1 stalled=4 t=1700000000000000001-18446744073709551615\n"

/* The gap g through h's on_skipped, as the hub calls it (an object of its own). */
static int skip(struct evr_handler *h, const struct evr_skipped *g)
{
	struct evr_skipped *o;
	int rc;

	cr_assert_not_null(h->on_skipped, "handler %s takes no gaps", h->name);
	o = evr__skipped_new(g);
	cr_assert_not_null(o);
	rc = h->on_skipped(h->ctx, o);
	evr_obj_unref(o);
	return rc;
}

/* Every callback of h once or more, on the same objects each time this is called. */
static void drive(struct evr_handler *h)
{
	struct evr_src *s = calloc(1, sizeof(*s));
	struct evr_rec r = { .type = EVR_REC_EVENT };
	struct evr_event *ev;
	struct evr_span_rec *b, *e;
	struct evr_trace *tr;
	struct evr_lost *l;

	cr_assert_not_null(s);
	s->pub = (struct evr_source){ .pid = 1234, .index = 0, .program = "app", .cmdline = "app --x",
				      .shm_name = "/evring.1234.app" };
	r.src = s;
	r.site = &site;
	r.real_ns = 1700000000123456789ull;
	r.mono_ns = 42;
	r.span_id = 0x55;
	r.tid = 7;
	r.late = true;
	r.fields = fields();
	ev = evr__event_new(&r, 0x77);
	evr__fields_unref(r.fields);
	cr_assert_eq(h->on_event(h->ctx, ev), 0);
	cr_assert_eq(h->on_event(h->ctx, ev), 0);
	b = span(s, 0x10, 0, false);
	cr_assert_eq(h->on_span_begin(h->ctx, b), 0);
	e = span(s, 0x10, 0, true);
	cr_assert_eq(h->on_span_end(h->ctx, e), 0);
	tr = evr__trace_new(2);
	cr_assert_not_null(tr);
	tr->src = &s->pub;
	tr->trace_id = 0x77;
	tr->root = 0;
	tr->start_ns = 1;
	tr->end_ns = 2;
	tr->incomplete = true;
	evr_obj_ref(e);
	tr->spans[0] = e;
	tr->spans[1] = span(s, 0x11, 0x10, true);
	tr->parent[0] = -1;
	tr->parent[1] = 0;
	tr->first_child[0] = 2;
	tr->first_child[1] = 0;
	tr->next_sibling[0] = tr->next_sibling[1] = 0;
	cr_assert_eq(h->on_trace_end(h->ctx, tr), 0);
	r = (struct evr_rec){ .type = EVR_REC_LOST, .src = s, .tid = 8, .lane = 3, .lost_count = 12,
			      .real_ns = 99, .lost_first_real_ns = 98 };
	s->pub.dead = true;
	l = evr__lost_new(&r);
	cr_assert_eq(h->on_lost(h->ctx, l), 0);
	cr_assert_eq(skip(h, &gap), 0);
	evr_obj_unref(ev);
	evr_obj_unref(b);
	evr_obj_unref(e);
	evr_obj_unref(tr);
	evr_obj_unref(l);
	free(s);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 1 << 16);

	cr_assert_not_null(f);
	cr_assert_not_null(buf);
	cr_assert_lt(fread(buf, 1, (1 << 16) - 1, f), (size_t)(1 << 16) - 1);
	fclose(f);
	return buf;
}

static struct evr_handler_error last_error;
static char last_message[512];
static int nerrors;

static void on_error(void *arg, const struct evr_handler_error *e)
{
	(void)arg;
	last_error = *e;
	snprintf(last_message, sizeof(last_message), "%s", e->message ? e->message : "");
	last_error.message = last_message;
	nerrors++;
}

static const struct evr_consumer_opts opts = { .timeout_ns = 2000000000ull, .on_error = on_error, .quiet = true };

static void setup(void)
{
	const char *a = getenv("ASAN_OPTIONS");
	char asan[1024];

	setenv("EVRING_PLUGIN_HOST", EVR_PLUGIN_HOST, 1);
	/* In a sanitizer build the host's fault stays a SIGSEGV, as in any other build. */
	snprintf(asan, sizeof(asan), "%s%shandle_segv=0", a ? a : "", a && *a ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);
}

/* Per test, not TestSuite: the ThreadSanitizer build's runner (tests/tsan_shim) takes the options so. */

Test(plugin_isolate, same_items_same_content, .init = setup, .timeout = 120)
{
	char dir[] = "/tmp/evr-iso-XXXXXX", a[128], b[128], spec[512], err[256];
	struct evr_handler in, iso;
	struct evr_handler_stats st = { 0 };
	char *x, *y;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/in.txt", dir);
	snprintf(b, sizeof(b), "%s/iso.txt", dir);
	snprintf(spec, sizeof(spec), "%s:%s", EVR_CRASH_PLUGIN, a);
	cr_assert_eq(evr__plugin_from_spec(spec, &opts, &in, err, sizeof(err)), 0, "%s", err);
	snprintf(spec, sizeof(spec), "%s,isolate:%s", EVR_CRASH_PLUGIN, b);
	cr_assert_eq(evr__plugin_from_spec(spec, &opts, &iso, err, sizeof(err)), 0, "%s", err);
	cr_expect_str_eq(iso.name, "crash");
	cr_expect_null(iso.dispatcher);
	cr_assert(iso.on_event && iso.on_span_begin && iso.on_span_end && iso.on_trace_end && iso.on_lost &&
		  iso.on_skipped && iso.on_end && iso.stats);
	drive(&in);
	drive(&iso);
	cr_assert_not_null(in.on_end);
	cr_expect_eq(in.on_end(in.ctx), 0);
	cr_expect_eq(iso.on_end(iso.ctx), 0);
	iso.stats(iso.ctx, &st);
	cr_expect_eq(st.crashes, 0);
	in.destroy(in.ctx);
	iso.destroy(iso.ctx);
	x = slurp(a);
	y = slurp(b);
	cr_expect_gt(strlen(x), 500);
	cr_expect(strstr(x, "prompt(c):5:15t'a prompt cut he'") != NULL, "%s", x);
	cr_expect(strstr(x, "\nlost src=0:1234:app:1 tid=8 lane=3 n=12") != NULL, "%s", x);
	cr_expect(strstr(x, "\n" GAP_LINE "close\n") != NULL, "%s", x);
	cr_expect_str_eq(y, x, "isolated:\n%s\nin-process:\n%s", y, x);
	cr_expect_eq(nerrors, 0);
	free(x);
	free(y);
	cr_expect_eq(unlink(a) | unlink(b) | rmdir(dir), 0);
}

Test(plugin_isolate, a_crash_is_counted_reported_and_restarted, .init = setup, .timeout = 120)
{
	char dir[] = "/tmp/evr-iso-XXXXXX", a[128], spec[512], err[256];
	struct evr_handler iso;
	struct evr_handler_stats st = { .delivered = 100 };
	char *x;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/iso.txt", dir);
	/* Its first event kills each process: the second in drive(), then the restarted one's first. */
	snprintf(spec, sizeof(spec), "%s,isolate:%s:always:1", EVR_CRASH_PLUGIN, a);
	cr_assert_eq(evr__plugin_from_spec(spec, &opts, &iso, err, sizeof(err)), 0, "%s", err);
	drive(&iso);
	cr_expect_eq(nerrors, 2, "both on_event calls killed a process");
	cr_expect_eq(last_error.rc, -ECHILD);
	cr_expect_str_eq(last_error.callback, "on_event");
	cr_expect_str_eq(last_error.what, "llm.chunk");
	cr_expect(strstr(last_message, "killed by signal 11") != NULL, "%s", last_message);
	cr_expect_eq(iso.on_end(iso.ctx), 0);
	iso.stats(iso.ctx, &st);
	cr_expect_eq(st.crashes, 2);
	cr_expect_eq(st.skipped, 0);
	iso.destroy(iso.ctx);
	x = slurp(a);
	/* The third process got the span, the trace, the loss and the gap, then on_close. */
	cr_expect(!strncmp(x, "begin src=", 10) && strstr(x, "\ntrace src=") && strstr(x, "\nlost src=") &&
		  strstr(x, "\n" GAP_LINE "close\n"), "%s", x);
	cr_expect_null(strstr(x, "event "), "%s", x);
	free(x);
	cr_expect_eq(unlink(a) | rmdir(dir), 0);
}

/*
 * Regression: the isolated wrapper took no on_skipped, so an isolated
 * plug-in never saw its gaps (a jsonl or chrome plug-in's file showed none)
 * where the same plug-in in-process did. Each gap reaches the child as given,
 * in order with the other calls: counts and times at their extremes, and a
 * gap of a handler without a name.
 */
Test(plugin_isolate, a_gap_reaches_the_isolated_plugin_as_given, .init = setup, .timeout = 120)
{
	char dir[] = "/tmp/evr-iso-XXXXXX", a[128], b[128], spec[512], err[256];
	const struct evr_skipped zero = { 0 };
	const struct evr_skipped big = {
		.handler = "a \"handler\" named \xc3\xa9", .count = UINT64_MAX, .events = UINT64_MAX - 1,
		.span_begins = 1ull << 32, .span_ends = 255, .traces = 65536, .stalled = UINT64_MAX, .first_ns = 1,
	};
	struct evr_handler in, iso;
	char *x, *y;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/in.txt", dir);
	snprintf(b, sizeof(b), "%s/iso.txt", dir);
	snprintf(spec, sizeof(spec), "%s:%s", EVR_CRASH_PLUGIN, a);
	cr_assert_eq(evr__plugin_from_spec(spec, &opts, &in, err, sizeof(err)), 0, "%s", err);
	snprintf(spec, sizeof(spec), "%s,isolate:%s", EVR_CRASH_PLUGIN, b);
	cr_assert_eq(evr__plugin_from_spec(spec, &opts, &iso, err, sizeof(err)), 0, "%s", err);
	cr_assert_not_null(in.on_skipped);
	cr_assert_not_null(iso.on_skipped, "the isolated wrapper hands no gaps to its plug-in");
	for (int i = 0; i < 2; i++) {
		struct evr_handler *h = i ? &iso : &in;

		cr_expect_eq(skip(h, &gap), 0);
		cr_expect_eq(skip(h, &big), 0);
		cr_expect_eq(skip(h, &zero), 0);
		cr_expect_eq(h->on_end(h->ctx), 0);
		h->destroy(h->ctx);
	}
	x = slurp(a);
	y = slurp(b);
	cr_expect_str_eq(y,
			 GAP_LINE
			 "skipped handler=a \"handler\" named \xc3\xa9 n=18446744073709551615 ev=18446744073709551614 "
			 "begin=4294967296 end=255 tr=65536 stalled=18446744073709551615 t=1-0\n"
			 "skipped handler=- n=0 ev=0 begin=0 end=0 tr=0 stalled=0 t=0-0\n"
			 "close\n",
			 "isolated:\n%s", y);
	cr_expect_str_eq(y, x, "isolated:\n%s\nin-process:\n%s", y, x);
	cr_expect_eq(nerrors, 0);
	free(x);
	free(y);
	cr_expect_eq(unlink(a) | unlink(b) | rmdir(dir), 0);
}

/* A child that dies in on_skipped is reported with the gap it was given; the gap's records stay the hub's count. */
Test(plugin_isolate, a_crash_in_on_skipped_names_the_gap, .init = setup, .timeout = 120)
{
	char dir[] = "/tmp/evr-iso-XXXXXX", a[128], spec[512], err[256];
	struct evr_handler iso;
	struct evr_handler_stats st = { .delivered = 100 };
	char *x;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/iso.txt", dir);
	snprintf(spec, sizeof(spec), "%s,isolate:%s:gapsegv:0", EVR_CRASH_PLUGIN, a);
	cr_assert_eq(evr__plugin_from_spec(spec, &opts, &iso, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(skip(&iso, &gap), 0, "a crash is the wrapper's report, not the callback's error");
	cr_expect_eq(nerrors, 1);
	cr_expect_eq(last_error.rc, -ECHILD);
	cr_expect_str_eq(last_error.callback, "on_skipped");
	cr_expect_str_eq(last_error.what, "skipped gap of 7");
	cr_expect(strstr(last_message, "killed by signal 11 (") != NULL, "%s", last_message);
	cr_expect(strstr(last_message, " in on_skipped 'skipped gap of 7'") != NULL, "%s", last_message);
	cr_expect_eq(iso.on_end(iso.ctx), 0, "the restarted process ends the stream");
	iso.stats(iso.ctx, &st);
	cr_expect_eq(st.crashes, 1);
	cr_expect_eq(st.skipped, 0, "a gap is no record: nothing more skipped");
	cr_expect_eq(st.delivered, 100);
	iso.destroy(iso.ctx);
	x = slurp(a);
	cr_expect_str_eq(x, "close\n");
	free(x);
	cr_expect_eq(unlink(a) | rmdir(dir), 0);
}

Test(plugin_isolate, load_errors_come_back, .init = setup, .timeout = 120)
{
	char spec[512], err[256];
	struct evr_handler h;

	snprintf(spec, sizeof(spec), "%s,isolate", EVR_CRASH_PLUGIN);
	cr_expect_eq(evr__plugin_from_spec(spec, &opts, &h, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "needs an output file") != NULL, "%s", err);
	cr_expect_eq(evr__plugin_from_spec("/nonexistent/x.so,isolate:y", &opts, &h, err, sizeof(err)), -ENOENT, "%s",
		     err);
	cr_expect_eq(evr__plugin_from_spec("/nonexistent/x.so,isolated:y", &opts, &h, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "unknown option 'isolated'") != NULL, "%s", err);
	cr_expect_eq(evr__plugin_handler("/nonexistent/x.so,isolate", &h, err, sizeof(err)), -EINVAL, "%s", err);
	setenv("EVRING_PLUGIN_HOST", "/nonexistent/evring-plugin-host", 1);
	snprintf(spec, sizeof(spec), "%s,isolate:/dev/null", EVR_CRASH_PLUGIN);
	cr_expect_eq(evr__plugin_from_spec(spec, &opts, &h, err, sizeof(err)), -ENOENT, "%s", err);
	cr_expect(strstr(err, "EVRING_PLUGIN_HOST") != NULL, "%s", err);
}
