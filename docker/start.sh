#!/bin/bash
# Entrypoint of the paddle-workbench image; tini (PID 1) runs it with the container's
# command as arguments:
#
#   start.sh [lab] [JUPYTER ARGS...]  sshd in the background + JupyterLab (the default);
#                                     started as root, both run as NB_USER instead
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
#   SSH_AUTHORIZED_KEYS   public keys (one per line) allowed to log in as the user; they
#                         replace ~/.ssh/authorized_keys at every start (or leave it
#                         unset and mount a file at ~/.ssh/authorized_keys)
#   SSH_HOST_KEY_DIR      where the host key lives (generated on first start when absent);
#                         mount a directory here to keep the host key across containers
#   WORKBENCH_SSHD=off    do not start sshd in lab mode
#   WORKBENCH_ROUTER_CONF router mode's default configuration file
set -euo pipefail

log() { echo "[start.sh] $*" >&2; }

SSH_PORT="${SSH_PORT:-2222}"
JUPYTER_PORT="${JUPYTER_PORT:-8888}"
WORKBENCH_LISTEN="${WORKBENCH_LISTEN:-0.0.0.0}"

# ~/.ssh/authorized_keys holds exactly the keys of SSH_AUTHORIZED_KEYS, rewritten at every
# start (a temporary file, mode 0600, renamed over the old one), so a key removed from the
# variable stops working even when the home directory persists across containers. A file
# that does not carry the marker below (mounted or written by the user) is left alone;
# one that does is emptied when the variable is unset.
AUTHORIZED_MARKER="# written by start.sh from SSH_AUTHORIZED_KEYS at every start; edits are replaced"
write_authorized_keys() {
    local authorized="$1" tmp
    if [ -z "${SSH_AUTHORIZED_KEYS:-}" ]; then
        if [ -f "${authorized}" ] && [ "$(head -n 1 "${authorized}" 2> /dev/null)" = "${AUTHORIZED_MARKER}" ]; then
            : > "${authorized}" && log "SSH_AUTHORIZED_KEYS is unset: removed the keys it gave at the last start"
        fi
        return 0
    fi
    if [ -e "${authorized}" ] && [ "$(head -n 1 "${authorized}" 2> /dev/null)" != "${AUTHORIZED_MARKER}" ] \
        && [ -s "${authorized}" ]; then
        log "warning: ${authorized} was not written from SSH_AUTHORIZED_KEYS; replacing it with the variable's keys"
    fi
    tmp="$(mktemp "${authorized}.XXXXXX")" || { log "warning: cannot write ${authorized}; SSH_AUTHORIZED_KEYS ignored"; return 0; }
    chmod 0600 "${tmp}"
    printf '%s\n%s\n' "${AUTHORIZED_MARKER}" "${SSH_AUTHORIZED_KEYS}" > "${tmp}"
    if ! mv -f "${tmp}" "${authorized}" 2> /dev/null; then
        rm -f "${tmp}"
        log "warning: ${authorized} cannot be replaced (a mounted file?); SSH_AUTHORIZED_KEYS ignored"
    fi
}

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
    write_authorized_keys "${authorized}"
    if ! grep -q '^[^#[:space:]]' "${authorized}" 2> /dev/null; then
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

# JupyterLab never runs as root here: its terminals would be root shells. Started as root
# (docker run --user root), the lab and its sshd run as NB_USER instead, loudly.
drop_root() {  # COMMAND...: exec COMMAND as NB_USER when root; return otherwise
    [ "$(id -u)" = 0 ] || return 0
    local user="${NB_USER:-workbench}"
    if ! id "${user}" > /dev/null 2>&1 || ! command -v setpriv > /dev/null; then
        log "error: refusing to run JupyterLab as root (no user ${user}, or no setpriv to switch to it)"
        exit 1
    fi
    log "warning: started as root; JupyterLab runs as ${user} instead (never as root)"
    HOME="$(getent passwd "${user}" | cut -d: -f6)"
    export HOME USER="${user}" LOGNAME="${user}"
    exec setpriv --reuid="$(id -u "${user}")" --regid="$(id -g "${user}")" --init-groups "$@"
}

mode="${1:-lab}"
[ "$#" -gt 0 ] && shift

case "${mode}" in
    lab)
        drop_root "$0" lab "$@"
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
        case "${mode} ${1:-}" in
            "jupyter lab" | "workbench lab" | "jupyter-lab "*) drop_root "${mode}" "$@" ;;
        esac
        exec "${mode}" "$@"
        ;;
esac
