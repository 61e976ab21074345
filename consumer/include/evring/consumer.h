/*
 * evring/consumer.h: attach to live evring processes, drain their segments,
 * rebuild span trees and run handlers. Link -levring-consumer (pkg-config
 * evring-consumer).
 *
 *   struct evr_consumer *c = evr_consumer_new(&opts, err, sizeof(err));
 *   evr_consumer_attach_pid(c, pid, 0, err, sizeof(err));
 *   evr_consumer_add_builtin(c, "stats", err, sizeof(err));
 *   evr_consumer_run(c, 10 * 1000000000ull, &stop);
 *   evr_consumer_close(c);
 *
 * Pipeline, on the thread that calls evr_consumer_poll / run (the drain
 * thread): drain every lane in batches -> decode the msgpack bodies ->
 * merge into one stream ordered by time (a watermark over lanes, late records
 * delivered and counted) -> span trees -> one bounded queue per handler, each
 * handler on its own thread, a watchdog enforcing a per-call timeout.
 *
 * Everything a handler receives is immutable and lives at least until its
 * callback returns; evr_obj_ref keeps it longer. Times are UTC nanoseconds
 * since the epoch (and CLOCK_MONOTONIC nanoseconds where named mono).
 *
 * Threads: evr_consumer_* calls come from one thread (the drain thread),
 * except evr_consumer_add_handler / remove_handler, which may come from any
 * thread while the stream runs, and evr_consumer_stop, which is async-signal-safe.
 */
#ifndef EVRING_CONSUMER_H
#define EVRING_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <evring/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- decoded values ----------------------------------------------------- */

enum evr_value_type {
	EVR_V_NIL = 0,
	EVR_V_BOOL = 1,
	EVR_V_I64 = 2, /* negative integers */
	EVR_V_U64 = 3, /* non-negative integers */
	EVR_V_F64 = 4,
	EVR_V_STR = 5, /* s[len], NUL-terminated; truncated: the producer cut it at its limit */
};

struct evr_value {
	uint8_t type;
	bool truncated;
	uint32_t len;
	union {
		bool b;
		int64_t i;
		uint64_t u;
		double f;
		const char *s;
	};
};

/* A field as a handler sees it: the site's name for it and the value. */
struct evr_field {
	const char *name;
	bool content; /* the producer marked it content (prompt, completion, ...) */
	struct evr_value v;
};

/* An immutable, reference-counted block of fields. */
struct evr_fields {
	uint32_t refs;
	uint32_t n;
	struct evr_field f[];
};

/* ---- what the producer described --------------------------------------- */

enum evr_site_kind_c { EVR_KIND_EVENT = 1, EVR_KIND_SPAN_BEGIN = 2, EVR_KIND_SPAN_END = 3 };

/* A call site, from the segment's metadata. Lives as long as its source. */
struct evr_site_info {
	uint64_t id;
	uint8_t kind;
	uint32_t line;
	uint32_t nfields;
	const char *name, *dispatcher, *file, *func;
	const char **field_names;
	const uint8_t *field_types; /* enum evr_field_type of <evring/evring.h> */
	const bool *field_content;
};

/*
 * One attached process (segment). Lives until evr_consumer_close, or, when
 * the consumer retires sources (evr_consumer_opts.retire_sources, or
 * evr_consumer_detach), until every handler has returned from its
 * on_source_end for it: see SOURCE LIFETIME below.
 */
struct evr_source {
	uint32_t pid;
	uint32_t index; /* 0, 1, ... in attach order */
	const char *program;
	const char *cmdline;
	const char *shm_name;
	bool dead; /* the producer process is gone */
};

/* ---- what handlers receive ---------------------------------------------- */

/* Every object handed to a handler starts with this header. */
struct evr_obj {
	uint32_t refs;
	uint8_t kind; /* enum evr_obj_kind */
};
enum evr_obj_kind {
	EVR_OBJ_EVENT = 1,
	EVR_OBJ_SPAN = 2,
	EVR_OBJ_TRACE = 3,
	EVR_OBJ_LOST = 4,
	EVR_OBJ_SKIPPED = 5,
	EVR_OBJ_METRIC = 6,
	EVR_OBJ_RUN = 7,
};

