/*
 * test_api.c: the producer's calls one at a time, read back as a consumer
 * reads them: opening and closing, events and their bodies, site metadata,
 * dispatchers, trace tags, sites a consumer disables, the lanes of threads
 * that exit, the shared lane, and losses reported by LOST records.
 */
#include "producer_test.h"

Test(api, open_names_the_segment_and_close_unlinks_it)
{
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	const struct pt_meta *proc;
	const msgpack_object *m;
	char shm[128], buf[64];

	pt_open("api-open", 64 << 10, 0);
	cr_assert_str_eq(evr_last_error(), "");
	seg = evr_segment_current();
	cr_assert_not_null(seg);
	snprintf(shm, sizeof(shm), "/evring.%d.api-open", (int)getpid());
	cr_assert_str_eq(seg->shm_name, shm);
	cr_assert(pt_shm_exists(getpid(), "api-open"));
	cr_assert_eq(seg->lane_bytes, 64u << 10);
	cr_assert_eq(seg->lane_count, EVR_DEFAULT_LANES);
	cr_assert_eq(seg->hdr->creator_pid, (uint32_t)getpid());
	cr_assert_not(evr_capture_content());

	pt_read(&log);
	cr_assert_eq(log.nrec, 0, "nothing is recorded before the first record");
	proc = pt_meta_nth(&log, EVR_META_PROCESS, 0);
	cr_assert_not_null(proc, "the process entry is written at open");
	m = pt_meta_map(proc);
	cr_assert_eq(pt_map_u64(m, "pid"), (uint64_t)getpid());
	cr_assert_eq(pt_map_u64(m, "lanes"), EVR_DEFAULT_LANES);
	cr_assert_eq(pt_map_u64(m, "lane_bytes"), 64u << 10);
	cr_assert_eq(pt_map_u64(m, "str_limit"), EVR_STR_LIMIT);
	cr_assert_eq(pt_map_u64(m, "content_limit"), EVR_CONTENT_LIMIT);
	cr_assert_not(pt_map_bool(m, "capture_content"));
	cr_assert_str_eq(pt_obj_str(pt_map_get(m, "program"), buf, sizeof(buf)), program_invocation_short_name);
	cr_assert_null(pt_meta_nth(&log, EVR_META_PROCESS, 1), "one process entry");
	pt_log_free(&log);

	evr_close();
	cr_assert_not(evr_enabled());
	cr_assert_null(evr_segment_current());
	cr_assert_not(pt_shm_exists(getpid(), "api-open"), "evr_close unlinks the segment");
	cr_assert_not_null(strstr(evr_last_error(), "evr_close"), "last error: %s", evr_last_error());
	evr_close(); /* a second close is harmless */
	cr_assert_not(evr_enabled());
}

Test(api, event_body_is_ts_site_span_and_values)
{
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	struct pt_rec *bare, *full;
	uint64_t t0, t1;

	pt_open("api-event", 0, 0);
	seg = evr_segment_current();
	t0 = evr_clock_read(seg->clock_kind);
	EVR_EVENT("app", "bare");
	EVR_EVENT("app.llm", "cache_hit", EVR_U64("entries", 42), EVR_STR("model", "m-1"));
	t1 = evr_clock_read(seg->clock_kind);

	pt_read(&log);
	cr_assert_eq(log.nrec, 2);
	bare = pt_find(&log, EVR_REC_EVENT, "bare", 0);
	full = pt_find(&log, EVR_REC_EVENT, "cache_hit", 0);
	cr_assert_eq(bare->n, 3, "no fields: [ts, site, span]");
	cr_assert_eq(full->n, 5);
	cr_assert(pt_u64(bare, PT_TS) >= t0 && pt_u64(bare, PT_TS) <= pt_u64(full, PT_TS) && pt_u64(full, PT_TS) <= t1,
		  "timestamps are raw reads of the segment clock, in order");
	cr_assert_eq(pt_u64(bare, PT_SPAN), 0, "no current span");
	cr_assert_neq(pt_u64(bare, PT_SITE), pt_u64(full, PT_SITE));
	cr_assert_eq(pt_field(full, "entries")->via.u64, 42);
	cr_assert(pt_str_is(pt_field(full, "model"), "m-1"));
	cr_assert(pt_meta_is(full->site, "dispatcher", "app.llm"));
	cr_assert_eq(bare->lane, full->lane, "one thread, one lane");
	cr_assert_lt(bare->lane, evr_segment_shared_lane(seg), "the first thread gets an exclusive lane");
	cr_assert_lt(bare->pos, full->pos);
	pt_log_free(&log);
	evr_close();
}

