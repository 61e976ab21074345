/*
 * handlers.h: the handlers the consumer can make from a spec string: the
 * built-ins (handlers/) and plug-ins loaded from a shared object (plugin.c).
 * Each fills a struct evr_handler that the hub runs.
 */
#ifndef EVR_CONSUMER_HANDLERS_H
#define EVR_CONSUMER_HANDLERS_H

#include <stddef.h>
#include <stdio.h>

#include <evring/consumer.h>

/*
 * Fills *h for a built-in spec ("tail", "debug", "tokens", "stats",
 * "jsonl[=PATH]", "chrome=PATH"). Returns 0, or -EINVAL / -errno with err set.
 */
int evr__builtin_handler(const char *spec, FILE *out, struct evr_handler *h, char *err, size_t errlen);

/* Loads "PATH.so[:ARG]" and fills *h through its EVR_HANDLER_ENTRY. */
int evr__plugin_handler(const char *spec, struct evr_handler *h, char *err, size_t errlen);

#endif /* EVR_CONSUMER_HANDLERS_H */
