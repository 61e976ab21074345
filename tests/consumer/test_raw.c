/*
 * test_raw.c: raw captures (`evring record --raw`). The ring's runs give
 * exactly the records its reader gives, on exclusive lanes, the shared lane
 * (tid trailers), across lane wraps (PAD) and with LOST records. A real
 * producer process recorded raw: the replay's jsonl is byte for byte the
 * live decode's (spans, events, LOST, several threads, the shared lane, lane
 * wraps), also when the producer is SIGKILLed mid-run; the capture is a
 * msgpack stream a plain msgpack-c unpacker walks entry by entry; under
 * overload delivered + lost == written; a corrupt or truncated capture is
 * refused with an error naming the entry, counted, and what came before it
 * is delivered. A round with no entries of its own is written when the live
 * round handed something out, with the round before it, and the last round
 * at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <msgpack.h>

#include <evring/consumer.h>
#include <evring/evring.h>
#include <evring/llm.h>
#include <evring/ring.h>

#include "capture_raw.h"
#include "producer_child.h"

/* ---- the ring: runs against the reader ------------------------------------------------------------------------- */

struct seen {
	uint32_t type, lane, tid, len;
	uint64_t pos;
	uint8_t body[64];
};

struct seen_log {
	struct seen *v;
	size_t n, cap;
};

static void seen_add(struct seen_log *l, const struct evr_record *r, uint32_t lane)
{
	struct seen *s;

	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		cr_assert_not_null(l->v);
	}
	s = &l->v[l->n++];
	memset(s, 0, sizeof(*s));
	s->type = r->type;
	s->lane = lane;
	s->tid = r->tid;
	s->pos = r->pos;
	s->len = r->body_len;
	cr_assert_leq(r->body_len, sizeof(s->body));
	memcpy(s->body, r->body, r->body_len);
}

/* Reads every lane to its end with evr_reader_next. */
static void read_plain(struct evr_reader *r, uint32_t lanes, struct seen_log *out)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_record rec;

	for (uint32_t l = 0; l < lanes; l++) {
		while (evr_reader_next(r, l, &rec, buf, sizeof(buf)) == 1)
			seen_add(out, &rec, l);
		evr_reader_release(r, l);
	}
}

/* Reads every lane to its end in runs, parsed back with evr_run_next, and the single records between them. */
static void read_runs(struct evr_reader *r, const struct evr_segment *seg, struct seen_log *out, uint64_t *runs)
{
	static uint8_t buf[1 << 16], body[EVR_BODY_MAX];
	struct evr_record rec;
	struct evr_run run;

	for (uint32_t l = 0; l < seg->lane_count; l++) {
		for (;;) {
			if (evr_reader_next_run(r, l, buf, sizeof(buf), &run) == 1) {
				size_t off = 0;
				uint32_t n = 0;
				int rc;

				while ((rc = evr_run_next(buf, run.bytes, run.pos, &off, seg->salt, seg->lane_bytes, &rec)) == 1) {
					seen_add(out, &rec, l);
					n++;
				}
				cr_assert_eq(rc, 0, "a run the reader copied parses whole");
				cr_assert_eq(off, run.bytes);
				cr_assert_eq(n, run.records);
				(*runs)++;
				continue;
			}
			if (evr_reader_next(r, l, &rec, body, sizeof(body)) != 1)
				break;
			seen_add(out, &rec, l);
		}
		evr_reader_release(r, l);
	}
}