Test(api, site_metadata_describes_each_call_site)
{
	struct pt_log log = { 0 };
	struct pt_rec *ev, *end;
	const msgpack_object *f, *m;
	int ev_line, begin_line, end_line;
	char buf[256];

	static const struct {
		const char *name, *type;
		bool content;
	} want[] = {
		{ "i", "i64", false }, { "u", "u64", false }, { "i32", "i32", false },	{ "u32", "u32", false },
		{ "f", "f64", false }, { "b", "bool", false }, { "s", "str", false },	{ "c", "str", true },
	};

	pt_open("api-meta", 0, 0);
	ev_line = __LINE__ + 1; /* GCC's __LINE__ in a macro is the line of the macro's name */
	EVR_EVENT("app.meta", "described", EVR_I64("i", -1), EVR_U64("u", 1), EVR_I32("i32", 1), EVR_U32("u32", 1),
		  EVR_F64("f", 1.5), EVR_BOOL("b", true), EVR_STR("s", "x"), EVR_CONTENT("c", "y"));
	begin_line = __LINE__ + 1;
	struct evr_span s = EVR_SPAN_BEGIN("app.meta", "spanned", EVR_STR("route", "/r"));
	end_line = __LINE__ + 1;
	EVR_SPAN_END(s, EVR_U32("results", 3), EVR_BOOL("cached", false));

	pt_read(&log);
	ev = pt_find(&log, EVR_REC_EVENT, "described", 0);
	m = pt_meta_map(ev->site);
	cr_assert(pt_meta_is(ev->site, "kind", "event"));
	cr_assert(pt_meta_is(ev->site, "dispatcher", "app.meta"));
	cr_assert(pt_meta_is(ev->site, "file", __FILE__), "file: %s",
		  pt_obj_str(pt_map_get(m, "file"), buf, sizeof(buf)));
	cr_assert(pt_meta_is(ev->site, "func", __func__), "func: %s",
		  pt_obj_str(pt_map_get(m, "func"), buf, sizeof(buf)));
	cr_assert_eq(pt_map_u64(m, "line"), (uint64_t)ev_line);
	f = pt_site_fields(ev->site);
	cr_assert_eq(f->via.array.size, 8);
	for (uint32_t i = 0; i < 8; i++) {
		const msgpack_object *fd = &f->via.array.ptr[i];
		cr_assert(pt_str_is(pt_map_get(fd, "name"), want[i].name), "field %u name", i);
		cr_assert(pt_str_is(pt_map_get(fd, "type"), want[i].type), "field %u (%s) type: %s", i, want[i].name,
			  pt_obj_str(pt_map_get(fd, "type"), buf, sizeof(buf)));
		cr_assert_eq(pt_map_bool(fd, "content"), want[i].content, "field %u content flag", i);
	}

	/* The begin site names the span; the end site defines the values known at its end. */
	end = pt_find(&log, EVR_REC_SPAN_END, "spanned", 0);
	cr_assert(pt_meta_is(end->site, "kind", "span_begin"));
	cr_assert(pt_meta_is(end->site, "dispatcher", "app.meta"));
	cr_assert_eq(pt_map_u64(pt_meta_map(end->site), "line"), (uint64_t)begin_line);
	cr_assert_eq(pt_site_fields(end->site)->via.array.size, 1);
	cr_assert(pt_str_is(pt_map_get(&pt_site_fields(end->site)->via.array.ptr[0], "name"), "route"));
	cr_assert(pt_meta_is(end->end_site, "kind", "span_end"));
	cr_assert(pt_meta_is(end->end_site, "file", __FILE__));
	cr_assert(pt_meta_is(end->end_site, "func", __func__));
	cr_assert_eq(pt_map_u64(pt_meta_map(end->end_site), "line"), (uint64_t)end_line);
	f = pt_site_fields(end->end_site);
	cr_assert_eq(f->via.array.size, 2);
	cr_assert(pt_str_is(pt_map_get(&f->via.array.ptr[0], "name"), "results"));
	cr_assert(pt_str_is(pt_map_get(&f->via.array.ptr[0], "type"), "u32"));
	cr_assert(pt_str_is(pt_map_get(&f->via.array.ptr[1], "type"), "bool"));
	cr_assert_eq(pt_field(end, "results")->via.u64, 3);
	cr_assert_eq(pt_field(end, "cached")->via.boolean, false);
	pt_log_free(&log);
	evr_close();
}

