#!/bin/sh
# Prints the version the build stamps into the binary and the packages, from git:
#   on a tag vX.Y.Z                 X.Y.Z
#   N commits after vX.Y.Z          X.Y.Z+gitN.HASH   (sorts after X.Y.Z in dpkg and rpm)
#   no vX.Y.Z tag reachable         0.1.0             (the commit is stamped beside it)
# and +dirty (or .dirty) when tracked files differ from the commit. Outside a git checkout
# (a source tarball) it prints 0.1.0. `make VERSION=...` overrides all of this.
# With -c it prints the commit instead: 12 hex digits of HEAD, or "unknown".
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-}" = "-c" ]; then
	git rev-parse --short=12 HEAD 2>/dev/null || echo unknown
	exit 0
fi

fallback=0.1.0
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "$fallback"
	exit 0
fi
dirty=""
# Refresh the index first: a file whose timestamp alone changed is not a change.
git update-index -q --refresh >/dev/null 2>&1 || true
if ! git diff-index --quiet HEAD -- 2>/dev/null; then
	dirty=dirty
fi
if desc=$(git describe --tags --long --abbrev=12 --match 'v[0-9]*' 2>/dev/null); then
	# vX.Y.Z-N-gHASH
	hash=${desc##*-g}
	rest=${desc%-g*}
	n=${rest##*-}
	tag=${rest%-*}
	v=${tag#v}
	meta=""
	if [ "$n" != 0 ]; then
		meta="git$n.$hash"
	fi
else
	v=$fallback
	meta=""
fi
if [ -n "$dirty" ]; then
	meta="${meta:+$meta.}$dirty"
fi
echo "$v${meta:++$meta}"
