#!/bin/sh
# The abi_exports test (tests/abi/CMakeLists.txt registers it):
#
#   check_exports.sh LIBEVRING LIBEVRING_CONSUMER PROGRAM SOURCE_DIR
#
# What each shared library exports (nm -D --defined-only) is its ABI:
#   libevring.so           the functions <evring/evring.h> declares (llm.h is
#                          inline over them), and the private tier below;
#   libevring-consumer.so  the functions <evring/consumer.h> declares, and no
#                          evr__ symbol at all.
# Neither exports any other ring function (evr_segment_*, evr_reader_*,
# evr_writer_*, ...: the ring they link stays inside), and each keeps its
# SONAME at .so.0. Then PROGRAM (abi_both.c), linked against both libraries
# and nothing else of evring, must need both, hold none of their code, run,
# and print "abi: ok". Every failure is one line on stderr; status 1 if any.
set -eu

if [ $# -ne 4 ]; then
	echo "usage: check_exports.sh LIBEVRING LIBEVRING_CONSUMER PROGRAM SOURCE_DIR" >&2
	exit 2
fi
prod=$1 cons=$2 prog=$3 src=$4

# The private tier: the symbols that the inline code of evring.h (and of
# ring.h's evr_writer_publish, which it calls) reaches. Documented in
# evring.h, producer/libevring.map and README.md; not for applications.
TIER="evr__clock_kind evr__content evr__flag_unregistered evr__gen evr__record_slow evr__site_register
evr__span_scope_end evr__thread evr__thread_open evr__writer_commit_shared"

failed=0
fail()
{
	echo "abi_exports: $*" >&2
	failed=1
}

for tool in nm readelf; do
	command -v $tool >/dev/null 2>&1 || { echo "abi_exports: $tool not found (Debian package binutils)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/evring-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The evr names a library exports, one a line, without their version (evr_open@@EVRING_0).
exports()
{
	nm -D --defined-only "$1" | awk '{ sub(/@.*/, "", $NF); print $NF }' | grep '^evr' | sort -u
}

# The functions a public header declares with EVR_API (the evr__ tier aside).
declared()
{
	grep -o 'EVR_API[^(;]*(' "$@" | sed 's/.*[ *]\(evr_[a-z0-9_]*\)($/\1/' | grep '^evr_[a-z0-9]' | sort -u
}

exports "$prod" >"$tmp/prod"
exports "$cons" >"$tmp/cons"
declared "$src/producer/include/evring/evring.h" "$src/producer/include/evring/llm.h" >"$tmp/prod.h"
declared "$src/consumer/include/evring/consumer.h" >"$tmp/cons.h"
echo "$TIER" | tr ' ' '\n' | grep . | sort -u >"$tmp/tier"
[ -s "$tmp/prod" ] || fail "$prod exports no evr symbol"
[ -s "$tmp/cons" ] || fail "$cons exports no evr symbol"
[ -s "$tmp/prod.h" ] && [ -s "$tmp/cons.h" ] || fail "no EVR_API function found in the public headers under $src"

# Ring functions that neither library may export (unless its header declares them: evr_segment_current).
for lib in prod cons; do
	grep -E '^evr_(segment|reader|writer|meta|lost|clock|owner|pidns|consumer_slot)' "$tmp/$lib" |
		grep -vxF -f "$tmp/$lib.h" >"$tmp/$lib.ring" || true
done
while read -r s; do fail "libevring exports $s, a function of the ring"; done <"$tmp/prod.ring"
while read -r s; do fail "libevring-consumer exports $s, a function of the ring"; done <"$tmp/cons.ring"

# evr__: the consumer none, the producer its tier and nothing else.
grep '^evr__' "$tmp/cons" >"$tmp/cons.internal" || true
while read -r s; do fail "libevring-consumer exports $s, an internal symbol"; done <"$tmp/cons.internal"
grep '^evr__' "$tmp/prod" | grep -vxF -f "$tmp/tier" >"$tmp/prod.extra" || true
while read -r s; do fail "libevring exports $s, which is not in the private tier"; done <"$tmp/prod.extra"
grep -vxF -f "$tmp/prod" "$tmp/tier" >"$tmp/prod.missing" || true
while read -r s; do fail "libevring does not export $s, which the inline code of evring.h reaches"; done <"$tmp/prod.missing"

# The public tier: exactly what the headers declare.
for lib in prod cons; do
	case $lib in prod) name=libevring hdr="evring.h" ;; *) name=libevring-consumer hdr="consumer.h" ;; esac
	grep -v '^evr__' "$tmp/$lib" | grep -vxF -f "$tmp/$lib.h" | grep -vxF -f "$tmp/$lib.ring" >"$tmp/$lib.extra" || true
	while read -r s; do fail "$name exports $s, which $hdr does not declare"; done <"$tmp/$lib.extra"
	grep -vxF -f "$tmp/$lib" "$tmp/$lib.h" >"$tmp/$lib.missing" || true
	while read -r s; do fail "$name does not export $s, which $hdr declares"; done <"$tmp/$lib.missing"
done

# The SONAMEs stay .so.0.
readelf -d "$prod" | grep -q 'Library soname: \[libevring\.so\.0\]' || fail "libevring's SONAME is not libevring.so.0"
readelf -d "$cons" | grep -q 'Library soname: \[libevring-consumer\.so\.0\]' ||
	fail "libevring-consumer's SONAME is not libevring-consumer.so.0"

# The program linked against both: needs both, holds none of their code, runs.
for so in libevring.so.0 libevring-consumer.so.0; do
	readelf -d "$prog" | grep -q "Shared library: \[$so\]" || fail "$prog does not link $so"
done
nm --defined-only --extern-only "$prog" | awk '$2 ~ /^[TW]$/ && $NF ~ /^evr/ { print $NF }' >"$tmp/prog"
while read -r s; do fail "$prog defines the function $s itself: it must come from the libraries"; done <"$tmp/prog"
out=$(EVRING_NAME=abi "$prog") || fail "$prog failed"
[ "$out" = "abi: ok" ] || fail "$prog printed '$out', not 'abi: ok'"

[ $failed -eq 0 ] || exit 1
echo "abi_exports: libevring exports $(wc -l <"$tmp/prod") evr symbols ($(grep -c '^evr__' "$tmp/prod") of the private tier), libevring-consumer $(wc -l <"$tmp/cons")"
