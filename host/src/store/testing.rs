//! A throwaway PostgreSQL cluster for tests: initialised in a temporary directory with
//! Debian's `initdb`, served on a free loopback port by a `postgres` child process that
//! dies with the test process, and a fresh database per caller. Run as root, the
//! cluster runs as the `postgres` user (initdb refuses root).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A throwaway cluster: the shared one of this test process, or one a test has to
/// itself (to stop and start again, as an outage).
pub struct TestCluster {
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    ids: Option<(u32, u32)>,
    /// The running server's process id (0 while stopped).
    pid: AtomicU32,
    _dir: tempfile::TempDir,
}

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();
/// How a cluster's directory is named: the prefix, then the test process's id.
const PREFIX: &str = "dialgate-pg-";
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The directory of the newest installed PostgreSQL's programs (Debian keeps them in
/// `/usr/lib/postgresql/<major>/bin`), else the directory of `initdb` on the `PATH`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    installed.sort();
    if let Some((_, bin)) = installed.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists())
        .ok_or_else(|| "PostgreSQL is not installed (no initdb); .ci/test installs it".to_owned())
}

/// The `postgres` user's ids when running as root.
fn postgres_ids() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres"))
            .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
            .flatten()
    })
}

fn as_cluster_user(command: &mut Command, ids: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = ids {
        command.uid(uid).gid(gid);
    }
    command
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|err| err.to_string())?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| err.to_string())
}

impl TestCluster {
    /// The cluster of this test process, started on first use.
    pub fn shared() -> &'static TestCluster {
        match CLUSTER.get_or_init(|| Self::start_with(None)) {
            Ok(cluster) => cluster,
            Err(err) => panic!("cannot start the test PostgreSQL cluster: {err}"),
        }
    }

    /// A cluster of the caller's own, which it may [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again); it stops when dropped.
    pub fn private() -> TestCluster {
        Self::start_with(None)
            .unwrap_or_else(|err| panic!("cannot start a PostgreSQL cluster: {err}"))
    }

    /// A cluster of the caller's own that serves TLS with `certificate` and `key`
    /// (PEM) and refuses every TCP connection that is not TLS (`hostnossl … reject`);
    /// its databases are made over its Unix socket.
    pub fn private_with_tls(certificate: &str, key: &str) -> TestCluster {
        Self::start_with(Some((certificate, key)))
            .unwrap_or_else(|err| panic!("cannot start a TLS PostgreSQL cluster: {err}"))
    }

    /// The cluster's data directory: its tables' files and its write-ahead log.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stops the server as an operator's fast shutdown does (connections are ended,
    /// the port closes) and waits until it is gone.
    pub fn stop(&self) {
        let pid = self.pid.swap(0, Ordering::SeqCst);
        if pid == 0 {
            return;
        }
        let pid = libc::pid_t::try_from(pid).expect("a process id");
        // SAFETY: kill has no memory-safety preconditions.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new("/proc").join(pid.to_string()).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub fn start_again(&self) {
        let started = spawn_server(
            &self.bin.join("postgres"),
            &self.data,
            self._dir.path(),
            self.port,
            self.ids,
        )
        .and_then(|pid| {
            self.pid.store(pid, Ordering::SeqCst);
            wait_ready(self.port)
        });
        if let Err(err) = started {
            panic!("cannot start the PostgreSQL cluster again: {err}");
        }
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<TestCluster, String> {
        let bin = bin_dir()?;
        let ids = postgres_ids();
        remove_stale_clusters();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|err| err.to_string())?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|err| err.to_string())?;
        }
        let data = dir.path().join("data");
        let status = as_cluster_user(&mut Command::new(bin.join("initdb")), ids)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|err| format!("initdb: {err}"))?;
        if !status.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&status.stderr)
            ));
        }
        if let Some((certificate, key)) = tls {
            serve_tls(&data, certificate, key, ids)?;
        }
        let port = free_port()?;
        let pid = spawn_server(&bin.join("postgres"), &data, dir.path(), port, ids)?;
        wait_ready(port)?;
        Ok(TestCluster {
            port,
            bin,
            data,
            ids,
            pid: AtomicU32::new(pid),
            _dir: dir,
        })
    }

    /// The URL of a new, empty database of its own.
    pub fn database(&self) -> String {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        // Over the Unix socket, which a TLS-only cluster also accepts.
        let admin = format!(
            "host={} port={} user=postgres dbname=postgres",
            self._dir.path().display(),
            self.port
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // On its own thread: the caller may be inside a runtime of its own.
        let created: Result<(), String> = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    runtime.block_on(async {
                        // A server that listens may still be starting up.
                        let deadline = Instant::now() + Duration::from_secs(30);
                        loop {
                            let attempt = async {
                                let (client, connection) =
                                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
                                tokio::spawn(connection);
                                client
                                    .batch_execute(&format!("CREATE DATABASE {name}"))
                                    .await
                            };
                            match attempt.await {
                                Ok(()) => return Ok(()),
                                Err(err) if Instant::now() > deadline => {
                                    return Err(err.to_string())
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                            }
                        }
                    })
                })
                .join()
                .unwrap_or_else(|_| Err("the database creation panicked".to_owned()))
        });
        if let Err(err) = created {
            panic!("cannot create a test database: {err}");
        }
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes the cluster in `data` serve TLS with `certificate` and `key`, and accept TCP
/// connections only over TLS.
fn serve_tls(
    data: &Path,
    certificate: &str,
    key: &str,
    ids: Option<(u32, u32)>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let write = |name: &str, text: &str, mode: u32| -> Result<(), String> {
        let path = data.join(name);
        std::fs::write(&path, text).map_err(|err| format!("{name}: {err}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|err| format!("{name}: {err}"))?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|err| format!("{name}: {err}"))?;
        }
        Ok(())
    };
    write("server.crt", certificate, 0o644)?;
    write("server.key", key, 0o600)?;
    write(
        "pg_hba.conf",
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 trust\n\
         hostnossl all all 127.0.0.1/32 reject\n",
        0o600,
    )?;
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).map_err(|err| err.to_string())?;
    text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    std::fs::write(&conf, text).map_err(|err| err.to_string())
}

/// Starts `postgres` on `port` from a thread that lives as long as the process: the
/// server gets SIGKILL when that thread (its parent) ends, so no server outlives the
/// tests. Its process id.
fn spawn_server(
    postgres: &Path,
    data: &Path,
    sockets: &Path,
    port: u16,
    ids: Option<(u32, u32)>,
) -> Result<u32, String> {
    let mut command = Command::new(postgres);
    as_cluster_user(&mut command, ids)
        .arg("-D")
        .arg(data)
        .arg("-k")
        .arg(sockets)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", "fsync=off", "-c", "max_connections=400"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec,
    // after the child took the cluster user's ids.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            let child = command.spawn();
            let started = child
                .as_ref()
                .map(std::process::Child::id)
                .map_err(|err| err.to_string());
            let _ = tx.send(started);
            if let Ok(mut child) = child {
                let _ = child.wait();
            }
            // The server is gone; park so its death signal does not fire on a restart.
            loop {
                std::thread::park();
            }
        })
        .map_err(|err| err.to_string())?;
    rx.recv().map_err(|err| err.to_string())?
}

/// Removes the directories of clusters whose test process has ended (a static is never
/// dropped, so a process cannot remove its own).
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Waits until the server accepts connections.
fn wait_ready(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "postgres did not listen on port {port} within 30 s"
    ))
}
