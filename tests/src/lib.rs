//! Helpers for tether's tests: the workspace's binaries, a sandbox cluster per test
//! ([`sandbox`], shared by every crate's sandbox tests), network namespaces that stand in
//! for a laptop and a cluster ([`direct`]), processes that die with the test, and waits with
//! deadlines.
//!
//! Tests that need root (network namespaces, TUN, the sandbox's pods) are marked
//! `#[ignore = "needs root: ..."]`, so that without root they are reported as skipped with
//! that reason instead of passing without having run; `scripts/test.sh` runs them with
//! `--include-ignored` when it is root (as CI is). No test is ignored for any other reason.
//!
//! Nothing here touches the host's own network namespace: every link, address and route is
//! created inside namespaces the test made, and every namespace is deleted on drop, even
//! when a test fails. Resolver files live in /etc/netns/NAME/, which `ip netns exec`
//! bind-mounts over /etc/resolv.conf for processes in that namespace only.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod direct;
pub mod events;
pub mod intercepting;
pub mod rootless;
pub mod sandbox;

/// Prefix of every namespace the tests create; leftovers of dead runs are found by it.
const PREFIX: &str = "tt";

/// Set to keep every test's temporary directories (logs, state) for inspection; without it
/// they are removed even when the test fails, which prints the logs' last lines instead.
const KEEP_ENV: &str = "TETHER_KEEP_TEST_DIRS";

/// A workspace binary: `$<NAME>_BIN` (e.g. `TETHER_SANDBOX_BIN`, `TETHER_AGENT_BIN`, as
/// the sandbox's kubelet reads it too), else next to the running test executable (tests run
/// from `target/<profile>/deps`, the binaries are in `target/<profile>`).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_path(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace), or set {}",
        path.display(),
        bin_var(name)
    );
    path
}

/// Where [`bin`] looks for `name`, whether or not it is there.
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(bin_var(name)) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("test executables live in target/<profile>/deps");
    dir.join(name)
}

fn bin_var(name: &str) -> String {
    format!("{}_BIN", name.to_uppercase().replace('-', "_"))
}

/// The longest one command may run: one that hangs fails its test, named, instead of hanging
/// the suite. Generous, as `tether-sandbox up --demo` on a loaded machine takes a while.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(300);

