/*
 * An application built out of tree against an installed evring: it links
 * both libraries, traces itself with the producer API (one event inside one
 * span), attaches a consumer to its own segment and checks that both records
 * come back. run.sh builds it twice, with pkg-config and with
 * find_package(evring), and expects the line "evring-install: ok" on stdout.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <evring/consumer.h>
#include <evring/evring.h>

struct seen {
	unsigned events, spans;
};

static int on_event(void *ctx, const struct evr_event *ev)
{
	struct seen *s = ctx;

	if (ev->fields->n == 1 && ev->fields->f[0].v.type == EVR_V_U64 && ev->fields->f[0].v.u == 42)
		__atomic_fetch_add(&s->events, 1, __ATOMIC_RELAXED);
	return 0;
}

static int on_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct seen *s = ctx;

	if (sp->status == EVR_SPAN_OK && sp->events == 1)
		__atomic_fetch_add(&s->spans, 1, __ATOMIC_RELAXED);
	return 0;
}

static void pause_ms(long ms)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = ms * 1000000L };

	nanosleep(&ts, NULL);
}

int main(void)
{
	struct evr_config cfg = { .name = "install", .capture_content = -1 };
	struct evr_consumer_opts opts = { .quiet = true };
	struct seen seen = { 0, 0 };
	struct evr_handler h = { .name = "install", .ctx = &seen, .on_event = on_event, .on_span_end = on_span_end };
	struct evr_consumer *c;
	char err[256];
	int rc;

	rc = evr_open(&cfg);
	if (rc < 0) {
		fprintf(stderr, "evring-install: evr_open: %s\n", evr_last_error());
		return 1;
	}
	struct evr_span q = EVR_SPAN_BEGIN("install", "query", EVR_STR("route", "out-of-tree"));
	EVR_EVENT("install", "answer", EVR_U64("value", 42));
	EVR_SPAN_END(q, EVR_U32("results", 1));

	c = evr_consumer_new(&opts, err, sizeof(err));
	if (!c) {
		fprintf(stderr, "evring-install: evr_consumer_new: %s\n", err);
		return 1;
	}
	rc = evr_consumer_attach_pid(c, (uint32_t)getpid(), EVR_ATTACH_FROM_OLDEST, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "evring-install: evr_consumer_attach_pid: %s (%d)\n", err, rc);
		return 1;
	}
	rc = evr_consumer_add_handler(c, &h);
	if (rc < 0) {
		fprintf(stderr, "evring-install: evr_consumer_add_handler: %d\n", rc);
		return 1;
	}
	/* The merge holds records back for its window; poll past it. */
	for (int i = 0; i < 50; i++) {
		rc = evr_consumer_poll(c);
		if (rc < 0) {
			fprintf(stderr, "evring-install: evr_consumer_poll: %d\n", rc);
			return 1;
		}
		pause_ms(10);
	}
	evr_consumer_close(c); /* flushes the merge and drains the handler's queue */
	evr_close();

	if (seen.events != 1 || seen.spans != 1) {
		fprintf(stderr, "evring-install: expected 1 event and 1 span back, got %u and %u\n", seen.events,
			seen.spans);
		return 1;
	}
	printf("evring-install: ok\n");
	return 0;
}
