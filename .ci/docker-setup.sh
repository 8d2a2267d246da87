#!/usr/bin/env bash
# A private Docker engine for the tests, and the images they run.
#
#   eval "$(bash .ci/docker-setup.sh)"   # start (or reuse) dockerd, build images, export env
#   bash .ci/docker-setup.sh --stop      # stop the private dockerd
#   bash .ci/docker-setup.sh --engine    # only start (or reuse) dockerd
#
# stdout carries only `export NAME=value` lines (everything else goes to stderr):
#   WORKBENCH_TEST_DOCKER_HOST   unix:// socket of the private engine
#   WORKBENCH_TEST_IMAGE         docker/Dockerfile built on the test base (workbench-test:latest)
#   WORKBENCH_TEST_BASE_IMAGE    a debootstrapped Debian with python3 (workbench-test-base:bookworm)
#
# The engine: dockerd with its own data root, exec root, pid file and socket, no bridge
# and no iptables (containers use host networking; nothing is pulled, no registry is
# reachable). It keeps running after this script exits; --stop ends it.
#
# Idempotent and cached. The base image is a debootstrap of Debian (the mirror apt uses
# here) with the host's CA bundle copied in, so TLS through this machine's proxy works
# inside; its rootfs tarball is kept in the cache by a hash of what goes into it. Each
# image carries a label with the hash of its inputs (for the test image: the files of the
# build context, the base image id and the build arguments) and is rebuilt only when that
# changes; the engine's data root lives in the cache too, so docker's layer cache
# survives between runs on the same machine.
#
# Environment (all optional):
#   WORKBENCH_CI_CACHE    cache dir (default /var/cache/workbench-ci)
#   WORKBENCH_DOCKER_RUN  socket, pid file and exec root (default /run/workbench-docker)
#   DEBIAN_MIRROR         default: the first Debian mirror in /etc/apt/sources.list*
#   DEBIAN_SUITE          default: bookworm
#   WORKBENCH_TEST_IMAGE  default: workbench-test:latest
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WORKBENCH_CI_CACHE:-/var/cache/workbench-ci}"
RUN_DIR="${WORKBENCH_DOCKER_RUN:-/run/workbench-docker}"
SOCKET="${RUN_DIR}/docker.sock"
export DOCKER_HOST="unix://${SOCKET}"
SUITE="${DEBIAN_SUITE:-bookworm}"
BASE_IMAGE="workbench-test-base:${SUITE}"
TEST_IMAGE="${WORKBENCH_TEST_IMAGE:-workbench-test:latest}"
# What goes into the base image; bump BASE_REVISION when the recipe below changes.
BASE_PACKAGES="python3,python3-venv,python3-pip,ca-certificates"
BASE_REVISION=1
# The legacy builder: plain Dockerfile syntax, no buildx plugin needed.
export DOCKER_BUILDKIT=0

log() { echo "[docker-setup] $*" >&2; }
die() { log "error: $*"; exit 1; }

engine_up() { docker version --format '{{.Server.Version}}' > /dev/null 2>&1; }

stop_engine() {
    local pid
    pid="$(cat "${RUN_DIR}/docker.pid" 2> /dev/null || true)"
    if [ -n "${pid}" ] && kill -0 "${pid}" 2> /dev/null; then
        log "stopping dockerd (pid ${pid})"
        kill "${pid}"
        for _ in $(seq 100); do kill -0 "${pid}" 2> /dev/null || break; sleep 0.2; done
        kill -0 "${pid}" 2> /dev/null && kill -9 "${pid}"
    fi
    rm -f "${RUN_DIR}/docker.pid"
}

start_engine() {
    if engine_up; then
        log "reusing the engine at ${DOCKER_HOST}"
        return
    fi
    command -v dockerd > /dev/null || die "dockerd is not installed (apt-get install docker.io)"
    stop_engine  # a stale pid file or a wedged daemon
    mkdir -p "${RUN_DIR}" "${CACHE}/docker"
    log "starting dockerd (data root ${CACHE}/docker, socket ${SOCKET})"
    # setsid + redirections: the daemon outlives this script and holds none of its pipes
    # (nor the setup lock, fd 9).
    setsid dockerd \
        --data-root "${CACHE}/docker" \
        --exec-root "${RUN_DIR}/exec" \
        --pidfile "${RUN_DIR}/docker.pid" \
        --host "${DOCKER_HOST}" \
        --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
        --log-level=warn \
        > "${RUN_DIR}/dockerd.log" 2>&1 < /dev/null 9>&- &
    for _ in $(seq 120); do
        engine_up && { log "dockerd $(docker version --format '{{.Server.Version}}') is up"; return; }
        sleep 0.5
    done
    tail -n 30 "${RUN_DIR}/dockerd.log" >&2 || true
    die "dockerd did not come up within 60 s (log: ${RUN_DIR}/dockerd.log)"
}

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "${DEBIAN_MIRROR}"; return; fi
    local url
    # deb822 (`URIs: ...`) and one-line (`deb URL suite ...`) sources; not the security archive.
    url="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2> /dev/null \
        | sed -n -E 's/^URIs:[[:space:]]+//p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
        | grep -E '/debian/?$' | head -n 1 || true)"
    echo "${url:-http://deb.debian.org/debian}"
}

