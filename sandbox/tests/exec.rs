//! `kubectl exec` against the sandbox, checked as a user would check it from inside the
//! cluster: a curl to a Service by name, the container's environment and working directory,
//! exit codes, stdin, stderr apart from stdout, a terminal, the errors a real server gives,
//! and the command gone once the client is. Over both of kubectl's transports (WebSocket
//! v5, and SPDY with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`) and kube-rs's WebSocket. One
//! sandbox serves every scenario.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures::SinkExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, TerminalSize};
use tether_tests::sandbox::Sandbox;
use tether_tests::{COMMAND_DEADLINE, Proc, wait_for, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// `MARKER` makes the client container's process findable in /proc.
fn manifest(marker: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{COLOR: blue, SIZE: large}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: http
        image: tether-sandbox/http-echo
        args: ["--port", "8080"]
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      containers:
      - name: main
        image: tether-sandbox/host
        command: ["sleep", "3600"]
        workingDir: /tmp
        envFrom: [{{configMapRef: {{name: settings}}}}]
        env:
        - {{name: MARKER, value: "{marker}"}}
        - {{name: GREETING, value: "hello $(COLOR)"}}
      - name: side
        image: tether-sandbox/host
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: pending}}
spec:
  containers:
  - name: main
    image: registry.example/not-mapped:1
"#
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// kubectl exec over one transport.
struct Exec<'a> {
    sb: &'a Sandbox,
    websockets: bool,
}

impl Exec<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.sb.kubectl_cmd(&[&["exec"], args].concat());
        let websockets = if self.websockets { "true" } else { "false" };
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        tether_tests::run(&mut self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl exec {args:?} (websockets: {}) failed:\n{}{}",
            self.websockets,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl exec");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        std::io::Write::write_all(&mut stdin, input).expect("write stdin");
        drop(stdin);
        let what = format!("kubectl exec {args:?}");
        tether_tests::finish(child, &what, COMMAND_DEADLINE).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// What a user checks from inside the cluster, over one transport.
fn from_inside(ex: &Exec, pod: &str) {
    let c = ["-c", "main", pod, "--"];
    let body = ex.ok(&[
        &c[..],
        &["curl", "-sS", "--max-time", "10", "http://web/inside"],
    ]
    .concat());
    assert!(body.contains("path: /inside"), "{body}");
    let dns = ex.ok(&[&c[..], &["cat", "/etc/resolv.conf"]].concat());
    assert!(dns.contains("nameserver 10.96.0.10"), "{dns}");
    let host = ex.ok(&[&c[..], &["sh", "-c", "pwd; hostname"]].concat());
    assert_eq!(host, format!("/tmp\n{pod}\n"));

    let out = ex.run(&[&c[..], &["sh", "-c", "echo out; echo err >&2; exit 3"]].concat());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("err\n") && stderr.contains("command terminated with exit code 3"),
        "{stderr}"
    );
    let out = ex.run(&[&c[..], &["sh", "-c", "kill -9 $$"]].concat());
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));

    let input: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = ex.with_stdin(&[&["-i"], &c[..], &["cat"]].concat(), &input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout == input,
        "cat returned {} bytes",
        out.stdout.len()
    );
    let out = ex.with_stdin(
        &[&["-i"], &c[..], &["sh", "-c", "wc -c; exit 4"]].concat(),
        b"hi\n",
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).trim()),
        (Some(4), "3")
    );

    // A process left in the background holds the output open; the exec still ends.
    let started = std::time::Instant::now();
    let out = ex.ok(&[&c[..], &["sh", "-c", "sleep 300 & echo started"]].concat());
    assert_eq!(out, "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    let missing = ex.run(&[&c[..], &["no-such-program"]].concat());
    let stderr = text(&missing.stderr);
    assert!(
        !missing.status.success()
            && stderr.contains(r#"exec: "no-such-program": executable file not found in $PATH"#),
        "{stderr}"
    );
}

/// `kubectl exec POD -c C -- env` is what the container process was started with, in order.
fn same_env(ex: &Exec, pod: &str, marker: &str) {
    let listed = ex.ok(&["-c", "main", pod, "--", "env"]);
    let listed: Vec<String> = listed.lines().map(str::to_string).collect();
    let pid = container_pid(marker);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the container's environ");
    let expected: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(text)
        .collect();
    assert_eq!(listed, expected);
    for var in ["GREETING=hello blue", "SIZE=large", "WEB_SERVICE_PORT=80"] {
        assert!(
            listed.iter().any(|l| l == var),
            "{var} missing from {listed:?}"
        );
    }
}

/// The client container's main process: `sleep 3600` with our marker in its environment (the
/// exec'd `env` has ended by now).
fn container_pid(marker: &str) -> u32 {
    let wanted = format!("MARKER={marker}");
    let found = std::fs::read_dir("/proc").unwrap().filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let has = environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes());
        // argv[0] is the program as the kubelet found it on PATH.
        (cmdline.ends_with(b"sleep\x003600\x00") && has).then_some(pid)
    });
    let pids: Vec<u32> = found.collect();
    assert_eq!(pids.len(), 1, "container processes with {wanted}: {pids:?}");
    pids[0]
}