/* Keeps an object past the callback that received it; drop it with evr_obj_unref. */
EVR_API void evr_obj_ref(const void *obj);
EVR_API void evr_obj_unref(const void *obj);

struct evr_event {
	struct evr_obj obj;
	const struct evr_source *src;
	const struct evr_site_info *site;
	uint64_t ts_ns; /* UTC */
	uint64_t mono_ns;
	uint64_t span_id, trace_id; /* the span it happened in (0: none), and that span's trace if known */
	uint32_t tid;
	bool late; /* arrived after later records had been delivered */
	struct evr_fields *fields;
};

enum evr_span_status { EVR_SPAN_OK = 0, EVR_SPAN_DROPPED = 1, EVR_SPAN_ABANDONED = 2, EVR_SPAN_OPEN = 3 };

enum evr_span_flags {
	EVR_SPAN_NO_BEGIN = 1u,	      /* rebuilt from its end record alone (begin lost or before attach) */
	EVR_SPAN_MISSING_PARENT = 2u, /* its parent never arrived within the grace period */
	EVR_SPAN_EVICTED = 4u,	      /* closed as abandoned: too many open spans */
	EVR_SPAN_PRODUCER_DIED = 8u,  /* closed as abandoned: its process died */
	EVR_SPAN_DETACHED = 16u,      /* still open when the consumer detached */
	EVR_SPAN_PRODUCER_EXITED = 32u, /* closed as abandoned: its process exited normally with it open
					   (its end was lost to a full lane, or never written) */
};

/*
 * A span. on_span_begin receives it with status EVR_SPAN_OPEN, end_ns 0 and
 * no end fields; on_span_end and on_trace_end receive a new object with
 * everything. start_ns/end_ns are UTC.
 */
struct evr_span_rec {
	struct evr_obj obj;
	const struct evr_source *src;
	const struct evr_site_info *site; /* the begin site: name and dispatcher */
	uint64_t span_id, parent_id, trace_id;
	uint64_t start_ns, end_ns;
	uint64_t start_mono_ns, end_mono_ns;
	uint32_t tid; /* the thread that began it (ended it, when the begin was lost) */
	uint8_t status;
	uint32_t flags;
	uint32_t events; /* events recorded inside it */
	struct evr_fields *begin_fields, *end_fields; /* never NULL (possibly empty) */
};

/* A whole trace: every span of it, ended; the tree in parent indexes. */
struct evr_trace {
	struct evr_obj obj;
	const struct evr_source *src;
	uint64_t trace_id;
	uint32_t nspans;
	int32_t root; /* index of the root span, -1 when it never arrived */
	uint64_t start_ns, end_ns;
	bool incomplete; /* delivered after the grace period with spans missing */
	struct evr_span_rec **spans;  /* in start order */
	int32_t *parent;	  /* parent index of spans[i], -1 for none */
	uint32_t *first_child;	  /* index+1 of the first child, 0 for none */
	uint32_t *next_sibling;	  /* index+1 of the next sibling, 0 for none */
};

/*
 * Records a producer dropped (its LOST record). A loss is never skipped: when
 * a handler's queue is full (or the handler is stalled), the losses of one
 * source are added up into one object, queued for that handler as soon as
 * its queue has room, before anything later (and before on_close at the
 * end). Such a merged loss has reports > 1: count is the sum, first_ns the
 * earliest, ts_ns the latest, tid and lane are those of its first report.
 */
struct evr_lost {
	struct evr_obj obj;
	const struct evr_source *src;
	uint32_t tid, lane;
	uint64_t count;
	uint64_t ts_ns, first_ns; /* when reported, when the first drop happened */
	uint32_t reports;	  /* LOST records it stands for: 1, or more when merged (above) */
};

/*
 * A gap in one handler's stream: records the consumer offered it but did not
 * queue, because its queue was full or it was stalled in a call that overran
 * the timeout (the handler's `skipped` counter, and the consumer's
 * handler_skipped). Consecutive skips make one gap; on_skipped receives it
 * where the gap was, before the first record queued after it (and before
 * on_close when the stream ends in one). Losses are never part of a gap (see
 * struct evr_lost). Times are those the records carry: an event's ts_ns, a
 * span begin's start_ns, a span end's or a trace's end_ns (start_ns when it
 * has none).
 */