image_label() {  # image label-key
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2> /dev/null || true
}

build_base() {
    local mirror hash tarball work
    mirror="$(debian_mirror)"
    hash="$(printf '%s\n' "${BASE_REVISION}" "${SUITE}" "${mirror}" "${BASE_PACKAGES}" \
        "$(cat /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/*.crt 2> /dev/null | sha256sum)" \
        | sha256sum | cut -c1-16)"
    if [ "$(image_label "${BASE_IMAGE}" workbench.inputs)" = "${hash}" ]; then
        log "base image ${BASE_IMAGE} is up to date (${hash})"
        return
    fi
    tarball="${CACHE}/base-${SUITE}-${hash}.tar"
    if [ ! -f "${tarball}" ]; then
        command -v debootstrap > /dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
        work="$(mktemp -d "${CACHE}/rootfs.XXXXXX")"
        # shellcheck disable=SC2064
        trap "rm -rf '${work}'" EXIT
        log "debootstrap ${SUITE} from ${mirror} (about a minute)"
        debootstrap --variant=minbase --include="${BASE_PACKAGES}" \
            "${SUITE}" "${work}/rootfs" "${mirror}" > "${work}/debootstrap.log" 2>&1 \
            || { tail -n 30 "${work}/debootstrap.log" >&2; die "debootstrap failed"; }
        # The host's CA bundle (and its extra CAs, so update-ca-certificates keeps them).
        cp /etc/ssl/certs/ca-certificates.crt "${work}/rootfs/etc/ssl/certs/ca-certificates.crt"
        if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
            cp /usr/local/share/ca-certificates/*.crt "${work}/rootfs/usr/local/share/ca-certificates/"
        fi
        rm -rf "${work}/rootfs/var/cache/apt/archives/"*.deb "${work}/rootfs/var/lib/apt/lists/"* \
            "${work}/rootfs/usr/share/doc/"* "${work}/rootfs/usr/share/man/"*
        rm -f "${CACHE}"/base-"${SUITE}"-*.tar  # older recipes
        tar --numeric-owner -C "${work}/rootfs" -cf "${tarball}.tmp" .
        mv "${tarball}.tmp" "${tarball}"
        rm -rf "${work}"
        trap - EXIT
    fi
    log "importing ${tarball} as ${BASE_IMAGE}"
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL workbench.inputs=${hash}" \
        "${tarball}" "${BASE_IMAGE}" > /dev/null
}

build_test_image() {
    local context hash base_id
    context="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '${context}'" EXIT
    # The build context: what docker/Dockerfile copies, nothing else (no .venv, no .git).
    tar -C "${ROOT}" --exclude=__pycache__ --exclude='*.pyc' --exclude=.mypy_cache \
        --exclude=.ruff_cache --exclude=.pytest_cache -cf - \
        pyproject.toml uv.lock README.md workbench extension notebooks docker | tar -C "${context}" -xf -
    base_id="$(docker image inspect --format '{{.Id}}' "${BASE_IMAGE}")"
    hash="$( (cd "${context}" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum;
        echo "${base_id}") | sha256sum | cut -c1-16)"
    if [ "$(image_label "${TEST_IMAGE}" workbench.inputs)" = "${hash}" ]; then
        log "test image ${TEST_IMAGE} is up to date (${hash})"
    else
        log "building ${TEST_IMAGE} from docker/Dockerfile on ${BASE_IMAGE}"
        local started=${SECONDS}
        docker build --network host --force-rm \
            --build-arg "BASE_IMAGE=${BASE_IMAGE}" \
            --label "workbench.inputs=${hash}" \
            --tag "${TEST_IMAGE}" \
            --file "${context}/docker/Dockerfile" \
            "${context}" >&2
        log "built ${TEST_IMAGE} in $((SECONDS - started)) s"
        # Superseded builds, and containers an interrupted build left (older than 30 min,
        # so nothing a test is creating right now).
        docker image prune --force > /dev/null
        docker container prune --force --filter until=30m > /dev/null
    fi
    rm -rf "${context}"
    trap - EXIT
}

main() {
    case "${1:-}" in
        --stop) stop_engine; return ;;
        --engine | "") ;;
        *) die "unknown option ${1} (use --stop or --engine)" ;;
    esac
    [ "$(id -u)" = 0 ] || die "needs root (it runs dockerd and debootstrap)"
    command -v docker > /dev/null || die "the docker CLI is not installed (apt-get install docker.io)"
    local started=${SECONDS}
    # One setup at a time per cache (a test session may run this while CI does).
    mkdir -p "${CACHE}"
    exec 9> "${CACHE}/setup.lock"
    flock --timeout 1800 9 || die "another docker-setup holds ${CACHE}/setup.lock"
    start_engine
    if [ "${1:-}" != "--engine" ]; then
        build_base
        build_test_image
    fi
    log "ready in $((SECONDS - started)) s"
    echo "export WORKBENCH_TEST_DOCKER_HOST=${DOCKER_HOST}"
    echo "export WORKBENCH_TEST_BASE_IMAGE=${BASE_IMAGE}"
    echo "export WORKBENCH_TEST_IMAGE=${TEST_IMAGE}"
}

main "$@"; exit  # (one line: bash reads no further, even if this file changes meanwhile)
