#!/bin/sh
# install.sh DIR: installs the OTLP test receiver's npm packages (package.json,
# package-lock.json beside this script) into DIR/node_modules with `npm ci`,
# unless DIR already holds an install of the same lock (the lock's sha256 is
# kept in DIR/.lock.sha256, written only after a complete install). With the
# packages already there it runs no npm at all, so it works offline.
# Then: node tests/otlp/receiver.js --modules DIR ...
# Exits 0 when DIR is ready; otherwise prints one line on stderr and exits 1
# (2 for a usage error).
set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
SRC=$(cd "$(dirname "$0")" && pwd)
DIR=$1

if ! command -v node >/dev/null 2>&1; then
	echo "otlp: node is not installed: the OTLP receiver needs Node.js >= 18 and npm (tools/install-deps.sh test installs them on Debian)" >&2
	exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' 2>/dev/null; then
	echo "otlp: node $(node --version 2>/dev/null) is too old: the OTLP receiver needs Node.js >= 18" >&2
	exit 1
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# One install at a time in DIR (tests may start together).
if command -v flock >/dev/null 2>&1 && [ -z "${EVR_OTLP_INSTALL_LOCKED:-}" ]; then
	EVR_OTLP_INSTALL_LOCKED=1 exec flock "$DIR/.install.lock" sh "$0" "$@"
fi

sum=$(node -e 'process.stdout.write(require("crypto").createHash("sha256").update(require("fs").readFileSync(process.argv[1])).digest("hex"))' "$SRC/package-lock.json")
ROOT_JS=node_modules/@opentelemetry/otlp-transformer/build/src/generated/root.js
check() {
	(cd "$DIR" && node -e '
		const r = require(process.argv[1]);
		const ok = r.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest.decode &&
			r.opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest.decode;
		process.exit(ok ? 0 : 1);' "./$ROOT_JS") >/dev/null 2>&1
}
if [ -f "$DIR/.lock.sha256" ] && [ "$(cat "$DIR/.lock.sha256")" = "$sum" ] && check; then
	exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
	echo "otlp: npm is not installed: the OTLP receiver's packages cannot be installed into $DIR (tools/install-deps.sh test installs npm on Debian)" >&2
	exit 1
fi
rm -f "$DIR/.lock.sha256"
cmp -s "$SRC/package.json" "$DIR/package.json" 2>/dev/null || cp "$SRC/package.json" "$DIR/package.json"
cmp -s "$SRC/package-lock.json" "$DIR/package-lock.json" 2>/dev/null || cp "$SRC/package-lock.json" "$DIR/package-lock.json"
echo "otlp: installing the OTLP receiver's npm packages (@opentelemetry/otlp-transformer) into $DIR"
# --ignore-scripts: nothing here needs an install script (protobufjs's only checks its CLI's versions).
if ! (cd "$DIR" && npm ci --no-audit --no-fund --ignore-scripts --prefer-offline --no-update-notifier \
	--loglevel=error >"$DIR/npm-install.log" 2>&1); then
	why=$(grep -m1 -E 'npm (ERR!|error) (code|errno|network|[A-Z])' "$DIR/npm-install.log" 2>/dev/null || true)
	echo "otlp: npm ci failed in $DIR${why:+ ($why)}; the whole log: $DIR/npm-install.log" >&2
	exit 1
fi
if ! check; then
	echo "otlp: npm ci ran, but $DIR/$ROOT_JS does not load (see $DIR/npm-install.log)" >&2
	exit 1
fi
echo "$sum" >"$DIR/.lock.sha256"