struct evr_skipped {
	struct evr_obj obj;
	const char *handler; /* the handler whose queue skipped them (its name) */
	uint64_t count;	     /* records skipped in this gap */
	uint64_t events, span_begins, span_ends, traces; /* count, by the callback they were for */
	uint64_t stalled;			     /* of count, skipped while it was stalled (the rest: queue full) */
	uint64_t first_ns, last_ns;		     /* the times of the first and the last record skipped */
};
/*
 * One sample of a followed process's resource use (src), or of the host's
 * (src NULL): one name, one value, at a time on the records' clock. Names
 * follow OpenTelemetry's system and process conventions where they have
 * one: process.cpu.user and process.cpu.system (percent of one CPU over the
 * interval), process.memory.rss (bytes), process.threads, process.open_fds,
 * process.context_switches.voluntary / .involuntary (over the interval),
 * process.io.read_bytes / .write_bytes (over the interval, where readable);
 * once a run, host.cpus, host.memory.total, host.memory.available,
 * host.load.1m / .5m / .15m.
 */
struct evr_metric {
	struct evr_obj obj;
	const struct evr_source *src; /* NULL: the host */
	uint64_t ts_ns;		      /* UTC */
	uint64_t mono_ns;
	const char *name;
	const char *unit; /* "%", "By", "1" (UCUM, as OpenTelemetry) */
	double value;
};

/* A run parameter: key and value, both text. */
struct evr_param {
	const char *key;
	const char *value;
};

/*
 * A run: one followed process in one consumer session, with an id, an
 * experiment name and its parameters, recorded once, before any other
 * record of src reaches the handler (and again, whole, when its app.*
 * params change: see on_run). Keys: program, cmdline, exe,
 * build_id, host, kernel, evring.version, git.commit (when the producer's
 * working directory is a repository), env.NAME (only for the names
 * --env-allow lets through), app.KEY (the producer's evr_run_param).
 */
struct evr_run_info {
	struct evr_obj obj;
	const struct evr_source *src;
	const char *run_id;	/* 32 lower-case hex digits */
	const char *experiment; /* --experiment; "default" */
	uint64_t start_ns;	/* UTC: when the consumer began following it */
	uint32_t nparams;
	const struct evr_param *params;
};

/* ---- handlers ----------------------------------------------------------- */

struct evr_handler_stats;

/*
 * A handler: callbacks (any may be NULL) and filters. Callbacks run on the
 * handler's own thread, one at a time, each under the consumer's timeout.
 * A non-zero return is counted and reported as the handler's error.
 */
struct evr_handler {
	const char *name;
	void *ctx;
	int (*on_event)(void *ctx, const struct evr_event *ev);
	int (*on_span_begin)(void *ctx, const struct evr_span_rec *sp);
	int (*on_span_end)(void *ctx, const struct evr_span_rec *sp);
	int (*on_trace_end)(void *ctx, const struct evr_trace *tr);
	int (*on_lost)(void *ctx, const struct evr_lost *lost);
	/* Called once the stream has ended for this handler (after its last callback): flush, print. */
	void (*on_close)(void *ctx);
	/* Frees ctx; called after on_close, or when the handler is removed. */
	void (*destroy)(void *ctx);

	/*
	 * Filters. dispatcher: a dotted prefix ("app" takes "app" and "app.llm");
	 * records of a sub-dispatcher reach it only if every dispatcher between
	 * them propagates. ignore_begin / ignore_end: NULL-terminated span (and,
	 * for ignore_end, event) names not delivered, as LlamaIndex's
	 * event_starts_to_ignore / event_ends_to_ignore.
	 */
	const char *dispatcher;
	const char *const *ignore_begin;
	const char *const *ignore_end;
	/*
	 * Its queue's capacity in records: a power of two up to 2^24, or 0 for
	 * the default, sized by memory: 64 MiB of queued records at 512 bytes
	 * each (an object and its fields blocks), so 131072.
	 */
	uint32_t queue_len;

