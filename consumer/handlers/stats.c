/*
 * stats.c: the "stats" handler. Per span name: count, errors, total
 * duration and p50 / p95 / p99; for streamed LLM spans, time to first token
 * (TTFT) and inter-token latency (ITL). Printed as a table at on_close:
 *
 *   span          count  errors      total_ms      p50_ms      p95_ms      p99_ms      max_ms
 *   llm.chat         12       1     12345.678     950.000    1900.000    2000.000    2000.000
 *   retrieve         12       0       600.000      50.000      55.000      60.000      60.000
 *
 *   streamed      streams   chunks  ttft_p50_ms  ttft_p99_ms   itl_p50_ms   itl_p99_ms
 *   llm.chat           12      480      120.000      300.000       20.000       45.000
 *
 * Which spans are timed. count is every span handed to on_span_end; errors
 * are the dropped and abandoned ones. Durations (total and percentiles) are
 * of ok and dropped spans: an abandoned span ended when the consumer gave up
 * on it (its producer died, or it was evicted), and a span still open at
 * close (detached) has not ended, so neither has a duration to report; they
 * are counted and noted under the table.
 *
 * Percentiles are nearest-rank (the smallest value with at least p% of the
 * samples at or below it) over a log-linear histogram: values below 256 ns
 * have a bucket each (exact); above, each power of two is split into 128
 * buckets, and a bucket reports its midpoint, clamped to the exact minimum
 * and maximum seen (the first and last ranks are those, exactly). The reported value is therefore within 1/256 (0.39%) of
 * the true percentile, at any scale from nanoseconds to years, in 7424
 * buckets (58 KiB) per histogram, however many spans arrive.
 *
 * Streams. An event whose name ends in ".in_progress" (llm.chat.in_progress,
 * llm.completion.in_progress: one per streamed chunk) belongs to the span
 * of its span_id. Chunks arrive before their span's end, so the handler keeps
 * per open stream the first and last chunk times and the gaps between
 * consecutive chunks; at the span's end TTFT = first chunk - span start goes
 * into that span name's TTFT histogram and every gap into its ITL histogram.
 * Times are CLOCK_MONOTONIC when the records carry it (immune to the
 * wall-clock mapping being refined), UTC otherwise. At most STREAMS_MAX
 * streams are followed at once, GAPS_MAX gaps each; past either, what is
 * left out is counted and noted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "builtin.h"

#define SUB_BITS 7u			   /* 2^7 = 128 buckets per power of two */
#define SUB (1u << SUB_BITS)
#define EXACT (2u * SUB)		   /* values below this have their own bucket */
#define HIST_N (EXACT + (64u - 8u) * SUB) /* exponents 8..63 */
#define STREAMS_MAX 65536u
#define GAPS_MAX 65536u
#define LABEL_MAX 48
#define SITE_CACHE 256u /* direct-mapped, by site pointer */

struct hist {
	uint64_t n, min, max;
	uint64_t *counts; /* HIST_N, allocated at the first sample */
};

struct row {
	uint64_t count, errors, abandoned, open, timed;
	unsigned __int128 total_ns;
	struct hist dur;
	uint64_t streams, chunks;
	struct hist ttft, itl;
};

struct stream {
	uint64_t first_mono, first_real, last_mono, last_real;
	uint64_t chunks;
	uint64_t *gaps;
	uint32_t ngaps, cap;
};

/*
 * What stats needs of a site, found once per site rather than per record: its
 * row (the name interned; sites live as long as their source, so as long as
 * any record of them) and whether it is a stream chunk.
 */
struct site_memo {
	const struct evr_site_info *site; /* NULL: empty */
	uint32_t row;			  /* index + 1; 0: not interned yet */
	bool chunk;
};

