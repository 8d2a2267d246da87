#!/usr/bin/env bash
# Smoke test of the workbench's Kubernetes backend on a real cluster.
#
# It cannot run where the workbench is built (no API server there); run it with a kube
# context of your own. It changes that cluster: it makes objects named after --name in
# --namespace and deletes them at the end (also on Ctrl-C).
#
#   1. server-side dry run of the exported manifests (kubectl apply --dry-run=server -k)
#   2. a blue/green switch under load: the workbench runs in a driver pod of the cluster
#      (in-cluster credentials, a Role limited to the namespace) and does
#      create -> update -> promote; a bounded load loop counts failed requests and the
#      switch is timed
#   3. a rollback under the same load, timed
#   and prints what it measured.
#
# A cluster without a pod network, kube-proxy or cluster DNS (bare metal, edge, the CI
# machine's .ci/k8s-setup.sh: Kubernetes 1.20, one kubelet) runs steps 2-3 with
# --host-network: the serving pods bind their ports on the node's address, the model
# repository is a directory on the node (--models-path), and the workbench runs here
# (this kubeconfig) with its own nginx router routing to the node; the load goes through
# that router. On the CI machine's cluster:
#   PYTHON=.venv/bin/python bash bench/k8s_smoke.sh --kubeconfig /run/workbench-k8s/pki/admin.kubeconfig \
#       --context workbench --image workbench-test:latest --host-network \
#       --models-path "$(pwd)/.cache/demo-repo-…" --cpu-request 100m
# (--dry-run-only: step 1 alone.)
#
# The load loop goes through `kubectl port-forward` to the Gateway's Service when
# --gateway-service is given (the Gateway follows the HTTPRoute, so it sees the switch).
# Without it, the loop runs inside the driver pod against the stable Service: a
# port-forward to a Service pins one pod when it starts, so it could not see a
# selector flip.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/k8s_smoke.sh --context CONTEXT --image IMAGE --pvc CLAIM [options]

  --context CONTEXT        kube context to use (required: nothing runs without it)
  --kubeconfig FILE        the kubeconfig holding CONTEXT [$KUBECONFIG or ~/.kube/config]
  --namespace NS           namespace to work in [workbench-smoke]
  --image IMAGE            the workbench image with the k8s extra (the default build),
                           pullable by the cluster (required)
  --pvc CLAIM              PersistentVolumeClaim holding the model repository (required
                           unless --dry-run-only), e.g. filled with `workbench models demo`
  --model MODEL            model to deploy [digits]
  --from VERSION           version for blue [1.0.0]
  --to VERSION             version for green [1.1.0]
  --name NAME              deployment name [smoke]
  --gateway NAME           Gateway the HTTPRoute attaches to (optional)
  --gateway-service NS/SVC the Gateway's Service: load goes through port-forward to it
  --requests N             requests per phase of the load loop, at least [2000]
  --export-dir DIR         a kustomize directory to dry-run instead of exporting one
  --keep                   leave the objects in the cluster
  --dry-run-only           step 1 only
  --host-network           steps 2-3 from here on a cluster without a pod network: pods
                           on the node's network, the workbench's nginx router here
  --models-path DIR        the model repository on the node (with --host-network)
  --port P                 the colours' ports on the node: blue P, green P+1 [8000]
  --cpu-request Q          CPU request of each serving pod [the backend's: 1]
  -h, --help               this text

environment: WORKBENCH (the local workbench command [workbench]), PYTHON (a Python with
httpx, and the workbench for --host-network [python3])
EOF
}

die() { echo "k8s_smoke: $*" >&2; exit 2; }

CONTEXT="" NAMESPACE="workbench-smoke" IMAGE="" PVC="" MODEL="digits" FROM="1.0.0" TO="1.1.0"
NAME="smoke" GATEWAY="" GATEWAY_SERVICE="" REQUESTS=2000 EXPORT_DIR="" KEEP=0 DRY_RUN_ONLY=0
HOST_NETWORK=0 MODELS_PATH="" PORT=8000 CPU_REQUEST=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --context) CONTEXT="${2:?--context needs a value}"; shift 2 ;;
        --namespace) NAMESPACE="${2:?--namespace needs a value}"; shift 2 ;;
        --image) IMAGE="${2:?--image needs a value}"; shift 2 ;;
        --pvc) PVC="${2:?--pvc needs a value}"; shift 2 ;;
        --model) MODEL="${2:?--model needs a value}"; shift 2 ;;
        --from) FROM="${2:?--from needs a value}"; shift 2 ;;
        --to) TO="${2:?--to needs a value}"; shift 2 ;;
        --name) NAME="${2:?--name needs a value}"; shift 2 ;;
        --gateway) GATEWAY="${2:?--gateway needs a value}"; shift 2 ;;
        --gateway-service) GATEWAY_SERVICE="${2:?--gateway-service needs a value}"; shift 2 ;;
        --requests) REQUESTS="${2:?--requests needs a value}"; shift 2 ;;
        --export-dir) EXPORT_DIR="${2:?--export-dir needs a value}"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --dry-run-only) DRY_RUN_ONLY=1; shift ;;
        --host-network) HOST_NETWORK=1; shift ;;
        --models-path) MODELS_PATH="${2:?--models-path needs a value}"; shift 2 ;;
        --port) PORT="${2:?--port needs a value}"; shift 2 ;;
        --cpu-request) CPU_REQUEST="${2:?--cpu-request needs a value}"; shift 2 ;;
        --kubeconfig) export KUBECONFIG="${2:?--kubeconfig needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ -n "$CONTEXT" ]] || die "refusing to run without --context: this script changes a real cluster"