	/*
	 * Called instead of on_close when set: the same call, returning 0, or a
	 * -errno when the handler could not complete its output (a file that
	 * could not be written to its end), which is counted and reported as
	 * the handler's error like any callback's. Appended to the struct: a
	 * handler that leaves it NULL is unchanged.
	 */
	int (*on_end)(void *ctx);

	/*
	 * Called where records meant for this handler were skipped (struct
	 * evr_skipped: how many, which, when), in order with its other
	 * callbacks, so an output can show the gap where it is. Appended to the
	 * struct: a handler that leaves it NULL is unchanged (its skips are
	 * counted only).
	 */
	int (*on_skipped)(void *ctx, const struct evr_skipped *s);

	/*
	 * Adds counters the handler keeps itself to its evr_handler_stats
	 * (an isolated plug-in: its process's crashes, and the records
	 * skipped while it was down). Called by evr_consumer_handler_stats
	 * while the handler is live, from that caller's thread: it reads
	 * ctx with atomic loads only. NULL: none. Appended to the struct.
	 */
	void (*stats)(void *ctx, struct evr_handler_stats *st);

	/*
	 * The consumer lets src go (SOURCE LIFETIME below): called once, on the
	 * handler's thread, after every callback for any record of src. Drop
	 * what is kept per source here (state keyed by the source or by its
	 * sites: their addresses are reused for later sources) and every
	 * object of src still held with evr_obj_ref. A non-zero return is
	 * counted as an error. NULL: the handler keeps nothing past its calls.
	 * Appended.
	 */
	int (*on_source_end)(void *ctx, const struct evr_source *src);

	/*
	 * Called on the handler's thread when its queue has stayed empty for
	 * about 100 ms (and again every 100 ms while it stays so): a time to
	 * write out buffered output or rotate a file by age. NULL: none.
	 * Appended.
	 */
	void (*on_idle)(void *ctx);

	/*
	 * A metric sample (struct evr_metric), in time order with the records.
	 * NULL: none are queued for this handler. Appended.
	 */
	int (*on_metric)(void *ctx, const struct evr_metric *m);

	/*
	 * A run begins (struct evr_run_info): before any record of its
	 * source. Called again, with the same run_id and every param, when
	 * the producer's app.* params change after the attach (it called
	 * evr_run_param once running): keep the latest of a run_id. NULL:
	 * none. Appended.
	 */
	int (*on_run)(void *ctx, const struct evr_run_info *run);
};

/* Why a handler call is reported: it overran the timeout, or returned an error. */
struct evr_handler_error {
	const char *handler;
	const char *callback; /* "on_event", "on_span_end", ... */
	const char *what;     /* the event or span name */
	uint64_t elapsed_ns;
	int rc;		      /* the callback's return; 0 for a timeout; -ECHILD: an isolated plug-in's process */
	bool timeout;
	/*
	 * NULL, or the whole report as a sentence: an isolated plug-in's
	 * process died (how: a signal, an exit status, killed hung) and is
	 * restarted, or restarts ran out for the minute. Appended.
	 */
	const char *message;
};

struct evr_handler_stats {
	const char *name;
	uint64_t delivered; /* callbacks run for records (on_event .. on_lost; a merged loss is one) */
	uint64_t filtered;  /* records its filters turned away */
	uint64_t skipped;   /* records not delivered: its queue was full or it was stalled (never losses) */
	uint64_t errors;    /* callbacks that returned non-zero */
	uint64_t timeouts;  /* callbacks that overran the timeout */
	bool stalled;	    /* inside a call that overran, now */
	uint64_t crashes;   /* an isolated plug-in's process died or was killed hung (then restarted) */
	/*
	 * An exporting handler's (otlp): items (spans, log records) the
	 * receiver accepted; requests retried; items dropped unsent (its queue
	 * was full, or still queued at the end's deadline); items that failed
	 * for good (refused by the receiver, or out of retries). Appended.
	 */
	uint64_t exported, export_retries, export_dropped, export_failed;
};

