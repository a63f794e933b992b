#!/usr/bin/env bash
# Build actionlint (GitHub Actions workflow linter) from the Go module proxy
# into the version-keyed cache, like the other tools:
#   ${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}/bin/actionlint-<version>
#
# Usage: hack/build-actionlint.sh              build unless cached; prints the binary's path
#        hack/build-actionlint.sh --print-bin  print the path only
#        hack/build-actionlint.sh --check      exit 0 if cached, 1 if not (no build)
# Concurrent runs are serialized with flock. Cold build: ~1 min on 2 cores.
set -euo pipefail

ACTIONLINT_VERSION=v1.7.12
module=github.com/rhysd/actionlint/cmd/actionlint

cache="${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}"
bin="$cache/bin/actionlint-$ACTIONLINT_VERSION"

die() { echo "actionlint: $*" >&2; exit 1; }

case "${1:-}" in
  --print-bin) echo "$bin"; exit 0 ;;
  --check) [[ -x "$bin" ]]; exit $? ;;
  "") ;;
  *) die "unknown argument '$1' (usage: build-actionlint.sh [--print-bin|--check])" ;;
esac

if [[ ! -x "$bin" ]]; then
  command -v go >/dev/null 2>&1 || die "go not found: install Go to build actionlint $ACTIONLINT_VERSION"
  mkdir -p "$cache/bin" "$cache/build"
  exec 9>"$cache/build/.actionlint-$ACTIONLINT_VERSION.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  if [[ ! -x "$bin" ]]; then
    work="$(mktemp -d "$cache/build/actionlint.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    # `go install mod@version` checks every dependency against the module's go.sum.
    CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$work" go install -trimpath \
      -ldflags "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
      "$module@$ACTIONLINT_VERSION" >"$work/build.log" 2>&1 \
      || { tail -n 20 "$work/build.log" >&2; die "go install $module@$ACTIONLINT_VERSION failed"; }
    install -m 0755 "$work/actionlint" "$bin.tmp"
    mv -f "$bin.tmp" "$bin"
  fi
fi
echo "$bin"
