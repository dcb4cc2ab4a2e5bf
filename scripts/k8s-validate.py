#!/usr/bin/env python3
"""Validates the Kubernetes manifests under a directory (deploy/k8s).

Builds the base and every overlay the way kustomize does for the features the generated
layout uses (resources, namespace, images, JSON-patch patches with a kind/name target; any
other kustomization field is refused, so the layout cannot outgrow this script unnoticed),
then checks every object of every build, and every object of the templates that are applied
by hand, against the Kubernetes schemas in strict mode (kubernetes-validate: an unknown or
misspelt field fails). It also checks what a schema cannot see: selectors that select, probes
and Service ports that name a container port, autoscalers and budgets that find their
Deployment, and every ConfigMap, Secret and key a pod refers to existing in the build or in a
template. When kubectl is installed, `kubectl kustomize` must build exactly the same objects.

    scripts/k8s-validate.py [--kubernetes-version 1.30] [--no-kubectl] deploy/k8s
"""

import argparse
import copy
import os
import shutil
import subprocess
import sys

import yaml

try:
    import kubernetes_validate
except ImportError:
    sys.exit("k8s-validate: the kubernetes-validate package is missing (pip install kubernetes-validate)")

KUSTOMIZATION = "kustomization.yaml"
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class Invalid(Exception):
    pass


def load_docs(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def is_object(doc):
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def key(obj):
    meta = obj.get("metadata", {})
    return (obj["kind"], meta.get("namespace", ""), meta.get("name", ""))


def pod_spec(obj):
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("spec")


def containers(obj):
    spec = pod_spec(obj) or {}
    return spec.get("initContainers", []) + spec.get("containers", [])


# --- building -------------------------------------------------------------------------------

def json_pointer(path):
    if path == "" or not path.startswith("/"):
        raise Invalid(f"JSON patch path {path!r} is not a pointer")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def apply_op(obj, op, where):
    parts = json_pointer(op["path"])
    parent = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent.get(part)
        if parent is None:
            raise Invalid(f"{where}: {op['path']} does not exist")
    last = parts[-1]
    kind = op.get("op")
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, op["value"])
        elif kind == "replace":
            parent[index] = op["value"]
        elif kind == "remove":
            del parent[index]
        else:
            raise Invalid(f"{where}: unsupported JSON patch op {kind!r}")
        return
    if kind in ("replace", "remove") and last not in parent:
        raise Invalid(f"{where}: {op['path']} does not exist")
    if kind in ("add", "replace"):
        parent[last] = op["value"]
    elif kind == "remove":
        del parent[last]
    else:
        raise Invalid(f"{where}: unsupported JSON patch op {kind!r}")


def apply_image(obj, images):
    for container in containers(obj):
        image = container.get("image", "")
        name, separator, rest = image.partition("@")
        if not separator and ":" in image.rsplit("/", 1)[-1]:
            name, separator, rest = image.rpartition(":")
        for spec in images:
            if spec["name"] != name:
                continue
            image = spec.get("newName", name)
            if "digest" in spec:
                image += "@" + spec["digest"]
            elif "newTag" in spec:
                image += ":" + str(spec["newTag"])
            elif separator:
                image += separator + rest
            container["image"] = image