/* The versioned entry point of a handler plug-in (a shared object). */
#define EVR_HANDLER_ABI 1
#define EVR_HANDLER_ENTRY "evr_handler_entry_v1"
typedef int (*evr_handler_entry_v1_fn)(const char *arg, struct evr_handler *out, char *err, size_t errlen);
/* Marks a plug-in's entry point exported, for plug-ins built with -fvisibility=hidden. */
#define EVR_HANDLER_EXPORT __attribute__((visibility("default")))

/* ---- the consumer -------------------------------------------------------- */

struct evr_consumer_opts {
	uint64_t timeout_ns;	   /* per handler call; 0: 5 s, as aiconfig's CallbackManager */
	uint64_t merge_window_ns;  /* how long a quiet lane holds back the merge; 0: 2 ms */
	uint64_t orphan_grace_ns;  /* wait for a missing parent before delivering; 0: 1 s */
	uint32_t max_open_spans;   /* past this the oldest open spans are closed; 0: 100000 */
	uint32_t batch;		   /* records read per lane per round; 0: 256 */
	void (*on_error)(void *arg, const struct evr_handler_error *e); /* also reported on stderr */
	void *on_error_arg;
	FILE *log;		   /* where timeouts and errors are reported; NULL: stderr */
	bool quiet;		   /* report to on_error only */
	/* The dispatcher filter of built-in and plug-in handlers added without one (NULL: none). */
	const char *dispatcher;
	/*
	 * Let sources go once their producer has exited (or died, or its
	 * segment faulted) and everything of them was delivered: see SOURCE
	 * LIFETIME. Without it a source lives until evr_consumer_close (a
	 * consumer of a few processes); a consumer that follows processes as
	 * they come and go (evring agent) sets it, so that its memory does not
	 * grow with the processes that came and went. Appended.
	 */
	bool retire_sources;
	/*
	 * Called on the drain thread (inside evr_consumer_poll) just before a
	 * retired source is freed; why: enum evr_source_end. NULL: none. Appended.
	 */
	void (*on_source_gone)(void *arg, const struct evr_source *src, int why);
	void *on_source_arg;
	/*
	 * Runs and metrics (struct evr_run_info, struct evr_metric). Each
	 * followed process is sampled from /proc every metrics_interval_ns
	 * (0: 1 s; EVR_METRICS_OFF: no samples, runs still recorded).
	 * experiment: the runs' experiment name (NULL: "default"). env_allow:
	 * NULL-terminated fnmatch(3) patterns; the producer's environment
	 * variables whose names match one become run params env.NAME (NULL:
	 * none). Appended.
	 */
	uint64_t metrics_interval_ns;
	const char *experiment;
	const char *const *env_allow;
};
#define EVR_METRICS_OFF UINT64_MAX

/* Why a source was let go. */
enum evr_source_end {
	EVR_SOURCE_EXITED = 1,	 /* its producer exited normally */
	EVR_SOURCE_DIED = 2,	 /* its producer died (a signal, or gone without its exit mark) */
	EVR_SOURCE_FAULTED = 3,	 /* its segment shrank under the consumer (SIGBUS): detached */
	EVR_SOURCE_DETACHED = 4, /* evr_consumer_detach */
};

struct evr_consumer;

/* Returns NULL with err set (bad options, no memory). */
EVR_API struct evr_consumer *evr_consumer_new(const struct evr_consumer_opts *opts, char *err, size_t errlen);

/*
 * FROM_OLDEST: read what the lanes still hold from before the attach.
 * ALLOW_WRITABLE: attach to a segment whose mode lets its group or others
 * write it (refused otherwise, -EACCES: they could shrink or rewrite it
 * under the consumer).
 */
enum evr_attach_flags { EVR_ATTACH_FROM_OLDEST = 1u, EVR_ATTACH_ALLOW_WRITABLE = 2u };

/*
 * Attaches to every segment of a live process (by pid), or to one segment by
 * name: its shm name ("/evring.<pid>.<name>"), or "<pid>.<name>". Validates
 * the segment (hostile input), refuses one owned by another user, and takes
 * one of its consumer slots (a segment takes several consumers at once).
 * Returns the source index, or -ENOENT (no such process / no segment),
 * -ESRCH (process gone), -EACCES, -EPROTO (ABI; err names both versions),
 * -EBUSY (every slot held by a live process; err names their pids), -EBADMSG.
 */