/// Runs a command (no stdin, output captured) and returns its output; panics with the
/// command line if it cannot start or outlives [`COMMAND_DEADLINE`].
pub fn run(cmd: &mut Command) -> Output {
    run_within(cmd, COMMAND_DEADLINE).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run`] that reports instead of panicking, for clean-up in `Drop` (a panic there while
/// a failed test unwinds would abort the whole test binary).
pub fn run_within(cmd: &mut Command, deadline: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    finish(child, &format!("{cmd:?}"), deadline)
}

/// Collects the output of a started child with piped stdout and stderr, killing it if it
/// outlives `deadline`.
pub fn finish(child: Child, what: &str, deadline: Duration) -> Result<Output, String> {
    let pid = child.id();
    // Waiter thread -> caller: the output, once the child has exited and closed its pipes.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    match done_rx.recv_timeout(deadline) {
        Ok(out) => out.map_err(|e| format!("cannot wait for {what}: {e}")),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions. The child is not reaped yet
            // (the waiter reaps it only after its pipes close, and would then have sent),
            // so the pid is still this child's.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(format!(
                "timed out after {deadline:?} waiting for {what} to exit"
            ))
        }
    }
}

/// Runs a command that must succeed.
pub fn check(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stdout and stderr as text, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last `lines` lines of a log file, headed by its path, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    format!(
        "--- last lines of {}:\n{}",
        path.display(),
        all[all.len().saturating_sub(lines)..].join("\n")
    )
}

/// Awaits `fut`, or panics after `deadline` naming what it waited for.
pub async fn within<T>(what: &str, deadline: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Polls `probe` until it returns Some, or panics after `deadline` naming `what`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    // Reader thread -> test: the process's stdout lines. The thread drains stdout until EOF
    // so the process never writes into a closed pipe.
    lines: Option<std::sync::mpsc::Receiver<String>>,
}

impl Proc {
    /// Starts `cmd` with stdout piped (for [`Proc::wait_line`]) and no stdin.
    pub fn start(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            lines: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        check(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(self.pid().to_string()),
        );
    }

    /// The process's stderr, when the command had it piped.
    pub fn take_stderr(&mut self) -> std::process::ChildStderr {
        self.child.stderr.take().expect("stderr is piped")
    }

    /// The PIDs of the process's children (e.g. the program a `tether-sandbox shell` runs).
    pub fn children(&self) -> Vec<u32> {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Waits for the process to exit, up to `deadline`; returns its exit status.
    pub fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), deadline, || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// Reads stdout lines until one satisfies `pred`; panics after `deadline`.
    pub fn wait_line(&mut self, deadline: Duration, pred: impl Fn(&str) -> bool) -> String {
        if self.lines.is_none() {
            let stdout = self.child.stdout.take().expect("stdout is piped");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            self.lines = Some(rx);
        }
        let rx = self.lines.as_ref().expect("set above");
        let start = Instant::now();
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{} did not print the expected line within {deadline:?} (exit: {:?})",
                    self.name,
                    self.child.try_wait().ok().flatten()
                ),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace with its own /etc/netns directory, deleted on drop.
pub struct Netns {
    pub name: String,
    /// Logs of the processes started in it (and the test's scratch files); `tempfile`'s,
    /// so removed on drop. Taken only by drop.
    logs: Option<tempfile::TempDir>,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        let _ = run(Command::new("ip").args(["netns", "del", &name]));
        check(Command::new("ip").args(["netns", "add", &name]));
        std::fs::create_dir_all(Self::etc(&name)).expect("create /etc/netns/NAME");
        let logs = tempfile::Builder::new()
            .prefix(&format!("{name}-logs-"))
            .tempdir()
            .expect("create the namespace's log directory");
        let ns = Netns {
            name,
            logs: Some(logs),
        };
        // IPv4 only: IPv6 link-local addresses appear asynchronously and would make
        // before/after snapshots differ for reasons that have nothing to do with tether.
        check(ns.cmd("sysctl").args([
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]));
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn etc(name: &str) -> PathBuf {
        Path::new("/etc/netns").join(name)
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        check(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Starts a long-running process in the namespace (stdout piped, stderr to a log file).
    pub fn spawn(&self, name: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Proc {
        let log = self.log_dir().join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("create a log file");
        let child = self
            .cmd(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            lines: None,
        }
    }

    /// Where the logs of processes started in this namespace go, removed with it; a failing
    /// test prints their last lines.
    pub fn log_dir(&self) -> PathBuf {
        self.logs
            .as_ref()
            .expect("the directory is only taken on drop")
            .path()
            .to_path_buf()
    }

    /// Writes the namespace's own resolv.conf.
    pub fn set_resolv_conf(&self, text: &str) {
        std::fs::write(self.resolv_conf_path(), text).expect("write the namespace's resolv.conf");
    }

    pub fn resolv_conf_path(&self) -> PathBuf {
        Self::etc(&self.name).join("resolv.conf")
    }

    /// What a user would compare before and after: links, addresses, routes and resolver.
    pub fn snapshot(&self) -> String {
        let links = self.ip(&["-o", "link", "show"]);
        let addrs = self.ip(&["-o", "addr", "show"]);
        let routes = self.ip(&["route", "show", "table", "all"]);
        let resolv = std::fs::read_to_string(self.resolv_conf_path()).unwrap_or_default();
        format!("# links\n{links}# addresses\n{addrs}# routes\n{routes}# resolv.conf\n{resolv}")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // run_within, not run: a panic here while a failed test unwinds would abort.
        let _ = run_within(
            Command::new("ip").args(["netns", "del", &self.name]),
            COMMAND_DEADLINE,
        );
        let _ = std::fs::remove_dir_all(Self::etc(&self.name));
        let Some(logs) = self.logs.take() else {
            return;
        };
        if std::thread::panicking() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(logs.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
                .collect();
            files.sort();
            for file in files {
                eprintln!("{}", log_tail(&file, 30));
            }
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("logs of {} kept in {}", self.name, logs.keep().display());
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short unique name for this test run: namespaces are named `tt<pid>x<n>-<role>`.
pub fn unique(role: &str) -> String {
    format!(
        "{PREFIX}{}x{}-{role}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes namespaces (and their /etc/netns directories) left by test runs whose process
/// is gone, e.g. after a CI job was killed.
pub fn remove_leftovers() {
    let list = run(Command::new("ip").args(["netns", "list"]));
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
        }
    }
}

/// Whether this process may create namespaces (the end-to-end suite needs root).
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
