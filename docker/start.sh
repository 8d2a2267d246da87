#!/bin/bash
# Entrypoint of the paddle-workbench image; tini (PID 1) runs it with the container's
# command as arguments:
#
#   start.sh [lab] [JUPYTER ARGS...]  sshd in the background + JupyterLab (the default)
#   start.sh serve ARGS...            exec `workbench serve ARGS...`
#   start.sh router [CONF]            exec nginx on CONF (a rendered router config, daemon off)
#   start.sh sshd                     sshd alone, in the foreground
#   start.sh COMMAND...               exec COMMAND (e.g. bash, workbench status)
#
# Environment:
#   JUPYTER_TOKEN         JupyterLab's token; generated and printed when unset or empty
#                         (an empty token never disables authentication here)
#   JUPYTER_PORT          8888      SSH_PORT 2222 (ports are set once, in the Dockerfile)
#   WORKBENCH_LISTEN      address JupyterLab and sshd bind (0.0.0.0)
#   SSH_AUTHORIZED_KEYS   public keys (one per line) allowed to log in as the user;
#                         or mount a file at ~/.ssh/authorized_keys
#   SSH_HOST_KEY_DIR      where the host key lives (generated on first start when absent);
#                         mount a directory here to keep the host key across containers
#   WORKBENCH_SSHD=off    do not start sshd in lab mode
#   WORKBENCH_ROUTER_CONF router mode's default configuration file
set -euo pipefail

log() { echo "[start.sh] $*" >&2; }

SSH_PORT="${SSH_PORT:-2222}"
JUPYTER_PORT="${JUPYTER_PORT:-8888}"
WORKBENCH_LISTEN="${WORKBENCH_LISTEN:-0.0.0.0}"

# sshd runs as the container's (non-root) user: it can only log in that user, with a
# key, on SSH_PORT. The sshd_config in /etc/workbench says the rest (no passwords, no root).
sshd_command() {
    local key_dir="${SSH_HOST_KEY_DIR:-${HOME}/.ssh/host_keys}"
    local key="${key_dir}/ssh_host_ed25519_key"
    if [ ! -f "${key}" ]; then
        mkdir -p "${key_dir}"
        chmod 0700 "${key_dir}"
        ssh-keygen -q -t ed25519 -N '' -C "workbench-host-key" -f "${key}"
        log "generated SSH host key: $(ssh-keygen -l -f "${key}.pub")"
    fi
    mkdir -p "${HOME}/.ssh"
    chmod 0700 "${HOME}/.ssh"
    local authorized="${HOME}/.ssh/authorized_keys"
    if [ -n "${SSH_AUTHORIZED_KEYS:-}" ]; then
        if [ -w "${authorized}" ] || [ ! -e "${authorized}" ]; then
            printf '%s\n' "${SSH_AUTHORIZED_KEYS}" >> "${authorized}"
            chmod 0600 "${authorized}"
        else
            log "warning: ${authorized} is read-only; SSH_AUTHORIZED_KEYS ignored"
        fi
    fi
    if [ ! -s "${authorized}" ]; then
        log "note: no SSH key configured (set SSH_AUTHORIZED_KEYS or mount ${authorized});" \
            "sshd runs but nobody can log in"
    fi
    if [ "$(id -u)" = 0 ]; then
        mkdir -p /run/sshd  # privilege separation directory, needed only when run as root
    fi
    # Sessions get the image's environment (sshd does not pass the container's on).
    local setenv="PATH=${PATH} WORKBENCH_HOME=${WORKBENCH_HOME:-${HOME}/.workbench}"
    setenv+=" WORKBENCH_REPO=${WORKBENCH_REPO:-/models} LANG=${LANG:-C.UTF-8}"
    [ -n "${DOCKER_HOST:-}" ] && setenv+=" DOCKER_HOST=${DOCKER_HOST}"
    SSHD=(/usr/sbin/sshd -D -e
        -f /etc/workbench/sshd_config
        -h "${key}"
        -p "${SSH_PORT}"
        -o "ListenAddress=${WORKBENCH_LISTEN}"
        -o "SetEnv=${setenv}")
}

mode="${1:-lab}"
[ "$#" -gt 0 ] && shift

case "${mode}" in
    lab)
        if [ "${WORKBENCH_SSHD:-on}" != "off" ]; then
            sshd_command
            "${SSHD[@]}" &
            log "sshd listening on ${WORKBENCH_LISTEN}:${SSH_PORT} (key-only login as $(id -un))"
        fi
        if [ -z "${JUPYTER_TOKEN:-}" ]; then
            JUPYTER_TOKEN="$(python -c 'import secrets; print(secrets.token_hex(24))')"
            log "JupyterLab token (generated): ${JUPYTER_TOKEN}"
            log "open http://127.0.0.1:${JUPYTER_PORT}/lab?token=${JUPYTER_TOKEN}"
        fi
        export JUPYTER_TOKEN  # jupyter_server reads its token from JUPYTER_TOKEN
        exec jupyter lab \
            --no-browser \
            --ServerApp.ip="${WORKBENCH_LISTEN}" \
            --ServerApp.port="${JUPYTER_PORT}" \
            --ServerApp.port_retries=0 \
            --ServerApp.root_dir="${HOME}" \
            "$@"
        ;;
    serve)
        exec workbench serve "$@"
        ;;
    router)
        conf="${1:-${WORKBENCH_ROUTER_CONF:-/etc/workbench/router/nginx.conf}}"
        exec nginx -p "$(dirname "${conf}")/" -c "${conf}"
        ;;
    sshd)
        sshd_command
        exec "${SSHD[@]}"
        ;;
    *)
        exec "${mode}" "$@"
        ;;
esac