[[ -n "$IMAGE" ]] || die "--image is required (the workbench image, pullable by the cluster)"
if [[ "$DRY_RUN_ONLY" == 1 || "$HOST_NETWORK" == 1 ]]; then
    PVC="${PVC:-workbench-models}"  # named by the exported pods; the dry run needs no claim
fi
if [[ "$HOST_NETWORK" == 1 && "$DRY_RUN_ONLY" == 0 ]]; then
    [[ "$MODELS_PATH" == /* && -d "$MODELS_PATH/$MODEL" ]] \
        || die "--host-network needs --models-path: an absolute directory holding $MODEL"
    [[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1 && "$PORT" -le 65534 ]] || die "--port must be a number in 1..65534"
fi
[[ -n "$PVC" ]] || die "--pvc is required (a PersistentVolumeClaim holding the model repository)"
[[ "$REQUESTS" =~ ^[0-9]+$ && "$REQUESTS" -ge 1 && "$REQUESTS" -le 100000 ]] \
    || die "--requests must be a number in 1..100000"
[[ "$NAME" =~ ^[a-z][a-z0-9-]{0,39}$ ]] || die "--name must be a DNS label (lowercase, digits, '-')"
if [[ -n "$GATEWAY_SERVICE" && "$GATEWAY_SERVICE" != */* ]]; then
    die "--gateway-service must be NAMESPACE/SERVICE"
fi
command -v kubectl >/dev/null || die "kubectl is not installed"

K=(kubectl --context "$CONTEXT" --namespace "$NAMESPACE")
kubectl config get-contexts "$CONTEXT" >/dev/null 2>&1 || die "no kube context named $CONTEXT"
kubectl --context "$CONTEXT" version >/dev/null 2>&1 || die "the API server of $CONTEXT does not answer"
SERVER_VERSION="$(kubectl --context "$CONTEXT" get --raw /version 2>/dev/null \
    | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n 1)"

DRIVER="wb-$NAME-driver"
WORK="$(mktemp -d)"
PF_PID=""
cleanup() {
    [[ -n "$PF_PID" ]] && kill "$PF_PID" 2>/dev/null || true
    if [[ "$KEEP" == 0 ]]; then
        "${K[@]}" exec "$DRIVER" -- workbench deploy delete "$NAME" --yes --force >/dev/null 2>&1 || true
        "${K[@]}" delete pod "$DRIVER" --ignore-not-found --wait=false >/dev/null 2>&1 || true
        "${K[@]}" delete rolebinding,role,serviceaccount "$DRIVER" --ignore-not-found >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) $1" | awk '{printf "%.2f", $1 - $2}'; }

kubectl --context "$CONTEXT" create namespace "$NAMESPACE" --dry-run=client -o yaml \
    | kubectl --context "$CONTEXT" apply -f - >/dev/null

# -- 1. server-side dry run of the export ----------------------------------------------
if [[ -z "$EXPORT_DIR" ]]; then
    EXPORT_DIR="$WORK/export"
    export_args=(deploy export "$NAME" --format k8s --out "$EXPORT_DIR" --model "$MODEL"
                 --version "$FROM" --candidate "$TO" --image "$IMAGE" --pvc "$PVC"
                 --namespace "$NAMESPACE")
    # the API versions the server's release serves (autoscaling/v2beta2, policy/v1beta1 on 1.20)
    RELEASE="$(sed -n 's/^v\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' <<<"$SERVER_VERSION")"
    [[ -n "$RELEASE" ]] && export_args+=(--kube-version "$RELEASE")
    if [[ -n "$GATEWAY" ]]; then
        export_args+=(--router gateway --gateway "$GATEWAY")
    else
        export_args+=(--router service)
    fi
    ${WORKBENCH:-workbench} "${export_args[@]}" >/dev/null
