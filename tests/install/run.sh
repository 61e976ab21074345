#!/bin/sh
# The install_out_of_tree test (tests/install/CMakeLists.txt registers it):
#
#   run.sh BUILD CMAKE CC LIBDIR VERSION [SANITIZE [PYTHON PYDIR]]
#
# 1. cmake --install BUILD --prefix TMP, TMP a fresh temporary directory (never
#    the configured prefix), and checks that every file landed under TMP;
# 2. builds app/app.c with CC and pkg-config (evring evring-consumer, found
#    through PKG_CONFIG_PATH=TMP/LIBDIR/pkgconfig), and runs it;
# 3. configures and builds app/ as a project of its own with
#    CMAKE_PREFIX_PATH=TMP (find_package(evring VERSION EXACT)), and runs it.
# Both builds must link the libraries in TMP and print "evring-install: ok".
# 4. With PYTHON and PYDIR (the package's directory under the prefix):
#    imports the installed evring package with PYTHONPATH=TMP/PYDIR, checks
#    that its extension loads the libraries in TMP, and emits an event.
# SANITIZE (address or thread, as EVR_SANITIZE) adds the sanitizer's flags to
# both builds. Any failure ends it with one line on stderr and status 1.
set -eu

if [ $# -lt 5 ]; then
	echo "usage: run.sh BUILD CMAKE CC LIBDIR VERSION [SANITIZE]" >&2
	exit 2
fi
build=$1 cmake=$2 cc=$3 libdir=$4 version=$5 sanitize=${6:-} python=${7:-} pydir=${8:-}
here=$(cd "$(dirname "$0")" && pwd)

fail()
{
	echo "install_out_of_tree: $*" >&2
	exit 1
}

case $sanitize in
"") sanflags="" ;;
address) sanflags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" ;;
thread) sanflags="-fsanitize=thread" ;;
*) fail "unknown sanitizer '$sanitize'" ;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/evring-install.XXXXXX") || fail "cannot make a temporary directory"
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
# The application's own segment settings, not the caller's.
unset DESTDIR EVRING EVRING_NAME EVRING_LANES EVRING_LANE_BYTES EVRING_CAPTURE_CONTENT

# 1. Install.
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log" >&2; fail "cmake --install $build --prefix $prefix failed"; }
grep -q "Installing: /" "$tmp/install.log" || fail "cmake --install installed nothing"
if grep "Installing: /" "$tmp/install.log" | grep -v "Installing: $prefix/"; then
	fail "the lines above installed outside $prefix"
fi
for f in "$libdir/libevring.so" "$libdir/libevring-consumer.so" "$libdir/pkgconfig/evring.pc" \
	"$libdir/pkgconfig/evring-consumer.pc" "$libdir/cmake/evring/evringConfig.cmake" \
	"$libdir/cmake/evring/evringConfigVersion.cmake" include/evring/evring.h include/evring/consumer.h; do
	[ -e "$prefix/$f" ] || fail "$f was not installed"
done

# Runs a built application; it must load the installed libraries and succeed.
run_app()
{
	for lib in libevring.so libevring-consumer.so; do
		where=$(LD_LIBRARY_PATH="$prefix/$libdir" ldd "$1" | awk -v l="$lib" 'index($1, l) == 1 { print $3 }')
		case $where in
		"$prefix/$libdir/"*) ;;
		*) fail "$2: $lib resolves to '$where', not to $prefix/$libdir" ;;
		esac
	done
	out=$(LD_LIBRARY_PATH="$prefix/$libdir" "$1") || fail "$2: the application failed"
	[ "$out" = "evring-install: ok" ] || fail "$2: the application printed '$out'"
}