Test(raw, runs_give_exactly_the_records_the_reader_gives)
{
	struct evr_segment_config cfg = { .lanes = 4, .lane_bytes = 4096, .program = "raw-ring" };
	struct evr_segment seg;
	struct evr_writer w[4];
	struct evr_reader plain, runs;
	struct seen_log a = { 0 }, b = { 0 };
	char name[64], err[EVR_ERR_MAX];
	uint64_t nruns = 0, written = 0, dropped = 0;
	int k1, k2;

	snprintf(name, sizeof(name), "/evring.%d.raw-ring", (int)getpid());
	evr_segment_unlink(name);
	cr_assert_eq(evr_segment_create(&seg, name, &cfg, err, sizeof(err)), 0, "%s", err);
	k1 = evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), 0, NULL, 0, NULL);
	k2 = evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), EVR_SLOT_ANOTHER, NULL, 0, NULL);
	cr_assert(k1 >= 0 && k2 >= 0 && k1 != k2);
	cr_assert_eq(evr_reader_init_slot(&plain, &seg, (uint32_t)k1), 0);
	cr_assert_eq(evr_reader_init_slot(&runs, &seg, (uint32_t)k2), 0);
	/* Three exclusive lanes and two writers on the shared lane (tid trailers). */
	for (uint32_t i = 0; i < 3; i++)
		cr_assert_eq(evr_writer_open(&w[i], &seg, (uint32_t)getpid(), 100 + i, 0), 0);
	cr_assert_eq(evr_writer_open(&w[3], &seg, (uint32_t)getpid(), 200, EVR_WRITER_FORCE_SHARED), 0);
	cr_assert(w[3].shared);
	for (uint32_t round = 0; round < 60; round++) {
		/* Round 7 writes past what a lane holds: drops, then LOST records. */
		uint32_t burst = round == 7 ? 400 : 40;

		for (uint32_t j = 0; j < burst; j++) {
			for (uint32_t i = 0; i < 4; i++) {
				uint8_t body[48];
				uint32_t len = 1 + (j * 7 + i * 5 + round) % 47;

				for (uint32_t x = 0; x < len; x++)
					body[x] = (uint8_t)(round * 31 + j * 7 + i + x);
				if (evr_writer_write(&w[i], EVR_REC_EVENT, body, len))
					written++;
				else
					dropped++;
			}
		}
		read_plain(&plain, seg.lane_count, &a);
		read_runs(&runs, &seg, &b, &nruns);
	}
	for (uint32_t i = 0; i < 4; i++)
		evr_writer_close(&w[i]);
	read_plain(&plain, seg.lane_count, &a);
	read_runs(&runs, &seg, &b, &nruns);

	cr_assert_gt(dropped, 0, "the burst overflowed the lanes");
	cr_assert_gt(nruns, 60, "records came in runs");
	cr_assert_gt(plain.stats.pads, 10, "the lanes wrapped");
	cr_assert_gt(plain.stats.lost_records, 0);
	cr_assert_eq(a.n, b.n, "reader %zu records, runs %zu", a.n, b.n);
	for (size_t i = 0; i < a.n && i < b.n; i++) {
		cr_assert_eq(a.v[i].lane, b.v[i].lane, "record %zu", i);
		cr_assert_eq(a.v[i].pos, b.v[i].pos, "record %zu", i);
		cr_assert_eq(a.v[i].type, b.v[i].type, "record %zu", i);
		cr_assert_eq(a.v[i].tid, b.v[i].tid, "record %zu", i);
		cr_assert_eq(a.v[i].len, b.v[i].len, "record %zu", i);
		if (a.v[i].type != EVR_REC_LOST) /* the ts in a LOST body is the writer's; both read the same bytes */
			cr_assert_eq(memcmp(a.v[i].body, b.v[i].body, a.v[i].len), 0, "record %zu", i);
	}
	/* Exact accounting on both: every write delivered or counted lost. */
	cr_assert_eq(plain.stats.delivered - plain.stats.lost_records - 3 + plain.stats.lost, written + dropped,
		     "delivered %llu (LOST %llu, THREAD 3) lost %llu written %llu dropped %llu",
		     (unsigned long long)plain.stats.delivered, (unsigned long long)plain.stats.lost_records,
		     (unsigned long long)plain.stats.lost, (unsigned long long)written, (unsigned long long)dropped);
	cr_assert_eq(runs.stats.delivered, plain.stats.delivered);
	cr_assert_eq(runs.stats.lost, plain.stats.lost);
	/* A run's bytes, shifted by one record's worth of position, are no records there. */
	{
		uint8_t buf[4096];
		struct evr_record rec;
		struct evr_run run;
		size_t off = 0;

		uint32_t lane;
		int rc;

		cr_assert_eq(evr_writer_open(&w[0], &seg, (uint32_t)getpid(), 300, 0), 0);
		lane = (uint32_t)(w[0].lane - seg.lanes);
		cr_assert(evr_writer_write(&w[0], EVR_REC_EVENT, "abc", 3));
		evr_writer_close(&w[0]);
		rc = evr_reader_next_run(&runs, lane, buf, sizeof(buf), &run);

		cr_assert_eq(rc, 1, "lane %u: rc %d, pos %llu tail %llu", lane, rc, (unsigned long long)runs.cur[lane].pos,
			     (unsigned long long)seg.lanes[lane].tail);
		cr_assert_eq(evr_run_next(buf, run.bytes, run.pos + 8, &off, seg.salt, seg.lane_bytes, &rec), -EBADMSG);
		cr_assert_eq(off, 0);
		while ((rc = evr_run_next(buf, run.bytes - 8, run.pos, &off, seg.salt, seg.lane_bytes, &rec)) == 1)
			;
		cr_assert_eq(rc, -EBADMSG, "a run cut inside a record");
		cr_assert_lt(off, run.bytes - 8, "the offset stays at the record cut");
	}
	evr_reader_fini(&plain);
	evr_reader_fini(&runs);
	free(a.v);
	free(b.v);
	evr_segment_close(&seg);
	evr_segment_unlink(name);
}