static void emit_looped(uint64_t i)
{
	EVR_EVENT("app", "looped", EVR_U64("i", i));
}

Test(api, a_site_registers_once)
{
	struct pt_log log = { 0 };
	uint64_t site;

	pt_open("api-once", 0, 0);
	for (uint64_t i = 0; i < 50; i++)
		emit_looped(i);
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "looped"), 50);
	cr_assert_eq(pt_sites_named(&log, "event", "looped"), 1, "one metadata entry however often the site runs");
	site = pt_u64(pt_find(&log, EVR_REC_EVENT, "looped", 0), PT_SITE);
	for (size_t i = 0; i < 50; i++) {
		struct pt_rec *r = pt_find(&log, EVR_REC_EVENT, "looped", i);
		cr_assert_eq(pt_u64(r, PT_SITE), site);
		cr_assert_eq(pt_field(r, "i")->via.u64, i, "records in the order written");
	}
	pt_log_free(&log);
	evr_close();
}

Test(api, event_in_names_its_span_explicitly)
{
	struct pt_log log = { 0 };
	struct evr_span none = { 0, 0, 0, 0, 0, 0 }, other, cur;
	uint64_t other_id, cur_id;

	pt_open("api-event-in", 0, 0);
	other = EVR_SPAN_BEGIN_ASYNC(none, "app", "stream");
	cur = EVR_SPAN_BEGIN("app", "handler");
	other_id = other.id;
	cur_id = cur.id;
	EVR_EVENT_IN(other, "app", "chunk", EVR_U32("n", 1));
	EVR_EVENT("app", "plain");
	EVR_SPAN_END(cur);
	EVR_SPAN_END(other);
	pt_read(&log);
	cr_assert_eq(pt_u64(pt_find(&log, EVR_REC_EVENT, "chunk", 0), PT_SPAN), other_id);
	cr_assert_eq(pt_u64(pt_find(&log, EVR_REC_EVENT, "plain", 0), PT_SPAN), cur_id);
	pt_log_free(&log);
	evr_close();
}

