#!/usr/bin/env bash
# A live Kubernetes 1.20 cluster on this machine for the tests: a real control plane
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and one node.
#
#   bash .ci/k8s-setup.sh > /tmp/workbench-k8s.env && source /tmp/workbench-k8s.env
#   bash .ci/k8s-setup.sh --build   # only fetch and build the binaries (cached)
#   bash .ci/k8s-setup.sh --stop    # stop the cluster (the build cache stays)
#   bash .ci/k8s-setup.sh --restart # a new cluster, also when one is running (from
#                                   # another checkout's build: a running one is reused)
#
# stdout carries only `export NAME=value` lines (everything else goes to stderr):
#   KUBECONFIG                      admin kubeconfig (token of a system:masters user, TLS
#                                   verified against the cluster's own CA)
#   WORKBENCH_TEST_KUBECONFIG       the same file, for the tests (tests/k8s_live)
#   WORKBENCH_TEST_K8S_NODE         the node's name
#   WORKBENCH_TEST_K8S_NODE_KIND    kubelet (the real kubelet 1.20, dockershim)
#
# Where it comes from. Debian bookworm's `kubernetes` source package (1.20.2 with its
# vendor/ tree) is fetched with `apt-get source` through a private APT_CONFIG (the host's
# apt sources are not touched), built offline in GOPATH mode with bookworm's Go 1.19
# (`golang-1.19-go`, unpacked with dpkg -x, never installed), and etcd 3.4 is bookworm's
# `etcd-server`, also unpacked. Newer Debian releases ship kubectl only; nothing on PyPI
# or npm carries these servers. Three small patches make the 1.20 tree right under Go 1.19
# and on this machine (patch_reflect2, patch_zero_check, patch_oom_adj below say why).
# The binaries are cached under ${WORKBENCH_CI_CACHE}/k8s/bin-<hash of the pinned versions
# and of the build functions below>, the Go build cache (1.1 GB) beside them.
#
# Time, measured: fetch ~40 s; cold build 6.6 CPU-minutes (user+sys), so ~3.5-4 min on an
# idle 2-core machine (17.6 min wall on one shared with seven busy neighbours); a rebuild
# after a patch that changes no exported API ~1 min (the Go cache); cluster start with
# the binaries cached ~55 s (up to 130 s on the busy machine), CRDs included; a running
# cluster is reused in under a second.
#
# The cluster. etcd on a tmpfs data dir under ${WORKBENCH_K8S_RUN}; kube-apiserver on
# https://127.0.0.1:${PORT} with a CA made here, static token authentication (one token
# per component, so RBAC sees each as its own user) and Node,RBAC authorization plus the
# NodeRestriction admission plugin; controller-manager with per-controller service
# account credentials; the scheduler.
# The node is the REAL kubelet 1.20 built from the same tree (not a fake agent), using
# dockershim against the private dockerd of .ci/docker-setup.sh (so images built there,
# WORKBENCH_TEST_IMAGE, run without a registry; `imagePullPolicy: Never`). It registers
# with a non-loopback address (the kubelet refuses 127.0.0.1): 10.255.255.1 on a dummy
# interface, or on a veth pair kept on this machine where there is no dummy driver; its API (port
# 16250) takes only clients with a certificate of the cluster's CA. No CNI plugin,
# kube-proxy or cluster DNS runs: pods that must be reached use `hostNetwork: true`
# (other pods run, with a loopback interface only and no pod IP); the pod sandbox image is
# a static `pause` compiled here from the source tree's build/pause, imported as a
# one-file image.
#
# Custom resources the exports use are installed as CRDs: Gateway API v1 (GatewayClass,
# Gateway, HTTPRoute), Argo Rollouts v1alpha1 (Rollout, AnalysisTemplate, AnalysisRun),
# KServe v1beta1 InferenceService: tests/k8s_live/_crds.py builds them from the pinned
# sources the offline schema tests validate against
# (tests/deploy/platforms/kubernetes/manifests/_crds.py).
# Kubernetes 1.20 serves autoscaling/v2beta2 and policy/v1beta1, not autoscaling/v2 or
# policy/v1.
#
# Idempotent: a running, healthy cluster is reused. Everything runs as root.
#
# Environment (all optional):
#   WORKBENCH_CI_CACHE           cache dir (default /var/cache/workbench-ci)
#   WORKBENCH_K8S_RUN            pids, logs, certificates, etcd data (default /run/workbench-k8s)
#   WORKBENCH_K8S_PORT           the API server's port (default 16443)
#   WORKBENCH_TEST_DOCKER_HOST   the private dockerd (default: from /tmp/workbench-docker.env)
#   DEBIAN_MIRROR                default: the first Debian mirror in /etc/apt/sources.list*
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WORKBENCH_CI_CACHE:-/var/cache/workbench-ci}/k8s"
RUN_DIR="${WORKBENCH_K8S_RUN:-/run/workbench-k8s}"
# the kubelet's root dir (pod volumes): on disk, where cAdvisor finds a filesystem
STATE_DIR="${WORKBENCH_K8S_STATE:-/var/lib/workbench-k8s}"
PORT="${WORKBENCH_K8S_PORT:-16443}"
ETCD_PORT=12379
KUBELET_PORT=16250
KUBELET_HEALTHZ_PORT=16248
NODE_NAME="workbench-node"
# The node's address: the kubelet refuses a loopback one, so an interface of our own holds
# an address only this machine reaches: a dummy interface, or (where the kernel has no
# dummy driver) one end of a veth pair whose two ends both stay on this machine. Probes of
# host-network pods go to this address and never leave the machine; the machine's own
# network address is never used.
NODE_LINK="wb-k8s0"
NODE_LINK_IP="10.255.255.1"
SUITE=bookworm
# The pinned source package (bookworm's, a point release: Debian keeps it in the suite).
K8S_DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_VERSION="v1.20.2"
GO_PACKAGE="golang-1.19-go"
COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kubelet"
# bump when what the build produces changes in a way the functions below do not show
BUILD_REVISION=1