/* ---- a real producer ---------------------------------------------------------------------------------------------- */

/* More than a 4 KiB lane holds, before any consumer reads: drops, then a LOST record in the stream. */
static void burst(void)
{
	for (uint32_t i = 0; i < 2000; i++)
		EVR_EVENT("app", "burst", EVR_U32("i", i));
}

static void *one_thread(void *arg)
{
	uintptr_t t = (uintptr_t)arg;

	for (uint32_t k = 0; k < 60; k++) {
		struct evr_span q = evr_query_start("what is evring?");
		struct evr_span r = evr_retrieve_start("docs", "what is evring?", 3);
		struct evr_span e = evr_embedding_start("bge-small", 1);

		evr_embedding_end(&e, 7, 384);
		evr_retrieve_end(&r, 3, 0.92, NULL);
		struct evr_span chat = evr_llm_chat_start("vllm", "llama-3-8b", "prompt", 64, 0.2, true);
		for (uint32_t i = 0; i < 5; i++)
			evr_llm_chat_chunk(&chat, i, 1, "tok");
		evr_llm_chat_end(&chat, "llama-3-8b", 120, 5, "stop", "answer");
		struct evr_span tool = evr_tool_call_start("search", "call-1", "{\"q\":1}");
		evr_tool_call_fail(&tool, "timeout", "tool timed out");
		EVR_EVENT("app", "step", EVR_U64("thread", t), EVR_U32("k", k), EVR_STR("tag", "run-a"));
		evr_query_end(&q, "an answer");
		if ((k & 7) == 7) {
			struct timespec ts = { 0, 2000000 }; /* the consumer keeps up between bursts */
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

/* Three threads on two exclusive lanes and the shared lane (lanes = 3), each lane wrapping many times. */
static void workload(void)
{
	pthread_t th[3];

	EVR_EVENT("app", "start", EVR_U32("threads", 3)); /* after the burst's drops: a LOST record first */
	for (uintptr_t i = 0; i < 3; i++)
		if (pthread_create(&th[i], NULL, one_thread, (void *)i) != 0)
			_exit(5);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
}

static void half_trace(void)
{
	struct evr_span q = evr_query_start("never finished");
	struct evr_span chat = evr_llm_chat_start("vllm", "llama-3-8b", NULL, 64, 0.2, true);

	evr_llm_chat_chunk(&chat, 0, 1, "t");
	EVR_EVENT("app", "before_death", EVR_U32("n", 7));
	(void)q;
}

static char tmp[64];

static void tmp_init(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/evr-raw-%d-XXXXXX", (int)getpid());
	cr_assert_not_null(mkdtemp(tmp));
}

static void tmp_path(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", tmp, name);
}

static char *read_all(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long len;

	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)len + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	buf[len] = 0;
	*n = (size_t)len;
	return buf;
}

static void write_file(const char *path, const void *buf, size_t n)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(buf, 1, n, f), n);
	fclose(f);
}

static struct evr_consumer *consumer(void)
{
	struct evr_consumer_opts o = { .merge_window_ns = 1000000, .orphan_grace_ns = 50000000, .quiet = true };
	char err[256];
	struct evr_consumer *c = evr_consumer_new(&o, err, sizeof(err));

