//! The tables of `schema.rs` against an encoder that does not share them:
//! messages built with k8s-pb's prost types (compiled from Kubernetes'
//! own .proto files) decode to the JSON kube-apiserver stores for them.
//! Zeros are set where Go always writes them (non-pointer fields), to
//! check that those Go's JSON leaves out are left out. One difference
//! is kept on purpose: a zero time Go's JSON writes as `null` is left
//! out here, which every client reads the same.

use k8s_pb::{
    api::{apps::v1 as apps, core::v1 as core, events::v1 as events},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1 as meta,
        runtime::{TypeMeta, Unknown},
        util::intstr::IntOrString,
    },
};
use prost::Message;
use serde_json::json;

use super::decode;

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

/// The body client-go sends: the magic, then a `runtime.Unknown`.
fn body(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: s(""),
        content_type: s(""),
    };
    [b"k8s\0".to_vec(), unknown.encode_to_vec()].concat()
}

fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        namespace: s("prod"),
        // Go writes every non-pointer field: empty strings, zero counts
        // and an empty time.
        generate_name: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    })
}

fn local(name: &str) -> Option<core::LocalObjectReference> {
    Some(core::LocalObjectReference { name: s(name) })
}

fn port(number: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(number),
        str_val: s(""),
    })
}

fn pod_spec() -> core::PodSpec {
    let container = core::Container {
        name: s("agent"),
        image: s("gantry/agent:1"),
        ports: vec![core::ContainerPort {
            container_port: Some(8080),
            host_port: Some(0),
            protocol: s("TCP"),
            ..Default::default()
        }],
        env: vec![core::EnvVar {
            name: s("TOKEN"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: local("agent-token"),
                    key: s("token"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        }],
        env_from: vec![core::EnvFromSource {
            prefix: s(""),
            config_map_ref: Some(core::ConfigMapEnvSource {
                local_object_reference: local("agent-settings"),
                optional: None,
            }),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            limits: [("memory".to_owned(), Quantity { string: s("256Mi") })].into(),
            ..Default::default()
        }),
        volume_mounts: vec![core::VolumeMount {
            name: s("settings"),
            read_only: Some(true),
            mount_path: s("/etc/agent"),
            sub_path: s(""),
            ..Default::default()
        }],
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: port(8080),
                    host: s(""),
                    scheme: s("HTTP"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(5),
            timeout_seconds: Some(1),
            period_seconds: Some(10),
            success_threshold: Some(1),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                exec: Some(core::ExecAction {
                    command: vec!["cat".into(), "/tmp/ready".into()],
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(0),
            ..Default::default()
        }),
        security_context: Some(core::SecurityContext {
            run_as_user: Some(0),
            read_only_root_filesystem: Some(true),
            capabilities: Some(core::Capabilities {
                add: vec![],
                drop: vec!["ALL".into()],
            }),
            ..Default::default()
        }),
        stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    };
    core::PodSpec {
        containers: vec![container],
        volumes: vec![
            core::Volume {
                name: s("settings"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: local("agent-settings"),
                        items: vec![core::KeyToPath {
                            key: s("agent.toml"),
                            path: s("agent.toml"),
                            mode: None,
                        }],
                        default_mode: Some(420),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
            core::Volume {
                name: s("scratch"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource {
                        medium: s(""),
                        size_limit: Some(Quantity { string: s("1Gi") }),
                    }),
                    ..Default::default()
                }),
            },
        ],
        tolerations: vec![core::Toleration {
            key: s("node-role.kubernetes.io/control-plane"),
            operator: s("Exists"),
            value: s(""),
            effect: s("NoSchedule"),
            toleration_seconds: None,
        }],
        affinity: Some(core::Affinity {
            node_affinity: Some(core::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(core::NodeSelector {
                    node_selector_terms: vec![core::NodeSelectorTerm {
                        match_expressions: vec![core::NodeSelectorRequirement {
                            key: s("kubernetes.io/os"),
                            operator: s("In"),
                            values: vec!["linux".into()],
                        }],
                        match_fields: vec![],
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // A pointer: Go's JSON keeps its zero.
        termination_grace_period_seconds: Some(0),
        host_network: Some(true),
        host_pid: Some(false),
        service_account_name: s("agent"),
        ..Default::default()
    }
}

fn container_json() -> serde_json::Value {
    json!({
        "name": "agent",
        "image": "gantry/agent:1",
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "env": [{
            "name": "TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "agent-token", "key": "token", "optional": false}}
        }],
        "envFrom": [{"configMapRef": {"name": "agent-settings"}}],
        "resources": {"limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "settings", "readOnly": true, "mountPath": "/etc/agent"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
            "initialDelaySeconds": 5,
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3
        },
        "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}},
        "securityContext": {
            "runAsUser": 0,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}
        }
    })
}

#[test]
fn a_daemon_set_with_the_whole_pod_spec_decodes_as_go_encodes_it() {
    let daemon_set = apps::DaemonSet {
        metadata: meta("agent"),
        spec: Some(apps::DaemonSetSpec {
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_owned(), "agent".to_owned())].into(),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: [("app".to_owned(), "agent".to_owned())].into(),
                    creation_timestamp: Some(meta::Time::default()),
                    ..Default::default()
                }),
                spec: Some(pod_spec()),
            }),
            update_strategy: Some(apps::DaemonSetUpdateStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("10%"),
                    }),
                    max_surge: port(0),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
        }),
        status: Some(apps::DaemonSetStatus {
            current_number_scheduled: Some(0),
            number_misscheduled: Some(0),
            desired_number_scheduled: Some(0),
            number_ready: Some(0),
            ..Default::default()
        }),
    };
    let decoded = decode(&body("apps/v1", "DaemonSet", &daemon_set)).expect("decodes");
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "prod"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "containers": [container_json()],
                        "volumes": [
                            {
                                "name": "settings",
                                "configMap": {
                                    "name": "agent-settings",
                                    "items": [{"key": "agent.toml", "path": "agent.toml"}],
                                    "defaultMode": 420
                                }
                            },
                            {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
                        ],
                        "tolerations": [{
                            "key": "node-role.kubernetes.io/control-plane",
                            "operator": "Exists",
                            "effect": "NoSchedule"
                        }],
                        "affinity": {"nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": [{
                                    "key": "kubernetes.io/os", "operator": "In", "values": ["linux"]
                                }]}]
                            }
                        }},
                        "terminationGracePeriodSeconds": 0,
                        "hostNetwork": true,
                        "serviceAccountName": "agent"
                    }
                },
                "updateStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}
                },
                "revisionHistoryLimit": 10
            },
            // Go's JSON keeps these zeros: the fields have no omitempty.
            "status": {
                "currentNumberScheduled": 0,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": 0,
                "numberReady": 0
            }
        })
    );
}