struct stats {
	FILE *out; /* not ours: never closed */
	struct site_memo memo[SITE_CACHE];
	struct evr__strmap names;
	struct row *rows; /* by the strmap's index */
	uint32_t cap;
	struct evr__pairmap streams; /* (source pointer, span id) -> struct stream * */
	uint64_t lost, streams_untracked, gaps_untracked;
	uint64_t streams_ended_open; /* streams of sources let go before their end came */
};

uint32_t evr__hist_index(uint64_t v)
{
	unsigned e;

	if (v < EXACT)
		return (uint32_t)v;
	e = 63u - (unsigned)__builtin_clzll(v); /* 8..63 */
	return EXACT + (e - 8u) * SUB + (uint32_t)((v >> (e - SUB_BITS)) - SUB);
}

uint64_t evr__hist_value(uint32_t idx)
{
	uint32_t e, m;
	uint64_t lo, width;

	if (idx < EXACT)
		return idx;
	e = 8u + (idx - EXACT) / SUB;
	m = SUB + (idx - EXACT) % SUB;
	lo = (uint64_t)m << (e - SUB_BITS);
	width = 1ull << (e - SUB_BITS);
	return lo + (width - 1) / 2;
}

static int hist_add(struct hist *h, uint64_t v)
{
	if (!h->counts) {
		h->counts = calloc(HIST_N, sizeof(*h->counts));
		if (!h->counts)
			return -ENOMEM;
	}
	h->counts[evr__hist_index(v)]++;
	if (!h->n || v < h->min)
		h->min = v;
	if (!h->n || v > h->max)
		h->max = v;
	h->n++;
	return 0;
}

/* The nearest-rank percentile, permille / 10 percent; 0 with no samples. */
static uint64_t hist_pct(const struct hist *h, unsigned permille)
{
	unsigned __int128 rank;
	uint64_t seen = 0;

	if (!h->n || !h->counts)
		return 0;
	rank = ((unsigned __int128)h->n * permille + 999) / 1000;
	/* The smallest and largest samples are known exactly, not just their buckets. */
	if (rank <= 1)
		return h->min;
	if (rank >= h->n)
		return h->max;
	for (uint32_t i = 0; i < HIST_N; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			uint64_t v = evr__hist_value(i);
			return v < h->min ? h->min : v > h->max ? h->max : v;
		}
	}
	return h->max;
}

static bool is_chunk(const struct evr_site_info *site);

/* The memo of a site: filled on first sight, replaced when another site takes its slot. */
static struct site_memo *memo_of(struct stats *s, const struct evr_site_info *site)
{
	struct site_memo *m = &s->memo[((uintptr_t)site >> 4 ^ (uintptr_t)site >> 12) & (SITE_CACHE - 1)];

	if (m->site != site) {
		m->site = site;
		m->row = 0;
		m->chunk = is_chunk(site);
	}
	return m;
}

static struct row *row_of(struct stats *s, const char *name, struct site_memo *m)
{
	uint32_t idx;

	if (m && m->row && m->row - 1 < s->cap)
		return &s->rows[m->row - 1];
	if (evr__strmap_intern(&s->names, name ? name : "(unknown)", &idx) < 0)
		return NULL;
	if (idx >= s->cap) {
		uint32_t cap = s->cap ? s->cap * 2 : 16;
		struct row *rows = realloc(s->rows, cap * sizeof(*rows));

		if (!rows)
			return NULL; /* interned without a row: found again, grown again */
		memset(rows + s->cap, 0, (cap - s->cap) * sizeof(*rows));
		s->rows = rows;
		s->cap = cap;
	}
	if (m)
		m->row = idx + 1;
	return &s->rows[idx];
}

static bool is_chunk(const struct evr_site_info *site)
{
	static const char suffix[] = ".in_progress";
	const char *name = evr__site_name(site);
	size_t n = name ? strlen(name) : 0;

	return n >= sizeof(suffix) - 1 && strcmp(name + n - (sizeof(suffix) - 1), suffix) == 0;
}

