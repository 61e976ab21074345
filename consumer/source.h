/*
 * source.h: a source (struct evr_src), one attached segment, and its
 * metadata tables (source.c): the sites, dispatchers and threads its
 * producer described in the segment's metadata area, read as hostile input.
 * Every stage may read a source; attach.c fills and frees it, source.c keeps
 * its tables, the drain loop (consumer.c) moves its clocks and liveness.
 */
#ifndef EVR_CONSUMER_SOURCE_H
#define EVR_CONSUMER_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include <evring/consumer.h>
#include <evring/ring.h>

struct evr_dispatcher_info {
	char *path;
	bool propagate;
};

struct evr_thread_info {
	uint32_t tid;
	uint32_t lane;
	char name[32];
};

struct evr_src {
	struct evr_source pub; /* what handlers see; first, so the two convert */
	struct evr_segment seg;
	struct evr_reader reader;
	struct evr_clock_map clock;
	uint64_t meta_cursor;
	bool slot_held;
	uint32_t slot;		   /* the consumer slot it holds (when slot_held) */

	/* Sites by id: open addressing, power-of-two capacity. */
	struct evr_site_info **sites;
	uint32_t sites_cap, sites_n;
	struct evr_dispatcher_info *dispatchers;
	uint32_t dispatchers_n, dispatchers_cap;
	struct evr_thread_info *threads;
	uint32_t threads_n, threads_cap;

	uint64_t next_liveness_ns; /* when to look at the producer's pid again */
	uint64_t next_refine_ns;   /* when to refine the clock mapping */
	uint64_t dead_ns;	   /* CLOCK_MONOTONIC when its death was seen */
	bool exited;		   /* and it had ended normally (the header's exited_real_ns) */
	int fault;		   /* its mapping's slot in the SIGBUS watch (fault.h), <= 0: none */
	bool faulted;		   /* detached: its segment shrank under the consumer */
	uint64_t fault_offset;	   /* where the first SIGBUS hit, from the segment's start */
	bool drained_after_death;
	/* Retirement (SOURCE LIFETIME in consumer.h); the drain thread's but for released. */
	bool detached;	       /* evr_consumer_detach: read no more */
	bool end_sent;	       /* its end marker went to the hub */
	uint32_t released;     /* set (release) when the last handler let go of the marker; read with acquire */
	uint64_t records;      /* read from its lanes */
	uint64_t lost;	       /* LOST counts of its records */
	uint64_t attached_ns;  /* CLOCK_REALTIME at attach */
	struct evr_lane_state *lanes;
	uint64_t trace_id_high; /* the high half of its traces' 16-byte ids (OTLP): never 0 */
	char program[64], cmdline[512], shm_name[128];
	/* Run parameters of its producer (EVR_META_PARAM), in the order first set: key "app.KEY", owned. */
	struct evr_param *app;
	uint32_t app_n, app_cap;
	uint32_t app_gen;	/* bumped whenever app changes: a run update is due (sampler.c) */
	uint64_t params_bad;	/* EVR_META_PARAM entries that were not [str, str] within the limits */
};

/*
 * A segment's trace_id_high, or for a segment without one (before ABI 1.1)
 * one derived from what identifies its process: the same for every reader.
 */
uint64_t evr__src_trace_id_high(uint64_t from_header, uint32_t pid, uint64_t start_real_ns);

/* Per lane: the thread whose records are being read (from EVR_REC_THREAD records). */
struct evr_lane_state {
	uint32_t tid;
	bool full;	    /* raw rounds (drain.c): this round stopped with records left */
	uint64_t last_mono; /* raw rounds: the time of the last record decoded this round */
};

/*
 * The site with this id, reading metadata appended since the last look, or
 * ahead of the in-order scan, when it is not known yet; NULL when none is
 * there. Counts bad entries in st.
 */
const struct evr_site_info *evr__src_site_find(struct evr_src *s, uint64_t id, struct evr_consumer_stats *st);

/* Reads metadata entries appended since the last call. Returns entries read or -errno. */
int evr__src_meta_refresh(struct evr_src *s, struct evr_consumer_stats *st);

const struct evr_site_info *evr__src_site(const struct evr_src *s, uint64_t id);
const struct evr_thread_info *evr__src_thread(const struct evr_src *s, uint32_t tid);

/* True when records of dispatcher `from` reach handlers of `to` (a prefix of it), honouring propagate. */
bool evr__src_dispatch_reaches(const struct evr_src *s, const char *from, const char *to);

/* Applies one metadata entry (a decoded payload map) to a source. Returns 0 or -EBADMSG. */
struct msgpack_object;
int evr__src_meta_apply(struct evr_src *s, uint32_t kind, uint64_t id, const struct msgpack_object *obj);

/* Frees a source's tables (sites, dispatchers, threads). */
void evr__src_tables_free(struct evr_src *s);

#endif /* EVR_CONSUMER_SOURCE_H */