def build(directory):
    """The objects `kustomize build directory` gives, for the supported fields."""
    path = os.path.join(directory, KUSTOMIZATION)
    docs = load_docs(path)
    if len(docs) != 1 or docs[0].get("kind") != "Kustomization":
        raise Invalid(f"{path}: not one Kustomization")
    spec = docs[0]
    unsupported = set(spec) - SUPPORTED_FIELDS
    if unsupported:
        raise Invalid(f"{path}: fields {sorted(unsupported)} are not resolved by this script")
    objects = []
    for resource in spec.get("resources", []):
        target = os.path.normpath(os.path.join(directory, resource))
        if os.path.isdir(target):
            objects.extend(build(target))
        else:
            for doc in load_docs(target):
                if not is_object(doc):
                    raise Invalid(f"{target}: a document is not a Kubernetes object")
                objects.append(doc)
    for patch in spec.get("patches", []):
        where = f"{path}: patch {patch.get('path', '(inline)')}"
        if set(patch) - {"path", "patch", "target"}:
            raise Invalid(f"{where}: only path, patch and target are resolved")
        target = patch.get("target", {})
        if set(target) - {"kind", "name"}:
            raise Invalid(f"{where}: only kind and name targets are resolved")
        if "path" in patch:
            ops = load_docs(os.path.join(directory, patch["path"]))
            ops = ops[0] if len(ops) == 1 else None
        else:
            ops = yaml.safe_load(patch["patch"])
        if not isinstance(ops, list):
            raise Invalid(f"{where}: only JSON patches (a list of ops) are resolved")
        matched = [o for o in objects
                   if o["kind"] == target.get("kind", o["kind"])
                   and o["metadata"]["name"] == target.get("name", o["metadata"]["name"])]
        if not matched:
            raise Invalid(f"{where}: the target matches no object")
        for obj in matched:
            for op in ops:
                apply_op(obj, op, f"{where} on {obj['kind']}/{obj['metadata']['name']}")
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    if "images" in spec:
        for obj in objects:
            apply_image(obj, spec["images"])
    return copy.deepcopy(objects)


# --- checks ---------------------------------------------------------------------------------