Test(api, dispatcher_entries_and_bad_paths)
{
	static const char *bad[] = { "", ".", ".app", "app.", "app..llm", "app llm", "app/llm", "app.llm\n",
				     "caf\xc3\xa9", "app:llm", "app\tllm" };
	struct pt_log log = { 0 };
	char long_ok[256], long_bad[257];
	char buf[300];

	memset(long_ok, 'a', 255);
	long_ok[255] = 0;
	memset(long_bad, 'a', 256);
	long_bad[256] = 0;

	pt_open("api-disp", 0, 0);
	cr_assert_eq(evr_dispatcher("app", true), 0);
	cr_assert_eq(evr_dispatcher("app.llm", false), 0);
	cr_assert_eq(evr_dispatcher("app.llm", true), 0, "a later declaration overrides");
	cr_assert_eq(evr_dispatcher("A-b_c.D9.x", true), 0);
	cr_assert_eq(evr_dispatcher(long_ok, false), 0);
	cr_assert_eq(evr_dispatcher(NULL, true), -EINVAL);
	cr_assert_eq(evr_dispatcher(long_bad, true), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(evr_dispatcher(bad[i], true), -EINVAL, "path \"%s\" accepted", bad[i]);

	pt_read(&log);
	{
		static const struct {
			const char *path;
			bool propagate;
		} want[] = { { "app", true }, { "app.llm", false }, { "app.llm", true }, { "A-b_c.D9.x", true } };

		for (size_t i = 0; i < 4; i++) {
			const struct pt_meta *d = pt_meta_nth(&log, EVR_META_DISPATCHER, i);
			cr_assert_not_null(d, "dispatcher entry %zu", i);
			cr_assert(pt_meta_is(d, "path", want[i].path), "entry %zu path %s", i,
				  pt_obj_str(pt_map_get(pt_meta_map(d), "path"), buf, sizeof(buf)));
			cr_assert_eq(pt_map_bool(pt_meta_map(d), "propagate"), want[i].propagate);
		}
		cr_assert(pt_meta_is(pt_meta_nth(&log, EVR_META_DISPATCHER, 4), "path", long_ok));
		cr_assert_null(pt_meta_nth(&log, EVR_META_DISPATCHER, 5), "a refused path writes no entry");
	}
	pt_log_free(&log);

	evr_close();
	cr_assert_eq(evr_dispatcher("app", true), -ENODEV, "tracing is off");
	cr_assert_eq(evr_dispatcher("app..x", true), -EINVAL);
}

Test(api, trace_tags_is_an_event_in_the_current_span)
{
	struct pt_log log = { 0 };
	struct pt_rec *r;
	struct evr_span s;
	uint64_t sid;

	pt_open("api-tags", 0, 0);
	s = EVR_SPAN_BEGIN("app", "request");
	sid = s.id;
	evr_trace_tags("sess-1", "user-9");
	EVR_SPAN_END(s);
	evr_trace_tags(NULL, "user-only");

	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "trace.tags"), 2);
	r = pt_find(&log, EVR_REC_EVENT, "trace.tags", 0);
	cr_assert(pt_meta_is(r->site, "dispatcher", "evring"));
	cr_assert_eq(pt_u64(r, PT_SPAN), sid, "tags the trace of the current span");
	cr_assert(pt_str_is(pt_field(r, "session.id"), "sess-1"));
	cr_assert(pt_str_is(pt_field(r, "user.id"), "user-9"));
	r = pt_find(&log, EVR_REC_EVENT, "trace.tags", 1);
	cr_assert_eq(pt_u64(r, PT_SPAN), 0);
	cr_assert_eq(pt_field(r, "session.id")->type, MSGPACK_OBJECT_NIL);
	cr_assert(pt_str_is(pt_field(r, "user.id"), "user-only"));
	pt_log_free(&log);
	evr_close();
}

/* ---- sites a consumer disables ----------------------------------------- */

static void emit_toggled(uint64_t i)
{
	EVR_EVENT("app", "toggled", EVR_U64("i", i));
}

/* Begins, fills and ends one span from fixed sites; returns its id (0: not recorded). */
static uint64_t gated_span(void)
{
	struct evr_span s = EVR_SPAN_BEGIN("app", "gated");
	uint64_t id = s.id;

	EVR_EVENT("app", "in_gated");
	EVR_SPAN_END(s, EVR_BOOL("ok", true));
	return id;
}

static void site_flags_set(uint64_t site, uint32_t flags)
{
	struct evr_meta_entry *e = evr_meta_entry_at(evr_segment_current(), site);

	cr_assert_not_null(e);
	__atomic_store_n(&e->flags, flags, __ATOMIC_RELEASE); /* as a consumer does, from its own process */
}

Test(api, disabled_site_writes_nothing_until_enabled)
{
	struct pt_log log = { 0 };
	uint64_t site;

	pt_open("api-disable", 0, 0);
	emit_toggled(0);
	pt_read(&log);
	site = pt_u64(pt_find(&log, EVR_REC_EVENT, "toggled", 0), PT_SITE);
	cr_assert_eq(evr_meta_entry_at(evr_segment_current(), site)->flags, 0);

	site_flags_set(site, EVR_SITE_DISABLED);
	for (uint64_t i = 1; i <= 10; i++)
		emit_toggled(i);
	EVR_EVENT("app", "other");
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "toggled"), 1, "the disabled site wrote");
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "other"), 1, "other sites still write");

	site_flags_set(site, 0);
	emit_toggled(11);
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "toggled"), 2);
	cr_assert_eq(pt_field(pt_find(&log, EVR_REC_EVENT, "toggled", 1), "i")->via.u64, 11);
	cr_assert_eq(pt_sites_named(&log, "event", "toggled"), 1, "re-enabling does not register again");
	pt_log_free(&log);
	evr_close();
}

