//! The validation rules of each kind, through the same validator the API
//! server applies: every rule accepts what ECS accepts and refuses the rest
//! with the field named, and the schema's defaults are ECS's defaults.

use apiserver::{FieldErrors, SchemaValidator};
use crds::v1alpha1::{
    ContainerInstance, DeploymentConfiguration, LoadBalancer, SchedulingStrategy, Service, Task,
    TaskDefinition,
};
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn validator<K: CustomResourceExt>() -> SchemaValidator {
    SchemaValidator::for_crd(&K::crd(), "v1alpha1").expect("schema compiles")
}

fn object(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "gantry.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec})
}

fn task_definition(spec: Value) -> Result<(), FieldErrors> {
    validator::<TaskDefinition>().validate(&object("TaskDefinition", spec), None)
}

fn service(spec: Value) -> Result<(), FieldErrors> {
    validator::<Service>().validate(&object("Service", spec), None)
}

/// Asserts that `result` failed and that one of its errors names `field`
/// with `detail` in its message.
#[track_caller]
fn refused(result: Result<(), FieldErrors>, field: &str, detail: &str) {
    let errors = result.expect_err("should be refused");
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.field == field && e.to_string().contains(detail)),
        "expected {field}: ...{detail}..., got {errors}"
    );
}

fn container(extra: Value) -> Value {
    let mut c = json!({"name": "app", "image": "busybox", "memory": 64});
    c.as_object_mut()
        .expect("object")
        .extend(extra.as_object().expect("object").clone());
    c
}

#[test]
fn a_minimal_task_definition_is_valid() {
    task_definition(json!({"containerDefinitions": [container(json!({}))]})).expect("valid");
}

#[test]
fn memory_must_be_set_on_the_task_or_on_every_container() {
    let bare = json!({"name": "app", "image": "busybox"});
    refused(
        task_definition(json!({"containerDefinitions": [bare.clone()]})),
        "spec.memory",
        "set task-level memory",
    );
    task_definition(json!({"memory": 128, "containerDefinitions": [bare]}))
        .expect("task-level memory");
    task_definition(
        json!({"containerDefinitions": [{"name": "a", "image": "b", "memoryReservation": 32}]}),
    )
    .expect("a reservation is enough");
}

#[test]
fn dependencies_name_another_container_with_a_fitting_condition() {
    let with_deps = |deps: Value, sidecar: Value| {
        let mut init = json!({"name": "init", "image": "busybox", "memory": 16});
        init.as_object_mut()
            .expect("object")
            .extend(sidecar.as_object().expect("object").clone());
        task_definition(
            json!({"containerDefinitions": [container(json!({"dependsOn": deps})), init]}),
        )
    };
    let check = json!({"command": ["CMD", "true"]});
    with_deps(
        json!([{"containerName": "init", "condition": "SUCCESS"}]),
        json!({"essential": false}),
    )
    .expect("SUCCESS on a non-essential init container");
    with_deps(
        json!([{"containerName": "init", "condition": "HEALTHY"}]),
        json!({"essential": true, "healthCheck": check}),
    )
    .expect("HEALTHY on a checked container");
    refused(
        with_deps(
            json!([{"containerName": "nope", "condition": "START"}]),
            json!({"essential": true}),
        ),
        "spec.containerDefinitions",
        "dependsOn must name another container",
    );
    refused(
        with_deps(
            json!([{"containerName": "app", "condition": "START"}]),
            json!({"essential": true}),
        ),
        "spec.containerDefinitions",
        "dependsOn must name another container",
    );
    refused(
        with_deps(
            json!([{"containerName": "init", "condition": "COMPLETE"}]),
            json!({"essential": true}),
        ),
        "spec.containerDefinitions",
        "non-essential",
    );
    refused(
        with_deps(
            json!([{"containerName": "init", "condition": "HEALTHY"}]),
            json!({"essential": true}),
        ),
        "spec.containerDefinitions",
        "with a healthCheck",
    );
}