log() { echo "[k8s-setup] $*" >&2; }
die() { log "error: $*"; exit 1; }

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "${DEBIAN_MIRROR}"; return; fi
    local url
    url="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2> /dev/null \
        | sed -n -E 's/^URIs:[[:space:]]+//p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
        | grep -E '/debian/?$' | head -n 1 || true)"
    echo "${url:-http://deb.debian.org/debian}"
}

# -- fetch and build -----------------------------------------------------------------------

private_apt() {  # an apt configuration of our own: bookworm deb + deb-src, nothing of the host's
    local apt="${CACHE}/apt" mirror
    mirror="$(debian_mirror)"
    mkdir -p "${apt}"/{state/lists/partial,cache/archives/partial,etc/sources.list.d}
    cat > "${apt}/etc/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror} ${SUITE} main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror} ${SUITE} main
EOF
    cat > "${apt}/apt.conf" <<EOF
Dir::State "${apt}/state";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "${apt}/cache";
Dir::Etc::SourceList "${apt}/etc/sources.list";
Dir::Etc::SourceParts "${apt}/etc/sources.list.d";
APT::Sandbox::User "root";
EOF
    export APT_CONFIG="${apt}/apt.conf"
    log "apt-get update (private sources: ${mirror} ${SUITE}, deb and deb-src)"
    apt-get update -qq > /dev/null 2>&1 || apt-get update -q >&2 || die "apt-get update failed"
}

