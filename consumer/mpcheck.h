/*
 * mpcheck.h: checks a msgpack buffer before msgpack-c's unpacker sees it
 * (mpcheck.c). The unpacker sizes zone allocations from declared container
 * counts, so an array32 of 4G elements in a 64-byte body would ask for
 * gigabytes: every body, metadata entry and capture entry is walked here
 * first. Used by the stages that read hostile bytes (source, decode, replay).
 */
#ifndef EVR_CONSUMER_MPCHECK_H
#define EVR_CONSUMER_MPCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * True when buf[0..len) holds one well-formed msgpack object whose every
 * container count fits the bytes that remain, nested at most max_depth deep.
 * Allocates nothing.
 */
bool evr__msgpack_sane(const uint8_t *buf, size_t len, unsigned max_depth);

/*
 * The length of the one well-formed object at buf (as evr__msgpack_sane
 * checks it) when it lies whole in buf[0..len), else 0: too short yet, or
 * not msgpack. Allocates nothing.
 */
size_t evr__msgpack_len(const uint8_t *buf, size_t len, unsigned max_depth);

/* True for msgpack_unpack's results that yielded an object (trailing padding allowed). */
bool evr__unpacked(int rc);

#endif /* EVR_CONSUMER_MPCHECK_H */