static int stats_event(void *ctx, const struct evr_event *ev)
{
	struct stats *s = ctx;
	struct stream *st;
	uint64_t *slot;
	bool added;

	if (!ev->span_id || !ev->site || !memo_of(s, ev->site)->chunk)
		return 0;
	slot = evr__pairmap_get(&s->streams, (uint64_t)(uintptr_t)ev->src, ev->span_id);
	if (!slot) {
		if (s->streams.n >= STREAMS_MAX) {
			s->streams_untracked++;
			return 0;
		}
		st = calloc(1, sizeof(*st));
		if (!st)
			return -ENOMEM;
		/* span_id is non-zero, so the key is never the empty slot's (0, 0). */
		slot = evr__pairmap_put(&s->streams, (uint64_t)(uintptr_t)ev->src, ev->span_id, &added);
		if (!slot) {
			free(st);
			return -ENOMEM;
		}
		st->first_mono = st->last_mono = ev->mono_ns;
		st->first_real = st->last_real = ev->ts_ns;
		st->chunks = 1;
		*slot = (uint64_t)(uintptr_t)st;
		return 0;
	}
	st = (struct stream *)(uintptr_t)*slot;
	st->chunks++;
	if (st->ngaps == st->cap && st->cap < GAPS_MAX) {
		uint32_t cap = st->cap ? st->cap * 2 : 32;
		uint64_t *gaps = realloc(st->gaps, cap * sizeof(*gaps));

		if (gaps) {
			st->gaps = gaps;
			st->cap = cap;
		}
	}
	if (st->ngaps < st->cap) {
		uint64_t gap;

		if (st->last_mono && ev->mono_ns)
			gap = ev->mono_ns > st->last_mono ? ev->mono_ns - st->last_mono : 0;
		else
			gap = ev->ts_ns > st->last_real ? ev->ts_ns - st->last_real : 0;
		st->gaps[st->ngaps++] = gap;
	} else
		s->gaps_untracked++;
	st->last_mono = ev->mono_ns;
	st->last_real = ev->ts_ns;
	return 0;
}

static void stream_free(struct stream *st)
{
	free(st->gaps);
	free(st);
}

/* Folds the span's stream, if it had one, into its name's TTFT and ITL histograms. */
static int fold_stream(struct stats *s, struct row *r, const struct evr_span_rec *sp)
{
	uint64_t v;
	struct stream *st;
	int rc = 0;

	if (!sp->span_id || !evr__pairmap_remove(&s->streams, (uint64_t)(uintptr_t)sp->src, sp->span_id, &v))
		return 0;
	st = (struct stream *)(uintptr_t)v;
	r->streams++;
	r->chunks += st->chunks;
	if (sp->start_mono_ns && st->first_mono) {
		if (st->first_mono >= sp->start_mono_ns)
			rc |= hist_add(&r->ttft, st->first_mono - sp->start_mono_ns);
	} else if (st->first_real >= sp->start_ns)
		rc |= hist_add(&r->ttft, st->first_real - sp->start_ns);
	for (uint32_t i = 0; i < st->ngaps; i++)
		rc |= hist_add(&r->itl, st->gaps[i]);
	stream_free(st);
	return rc ? -ENOMEM : 0;
}

static int stats_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct stats *s = ctx;
	struct row *r = row_of(s, evr__site_name(sp->site), sp->site ? memo_of(s, sp->site) : NULL);
	uint64_t d;

	if (!r)
		return -ENOMEM;
	r->count++;
	switch (sp->status) {
	case EVR_SPAN_OK:
	case EVR_SPAN_DROPPED:
		r->errors += sp->status == EVR_SPAN_DROPPED;
		d = evr__span_duration_ns(sp);
		r->timed++;
		r->total_ns += d;
		if (hist_add(&r->dur, d))
			return -ENOMEM;
		break;
	case EVR_SPAN_ABANDONED:
		r->errors++;
		r->abandoned++;
		break;
	default:
		r->open++;
		/* A detached span may yet end: its chunks so far are not a whole stream. */
		return 0;
	}
	return fold_stream(s, r, sp);
}

