"""The official Python Kubernetes client against Gantry's control plane.

Run by tests/python_client.rs with KUBECONFIG set; every check is an
assert, so a failure exits non-zero with the line that failed. Typed
create, list, watch, patch, replace and delete of namespaces, ConfigMaps,
Secrets and Events (core and events.k8s.io), Gantry resources through
CustomObjectsApi, and the dynamic client.
"""

import base64
import datetime

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
api = client.ApiClient()
core = client.CoreV1Api(api)
events_v1 = client.EventsV1Api(api)
custom = client.CustomObjectsApi(api)

NS = "py"


def names(items):
    return sorted(item.metadata.name for item in items)


# Namespaces: the one under test between two others.
for name in ["py-a", NS, "py-z"]:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
ns = core.read_namespace(NS)
assert ns.status.phase == "Active", ns.status
assert ns.metadata.labels["kubernetes.io/metadata.name"] == NS
listed = core.list_namespace(label_selector="kubernetes.io/metadata.name=" + NS)
assert names(listed.items) == [NS], names(listed.items)

# ConfigMaps: create, list, patch, replace, watch, delete.
for name in ["a", "middle", "z"]:
    core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"app": "py"}), data={"k": name})
    )
assert names(core.list_namespaced_config_map(NS).items) == ["a", "middle", "z"]
patched = core.patch_namespaced_config_map("middle", NS, {"data": {"extra": "1"}})
assert patched.data == {"k": "middle", "extra": "1"}, patched.data
current = core.read_namespaced_config_map("middle", NS)
current.data = {"k": "replaced"}
replaced = core.replace_namespaced_config_map("middle", NS, current)
assert replaced.data == {"k": "replaced"}
assert int(replaced.metadata.resource_version) > int(patched.metadata.resource_version)
stale = current
try:
    core.replace_namespaced_config_map("middle", NS, stale)
    raise AssertionError("a stale resourceVersion was accepted")
except ApiException as e:
    assert e.status == 409, e

w = watch.Watch()
seen = []
start = core.list_namespaced_config_map(NS).metadata.resource_version
core.patch_namespaced_config_map("z", NS, {"data": {"k": "changed"}})
for event in w.stream(core.list_namespaced_config_map, NS, resource_version=start, timeout_seconds=3):
    seen.append((event["type"], event["object"].metadata.name))
    if event["object"].metadata.name == "z":
        w.stop()
assert ("MODIFIED", "z") in seen, seen

status = core.delete_namespaced_config_map("a", NS)
# Typed as an object: the Status kube-apiserver answers a delete with.
status = status if isinstance(status, dict) else status.to_dict()
assert status["kind"] == "Status" and status["status"] == "Success", status
assert names(core.list_namespaced_config_map(NS).items) == ["middle", "z"]

# Secrets: data is bytes, stringData folds into it.
secret = core.create_namespaced_secret(
    NS,
    client.V1Secret(
        metadata=client.V1ObjectMeta(name="creds"),
        data={"user": base64.b64encode(b"admin").decode()},
        string_data={"password": "s3cret"},
    ),
)
assert base64.b64decode(secret.data["password"]) == b"s3cret"
assert secret.string_data is None

# Events: written through one group, read through the other.
now = datetime.datetime.now(datetime.timezone.utc)
regarding = client.V1ObjectReference(kind="ConfigMap", name="middle", namespace=NS, api_version="v1")
events_v1.create_namespaced_event(
    NS,
    client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="from-events"),
        event_time=now,
        regarding=regarding,
        note="written as events.k8s.io",
        reason="Tested",
        type="Normal",
        action="Test",
        reporting_controller="tests/python",
        reporting_instance="py-1",
    ),
)
core.create_namespaced_event(
    NS,
    client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="from-core"),
        involved_object=regarding,
        message="written as core",
        reason="Tested",
        type="Normal",
        first_timestamp=now,
        last_timestamp=now,
        count=1,
        # events.k8s.io requires an eventTime; kube-apiserver shows a core
        # Event without one as `eventTime: null`, which typed clients of
        # events.k8s.io refuse, there as here.
        event_time=now,
        action="Test",
        reporting_component="tests/python",
        reporting_instance="py-1",
    ),
)
as_core = core.read_namespaced_event("from-events", NS)
assert as_core.message == "written as events.k8s.io", as_core
assert as_core.involved_object.name == "middle"
as_new = events_v1.read_namespaced_event("from-core", NS)
assert as_new.note == "written as core", as_new
about = core.list_namespaced_event(NS, field_selector="involvedObject.name=middle")
assert names(about.items) == ["from-core", "from-events"], names(about.items)

# Gantry's resources through CustomObjectsApi.
group, version = "gantry.dev", "v1alpha1"


def task_definition(name, image):
    return {
        "apiVersion": "gantry.dev/v1alpha1",
        "kind": "TaskDefinition",
        "metadata": {"name": name},
        "spec": {"containerDefinitions": [{"name": "app", "image": image, "memory": 64}]},
    }


for name in ["td-a", "web", "td-z"]:
    custom.create_namespaced_custom_object(group, version, NS, "taskdefinitions", task_definition(name, "web:1"))
listed = custom.list_namespaced_custom_object(group, version, NS, "taskdefinitions")
assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["td-a", "td-z", "web"]
patched = custom.patch_namespaced_custom_object(
    group, version, NS, "taskdefinitions", "web", {"spec": {"cpu": 256}}
)
assert patched["spec"]["cpu"] == 256 and patched["metadata"]["generation"] == 2, patched["metadata"]
try:
    custom.create_namespaced_custom_object(
        group, version, NS, "taskdefinitions", task_definition("bad", "web:1") | {"spec": {"containerDefinitions": []}}
    )
    raise AssertionError("an invalid task definition was accepted")
except ApiException as e:
    assert e.status == 422, e
custom.delete_namespaced_custom_object(group, version, NS, "taskdefinitions", "web")
listed = custom.list_namespaced_custom_object(group, version, NS, "taskdefinitions")
assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["td-a", "td-z"]

# The dynamic client: discovery, then the same verbs on a Gantry kind.
dyn = dynamic.DynamicClient(api)
services = dyn.resources.get(api_version="gantry.dev/v1alpha1", kind="Service")
for name in ["svc-a", "web", "svc-z"]:
    services.create(
        namespace=NS,
        body={
            "apiVersion": "gantry.dev/v1alpha1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"taskDefinition": "td-a", "desiredCount": 1},
        },
    )
web = services.get(name="web", namespace=NS)
assert web.spec.desiredCount == 1
scaled = services.patch(
    name="web",
    namespace=NS,
    body={"spec": {"desiredCount": 3}},
    content_type="application/merge-patch+json",
)
assert scaled.spec.desiredCount == 3
assert sorted(s.metadata.name for s in services.get(namespace=NS).items) == ["svc-a", "svc-z", "web"]
services.delete(name="web", namespace=NS)
assert sorted(s.metadata.name for s in services.get(namespace=NS).items) == ["svc-a", "svc-z"]

print("python client: all checks passed")
