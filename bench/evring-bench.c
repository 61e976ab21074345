/*
 * evring-bench: evring's benchmarks, one subcommand each.
 *
 *   evring-bench <subcommand> [--json] [--runs N] [--quick] [--records N]
 *
 * Every subcommand prints medians over repeated runs with ratios against a
 * baseline measured in the same invocation, as a text table or as one JSON
 * object (see bench.h). A subcommand exits 0 whatever its timings: only a
 * broken measurement (a dropped or damaged record, a failed set-up) is an
 * error, so CI can run them all without gating on wall time.
 *
 * A new subcommand is a function taking its own argv and returning the exit
 * status, declared in bench.h and listed in the table below.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

struct bench_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct bench_cmd cmds[] = {
	{ "ring", bench_ring_main,
	  "ns per record on the write path (timestamp included), exclusive and shared lanes, 1 and 2 "
	  "threads, against rdtsc" },
	{ "producer", bench_producer_main,
	  "ns per call of the producer API (disabled site, events, span pair), 1 and 2 threads, against "
	  "a mutex ring, fprintf and LTTng-UST" },
	{ "count", bench_count_main,
	  "instructions per call of the producer API (disabled site, events, span pair), counted by "
	  "valgrind's callgrind; --check fails past the targets" },
	{ "consumer", bench_consumer_main,
	  "records per second one consumer drains, decodes, merges, builds into spans and hands to a "
	  "handler (none, stats, jsonl, otlp), drain thread on one CPU" },
	{ "raw", bench_raw_main,
	  "records per second `evring record --raw` drains on one CPU (capture on /dev/shm), against "
	  "evr_reader_next alone and memcpy of the same bytes" },
	{ "loss", bench_loss_main,
	  "records lost when 2 threads write as fast as they can with a consumer attached, against "
	  "LTTng-UST with default buffers" },
	{ "latency", bench_latency_main,
	  "hot-path latency percentiles with the consumer attached, stopped (SIGSTOP) and absent" },
	{ "otlp", bench_otlp_main,
	  "spans per CPU-second the otlp handler maps, encodes (protobuf, JSON; gzip or not) and sends "
	  "over OTLP/HTTP, one CPU, to a Node.js receiver on the other" },
	{ "sqlite", bench_sqlite_main,
	  "spans per CPU-second the run store (-H sqlite=PATH) inserts into SQLite (WAL, batched, three "
	  "indexes), one CPU, database on /dev/shm" },
	{ "demo", bench_demo_main,
	  "evring-demo's requests per second with tracing off, on, and on with a consumer; records per "
	  "second produced" },
	{ "agent", bench_agent_main,
	  "how soon `evring agent` delivers a new process's first record (p50, p99), and its CPU-s per "
	  "million records" },
	{ "stdio", bench_stdio_main,
	  "ns per write(1, line, 100) with the stdio tee (EVRING_CAPTURE_STDIO=1) off and on, and the "
	  "ratio" },
	{ "python", bench_python_main,
	  "ns per evring.event (3 fields) and span pair from Python, against logging to a file and "
	  "json.dumps to a file, with EVRING=off and an empty call as the floor" },
	{ "all", bench_all_main,
	  "the whole suite, each benchmark in its own process; writes latest.json, latest.md and a chart" },
	{ "attach", bench_attach_main, "(a peer the benchmarks start) a consumer attached to a process" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: evring-bench <subcommand> [options]\n\nsubcommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
	fputc('\n', f);
	bench_opts_usage(f);
	fprintf(f, "\n'evring-bench <subcommand> --help' describes one subcommand.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "evring-bench: unknown subcommand '%s' (try evring-bench --help)\n", argv[1]);
	return 2;
}