static int stats_lost(void *ctx, const struct evr_lost *l)
{
	struct stats *s = ctx;

	s->lost += l->count;
	return 0;
}

static int by_name(const void *a, const void *b, void *names)
{
	char **keys = ((const struct evr__strmap *)names)->keys;

	return strcmp(keys[*(const uint32_t *)a], keys[*(const uint32_t *)b]);
}

/* A duration cell: milliseconds, or "-" when there is no sample. */
static const char *cell(char *buf, size_t len, const struct hist *h, uint64_t v)
{
	return h->n ? evr__fmt_ms(buf, len, v) : "-";
}

static void print_table(struct stats *s, FILE *f, const uint32_t *order)
{
	char label[LABEL_MAX + 4], t[48], p50[48], p95[48], p99[48], mx[48];
	uint64_t open = 0, abandoned = 0, streamed = 0;
	int width = 12;

	for (uint32_t i = 0; i < s->names.n; i++) {
		int len = (int)strlen(evr__fmt_label(label, LABEL_MAX, s->names.keys[i]));
		if (len > width)
			width = len;
	}
	fprintf(f, "%-*s %8s %7s %14s %11s %11s %11s %11s\n", width, "span", "count", "errors", "total_ms", "p50_ms",
		"p95_ms", "p99_ms", "max_ms");
	for (uint32_t k = 0; k < s->names.n; k++) {
		const struct row *r;

		if (order[k] >= s->cap)
			continue;
		r = &s->rows[order[k]];
		open += r->open;
		abandoned += r->abandoned;
		streamed += r->streams;
		fprintf(f, "%-*s %8" PRIu64 " %7" PRIu64 " %14s %11s %11s %11s %11s\n", width,
			evr__fmt_label(label, LABEL_MAX, s->names.keys[order[k]]), r->count, r->errors,
			r->dur.n ? evr__fmt_ms(t, sizeof(t), r->total_ns) : "-",
			cell(p50, sizeof(p50), &r->dur, hist_pct(&r->dur, 500)),
			cell(p95, sizeof(p95), &r->dur, hist_pct(&r->dur, 950)),
			cell(p99, sizeof(p99), &r->dur, hist_pct(&r->dur, 990)), cell(mx, sizeof(mx), &r->dur, r->dur.max));
	}
	if (streamed) {
		fprintf(f, "\n%-*s %8s %8s %12s %12s %12s %12s\n", width, "streamed", "streams", "chunks", "ttft_p50_ms",
			"ttft_p99_ms", "itl_p50_ms", "itl_p99_ms");
		for (uint32_t k = 0; k < s->names.n; k++) {
			const struct row *r;

			if (order[k] >= s->cap || !s->rows[order[k]].streams)
				continue;
			r = &s->rows[order[k]];
			fprintf(f, "%-*s %8" PRIu64 " %8" PRIu64 " %12s %12s %12s %12s\n", width,
				evr__fmt_label(label, LABEL_MAX, s->names.keys[order[k]]), r->streams, r->chunks,
				cell(p50, sizeof(p50), &r->ttft, hist_pct(&r->ttft, 500)),
				cell(p99, sizeof(p99), &r->ttft, hist_pct(&r->ttft, 990)),
				cell(p95, sizeof(p95), &r->itl, hist_pct(&r->itl, 500)),
				cell(mx, sizeof(mx), &r->itl, hist_pct(&r->itl, 990)));
		}
	}
	fputs_unlocked("\npercentiles: nearest rank, within 0.4% (log histogram, 128 buckets per power of two)\n", f);
	if (abandoned)
		fprintf(f, "note: %" PRIu64 " abandoned spans are counted as errors, without a duration\n", abandoned);
	if (open)
		fprintf(f, "note: %" PRIu64 " spans still open at close are counted, without a duration\n", open);
	if (s->streams.n || s->streams_ended_open)
		fprintf(f, "note: %" PRIu64 " streams had chunks but no end\n", s->streams.n + s->streams_ended_open);
	if (s->streams_untracked || s->gaps_untracked)
		fprintf(f, "note: past the limits, %" PRIu64 " streams and %" PRIu64 " gaps were not followed\n",
			s->streams_untracked, s->gaps_untracked);
	if (s->lost)
		fprintf(f, "note: the producers lost %" PRIu64 " records: counts may be low\n", s->lost);
}

