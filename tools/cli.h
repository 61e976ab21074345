/*
 * cli.h: what the subcommands of the `evring` tool share.
 *
 * Every failure is one line on stderr, "evring <command>: <what>", and an exit
 * status that tells the cause apart (enum evr_exit), so scripts can branch
 * on it: no such process, no segment for it, permission denied, another ABI
 * version, the consumer slot held, a bad segment or capture file.
 */
#ifndef EVRING_TOOLS_CLI_H
#define EVRING_TOOLS_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <evring/consumer.h>

enum evr_exit {
	EVR_EXIT_OK = 0,
	EVR_EXIT_FAIL = 1,	 /* anything else: I/O, memory, a handler that would not load */
	EVR_EXIT_USAGE = 2,	 /* bad command line */
	EVR_EXIT_NO_PROCESS = 3, /* no such process */
	EVR_EXIT_NO_SEGMENT = 4, /* the process (or name) has no evring segment */
	EVR_EXIT_ACCESS = 5,	 /* permission denied (another user's segment) */
	EVR_EXIT_ABI = 6,	 /* the segment speaks another ABI version */
	EVR_EXIT_BUSY = 7,	 /* every consumer slot of the segment is held by a live process */
	EVR_EXIT_BAD_INPUT = 8,	 /* a segment or capture file that failed validation */
	EVR_EXIT_HANDLER = 9,	 /* the run went on, but a handler failed: errors, timeouts, output not written */
};

/* The exit status for a -errno from the libraries. */
int evr_cli_exit_of(int rc);

/* Prints "evring <cmd>: <msg>" on stderr; returns status. */
int evr_cli_fail(const char *cmd, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * evr_consumer_add_builtin, and -H python=MODULE:CLASS[,isolate][:ARG] too
 * (the plug-in evring-python-handler.so, which embeds the interpreter, so
 * that the tools do not link libpython). The handler's id, or -errno with
 * err set: -ENOPKG when the plug-in is not there.
 */
int evr_cli_add_handler(struct evr_consumer *c, const char *spec, FILE *out, char *err, size_t errlen);

/* Whether a failure rc of evr_cli_add_handler for spec is the command line's (exit status 2). */
bool evr_cli_handler_usage(const char *spec, int rc);

/* Parses a non-negative decimal number of seconds ("2", "0.5"); false when it is not one. */
bool evr_cli_seconds(const char *s, uint64_t *ns);
/* Parses a decimal unsigned integer that fits max. */
bool evr_cli_uint(const char *s, uint64_t max, uint64_t *v);

/* Attaches c to a target given on the command line: a pid, or a segment or program name. Returns 0 or an exit status. */
int evr_cli_attach(const char *cmd, struct evr_consumer *c, const char *target, unsigned flags);

/*
 * SIGINT / SIGTERM set *flag (static storage: a handler may run late) and
 * stop c; the first one only, a second takes the default action. SIGPIPE
 * (standard output closed: `evring attach PID | head`) stops c too and sets
 * evr_cli_output_closed: the run then ends quietly. evr_cli_signals(NULL,
 * NULL) forgets the flag and the consumer before c is closed.
 */
void evr_cli_signals(volatile int *flag, struct evr_consumer *c);
extern volatile int evr_cli_output_closed;

/*
 * Parses a command's options with getopt_long (opterr off): returns the
 * option, -1 at the end, or '?' after printing one line naming the bad
 * option ("evring attach: unknown option '--x' (try evring attach --help)").
 */
int evr_cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts, const struct option *longopts);

/* Prints "evring VERSION". */
void evr_cli_version(FILE *f);

/* Prints the one-line summary of a consumer run on stderr. */
void evr_cli_summary(const char *cmd, struct evr_consumer *c);

int evr_cmd_ls(int argc, char **argv);
int evr_cmd_stats(int argc, char **argv);
int evr_cmd_attach(int argc, char **argv);
int evr_cmd_record(int argc, char **argv);
int evr_cmd_replay(int argc, char **argv);
int evr_cmd_top(int argc, char **argv);
int evr_cmd_agent(int argc, char **argv);
int evr_cmd_runs(int argc, char **argv);

#endif /* EVRING_TOOLS_CLI_H */