Test(api, span_end_is_written_whenever_its_begin_was)
{
	struct pt_log log = { 0 };
	uint64_t id, begin_site, end_site;

	pt_open("api-gated", 0, 0);
	id = gated_span();
	cr_assert_neq(id, 0);
	pt_read(&log);
	begin_site = pt_u64(pt_find(&log, EVR_REC_SPAN_BEGIN, "gated", 0), PT_SITE);
	end_site = pt_u64(pt_find(&log, EVR_REC_SPAN_END, "gated", 0), PT_END_SITE);

	/* A disabled end site still ends the spans its begin recorded. */
	site_flags_set(end_site, EVR_SITE_DISABLED);
	id = gated_span();
	cr_assert_neq(id, 0);
	pt_read(&log);
	cr_assert_not_null(pt_span_rec(&log, EVR_REC_SPAN_BEGIN, id));
	cr_assert_eq(pt_span_count(&log, EVR_REC_SPAN_END, id), 1, "end dropped because its site is disabled");
	site_flags_set(end_site, 0);

	/* A disabled begin site records neither end, and the span never becomes current. */
	site_flags_set(begin_site, EVR_SITE_DISABLED);
	cr_assert_eq(gated_span(), 0);
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_SPAN_BEGIN, "gated"), 2);
	cr_assert_eq(pt_count(&log, EVR_REC_SPAN_END, "gated"), 2);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "in_gated"), 3);
	cr_assert_eq(pt_u64(pt_find(&log, EVR_REC_EVENT, "in_gated", 2), PT_SPAN), 0);
	cr_assert_eq(evr_span_current().id, 0);
	pt_log_free(&log);
	evr_close();
}

/* ---- threads and lanes ------------------------------------------------- */

struct thread_info {
	uint32_t tid;
	const char *name;
};

static void *emit_and_exit(void *p)
{
	struct thread_info *ti = p;

	if (ti->name)
		pthread_setname_np(pthread_self(), ti->name);
	ti->tid = pt_tid();
	EVR_EVENT("app", "from_thread", EVR_U32("tid", ti->tid));
	return NULL;
}

static const struct pt_meta *thread_entry(const struct pt_log *log, uint32_t tid)
{
	for (size_t i = 0; pt_meta_nth(log, EVR_META_THREAD, i); i++) {
		const struct pt_meta *m = pt_meta_nth(log, EVR_META_THREAD, i);
		if (pt_map_u64(pt_meta_map(m), "tid") == tid)
			return m;
	}
	return NULL;
}

Test(api, thread_exit_releases_its_lane)
{
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	struct thread_info ti = { 0, "evr-worker" };
	const struct pt_meta *te;
	struct pt_rec *r, *mine;
	pthread_t t;
	uint64_t me = ((uint64_t)getpid() << 32) | pt_tid();

	pt_open("api-thread-exit", 0, 0);
	seg = evr_segment_current();
	EVR_EVENT("app", "from_main");
	cr_assert_eq(pthread_create(&t, NULL, emit_and_exit, &ti), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);

	pt_read(&log);
	r = pt_find(&log, EVR_REC_EVENT, "from_thread", 0);
	mine = pt_find(&log, EVR_REC_EVENT, "from_main", 0);
	cr_assert_neq(r->lane, mine->lane);
	cr_assert_lt(r->lane, evr_segment_shared_lane(seg));
	cr_assert_eq(evr_ld_acq_64(&seg->lanes[r->lane].owner), 0, "the exited thread still owns lane %u", r->lane);
	cr_assert_eq(seg->lanes[r->lane].claims, 1);
	cr_assert_eq(evr_ld_64(&seg->lanes[mine->lane].owner), me, "a live thread keeps its lane");

	te = thread_entry(&log, ti.tid);
	cr_assert_not_null(te, "a thread entry at the thread's first record");
	cr_assert_eq(pt_map_u64(pt_meta_map(te), "lane"), r->lane);
	cr_assert_not(pt_map_bool(pt_meta_map(te), "shared"));
	cr_assert(pt_meta_is(te, "name", "evr-worker"));

	/* Releasing by hand frees the lane now; the next record claims one again, with new span ids. */
	{
		struct evr_span a = EVR_SPAN_BEGIN("app", "before_release"), b;
		uint64_t a_id = a.id;

		EVR_SPAN_END(a);
		evr_thread_release();
		cr_assert_eq(evr_ld_acq_64(&seg->lanes[mine->lane].owner), 0);
		cr_assert_eq(evr_span_current().id, 0);
		b = EVR_SPAN_BEGIN("app", "after_release");
		cr_assert_neq(b.id >> 40, a_id >> 40, "a new writer, a new serial in the span ids");
		EVR_SPAN_END(b);
	}
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_SPAN_END, "after_release"), 1);
	pt_log_free(&log);
	evr_close();
}

