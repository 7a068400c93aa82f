"""Checks Skiff's Kubernetes manifests; run through validate.sh, which provides the tools.

Renders each kustomization (k8s/ and the addons), with `kubectl kustomize` when kubectl is on
PATH and with the small renderer below otherwise; when both are there, both render and must
agree. Then every rendered object is validated against the Kubernetes API schemas by
kubernetes-validate in strict mode (unknown fields, wrong types and unknown kinds fail) for
each version asked for, the references between objects are followed (selectors, named
ports, service accounts, ConfigMaps, the webhook's Service), pods of a namespace that
enforces the restricted Pod Security level must meet it, the control plane's contract
is checked (image, webhook settings, RBAC for the caBundle patch), the mesh ConfigMap's
mesh.yaml goes through `skiff-xds check`, and the demo addon's app stand-in is run and asked.
Exits 1 naming every problem found.
"""

import argparse
import copy
import difflib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

import yaml
import kubernetes_validate
import kubernetes_validate.utils as kv_utils

ROOT = pathlib.Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = ["k8s", "k8s/addons", "k8s/addons/jaeger", "k8s/addons/demo"]
CONTROL_PLANE = "k8s"
DEMO = "k8s/addons/demo"
JAEGER = "k8s/addons/jaeger"

# What the small renderer understands; anything else in a kustomization.yaml is refused.
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources"}
KUSTOMIZATION_API = "kustomize.config.k8s.io/v1beta1"
# Kinds whose scope the renderer knows; an object of any other kind is refused, since
# setting (or not setting) its namespace would be a guess.
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "PriorityClass",
}
NAMESPACED = {
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "PodDisruptionBudget",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

WEBHOOK_CONFIG = "skiff-injector"
MESH_CONFIGMAP = ("skiff-mesh", "mesh.yaml")
INJECT_LABEL = "skiff.dev/inject"


class RenderError(Exception):
    """A kustomization the small renderer cannot render as kustomize would."""


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind")):
            raise RenderError(f"{path}: document {i} is not a Kubernetes object")
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            raise RenderError(f"{path}: document {i} ({doc['kind']}) has no metadata.name")
    return docs


def render_builtin(directory, stack=()):
    """kustomize's `resources` and `namespace`, for the kustomizations of this repository."""
    directory = pathlib.Path(directory).resolve()
    if directory in stack:
        raise RenderError(f"{directory}: kustomizations include each other")
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    with open(path, encoding="utf-8") as f:
        spec = yaml.safe_load(f) or {}
    if not isinstance(spec, dict):
        raise RenderError(f"{path}: not a mapping")
    unknown = sorted(set(spec) - KUSTOMIZATION_KEYS)
    if unknown:
        raise RenderError(
            f"{path}: {', '.join(unknown)}: not understood by this renderer (it knows "
            f"{', '.join(sorted(KUSTOMIZATION_KEYS))}); install kubectl, or extend k8s/validate.py"
        )
    if spec.get("apiVersion", KUSTOMIZATION_API) != KUSTOMIZATION_API:
        raise RenderError(f"{path}: apiVersion {spec['apiVersion']!r}, not {KUSTOMIZATION_API}")
    if spec.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{path}: kind {spec['kind']!r}, not Kustomization")
    resources = spec.get("resources") or []
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise RenderError(f"{path}: resources must be a list of paths")

    objects = []
    for entry in resources:
        target = (directory / entry).resolve()
        if target.is_dir():
            objects += render_builtin(target, stack + (directory,))
        elif target.is_file():
            if directory not in target.parents:
                raise RenderError(f"{path}: {entry} is outside the kustomization's directory")
            objects += load_documents(target)
        else:
            raise RenderError(f"{path}: resource {entry} does not exist")

    namespace = spec.get("namespace")
    if namespace is not None:
        for obj in objects:
            kind, meta = obj["kind"], obj["metadata"]
            if kind == "Namespace":
                # kustomize renames it; a manifest saying something else is a mistake here.
                if meta["name"] != namespace:
                    raise RenderError(
                        f"{path}: Namespace {meta['name']} would be renamed to {namespace}"
                    )
            elif kind in NAMESPACED:
                meta["namespace"] = namespace
            elif kind not in CLUSTER_SCOPED:
                raise RenderError(f"{path}: {kind} {meta['name']}: kind of unknown scope")

    seen = set()
    for obj in objects:
        key = identity(obj)
        if key in seen:
            raise RenderError(f"{path}: {describe(obj)} appears twice")
        seen.add(key)
    return objects


def render_kubectl(kubectl, directory):
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def identity(obj):
    meta = obj.get("metadata", {})
    group = obj["apiVersion"].rpartition("/")[0]
    return (group, obj["kind"], meta.get("namespace", ""), meta.get("name", ""))


def describe(obj):
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta.get('name')}"