fn micro_time(seconds: i64, nanos: i32) -> Option<meta::MicroTime> {
    Some(meta::MicroTime {
        seconds: Some(seconds),
        nanos: Some(nanos),
    })
}

fn time(seconds: i64) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    })
}

fn regarding() -> Option<core::ObjectReference> {
    Some(core::ObjectReference {
        kind: s("Service"),
        namespace: s("prod"),
        name: s("web"),
        uid: s("1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        api_version: s("gantry.dev/v1alpha1"),
        resource_version: s(""),
        field_path: s(""),
    })
}

#[test]
fn events_of_both_groups_decode_as_client_go_recorders_write_them() {
    // 2026-12-04T17:00:00.123456Z
    let at = 1_796_403_600;
    let event = events::Event {
        metadata: meta("web.187a"),
        event_time: micro_time(at, 123_456_000),
        series: Some(events::EventSeries {
            count: Some(2),
            last_observed_time: micro_time(at + 30, 0),
        }),
        reporting_controller: s("gantry.dev/controller"),
        reporting_instance: s("controller-0"),
        action: s("Placing"),
        reason: s("Unplaceable"),
        regarding: regarding(),
        related: None,
        note: s("no instance has 512 MiB free"),
        r#type: s("Warning"),
        deprecated_source: Some(core::EventSource::default()),
        deprecated_first_timestamp: Some(meta::Time::default()),
        deprecated_last_timestamp: Some(meta::Time::default()),
        deprecated_count: Some(0),
    };
    let regarding_json = json!({
        "kind": "Service",
        "namespace": "prod",
        "name": "web",
        "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "apiVersion": "gantry.dev/v1alpha1"
    });
    assert_eq!(
        decode(&body("events.k8s.io/v1", "Event", &event)).expect("decodes"),
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "web.187a", "namespace": "prod"},
            "eventTime": "2026-12-04T17:00:00.123456Z",
            "series": {"count": 2, "lastObservedTime": "2026-12-04T17:00:30.000000Z"},
            "reportingController": "gantry.dev/controller",
            "reportingInstance": "controller-0",
            "action": "Placing",
            "reason": "Unplaceable",
            "regarding": regarding_json,
            "note": "no instance has 512 MiB free",
            "type": "Warning",
            "deprecatedSource": {}
        })
    );

    let event = core::Event {
        metadata: meta("web.187b"),
        involved_object: regarding(),
        reason: s("Started"),
        message: s("task started"),
        source: Some(core::EventSource {
            component: s("gantry-agent"),
            host: s("host-1"),
        }),
        first_timestamp: time(at),
        last_timestamp: time(at + 60),
        count: Some(3),
        r#type: s("Normal"),
        event_time: Some(meta::MicroTime::default()),
        series: None,
        action: s(""),
        related: None,
        reporting_component: s(""),
        reporting_instance: s(""),
    };
    assert_eq!(
        decode(&body("v1", "Event", &event)).expect("decodes"),
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "web.187b", "namespace": "prod"},
            "involvedObject": regarding_json,
            "reason": "Started",
            "message": "task started",
            "source": {"component": "gantry-agent", "host": "host-1"},
            "firstTimestamp": "2026-12-04T17:00:00Z",
            "lastTimestamp": "2026-12-04T17:01:00Z",
            "count": 3,
            "type": "Normal"
        })
    );
}