Test(api, lanes_of_exited_threads_are_reused)
{
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	enum { THREADS = 3 * EVR_DEFAULT_LANES };

	pt_open("api-reuse", 0, 0);
	seg = evr_segment_current();
	/* More threads than lanes, one after another: each finds a free exclusive lane. */
	for (int i = 0; i < THREADS; i++) {
		struct thread_info ti = { 0, NULL };
		pthread_t t;

		cr_assert_eq(pthread_create(&t, NULL, emit_and_exit, &ti), 0);
		cr_assert_eq(pthread_join(t, NULL), 0);
	}
	cr_assert_eq(seg->hdr->lane_fallbacks, 0, "a thread went to the shared lane: lanes were not released");
	cr_assert_eq(seg->hdr->lane_claims, THREADS);
	for (uint32_t i = 0; i < seg->lane_count - 1; i++)
		cr_assert_eq(evr_ld_64(&seg->lanes[i].owner), 0, "lane %u still owned", i);
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "from_thread"), THREADS);
	pt_log_free(&log);
	evr_close();
}

struct shared_arg {
	uint32_t idx;
	pthread_barrier_t *bar;
};

static void *emit_on_shared(void *p)
{
	struct shared_arg *a = p;

	pthread_barrier_wait(a->bar); /* all alive at once: none can take another's freed lane */
	for (uint32_t i = 0; i < 100; i++)
		EVR_EVENT("app", "crowded", EVR_U32("thread", a->idx), EVR_U32("i", i));
	pthread_barrier_wait(a->bar);
	return NULL;
}

Test(api, threads_beyond_the_lanes_write_to_the_shared_lane)
{
	struct evr_config cfg = { .name = "api-shared", .lanes = 3, .capture_content = 0 };
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	pthread_barrier_t bar;
	struct shared_arg args[4];
	pthread_t t[4];
	uint32_t next[4] = { 0 }, shared = 0;

	pt_env_clear();
	cr_assert_eq(evr_open(&cfg), 0, "%s", evr_last_error());
	seg = evr_segment_current();
	cr_assert_eq(seg->lane_count, 3);
	pthread_barrier_init(&bar, NULL, 4);
	for (uint32_t i = 0; i < 4; i++) {
		args[i] = (struct shared_arg){ i, &bar };
		cr_assert_eq(pthread_create(&t[i], NULL, emit_on_shared, &args[i]), 0);
	}
	for (uint32_t i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&bar);
	cr_assert_eq(seg->hdr->lane_fallbacks, 2, "two exclusive lanes for four threads");

	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "crowded"), 400);
	for (size_t i = 0; i < 400; i++) {
		struct pt_rec *r = pt_find(&log, EVR_REC_EVENT, "crowded", i);
		uint64_t th = pt_field(r, "thread")->via.u64;
		cr_assert_lt(th, 4);
		cr_assert_eq(pt_field(r, "i")->via.u64, next[th], "thread %llu out of order", (unsigned long long)th);
		next[th]++;
		shared += r->lane == evr_segment_shared_lane(seg);
	}
	cr_assert_eq(shared, 200);
	for (size_t i = 0; i < 4; i++) {
		const struct pt_meta *te = pt_meta_nth(&log, EVR_META_THREAD, i);
		cr_assert_not_null(te);
		cr_assert_eq(pt_map_bool(pt_meta_map(te), "shared"),
			     pt_map_u64(pt_meta_map(te), "lane") == evr_segment_shared_lane(seg));
	}
	pt_log_free(&log);
	evr_close();
}

