/*
 * mpcheck.c: a non-allocating walk over msgpack bytes (mpcheck.h), run
 * before msgpack-c's unpacker sees anything read from a segment or a capture.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "mpcheck.h"

/* ---- a non-allocating msgpack walk ------------------------------------------ */

static bool need(const uint8_t *p, const uint8_t *end, size_t n)
{
	return (size_t)(end - p) >= n;
}

static uint32_t be(const uint8_t *p, unsigned n)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Steps *p over one object. Containers may not claim more elements than
 * bytes remain. One switch over msgpack's type bytes, kept whole: each case
 * is a line or two, and the format reads best as one table.
 */
static bool walk(const uint8_t **p, const uint8_t *end, unsigned depth)
{
	const uint8_t *q = *p;
	uint8_t b;
	uint64_t n = 0, skip = 0;

	if (!need(q, end, 1))
		return false;
	b = *q++;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
		*p = q;
		return true;
	}
	if (b >= 0xa0 && b <= 0xbf) {
		skip = b & 0x1f;
	} else if (b >= 0x80 && b <= 0x9f) {
		n = (b & 0x0f) * (b <= 0x8f ? 2u : 1u);
		goto container;
	} else {
		switch (b) {
		case 0xc4: case 0xd9: /* bin8, str8 */
			if (!need(q, end, 1)) return false;
			skip = 1 + q[0];
			break;
		case 0xc5: case 0xda:
			if (!need(q, end, 2)) return false;
			skip = 2 + be(q, 2);
			break;
		case 0xc6: case 0xdb:
			if (!need(q, end, 4)) return false;
			skip = 4 + (uint64_t)be(q, 4);
			break;
		case 0xc7: /* ext8: len, type, data */
			if (!need(q, end, 1)) return false;
			skip = 2 + q[0];
			break;
		case 0xc8:
			if (!need(q, end, 2)) return false;
			skip = 3 + be(q, 2);
			break;
		case 0xc9:
			if (!need(q, end, 4)) return false;
			skip = 5 + (uint64_t)be(q, 4);
			break;
		case 0xca: case 0xce: case 0xd2: skip = 4; break;
		case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
		case 0xcc: case 0xd0: skip = 1; break;
		case 0xcd: case 0xd1: skip = 2; break;
		case 0xd4: skip = 2; break;
		case 0xd5: skip = 3; break;
		case 0xd6: skip = 5; break;
		case 0xd7: skip = 9; break;
		case 0xd8: skip = 17; break;
		case 0xdc: case 0xde:
			if (!need(q, end, 2)) return false;
			n = (uint64_t)be(q, 2) * (b == 0xde ? 2u : 1u);
			q += 2;
			goto container;
		case 0xdd: case 0xdf:
			if (!need(q, end, 4)) return false;
			n = (uint64_t)be(q, 4) * (b == 0xdf ? 2u : 1u);
			q += 4;
			goto container;
		default: /* 0xc1: never used */
			return false;
		}
	}
	if ((uint64_t)(end - q) < skip)
		return false;
	*p = q + skip;
	return true;

container:
	if (depth == 0 || n > (uint64_t)(end - q))
		return false;
	for (uint64_t i = 0; i < n; i++) {
		/*
		 * Most elements of a record are scalars whose first byte gives
		 * their size: stepped over here, as walk would, without a call.
		 */
		uint64_t size = 0;

		if (q == end)
			return false;
		b = *q;
		if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
			size = 1; /* fixints, nil, false, true */
		else if (b >= 0xcc && b <= 0xd3)
			size = 1 + (1u << (b & 3)); /* uint8..64, int8..64 */
		else if (b >= 0xa0 && b <= 0xbf)
			size = 1 + (b & 0x1f); /* fixstr */
		if (size) {
			if ((uint64_t)(end - q) < size)
				return false;
			q += size;
		} else if (!walk(&q, end, depth - 1)) {
			return false;
		}
	}
	*p = q;
	return true;
}

bool evr__unpacked(int rc)
{
	/* Bodies are padded to 8 bytes: bytes after the one object are expected. */
	return rc == MSGPACK_UNPACK_SUCCESS || rc == MSGPACK_UNPACK_EXTRA_BYTES;
}

bool evr__msgpack_sane(const uint8_t *buf, size_t len, unsigned max_depth)
{
	const uint8_t *p = buf;

	return walk(&p, buf + len, max_depth);
}

size_t evr__msgpack_len(const uint8_t *buf, size_t len, unsigned max_depth)
{
	const uint8_t *p = buf;

	return walk(&p, buf + len, max_depth) ? (size_t)(p - buf) : 0;
}
