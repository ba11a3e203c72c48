"""The Kubernetes manifests, rendered by kustomize and checked offline.

`kubectl kustomize` renders each overlay; every core object is validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors); the
custom resources against the required fields of their CRDs. Then what a platform team
reviews: hardened pods, probes and shutdown, NetworkPolicies (evaluated, not just read),
and that every setting, port, path and model version the manifests name exists in the code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import redis
import yaml

from service.config import ROOT, Settings
from service.keys import KeyFile
from service.model_store import is_complete
from service.queue import RequestQueue
from service.redis_acl import PLACEHOLDER_HASH, ROLES, acl_file
from tests.helpers import gunicorn_graceful_timeout, settings_of

OVERLAYS = ("cpu", "gpu", "one-pool")
# The oldest Kubernetes release the manifests are meant for, and the newest schema at hand.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "sentiment"
BASE = ROOT / "k8s" / "base"
RULES_FILE = ROOT / "docker" / "prometheus" / "rules.yml"
SECRET_EXAMPLE = BASE / "secret.example.yaml"
MODEL_LOAD_S = 60  # a worker's model load and warm-up take up to about this long
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")

# Required and accepted keys of the custom resources, from the openAPIV3Schema of their CRDs, read
# at the source: kedacore/keda config/crd/bases/keda.sh_{scaledobjects,triggerauthentications}.yaml
# (commit 8b4f083, 2026-08-20) and prometheus-operator/prometheus-operator
# example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors,prometheusrules}.yaml
# (commit 6adcebc, 2026-08-08). A path ending in [] applies to every item of that list.
_SCRAPE_ENDPOINT = {
    "authorization", "basicAuth", "bearerTokenSecret", "enableHttp2", "filterRunning", "followRedirects", "honorLabels",
    "honorTimestamps", "interval", "metricRelabelings", "noProxy", "oauth2", "params", "path", "port", "proxyConnectHeader",
    "proxyFromEnvironment", "proxyUrl", "relabelings", "scheme", "scrapeTimeout", "targetPort", "tlsConfig", "trackTimestampsStaleness",
}  # fmt: skip
_MONITOR_SPEC = {
    "attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB", "fallbackScrapeProtocol", "jobLabel", "keepDroppedTargets",
    "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "namespaceSelector", "nativeHistogramBucketLimit",
    "nativeHistogramMinBucketFactor", "podTargetLabels", "sampleLimit", "scrapeClass", "scrapeClassicHistograms", "scrapeNativeHistograms",
    "scrapeProtocols", "selector", "selectorMechanism", "targetLimit",
}  # fmt: skip
_SCALED_OBJECT_SPEC = {
    "advanced", "cooldownPeriod", "fallback", "idleReplicaCount", "initialCooldownPeriod", "maxReplicaCount", "minReplicaCount",
    "pollingInterval", "scaleTargetRef", "triggers",
}  # fmt: skip
_RELABELING = {"action", "modulus", "regex", "replacement", "separator", "sourceLabels", "targetLabel"}
CUSTOM_RESOURCES: dict[str, dict[str, tuple[set[str], set[str]]]] = {
    "keda.sh/v1alpha1/ScaledObject": {
        "spec": ({"scaleTargetRef", "triggers"}, _SCALED_OBJECT_SPEC),
        "spec.scaleTargetRef": ({"name"}, {"apiVersion", "envSourceContainerName", "kind", "name"}),
        "spec.advanced": (set(), {"horizontalPodAutoscalerConfig", "restoreToOriginalReplicaCount", "scalingModifiers"}),
        "spec.triggers[]": ({"metadata", "type"}, {"authenticationRef", "metadata", "metricType", "name", "type", "useCachedMetrics"}),
        "spec.triggers[].authenticationRef": ({"name"}, {"kind", "name"}),
    },
    "keda.sh/v1alpha1/TriggerAuthentication": {
        "spec.secretTargetRef[]": ({"key", "name", "parameter"}, {"key", "name", "parameter"}),
    },
    "monitoring.coreos.com/v1/ServiceMonitor": {
        "spec": ({"endpoints", "selector"}, (_MONITOR_SPEC - {"podTargetLabels"}) | {"endpoints", "serviceDiscoveryRole", "targetLabels"}),
        "spec.endpoints[]": (set(), _SCRAPE_ENDPOINT | {"bearerTokenFile"}),
        "spec.endpoints[].relabelings[]": (set(), _RELABELING),
    },
    "monitoring.coreos.com/v1/PodMonitor": {
        "spec": ({"selector"}, _MONITOR_SPEC | {"podMetricsEndpoints"}),
        "spec.podMetricsEndpoints[]": (set(), _SCRAPE_ENDPOINT | {"portNumber"}),
        "spec.podMetricsEndpoints[].relabelings[]": (set(), _RELABELING),
    },
    "monitoring.coreos.com/v1/PrometheusRule": {
        "spec": (set(), {"groups"}),
        "spec.groups[]": ({"name"}, {"interval", "labels", "limit", "name", "partial_response_strategy", "query_offset", "rules"}),
        "spec.groups[].rules[]": ({"expr"}, {"alert", "annotations", "expr", "for", "keep_firing_for", "labels", "record"}),
    },
}
RELABEL_ACTIONS = {
    "replace",
    "keep",
    "drop",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
    "keepequal",
    "dropequal",
}


# --- rendering and reading the rendered objects ------------------------------------------------------

_rendered: dict[str, list[dict]] = {}


def kubectl() -> str:
    """kubectl with a kustomize of v5 or later (Kubernetes 1.27+), or the test is skipped."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered (kubectl kustomize)")
    done = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
    kustomize = json.loads(done.stdout or "{}").get("kustomizeVersion", "")
    if not re.match(r"v([5-9]|\d\d)\.", kustomize):
        pytest.skip(f"kubectl's kustomize is {kustomize or 'unknown'}: rendering these overlays needs v5 or later (kubectl 1.27+)")
    return path