/* ---- losses ------------------------------------------------------------- */

Test(api, full_lane_drops_and_a_lost_record_reports_the_exact_count)
{
	struct evr_config cfg = { .name = "api-lost", .capture_content = 0 };
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	struct evr_lane *lane;
	struct pt_rec *lost = NULL, *after;
	uint64_t kept, dropped;
	enum { N = 1000 };

	pt_env_clear();
	setenv("EVRING_LANE_BYTES", "4K", 1);
	cr_assert_eq(evr_open(&cfg), 0, "%s", evr_last_error());
	seg = evr_segment_current();
	cr_assert_eq(seg->lane_bytes, 4096);
	for (uint64_t i = 0; i < N; i++)
		EVR_EVENT("app", "flood", EVR_U64("i", i));

	pt_read(&log);
	kept = pt_count(&log, EVR_REC_EVENT, "flood");
	dropped = N - kept;
	cr_assert_gt(kept, 0);
	cr_assert_gt(dropped, 0, "a 4K lane holds %llu records", (unsigned long long)kept);
	for (uint64_t i = 0; i < kept; i++)
		cr_assert_eq(pt_field(pt_find(&log, EVR_REC_EVENT, "flood", i), "i")->via.u64, i,
			     "the first records are kept, the later ones dropped");
	cr_assert_eq(log.lost_records, 0, "no room for a LOST record yet");
	lane = &seg->lanes[pt_find(&log, EVR_REC_EVENT, "flood", 0)->lane];
	cr_assert_eq(lane->lost, dropped);
	cr_assert_eq(lane->lost_pending, dropped);

	/* The reader freed the lane: the next record is preceded by LOST with the exact count. */
	EVR_EVENT("app", "after_loss");
	pt_read(&log);
	cr_assert_eq(log.lost_records, 1);
	cr_assert_eq(log.lost, dropped);
	after = pt_find(&log, EVR_REC_EVENT, "after_loss", 0);
	for (size_t i = 0; i < log.nrec; i++)
		if (log.rec[i].type == EVR_REC_LOST)
			lost = &log.rec[i];
	cr_assert_eq(lost->lane, after->lane);
	cr_assert_lt(lost->pos, after->pos, "the loss appears where it happened, before the next record");
	cr_assert_eq(lane->lost_pending, 0);
	cr_assert_eq(lane->lost, dropped, "the all-time count stays");
	pt_log_free(&log);
	evr_close();
}

/* ---- closing and opening again ----------------------------------------- */

static void emit_reused(int64_t i)
{
	EVR_EVENT("app", "reused", EVR_I64("i", i));
}

static uint64_t span_reused(void)
{
	struct evr_span s = EVR_SPAN_BEGIN("app", "reused_span");
	uint64_t id = s.id;

	EVR_SPAN_END(s);
	return id;
}

/*
 * Also the regression test for sites first used while tracing was closed: they
 * were parked on a disabled flag outside the list of registered sites, so no
 * later evr_open reset them and they never recorded again.
 */
Test(api, close_makes_sites_noops_and_open_records_again)
{
	struct pt_log log = { 0 };
	uint64_t id;

	pt_open("api-reopen-a", 0, 0);
	emit_reused(1);
	cr_assert_neq(span_reused(), 0);
	evr_close();

	/* Closed: the same sites, and sites never used before, write nothing and do not crash. */
	emit_reused(2);
	cr_assert_eq(span_reused(), 0);
	EVR_EVENT("app", "first_used_while_closed");
	{
		EVR_SPAN_SCOPED(s, "app", "scoped_while_closed");
		cr_assert_eq(s.id, 0);
	}
	evr_trace_tags("s", "u");
	cr_assert_not(evr_enabled());
	cr_assert_not(pt_shm_exists(getpid(), "api-reopen-a"));

	pt_open("api-reopen-b", 0, 0);
	emit_reused(3);
	id = span_reused();
	cr_assert_neq(id, 0, "a site used while closed stays off after evr_open");
	EVR_EVENT("app", "first_used_while_closed");
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "reused"), 1,
		     "a site used while tracing was closed writes nothing after evr_open");
	cr_assert_eq(pt_field(pt_find(&log, EVR_REC_EVENT, "reused", 0), "i")->via.i64, 3);
	cr_assert_eq(pt_span_count(&log, EVR_REC_SPAN_BEGIN, id), 1);
	cr_assert_eq(pt_span_count(&log, EVR_REC_SPAN_END, id), 1);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "first_used_while_closed"), 1);
	pt_log_free(&log);
	evr_close();
}