#[test]
fn host_network_mode_publishes_container_ports_as_they_are() {
    let ports = |host_port: u16| {
        json!({"networkMode": "host", "containerDefinitions": [container(json!({
            "portMappings": [{"containerPort": 8080, "hostPort": host_port}]
        }))]})
    };
    task_definition(ports(8080)).expect("hostPort == containerPort");
    task_definition(ports(0)).expect("hostPort omitted");
    refused(
        task_definition(ports(80)),
        "spec.containerDefinitions",
        "host network mode",
    );
}

#[test]
fn the_same_host_port_may_serve_tcp_and_udp() {
    task_definition(
        json!({"containerDefinitions": [container(json!({"portMappings": [
            {"containerPort": 53, "hostPort": 53, "protocol": "tcp"},
            {"containerPort": 53, "hostPort": 53, "protocol": "udp"}
        ]}))]}),
    )
    .expect("one port per protocol");
    refused(
        task_definition(
            json!({"containerDefinitions": [container(json!({"portMappings": [
                {"containerPort": 53, "hostPort": 53},
                {"containerPort": 54, "hostPort": 53}
            ]}))]}),
        ),
        "spec.containerDefinitions",
        "hostPort must be unique",
    );
}

#[test]
fn health_checks_are_docker_commands_within_ecs_ranges() {
    let check = |hc: Value| {
        task_definition(json!({"containerDefinitions": [container(json!({"healthCheck": hc}))]}))
    };
    check(json!({"command": ["CMD-SHELL", "curl -f localhost"]})).expect("valid");
    refused(
        check(json!({"command": ["curl", "-f", "localhost"]})),
        "spec.containerDefinitions[0].healthCheck.command",
        "must start with CMD or CMD-SHELL",
    );
    refused(
        check(json!({"command": ["CMD", "true"], "interval": 1})),
        "spec.containerDefinitions[0].healthCheck.interval",
        "greater than or equal to 5",
    );
}

