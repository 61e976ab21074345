/*
 * bench_stages.c: a measuring subcommand as a table of stages (struct
 * bench_stages, bench.h), and what the stages of several subcommands share:
 * the rounds of warm-up and timed runs over a table of cases, ratios against
 * a baseline row, and the note on how busy other processes kept the machine.
 *
 * bench_sub_main runs the stages in one order for every subcommand:
 *
 *   options -> setup -> run -> report -> print (JSON or text) -> check -> teardown
 *
 * so a subcommand's file holds its cases and what each stage does with them,
 * and none of them repeats the sequence, the option parsing or the printing.
 */
#include <string.h>

#include "bench.h"

int bench_sub_main(const struct bench_stages *st, void *ctx, int argc, char **argv)
{
	static struct bench_sub s; /* the table's notes are large; one subcommand runs per process */
	int rc;

	memset(&s, 0, sizeof(s));
	rc = bench_args(&s.o, argc, argv, st->own, st->nown, st->usage);
	if (rc >= 0)
		return rc;
	rc = st->setup(&s, ctx);
	if (rc >= 0) {
		bench_table_free(&s.t);
		return rc;
	}
	rc = st->run(&s, ctx);
	if (rc < 0) {
		st->report(&s, ctx);
		if (s.o.json) {
			bench_print_json(stdout, &s.m, &s.t);
		} else {
			bench_print_text(stdout, &s.m, &s.t);
			if (st->notes)
				st->notes(&s, ctx);
		}
		fflush(stdout);
		rc = st->check ? st->check(&s, ctx) : 0;
	}
	if (st->teardown)
		st->teardown(&s, ctx, rc);
	bench_table_free(&s.t);
	return rc;
}

bool bench_rounds(unsigned ncases, unsigned warmups, unsigned runs,
		  bool (*run)(void *ctx, unsigned c, unsigned r, bool timed), void *ctx)
{
	for (unsigned w = 0; w < warmups; w++)
		for (unsigned c = 0; c < ncases; c++)
			if (!run(ctx, c, 0, false))
				return false;
	for (unsigned r = 0; r < runs; r++)
		for (unsigned c = 0; c < ncases; c++)
			if (!run(ctx, c, r, true))
				return false;
	return true;
}

void bench_table_ratio(struct bench_table *t, const char *key,
		       const struct bench_result *(*base_of)(const struct bench_table *t, const struct bench_result *r))
{
	for (size_t i = 0; i < t->n; i++) {
		struct bench_result *r = &t->rows[i];
		const struct bench_result *base = base_of(t, r);

		if (base && base->st.median > 0)
			bench_result_set(r, key, r->st.median / base->st.median);
	}
}

void bench_table_note_load(struct bench_table *t, const char *who, double others_s, double share, const char *busy)
{
	if (others_s < 0)
		return;
	bench_table_note(t, "%s used %.1f CPU-s (%.0f%% of the CPU time) during the runs%s", who, others_s,
			 100 * share, share > 0.05 ? busy : "");
}

double bench_median(const double *v, unsigned n)
{
	struct bench_stats s;

	bench_stats_of(&s, v, n);
	return s.median;
}