EVR_API int evr_consumer_attach_pid(struct evr_consumer *c, uint32_t pid, unsigned flags, char *err, size_t errlen);
EVR_API int evr_consumer_attach_name(struct evr_consumer *c, const char *name, unsigned flags, char *err,
				     size_t errlen);

/*
 * SOURCE LIFETIME. Objects handed to handlers point at their source (src)
 * and its sites (site, and the names in their fields). Without
 * retire_sources, all of it lives until evr_consumer_close. With it, a
 * source is let go in three steps, all driven by evr_consumer_poll:
 *
 *   1. its producer is gone (or evr_consumer_detach was called) and every
 *      record of it was read, merged and delivered; its open spans were
 *      closed as abandoned (EVR_SPAN_PRODUCER_EXITED / _DIED, or
 *      EVR_SPAN_DETACHED) and its traces handed out;
 *   2. an end marker is queued for every handler after everything of the
 *      source queued for it (a marker is never skipped: a full or stalled
 *      queue holds it, as it holds losses); each handler's thread runs
 *      on_source_end(src) when it reaches it;
 *   3. once every handler has passed the marker (or was removed), the
 *      drain thread waits for a grace period of the span index's RCU, calls
 *      on_source_gone, releases the consumer slot, unmaps the segment and
 *      frees the source, its sites and its tables.
 *
 * So a handler may use any object it was given, and keep it with
 * evr_obj_ref, until its on_source_end for that object's source returns;
 * not after. A handler stalled in a call holds its sources back until the
 * call returns. Source indexes are never reused (a new source gets the
 * next one), so they, unlike addresses, may key state across sources.
 * While a capture is written (evr_consumer_capture) nothing is retired.
 */

/*
 * Stops reading the source with this index (the value evr_consumer_attach_*
 * returned, or evr_source.index) now: what was read is delivered, its open
 * spans are closed as abandoned with EVR_SPAN_DETACHED, and with
 * retire_sources it is let go as above (its slot released then); without,
 * it stays attached but is no longer read. For a producer that misbehaves
 * (floods the consumer). Returns 0, or -ENOENT (no such source). Drain thread.
 */
EVR_API int evr_consumer_detach(struct evr_consumer *c, uint32_t index);

/* A source's counters (evr_consumer_sources). */
struct evr_source_stats {
	const struct evr_source *src; /* valid until the next evr_consumer_poll */
	uint64_t records;	      /* read from its lanes */
	uint64_t lost;		      /* records its producer dropped (its LOST records) */
	uint64_t ring_skipped;	      /* records the ring reader skipped (corrupt, stuck, dead writers) */
	uint64_t attached_ns;	      /* when it was attached (CLOCK_REALTIME ns) */
	bool ending;		      /* its producer is gone or it was detached: being let go */
};

/* The attached sources in attach order; returns how many there are (at most n written). Drain thread. */
EVR_API int evr_consumer_sources(struct evr_consumer *c, struct evr_source_stats *out, int n);

/*
 * Adds a handler (copied). On success ctx is taken over (destroy frees it);
 * on failure it is still the caller's. Returns its id (>= 0) or -errno. Any thread.
 */
EVR_API int evr_consumer_add_handler(struct evr_consumer *c, const struct evr_handler *h);

/*
 * Adds a built-in handler from a spec: tail, debug, tokens, stats,
 * jsonl[=PATH] (default evring.log), chrome=PATH; or
 * plugin=PATH.so[,isolate][:ARG], a shared object exporting
 * EVR_HANDLER_ENTRY. Output of tail / debug / tokens / stats goes to out
 * (NULL: stdout). Returns the id or -errno.
 *
 * A plug-in is loaded into this process and shares its fate: one that
 * faults, aborts or calls exit() ends the process, with no on_close for
 * the other handlers. With ",isolate" it runs in a child process instead
 * (evring-plugin-host: $EVRING_PLUGIN_HOST, else beside the running
 * program, else where evring installed it, else on PATH), started with
 * posix_spawn and fed each object over a socketpair; this process reaps
 * it. Its death (a signal, an exit, or killed once it overran timeout_ns
 * by an eighth) is reported to on_error (rc -ECHILD, message saying how
 * and on which callback and record) and on the log unless quiet, counted
 * in evr_handler_stats.crashes, and the child started again at the next
 * record, at most 5 times in any minute; records meanwhile are counted as
 * skipped. -ECHILD also when the host program cannot run.
 */