fi
t0=$(now)
if dry=$(kubectl --context "$CONTEXT" apply --dry-run=server -k "$EXPORT_DIR" 2>&1); then
    DRY="ok ($(grep -c . <<<"$dry") objects, $(since "$t0") s)"
else
    DRY="FAILED"
    echo "$dry" >&2
fi
echo "server:   ${SERVER_VERSION:-unknown} ($CONTEXT)"
echo "dry run (server): $DRY"
# what the export names that the server does not serve (discovery), e.g. autoscaling/v2 on 1.20
UNSERVED="$(grep -rh '^apiVersion:' "$EXPORT_DIR" | awk '{print $2}' | sort -u \
    | grep -v '^kustomize.config.k8s.io/' \
    | grep -vxF -f <(kubectl --context "$CONTEXT" api-versions) | paste -sd' ' || true)"
[[ -n "$UNSERVED" ]] && echo "not served by the server: $UNSERVED"
if [[ "$DRY_RUN_ONLY" == 1 ]]; then
    [[ "$DRY" == FAILED ]] && exit 1
    exit 0
fi

# -- 2-3 on the host network: the workbench here, its nginx routing to the node ---------
if [[ "$HOST_NETWORK" == 1 ]]; then
    HOST_PY='
import json, os, sys, tempfile, threading, time, httpx
from pathlib import Path
from workbench.deploy.manager import DeploymentManager
a = json.loads(sys.argv[1])
options = {"namespace": a["namespace"], "image": a["image"], "host_network": "true",
           "models_path": a["models"], "port": a["port"], "scale_down_delay": "30", "context": a["context"]}
if os.environ.get("KUBECONFIG"):
    options["kubeconfig"] = os.environ["KUBECONFIG"]
if a["cpu"]:
    options["cpu_request"] = a["cpu"]
if a["gateway"]:
    options["gateway"] = a["gateway"]
home = Path(tempfile.mkdtemp(prefix="wbsmoke-"))
manager = DeploymentManager(home, repo=a["models"])
body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
def phase(label, url, act, new):
    answers, n, done = [], int(a["requests"]), threading.Event()
    def run():  # at least n requests, and 20 more after the verb has returned
        after = 0
        with httpx.Client(timeout=5.0) as client:
            while len(answers) < n or after < 20:
                after += done.is_set()
                t = time.monotonic()
                try:
                    r = client.post(url, json=body)
                    answers.append((t, r.status_code, r.headers.get("x-model-version", "?")))
                except httpx.HTTPError:
                    answers.append((t, 0, "-"))
    thread = threading.Thread(target=run); thread.start(); time.sleep(1)
    t0 = time.monotonic()
    try:
        act()
    finally:
        done.set()
    took = time.monotonic() - t0
    thread.join()
    ok = sum(1 for _, s, _ in answers if s == 200); failed = len(answers) - ok
    moved = next((t - t0 for t, s, v in answers if t >= t0 and s == 200 and v == new), None)
    versions = {}
    for _, s, v in answers:
        if s == 200: versions[v] = versions.get(v, 0) + 1
    after = "never" if moved is None else f"{moved:.2f} s"
    print(f"{label:<9} {took:8.2f} s  {ok:6d} ok  {failed:4d} failed  answered by "
          + ",".join(f"{k}:{v}" for k, v in sorted(versions.items())) + f"; first {new} answer after {after}")
    return failed
model, old, new, count = a["model"], a["from"], a["to"], a["requests"]
t0 = time.monotonic()
web = manager.create(a["name"], model, old, backend="kubernetes", backend_options=options, timeout=600)
print(f"create:   {time.monotonic() - t0:.2f} s (blue {model} {old} ready, pods on the host network, router {web.url})")
failed = 0
try:
    t0 = time.monotonic(); web.update(new, timeout=600)
    print(f"update:   {time.monotonic() - t0:.2f} s (green {new} ready and verified)")
    url = f"{web.url}/v2/models/{model}/infer"
    failed += phase("promote", url, lambda: web.promote("smoke"), new)
    failed += phase("rollback", url, lambda: web.rollback("smoke"), old)
finally:
    if not a["keep"]:
        manager.delete(a["name"])
