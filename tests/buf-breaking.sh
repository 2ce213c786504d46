#!/usr/bin/env bash
# The contract only grows: `buf breaking` (buf's FILE rules, proto/buf.yaml) compares proto/ with
# the proto/ of the main branch at the point this branch left it (the merge-base; on main itself that is
# HEAD, so CI on main compares main with itself and passes). The base tree is exported with `git archive`
# into a temp dir, which works the same in a clone, a shallow CI clone with main fetched, and a git
# worktree. buf comes from npm (@bufbuild/buf, a dev dependency of clients/typescript and web-client).
set -euo pipefail
cd "$(dirname "$0")/.."

buf="${BUF:-}"
for candidate in clients/typescript/node_modules/.bin/buf web-client/node_modules/.bin/buf; do
  [ -z "$buf" ] && [ -x "$candidate" ] && buf="$candidate"
done
if [ -z "$buf" ]; then
  echo "buf not found: run npm ci in clients/typescript/ (or web-client/) first, or set BUF" >&2
  exit 1
fi

base_ref=""
for ref in "${BUF_BREAKING_AGAINST:-}" main origin/main; do
  if [ -n "$ref" ] && git rev-parse --verify --quiet "$ref^{commit}" >/dev/null; then
    base_ref="$ref"
    break
  fi
done
if [ -z "$base_ref" ]; then
  echo "no main branch in this clone (tried main, origin/main; set BUF_BREAKING_AGAINST): fetch it, e.g." >&2
  echo "  git fetch origin main:main" >&2
  exit 1
fi
base="$(git merge-base HEAD "$base_ref")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! git archive "$base" proto | tar -x -C "$work"; then
  echo "main ($base) has no proto/ directory" >&2
  exit 1
fi
echo "buf breaking: proto/ against $base_ref at the merge-base $(git rev-parse --short "$base")"
"$buf" breaking proto --against "$work/proto"
echo "no breaking change"