EVR_API int evr_consumer_add_builtin(struct evr_consumer *c, const char *spec, FILE *out, char *err, size_t errlen);

/*
 * Fills *h with the built-in handler a spec names (tail, debug, tokens,
 * stats, jsonl[=PATH], chrome=PATH; not plugin=), as evr_consumer_add_builtin
 * makes it, without adding it: the caller may then set its filters or its
 * queue_len and pass it to evr_consumer_add_handler, which takes its ctx
 * over. One never added is freed with h->destroy(h->ctx). Output of tail /
 * debug / tokens / stats goes to out (NULL: stdout). Returns 0, or -EINVAL
 * (a bad spec) or -errno (a file that cannot be opened, no memory) with err
 * set. Any thread.
 */
EVR_API int evr_handler_builtin(const char *spec, FILE *out, struct evr_handler *h, char *err, size_t errlen);

/* Stops and removes a handler: its queue is drained, on_close and destroy run. Any thread. */
EVR_API int evr_consumer_remove_handler(struct evr_consumer *c, int id);

/*
 * One round: drain, decode, merge, build spans, dispatch. Returns the number
 * of records read (0: nothing new), or -errno.
 */
EVR_API int evr_consumer_poll(struct evr_consumer *c);

/*
 * Polls until every attached producer has exited and its records are read,
 * or *stop becomes non-zero, or duration_ns passes (0: no limit). Sleeps
 * briefly when idle. Returns 0 or -errno.
 */
EVR_API int evr_consumer_run(struct evr_consumer *c, uint64_t duration_ns, volatile int *stop);

struct evr_consumer_stats {
	uint64_t records;	 /* read from the lanes */
	uint64_t events, spans_begun, spans_ended, traces;
	uint64_t lost;		 /* records the producers dropped (LOST records) */
	uint64_t late;		 /* records delivered after later ones */
	uint64_t bad;		 /* records that failed validation or decoding, skipped */
	uint64_t ring_skipped;	 /* bytes-level skips by the ring reader (corrupt, stuck, dead writers) */
	uint64_t spans_no_begin, spans_orphaned, spans_abandoned, spans_evicted;
	uint64_t open_spans;
	uint64_t handler_skipped, handler_timeouts, handler_errors;
	uint64_t segments_faulted; /* segments detached: shrunk under the consumer (SIGBUS), the rest went on */
	uint64_t events_trace_unknown; /* events in a span never seen to begin or end: delivered with trace_id 0 */
	uint64_t metrics;	     /* metric samples taken (struct evr_metric) */
	uint64_t metrics_unreadable; /* /proc files of followed processes that could not be read: samples left out */
	uint64_t runs;		     /* run items (struct evr_run_info): one per source, and one per update of its params */
	uint64_t run_params_bad;     /* EVR_META_PARAM entries that were not [str, str] within the limits: skipped */
};
EVR_API void evr_consumer_stats(struct evr_consumer *c, struct evr_consumer_stats *st);

/* Per-handler counters; returns how many were written (at most n). */
EVR_API int evr_consumer_handler_stats(struct evr_consumer *c, struct evr_handler_stats *out, int n);

/*
 * Capture files (`evring record` / `evring replay`). evr_consumer_capture
 * writes everything the pipeline delivers from now on to a msgpack stream at
 * path: a header, each source and its metadata, every record in delivery
 * order with the times computed live, deaths, and the counters at the end.
 * Sources attached later join it. Returns 0 or -errno with err set.
 */
EVR_API int evr_consumer_capture(struct evr_consumer *c, const char *path, char *err, size_t errlen);

/*
 * Flushes the merge into the capture (every record read so far), writes the
 * trailer and closes the file. evr_consumer_close does it too, but cannot
 * report a write error: call this first. Returns 0, -EINVAL (no capture) or
 * the first write error (-errno).
 */
EVR_API int evr_consumer_capture_end(struct evr_consumer *c);