def compare_renders(name, ours, theirs):
    """The small renderer's output must be kubectl's, object for object."""
    mine = {identity(o): o for o in ours}
    kubectl = {identity(o): o for o in theirs}
    problems = []
    for key in sorted(set(mine) ^ set(kubectl)):
        side = "only the small renderer" if key in mine else "only kubectl"
        where = f"{key[2]}/{key[3]}" if key[2] else key[3]
        problems.append(f"{name}: {key[1]} {where} rendered by {side}")
    for key in sorted(set(mine) & set(kubectl)):
        a = json.dumps(mine[key], indent=1, sort_keys=True).splitlines()
        b = json.dumps(kubectl[key], indent=1, sort_keys=True).splitlines()
        if a != b:
            diff = "\n".join(difflib.unified_diff(a, b, "small renderer", "kubectl", lineterm=""))
            problems.append(f"{name}: {key[1]} {key[3]} renders differently:\n{diff}")
    return problems


def validate_schemas(name, objects, versions):
    problems = []
    for obj in objects:
        for version in versions:
            try:
                kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top level)"
                problems.append(
                    f"{name}: {describe(obj)}: Kubernetes {version}: {path}: {e.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{name}: {describe(obj)}: {e.message}")
    return problems


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_templates(objects):
    """(workload, its pod template) of every workload."""
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            yield obj, obj["spec"]["template"]