def render(overlay: str) -> list[dict]:
    if overlay not in _rendered:
        command = [kubectl(), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        _rendered[overlay] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return _rendered[overlay]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> list[dict]:
    return render(request.param)


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def by_component(objects: list[dict], component: str) -> dict:
    (found,) = [w for w in workloads(objects) if w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return found


def container(workload: dict) -> dict:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def secret_examples() -> dict[str, dict[str, str]]:
    """The Secrets of secret.example.yaml: name -> stringData."""
    documents = yaml.safe_load_all(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    return {doc["metadata"]["name"]: doc["stringData"] for doc in documents if doc and doc["kind"] == "Secret"}


def secret_example(name: str = "sentiment-redis") -> dict[str, str]:
    return secret_examples()[name]


def environment(objects: list[dict], workload: dict) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom, then env (Secrets from secret.example.yaml)."""
    env: dict[str, str] = {}
    spec = container(workload)
    for source in spec.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"unexpected envFrom {source}"
        env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference["name"] == "sentiment-redis", f"{variable['name']} comes from an unknown Secret"
            env[variable["name"]] = secret_example()[reference["key"]]
    return env


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    assert set(selector) <= {"matchLabels", "matchExpressions"}, f"unsupported selector {selector}"
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        holds = {
            "In": key in labels and labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not holds:
            return False
    return True


def routes(redis_url: str) -> set[str]:
    """The URL rules of the real app, built by ``create_app`` in a fresh interpreter (it starts a
    listener thread and configures logging: nothing of that should leak into the test process)."""
    code = (
        "import json, sys\n"
        "from service.api.app import create_app\n"
        "from service.config import Settings\n"
        "app = create_app(Settings(redis_url=sys.argv[1], log_level='WARNING'))\n"
        "print(json.dumps(sorted(rule.rule for rule in app.url_map.iter_rules())))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, redis_url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def app_routes(module_redis) -> set[str]:
    return routes(module_redis.url)


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(objects, version):
    custom = set()
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            custom.add(f"{obj['apiVersion']}/{obj['kind']}")
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
    assert custom == set(CUSTOM_RESOURCES), "every object without a core schema is a custom resource checked below"


def test_strict_validation_catches_an_unknown_field():
    """The validation above can fail: a misspelt field is an error, not ignored."""
    deployment = json.loads(json.dumps(one(render("cpu"), "Deployment", "sentiment-api")))
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def walk(node, path: list[str], where: str = ""):
    """(where, node) for every node at ``path`` ("[]" enters every item of a list)."""
    if not path:
        yield where, node
        return
    head, rest = path[0], path[1:]
    if head.endswith("[]"):
        for index, item in enumerate(node.get(head[:-2], []) if isinstance(node, dict) else []):
            yield from walk(item, rest, f"{where}.{head[:-2]}[{index}]")
    elif isinstance(node, dict) and head in node:
        yield from walk(node[head], rest, f"{where}.{head}")


def test_custom_resources_have_the_fields_their_crds_require(objects):
    for obj in objects:
        kind = f"{obj['apiVersion']}/{obj['kind']}"
        if kind not in CUSTOM_RESOURCES:
            continue
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"} and obj["metadata"]["namespace"] == NAMESPACE
        for path, (required, accepted) in CUSTOM_RESOURCES[kind].items():
            for where, node in walk(obj, path.split(".")):
                name = f"{obj['kind']}/{obj['metadata']['name']}{where}"
                assert isinstance(node, dict), f"{name} is not an object"
                assert required <= set(node), f"{name} lacks {required - set(node)}"
                assert set(node) <= accepted, f"{name}: unknown fields {set(node) - accepted}"
    for scaled in of_kind(objects, "ScaledObject"):
        spec = scaled["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] and spec["pollingInterval"] >= 1
        for trigger in spec["triggers"]:
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), "trigger metadata values are strings"
    for monitor in of_kind(objects, "ServiceMonitor") + of_kind(objects, "PodMonitor"):
        for endpoint in monitor["spec"].get("endpoints", []) + monitor["spec"].get("podMetricsEndpoints", []):
            assert all(DURATION.match(endpoint[k]) for k in ("interval", "scrapeTimeout") if k in endpoint)
            assert all(r.get("action", "replace").lower() in RELABEL_ACTIONS for r in endpoint.get("relabelings", []))
    for rule_set in of_kind(objects, "PrometheusRule"):
        for group in rule_set["spec"]["groups"]:
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule), f"{rule}: exactly one of alert and record"
                assert "annotations" not in rule or "alert" in rule
                assert all(isinstance(v, str) for k in ("labels", "annotations") for v in rule.get(k, {}).values())
                assert all(DURATION.match(rule[k]) for k in ("for", "keep_firing_for") if k in rule)


def test_the_prometheusrule_carries_the_compose_rules_unchanged(objects):
    (rule_set,) = of_kind(objects, "PrometheusRule")
    assert rule_set["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]


def test_the_generated_prometheusrule_is_up_to_date():
    """Needs no kubectl: the generator's own check, and the same groups read back from its output."""
    done = subprocess.run([sys.executable, str(ROOT / "k8s" / "generate_prometheusrule.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    generated = yaml.safe_load((BASE / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert generated["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]


def test_monitors_scrape_the_roles_under_the_job_names_the_rules_use(objects):
    jobs_in_rules = set(re.findall(r'job="([^"]+)"', RULES_FILE.read_text(encoding="utf-8")))
    scrape_config = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    compose_jobs = {job["job_name"] for job in scrape_config["scrape_configs"]}
    (service_monitor,) = of_kind(objects, "ServiceMonitor")
    (pod_monitor,) = of_kind(objects, "PodMonitor")
    job_of = {}
    for monitor, endpoints in ((service_monitor, "endpoints"), (pod_monitor, "podMetricsEndpoints")):
        (endpoint,) = monitor["spec"][endpoints]
        (job,) = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
        job_of[monitor["kind"]] = job
    assert set(job_of.values()) >= jobs_in_rules and set(job_of.values()) <= compose_jobs
    # The ServiceMonitor finds the API's Service, on a named port of that Service.
    (api_service,) = [s for s in of_kind(objects, "Service") if selects(service_monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert service_monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in api_service["spec"]["ports"]}
    assert job_of["ServiceMonitor"] == "sentiment-api" and job_of["PodMonitor"] == "sentiment-worker"
    # The PodMonitor finds the worker pods (of every model version), on their metrics port.
    worker = by_component(objects, "worker")
    assert selects(pod_monitor["spec"]["selector"], worker["spec"]["template"]["metadata"]["labels"])
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in container(worker)["ports"]}


# --- pods -----------------------------------------------------------------------------------------


def test_every_pod_is_hardened_and_sized(objects):
    assert {w["metadata"]["name"] for w in workloads(objects)} >= {"sentiment-api", "redis"}
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"].get("runAsUser", 1) != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False, name
        assert any(c["topologyKey"] == "kubernetes.io/hostname" for c in pod["topologySpreadConstraints"]), name
        for spread in pod["topologySpreadConstraints"]:
            assert selects(spread["labelSelector"], workload["spec"]["template"]["metadata"]["labels"]), name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for spec in pod["containers"]:
            security = spec["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(spec["resources"][bound]), f"{name}: {bound}"
            assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+", spec["image"]) and not spec["image"].endswith(":latest"), spec["image"]
            # With a read-only root, every place a process writes is an emptyDir; what it only reads is configuration.
            for mount in spec.get("volumeMounts", []):
                volume = volumes[mount["name"]]
                if mount.get("readOnly"):
                    assert {"configMap", "secret"} & set(volume), f"{name} mounts {mount['name']} read-only, not configuration"
                else:
                    assert "emptyDir" in volume, f"{name} mounts {mount['name']}, which is not an emptyDir"
    for component in ("api", "worker"):
        mounts = {m["mountPath"] for m in container(by_component(objects, component)).get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{component}: prometheus-client, gunicorn and TensorFlow write to /tmp"


def test_the_namespace_enforces_the_restricted_pod_security_profile(objects):
    (namespace,) = of_kind(objects, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {NAMESPACE}


def test_workers_get_time_to_load_the_model_and_to_finish_a_batch(objects):
    worker = by_component(objects, "worker")
    spec = container(worker)
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2 * MODEL_LOAD_S
    assert startup["httpGet"]["port"] == spec["readinessProbe"]["httpGet"]["port"] == spec["livenessProbe"]["httpGet"]["port"]
    # The first SIGTERM lets the batch in hand (well under a few seconds) finish and be acknowledged.
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 10
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_api_pods_leave_the_endpoints_before_gunicorn_stops(objects):
    api = by_component(objects, "api")
    spec = container(api)
    pause = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep" and float(pause[1]) >= 3
    # preStop runs inside the grace period, then gunicorn lets requests in flight finish.
    assert api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > float(pause[1]) + gunicorn_graceful_timeout()


def redis_options(spec: dict) -> dict[str, str]:
    args = spec["args"]
    return {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}


def test_redis_is_an_acl_protected_bounded_memory_only_statefulset(objects):
    redis_set = one(objects, "StatefulSet", "redis")
    spec = container(redis_set)
    version = re.match(r"redis:(\d+)\.(\d+)", spec["image"])
    assert version and tuple(map(int, version.groups())) >= (6, 2), "Streams with XAUTOCLAIM need Redis >= 6.2"
    options = redis_options(spec)
    assert options["--save"] == "" and options["--appendonly"] == "no" and options["--maxmemory-policy"] == "noeviction"
    assert "--requirepass" not in options, "the ACL file's users, not a shared password"
    # The users come from the Secret sentiment-redis-acl, mounted read-only as a folder.
    acl = PurePosixPath(options["--aclfile"])
    (mount,) = [m for m in spec["volumeMounts"] if PurePosixPath(m["mountPath"]) == acl.parent]
    assert mount["readOnly"] and "subPath" not in mount
    volume = next(v for v in redis_set["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "sentiment-redis-acl"
    assert {item["path"]: item["key"] for item in volume["secret"]["items"]} == {acl.name: "users.acl"}
    assert "users.acl" in secret_example("sentiment-redis-acl")
    # The probe logs in as keda, the least of the users: the default user is off.
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in spec["env"]}
    assert env == {"REDISCLI_AUTH": {"name": "sentiment-redis", "key": "KEDA_REDIS_PASSWORD"}}
    assert spec["readinessProbe"]["exec"]["command"] == ["redis-cli", "--user", "keda", "-e", "ping"]
    # maxmemory below the container's limit, and requests = limits (memory) for the queue.
    megabytes = int(options["--maxmemory"].removesuffix("mb"))
    limit = spec["resources"]["limits"]["memory"]
    assert limit == spec["resources"]["requests"]["memory"] and megabytes * 2**20 < int(limit.removesuffix("Gi")) * 2**30
    assert redis_set["spec"]["replicas"] == 1 and one(objects, "Service", redis_set["spec"]["serviceName"])["spec"]["clusterIP"] == "None"


def test_gpu_overlay_runs_one_worker_per_gpu_on_gpu_nodes():
    cpu_worker, gpu_worker = (by_component(render(overlay), "worker") for overlay in ("cpu", "gpu"))
    assert "nvidia.com/gpu" not in json.dumps(cpu_worker) and "-gpu" not in container(cpu_worker)["image"]
    spec, pod = container(gpu_worker), gpu_worker["spec"]["template"]["spec"]
    assert str(spec["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert re.search(r"/sentiment-worker-gpu:", spec["image"])
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    # Everything else of the GPU variant is the CPU variant's.
    assert {(o["kind"], o["metadata"]["name"]) for o in render("gpu")} == {(o["kind"], o["metadata"]["name"]) for o in render("cpu")}


# --- network policies -----------------------------------------------------------------------------


@dataclass
class Pod:
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)


def policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or ["Ingress"] + (["Egress"] if "egress" in spec else [])


def peer_matches(peer: dict, policy_namespace: str, pod: Pod) -> bool:
    assert set(peer) <= {"podSelector", "namespaceSelector"}, f"this evaluator does not know {peer}: extend it"
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod.namespace}):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), pod.labels)


def port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        assert set(entry) <= {"port", "protocol"} and isinstance(entry.get("port", 0), int), f"this evaluator does not know {entry}"
        if entry.get("protocol", "TCP") == protocol and entry.get("port", port) == port:
            return True
    return False


def allowed(policies: list[dict], source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
    """NetworkPolicy semantics: a pod selected by no policy of a direction is open in that
    direction; otherwise some rule of some policy selecting it must allow the connection."""

    def side_allows(pod: Pod, other: Pod, direction: str) -> bool:
        rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        isolating = [
            p
            for p in policies
            if p["metadata"]["namespace"] == pod.namespace
            and direction in policy_types(p)
            and selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not isolating:
            return True
        return any(
            (not rule.get(peers_key) or any(peer_matches(peer, p["metadata"]["namespace"], other) for peer in rule[peers_key]))
            and port_matches(rule.get("ports"), port, protocol)
            for p in isolating
            for rule in p["spec"].get(rules_key, [])
        )

    return side_allows(source, destination, "Egress") and side_allows(destination, source, "Ingress")


def test_network_policies_let_through_only_what_the_service_needs(objects):
    policies = of_kind(objects, "NetworkPolicy")
    pods = {}
    for component in ("api", "worker", "redis"):
        workload = by_component(objects, component)
        pods[component] = Pod(
            NAMESPACE,
            workload["spec"]["template"]["metadata"]["labels"],
            {p["name"]: p["containerPort"] for p in container(workload)["ports"]},
        )
    api, worker, redis_pod = pods["api"], pods["worker"], pods["redis"]
    keda = Pod("keda", {"app.kubernetes.io/name": "keda-operator"})
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    dns = Pod("kube-system", {"k8s-app": "kube-dns"})
    client = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    stranger = Pod(NAMESPACE, {"app": "debug-shell"})  # any other pod someone starts in the namespace
    elsewhere = Pod("default", {"app": "anything"})
    redis_port, api_port, metrics_port = redis_pod.ports["redis"], api.ports["http"], worker.ports["metrics"]
    expectations = [
        (api, redis_pod, redis_port, True),
        (worker, redis_pod, redis_port, True),
        (keda, redis_pod, redis_port, True),  # KEDA's operator reads the stream's length
        (stranger, redis_pod, redis_port, False),
        (elsewhere, redis_pod, redis_port, False),
        (prometheus, redis_pod, redis_port, False),
        (client, api, api_port, True),
        (elsewhere, api, api_port, True),
        (prometheus, api, api_port, True),  # /metrics is on the API port
        (prometheus, worker, metrics_port, True),
        (elsewhere, worker, metrics_port, False),
        (api, worker, metrics_port, False),
        (api, elsewhere, 443, False),
        (worker, elsewhere, 443, False),
        (redis_pod, elsewhere, 443, False),
        (stranger, elsewhere, 443, False),
    ]
    for source, destination, port, expected in expectations:
        assert allowed(policies, source, destination, port) is expected, f"{source} -> {destination} :{port} should be {expected}"
    for pod in (api, worker, redis_pod, stranger):
        assert allowed(policies, pod, dns, 53, "UDP") and allowed(policies, pod, dns, 53, "TCP"), f"{pod} cannot resolve names"
    (deny_all,) = [p for p in policies if p["spec"]["podSelector"] == {} and set(policy_types(p)) == {"Ingress", "Egress"}]
    assert "ingress" not in deny_all["spec"] and "egress" not in deny_all["spec"]


# --- consistency with the code ----------------------------------------------------------------------


def test_settings_are_real_valid_and_logs_are_json(objects):
    for component in ("api", "worker"):
        env = environment(objects, by_component(objects, component))
        settings = settings_of(env)
        assert set(settings) <= set(Settings.model_fields), f"{component}: not settings: {set(settings) - set(Settings.model_fields)}"
        assert Settings(**settings).log_format == "json"
    config_map = one(objects, "ConfigMap", "sentiment-config")["data"]
    assert all(key.startswith("SENTIMENT_") or key == "KEDA_REDIS_ADDRESS" for key in config_map)
    assert "SENTIMENT_REDIS_URL" not in config_map, "the URL holds the password: it comes from the Secret"


def test_each_role_uses_its_own_redis_user_from_the_secret(objects):
    example = secret_example()
    assert set(example) == {"API_REDIS_URL", "WORKER_REDIS_URL", "KEDA_REDIS_USERNAME", "KEDA_REDIS_PASSWORD"}
    users = {}
    for workload in workloads(objects):
        component = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        if component not in ("api", "worker"):
            continue
        (url,) = [e for e in container(workload)["env"] if e["name"] == "SENTIMENT_REDIS_URL"]
        key = {"api": "API_REDIS_URL", "worker": "WORKER_REDIS_URL"}[component]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "sentiment-redis", "key": key}, workload["metadata"]["name"]
        parsed = urlsplit(environment(objects, workload)["SENTIMENT_REDIS_URL"])
        assert parsed.username == component and parsed.password, f"{workload['metadata']['name']} does not log in as {component}"
        users[component] = parsed.password
    # KEDA: its own user, both from the Secret; the ScaledObjects use that TriggerAuthentication.
    (auth,) = of_kind(objects, "TriggerAuthentication")
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password"} and all(ref["name"] == "sentiment-redis" for ref in refs.values())
    assert example[refs["username"]["key"]] == "keda"
    users["keda"] = example[refs["password"]["key"]]
    assert set(users) == {"api", "worker", "keda"} and len(set(users.values())) == 3, "one password per user"
    assert "default" not in users and all(urlsplit(example[k]).username for k in ("API_REDIS_URL", "WORKER_REDIS_URL"))
    for scaled in of_kind(objects, "ScaledObject"):
        assert all(t["authenticationRef"]["name"] == auth["metadata"]["name"] for t in scaled["spec"]["triggers"])
    # KEDA's address, the URLs' host and the Redis Service agree.
    (scaled, *_) = of_kind(objects, "ScaledObject")
    worker_env = environment(objects, by_component(objects, "worker"))
    address = worker_env[scaled["spec"]["triggers"][0]["metadata"]["addressFromEnv"]]
    assert all(f"@{address}/" in example[k] for k in ("API_REDIS_URL", "WORKER_REDIS_URL"))
    host, port = address.split(":")
    assert int(port) in {p["port"] for p in one(objects, "Service", host)["spec"]["ports"]}


def test_the_example_acl_file_is_the_command_lines_for_this_prefix_and_redis():
    """secret.example.yaml's users.acl is what ``python -m service.redis_acl --placeholder`` prints for the ConfigMap's
    prefix and the Redis image's version: the rules of service/redis_acl/, as they are today."""
    objects = render("cpu")
    prefix = one(objects, "ConfigMap", "sentiment-config")["data"]["SENTIMENT_REDIS_KEY_PREFIX"]
    image = container(one(objects, "StatefulSet", "redis"))["image"]
    version = tuple(int(part) for part in re.match(r"redis:(\d+)\.(\d+)", image).groups())
    expected = acl_file(prefix, dict.fromkeys(ROLES, PLACEHOLDER_HASH), redis_version=version)
    assert secret_example("sentiment-redis-acl")["users.acl"] == expected, (
        "paste `python -m service.redis_acl --prefix sentiment --placeholder` into secret.example.yaml again"
    )


def test_the_api_asks_for_a_key_of_a_mounted_secret(objects):
    api = by_component(objects, "api")
    settings = Settings(**settings_of(environment(objects, api)))
    assert settings.auth == "api_keys" and not settings.allow_anonymous and settings.anonymous_public_bind() is None
    file = PurePosixPath(str(settings.api_keys_file))
    (mount,) = [m for m in container(api)["volumeMounts"] if PurePosixPath(m["mountPath"]) == file.parent]
    # Read-only, and a whole volume: a subPath mount never sees a created or revoked key.
    assert mount["readOnly"] is True and "subPath" not in mount
    volume = next(v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "sentiment-api-keys"
    assert {item["path"]: item["key"] for item in volume["secret"]["items"]} == {file.name: "keys.json"}
    KeyFile.parse(secret_example("sentiment-api-keys")["keys.json"])  # the example is a valid key file
    # Only the API pods get the keys.
    for workload in workloads(objects):
        if workload is not api:
            assert "sentiment-api-keys" not in json.dumps(workload), workload["metadata"]["name"]


def test_ports_and_probe_paths_exist_in_the_code(objects, app_routes):
    assert {"/predict", "/healthz", "/readyz", "/metrics"} <= app_routes  # the app was really read
    api = by_component(objects, "api")
    spec, env = container(api), environment(objects, api)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports["http"] == int(env["PORT"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert spec[probe]["httpGet"]["path"] in app_routes and spec[probe]["httpGet"]["port"] == "http"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz" and spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (service_monitor,) = of_kind(objects, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["path"] in app_routes
    worker = by_component(objects, "worker")
    worker_ports = {p["name"]: p["containerPort"] for p in container(worker)["ports"]}
    assert worker_ports["metrics"] == Settings(**settings_of(environment(objects, worker))).worker_metrics_port
    # Every Service targets a named port its pods declare.
    for service in of_kind(objects, "Service"):
        (backend,) = [
            w
            for w in workloads(objects)
            if selects({"matchLabels": service["spec"]["selector"]}, w["spec"]["template"]["metadata"]["labels"])
        ]
        declared = {p["name"] for p in container(backend)["ports"]}
        assert all(p["targetPort"] in declared for p in service["spec"]["ports"]), service["metadata"]["name"]


def test_the_model_version_is_one_everywhere_and_exists(objects):
    api, worker = by_component(objects, "api"), by_component(objects, "worker")
    api_settings = Settings(**settings_of(environment(objects, api)))
    worker_settings = Settings(**settings_of(environment(objects, worker)))
    version = api_settings.model_version
    assert version is not None and worker_settings.model_version == version
    assert api_settings.model_name == worker_settings.model_name and api_settings.redis_key_prefix == worker_settings.redis_key_prefix
    assert is_complete(ROOT / "model_store" / api_settings.model_name / str(version)), f"model version {version} is not in model_store/"
    assert worker["metadata"]["labels"]["model-version"] == str(version)
    for spec in (container(api), container(worker)):
        assert spec["image"].endswith(f":model-{version}"), f"{spec['image']} does not carry model {version}"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"\nARG MODEL_VERSION={version}\n" in dockerfile, "the Dockerfile bakes another model version by default"
    # KEDA watches the stream the code writes to for that version.
    queue = RequestQueue(redis.Redis(), api_settings.redis_key_prefix, api_settings.model_name, version)
    (scaled,) = of_kind(objects, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["stream"] == queue.stream
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]


def test_every_reference_points_at_an_object_that_exists(objects):
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for autoscaler in of_kind(objects, "HorizontalPodAutoscaler"):
        assert (autoscaler["spec"]["scaleTargetRef"]["kind"], autoscaler["spec"]["scaleTargetRef"]["name"]) in names
    for scaled in of_kind(objects, "ScaledObject"):
        assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in names
    for budget in of_kind(objects, "PodDisruptionBudget"):
        assert any(selects(budget["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]) for w in workloads(objects))
    for workload in workloads(objects):
        assert selects(workload["spec"]["selector"], workload["spec"]["template"]["metadata"]["labels"])
        for source in container(workload).get("envFrom", []):
            assert ("ConfigMap", source["configMapRef"]["name"]) in names


def test_the_model_config_and_the_worker_pools_agree_in_every_overlay():
    """The ConfigMap's model config is valid against the model store; a pool per version serves a version the config
    lists and KEDA scales it on that version's stream; the one pool serves every version and scales on all streams."""
    from service.model_config import parse_config
    from service.worker.versions import wanted_versions

    for overlay in OVERLAYS:
        objects = render(overlay)
        (models,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"] == "sentiment-models"]
        api = by_component(objects, "api")
        settings = Settings(**settings_of(environment(objects, api)))
        assert settings.model_config_file == "/etc/sentiment/models.yaml"
        config = parse_config(models["data"]["models.yaml"], ROOT / "model_store", settings.model_name)
        prefix = settings.redis_key_prefix
        for worker in [w for w in workloads(objects) if w["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]:
            pool = Settings(**settings_of(environment(objects, worker)))
            served = {RequestQueue(redis.Redis(), prefix, name, version).stream for name, version in wanted_versions(config, pool)}
            assert served, f"{overlay}: {worker['metadata']['name']} serves no version of the model config"
            (scaled,) = [s for s in of_kind(objects, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]]
            assert {t["metadata"]["stream"] for t in scaled["spec"]["triggers"]} == served, overlay
        if overlay == "one-pool":
            assert len(config.versions()) == 2 and not pool.worker_models