	cr_assert_not_null(c, "%s", err);
	return c;
}

static void add_jsonl(struct evr_consumer *c, const char *path)
{
	char spec[160], err[256];

	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, err, sizeof(err)), 0, "%s", err);
}

/*
 * Records a producer raw, decoding live into live.jsonl, then replays the
 * capture into replay.jsonl. Returns the live run's stats.
 */
static void record_and_replay(const char *cap, const char *live, const char *again, void (*pre)(void),
			      void (*fn)(void), int kill_sig, struct evr_consumer_stats *st, struct evr_raw_stats *rs)
{
	struct evr_config cfg = { .name = "raw-e2e", .lanes = 3, .lane_bytes = 4096, .capture_content = 1 };
	struct evr_consumer_stats rst;
	struct evr_consumer *c;
	struct child ch;
	char err[512];
	int rc;

	child_start_cfg(&ch, &cfg, pre, fn, kill_sig != 0);
	c = consumer();
	add_jsonl(c, live);
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0, "%s",
		      err);
	cr_assert_eq(evr_consumer_capture_raw(c, cap, EVR_CAPTURE_RAW_DECODE, err, sizeof(err)), 0, "%s", err);
	child_go(&ch);
	if (kill_sig) {
		char b;

		cr_assert_eq(read(ch.ready[0], &b, 1), 1);
		for (int i = 0; i < 20; i++)
			evr_consumer_poll(c); /* its last records read while it lives */
		kill(ch.pid, kill_sig);
	}
	cr_assert_eq(evr_consumer_run(c, 60000000000ull, NULL), 0);
	child_reap(&ch, kill_sig);
	cr_assert_eq(evr_consumer_raw_stats(c, rs), 0);
	cr_assert_eq(evr_consumer_capture_end(c), 0);
	evr_consumer_end(c);
	evr_consumer_stats(c, st);
	evr_consumer_close(c);

	c = consumer();
	add_jsonl(c, again);
	rc = evr_consumer_replay(c, cap, err, sizeof(err));
	cr_assert_gt(rc, 0, "%s", err);
	evr_consumer_end(c);
	evr_consumer_stats(c, &rst);
	evr_consumer_close(c);
	cr_assert_eq(rst.events, st->events);
	cr_assert_eq(rst.spans_ended, st->spans_ended);
	cr_assert_eq(rst.lost, st->lost);
	cr_assert_eq(rst.bad, 0);
}

static void same_file(const char *a, const char *b)
{
	size_t na, nb;
	char *x = read_all(a, &na), *y = read_all(b, &nb);

	cr_assert_gt(na, 1000, "%s holds the run", a);
	cr_assert_eq(na, nb, "%s: %zu bytes, %s: %zu", a, na, b, nb);
	cr_assert_eq(memcmp(x, y, na), 0, "%s and %s differ", a, b);
	free(x);
	free(y);
}

Test(raw, replay_gives_the_live_decodes_jsonl_byte_for_byte, .timeout = 120)
{
	char cap[128], live[128], again[128];
	struct evr_consumer_stats st;
	struct evr_raw_stats rs;
	size_t n;
	char *j;

	tmp_init();
	tmp_path(cap, sizeof(cap), "run.evr");
	tmp_path(live, sizeof(live), "live.jsonl");
	tmp_path(again, sizeof(again), "replay.jsonl");
	record_and_replay(cap, live, again, burst, workload, 0, &st, &rs);
	same_file(live, again);
	j = read_all(live, &n);
	cr_assert(strstr(j, "\"kind\":\"lost\"") != NULL, "a LOST record is in it");
	cr_assert(strstr(j, "\"name\":\"llm.chat\"") != NULL);
	cr_assert(strstr(j, "\"status\":\"dropped\"") != NULL);
	free(j);
	cr_assert_gt(st.lost, 0);
	cr_assert_gt(st.spans_ended, 100);
	cr_assert_gt(rs.runs, 0);
	cr_assert_gt(rs.run_bytes, 3u * 4096, "the lanes wrapped");
	cr_assert_gt(rs.singles, 0, "the LOST record came by itself");
	cr_assert_eq(rs.skipped, 0);
}