# 2. pkg-config.
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
got=$(pkg-config --modversion evring evring-consumer | sort -u) || fail "pkg-config finds no evring"
[ "$got" = "$version" ] || fail "pkg-config: version '$got', expected $version"
got=$(pkg-config --variable=prefix evring)
[ "$got" = "$prefix" ] || fail "pkg-config: evring.pc has prefix '$got', expected $prefix"
# Users get evring's and its headers' flags, not a compiler's own macros
# (ck's .pc adds -D__x86_64__, which evring must not pass on).
cflags=$(pkg-config --cflags evring evring-consumer)
case " $cflags " in *" -D__"*) fail "pkg-config --cflags evring evring-consumer passes on a compiler macro: $cflags" ;; esac
# shellcheck disable=SC2046,SC2086 # flags are lists of words
"$cc" $sanflags -Wall -Wextra -Werror -o "$tmp/app-pkgconfig" "$here/app/app.c" \
	$(pkg-config --cflags --libs evring evring-consumer) ||
	fail "pkg-config: building app.c against the installed evring failed"
run_app "$tmp/app-pkgconfig" pkg-config

# The README's plug-in, built as the README says, against the installed header:
# it must export the versioned entry point the consumer looks up.
# shellcheck disable=SC2046 # flags are lists of words
"$cc" -shared -fPIC -Wall -Wextra -Werror -o "$tmp/slow_spans.so" "$here/../../examples/slow_spans.c" \
	$(pkg-config --cflags evring-consumer) || fail "pkg-config: building examples/slow_spans.c failed"
nm -D --defined-only "$tmp/slow_spans.so" | grep -q ' T evr_handler_entry_v1$' ||
	fail "slow_spans.so does not export evr_handler_entry_v1"

# 3. find_package(evring).
"$cmake" -S "$here/app" -B "$tmp/app-cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
	-DCMAKE_C_FLAGS="$sanflags -Wall -Wextra -Werror" -DEVR_EXPECT_VERSION="$version" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
	>"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log" >&2; fail "find_package: configuring app/ failed"; }
grep -q "found in $prefix/$libdir/cmake/evring" "$tmp/cmake.log" ||
	{ cat "$tmp/cmake.log" >&2; fail "find_package: evring was not found in $prefix"; }
"$cmake" --build "$tmp/app-cmake" >"$tmp/build.log" 2>&1 ||
	{ cat "$tmp/build.log" >&2; fail "find_package: building app/ failed"; }
grep -q -- '-D__' "$tmp/app-cmake/compile_commands.json" &&
	fail "find_package: evring::evring passes on a compiler macro: $(grep -o -- '-D__[^ ]*' "$tmp/app-cmake/compile_commands.json" | sort -u)"
run_app "$tmp/app-cmake/evring-install-app" find_package

# 4. The Python package.
if [ -n "$python" ]; then
	so=$(ls "$prefix/$pydir"/evring/_evring*.so 2>/dev/null | head -n 1)
	[ -n "$so" ] || fail "python: no evring/_evring*.so under $prefix/$pydir"
	[ -e "$prefix/$pydir/evring/__init__.py" ] && [ -e "$prefix/$pydir/evring/llm.py" ] ||
		fail "python: the package's .py files are not in $prefix/$pydir/evring"
	for lib in libevring.so libevring-consumer.so; do
		where=$(ldd "$so" | awk -v l="$lib" 'index($1, l) == 1 { print $3 }')
		# libevring-consumer only when the extension uses it (the linker leaves out what it does not)
		[ "$lib" = libevring-consumer.so ] && ! ldd "$so" | grep -q "$lib" && continue
		case $where in
		"$prefix/$libdir/"*) ;;
		*) fail "python: $so finds $lib at '$where', not in $prefix/$libdir (its RPATH)" ;;
		esac
	done
	preload=""
	[ "$sanitize" = address ] && preload="$("$cc" -print-file-name=libasan.so) $("$cc" -print-file-name=libubsan.so)"
	out=$(cd "$tmp" && LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH="$prefix/$pydir" "$python" -c '
import evring
evring.open(name="evring-install")
assert evring.enabled(), evring.last_error()
with evring.span("installed") as s:
    evring.event("event", ok=True)
evring.llm.exception("none", "emitted")
print(evring.__file__)
') || fail "python: importing the installed package and emitting failed"
	[ "$out" = "$prefix/$pydir/evring/__init__.py" ] || fail "python: imported evring from '$out', not from $prefix/$pydir"
	echo "install_out_of_tree: the installed evring package imports from $prefix/$pydir and emits"
fi

echo "install_out_of_tree: pkg-config and find_package builds against $prefix ran"
