//! The Kubernetes manifests of `deploy/kubernetes/`: each passes Kubernetes' own schemas
//! (kubernetes-validate, strict, so an unknown or misspelt field fails), and what the schemas
//! cannot know is checked against the service itself: the probes' paths are in its OpenAPI
//! document, their port is the one it listens on, the termination grace outlasts its shutdown
//! grace, and the settings are ones it reads. The validator and PyYAML live in `.venv/`, which
//! the README's test command (`.ci/test`) installs from `tests/kubernetes/requirements.txt`.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use serde_json::Value;

/// The Kubernetes versions validated against: an old one still run by managed clusters, and
/// the newest the pinned validator knows (its default).
const VERSIONS: &[Option<&str>] = &[Some("1.30.0"), None];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// A program of `.venv/bin`, or a failure that says how to install it.
fn venv_tool(name: &str) -> PathBuf {
    let path = root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `.ci/test` (the README's test command), which installs \
         tests/kubernetes/requirements.txt into .venv/",
        path.display()
    );
    path
}

/// Every manifest file, as JSON documents (through tests/kubernetes/manifests.py).
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let out = Command::new(venv_tool("python"))
        .arg(root().join("tests/kubernetes/manifests.py"))
        .arg(manifest_dir())
        .output()
        .expect("run tests/kubernetes/manifests.py");
    assert!(
        out.status.success(),
        "manifests.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("manifests.py prints JSON")
}