Test(api, open_twice_replaces_the_segment)
{
	struct pt_log log = { 0 };

	pt_open("api-twice-1", 0, 0);
	emit_reused(1);
	pt_open("api-twice-2", 0, 0);
	cr_assert_not(pt_shm_exists(getpid(), "api-twice-1"), "the first segment is unlinked");
	cr_assert(pt_shm_exists(getpid(), "api-twice-2"));
	emit_reused(2);
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "reused"), 1);
	cr_assert_eq(pt_field(pt_find(&log, EVR_REC_EVENT, "reused", 0), "i")->via.i64, 2);
	cr_assert_eq(pt_sites_named(&log, "event", "reused"), 1, "the site registered in the new segment");
	cr_assert_not_null(pt_meta_nth(&log, EVR_META_PROCESS, 0));
	pt_log_free(&log);

	/* The same name again: a fresh segment under the same shm name. */
	pt_open("api-twice-2", 0, 0);
	pt_read(&log);
	cr_assert_eq(log.nrec, 0);
	emit_reused(3);
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "reused"), 1);
	pt_log_free(&log);
	evr_close();
	cr_assert_not(pt_shm_exists(getpid(), "api-twice-2"));
}

Test(api, thread_release_reports_the_pending_loss)
{
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	uint64_t kept;
	uint32_t lane;
	enum { N = 500 };

	pt_open("api-release-loss", 4096, 0);
	seg = evr_segment_current();
	for (uint64_t i = 0; i < N; i++)
		EVR_EVENT("app", "flood", EVR_U64("i", i));
	pt_read(&log);
	kept = pt_count(&log, EVR_REC_EVENT, "flood");
	lane = pt_find(&log, EVR_REC_EVENT, "flood", 0)->lane;
	cr_assert_lt(kept, N);
	cr_assert_eq(seg->lanes[lane].lost_pending, N - kept);

	/* Room was freed: releasing the lane writes the LOST record then, not at some later record. */
	evr_thread_release();
	cr_assert_eq(evr_ld_acq_64(&seg->lanes[lane].owner), 0);
	pt_read(&log);
	cr_assert_eq(log.lost_records, 1);
	cr_assert_eq(log.lost, N - kept);
	cr_assert_eq(seg->lanes[lane].lost_pending, 0);
	pt_log_free(&log);
	evr_close();
}

static void emit_before_full(void)
{
	EVR_EVENT("app", "before_full");
}

Test(api, full_metadata_area_refuses_new_entries_and_counts_them)
{
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	char path[201];
	int rc = 0, n = 0;
	struct evr_span s;

	pt_open("api-meta-full", 0, 0);
	seg = evr_segment_current();
	emit_before_full();
	memset(path, 'p', sizeof(path) - 1);
	path[sizeof(path) - 1] = 0;
	while ((rc = evr_dispatcher(path, true)) == 0)
		cr_assert_lt(++n, 100000, "the metadata area never filled");
	cr_assert_eq(rc, -ENOSPC);
	cr_assert_gt(seg->hdr->meta_dropped, 0);

	/* A site first used now cannot register: it writes nothing, and costs nothing more after. */
	for (int i = 0; i < 3; i++)
		EVR_EVENT("app", "after_full");
	s = EVR_SPAN_BEGIN("app", "span_after_full");
	cr_assert_eq(s.id, 0);
	EVR_SPAN_END(s);
	emit_before_full(); /* a registered site goes on writing */
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "before_full"), 2);
	cr_assert_eq(pt_count(&log, 0, "after_full"), 0);
	cr_assert_eq(pt_count(&log, 0, "span_after_full"), 0);
	cr_assert_eq(pt_meta_nth(&log, EVR_META_DISPATCHER, (size_t)n - 1) != NULL, true);
	pt_log_free(&log);
	evr_close();
}