fetch_sources() {  # the Go toolchain, etcd and the kubernetes source tree, under ${CACHE}/src
    local src="${CACHE}/src" tools="${CACHE}/tools"
    mkdir -p "${src}"
    if [ -x "${tools}/usr/lib/go-1.19/bin/go" ] && [ -x "${tools}/usr/bin/etcd" ] \
        && [ -f "${src}/kubernetes_${K8S_DEB_VERSION%-*}.orig.tar.gz" ]; then
        return
    fi
    private_apt
    (cd "${src}" && apt-get download -q "${GO_PACKAGE}" golang-1.19-src etcd-server >&2) \
        || die "apt-get download ${GO_PACKAGE} golang-1.19-src etcd-server failed"
    rm -rf "${tools}.tmp"
    for deb in "${src}"/*.deb; do dpkg -x "${deb}" "${tools}.tmp"; done
    rm -rf "${tools}"
    mv "${tools}.tmp" "${tools}"
    log "apt-get source kubernetes=${K8S_DEB_VERSION} (about 30 MB)"
    (cd "${src}" && apt-get source -q --download-only "kubernetes=${K8S_DEB_VERSION}" >&2) \
        || die "apt-get source kubernetes=${K8S_DEB_VERSION} failed (is the version still in ${SUITE}?)"
}

go_env() {
    export GOROOT="${CACHE}/tools/usr/lib/go-1.19" GOPATH="${CACHE}/gopath" GOCACHE="${CACHE}/gocache"
    export PATH="${GOROOT}/bin:${PATH}" GO111MODULE=off GOPROXY=off GOFLAGS="" CGO_ENABLED=0
}

source_tree() {  # the tree at a stable path (the Go build cache keys on it)
    local tree="${CACHE}/gopath/src/k8s.io/kubernetes" tarball
    tarball="${CACHE}/src/kubernetes_${K8S_DEB_VERSION%-*}.orig.tar.gz"
    if [ "$(cat "${tree}/.workbench-source" 2> /dev/null)" = "${K8S_DEB_VERSION}" ]; then return; fi
    log "unpacking $(basename "${tarball}")"
    rm -rf "${tree}" "${tree}.tmp"
    mkdir -p "${tree}.tmp"
    tar -C "${tree}.tmp" --strip-components=1 -xzf "${tarball}"
    echo "${K8S_DEB_VERSION}" > "${tree}.tmp/.workbench-source"
    mv "${tree}.tmp" "${tree}"
}

patch_reflect2() {  # the vendored reflect2 v1.0.1 crashes on Go >= 1.18: v1.0.2's fix
    # Go 1.18 changed reflect.mapiterinit to fill an iterator the caller allocates; v1.0.1
    # takes a pointer back, and json-iterator's map encoding faults (kube-apiserver dies
    # encoding a custom resource's metadata). Same change as reflect2 v1.0.2.
    local dir="$1/vendor/github.com/modern-go/reflect2"
    grep -q 'm unsafe.Pointer, it \*hiter)$' "${dir}/unsafe_link.go" && return
    perl -0pi -e 's/func mapiterinit\(rtype unsafe.Pointer, m unsafe.Pointer\) \*hiter/func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)/;
        s/(type hiter struct \{\n).*?\n\}/$1\tkey         unsafe.Pointer\n\tvalue       unsafe.Pointer\n\tt           unsafe.Pointer\n\th           unsafe.Pointer\n\tbuckets     unsafe.Pointer\n\tbptr        unsafe.Pointer\n\toverflow    *[]unsafe.Pointer\n\toldoverflow *[]unsafe.Pointer\n\tstartBucket uintptr\n\toffset      uint8\n\twrapped     bool\n\tB           uint8\n\ti           uint8\n\tbucket      uintptr\n\tcheckBucket uintptr\n}/s' \
        "${dir}/unsafe_link.go"
    perl -0pi -e 's/\treturn &UnsafeMapIterator\{\n\t\thiter:      mapiterinit\(type2.rtype, \*\(\*unsafe.Pointer\)\(obj\)\),/\tvar it hiter\n\tmapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)\n\treturn &UnsafeMapIterator{\n\t\thiter:      &it,/' \
        "${dir}/unsafe_map.go"
    grep -q 'm unsafe.Pointer, it \*hiter)$' "${dir}/unsafe_link.go" && grep -q 'hiter:      &it,' "${dir}/unsafe_map.go" \
        || die "patching vendor/github.com/modern-go/reflect2 failed"
}

patch_zero_check() {  # schema validation must not take "" (or 0, false) for null on Go >= 1.19
    # The vendored OpenAPI validators test `reflect.DeepEqual(reflect.Zero(T), reflect.ValueOf(v))`,
    # which compares two reflect.Value headers: false for every value built with Go 1.15,
    # true for "" since Go 1.19 points both at the runtime's shared zero value. Then a
    # custom resource's `group: ""` (or a CRD's `default: ""`) is refused as null. Back to
    # what the check did with the Go Kubernetes 1.20 was released with: null only.
    local file
    for file in "$1"/vendor/github.com/go-openapi/validate/type.go \
                "$1"/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go; do
        sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' \
            "${file}"
        grep -q 'reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data))' "${file}" \
            && die "patching ${file} failed"
    done
    return 0
}

patch_oom_adj() {  # no negative oom_score_adj: this machine's containers cannot lower theirs
    # Lowering an oom_score_adj takes CAP_SYS_RESOURCE, which processes here lack, so runc
    # fails to start a container asked for -998 (the kubelet's pod sandbox) or -997
    # (Guaranteed pods). Those two become 0, the score everything here runs with;
    # BestEffort (1000) and Burstable (1..999) pods keep theirs.
    sed -i 's/^\(\tdefaultSandboxOOMAdj int = \)-998$/\10/' "$1/pkg/kubelet/dockershim/docker_sandbox.go"
    sed -i 's/^\(\tguaranteedOOMScoreAdj int = \)-997$/\10/' "$1/pkg/kubelet/qos/policy.go"
    grep -q '^.defaultSandboxOOMAdj int = 0$' "$1/pkg/kubelet/dockershim/docker_sandbox.go" \
        && grep -q '^.guaranteedOOMScoreAdj int = 0$' "$1/pkg/kubelet/qos/policy.go" \
        || die "patching the kubelet's OOM score adjustments failed"
}

generate_openapi() {  # the release tree lacks pkg/generated/openapi/zz_generated.openapi.go
    local tree="$1" dirs
    [ -f "${tree}/pkg/generated/openapi/zz_generated.openapi.go" ] && return
    log "generating pkg/generated/openapi with the vendored openapi-gen"
    go build -o "${CACHE}/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
    dirs="$( { find . -path ./vendor -prune -o -path ./staging -prune -o -path './_*' -prune \
                    -o -path './.*' -prune -o -type f -name '*.go' -print
               find -L vendor/k8s.io -type f -name '*.go'; } \
        | { xargs grep -l '+k8s:openapi-gen=' || true; } \
        | grep -v -e vendor/k8s.io/code-generator/ -e vendor/k8s.io/sample-apiserver/ \
        | xargs -n1 dirname | sed 's#^\./##' | LC_ALL=C sort -u \
        | sed 's#^#k8s.io/kubernetes/#' | paste -sd, )"
    "${CACHE}/openapi-gen" -i "${dirs}" -p k8s.io/kubernetes/pkg/generated/openapi \
        -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
        -r "${CACHE}/openapi-violations.report" >&2
}

build_binaries() {  # build_binaries OUT: the servers, the kubelet and a static pause into OUT
    local out="$1" tree="${CACHE}/gopath/src/k8s.io/kubernetes"
    local v=k8s.io/kubernetes/vendor/k8s.io/component-base/version
    local c=k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version
    local targets=() name
    for name in ${COMPONENTS}; do targets+=("./cmd/${name}"); done
    cd "${tree}"
    patch_reflect2 "${tree}"
    patch_zero_check "${tree}"
    patch_oom_adj "${tree}"
    generate_openapi "${tree}"
    log "go build ${COMPONENTS} (${K8S_VERSION}, -tags providerless; about 4 minutes cold)"
    go build -tags providerless -o "${out}/" -ldflags "-s -w \
        -X ${v}.gitVersion=${K8S_VERSION} -X ${v}.gitMajor=1 -X ${v}.gitMinor=20 \
        -X ${v}.gitTreeState=clean -X ${c}.gitVersion=${K8S_VERSION} -X ${c}.gitMajor=1 -X ${c}.gitMinor=20" \
        "${targets[@]}"
    # the pod sandbox: build/pause's C program, static (the image holds nothing else)
    gcc -Os -static -Wall -Werror -DVERSION="${K8S_VERSION}-workbench" \
        -o "${out}/pause" build/pause/linux/pause.c
    cp "${CACHE}/tools/usr/bin/etcd" "${out}/etcd"
    cd - > /dev/null
}

build_hash() {
    { echo "${BUILD_REVISION} ${K8S_DEB_VERSION} ${K8S_VERSION} ${GO_PACKAGE} ${COMPONENTS}"
      declare -f build_binaries patch_reflect2 patch_zero_check patch_oom_adj generate_openapi source_tree; } | sha256sum | cut -c1-16
}

build() {  # sets BIN to the cached build's directory, building it when absent
    BIN="${CACHE}/bin-$(build_hash)"
    if [ -f "${BIN}/.complete" ]; then
        log "binaries cached (${BIN})"
        return
    fi
    command -v gcc > /dev/null || die "gcc is not installed (apt-get install gcc libc6-dev: the pause binary)"
    local started=${SECONDS}
    fetch_sources
    go_env
    source_tree
    rm -rf "${BIN}.tmp"
    mkdir -p "${BIN}.tmp"
    build_binaries "${BIN}.tmp"
    touch "${BIN}.tmp/.complete"
    rm -rf "${BIN}"
    mv "${BIN}.tmp" "${BIN}"
    # older builds: keep the three newest (checkouts of other revisions may share this cache)
    find "${CACHE}" -maxdepth 1 -name 'bin-*.tmp' ! -path "${BIN}.tmp" -mmin +60 -exec rm -rf {} +
    ls -1dt "${CACHE}"/bin-* 2> /dev/null | grep -v '\.tmp$' | tail -n +4 | xargs -r rm -rf
    log "built in $((SECONDS - started)) s ($(du -sh "${CACHE}/gocache" | cut -f1) of Go build cache)"
}

# -- the cluster ---------------------------------------------------------------------------

docker_host() {
    if [ -n "${WORKBENCH_TEST_DOCKER_HOST:-}" ]; then echo "${WORKBENCH_TEST_DOCKER_HOST}"; return; fi
    local line
    line="$(grep -s '^export WORKBENCH_TEST_DOCKER_HOST=' /tmp/workbench-docker.env || true)"
    echo "${line#export WORKBENCH_TEST_DOCKER_HOST=}"
}

admin_ok() {  # the API server answers /readyz to the admin token
    [ -f "${RUN_DIR}/pki/admin.token" ] || return 1
    curl -sf --max-time 5 --cacert "${RUN_DIR}/pki/ca.crt" \
        -H "Authorization: Bearer $(cat "${RUN_DIR}/pki/admin.token")" \
        "https://127.0.0.1:${PORT}/readyz" > /dev/null 2>&1
}

alive() { local pid; pid="$(cat "${RUN_DIR}/$1.pid" 2> /dev/null)" && kill -0 "${pid}" 2> /dev/null; }

cluster_up() {
    local name
    for name in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet; do
        alive "${name}" || return 1
    done
    admin_ok
}

stop_one() {
    local pid
    pid="$(cat "${RUN_DIR}/$1.pid" 2> /dev/null || true)"
    if [ -n "${pid}" ] && kill -0 "${pid}" 2> /dev/null; then
        log "stopping $1 (pid ${pid})"
        kill "${pid}"
        for _ in $(seq 50); do kill -0 "${pid}" 2> /dev/null || break; sleep 0.2; done
        kill -0 "${pid}" 2> /dev/null && kill -9 "${pid}"
    fi
    rm -f "${RUN_DIR}/$1.pid"
}

remove_pod_containers() {  # the node's containers (dockershim labels them) on the private dockerd
    local host ids
    host="$(docker_host)"
    [ -n "${host}" ] && command -v docker > /dev/null || return 0
    ids="$(DOCKER_HOST="${host}" docker ps -aq --filter label=io.kubernetes.docker.type 2> /dev/null || true)"
    if [ -n "${ids}" ]; then
        log "removing the node's $(echo "${ids}" | wc -l) pod containers"
        # shellcheck disable=SC2086
        DOCKER_HOST="${host}" docker rm -f ${ids} > /dev/null 2>&1 || true
    fi
}

stop_cluster() {
    local name
    for name in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_one "${name}"; done
    remove_pod_containers
    ip link del "${NODE_LINK}" 2> /dev/null || true
    # the kubelet's volume mounts (secrets and service account tokens are tmpfs mounts)
    if [ -d "${STATE_DIR}/kubelet" ]; then
        awk -v dir="${STATE_DIR}/kubelet" '$2 == dir || index($2, dir "/") == 1 {print $2}' /proc/mounts \
            | sort -r \
            | xargs -r -n1 umount -l 2> /dev/null || true
    fi
}

spawn() {  # spawn NAME COMMAND...: a daemon that outlives this script, logs in ${RUN_DIR}/NAME.log
    local name="$1"; shift
    # setsid + redirections: it holds none of this script's pipes (nor the setup lock, fd 9)
    setsid "$@" > "${RUN_DIR}/${name}.log" 2>&1 < /dev/null 9>&- &
    echo $! > "${RUN_DIR}/${name}.pid"
}

wait_for() {  # wait_for NAME SECONDS COMMAND...: until COMMAND succeeds, while NAME runs
    local name="$1" seconds="$2"; shift 2
    for _ in $(seq $((seconds * 2))); do
        "$@" && return 0
        alive "${name}" || break
        sleep 0.5
    done
    tail -n 40 "${RUN_DIR}/${name}.log" >&2 || true
    alive "${name}" || die "${name} exited (log: ${RUN_DIR}/${name}.log)"
    die "${name} was not ready within ${seconds} s (log: ${RUN_DIR}/${name}.log)"
}

cert() {  # cert NAME SUBJECT [SAN]: a key and a certificate signed by the CA (in the cwd)
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2> /dev/null
    if [ -n "${3:-}" ]; then printf 'subjectAltName=%s\n' "$3" > "$1.ext"; else : > "$1.ext"; fi
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile "$1.ext" -out "$1.crt" 2> /dev/null
    rm -f "$1.csr" "$1.ext"
}

kubeconfig() {  # kubeconfig USER TOKEN: ${RUN_DIR}/pki/USER.kubeconfig, the CA inline
    cat > "${RUN_DIR}/pki/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: workbench
    cluster:
      server: https://127.0.0.1:${PORT}
      certificate-authority-data: $(base64 -w0 < "${RUN_DIR}/pki/ca.crt")
users:
  - name: $1
    user:
      token: $2
contexts:
  - name: workbench
    context: {cluster: workbench, user: $1, namespace: default}
current-context: workbench
EOF
}

make_pki() {  # a CA, serving and client certificates, the service account key, tokens
    local pki="${RUN_DIR}/pki" admin cm sched kubelet
    rm -rf "${pki}"
    mkdir -p "${pki}"
    chmod 755 "${pki}"
    cd "${pki}"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
        -subj "/CN=workbench-k8s-ca" 2> /dev/null
    cert apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,\
DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    cert kubelet "/CN=${NODE_NAME}" "IP:${NODE_IP},IP:127.0.0.1,DNS:${NODE_NAME},DNS:localhost"
    openssl genrsa -out sa.key 2048 2> /dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2> /dev/null
    # static tokens: one user per component, so RBAC (and the Node authorizer) tell them apart
    admin="$(openssl rand -hex 16)" cm="$(openssl rand -hex 16)"
    sched="$(openssl rand -hex 16)" kubelet="$(openssl rand -hex 16)"
    {
        echo "${admin},workbench-admin,workbench-admin,system:masters"
        echo "${cm},system:kube-controller-manager,system:kube-controller-manager"
        echo "${sched},system:kube-scheduler,system:kube-scheduler"
        echo "${kubelet},system:node:${NODE_NAME},system:node:${NODE_NAME},system:nodes"
    } > tokens.csv
    echo "${admin}" > admin.token
    kubeconfig admin "${admin}"
    kubeconfig controller-manager "${cm}"
    kubeconfig scheduler "${sched}"
    kubeconfig kubelet "${kubelet}"
    chmod 600 ./*
    chmod 644 ca.crt admin.kubeconfig  # the tests may run as another user
    cd - > /dev/null
}

pause_image() {  # sets PAUSE_IMAGE: the pod sandbox image, build/pause's static binary alone
    local host
    host="$(docker_host)"
    PAUSE_IMAGE="workbench-k8s-pause:$(sha256sum "${BIN}/pause" | cut -c1-12)"
    if ! DOCKER_HOST="${host}" docker image inspect "${PAUSE_IMAGE}" > /dev/null 2>&1; then
        log "importing ${PAUSE_IMAGE}"
        tar -C "${BIN}" -cf - pause | DOCKER_HOST="${host}" docker import \
            --change 'ENTRYPOINT ["/pause"]' - "${PAUSE_IMAGE}" > /dev/null
    fi
}

kubectl_admin() { kubectl --kubeconfig "${RUN_DIR}/pki/admin.kubeconfig" "$@"; }

node_ready() {
    [ "$(kubectl_admin get node "${NODE_NAME}" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2> /dev/null)" = True ]
}

node_ip() {  # sets NODE_IP
    if ! ip link show "${NODE_LINK}" > /dev/null 2>&1; then
        ip link add "${NODE_LINK}" type dummy 2> /dev/null \
            || ip link add "${NODE_LINK}" type veth peer name "${NODE_LINK}p" \
            || die "cannot make an interface for the node's address (no dummy or veth links)"
        ip link show "${NODE_LINK}p" > /dev/null 2>&1 && ip link set "${NODE_LINK}p" up
        ip addr add "${NODE_LINK_IP}/32" dev "${NODE_LINK}"
        ip link set "${NODE_LINK}" up
    fi
    NODE_IP="${NODE_LINK_IP}"
    log "the node's address: ${NODE_IP}"
}

start_cluster() {
    local pki="${RUN_DIR}/pki" host
    host="$(docker_host)"
    [ -n "${host}" ] || die "no private dockerd: run .ci/docker-setup.sh first (/tmp/workbench-docker.env)"
    DOCKER_HOST="${host}" docker version > /dev/null 2>&1 || die "the dockerd at ${host} does not answer"
    stop_cluster
    rm -rf "${RUN_DIR}/etcd" "${STATE_DIR}/kubelet"
    mkdir -p "${RUN_DIR}" "${STATE_DIR}/kubelet"
    node_ip
    make_pki
    pause_image

    log "starting etcd ($("${BIN}/etcd" --version | head -n 1))"
    spawn etcd "${BIN}/etcd" --name workbench --data-dir "${RUN_DIR}/etcd" \
        --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
        --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
        --initial-cluster "workbench=http://127.0.0.1:$((ETCD_PORT + 1))" --log-level warn
    wait_for etcd 30 curl -sf "http://127.0.0.1:${ETCD_PORT}/health" -o /dev/null

    log "starting kube-apiserver ${K8S_VERSION} on https://127.0.0.1:${PORT}"
    spawn kube-apiserver "${BIN}/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:${ETCD_PORT}" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${PORT}" \
        --tls-cert-file "${pki}/apiserver.crt" --tls-private-key-file "${pki}/apiserver.key" \
        --client-ca-file "${pki}/ca.crt" --token-auth-file "${pki}/tokens.csv" \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --service-account-key-file "${pki}/sa.pub" --service-account-signing-key-file "${pki}/sa.key" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
        --kubelet-client-certificate "${pki}/apiserver-kubelet-client.crt" \
        --kubelet-client-key "${pki}/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "${pki}/ca.crt" \
        --kubelet-preferred-address-types InternalIP \
        --allow-privileged=true --v 1
    wait_for kube-apiserver 120 admin_ok

    log "starting kube-controller-manager and kube-scheduler"
    spawn kube-controller-manager "${BIN}/kube-controller-manager" \
        --kubeconfig "${pki}/controller-manager.kubeconfig" --leader-elect=false \
        --use-service-account-credentials --service-account-private-key-file "${pki}/sa.key" \
        --root-ca-file "${pki}/ca.crt" --port 0 --secure-port 0 --v 1
    spawn kube-scheduler "${BIN}/kube-scheduler" \
        --kubeconfig "${pki}/scheduler.kubeconfig" --leader-elect=false --port 0 --secure-port 0 --v 1

    log "starting the kubelet (node ${NODE_NAME}, dockershim on ${host})"
    spawn kubelet "${BIN}/kubelet" \
        --kubeconfig "${pki}/kubelet.kubeconfig" --hostname-override "${NODE_NAME}" --node-ip "${NODE_IP}" \
        --root-dir "${STATE_DIR}/kubelet" --cert-dir "${STATE_DIR}/kubelet/pki" \
        --tls-cert-file "${pki}/kubelet.crt" --tls-private-key-file "${pki}/kubelet.key" \
        --client-ca-file "${pki}/ca.crt" --anonymous-auth=false --authorization-mode AlwaysAllow \
        --address "${NODE_IP}" --port "${KUBELET_PORT}" \
        --healthz-bind-address 127.0.0.1 --healthz-port "${KUBELET_HEALTHZ_PORT}" \
        --read-only-port 0 \
        --container-runtime docker --docker-endpoint "${host}" \
        --pod-infra-container-image "${PAUSE_IMAGE}" \
        --cgroup-driver cgroupfs --cgroups-per-qos=false --enforce-node-allocatable "" \
        --fail-swap-on=false --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
        --eviction-hard "memory.available<50Mi,nodefs.available<1%,imagefs.available<1%" \
        --cluster-domain cluster.local --resolv-conf /etc/resolv.conf \
        --volume-plugin-dir "${STATE_DIR}/kubelet/volume-plugins" --v 1
    wait_for kubelet 120 node_ready
}

install_crds() {  # the custom resources the exports write (tests/k8s_live/_crds.py)
    log "installing CRDs (Gateway API, Argo Rollouts, KServe)"
    local crds="${RUN_DIR}/crds.yaml"
    (cd "${ROOT}" && uv run --frozen --extra cpu --extra notebook --extra dev python -m tests.k8s_live._crds) \
        > "${crds}"
    # server-side: a client-side apply's last-applied annotation could not hold these schemas
    kubectl_admin apply --server-side --force-conflicts -f "${crds}" > /dev/null
    # A CRD just created may have no conditions yet, which `kubectl wait` reports as an
    # error rather than waiting on: ask again until all are Established (60 s at most).
    local tries=0
    until kubectl_admin wait --for condition=Established --timeout 60s crd --all > /dev/null 2>&1; do
        tries=$((tries + 1))
        [ "${tries}" -lt 30 ] || die "the CRDs were not Established within 60 s"
        sleep 2
    done
}

main() {
    case "${1:-}" in
        --stop) stop_cluster; return ;;
        --build | --restart | "") ;;
        *) die "unknown option ${1} (use --build, --restart or --stop)" ;;
    esac
    [ "$(id -u)" = 0 ] || die "needs root (it runs a kubelet)"
    command -v kubectl > /dev/null || die "kubectl is not installed (apt-get install kubernetes-client)"
    local started=${SECONDS}
    mkdir -p "${CACHE}"
    exec 9> "${CACHE}/setup.lock"
    flock --timeout 1800 9 || die "another k8s-setup holds ${CACHE}/setup.lock"
    build
    [ "${1:-}" = --build ] && return
    if cluster_up && { [ "$(cat "${RUN_DIR}/bin" 2> /dev/null)" = "${BIN}" ] || [ "${1:-}" != --restart ]; }; then
        log "reusing the cluster at https://127.0.0.1:${PORT} ($(cat "${RUN_DIR}/bin" 2> /dev/null))"
        if [ "$(cat "${RUN_DIR}/bin" 2> /dev/null)" != "${BIN}" ]; then
            log "warning: it runs another build than this checkout's ${BIN}; --restart to switch"
        fi
    else
        start_cluster
        echo "${BIN}" > "${RUN_DIR}/bin"
        install_crds
    fi
    log "ready in $((SECONDS - started)) s"
    echo "export KUBECONFIG=${RUN_DIR}/pki/admin.kubeconfig"
    echo "export WORKBENCH_TEST_KUBECONFIG=${RUN_DIR}/pki/admin.kubeconfig"
    echo "export WORKBENCH_TEST_K8S_NODE=${NODE_NAME}"
    echo "export WORKBENCH_TEST_K8S_NODE_KIND=kubelet"
}

main "$@"; exit  # (one line: bash reads no further, even if this file changes meanwhile)