def check_references(name, objects):
    """Selectors select, names named exist: what a schema cannot see."""
    problems = []
    have = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}

    def exists(kind, namespace, obj_name):
        return (kind, namespace, obj_name) in have

    templates = list(pod_templates(objects))
    for workload, template in templates:
        ns = workload["metadata"].get("namespace", "")
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        labels = template.get("metadata", {}).get("labels", {})
        if workload["kind"] != "Job" and not labels_match(selector, labels):
            problems.append(
                f"{name}: {describe(workload)}: selector {selector} does not match its pods' labels"
            )
        pod = template["spec"]
        account = pod.get("serviceAccountName", "default")
        if account != "default" and not exists("ServiceAccount", ns, account):
            problems.append(f"{name}: {describe(workload)}: no ServiceAccount {account}")
        for volume in pod.get("volumes", []):
            if "configMap" in volume and not volume["configMap"].get("optional"):
                if not exists("ConfigMap", ns, volume["configMap"]["name"]):
                    problems.append(
                        f"{name}: {describe(workload)}: no ConfigMap {volume['configMap']['name']}"
                    )
            if "secret" in volume and not volume["secret"].get("optional"):
                problems.append(
                    f"{name}: {describe(workload)}: Secret {volume['secret']['secretName']} "
                    "is required; nothing here creates it"
                )

    def selected(namespace, selector):
        return [
            (w, t)
            for w, t in templates
            if w["metadata"].get("namespace", "") == namespace
            and labels_match(selector, t.get("metadata", {}).get("labels", {}))
        ]

    for svc in (o for o in objects if o["kind"] == "Service"):
        ns = svc["metadata"].get("namespace", "")
        pods = selected(ns, svc["spec"].get("selector", {}))
        if not pods:
            problems.append(f"{name}: {describe(svc)}: its selector matches no pods")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for workload, template in pods:
                declared = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
                found = any(
                    (
                        p.get("name") == target
                        if isinstance(target, str)
                        else p["containerPort"] == target
                    )
                    for p in declared
                )
                if not found:
                    problems.append(
                        f"{name}: {describe(svc)}: port {port.get('name', port['port'])} "
                        f"targets {target}, which {describe(workload)} does not declare"
                    )

    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"].get("selector", {}).get("matchLabels", {})
        if not selected(pdb["metadata"].get("namespace", ""), selector):
            problems.append(f"{name}: {describe(pdb)}: its selector matches no pods")

    for binding in (o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        ref = binding["roleRef"]
        ref_ns = "" if ref["kind"] == "ClusterRole" else binding["metadata"].get("namespace", "")
        if not exists(ref["kind"], ref_ns, ref["name"]):
            problems.append(f"{name}: {describe(binding)}: no {ref['kind']} {ref['name']}")
        for subject in binding.get("subjects", []):
            if subject["kind"] == "ServiceAccount" and not exists(
                "ServiceAccount", subject.get("namespace", ""), subject["name"]
            ):
                problems.append(
                    f"{name}: {describe(binding)}: "
                    f"no ServiceAccount {subject.get('namespace')}/{subject['name']}"
                )

    for config in (o for o in objects if o["kind"] == "MutatingWebhookConfiguration"):
        for hook in config.get("webhooks", []):
            svc = hook["clientConfig"].get("service")
            if not svc:
                continue
            match = [
                o
                for o in objects
                if o["kind"] == "Service"
                and o["metadata"]["name"] == svc["name"]
                and o["metadata"].get("namespace") == svc["namespace"]
            ]
            if not match:
                problems.append(
                    f"{name}: webhook {hook['name']}: no Service {svc['namespace']}/{svc['name']}"
                )
            elif svc.get("port", 443) not in [p["port"] for p in match[0]["spec"]["ports"]]:
                problems.append(
                    f"{name}: webhook {hook['name']}: "
                    f"Service {svc['name']} has no port {svc.get('port', 443)}"
                )
    return problems


RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def check_pod_security(rendered):
    """Pods in a namespace that enforces the restricted Pod Security level must meet it, or
    the API server refuses them; the rules are checked here as the admission plugin would."""
    restricted = {
        o["metadata"]["name"]
        for objects in rendered.values()
        for o in objects
        if o["kind"] == "Namespace"
        and o["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce")
        == "restricted"
    }
    problems = []
    for name, objects in rendered.items():
        for workload, template in pod_templates(objects):
            if workload["metadata"].get("namespace") not in restricted:
                continue
            pod = template["spec"]
            pod_sc = pod.get("securityContext", {})
            where = f"{name}: {describe(workload)} (restricted Pod Security)"
            for field in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.get(field):
                    problems.append(f"{where}: {field}")
            for volume in pod.get("volumes", []):
                kinds = set(volume) - {"name"}
                if not kinds <= RESTRICTED_VOLUMES:
                    problems.append(f"{where}: volume {volume['name']} is {', '.join(kinds)}")
            for c in pod.get("initContainers", []) + pod["containers"]:
                sc = c.get("securityContext", {})
                caps = sc.get("capabilities", {})
                merged = {**pod_sc, **sc}
                if merged.get("runAsNonRoot") is not True or merged.get("runAsUser") == 0:
                    problems.append(f"{where}: container {c['name']} may run as root")
                if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
                    problems.append(f"{where}: container {c['name']} may escalate privileges")
                if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {
                    "NET_BIND_SERVICE"
                }:
                    problems.append(f"{where}: container {c['name']} keeps capabilities")
                seccomp = merged.get("seccompProfile", {}).get("type")
                if seccomp not in ("RuntimeDefault", "Localhost"):
                    problems.append(f"{where}: container {c['name']} has no seccomp profile")
                if any("hostPort" in p for p in c.get("ports", [])):
                    problems.append(f"{where}: container {c['name']} uses a hostPort")
    return problems


def find(objects, kind, obj_name):
    return next(
        (o for o in objects if o["kind"] == kind and o["metadata"]["name"] == obj_name), None
    )


def check_control_plane(objects, injector_image):
    """The contract of k8s/ with the injector, the webhook brief and DESIGN.md."""
    problems = []
    deploy = find(objects, "Deployment", "skiff-xds")
    if deploy is None:
        return ["k8s: no Deployment skiff-xds"]
    pod = deploy["spec"]["template"]["spec"]
    for container in pod.get("initContainers", []) + pod["containers"]:
        if container["image"] != injector_image:
            problems.append(
                f"k8s: container {container['name']} runs {container['image']}, "
                f"the injector puts {injector_image} into pods"
            )
    main = next((c for c in pod["containers"] if c["name"] == "skiff-xds"), None)
    if main is None or main.get("args", [])[:2] != ["serve", "--kubernetes"]:
        problems.append("k8s: the skiff-xds container does not run `skiff-xds serve --kubernetes`")

    config = find(objects, "MutatingWebhookConfiguration", WEBHOOK_CONFIG)
    if config is None:
        return problems + [f"k8s: no MutatingWebhookConfiguration {WEBHOOK_CONFIG}"]
    expected = {
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "reinvocationPolicy": "Never",
        "namespaceSelector": {"matchLabels": {INJECT_LABEL: "enabled"}},
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
    }
    for hook in config["webhooks"]:
        for field, value in expected.items():
            if hook.get(field) != value:
                problems.append(
                    f"k8s: webhook {hook['name']}: {field} is {hook.get(field)!r}, not {value!r}"
                )
        if not 1 <= hook.get("timeoutSeconds", 10) <= 10:
            problems.append(
                f"k8s: webhook {hook['name']}: timeoutSeconds should be short (at most 10)"
            )
        if hook["clientConfig"].get("service", {}).get("path") != "/inject":
            problems.append(f"k8s: webhook {hook['name']}: path is not /inject")
        if "caBundle" in hook["clientConfig"]:
            problems.append(
                f"k8s: webhook {hook['name']}: caBundle is set; the control plane patches it"
            )

    may_patch = any(
        "admissionregistration.k8s.io" in rule.get("apiGroups", [])
        and "mutatingwebhookconfigurations" in rule.get("resources", [])
        and WEBHOOK_CONFIG in rule.get("resourceNames", [])
        and "patch" in rule.get("verbs", [])
        for role in objects
        if role["kind"] == "ClusterRole"
        for rule in role.get("rules", [])
    )
    if not may_patch:
        problems.append(
            f"k8s: no ClusterRole may patch mutatingwebhookconfigurations/{WEBHOOK_CONFIG}"
        )
    return problems


def check_mesh(objects, skiff_xds, work):
    name, key = MESH_CONFIGMAP
    config = find(objects, "ConfigMap", name)
    if config is None or key not in config.get("data", {}):
        return [f"k8s: no ConfigMap {name} with the key {key}"]
    path = pathlib.Path(work) / key
    path.write_text(config["data"][key], encoding="utf-8")
    out = subprocess.run(
        [skiff_xds, "check", str(path)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return [f"k8s: ConfigMap {name}: skiff-xds check refuses {key}:\n{out.stdout}{out.stderr}"]
    return []


def injector_image(skiff_xds, work):
    """The image `skiff-xds inject` puts into a pod by default."""
    pod = pathlib.Path(work) / "pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec: {containers: [{name: app, image: app}]}\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [skiff_xds, "inject", "-f", str(pod)], capture_output=True, text=True, check=True
    )
    injected = yaml.safe_load(out.stdout)
    return injected["spec"]["initContainers"][0]["image"]


def check_addons(rendered):
    problems = []
    control_plane = find(rendered[CONTROL_PLANE], "MutatingWebhookConfiguration", WEBHOOK_CONFIG)
    wanted = (
        control_plane["webhooks"][0]["namespaceSelector"]["matchLabels"] if control_plane else {}
    )
    namespaces = [o for o in rendered[DEMO] if o["kind"] == "Namespace"]
    if not any(labels_match(wanted, n["metadata"].get("labels", {})) for n in namespaces):
        problems.append(f"{DEMO}: no Namespace the webhook selects ({wanted})")
    jaeger = find(rendered[JAEGER], "Service", "jaeger")
    ports = {p["port"] for p in jaeger["spec"]["ports"]} if jaeger else set()
    if not {4317, 16686} <= ports:
        problems.append(f"{JAEGER}: Service jaeger does not expose 4317 (OTLP/gRPC) and 16686 (UI)")
    return problems


def get(url, data=None):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as rsp:
            return rsp.status, rsp.headers, rsp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def readline(proc, timeout=10):
    """The next line `proc` prints, waiting at most `timeout` seconds."""
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line:
        raise RuntimeError(f"the demo app printed nothing for {timeout} s")
    return line[0]


def start_app(script, env):
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
    )
    prefix = "demo app listening on "
    try:
        line = readline(proc)
        if not line.startswith(prefix):
            raise RuntimeError(f"the demo app printed {line!r} instead of its address")
    except RuntimeError:
        stop(proc)
        raise
    return proc, line[len(prefix) :].strip()


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def check_demo_app(objects, work):
    """Runs the stand-in app from the demo's ConfigMap and asks it what the README promises."""
    config = find(objects, "ConfigMap", "demo-app")
    if config is None:
        return [f"{DEMO}: no ConfigMap demo-app"]
    script = pathlib.Path(work) / "app.py"
    script.write_text(config["data"]["app.py"], encoding="utf-8")
    base = {"DEMO_HOST": "127.0.0.1", "DEMO_PORT": "0"}
    procs = []
    problems = []
    try:
        server, addr = start_app(script, {**base, "DEMO_APP": "reviews", "DEMO_VERSION": "v2"})
        procs.append(server)
        url = f"http://{addr}"
        expectations = [
            ("/", None, 200, b"reviews v2\n"),
            ("/status/503", None, 503, b"reviews v2: 503\n"),
            ("/delay?ms=10", None, 200, b"reviews v2\n"),
            ("/delay?ms=soon", None, 400, None),
            ("/echo", b"hello", 200, b"hello"),
            ("/nowhere", None, 404, None),
        ]
        for path, body, status, text in expectations:
            got_status, headers, got = get(url + path, body)
            if got_status != status or (text is not None and got != text):
                problems.append(
                    f"{DEMO}: app.py: {path} answered {got_status} {got!r}, "
                    f"expected {status} {text!r}"
                )
            if headers.get("x-served-by") != "reviews-v2":
                problems.append(
                    f"{DEMO}: app.py: {path}: x-served-by is {headers.get('x-served-by')!r}"
                )
        caller, _ = start_app(script, {**base, "DEMO_CALL": url + "/", "DEMO_CALL_INTERVAL": "0.1"})
        procs.append(caller)
        line = readline(caller).strip()
        if line != f"GET {url}/ 200 served-by=reviews-v2 reason=-":
            problems.append(f"{DEMO}: app.py: the caller logged {line!r}")
    except (RuntimeError, OSError) as e:
        problems.append(f"{DEMO}: app.py: {e}")
    finally:
        for proc in procs:
            stop(proc)
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skiff-xds", required=True, help="the skiff-xds binary")
    parser.add_argument(
        "--kubernetes-version",
        action="append",
        dest="versions",
        help="validate for this version (repeatable); default: 1.29.0 and the newest known",
    )
    parser.add_argument(
        "--renderer",
        choices=["auto", "kubectl", "builtin"],
        default="auto",
        help="auto: kubectl when on PATH (compared with the small renderer), "
        "else the small renderer",
    )
    args = parser.parse_args()
    versions = args.versions or ["1.29.0", kv_utils.latest_version()]

    kubectl = shutil.which("kubectl") if args.renderer != "builtin" else None
    if args.renderer == "kubectl" and kubectl is None:
        sys.exit("validate: --renderer kubectl, but kubectl is not on PATH")
    how = "kubectl kustomize, compared with the small renderer" if kubectl else "the small renderer"
    print(f"validate: rendering {len(KUSTOMIZATIONS)} kustomizations with {how}", file=sys.stderr)

    problems = []
    rendered = {}
    for name in KUSTOMIZATIONS:
        try:
            ours = render_builtin(ROOT / name)
            if kubectl:
                theirs = render_kubectl(kubectl, ROOT / name)
                problems += compare_renders(name, ours, theirs)
                ours = theirs
        except (RenderError, yaml.YAMLError) as e:
            problems.append(f"{name}: {e}")
            continue
        rendered[name] = ours

    count = sum(len(objs) for objs in rendered.values())
    print(f"validate: {count} objects, Kubernetes {', '.join(versions)} (strict)", file=sys.stderr)
    for name, objects in rendered.items():
        problems += validate_schemas(name, objects, versions)
        problems += check_references(name, objects)

    problems += check_pod_security(rendered)

    with tempfile.TemporaryDirectory(prefix="skiff-k8s-validate-") as work:
        if CONTROL_PLANE in rendered:
            image = injector_image(args.skiff_xds, work)
            problems += check_control_plane(rendered[CONTROL_PLANE], image)
            problems += check_mesh(rendered[CONTROL_PLANE], args.skiff_xds, work)
        if all(name in rendered for name in (CONTROL_PLANE, DEMO, JAEGER)):
            problems += check_addons(rendered)
        if DEMO in rendered:
            problems += check_demo_app(rendered[DEMO], work)

    if problems:
        for problem in problems:
            print(f"validate: FAILED: {problem}", file=sys.stderr)
        print(f"validate: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        "validate: every object is valid; the mesh ConfigMap passes skiff-xds check; "
        "the demo app answers",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
