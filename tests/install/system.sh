#!/bin/sh
# The install_system test (tests/install/CMakeLists.txt registers it):
#
#   system.sh BUILD CMAKE CC SOURCE_DIR [SANITIZE]
#
# The README's quickstart as a user runs it, as root: `cmake --install BUILD
# --prefix /usr/local` (what `make install PREFIX=/usr/local` runs), then
# examples/quickstart.c built with `cc ... $(pkg-config --cflags --libs
# evring)` and run with no LD_LIBRARY_PATH: the dynamic linker must find
# libevring.so.0 in /usr/local/lib by itself, as install's ldconfig left it.
# All of it happens in a private mount namespace (unshare -m) with a fresh
# tmpfs over /usr/local and /etc under an overlay whose writes (ldconfig's
# /etc/ld.so.cache) land in a temporary directory: the machine's own
# /usr/local and /etc are not touched. Needs root (status 77, skipped,
# otherwise). Any failure ends it with one line on stderr and status 1.
set -eu

if [ $# -lt 4 ]; then
	echo "usage: system.sh BUILD CMAKE CC SOURCE_DIR [SANITIZE [PYTHON PYTHON_INSTALL_DIR]]" >&2
	exit 2
fi
# PYTHON, PYTHON_INSTALL_DIR: the build's interpreter and where make install
# puts the evring package under the prefix; empty when the build has no
# Python module.
build=$1 cmake=$2 cc=$3 src=$4 sanitize=${5:-} python=${6:-} pydir=${7:-}

fail()
{
	echo "install_system: $*" >&2
	exit 1
}

if [ "$(id -u)" != 0 ]; then
	echo "install_system: skipped: installing into /usr/local needs root" >&2
	exit 77
fi
command -v unshare >/dev/null 2>&1 || fail "unshare not found (Debian package util-linux)"

case $sanitize in
"") sanflags="" ;;
address) sanflags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" ;;
thread) sanflags="-fsanitize=thread" ;;
*) fail "unknown sanitizer '$sanitize'" ;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/evring-system.XXXXXX") || fail "cannot make a temporary directory"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/etc-upper" "$tmp/etc-work"

# The namespace's part: the caller's variables reach it through the environment.
export EVR_BUILD="$build" EVR_CMAKE="$cmake" EVR_CC="$cc" EVR_SRC="$src" EVR_TMP="$tmp" EVR_SANFLAGS="$sanflags" EVR_PYTHON="$python" EVR_PYDIR="$pydir"
unshare --mount --propagation private sh -eu -c '
	fail() { echo "install_system: $*" >&2; exit 1; }
	mount -t tmpfs evring-test /usr/local || fail "cannot mount a tmpfs over /usr/local"
	mount -t overlay evring-test -o "lowerdir=/etc,upperdir=$EVR_TMP/etc-upper,workdir=$EVR_TMP/etc-work" /etc ||
		fail "cannot mount an overlay over /etc"
	unset LD_LIBRARY_PATH DESTDIR PKG_CONFIG_PATH EVRING EVRING_NAME

	"$EVR_CMAKE" --install "$EVR_BUILD" --prefix /usr/local >"$EVR_TMP/install.log" 2>&1 ||
		{ cat "$EVR_TMP/install.log" >&2; fail "cmake --install --prefix /usr/local failed"; }
	grep -q "evring: running ldconfig" "$EVR_TMP/install.log" ||
		{ cat "$EVR_TMP/install.log" >&2; fail "installing into /usr/local did not run ldconfig"; }

	# The quickstart, as the README builds it (pkg-config finds /usr/local by default).
	$EVR_CC $EVR_SANFLAGS -o "$EVR_TMP/quickstart" "$EVR_SRC/examples/quickstart.c" \
		$(pkg-config --cflags --libs evring) || fail "cc examples/quickstart.c \$(pkg-config --cflags --libs evring) failed"
	where=$(ldd "$EVR_TMP/quickstart" | awk "\$1 == \"libevring.so.0\" { print \$3 }")
	[ "$where" = /usr/local/lib/libevring.so.0 ] ||
		fail "the quickstart finds libevring.so.0 at \"$where\", not /usr/local/lib/libevring.so.0"
	EVRING_NAME=evring-sys-test "$EVR_TMP/quickstart" || fail "the quickstart failed (status $?) with no LD_LIBRARY_PATH"
	/usr/local/bin/evring --version >/dev/null || fail "/usr/local/bin/evring --version failed"
	# The Python package, where make install puts it (/usr/local/lib/python3.X/dist-packages
	# on Debian: on the path of Debian'"'"'s python3, which imports it with no PYTHONPATH).
	if [ -n "$EVR_PYDIR" ]; then
		pkg=/usr/local/$EVR_PYDIR/evring
		[ -f "$pkg/__init__.py" ] || fail "make install put no $pkg/__init__.py"
		ls "$pkg"/_evring*.so >/dev/null 2>&1 || fail "make install put no extension $pkg/_evring*.so"
		if [ "$EVR_PYTHON" = /usr/bin/python3 ]; then
			pp=
		else
			pp=/usr/local/$EVR_PYDIR
		fi
		(cd "$EVR_TMP" && PYTHONPATH=$pp EVRING_NAME=evring-sys-test "$EVR_PYTHON" -c "import evring; evring.event(\"installed\")") ||
			fail "import evring from $pkg with $EVR_PYTHON failed"
	fi
' || exit 1
echo "install_system: make install into /usr/local ran ldconfig; the quickstart ran without LD_LIBRARY_PATH"