/// The one document of `kind` in all files.
fn the(kind: &str) -> Value {
    let found: Vec<Value> = manifests()
        .into_values()
        .flatten()
        .filter(|doc| doc["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found.into_iter().next().unwrap()
}

/// The files that are Kubernetes objects (all but kustomization.yaml).
fn object_files() -> Vec<String> {
    manifests()
        .into_keys()
        .filter(|f| f != "kustomization.yaml")
        .collect()
}

/// The settings as the service has them by default (with the required ones made up).
fn default_settings() -> clerk_users::settings::Settings {
    clerk_users::settings::Settings::from_overrides(&[
        (
            "database_url",
            "postgres://clerk_users@localhost/clerk_users",
        ),
        ("clerk_secret_key", "sk_test_kubernetes"),
        ("clerk_issuer", "https://clerk.example.com"),
    ])
    .expect("default settings")
}

#[test]
fn kubernetes_manifests_pass_the_schemas_strictly() {
    let validator = venv_tool("kubernetes-validate");
    let files = object_files();
    assert!(files.len() >= 7, "too few manifests: {files:?}");
    for file in &files {
        for version in VERSIONS {
            let mut cmd = Command::new(&validator);
            cmd.arg("--strict").current_dir(manifest_dir());
            if let Some(v) = version {
                cmd.args(["--kubernetes-version", v]);
            }
            let out = cmd.arg(file).output().expect("run kubernetes-validate");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // A kind it has no schema for is only a warning there: a failure here.
            assert!(
                out.status.success() && !text.contains("ERROR") && !text.contains("WARN"),
                "{file} (Kubernetes {}): {text}",
                version.unwrap_or("newest")
            );
            assert!(text.contains("passed"), "{file}: {text}");
        }
    }
}

#[test]
fn kubernetes_kustomization_lists_every_manifest_but_the_secret_example() {
    let all = manifests();
    let kustomization = &all["kustomization.yaml"][0];
    assert_eq!(kustomization["kind"], "Kustomization");
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = object_files()
        .into_iter()
        .filter(|f| f != "secret.example.yaml")
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    // The image it rewrites is the one the Deployment and the Job name.
    let image = kustomization["images"][0]["name"].as_str().unwrap();
    for kind in ["Deployment", "Job"] {
        for c in the(kind)["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
        {
            assert_eq!(c["image"].as_str().unwrap().split(':').next(), Some(image));
        }
    }
}

#[test]
fn kubernetes_probes_point_at_real_paths_and_port() {
    let spec: Value = serde_json::from_str(&clerk_users::api::openapi_service().spec()).unwrap();
    let deployment = the("Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    let port_number = port["containerPort"].as_u64().unwrap();

    // The port the service listens on: LISTEN_ADDR as the Deployment sets it, else the default.
    let listen = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "LISTEN_ADDR")
        .map(|e| e["value"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| default_settings().listen_addr.to_string());
    let listen: std::net::SocketAddr = listen.parse().unwrap();
    assert_eq!(u64::from(listen.port()), port_number);
    assert!(
        listen.ip().is_unspecified(),
        "{listen}: the kubelet probes the pod's address, not loopback"
    );

    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(
            spec["paths"][path]["get"].is_object(),
            "{probe}: GET {path} is not in the OpenAPI document"
        );
        let probe_port = &get["port"];
        assert!(
            probe_port == &port["name"] || probe_port.as_u64() == Some(port_number),
            "{probe}: port {probe_port}"
        );
    }

    // The Service sends traffic to that port, and selects these pods.
    let service = the("Service");
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(target == &port["name"] || target.as_u64() == Some(port_number));
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&service["spec"]["selector"], pod_labels);
    assert_eq!(
        &deployment["spec"]["selector"]["matchLabels"], pod_labels,
        "Deployment selector"
    );
    assert_eq!(
        &the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        pod_labels
    );
    let hpa = the("HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the HorizontalPodAutoscaler owns the replica count"
    );
}

#[test]
fn kubernetes_termination_grace_outlasts_the_shutdown_grace() {
    let default_grace = default_settings().shutdown_grace.as_secs();
    // The ConfigMap may set its own; it must then be what the pods get.
    let configured = the("ConfigMap")["data"]["SHUTDOWN_GRACE_SECS"]
        .as_str()
        .map(|s| s.parse::<u64>().unwrap());
    let grace = configured.unwrap_or(default_grace).max(default_grace);

    let pod = &the("Deployment")["spec"]["template"]["spec"];
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    // The preStop pause counts against the termination grace period too.
    let pause = match &pod["containers"][0]["lifecycle"]["preStop"] {
        Value::Null => 0,
        pre_stop => {
            let command = pre_stop["exec"]["command"].as_array().unwrap();
            assert!(command[0].as_str().unwrap().ends_with("sleep"));
            command[1].as_str().unwrap().parse::<u64>().unwrap()
        }
    };
    assert!(
        termination > pause + grace,
        "terminationGracePeriodSeconds {termination} must exceed the preStop pause {pause} \
         plus SHUTDOWN_GRACE_SECS {grace}"
    );
    assert!(termination > default_grace);
}

#[test]
fn kubernetes_pods_run_locked_down_with_resources() {
    for kind in ["Deployment", "Job"] {
        let pod = &the(kind)["spec"]["template"]["spec"];
        let ctx = &pod["securityContext"];
        assert_eq!(ctx["runAsNonRoot"], true, "{kind}");
        assert_eq!(ctx["runAsUser"], 10001, "{kind}: the image's user");
        assert_eq!(ctx["seccompProfile"]["type"], "RuntimeDefault", "{kind}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{kind}");
        for c in pod["containers"].as_array().unwrap() {
            let ctx = &c["securityContext"];
            assert_eq!(ctx["readOnlyRootFilesystem"], true, "{kind}");
            assert_eq!(ctx["allowPrivilegeEscalation"], false, "{kind}");
            assert_eq!(
                ctx["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{kind}"
            );
            for side in ["requests", "limits"] {
                for what in ["cpu", "memory"] {
                    assert!(
                        c["resources"][side][what].is_string(),
                        "{kind}: {side}.{what}"
                    );
                }
            }
            // At most 64 MiB with the caches full: a limit below that would kill a busy pod.
            let limit = c["resources"]["limits"]["memory"].as_str().unwrap();
            let mib: u64 = limit
                .strip_suffix("Mi")
                .expect("memory in Mi")
                .parse()
                .unwrap();
            assert!(mib >= 96, "{kind}: memory limit {limit}");
            // Settings come from the ConfigMap and the Secret of secret.example.yaml.
            let refs = |r: &str| -> Vec<Value> {
                c["envFrom"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e[r]["name"].clone())
                    .filter(|n| !n.is_null())
                    .collect()
            };
            assert_eq!(
                refs("configMapRef"),
                [the("ConfigMap")["metadata"]["name"].clone()],
                "{kind}"
            );
            assert_eq!(
                refs("secretRef"),
                [the("Secret")["metadata"]["name"].clone()],
                "{kind}"
            );
        }
    }
}

#[test]
fn kubernetes_settings_are_ones_the_service_reads() {
    let known = |key: &str| {
        let key = key.to_lowercase();
        clerk_users::settings::keys().contains(&key.as_str())
    };
    for (kind, field) in [("ConfigMap", "data"), ("Secret", "stringData")] {
        let doc = the(kind);
        let map = doc[field].as_object().unwrap();
        assert!(!map.is_empty());
        for key in map.keys() {
            assert!(
                known(key),
                "{kind} sets {key}, which the service does not read"
            );
        }
    }
    // Secrets never sit in the ConfigMap.
    let config_map = the("ConfigMap");
    for secret in [
        "DATABASE_URL",
        "DATABASE_DIRECT_URL",
        "CLERK_SECRET_KEY",
        "CLERK_WEBHOOK_SECRET",
    ] {
        assert!(
            config_map["data"].get(secret).is_none(),
            "{secret} in the ConfigMap"
        );
    }
    // And the Job migrates what the Deployment serves.
    let job_args = &the("Job")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(job_args, &serde_json::json!(["migrate"]));
}