Test(raw, producer_killed_mid_run_still_replays_with_its_death, .timeout = 120)
{
	char cap[128], live[128], again[128];
	struct evr_consumer_stats st;
	struct evr_raw_stats rs;
	size_t n;
	char *j, *c;

	tmp_init();
	tmp_path(cap, sizeof(cap), "killed.evr");
	tmp_path(live, sizeof(live), "live.jsonl");
	tmp_path(again, sizeof(again), "replay.jsonl");
	record_and_replay(cap, live, again, NULL, half_trace, SIGKILL, &st, &rs);
	same_file(live, again);
	j = read_all(live, &n);
	cr_assert(strstr(j, "\"status\":\"abandoned\"") != NULL, "its open spans end abandoned: %s", j);
	cr_assert(strstr(j, "before_death") != NULL);
	free(j);
	c = read_all(cap, &n);
	cr_assert(memmem(c, n, "\xa4" "died", 5) != NULL, "the capture records the death");
	free(c);
}

/* ---- the capture is a msgpack stream ----------------------------------------------------------------------------- */

static const char *const raw_kinds[] = { "source", "lanes", "clock", "meta",	"tick",	   "round", "run",
					 "record", "full",  "pending", "died", "drained", "stats" };

/* Walks a capture with msgpack-c's unpacker: the header map, then arrays naming their kind. Returns the runs. */
static unsigned walk(const char *path, unsigned *entries, bool *stats_last)
{
	msgpack_unpacker up;
	msgpack_unpacked res;
	FILE *f = fopen(path, "rb");
	unsigned runs = 0, n = 0;
	size_t got;
	int ur;

	cr_assert_not_null(f);
	cr_assert(msgpack_unpacker_init(&up, 1 << 16));
	msgpack_unpacked_init(&res);
	*stats_last = false;
	for (;;) {
		while ((ur = msgpack_unpacker_next(&up, &res)) == MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *o = &res.data;

			if (n++ == 0) {
				cr_assert_eq(o->type, MSGPACK_OBJECT_MAP, "a header map first");
				continue;
			}
			cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY, "entry %u", n);
			cr_assert_geq(o->via.array.size, 2);
			cr_assert_eq(o->via.array.ptr[0].type, MSGPACK_OBJECT_STR);
			bool known = false;
			for (size_t k = 0; k < sizeof(raw_kinds) / sizeof(raw_kinds[0]); k++)
				known |= o->via.array.ptr[0].via.str.size == strlen(raw_kinds[k]) &&
					 !memcmp(o->via.array.ptr[0].via.str.ptr, raw_kinds[k], strlen(raw_kinds[k]));
			cr_assert(known, "entry %u: kind %.*s", n, (int)o->via.array.ptr[0].via.str.size,
				  o->via.array.ptr[0].via.str.ptr);
			*stats_last = !memcmp(o->via.array.ptr[0].via.str.ptr, "stats", 5);
			if (!memcmp(o->via.array.ptr[0].via.str.ptr, "run", 3) && o->via.array.ptr[0].via.str.size == 3) {
				cr_assert_eq(o->via.array.size, 5);
				cr_assert_eq(o->via.array.ptr[4].type, MSGPACK_OBJECT_BIN, "a run's bytes are bin");
				cr_assert_eq(o->via.array.ptr[4].via.bin.size % 8, 0);
				runs++;
			}
		}
		cr_assert_neq(ur, MSGPACK_UNPACK_PARSE_ERROR, "entry %u is msgpack", n);
		cr_assert(msgpack_unpacker_reserve_buffer(&up, 1 << 16));
		got = fread(msgpack_unpacker_buffer(&up), 1, msgpack_unpacker_buffer_capacity(&up), f);
		if (got == 0)
			break;
		msgpack_unpacker_buffer_consumed(&up, got);
	}
	cr_assert_eq(msgpack_unpacker_message_size(&up), 0, "nothing left half-read");
	msgpack_unpacked_destroy(&res);
	msgpack_unpacker_destroy(&up);
	fclose(f);
	*entries = n;
	return runs;
}