#[test]
fn mount_points_refer_to_declared_volumes() {
    let mount = json!({"mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]});
    refused(
        task_definition(json!({"containerDefinitions": [container(mount.clone())]})),
        "spec.volumes",
        "must name one of volumes",
    );
    task_definition(json!({
        "volumes": [{"name": "data", "host": {"sourcePath": "/srv/data"}}],
        "containerDefinitions": [container(mount)]
    }))
    .expect("declared volume");
}

#[test]
fn secrets_name_a_secret_or_config_map_key() {
    let with = |value_from: &str| {
        task_definition(json!({"containerDefinitions": [container(
            json!({"secrets": [{"name": "DB_PASSWORD", "valueFrom": value_from}]}),
        )]}))
    };
    with("secret:db-credentials:password").expect("a Secret key");
    with("configmap:app.config:LOG_LEVEL").expect("a ConfigMap key");
    for bad in [
        "arn:aws:secretsmanager:us-east-1:1:secret:db",
        "secret:db",
        "secret:DB:password",
        "secret:db:pass word",
        "vault:db:password",
    ] {
        refused(
            with(bad),
            "spec.containerDefinitions[0].secrets[0].valueFrom",
            "should match",
        );
    }
}

#[test]
fn environment_files_are_config_map_keys_of_name_value_lines() {
    let with = |value: &str| {
        task_definition(json!({"containerDefinitions": [container(
            json!({"environmentFiles": [{"value": value, "type": "configmap"}]}),
        )]}))
    };
    with("configmap:app:app.env").expect("a ConfigMap key");
    refused(
        with("secret:app:app.env"),
        "spec.containerDefinitions[0].environmentFiles[0].value",
        "should match",
    );
    refused(
        with("arn:aws:s3:::bucket/app.env"),
        "spec.containerDefinitions[0].environmentFiles[0].value",
        "should match",
    );
    let parsed = crds::v1alpha1::EnvironmentFile::parse(
        "# a comment\nA=1\n\n  B = two words=x\nnot a variable\n=nameless\n",
    );
    assert_eq!(
        parsed,
        [
            ("A".into(), "1".into()),
            ("B".into(), " two words=x".into())
        ]
    );
}

#[test]
fn docker_settings_take_ecs_values() {
    let with = |extra: Value| task_definition(json!({"containerDefinitions": [container(extra)]}));
    with(json!({
        "user": "1000:1000", "workingDirectory": "/srv", "privileged": true,
        "readonlyRootFilesystem": true, "hostname": "web-1",
        "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
        "linuxParameters": {"initProcessEnabled": true, "sharedMemorySize": 64,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]},
            "tmpfs": [{"containerPath": "/scratch", "size": 16, "mountOptions": ["noexec", "mode=1777"]}]},
        "dockerLabels": {"team": "web"},
        "dnsServers": ["10.0.0.10", "fd00::53"], "dnsSearchDomains": ["svc.example"],
        "extraHosts": [{"hostname": "db.internal", "ipAddress": "10.0.0.5"}],
        "imagePullPolicy": "Always",
        "repositoryCredentials": {"credentialsParameter": "registry-login"},
    }))
    .expect("every setting");
    let field = "spec.containerDefinitions[0]";
    for (extra, at, detail) in [
        (
            json!({"workingDirectory": "srv"}),
            ".workingDirectory",
            "should match",
        ),
        (
            json!({"ulimits": [{"name": "files", "softLimit": 1, "hardLimit": 1}]}),
            ".ulimits[0].name",
            "Unsupported value",
        ),
        (
            json!({"ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 1}]}),
            ".ulimits[0].softLimit",
            "must not exceed hardLimit",
        ),
        (
            json!({"linuxParameters": {"capabilities": {"add": ["NET_ADMIN", "CAP_CHOWN"]}}}),
            ".linuxParameters.capabilities.add[1]",
            "Unsupported value",
        ),
        (
            json!({"linuxParameters": {"tmpfs": [{"containerPath": "/t", "size": 0}]}}),
            ".linuxParameters.tmpfs[0].size",
            "should be greater than or equal to 1",
        ),
        (
            json!({"linuxParameters": {"tmpfs": [{"containerPath": "/t", "size": 1, "mountOptions": ["exec=yes"]}]}}),
            ".linuxParameters.tmpfs[0].mountOptions[0]",
            "should match",
        ),
        (
            json!({"dockerLabels": {"gantry.dev/task-uid": "x"}}),
            ".dockerLabels",
            "not under gantry.dev/",
        ),
        (
            json!({"dnsServers": ["dns.example"]}),
            ".dnsServers[0]",
            "should match",
        ),
        (
            json!({"dnsServers": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]}),
            ".dnsServers",
            "must have at most 3 items",
        ),
        (
            json!({"extraHosts": [{"hostname": "db", "ipAddress": "not-an-ip"}]}),
            ".extraHosts[0].ipAddress",
            "should match",
        ),
        (json!({"hostname": "web_1"}), ".hostname", "should match"),
        (
            json!({"imagePullPolicy": "Never"}),
            ".imagePullPolicy",
            "Unsupported value",
        ),
        (
            json!({"repositoryCredentials": {"credentialsParameter": "arn:aws:secret"}}),
            ".repositoryCredentials.credentialsParameter",
            "should match",
        ),
    ] {
        refused(with(extra), &format!("{field}{at}"), detail);
    }
    refused(
        task_definition(
            json!({"networkMode": "host", "containerDefinitions": [container(json!({"hostname": "web"}))]}),
        ),
        "spec.containerDefinitions",
        "hostname cannot be set with networkMode host",
    );
    let none = |ports: Value| {
        task_definition(json!({"networkMode": "none", "containerDefinitions": [container(ports)]}))
    };
    none(json!({})).expect("no network");
    refused(
        none(json!({"portMappings": [{"containerPort": 80}]})),
        "spec.containerDefinitions",
        "networkMode none takes no portMappings",
    );
}

#[test]
fn a_task_definition_allows_only_member_of_constraints() {
    let with = |c: Value| {
        task_definition(
            json!({"containerDefinitions": [container(json!({}))], "placementConstraints": [c]}),
        )
    };
    with(json!({"type": "memberOf", "expression": "attribute:ecs.os-type == linux"}))
        .expect("memberOf");
    refused(
        with(json!({"type": "distinctInstance"})),
        "spec.placementConstraints",
        "only memberOf",
    );
}

#[test]
fn strategies_take_the_fields_ecs_documents() {
    let with = |s: Value| {
        service(json!({"taskDefinition": "web", "desiredCount": 1, "placementStrategy": [s]}))
    };
    for ok in [
        json!({"type": "binpack", "field": "memory"}),
        json!({"type": "spread", "field": "attribute:ecs.availability-zone"}),
        json!({"type": "spread", "field": "instanceId"}),
        json!({"type": "random"}),
    ] {
        with(ok.clone()).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    refused(
        with(json!({"type": "binpack", "field": "disk"})),
        "spec.placementStrategy[0].field",
        "cpu or memory",
    );
    refused(
        with(json!({"type": "spread"})),
        "spec.placementStrategy[0].field",
        "spread needs field",
    );
    refused(
        with(json!({"type": "random", "field": "cpu"})),
        "spec.placementStrategy[0].field",
        "random takes no field",
    );
}

#[test]
fn daemon_services_have_no_count_and_no_strategy() {
    service(json!({"taskDefinition": "agent", "schedulingStrategy": "DAEMON"}))
        .expect("valid daemon");
    service(
        json!({"taskDefinition": "agent", "schedulingStrategy": "DAEMON",
        "preemptReplicaTasks": true}),
    )
    .expect("a daemon may preempt");
    refused(
        service(
            json!({"taskDefinition": "agent", "schedulingStrategy": "DAEMON",
            "rebalancing": "ENABLED"}),
        ),
        "spec.rebalancing",
        "is not rebalanced",
    );
    service(json!({"taskDefinition": "web", "desiredCount": 2, "rebalancing": "ENABLED"}))
        .expect("a replica service may rebalance");
    refused(
        service(json!({"taskDefinition": "web", "desiredCount": 2, "rebalancing": "SOMETIMES"})),
        "spec.rebalancing",
        "",
    );
    refused(
        service(json!({"taskDefinition": "web", "desiredCount": 2, "preemptReplicaTasks": true})),
        "spec.preemptReplicaTasks",
        "only a DAEMON service preempts replica tasks",
    );
    refused(
        service(
            json!({"taskDefinition": "agent", "schedulingStrategy": "DAEMON", "desiredCount": 3}),
        ),
        "spec.desiredCount",
        "DAEMON",
    );
    refused(
        service(
            json!({"taskDefinition": "agent", "schedulingStrategy": "DAEMON", "placementStrategy": [{"type": "random"}]}),
        ),
        "spec.placementStrategy",
        "DAEMON",
    );
    refused(
        service(
            json!({"taskDefinition": "agent", "schedulingStrategy": "DAEMON", "deploymentConfiguration": {"maximumPercent": 200}}),
        ),
        "spec.deploymentConfiguration.maximumPercent",
        "must be 100",
    );
}

#[test]
fn deployment_bounds_default_per_scheduling_strategy() {
    let unset = DeploymentConfiguration::default();
    assert_eq!(unset.bounds(SchedulingStrategy::Replica), (100, 200));
    assert_eq!(unset.bounds(SchedulingStrategy::Daemon), (0, 100));
    let set = DeploymentConfiguration {
        minimum_healthy_percent: Some(50),
        maximum_percent: Some(150),
        ..Default::default()
    };
    assert_eq!(set.bounds(SchedulingStrategy::Replica), (50, 150));
}

#[test]
fn instance_attributes_follow_ecs_naming() {
    let with = |attrs: Value| {
        validator::<ContainerInstance>().validate(
            &object(
                "ContainerInstance",
                json!({"registeredResources": {"cpu": 1024, "memory": 512}, "attributes": attrs}),
            ),
            None,
        )
    };
    with(json!({"ecs.availability-zone": "az-1", "stack": "prod"})).expect("valid");
    refused(
        with(json!({"bad name": "x"})),
        "spec.attributes",
        "attribute names",
    );
    refused(
        with(json!({"stack": ""})),
        "spec.attributes",
        "attribute values",
    );
}

fn task(spec: Value) -> Value {
    object("Task", spec)
}

#[test]
fn a_binding_is_permanent() {
    let v = validator::<Task>();
    let unbound = task(json!({"taskDefinition": "web"}));
    let bound = task(json!({"taskDefinition": "web", "containerInstance": "host-1"}));
    let moved = task(json!({"taskDefinition": "web", "containerInstance": "host-2"}));
    v.validate(&bound, Some(&unbound))
        .expect("binding an unbound task");
    refused(
        v.validate(&moved, Some(&bound)),
        "spec.containerInstance",
        "immutable once bound",
    );
    refused(
        v.validate(&unbound, Some(&bound)),
        "spec.containerInstance",
        "immutable once bound",
    );
}

#[test]
fn a_stopped_task_stays_stopped_and_keeps_its_definition() {
    let v = validator::<Task>();
    let running = task(json!({"taskDefinition": "web"}));
    let stopped = task(json!({"taskDefinition": "web", "desiredStatus": "STOPPED"}));
    v.validate(&stopped, Some(&running)).expect("stopping");
    refused(
        v.validate(&running, Some(&stopped)),
        "spec.desiredStatus",
        "cannot be started again",
    );
    refused(
        v.validate(&task(json!({"taskDefinition": "db"})), Some(&running)),
        "spec.taskDefinition",
        "immutable",
    );
}

#[test]
fn a_snapshot_comes_with_its_revision_and_never_changes() {
    let v = validator::<Task>();
    let definition = json!({"containerDefinitions": [container(json!({}))]});
    let snap = |rev: i64, image: &str| {
        let mut d = definition.clone();
        d["containerDefinitions"][0]["image"] = json!(image);
        task(json!({"taskDefinition": "web", "taskDefinitionRevision": rev, "definition": d}))
    };
    v.validate(&snap(3, "busybox"), None)
        .expect("snapshot with revision");
    refused(
        v.validate(
            &task(json!({"taskDefinition": "web", "definition": definition})),
            None,
        ),
        "spec.taskDefinitionRevision",
        "set together",
    );
    refused(
        v.validate(&snap(3, "nginx"), Some(&snap(3, "busybox"))),
        "spec.definition",
        "immutable",
    );
    refused(
        v.validate(&snap(4, "busybox"), Some(&snap(3, "busybox"))),
        "spec.definition",
        "immutable",
    );
}

/// The defaults the server fills in are the ones the Rust types assume, so
/// a controller reading a stored object sees what the user meant.
#[test]
fn schema_defaults_match_ecs_and_the_rust_types() {
    let td = object(
        "TaskDefinition",
        json!({"containerDefinitions": [{
            "name": "app", "image": "busybox", "memory": 64,
            "portMappings": [{"containerPort": 80}],
            "healthCheck": {"command": ["CMD", "true"]}
        }]}),
    );
    let defaulted = validator::<TaskDefinition>().default(&td);
    let c = &defaulted["spec"]["containerDefinitions"][0];
    assert_eq!(c["essential"], true);
    assert_eq!(c["stopTimeout"], 30);
    assert_eq!(c["portMappings"][0]["hostPort"], 0);
    assert_eq!(c["portMappings"][0]["protocol"], "tcp");
    assert_eq!(c["healthCheck"]["interval"], 30);
    assert_eq!(c["healthCheck"]["timeout"], 5);
    assert_eq!(c["healthCheck"]["retries"], 3);
    assert_eq!(defaulted["spec"]["networkMode"], "bridge");
    let typed: TaskDefinition = serde_json::from_value(td).expect("deserializes");
    assert_eq!(
        serde_json::to_value(&typed.spec).expect("serializes"),
        defaulted["spec"]
    );

    let svc = object(
        "Service",
        json!({"taskDefinition": "web", "desiredCount": 2}),
    );
    let defaulted = validator::<Service>().default(&svc);
    assert_eq!(defaulted["spec"]["schedulingStrategy"], "REPLICA");
    assert_eq!(defaulted["spec"]["schedulerName"], "gantry");
    assert_eq!(defaulted["spec"]["healthCheckGracePeriodSeconds"], 0);
    let typed: Service = serde_json::from_value(svc).expect("deserializes");
    assert_eq!(
        serde_json::to_value(&typed.spec).expect("serializes"),
        defaulted["spec"]
    );

    let t = task(json!({"taskDefinition": "web"}));
    let defaulted = validator::<Task>().default(&t);
    assert_eq!(defaulted["spec"]["desiredStatus"], "RUNNING");
    let typed: Task = serde_json::from_value(t).expect("deserializes");
    assert_eq!(
        serde_json::to_value(&typed.spec).expect("serializes"),
        defaulted["spec"]
    );
}

fn load_balancer(spec: Value) -> Result<(), FieldErrors> {
    validator::<LoadBalancer>().validate(&object("LoadBalancer", spec), None)
}

#[test]
fn load_balancers_take_elb_target_group_settings() {
    load_balancer(json!({"listeners": [{"port": 80}, {"port": 9000, "protocol": "TCP"}]}))
        .expect("valid");
    refused(
        load_balancer(json!({"listeners": [{"port": 80}, {"port": 80, "protocol": "TCP"}]})),
        "spec.listeners",
        "listener ports must be distinct",
    );
    refused(
        load_balancer(json!({"listeners": []})),
        "spec.listeners",
        "",
    );
    refused(
        load_balancer(json!({"listeners": [{"port": 80}],
            "healthCheck": {"intervalSeconds": 5, "timeoutSeconds": 5}})),
        "spec.healthCheck.timeoutSeconds",
        "less than intervalSeconds",
    );
    refused(
        load_balancer(json!({"listeners": [{"port": 80}],
            "healthCheck": {"successCodes": "200-299,500"}})),
        "spec.healthCheck.successCodes",
        "",
    );
    load_balancer(json!({"listeners": [{"port": 80}],
        "healthCheck": {"successCodes": "200,300-399"}}))
    .expect("codes and ranges");
    refused(
        load_balancer(json!({"listeners": [{"port": 80}], "deregistrationDelaySeconds": 3601})),
        "spec.deregistrationDelaySeconds",
        "",
    );
    refused(
        load_balancer(json!({"listeners": [{"port": 80}], "algorithm": "random"})),
        "spec.algorithm",
        "",
    );
}

#[test]
fn a_service_names_each_load_balancer_once_and_at_most_five() {
    let entry =
        |lb: &str| json!({"loadBalancerName": lb, "containerName": "web", "containerPort": 80});
    service(json!({"taskDefinition": "web", "desiredCount": 1,
        "loadBalancers": [entry("a"), entry("b")]}))
    .expect("valid");
    refused(
        service(json!({"taskDefinition": "web", "desiredCount": 1,
            "loadBalancers": [entry("a"), entry("a")]})),
        "spec.loadBalancers",
        "a load balancer may be named only once",
    );
    let six = ["a", "b", "c", "d", "e", "f"].map(entry);
    refused(
        service(json!({"taskDefinition": "web", "desiredCount": 1, "loadBalancers": six})),
        "spec.loadBalancers",
        "",
    );
}

#[test]
fn a_scheduled_task_is_named_for_its_tasks_and_its_schedule_has_eventbridge_s_shape() {
    use crds::v1alpha1::ScheduledTask;
    let check = |name: &str, spec: Value| {
        let mut object = object("ScheduledTask", spec);
        object["metadata"]["name"] = json!(name);
        validator::<ScheduledTask>().validate(&object, None)
    };
    let spec = |schedule: &str| json!({"schedule": schedule, "taskDefinition": "batch"});
    for schedule in [
        "rate(1 minute)",
        "rate(15 minutes)",
        "rate(2 days)",
        "cron(0 9 ? * 2-6 *)",
        "cron(0/5 * * * ? *)",
    ] {
        check("nightly", spec(schedule)).unwrap_or_else(|e| panic!("{schedule}: {e}"));
    }
    for schedule in [
        "rate(1 week)",
        "rate(0 minutes)",
        "cron(0 9 * * *)",
        "every day",
    ] {
        refused(check("nightly", spec(schedule)), "spec.schedule", "");
    }
    let fifty_one = "a".repeat(51);
    refused(
        check(&fifty_one, spec("rate(1 hour)")),
        "",
        "at most 50 characters",
    );
    check(&"a".repeat(50), spec("rate(1 hour)")).expect("fifty is enough");
    let mut zoned = spec("rate(1 hour)");
    zoned["scheduleExpressionTimezone"] = json!("Europe/Paris");
    refused(
        check("nightly", zoned),
        "spec.scheduleExpressionTimezone",
        "cron schedules only",
    );
    refused(
        check(
            "nightly",
            json!({"schedule": "rate(1 hour)", "taskDefinition": "batch", "count": 11}),
        ),
        "spec.count",
        "",
    );
}

#[test]
fn auto_scaling_keeps_min_below_max_tracks_each_metric_once_and_skips_daemons() {
    let policy = |metric: &str| json!({"metric": metric, "target": 50});
    let replica = |scaling: Value| {
        service(json!({"taskDefinition": "web", "desiredCount": 2, "autoScaling": scaling}))
    };
    replica(json!({"minCapacity": 1, "maxCapacity": 4,
        "targetTracking": [policy("CPUUtilization"), policy("MemoryUtilization")]}))
    .expect("valid");
    refused(
        replica(json!({"minCapacity": 5, "maxCapacity": 4,
            "targetTracking": [policy("CPUUtilization")]})),
        "spec.autoScaling.minCapacity",
        "minCapacity must be at most maxCapacity",
    );
    refused(
        replica(json!({"minCapacity": 1, "maxCapacity": 4,
            "targetTracking": [policy("CPUUtilization"), policy("CPUUtilization")]})),
        "spec.autoScaling.targetTracking",
        "a metric may be tracked only once",
    );
    refused(
        replica(json!({"minCapacity": 1, "maxCapacity": 4, "targetTracking": []})),
        "spec.autoScaling.targetTracking",
        "",
    );
    refused(
        replica(json!({"minCapacity": 1, "maxCapacity": 4,
            "targetTracking": [{"metric": "CPUUtilization", "target": 150}]})),
        "spec.autoScaling.targetTracking[0].target",
        "",
    );
    refused(
        replica(json!({"minCapacity": 1, "maxCapacity": 4,
            "targetTracking": [{"metric": "RequestCount", "target": 50}]})),
        "spec.autoScaling.targetTracking[0].metric",
        "",
    );
    // An auto scaled service may leave its count to auto scaling; any
    // other REPLICA service must give one.
    service(
        json!({"taskDefinition": "web", "autoScaling": {"minCapacity": 2,
        "maxCapacity": 4, "targetTracking": [policy("CPUUtilization")]}}),
    )
    .expect("valid without desiredCount");
    refused(
        service(json!({"taskDefinition": "web"})),
        "spec.desiredCount",
        "a REPLICA service needs desiredCount (or autoScaling",
    );
    // An auto scaled service may leave its count to auto scaling; any
    // other REPLICA service must give one.
    service(
        json!({"taskDefinition": "web", "autoScaling": {"minCapacity": 2,
        "maxCapacity": 4, "targetTracking": [policy("CPUUtilization")]}}),
    )
    .expect("valid without desiredCount");
    refused(
        service(json!({"taskDefinition": "web"})),
        "spec.desiredCount",
        "a REPLICA service needs desiredCount (or autoScaling",
    );
    refused(
        service(
            json!({"taskDefinition": "agent", "schedulingStrategy": "DAEMON",
            "autoScaling": {"minCapacity": 1, "maxCapacity": 4,
                "targetTracking": [policy("CPUUtilization")]}}),
        ),
        "spec.autoScaling",
        "takes no autoScaling",
    );
}
