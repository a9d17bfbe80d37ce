#!/usr/bin/env bash
# Checks that the release build is reproducible: the binary is built twice with the flags of
# `make binary`, once here with the usual build cache, once from a copy of the source tree at
# another path with a fresh, empty GOCACHE, and the two must be byte-identical. Run by
# `make repro-check` (and `make test`), which passes VERSION, COMMIT and TAGS.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VERSION:=$(./scripts/version.sh)}"
: "${COMMIT:=$(./scripts/version.sh -c)}"
TAGS=${TAGS:-}
MAKE=${MAKE:-make}

work=$(mktemp -d "${TMPDIR:-/tmp}/dialtrap-repro.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/a" "$work/b" "$work/src" "$work/gocache"

# The copy: the files git knows of (tracked, and untracked that are not ignored), so no build
# output or local data comes along; outside a checkout, everything but bin/, dist/ and data/.
if git rev-parse --git-dir >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
		tar --null -T - -cf - | tar -xf - -C "$work/src"
else
	tar --exclude=./bin --exclude=./dist --exclude=./data -cf - . | tar -xf - -C "$work/src"
fi

build() { # dir out [env...]
	local dir=$1 out=$2
	shift 2
	env "$@" "$MAKE" --no-print-directory -s -C "$dir" binary OUT="$out" TAGS="$TAGS" VERSION="$VERSION" COMMIT="$COMMIT"
}

start=$(date +%s)
build . "$work/a/dialtrap"
warm=$(($(date +%s) - start))
start=$(date +%s)
build "$work/src" "$work/b/dialtrap" GOCACHE="$work/gocache"
cold=$(($(date +%s) - start))

a=$(sha256sum "$work/a/dialtrap" | cut -d' ' -f1)
b=$(sha256sum "$work/b/dialtrap" | cut -d' ' -f1)
size=$(stat -c %s "$work/a/dialtrap")
tagtext=${TAGS:+ -tags $TAGS}
echo "repro-check: dialtrap $VERSION (commit $COMMIT)$tagtext, $size bytes"
echo "repro-check:   $a  here, usual build cache (${warm}s)"
echo "repro-check:   $b  copy at another path, empty GOCACHE (${cold}s)"
if [ "$a" != "$b" ]; then
	echo "repro-check: FAIL: the two builds differ; compare them with cmp -l or diffoscope (go version -m shows their build settings)" >&2
	cmp "$work/a/dialtrap" "$work/b/dialtrap" | head -5 >&2 || true
	exit 1
fi
echo "repro-check: ok, byte-identical"