Test(raw, a_plain_msgpack_reader_walks_the_capture, .timeout = 120)
{
	char cap[128], live[128], again[128];
	struct evr_consumer_stats st;
	struct evr_raw_stats rs;
	unsigned entries;
	bool stats_last;

	tmp_init();
	tmp_path(cap, sizeof(cap), "walk.evr");
	tmp_path(live, sizeof(live), "live.jsonl");
	tmp_path(again, sizeof(again), "replay.jsonl");
	record_and_replay(cap, live, again, burst, workload, 0, &st, &rs);
	cr_assert_eq(walk(cap, &entries, &stats_last), rs.runs, "every run is an entry");
	cr_assert_gt(entries, rs.runs);
	cr_assert(stats_last, "the trailer ends it");
}

/* ---- rounds the replay must pass through ----------------------------------------------------------------------- */

/* The times of a capture's "round" entries, in order; returns how many. */
static unsigned rounds_of(const char *path, uint64_t *out, unsigned cap)
{
	size_t n, off = 0;
	char *buf = read_all(path, &n);
	msgpack_unpacked res;
	unsigned k = 0;

	msgpack_unpacked_init(&res);
	while (msgpack_unpack_next(&res, buf, n, &off) == MSGPACK_UNPACK_SUCCESS) {
		const msgpack_object *o = &res.data;

		if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
		    o->via.array.ptr[0].type != MSGPACK_OBJECT_STR || o->via.array.ptr[0].via.str.size != 5 ||
		    memcmp(o->via.array.ptr[0].via.str.ptr, "round", 5) != 0)
			continue;
		cr_assert_lt(k, cap);
		out[k++] = o->via.array.ptr[1].via.u64;
	}
	msgpack_unpacked_destroy(&res);
	free(buf);
	return k;
}

/*
 * Regression: a round whose drain read nothing was left out of the capture,
 * yet the live round still handed out records the watermark let go and
 * ticked the span builder; the replay, passing straight to the next round
 * with entries, handed them out later and with another clock (traces let
 * go after their grace in another place among the records).
 */
Test(raw, rounds_that_hand_out_are_written_with_the_round_before_them)
{
	char path[128], err[256];
	struct evr_rawcap *cap;
	struct evr_consumer_stats st = { 0 };
	struct evr_reader_stats rd = { 0 };
	uint64_t got[16];
	unsigned n;

	tmp_init();
	tmp_path(path, sizeof(path), "rounds.evr");
	cr_assert_eq(evr__rawcap_open(&cap, path, err, sizeof(err)), 0, "%s", err);
	evr__rawcap_round(cap, 100); /* idle: left out */
	evr__rawcap_round_end(cap, false);
	evr__rawcap_round(cap, 200); /* idle, but the round before one that acts */
	evr__rawcap_round_end(cap, false);
	evr__rawcap_round(cap, 300); /* hands out records, reads nothing */
	evr__rawcap_round_end(cap, true);
	evr__rawcap_round(cap, 400); /* acts right after one written: nothing before it to add */
	evr__rawcap_round_end(cap, true);
	evr__rawcap_round(cap, 500);
	evr__rawcap_round_end(cap, false);
	evr__rawcap_round(cap, 600); /* the last round: written at the end */
	evr__rawcap_round_end(cap, false);
	cr_assert_eq(evr__rawcap_close(cap, &st, &rd), 0);
	n = rounds_of(path, got, 16);
	cr_assert_eq(n, 4, "rounds written: %u", n);
	cr_assert_eq(got[0], 200);
	cr_assert_eq(got[1], 300);
	cr_assert_eq(got[2], 400);
	cr_assert_eq(got[3], 600);
}

/* ---- overload: delivered + lost == written ----------------------------------------------------------------------- */

#define FLOOD 300000u

static void flood(void)
{
	for (uint32_t i = 0; i < FLOOD; i++)
		EVR_EVENT("app", "flood", EVR_U32("i", i));
}

struct counts {
	uint64_t events, lost;
};
static int count_event(void *ctx, const struct evr_event *ev)
{
	(void)ev;
	__atomic_add_fetch(&((struct counts *)ctx)->events, 1, __ATOMIC_RELAXED);
	return 0;
}
static int count_lost(void *ctx, const struct evr_lost *l)
{
	__atomic_add_fetch(&((struct counts *)ctx)->lost, l->count, __ATOMIC_RELAXED);
	return 0;
}

