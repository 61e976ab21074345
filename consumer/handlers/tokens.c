/*
 * tokens.c: the "tokens" handler, LlamaIndex's TokenCountingHandler for
 * evring: input, output and total tokens per model and per trace, exact.
 *
 * What counts: every ended span whose fields carry gen_ai.usage.input_tokens
 * and/or gen_ai.usage.output_tokens (llm.chat, llm.completion, embedding, or
 * any span an application gives usage), end fields first, then begin fields.
 * Dropped and abandoned spans count too: a stream cut short still spent the
 * tokens its end reports. The model is gen_ai.response.model (end, then
 * begin fields), else gen_ai.request.model, else "(unknown)". A span named
 * "embedding" (or with gen_ai.operation.name "embeddings") adds to the
 * embedding total, every other one to the LLM prompt / completion totals,
 * TokenCountingHandler's four counters.
 *
 * Exact: counts are 64-bit integers and every sum is 128-bit, so no total
 * can wrap or round (a double would from 2^53). A usage value that is not a
 * non-negative integer (negative, fractional, a string) is left out and
 * counted, as are losses; both are printed under the tables.
 *
 * Per-trace rows are kept for the first TOK_TRACES_MAX traces (about 64 MB);
 * later traces add to one "(other traces)" row, so memory stays bounded on a
 * consumer that runs for days while totals stay exact.
 *
 * Output, at on_close (numbers are right-aligned, models sorted by name,
 * traces in the order they first reported usage, as pid:trace_id):
 *
 *   model                      spans   input_tokens  output_tokens   total_tokens
 *   gpt-4o                         3           1200            300           1500
 *   text-embedding-3-small         2            512              0            512
 *   (all)                          5           1712            300           2012
 *
 *   trace                      spans   input_tokens  output_tokens   total_tokens
 *   4242:1c                        4           1412            300           1712
 *   ...
 *   prompt_llm_token_count=1200 completion_llm_token_count=300 total_llm_token_count=1500 total_embedding_token_count=512
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "builtin.h"

#define TOK_TRACES_MAX (1u << 20)
#define LABEL_MAX 64

struct tok_trace {
	uint32_t pid;
	uint64_t trace_id;
	struct evr__tok_sum s;
};

struct tokens {
	FILE *out; /* not ours: never closed */
	struct evr__strmap models;
	struct evr__tok_sum *model_rows; /* by the strmap's index */
	uint32_t model_cap;
	struct evr__pairmap traces; /* (pid + 1, trace_id) -> index + 1 in trace_rows */
	struct tok_trace *trace_rows;
	uint32_t ntraces, trace_cap;
	struct evr__tok_sum all, other_traces;
	unsigned __int128 llm_prompt, llm_completion, embedding;
	uint64_t invalid, lost;
};

static void sum_add(struct evr__tok_sum *s, uint64_t in, uint64_t out)
{
	s->input += in;
	s->output += out;
	s->total += (unsigned __int128)in + out;
	s->spans++;
}

/* A usage count from end fields, else begin fields: 1 found, 0 absent, -1 present but not a count. */
static int usage(const struct evr_span_rec *sp, const char *name, uint64_t *v)
{
	const struct evr_value *val = evr__field_find(sp->end_fields, name);

	if (!val)
		val = evr__field_find(sp->begin_fields, name);
	if (!val)
		return 0;
	return evr__value_u64(val, v) ? 1 : -1;
}

static const char *str_field(const struct evr_span_rec *sp, const char *name)
{
	const struct evr_value *v = evr__field_find(sp->end_fields, name);

	if (!v || v->type != EVR_V_STR || !v->s || !*v->s)
		v = evr__field_find(sp->begin_fields, name);
	return v && v->type == EVR_V_STR && v->s && *v->s ? v->s : NULL;
}

static struct evr__tok_sum *model_row(struct tokens *t, const char *model)
{
	uint32_t idx;
	int rc = evr__strmap_intern(&t->models, model, &idx);