/*
 * Raw captures (`evring record --raw`). evr_consumer_capture_raw makes the
 * drain copy committed record bytes into a capture file at path, lane by
 * lane, in runs (ring.h, RUNS), checking commit words only: with the
 * metadata entries, the clock mapping, LOST records and deaths, and nothing
 * decoded. Each run's room goes back to the writers as soon as it is
 * copied. Without EVR_CAPTURE_RAW_DECODE nothing reaches the handlers live;
 * with it, the runs are also decoded live, as evr_consumer_replay decodes
 * them later (the same decode stage, the same clock mapping, the same
 * rounds), so both give the handlers the same stream. Sources attached
 * later join it; nothing is retired while it is written. Ended by
 * evr_consumer_capture_end. Returns 0, -EBUSY (a capture is written
 * already, or the consumer replays) or -errno with err set. Drain thread.
 */
enum evr_capture_raw_flags { EVR_CAPTURE_RAW_DECODE = 1u };
EVR_API int evr_consumer_capture_raw(struct evr_consumer *c, const char *path, unsigned flags, char *err,
				     size_t errlen);

/* What a raw capture holds so far, and the ring readers' exact count: delivered + lost == written. */
struct evr_raw_stats {
	uint64_t runs, run_bytes, run_records; /* runs copied, their bytes, the records in them */
	uint64_t singles;		       /* records handed over one by one (LOST records among them) */
	uint64_t delivered;		       /* records the ring readers delivered (runs' and singles') */
	uint64_t lost;			       /* records lost: LOST records' counts (the producers' and the readers') */
	uint64_t overrun;		       /* of lost, records writers pushed a stale slot's head past */
	uint64_t skipped;		       /* records the ring readers stepped over (bad, stuck, dead writers) */
};
/* Returns 0, or -EINVAL when no raw capture is being written. Drain thread. */
EVR_API int evr_consumer_raw_stats(struct evr_consumer *c, struct evr_raw_stats *out);

/*
 * Runs a capture file through span building and the handlers, as the live
 * consumer did: the same records in the same order, so the same output.
 * The consumer must be attached to nothing. Returns the records replayed, or
 * -errno with err set: -ENOENT, -EBADMSG (names the bad entry; what came
 * before it was delivered), -EPROTO (a capture version this evring does not
 * read).
 */
EVR_API int evr_consumer_replay(struct evr_consumer *c, const char *path, char *err, size_t errlen);

/*
 * Waits until every handler that is not stalled has run the callbacks for
 * everything delivered so far (live views read their handler's state after
 * it). Drain thread only.
 */
EVR_API void evr_consumer_sync(struct evr_consumer *c);

/* Makes evr_consumer_run return at its next round. Async-signal-safe. */
EVR_API void evr_consumer_stop(struct evr_consumer *c);

/*
 * Ends the stream: flushes the merge (every record read is delivered),
 * ends the spans of dead producers as abandoned, hands spans still open to
 * handlers as detached (only to on_span_end with EVR_SPAN_DETACHED: they may
 * yet end), and waits for the handlers that are not stalled to take it all.
 * Counters read after it are final. Polling after it reads nothing more.
 * evr_consumer_close calls it when it has not run.
 */
EVR_API void evr_consumer_finish(struct evr_consumer *c);

/*
 * Finishes the stream (evr_consumer_finish), then has every handler that is
 * not stalled run on_end / on_close now, after everything queued for it,
 * and waits for them. Their ctx stays until evr_consumer_close (which then
 * runs only destroy), so evr_consumer_handler_stats still asks them: its
 * counters include what a handler's own end did (the otlp handler's last
 * flush), and a summary printed after it is final. Nothing is delivered
 * after it. Drain thread.
 */
EVR_API void evr_consumer_end(struct evr_consumer *c);

/*
 * Finishes the stream (evr_consumer_finish), drains every handler's queue,
 * runs on_close and destroy, releases the consumer slots and unmaps. A
 * handler stalled in a call is left behind, not waited for.
 */
EVR_API void evr_consumer_close(struct evr_consumer *c);

#ifdef __cplusplus
}
#endif

#endif /* EVRING_CONSUMER_H */