fn errors(ex: &Exec, pod: &str) {
    let out = ex.run(&["-c", "nope", pod, "--", "true"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("container nope is not valid for pod {pod}")),
        "{stderr}"
    );
    let out = ex.run(&["nosuch", "--", "true"]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains(r#"pods "nosuch" not found"#), "{stderr}");
    let out = ex.run(&["pending", "--", "true"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(r#"container not found ("main")"#),
        "{stderr}"
    );
}

/// A command whose client goes away is killed.
fn killed_with_the_client(ex: &Exec, pod: &str) {
    let mut cmd = ex.cmd(&["-c", "main", pod, "--", "sleep", "4321"]);
    let mut kubectl = Proc::start("kubectl exec -- sleep 4321", cmd.stderr(Stdio::null()));
    let sleeping = || {
        std::fs::read_dir("/proc").unwrap().any(|e| {
            e.ok()
                .and_then(|e| std::fs::read(e.path().join("cmdline")).ok())
                .is_some_and(|c| c == b"sleep\x004321\x00")
        })
    };
    wait_for("the exec'd sleep to start", WAIT, || {
        sleeping().then_some(())
    });
    kubectl.signal("KILL");
    kubectl.wait(WAIT);
    wait_for("the exec'd sleep to be killed", WAIT, || {
        (!sleeping()).then_some(())
    });
}

/// `kubectl exec -it` under `script`, which gives kubectl the terminal it insists on.
fn terminal(sb: &Sandbox, pod: &str) {
    let probe = tether_tests::run_within(Command::new("script").arg("--version"), WAIT);
    if probe.is_err() {
        eprintln!("kubectl exec -t not checked: no `script` to give kubectl a terminal");
        return;
    }
    let kubectl = std::env::var("TETHER_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let line = format!(
        "stty cols 91 rows 17; {kubectl} exec -it -c main {pod} -- sh -c 'tty; stty size; echo $TERM; exit 5'"
    );
    let out = tether_tests::run(
        Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("KUBECONFIG", &sb.kubeconfig)
            .env("KUBECACHEDIR", sb.dir().join("kube-cache")),
    );
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{shown}");
    assert!(shown.contains("/dev/pts/"), "{shown}");
    assert!(shown.contains("17 91\r\n"), "{shown}");
    assert!(shown.contains("xterm\r\n"), "{shown}");
}

fn client(sb: &Sandbox, rt: &tokio::runtime::Runtime) -> kube::Api<Pod> {
    kube::Api::namespaced(rt.block_on(sb.client()), "default")
}

/// kube-rs (WebSocket, v5 with stdin's end): stdin and statuses.
async fn kube_rs_streams(pods: &kube::Api<Pod>, pod: &str) {
    let ap = AttachParams::default().container("main").stdin(true);
    let mut p = pods.exec(pod, ["cat"], &ap).await.unwrap();
    let mut stdin = p.stdin().unwrap();
    let mut stdout = p.stdout().unwrap();
    let status = p.take_status().unwrap();
    stdin.write_all(b"through kube-rs").await.unwrap();
    stdin.shutdown().await.unwrap();
    let mut got = String::new();
    stdout.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "through kube-rs");
    let status = status.await.expect("a status");
    assert_eq!(status.status.as_deref(), Some("Success"));

    let ap = AttachParams::default().container("main");
    let mut p = pods.exec(pod, ["sh", "-c", "exit 9"], &ap).await.unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status.details.unwrap().causes.unwrap()[0];
    assert_eq!(
        (cause.reason.as_deref(), cause.message.as_deref()),
        (Some("ExitCode"), Some("9"))
    );
}

/// kube-rs with a terminal, and the size it sends.
async fn kube_rs_terminal(pods: &kube::Api<Pod>, pod: &str) {
    let ap = AttachParams::interactive_tty().container("main");
    let script = "read go; for i in 1 2 3 4 5; do stty size; sleep 0.1; done; tty";
    let mut p = pods.exec(pod, ["sh", "-c", script], &ap).await.unwrap();
    let mut sizes = p.terminal_size().unwrap();
    sizes
        .send(TerminalSize {
            width: 120,
            height: 40,
        })
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let mut stdout = p.stdout().unwrap();
    let mut shown = String::new();
    stdout.read_to_string(&mut shown).await.unwrap();
    assert!(
        shown.contains("40 120\r\n") && shown.contains("/dev/pts/"),
        "{shown:?}"
    );
}

/// The Status answers kube-rs gets for requests that cannot run.
async fn kube_rs_errors(pods: &kube::Api<Pod>, pod: &str) {
    let main = AttachParams::default().container("main");
    let no_command: [&str; 0] = [];
    let errors = [
        (
            pods.exec("nosuch", ["true"], &main).await,
            404,
            r#"pods "nosuch" not found"#,
        ),
        (
            pods.exec(pod, no_command, &main).await,
            400,
            "you must specify at least one command for the container",
        ),
        (
            pods.exec(pod, ["true"], &AttachParams::default()).await,
            400,
            "a container name must be specified for pod",
        ),
    ];
    for (result, code, message) in errors {
        match result.map(|_| ()) {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, code, "{status:?}");
                assert!(status.message.contains(message), "{status:?}");
            }
            other => panic!("expected a {code} Status, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn kubectl_exec() {
    let sb = Sandbox::start();
    let marker = sb.dir().display().to_string();
    sb.apply(&manifest(&marker));
    for d in ["web", "client"] {
        sb.ok(&[
            "rollout",
            "status",
            &format!("deployment/{d}"),
            "--timeout=60s",
        ]);
    }
    let pod = sb.ok(&[
        "get",
        "pods",
        "-l",
        "app=client",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    for websockets in [true, false] {
        let ex = Exec {
            sb: &sb,
            websockets,
        };
        from_inside(&ex, &pod);
        errors(&ex, &pod);
    }
    let ex = Exec {
        sb: &sb,
        websockets: true,
    };
    // As the intercept tests will use it: the Deployment, not the pod.
    let body = ex.ok(&[
        "deploy/client",
        "-c",
        "main",
        "--",
        "curl",
        "-sS",
        "http://web/deploy",
    ]);
    assert!(body.contains("path: /deploy"), "{body}");
    same_env(&ex, &pod, &marker);
    killed_with_the_client(&ex, &pod);
    killed_with_the_client(
        &Exec {
            sb: &sb,
            websockets: false,
        },
        &pod,
    );
    terminal(&sb, &pod);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pods = client(&sb, &rt);
    rt.block_on(async {
        within(
            "kube-rs: stdin and statuses",
            WAIT,
            kube_rs_streams(&pods, &pod),
        )
        .await;
        within("kube-rs: a terminal", WAIT, kube_rs_terminal(&pods, &pod)).await;
        within("kube-rs: errors", WAIT, kube_rs_errors(&pods, &pod)).await;
    });
}
