# shellcheck shell=bash
# Throwaway PostgreSQL and Redis servers for .ci/test and .ci/cluster.
#
# Sourcing this file creates a temporary directory and registers an EXIT
# trap that stops whatever was started and removes the directory. Then:
#   services_start_postgres  starts PostgreSQL on a free port below 32768
#                            (installing the Debian package postgresql when
#                            missing) and sets SERVICES_POSTGRES_URL;
#   services_start_redis     starts Redis likewise (package redis-server)
#                            and sets SERVICES_REDIS_URL;
#   services_need_chromium   installs the Debian package chromium when no
#                            chromium is on PATH (the console's browser
#                            tests drive it headless).
#
# The directory is on /dev/shm when that is a tmpfs with 4 GiB free: the
# servers' data and the tests' scratch files are thrown away anyway, and a
# disk file system pays for every file created (ext4 slows down creating
# files where many were recently deleted, which is what a test run does:
# CREATE DATABASE took 0.3 s on a churned ext4, 0.02 s on tmpfs).

services_scratch_base() {
	local avail=0
	if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ -w /dev/shm ]; then
		avail=$(df -P -k /dev/shm | awk 'NR == 2 { print $4 }')
	fi
	if [ "$avail" -ge $((4 * 1024 * 1024)) ]; then
		echo /dev/shm
	else
		echo "${TMPDIR:-/tmp}"
	fi
}
services_tmp=$(mktemp -d "$(services_scratch_base)/llmproxy-ci.XXXXXX")
services_pgdata=""
services_pgctl=""
services_cleanup() {
	if [ -n "$services_pgdata" ]; then
		services_as_pg "$services_pgctl" -D "$services_pgdata" -m immediate stop >/dev/null 2>&1 || true
	fi
	if [ -f "$services_tmp/redis.pid" ]; then
		local pid
		pid=$(cat "$services_tmp/redis.pid")
		kill "$pid" 2>/dev/null || true
		# Redis writes its log and removes its pid file as it exits: wait
		# (up to 10 s), or removing the directory races with it.
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	# Cleaning up never fails the run: its result is the tests'.
	rm -rf "$services_tmp" 2>/dev/null || { sleep 1; rm -rf "$services_tmp" || services_log "could not remove $services_tmp"; }
}
trap services_cleanup EXIT

services_log() { echo "ci/$(basename "$0"): $*" >&2; }

services_apt_install() {
	if [ "$(id -u)" != 0 ]; then
		services_log "need $* but cannot install it without root"
		return 1
	fi
	services_log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

services_need_chromium() {
	if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
		return 0
	fi
	services_apt_install chromium
}

# services_free_port prints a TCP port below 32768 that nothing listens on.
services_free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

services_as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

services_pg_bin() {
	ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

services_start_postgres() {
	local bin port
	bin=$(services_pg_bin)
	if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
		services_apt_install postgresql
		bin=$(services_pg_bin)
	fi
	services_pgctl="$bin/pg_ctl"
	services_pgdata="$services_tmp/pg"
	mkdir -p "$services_pgdata" "$services_tmp/pgsock"
	if [ "$(id -u)" = 0 ]; then
		chown -R postgres "$services_tmp"
		chmod 0755 "$services_tmp"
	fi
	port=$(services_free_port)
	services_as_pg "$bin/initdb" -D "$services_pgdata" -U postgres --auth=trust -E UTF8 >"$services_tmp/initdb.log" 2>&1 ||
		{ cat "$services_tmp/initdb.log" >&2; exit 1; }
	services_as_pg "$services_pgctl" -D "$services_pgdata" -l "$services_tmp/pg.log" -w -t 60 \
		-o "-p $port -k $services_tmp/pgsock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500" \
		start >/dev/null || { cat "$services_tmp/pg.log" >&2; exit 1; }
	SERVICES_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
	services_log "started PostgreSQL on 127.0.0.1:$port"
}

services_start_redis() {
	local rport
	if ! command -v redis-server >/dev/null; then
		services_apt_install redis-server
	fi
	rport=$(services_free_port)
	redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
		--daemonize yes --pidfile "$services_tmp/redis.pid" --dir "$services_tmp" --logfile "$services_tmp/redis.log"
	for _ in $(seq 1 50); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null; then break; fi
		sleep 0.1
	done
	SERVICES_REDIS_URL="redis://127.0.0.1:$rport/0"
	services_log "started Redis on 127.0.0.1:$rport"
}
