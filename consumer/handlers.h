/*
 * handlers.h: the handlers the consumer can make from a spec string: the
 * built-ins (handlers/) and plug-ins loaded from a shared object (plugin.c).
 * Each fills a struct evr_handler that the hub runs.
 */
#ifndef EVR_CONSUMER_HANDLERS_H
#define EVR_CONSUMER_HANDLERS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <evring/consumer.h>

/*
 * Fills *h for a built-in spec ("tail", "debug", "tokens", "stats",
 * "jsonl[=PATH]", "chrome=PATH"). Returns 0, or -EINVAL / -errno with err set.
 */
int evr__builtin_handler(const char *spec, FILE *out, struct evr_handler *h, char *err, size_t errlen);

/* Loads "PATH.so[:ARG]" and fills *h through its EVR_HANDLER_ENTRY. */
int evr__plugin_handler(const char *spec, struct evr_handler *h, char *err, size_t errlen);

/* The length of PATH in "PATH.so[,OPTION][:ARG]" (plugin.c). */
size_t evr__plugin_path_len(const char *spec);

/*
 * "PATH.so[,isolate][:ARG]" (plugin_isolate.c): evr__plugin_handler, or with
 * ",isolate" evr__plugin_isolated, which takes from o the per-call timeout
 * and where to report its process's crashes (log unless quiet, on_error).
 */
int evr__plugin_from_spec(const char *spec, const struct evr_consumer_opts *o, struct evr_handler *h, char *err,
			  size_t errlen);

/*
 * Starts "PATH.so[:ARG]" in a child process (evring-plugin-host) and fills *h
 * with a handler that feeds it (plugin_isolate.c). The plug-in's load errors
 * come back as evr__plugin_handler's; -ECHILD when the host program could not
 * run or ended before it answered.
 */
int evr__plugin_isolated(const char *spec, const struct evr_consumer_opts *o, struct evr_handler *h, char *err,
			 size_t errlen);

/*
 * The plug-in host's side (plugin_host.c): loads "PATH.so[:ARG]" in this
 * process, answers on fd as plugin_wire.h says until end of stream, then runs
 * the plug-in's destroy. Returns the exit status for the host program.
 */
int evr__plugin_host_run(int fd, const char *spec);

#endif /* EVR_CONSUMER_HANDLERS_H */
