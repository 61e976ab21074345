/*
 * otlp_edges: a producer whose records take the otlp handler's less common
 * paths, for check_otlp.sh: every field type (an unsigned past 2^63-1, a
 * negative, a double, a bool, a string with bytes that are not UTF-8), a
 * dropped span with its error message, events outside any span, a burst that
 * overflows its (small) lane before the consumer reads it, so LOST records
 * follow, and a span still open when it exits (abandoned).
 *
 *   EVRING_LANE_BYTES=4096 otlp_edges READY_FILE GO_FILE
 *
 * Writes its first records and the burst, creates READY_FILE, waits for
 * GO_FILE (the consumer has attached and read what fitted), then writes the
 * rest and exits with one span open.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <evring/evring.h>

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	FILE *f;

	if (argc != 3) {
		fprintf(stderr, "usage: otlp_edges READY_FILE GO_FILE\n");
		return 2;
	}
	evr_trace_set_id(0xedce);
	struct evr_span root = EVR_SPAN_BEGIN("app", "edge.request", EVR_STR("bad.utf8", "a\xff\xfe b\xc3"),
					      EVR_U64("big", UINT64_MAX), EVR_I64("neg", -5));
	evr_trace_tags("session-7", "user-9");
	struct evr_span fail = EVR_SPAN_BEGIN("app.tool", "function_call", EVR_STR("gen_ai.tool.name", "search"));
	EVR_EVENT("app.tool", "tool.retry", EVR_U32("attempt", 1), EVR_F64("backoff_s", 0.25));
	EVR_SPAN_DROP(fail, EVR_STR("error.message", "search backend: connection refused"),
		      EVR_STR("error.type", "ConnectionError"));
	EVR_SPAN_END(root, EVR_BOOL("cached", true), EVR_F64("score", 3.25));
	EVR_EVENT("app", "server.started", EVR_STR("mode", "edge"));

	/* More than a 4 KiB lane holds: dropped and counted before anyone reads. */
	for (uint32_t i = 0; i < 2000; i++)
		EVR_EVENT("app", "burst", EVR_U32("i", i));
	if (!(f = fopen(argv[1], "w")))
		return 1;
	fclose(f);
	for (int i = 0; i < 3000 && access(argv[2], F_OK) != 0; i++)
		nap_ms(10);

	/* The next records carry the LOST record out. */
	EVR_EVENT("app", "server.resumed", EVR_U32("after_ms", 10));
	struct evr_span last = EVR_SPAN_BEGIN("app", "edge.after", EVR_U64("n", 1));
	EVR_SPAN_END(last);
	/* Left open: the consumer closes it as abandoned when the process is gone. */
	struct evr_span open = EVR_SPAN_BEGIN("app", "edge.open", EVR_U64("n", 2));
	(void)open;
	nap_ms(50);
	return 0;
}