Test(raw, overload_counts_every_record_delivered_or_lost, .timeout = 120)
{
	struct evr_config cfg = { .name = "raw-flood", .lanes = 2, .lane_bytes = 4096 };
	struct evr_handler h = { .name = "count", .on_event = count_event, .on_lost = count_lost, .queue_len = 1u << 20 };
	struct counts n = { 0 };
	struct evr_raw_stats rs;
	struct evr_consumer *c;
	struct child ch;
	char cap[128], err[512];

	tmp_init();
	tmp_path(cap, sizeof(cap), "flood.evr");
	child_start_cfg(&ch, &cfg, NULL, flood, false);
	c = consumer();
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, 0, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(evr_consumer_capture_raw(c, cap, 0, err, sizeof(err)), 0, "%s", err);
	child_go(&ch);
	cr_assert_eq(evr_consumer_run(c, 60000000000ull, NULL), 0);
	child_reap(&ch, 0);
	cr_assert_eq(evr_consumer_raw_stats(c, &rs), 0);
	cr_assert_eq(evr_consumer_capture_end(c), 0);
	evr_consumer_close(c);
	cr_log_info("raw: %llu runs, %llu records in runs, %llu singles, %llu lost", (unsigned long long)rs.runs,
		    (unsigned long long)rs.run_records, (unsigned long long)rs.singles, (unsigned long long)rs.lost);

	/* Decoded offline: every event the producer wrote is an event or counted lost, exactly. */
	c = consumer();
	h.ctx = &n;
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	cr_assert_gt(evr_consumer_replay(c, cap, err, sizeof(err)), 0, "%s", err);
	evr_consumer_end(c);
	evr_consumer_close(c);
	cr_assert_gt(n.lost, 0, "a 4 KiB lane cannot keep up with %u events", FLOOD);
	cr_assert_gt(n.events, 0);
	cr_assert_eq(n.events + n.lost, FLOOD, "events %llu + lost %llu", (unsigned long long)n.events,
		     (unsigned long long)n.lost);
}

/* ---- hostile captures ------------------------------------------------------------------------------------------- */

/* Events a replay of path delivers; *rc its return, err its error. */
static uint64_t replay_events(const char *path, int *rc, char *err, size_t errlen, uint64_t *bad)
{
	struct evr_handler h = { .name = "count", .on_event = count_event, .on_lost = count_lost, .queue_len = 1u << 20 };
	struct counts n = { 0 };
	struct evr_consumer_stats st;
	struct evr_consumer *c = consumer();

	h.ctx = &n;
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	err[0] = 0;
	*rc = evr_consumer_replay(c, path, err, errlen);
	evr_consumer_end(c);
	evr_consumer_stats(c, &st);
	evr_consumer_close(c);
	*bad = st.bad;
	return n.events;
}

/* Offsets of the entries of a capture (entry i at off[i], off[n] its end). */
static size_t entries_of(const char *buf, size_t len, size_t *off, size_t max)
{
	msgpack_zone z;
	msgpack_object o;
	size_t at = 0, n = 0;

	msgpack_zone_init(&z, 1 << 16);
	while (at < len && n < max) {
		off[n++] = at;
		msgpack_zone_clear(&z);
		cr_assert_gt(msgpack_unpack(buf, len, &at, &z, &o), 0); /* SUCCESS, or EXTRA_BYTES: more entries follow */
	}
	off[n] = at;
	msgpack_zone_destroy(&z);
	return n;
}