	if (rc < 0)
		return NULL;
	if (idx >= t->model_cap) {
		uint32_t cap = t->model_cap ? t->model_cap * 2 : 16;
		struct evr__tok_sum *rows = realloc(t->model_rows, cap * sizeof(*rows));

		if (!rows)
			return NULL; /* the name stays interned with no row: found again, grown again */
		memset(rows + t->model_cap, 0, (cap - t->model_cap) * sizeof(*rows));
		t->model_rows = rows;
		t->model_cap = cap;
	}
	return &t->model_rows[idx];
}

static struct evr__tok_sum *trace_row(struct tokens *t, uint32_t pid, uint64_t trace_id)
{
	uint64_t *slot = evr__pairmap_get(&t->traces, (uint64_t)pid + 1, trace_id);
	bool added;

	if (slot)
		return &t->trace_rows[*slot - 1].s;
	if (t->ntraces >= TOK_TRACES_MAX)
		return &t->other_traces;
	if (t->ntraces == t->trace_cap) {
		uint32_t cap = t->trace_cap ? t->trace_cap * 2 : 64;
		struct tok_trace *rows = realloc(t->trace_rows, cap * sizeof(*rows));

		if (!rows)
			return NULL;
		t->trace_rows = rows;
		t->trace_cap = cap;
	}
	/* pid + 1: key (0, 0) marks an empty slot. */
	slot = evr__pairmap_put(&t->traces, (uint64_t)pid + 1, trace_id, &added);
	if (!slot)
		return NULL;
	t->trace_rows[t->ntraces] = (struct tok_trace){ .pid = pid, .trace_id = trace_id };
	*slot = ++t->ntraces;
	return &t->trace_rows[t->ntraces - 1].s;
}

static int tokens_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct tokens *t = ctx;
	uint64_t in = 0, out = 0;
	int hin = usage(sp, "gen_ai.usage.input_tokens", &in);
	int hout = usage(sp, "gen_ai.usage.output_tokens", &out);
	const char *model, *op, *name = evr__site_name(sp->site);
	struct evr__tok_sum *mrow, *trow;
	bool embedding;

	t->invalid += (hin < 0) + (hout < 0);
	if (hin <= 0 && hout <= 0)
		return 0;
	if (hin <= 0)
		in = 0;
	if (hout <= 0)
		out = 0;
	model = str_field(sp, "gen_ai.response.model");
	if (!model)
		model = str_field(sp, "gen_ai.request.model");
	if (!model)
		model = "(unknown)";
	op = str_field(sp, "gen_ai.operation.name");
	embedding = (name && strcmp(name, "embedding") == 0) || (op && strcmp(op, "embeddings") == 0);

	mrow = model_row(t, model);
	trow = trace_row(t, sp->src ? sp->src->pid : 0, sp->trace_id);
	if (!mrow || !trow)
		return -ENOMEM; /* nothing added: the counts stay consistent with each other */
	sum_add(mrow, in, out);
	sum_add(trow, in, out);
	sum_add(&t->all, in, out);
	if (embedding)
		t->embedding += (unsigned __int128)in + out;
	else {
		t->llm_prompt += in;
		t->llm_completion += out;
	}
	return 0;
}

static int tokens_lost(void *ctx, const struct evr_lost *l)
{
	struct tokens *t = ctx;

	t->lost += l->count;
	return 0;
}

static void row(FILE *f, int width, const char *label, const struct evr__tok_sum *s)
{
	char in[40], out[40], tot[40];

	fprintf(f, "%-*s %8" PRIu64 " %14s %14s %14s\n", width, label, s->spans,
		evr__fmt_u128(in, sizeof(in), s->input), evr__fmt_u128(out, sizeof(out), s->output),
		evr__fmt_u128(tot, sizeof(tot), s->total));
}

static int by_name(const void *a, const void *b, void *models)
{
	char **keys = ((const struct evr__strmap *)models)->keys;

	return strcmp(keys[*(const uint32_t *)a], keys[*(const uint32_t *)b]);
}

