#!/bin/sh
# Installs the Debian packages evring needs when they are missing, as root on
# Debian. Where installing is impossible (not root, no apt-get) it prints one
# line naming the missing packages and exits 1, before anything else runs.
set -eu

PKGS="cmake make gcc pkg-config python3 libck-dev libmsgpack-dev liburcu-dev libcriterion-dev valgrind
	libprotobuf-c-dev protobuf-c-compiler libcurl4-openssl-dev zlib1g-dev
	libsqlite3-dev sqlite3 python3-dev"
# git: the run params' git.commit is tested against `git rev-parse HEAD` of a repository the tests make.
if [ "${1:-}" = test ]; then
	PKGS="$PKGS git python3-pytest"
fi
# `install-deps.sh fuzz` (make fuzz): clang and its libFuzzer runtime too.
# Debian 12's clang is clang-14; libFuzzer ships in compiler-rt's package.
if [ "${1:-}" = fuzz ]; then
	PKGS="$PKGS clang libclang-rt-14-dev"
fi
# `install-deps.sh bench` (make bench): gnuplot for the chart; and, when it
# can, LTTng-UST, the peer the suite measures against. The suite runs
# without it and says so, so failing to install it is not an error.
OPTIONAL=""
OPTIONAL_FOR=""
if [ "${1:-}" = bench ]; then
	PKGS="$PKGS gnuplot-nox"
	OPTIONAL="liblttng-ust-dev lttng-tools"
	OPTIONAL_FOR="the benchmarks will say LTTng-UST was not measured"
fi
# `install-deps.sh test` (make test): Node.js >= 18 and npm for the OTLP
# exporter's tests, whose peer is an OTLP/HTTP receiver in Node.js
# (tests/otlp/receiver.js). Debian 12's nodejs is 18. Only when no node >= 18
# is on PATH: one installed otherwise (NodeSource's, say, with its own npm)
# is kept, and npm alone is added when only it is missing.
# `install-deps.sh bench` too: the otlp benchmarks send to that receiver.
if [ "${1:-}" = test ] || [ "${1:-}" = bench ]; then
	if ! command -v node >/dev/null 2>&1 ||
		! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' >/dev/null 2>&1; then
		OPTIONAL="$OPTIONAL nodejs npm"
	elif ! command -v npm >/dev/null 2>&1; then
		OPTIONAL="$OPTIONAL npm"
	fi
	if [ "$1" = bench ]; then
		OPTIONAL_FOR="the benchmarks will say LTTng-UST or the OTLP export was not measured"
	else
		OPTIONAL_FOR="the OTLP exporter's tests need node >= 18 and npm"
	fi
fi

# Root by the kernel's word (/proc/self/status), not only id's: an id that
# reports another uid than the process has must not stop an install.
is_root()
{
	[ "$(id -u 2>/dev/null)" = 0 ] || awk '/^Uid:/ { exit $3 != 0 }' /proc/self/status 2>/dev/null
}

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
	for p in $PKGS; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
			missing="$missing $p"
		fi
	done
else
	# Not Debian: the tools must be there; CMake's configuration names a missing library.
	for t in cmake make gcc pkg-config; do
		command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
	done
fi
optional_missing=""
for p in $OPTIONAL; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		optional_missing="$optional_missing $p"
	fi
done
if [ -n "$optional_missing" ]; then
	if is_root && command -v apt-get >/dev/null 2>&1; then
		echo "evring: installing Debian packages (optional):$optional_missing"
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get install -y -qq --no-install-recommends $optional_missing >/dev/null 2>&1; then
			apt-get update -qq >/dev/null 2>&1 || true
			apt-get install -y -qq --no-install-recommends $optional_missing >/dev/null 2>&1 ||
				echo "evring: could not install$optional_missing: $OPTIONAL_FOR" >&2
		fi
	else
		echo "evring: cannot install$optional_missing here (not root, or no apt-get): $OPTIONAL_FOR" >&2
	fi
fi
[ -z "$missing" ] && exit 0

if is_root && command -v apt-get >/dev/null 2>&1; then
	echo "evring: installing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
	exit 0
fi
# One line naming what is missing, then stop: nothing later would work without it.
echo "evring: missing dependencies: install the Debian packages$missing (as root: apt-get install$missing)" >&2
exit 1
