#!/usr/bin/env bash
# Sets up .venv with the development tools and runs every check serversync has:
# ruff (lint and format), mypy --strict, and the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real servers for tests/integration, from Debian: Dovecot (IMAP, POP3, LMTP), Postfix and
# PostgreSQL. The tests start their own throw-away instances on loopback; a temporary
# policy-rc.d keeps the packages' system services from starting on install, and Postfix is
# installed with "No configuration" so no system MTA is set up.
packages=()
[ -x /usr/lib/dovecot/imap ] || packages+=(dovecot-imapd)
[ -x /usr/lib/dovecot/pop3 ] || packages+=(dovecot-pop3d)
[ -x /usr/lib/dovecot/lmtp ] || packages+=(dovecot-lmtpd)
[ -x /usr/sbin/postfix ] || packages+=(postfix)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
if [ "${#packages[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  printf '%s\n' "postfix postfix/main_mailer_type select No configuration" \
    "postfix postfix/mailname string localhost" | $sudo debconf-set-selections
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 0755 /usr/sbin/policy-rc.d && policy=1
  fi
  status=0
  { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; } || status=$?
  [ -z "$policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
  [ "$status" -eq 0 ] || exit "$status"
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev,sql,cli,graph]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
.venv/bin/pytest