def schema_errors(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def reference_errors(objects, templates):
    """What a schema cannot see: references between the objects of one build."""
    errors = []
    known = {}
    for obj in templates + objects:
        known[(obj["kind"], obj["metadata"]["name"])] = obj
    seen = set()
    for obj in objects:
        if key(obj) in seen:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: defined twice")
        seen.add(key(obj))
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        spec = obj.get("spec", {})
        if obj["kind"] in WORKLOADS - {"Job"}:
            labels = spec["template"]["metadata"].get("labels", {})
            if not selects(spec.get("selector", {}).get("matchLabels"), labels):
                errors.append(f"{name}: the selector does not select the pod template")
        if obj["kind"] == "Service":
            targets = [w for w in workloads
                       if selects(spec.get("selector"), w["spec"]["template"]["metadata"].get("labels", {}))]
            if not targets:
                errors.append(f"{name}: the selector selects no workload")
            for target in targets:
                ports = {p.get("name") for c in containers(target) for p in c.get("ports", [])}
                numbers = {p["containerPort"] for c in containers(target) for p in c.get("ports", [])}
                for port in spec.get("ports", []):
                    wanted = port.get("targetPort", port["port"])
                    if wanted not in ports | numbers:
                        errors.append(f"{name}: targetPort {wanted} is no port of {target['metadata']['name']}")
        if obj["kind"] == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            if (ref["kind"], ref["name"]) not in {(o["kind"], o["metadata"]["name"]) for o in objects}:
                errors.append(f"{name}: scales {ref['kind']}/{ref['name']}, which is not in the build")
            if spec.get("minReplicas", 1) > spec["maxReplicas"]:
                errors.append(f"{name}: minReplicas above maxReplicas")
        if obj["kind"] == "PodDisruptionBudget":
            if not any(selects(spec["selector"].get("matchLabels"), w["spec"]["template"]["metadata"].get("labels", {}))
                       for w in workloads):
                errors.append(f"{name}: the selector selects no workload")
        if obj["kind"] not in WORKLOADS:
            continue
        pod = pod_spec(obj)

        def refer(kind, ref_name, keys=(), optional=False, what=name):
            target = known.get((kind, ref_name))
            if target is None:
                if not optional:
                    errors.append(f"{what}: {kind} {ref_name} is neither in the build nor in a template")
                return
            data = {**target.get("data", {}), **target.get("stringData", {})}
            for k in keys:
                if k not in data:
                    errors.append(f"{what}: {kind} {ref_name} has no key {k}")

        for container in containers(obj):
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                check = container.get(probe)
                if not check:
                    continue
                port = (check.get("grpc") or check.get("httpGet") or check.get("tcpSocket") or {}).get("port")
                if port is not None and port not in ports and port not in ports.values():
                    errors.append(f"{name}: {probe} port {port} is no container port")
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    refer("ConfigMap", source["configMapRef"]["name"], optional=source["configMapRef"].get("optional", False))
                if "secretRef" in source:
                    refer("Secret", source["secretRef"]["name"], optional=source["secretRef"].get("optional", False))
            for env in container.get("env", []):
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    ref = env.get("valueFrom", {}).get(field)
                    if ref:
                        refer(kind, ref["name"], [ref["key"]], ref.get("optional", False))
        for volume in pod.get("volumes", []):
            sources = volume.get("projected", {}).get("sources", [volume])
            for source in sources:
                for kind, field, name_field in (("Secret", "secret", "secretName"), ("Secret", "secret", "name"),
                                                ("ConfigMap", "configMap", "name")):
                    ref = source.get(field)
                    if ref and name_field in ref:
                        refer(kind, ref[name_field], [i["key"] for i in ref.get("items", [])],
                              ref.get("optional", False))
    return errors


def kubectl_objects(directory):
    out = subprocess.run(["kubectl", "kustomize", directory], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("-k", "--kubernetes-version", default="1.30")
    parser.add_argument("--no-kubectl", action="store_true", help="skip the kubectl kustomize comparison")
    args = parser.parse_args()
    root = args.directory
    errors = []
    kustomizations = sorted(d for d, _, files in os.walk(root) if KUSTOMIZATION in files)
    if not kustomizations:
        sys.exit(f"k8s-validate: no {KUSTOMIZATION} under {root}")

    # Objects in files that no kustomization lists are templates applied by hand.
    listed = set()
    for directory in kustomizations:
        try:
            spec = load_docs(os.path.join(directory, KUSTOMIZATION))[0]
            listed.update(os.path.normpath(os.path.join(directory, r)) for r in spec.get("resources", []))
            listed.update(os.path.normpath(os.path.join(directory, p["path"]))
                          for p in spec.get("patches", []) if "path" in p)
        except (OSError, IndexError, AttributeError, TypeError, yaml.YAMLError) as e:
            errors.append(f"{directory}: unreadable {KUSTOMIZATION}: {e}")
    builds = {}
    for directory in kustomizations:
        try:
            builds[directory] = build(directory)
        except (Invalid, OSError, KeyError, ValueError, IndexError, TypeError, AttributeError, yaml.YAMLError) as e:
            errors.append(f"{directory}: cannot be built: {e}")
    templates = []
    for directory, _, files in os.walk(root):
        for file in sorted(files):
            path = os.path.normpath(os.path.join(directory, file))
            if not file.endswith((".yaml", ".yml")) or file == KUSTOMIZATION or path in listed:
                continue
            for doc in load_docs(path):
                if not is_object(doc):
                    errors.append(f"{path}: listed by no kustomization and not a Kubernetes object")
                    continue
                templates.append(doc)
                errors.extend(f"{path}: {doc['kind']}/{doc['metadata']['name']}: {e}"
                              for e in schema_errors(doc, args.kubernetes_version))

    count = 0
    for directory, objects in builds.items():
        invalid = []
        for obj in objects:
            count += 1
            invalid.extend(f"{directory}: {obj['kind']}/{obj['metadata']['name']}: {e}"
                           for e in schema_errors(obj, args.kubernetes_version))
        errors.extend(invalid)
        # The references are read from objects of the shapes the schemas promise.
        if not invalid:
            errors.extend(f"{directory}: {e}" for e in reference_errors(objects, templates))

    compared = False
    if not args.no_kubectl and shutil.which("kubectl"):
        compared = True
        for directory, objects in builds.items():
            try:
                theirs = {key(o): o for o in kubectl_objects(directory)}
            except subprocess.CalledProcessError as e:
                errors.append(f"{directory}: kubectl kustomize failed: {e.stderr.strip()}")
                continue
            ours = {key(o): o for o in objects}
            for k in sorted(set(ours) | set(theirs)):
                if ours.get(k) != theirs.get(k):
                    errors.append(f"{directory}: {'/'.join(k)} differs from what kubectl kustomize builds")

    if errors:
        for error in errors:
            print(f"k8s-validate: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"k8s-validate: {count} objects in {len(builds)} builds and {len(templates)} template objects "
          f"valid against Kubernetes {args.kubernetes_version} (strict)"
          + ("; kubectl kustomize builds the same" if compared
             else "; not compared with kubectl kustomize (--no-kubectl, or kubectl not installed)"))


if __name__ == "__main__":
    main()