print(f"(switch and rollback: wall time of the verb; the load ran at least {count} requests across each)")
sys.exit(1 if failed else 0)
'
    ARGS=$(printf '{"namespace":"%s","image":"%s","models":"%s","port":"%s","context":"%s","cpu":"%s","gateway":"%s","name":"%s","model":"%s","from":"%s","to":"%s","requests":"%s","keep":%s}' \
        "$NAMESPACE" "$IMAGE" "$MODELS_PATH" "$PORT" "$CONTEXT" "$CPU_REQUEST" "$GATEWAY" "$NAME" "$MODEL" \
        "$FROM" "$TO" "$REQUESTS" "$([[ $KEEP == 1 ]] && echo true || echo false)")
    KEEP=1  # the driver deletes what it made; there is no driver pod
    ${PYTHON:-python3} -c "$HOST_PY" "$ARGS"
    exit $?
fi

# -- 2. the driver pod: the workbench inside the cluster ---------------------------------
"${K[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: $DRIVER}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: $DRIVER}
rules:
  - apiGroups: [""]
    resources: [services, configmaps, secrets, pods, pods/log, events]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, list, create, update, patch, delete]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [httproutes]
    verbs: [get, list, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: $DRIVER}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: $DRIVER}
subjects: [{kind: ServiceAccount, name: $DRIVER}]
---
apiVersion: v1
kind: Pod
metadata: {name: $DRIVER, labels: {app.kubernetes.io/managed-by: workbench}}
spec:
  serviceAccountName: $DRIVER
  restartPolicy: Never
  containers:
    - name: driver
      image: $IMAGE
      command: [sleep, "3600"]
      env:
        - {name: WORKBENCH_STATE, value: kubernetes}
        - {name: WORKBENCH_REPO, value: /models}
      volumeMounts: [{name: models, mountPath: /models, readOnly: true}]
  volumes: [{name: models, persistentVolumeClaim: {claimName: $PVC, readOnly: true}}]
EOF
"${K[@]}" wait --for=condition=Ready "pod/$DRIVER" --timeout=300s >/dev/null
wb() { "${K[@]}" exec "$DRIVER" -- workbench "$@"; }

create_args=(deploy create "$NAME" --backend kubernetes --namespace "$NAMESPACE" --model "$MODEL"
             --version "$FROM" --image "$IMAGE" --pvc "$PVC" --scale-down-delay 30)
[[ -n "$GATEWAY" ]] && create_args+=(--gateway "$GATEWAY")
t0=$(now); wb "${create_args[@]}" >/dev/null; CREATE_S=$(since "$t0")

# the load loop: REQUESTS requests, each with a 5 s timeout; prints "ok failed versions"
LOAD_PY='
import sys, httpx
url, n = sys.argv[1], int(sys.argv[2])
body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
ok = failed = 0; versions = {}
with httpx.Client(timeout=5.0) as client:
    for _ in range(n):
        try:
            r = client.post(url, json=body)
            if r.status_code == 200:
                ok += 1; v = r.headers.get("x-model-version", "?"); versions[v] = versions.get(v, 0) + 1
            else:
                failed += 1
        except httpx.HTTPError:
            failed += 1
print(ok, failed, ",".join(f"{k}:{v}" for k, v in sorted(versions.items())))
'
if [[ -n "$GATEWAY_SERVICE" ]]; then
    kubectl --context "$CONTEXT" --namespace "${GATEWAY_SERVICE%%/*}" port-forward \
        "svc/${GATEWAY_SERVICE#*/}" 18080:80 >"$WORK/pf.log" 2>&1 &
    PF_PID=$!
    sleep 3
    load() { "${PYTHON:-python3}" -c "$LOAD_PY" "http://127.0.0.1:18080/v2/models/$MODEL/infer" "$REQUESTS"; }
else
    load() { "${K[@]}" exec "$DRIVER" -- python -c "$LOAD_PY" \
        "http://$NAME.$NAMESPACE.svc:8000/v2/models/$MODEL/infer" "$REQUESTS"; }
fi

phase() {  # phase LABEL COMMAND...: the load loop while COMMAND runs; prints the figures
    local label="$1"; shift
    load >"$WORK/$label.load" &
    local load_pid=$!
    sleep 1
    local t0; t0=$(now)
    "$@" >/dev/null
    local took; took=$(since "$t0")
    wait "$load_pid"
    read -r ok failed versions <"$WORK/$label.load"
    printf '%-9s %8s s  %6d ok  %4d failed  answered by %s\n' "$label" "$took" "$ok" "$failed" "$versions"
}

echo "create:   $CREATE_S s (blue $MODEL $FROM ready)"
wb deploy update "$NAME" --version "$TO" >/dev/null
phase promote wb promote "$NAME"
phase rollback wb rollback "$NAME"
echo "(switch and rollback: wall time of the CLI verb; the load ran $REQUESTS requests across each)"
