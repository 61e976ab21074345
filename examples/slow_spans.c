/*
 * slow_spans.c: a handler plug-in, the README's "writing a handler" example.
 * It prints every span slower than a threshold (the plug-in's argument, in
 * milliseconds; 1 by default) and, at the end, how many spans it saw.
 *
 *   cc -shared -fPIC -o slow_spans.so slow_spans.c $(pkg-config --cflags evring-consumer)
 *   evring attach 1234 -H plugin=./slow_spans.so:5
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <evring/consumer.h>

struct slow {
	uint64_t threshold_ns, spans, slow;
};

static int slow_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct slow *s = ctx;
	uint64_t ns = sp->end_ns > sp->start_ns ? sp->end_ns - sp->start_ns : 0;

	s->spans++;
	if (ns >= s->threshold_ns) {
		s->slow++;
		printf("slow: %s %.3f ms (trace %" PRIx64 ", pid %" PRIu32 ")\n", sp->site ? sp->site->name : "?",
		       (double)ns / 1e6, sp->trace_id, sp->src ? sp->src->pid : 0);
	}
	return 0;
}

static void slow_close(void *ctx)
{
	struct slow *s = ctx;

	printf("slow_spans: %" PRIu64 " of %" PRIu64 " spans took %.3f ms or more\n", s->slow, s->spans,
	       (double)s->threshold_ns / 1e6);
	fflush(stdout);
}

/* The entry point the consumer looks up (EVR_HANDLER_ENTRY): fills *h, or returns -errno with err set. */
EVR_HANDLER_EXPORT int evr_handler_entry_v1(const char *arg, struct evr_handler *h, char *err, size_t errlen);

int evr_handler_entry_v1(const char *arg, struct evr_handler *h, char *err, size_t errlen)
{
	struct slow *s = calloc(1, sizeof(*s));
	double ms = arg && *arg ? strtod(arg, NULL) : 1.0;

	if (!s)
		return -ENOMEM;
	if (!(ms > 0)) {
		snprintf(err, errlen, "slow_spans: the threshold must be milliseconds > 0, not '%s'", arg);
		free(s);
		return -EINVAL;
	}
	s->threshold_ns = (uint64_t)(ms * 1e6);
	h->name = "slow_spans";
	h->ctx = s;
	h->on_span_end = slow_span_end;
	h->on_close = slow_close;
	h->destroy = free;
	return 0;
}