static void tokens_close(void *ctx)
{
	struct tokens *t = ctx;
	FILE *f = t->out;
	char label[LABEL_MAX + 4], a[40], b[40], c[40], d[40];
	int width = 24;
	uint32_t *order = calloc(t->models.n ? t->models.n : 1, sizeof(*order));

	for (uint32_t i = 0; i < t->models.n; i++) {
		int len = (int)strlen(evr__fmt_label(label, LABEL_MAX, t->models.keys[i]));
		if (len > width)
			width = len;
	}
	flockfile(f);
	fprintf(f, "%-*s %8s %14s %14s %14s\n", width, "model", "spans", "input_tokens", "output_tokens",
		"total_tokens");
	if (order) {
		for (uint32_t i = 0; i < t->models.n; i++)
			order[i] = i;
		qsort_r(order, t->models.n, sizeof(*order), by_name, &t->models);
		for (uint32_t i = 0; i < t->models.n; i++)
			if (order[i] < t->model_cap)
				row(f, width, evr__fmt_label(label, LABEL_MAX, t->models.keys[order[i]]),
				    &t->model_rows[order[i]]);
	}
	row(f, width, "(all)", &t->all);
	fprintf(f, "\n%-*s %8s %14s %14s %14s\n", width, "trace", "spans", "input_tokens", "output_tokens",
		"total_tokens");
	for (uint32_t i = 0; i < t->ntraces; i++) {
		snprintf(label, sizeof(label), "%" PRIu32 ":%" PRIx64, t->trace_rows[i].pid, t->trace_rows[i].trace_id);
		row(f, width, label, &t->trace_rows[i].s);
	}
	if (t->other_traces.spans)
		row(f, width, "(other traces)", &t->other_traces);
	fprintf(f, "\nprompt_llm_token_count=%s completion_llm_token_count=%s total_llm_token_count=%s "
		   "total_embedding_token_count=%s\n",
		evr__fmt_u128(a, sizeof(a), t->llm_prompt), evr__fmt_u128(b, sizeof(b), t->llm_completion),
		evr__fmt_u128(c, sizeof(c), t->llm_prompt + t->llm_completion),
		evr__fmt_u128(d, sizeof(d), t->embedding));
	if (t->invalid)
		fprintf(f, "note: %" PRIu64 " usage values were not non-negative integers and were left out\n",
			t->invalid);
	if (t->lost)
		fprintf(f, "note: the producers lost %" PRIu64 " records: counts may be low\n", t->lost);
	fflush_unlocked(f);
	funlockfile(f);
	free(order);
}

static void tokens_destroy(void *ctx)
{
	struct tokens *t = ctx;

	evr__strmap_free(&t->models);
	evr__pairmap_free(&t->traces);
	free(t->model_rows);
	free(t->trace_rows);
	free(t);
}

bool evr__tokens_model(void *ctx, const char *model, struct evr__tok_sum *out)
{
	struct tokens *t = ctx;

	if (!model) {
		*out = t->all;
		return true;
	}
	for (uint32_t i = 0; i < t->models.n && i < t->model_cap; i++)
		if (strcmp(t->models.keys[i], model) == 0) {
			*out = t->model_rows[i];
			return true;
		}
	return false;
}

bool evr__tokens_trace(void *ctx, uint32_t pid, uint64_t trace_id, struct evr__tok_sum *out)
{
	struct tokens *t = ctx;
	uint64_t *slot = evr__pairmap_get(&t->traces, (uint64_t)pid + 1, trace_id);

	if (!slot)
		return false;
	*out = t->trace_rows[*slot - 1].s;
	return true;
}

int evr__tokens_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct tokens *t = calloc(1, sizeof(*t));

	(void)arg;
	if (!t)
		return evr__builtin_err(err, errlen, -ENOMEM, "tokens: out of memory");
	t->out = out ? out : stdout;
	h->name = "tokens";
	h->ctx = t;
	h->on_span_end = tokens_span_end;
	h->on_lost = tokens_lost;
	h->on_close = tokens_close;
	h->destroy = tokens_destroy;
	return 0;
}
