#!/usr/bin/env bash
# Runs every test of Martix. Uses the PostgreSQL on 127.0.0.1:5432 if it answers; otherwise
# installs Debian's postgresql (if missing) and starts it. The same for RabbitMQ on :5672 and
# Redis on :6379 (the order-view cache's tests).
set -euo pipefail
cd "$(dirname "$0")/.."

export MARTIX_TEST_DATABASE_URL="${MARTIX_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/martix_test}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root for: $*"; return 1; fi
}

pg_answers() {
  # A TCP connect is enough to know a server listens; auth is checked by the tests' own error.
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}

ensure_postgres() {
  if pg_answers; then
    say "PostgreSQL answers on 127.0.0.1:5432"
    return
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    say "installing PostgreSQL (Debian package postgresql)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_answers && break; sleep 0.5; done
  pg_answers || { say "PostgreSQL did not start; see /var/log/postgresql/"; exit 1; }
  # A cluster we started ourselves uses password auth on TCP: give the test role its password.
  as_root runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
}

rabbit_answers() {
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

ensure_rabbitmq() {
  if rabbit_answers; then
    say "RabbitMQ answers on 127.0.0.1:5672"
    return
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    say "installing RabbitMQ (Debian package rabbitmq-server)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  say "starting RabbitMQ"
  as_root env PATH="$PATH:/usr/sbin" rabbitmq-server -detached || true
  for _ in $(seq 1 120); do rabbit_answers && break; sleep 0.5; done
  rabbit_answers || { say "RabbitMQ did not start; see /var/log/rabbitmq/"; exit 1; }
}

redis_answers() {
  (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null
}

ensure_redis() {
  if [ -n "${MARTIX_TEST_REDIS_URL:-}" ]; then
    say "Redis at MARTIX_TEST_REDIS_URL"
    return
  fi
  if redis_answers; then
    say "Redis answers on 127.0.0.1:6379"
    return
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    say "installing Redis (Debian package redis-server)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  say "starting Redis"
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 1 60); do redis_answers && break; sleep 0.5; done
  redis_answers || { say "Redis did not start"; exit 1; }
}

# The console's tests drive a headless Chromium over WebDriver (cli/tests/console.rs).
ensure_chromium() {
  if [ -n "${MARTIX_TEST_CHROMEDRIVER:-}" ]; then
    say "chromedriver at MARTIX_TEST_CHROMEDRIVER"
    return
  fi
  if command -v chromedriver >/dev/null 2>&1; then
    say "chromedriver: $(command -v chromedriver)"
    return
  fi
  say "installing Chromium and its WebDriver (Debian packages chromium, chromium-driver)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

ensure_postgres
ensure_rabbitmq
ensure_redis
ensure_chromium
say "Python test tools"
MARTIX_TEST_PYTHON="$(scripts/py-venv.sh)/bin/python"
export MARTIX_TEST_PYTHON
say "static checks of deploy/"
scripts/check-deploy.sh
say "cargo test --workspace"
cargo test --workspace --no-fail-fast