Test(raw, corrupt_and_truncated_captures_are_refused_clearly, .timeout = 120)
{
	char cap[128], live[128], again[128], bad_path[128], err[512];
	struct evr_consumer_stats st;
	struct evr_raw_stats rs;
	static size_t off[1 << 18];
	size_t len, n, last_run = 0, first_run = 0;
	uint64_t full_events, prefix_events, got, bad;
	char *c, *m;
	int rc;

	tmp_init();
	tmp_path(cap, sizeof(cap), "good.evr");
	tmp_path(live, sizeof(live), "live.jsonl");
	tmp_path(again, sizeof(again), "replay.jsonl");
	tmp_path(bad_path, sizeof(bad_path), "bad.evr");
	record_and_replay(cap, live, again, NULL, workload, 0, &st, &rs);
	c = read_all(cap, &len);
	n = entries_of(c, len, off, sizeof(off) / sizeof(off[0]) - 1);
	for (size_t i = 1; i < n; i++) {
		/* ["run", ...]: fixarray of 5, then fixstr "run" */
		if ((uint8_t)c[off[i]] == 0x95 && !memcmp(c + off[i] + 1, "\xa3run", 4)) {
			if (!first_run)
				first_run = i;
			last_run = i;
		}
	}
	cr_assert(first_run && last_run > first_run);
	full_events = replay_events(cap, &rc, err, sizeof(err), &bad);
	cr_assert_gt(rc, 0, "%s", err);
	/* What comes before the last run, alone: what a replay that stops there must still deliver. */
	write_file(bad_path, c, off[last_run]);
	prefix_events = replay_events(bad_path, &rc, err, sizeof(err), &bad);
	cr_assert_leq(prefix_events, full_events);
	cr_assert_gt(prefix_events, 0, "events came before the last run");

	m = malloc(len);
	cr_assert_not_null(m);
	struct {
		const char *what, *says;
		size_t at; /* byte of the last run entry to change, from its start; SIZE_MAX: cut there */
		uint8_t to;
	} cases[] = {
		{ "a lane the segment does not have", "malformed run", 6, 0x7f },
		{ "a position off the grid", "does not line up", 0, 0 },
		{ "bytes that are no records", "not a committed record", 0, 0 },
		{ "a capture cut inside the run", "truncated", SIZE_MAX, 0 },
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		size_t e = off[last_run], elen = off[last_run + 1] - e, mlen = len;
		msgpack_zone z;
		msgpack_object o;
		size_t at = e;

		memcpy(m, c, len);
		msgpack_zone_init(&z, 1 << 16);
		cr_assert_gt(msgpack_unpack(c, len, &at, &z, &o), 0);
		if (k == 0) {
			/* ["run", src, lane, pos, bin]: the lane is a positive fixint right after src (fixint). */
			m[e + 6] = (char)cases[k].to;
		} else if (k == 1 || k == 2) {
			/* Rebuild the entry with the position moved by 4 (off the grid), or its first word flipped. */
			msgpack_sbuffer sb;
			msgpack_packer pk;
			const msgpack_object *a = o.via.array.ptr;
			char *bytes = malloc(a[4].via.bin.size);

			memcpy(bytes, a[4].via.bin.ptr, a[4].via.bin.size);
			if (k == 2)
				bytes[0] ^= 0x5a;
			msgpack_sbuffer_init(&sb);
			msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
			msgpack_pack_array(&pk, 5);
			msgpack_pack_str(&pk, 3);
			msgpack_pack_str_body(&pk, "run", 3);
			msgpack_pack_uint64(&pk, a[1].via.u64);
			msgpack_pack_uint64(&pk, a[2].via.u64);
			msgpack_pack_uint64(&pk, a[3].via.u64 + (k == 1 ? 4 : 0));
			msgpack_pack_bin(&pk, a[4].via.bin.size);
			msgpack_pack_bin_body(&pk, bytes, a[4].via.bin.size);
			cr_assert_leq(e + sb.size + (len - e - elen), len + 64);
			m = realloc(m, len + 64);
			memcpy(m + e, sb.data, sb.size);
			memcpy(m + e + sb.size, c + e + elen, len - e - elen);
			mlen = len - elen + sb.size;
			msgpack_sbuffer_destroy(&sb);
			free(bytes);
		} else {
			mlen = e + elen / 2;
		}
		msgpack_zone_destroy(&z);
		write_file(bad_path, m, mlen);
		got = replay_events(bad_path, &rc, err, sizeof(err), &bad);
		cr_expect_eq(rc, -EBADMSG, "%s: rc %d (%s)", cases[k].what, rc, err);
		cr_expect(strstr(err, cases[k].says) != NULL, "%s: %s", cases[k].what, err);
		if (k < 3) {
			char entry[32];

			snprintf(entry, sizeof(entry), "entry %zu:", last_run);
			cr_expect(strstr(err, entry) != NULL, "%s names the entry: %s", cases[k].what, err);
			cr_expect_geq(bad, 1, "%s is counted", cases[k].what);
		}
		cr_expect_geq(got, prefix_events, "%s: what came before it is delivered (%llu of %llu)", cases[k].what,
			      (unsigned long long)got, (unsigned long long)prefix_events);
	}
	free(m);
	free(c);
}
