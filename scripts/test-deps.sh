#!/usr/bin/env bash
# Install and start the system tools the tests use, where this machine allows it, for `make test` and `.ci/run`:
#   eval "$(bash scripts/test-deps.sh)"
# stdout carries only `export NAME=value` lines for the tests; progress and notes go to stderr.
#
# As root with apt-get: installs Debian's prometheus (brings promtool), chromium and postgresql (only what is
# missing) and starts PostgreSQL on 127.0.0.1 (scripts/test-postgres.sh). RAYDIO_TEST_DEPS_INSTALL=0 installs
# nothing. Otherwise it names what is missing and how to install it; pytest then skips the tests that need it
# (tests/support/tools.py). With CI=true a missing tool is an error (exit 1), never a skip.
# Uses shell builtins only until it installs, so it also runs with an empty PATH (tests/unit/test_test_tools.py).
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.

note() { echo "test-deps: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
have_chromium() { if [ -n "${RAYDIO_CHROMIUM:-}" ]; then [ -x "$RAYDIO_CHROMIUM" ]; else have chromium; fi; }
ci=false
case "${CI:-}" in 1 | [Tt]rue | TRUE | [Yy]es) ci=true ;; esac
can_install=false
[ "$EUID" -eq 0 ] && have apt-get && [ "${RAYDIO_TEST_DEPS_INSTALL:-1}" != 0 ] && can_install=true

packages=()
{ have promtool && have prometheus; } || packages+=(prometheus)
have_chromium || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ] && $can_install; then
  note "installing Debian's ${packages[*]} for the tests (once; a few minutes) ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}") >&2
fi

# PostgreSQL: a URL given wins; as root, test-postgres.sh installs (when allowed) and starts Debian's server.
postgres=missing
if [ -n "${RAYDIO_TEST_POSTGRES_URL:-}" ]; then
  postgres=given
elif [ "$EUID" -eq 0 ] && { have pg_ctlcluster || $can_install; }; then
  if url=$(bash "$here/test-postgres.sh"); then
    echo "export RAYDIO_TEST_POSTGRES_URL='$url'"
    postgres=started
  else
    note "PostgreSQL did not start (see above)"
  fi
fi

missing=()
have promtool || missing+=("promtool: sudo apt-get install prometheus")
have prometheus || missing+=("prometheus: sudo apt-get install prometheus")
have_chromium || missing+=("chromium: sudo apt-get install chromium, or set RAYDIO_CHROMIUM")
[ "$postgres" != missing ] || missing+=("postgres: set RAYDIO_TEST_POSTGRES_URL, or run make test as root")
have kubectl || missing+=("kubectl: install kubectl >= 1.27, https://kubernetes.io/docs/tasks/tools/")
[ ${#missing[@]} -gt 0 ] || exit 0
for line in "${missing[@]}"; do
  if $ci; then note "missing ${line%%:*} (${line#*: })"; else note "missing ${line%%:*}, its tests are skipped (${line#*: })"; fi
done
if $ci; then
  note "CI=true: every tool is required; failing"
  exit 1
fi
exit 0