static void stats_close(void *ctx)
{
	struct stats *s = ctx;
	uint32_t *order = calloc(s->names.n ? s->names.n : 1, sizeof(*order));
	FILE *f = s->out;

	if (!order) {
		fputs("stats: out of memory printing the table\n", f);
		return;
	}
	for (uint32_t i = 0; i < s->names.n; i++)
		order[i] = i;
	qsort_r(order, s->names.n, sizeof(*order), by_name, &s->names);
	flockfile(f);
	print_table(s, f, order);
	fflush_unlocked(f);
	funlockfile(f);
	free(order);
}

static void stream_drop(void *arg, uint64_t span_id, uint64_t v)
{
	struct stats *s = arg;

	(void)span_id;
	stream_free((struct stream *)(uintptr_t)v);
	s->streams_ended_open++;
}

/* A source is let go: its open streams with it, and no memo may name its sites (their addresses come back). */
static int stats_source_end(void *ctx, const struct evr_source *src)
{
	struct stats *s = ctx;

	evr__pairmap_remove_a(&s->streams, (uint64_t)(uintptr_t)src, stream_drop, s);
	memset(s->memo, 0, sizeof(s->memo));
	return 0;
}

static void stats_destroy(void *ctx)
{
	struct stats *s = ctx;

	for (uint32_t i = 0; i < s->streams.cap; i++)
		if (s->streams.slots[i].a || s->streams.slots[i].b)
			stream_free((struct stream *)(uintptr_t)s->streams.slots[i].v);
	for (uint32_t i = 0; i < s->cap; i++) {
		free(s->rows[i].dur.counts);
		free(s->rows[i].ttft.counts);
		free(s->rows[i].itl.counts);
	}
	evr__pairmap_free(&s->streams);
	evr__strmap_free(&s->names);
	free(s->rows);
	free(s);
}

bool evr__stats_get(void *ctx, const char *name, struct evr__stats_row *out)
{
	struct stats *s = ctx;

	for (uint32_t i = 0; i < s->names.n && i < s->cap; i++) {
		const struct row *r = &s->rows[i];

		if (strcmp(s->names.keys[i], name) != 0)
			continue;
		*out = (struct evr__stats_row){
			.count = r->count,
			.errors = r->errors,
			.open = r->open,
			.timed = r->timed,
			.total_ns = r->total_ns,
			.p50 = hist_pct(&r->dur, 500),
			.p95 = hist_pct(&r->dur, 950),
			.p99 = hist_pct(&r->dur, 990),
			.min = r->dur.min,
			.max = r->dur.max,
			.streams = r->streams,
			.chunks = r->chunks,
			.ttft_p50 = hist_pct(&r->ttft, 500),
			.ttft_p99 = hist_pct(&r->ttft, 990),
			.itl_p50 = hist_pct(&r->itl, 500),
			.itl_p99 = hist_pct(&r->itl, 990),
		};
		return true;
	}
	return false;
}

int evr__stats_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct stats *s = calloc(1, sizeof(*s));

	(void)arg;
	if (!s)
		return evr__builtin_err(err, errlen, -ENOMEM, "stats: out of memory");
	s->out = out ? out : stdout;
	h->name = "stats";
	h->ctx = s;
	h->on_event = stats_event;
	h->on_span_end = stats_span_end;
	h->on_lost = stats_lost;
	h->on_close = stats_close;
	h->destroy = stats_destroy;
	h->on_source_end = stats_source_end;
	return 0;
}
