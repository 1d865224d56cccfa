//! A local Kannel SMS gateway for tests and `dialgate bench`: [`Kannel::start`] writes a
//! configuration into a temporary directory, runs Debian's `bearerbox` and `smsbox` on
//! free loopback ports (killed when the handle drops), and waits until smsbox's
//! `sendsms` answers. Kannel's `fake` SMSC driver makes bearerbox listen for one client;
//! [`FakeSmsc`] is that client, a task that collects every message bearerbox hands it
//! so a test can wait for "an SMS to +X saying Y".
//!
//! The gateway is configured for tests: one `sendsms-user`, delivery reports kept in
//! memory (`dlr-storage = internal`), no throughput limits, everything bound to and
//! allowed from 127.0.0.1 only, logs at warning level into the temporary directory
//! (kept when `DIALGATE_KANNEL_KEEP_LOGS` is set).

use std::fmt;
use std::net::{Ipv4Addr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What to tell whoever runs without Kannel.
pub const INSTALL_HINT: &str = "install Debian's kannel: apt-get install kannel";

/// When this variable is set, the directory with the configuration and the logs is
/// kept (and named on stderr) instead of deleted, for looking into a failure.
pub const KEEP_LOGS: &str = "DIALGATE_KANNEL_KEEP_LOGS";

/// How long start-up may take before it is reported as failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a local Kannel could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum KannelError {
    /// A binary is in neither `PATH` nor `/usr/sbin`.
    #[error("{0} was not found in PATH or /usr/sbin; {INSTALL_HINT}")]
    Missing(&'static str),
    /// A box exited or did not come up in time; carries the end of its log.
    #[error("{what}; the end of its output:\n{log}")]
    Start { what: String, log: String },
    /// Preparing the directory or a port failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KannelError {
    move |source| KannelError::Io {
        context: context.into(),
        source,
    }
}

/// A running local Kannel: bearerbox with one fake SMSC, and smsbox serving sendsms.
pub struct Kannel {
    dir: PathBuf,
    bearerbox: Child,
    smsbox: Option<Child>,
    smsbox_binary: PathBuf,
    /// smsbox's sendsms port on 127.0.0.1.
    pub sendsms_port: u16,
    /// The port bearerbox's fake SMSC listens on (127.0.0.1).
    pub smsc_port: u16,
    /// The `sendsms-user` configured.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for Kannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kannel")
            .field("dir", &self.dir)
            .field("sendsms_port", &self.sendsms_port)
            .field("smsc_port", &self.smsc_port)
            .finish_non_exhaustive()
    }
}

/// Where `name` is installed: the first match in `PATH`, else `/usr/sbin` (Debian
/// installs the boxes there, which is not on every user's `PATH`).
pub fn find_binary(name: &'static str) -> Result<PathBuf, KannelError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(KannelError::Missing(name))
}

/// `N` distinct ports that were free on 127.0.0.1 a moment ago.
fn free_ports<const N: usize>() -> Result<[u16; N], KannelError> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io_error("cannot find a free loopback port"))?;
        *port = listener
            .local_addr()
            .map_err(io_error("cannot read a loopback port"))?
            .port();
        // Held until all are chosen, so the ports differ.
        listeners.push(listener);
    }
    Ok(ports)
}

/// The configuration of a local Kannel (see the module documentation).
fn config(dir: &Path, ports: &Ports, username: &str, password: &str, admin: &str) -> String {
    let log = |name: &str| dir.join(name).display().to_string();
    format!(
        r#"group = core
admin-port = {admin_port}
admin-interface = "127.0.0.1"
admin-password = "{admin}"
admin-deny-ip = "*.*.*.*"
admin-allow-ip = "127.0.0.1"
smsbox-port = {smsbox_port}
smsbox-interface = "127.0.0.1"
box-deny-ip = "*.*.*.*"
box-allow-ip = "127.0.0.1"
log-file = "{bearerbox_log}"
log-level = {level}
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = fake
our-host = "127.0.0.1"
port = {smsc_port}
connect-allow-ip = "127.0.0.1"

group = smsbox
bearerbox-host = "127.0.0.1"
bearerbox-port = {smsbox_port}
sendsms-port = {sendsms_port}
sendsms-interface = "127.0.0.1"
log-file = "{smsbox_log}"
log-level = {level}

group = sendsms-user
username = "{username}"
password = "{password}"
max-messages = 10
concatenation = true
user-deny-ip = "*.*.*.*"
user-allow-ip = "127.0.0.1"
"#,
        admin_port = ports.admin,
        smsbox_port = ports.smsbox,
        smsc_port = ports.smsc,
        sendsms_port = ports.sendsms,
        bearerbox_log = log("bearerbox.log"),
        smsbox_log = log("smsbox.log"),
        // Kannel's levels: 0 debug, 1 info, 2 warning.
        level = if std::env::var_os(KEEP_LOGS).is_some() {
            0
        } else {
            2
        },
    )
}

struct Ports {
    admin: u16,
    smsbox: u16,
    smsc: u16,
    sendsms: u16,
}

/// Runs `binary` with the configuration, its output into `{name}.out` in `dir`.
fn spawn_box(binary: &Path, dir: &Path, name: &str) -> Result<Child, KannelError> {
    let out = std::fs::File::create(dir.join(format!("{name}.out")))
        .map_err(io_error(format!("cannot create {name}.out")))?;
    let err = out
        .try_clone()
        .map_err(io_error(format!("cannot share {name}.out")))?;
    Command::new(binary)
        // Console verbosity: errors only (the log file has warnings).
        .args(["-v", "3"])
        .arg(dir.join("kannel.conf"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(io_error(format!("cannot run {}", binary.display())))
}

/// The last lines of `name`'s console output and log file in `dir`.
fn tail(dir: &Path, name: &str) -> String {
    let mut text = String::new();
    for file in [format!("{name}.out"), format!("{name}.log")] {
        if let Ok(content) = std::fs::read_to_string(dir.join(&file)) {
            let lines: Vec<&str> = content.lines().collect();
            let start = lines.len().saturating_sub(15);
            text.push_str(&format!("--- {file}\n{}\n", lines[start..].join("\n")));
        }
    }
    text
}

impl Kannel {
    /// Starts bearerbox and smsbox with a fresh configuration and one sendsms user, and
    /// waits until sendsms answers.
    pub async fn start() -> Result<Kannel, KannelError> {
        let bearerbox_binary = find_binary("bearerbox")?;
        let smsbox_binary = find_binary("smsbox")?;
        let dir =
            std::env::temp_dir().join(format!("dialgate-kannel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .map_err(io_error(format!("cannot create {}", dir.display())))?;
        let [admin, smsbox, smsc, sendsms] = free_ports()?;
        let ports = Ports {
            admin,
            smsbox,
            smsc,
            sendsms,
        };
        let username = "dialgate".to_owned();
        let password = uuid::Uuid::new_v4().simple().to_string();
        let admin = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(
            dir.join("kannel.conf"),
            config(&dir, &ports, &username, &password, &admin),
        )
        .map_err(io_error("cannot write kannel.conf"))?;
        let bearerbox = spawn_box(&bearerbox_binary, &dir, "bearerbox")?;
        let mut kannel = Kannel {
            dir,
            bearerbox,
            smsbox: None,
            smsbox_binary,
            sendsms_port: ports.sendsms,
            smsc_port: ports.smsc,
            username,
            password,
        };
        kannel.wait_for_port(ports.smsbox, "bearerbox").await?;
        kannel.start_smsbox().await?;
        Ok(kannel)
    }

    /// The process ids of the running boxes (bearerbox, then smsbox when running).
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.bearerbox.id())
            .chain(self.smsbox.as_ref().map(Child::id))
            .collect()
    }

    /// smsbox's sendsms URL, e.g. `http://127.0.0.1:13013/cgi-bin/sendsms`.
    pub fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.sendsms_port)
    }

    /// The host and port adapters must be granted to reach sendsms.
    pub fn sendsms_host(&self) -> String {
        format!("127.0.0.1:{}", self.sendsms_port)
    }

    /// The directory holding the configuration and the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Connects a fake SMSC client to bearerbox; bearerbox then hands it every message.
    pub async fn connect_smsc(&self) -> Result<FakeSmsc, KannelError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match TcpStream::connect((Ipv4Addr::LOCALHOST, self.smsc_port)).await {
                Ok(stream) => return Ok(FakeSmsc::run(stream)),
                Err(err) if Instant::now() >= deadline => {
                    return Err(KannelError::Start {
                        what: format!(
                            "bearerbox's fake SMSC on port {} refused the client: {err}",
                            self.smsc_port
                        ),
                        log: tail(&self.dir, "bearerbox"),
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Kills smsbox: sendsms stops answering (connections are refused) until
    /// [`Kannel::start_smsbox`].
    pub fn stop_smsbox(&mut self) {
        if let Some(mut child) = self.smsbox.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts smsbox (again) and waits until sendsms answers.
    pub async fn start_smsbox(&mut self) -> Result<(), KannelError> {
        self.stop_smsbox();
        self.smsbox = Some(spawn_box(&self.smsbox_binary, &self.dir, "smsbox")?);
        self.wait_for_sendsms().await
    }

    /// Waits until something accepts connections on `port`, failing early when
    /// bearerbox exits.
    async fn wait_for_port(&mut self, port: u16, name: &str) -> Result<(), KannelError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            self.check_alive(name)?;
            if Instant::now() >= deadline {
                return Err(KannelError::Start {
                    what: format!("{name} did not listen on port {port} within {START_TIMEOUT:?}"),
                    log: tail(&self.dir, name),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until smsbox answers HTTP on the sendsms port (any answer: a request
    /// without credentials is refused, which proves it is serving).
    async fn wait_for_sendsms(&mut self) -> Result<(), KannelError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|err| KannelError::Start {
                what: format!("cannot build an HTTP client: {err}"),
                log: String::new(),
            })?;
        let url = self.sendsms_url();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if client.get(&url).send().await.is_ok() {
                return Ok(());
            }
            self.check_alive("bearerbox")?;
            self.check_alive("smsbox")?;
            if Instant::now() >= deadline {
                return Err(KannelError::Start {
                    what: format!("smsbox's sendsms did not answer within {START_TIMEOUT:?}"),
                    log: tail(&self.dir, "smsbox"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error when the box `name` has exited.
    fn check_alive(&mut self, name: &str) -> Result<(), KannelError> {
        let child = match name {
            "smsbox" => self.smsbox.as_mut(),
            _ => Some(&mut self.bearerbox),
        };
        let exited = child.and_then(|child| child.try_wait().ok().flatten());
        match exited {
            Some(status) => Err(KannelError::Start {
                what: format!("{name} exited at start-up ({status})"),
                log: tail(&self.dir, name),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        self.stop_smsbox();
        let _ = self.bearerbox.kill();
        let _ = self.bearerbox.wait();
        if std::env::var_os(KEEP_LOGS).is_some() {
            eprintln!(
                "Kannel's configuration and logs are kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How bearerbox wrote a message's text to the fake SMSC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmscCoding {
    /// `text`: 7-bit text, written as it is.
    Text,
    /// `data`: 8-bit data, URL-encoded.
    Data,
    /// `ucs-2`: UCS-2 (UTF-16BE), URL-encoded.
    Ucs2,
    /// `udh`: a user data header and the data, both URL-encoded.
    Udh,
}

/// One message the fake SMSC received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmscMessage {
    /// The sender (`from`).
    pub sender: String,
    /// The receiver (`to`).
    pub receiver: String,
    /// How bearerbox wrote it.
    pub coding: SmscCoding,
    /// The text, decoded (UCS-2 from UTF-16BE; other data as UTF-8, lossily).
    pub text: String,
}

/// Parses one line bearerbox wrote to a fake SMSC client (without its newline):
/// `sender receiver text TEXT`, `sender receiver data URLENCODED`,
/// `sender receiver ucs-2 URLENCODED` or `sender receiver udh URLENCODED URLENCODED`.
/// A `udh` message's data is read as UTF-16BE when it holds a zero byte (UCS-2 text of
/// digits and spaces always does, UTF-8 text never), else as UTF-8.
pub fn parse_smsc_line(line: &[u8]) -> Result<SmscMessage, String> {
    let shown = || String::from_utf8_lossy(line).into_owned();
    let mut parts = line.splitn(4, |&byte| byte == b' ');
    let (Some(sender), Some(receiver), Some(kind), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("a fake SMSC line needs four fields: {:?}", shown()));
    };
    let (coding, text) = match kind {
        b"text" => (SmscCoding::Text, String::from_utf8_lossy(rest).into_owned()),
        b"data" => (
            SmscCoding::Data,
            String::from_utf8_lossy(&url_decode(rest)).into_owned(),
        ),
        b"ucs-2" => (SmscCoding::Ucs2, utf16be(&url_decode(rest))?),
        b"udh" => {
            let data = rest
                .splitn(2, |&byte| byte == b' ')
                .nth(1)
                .ok_or_else(|| format!("a udh line without data: {:?}", shown()))?;
            let bytes = url_decode(data);
            let text = if bytes.contains(&0) {
                utf16be(&bytes)?
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            };
            (SmscCoding::Udh, text)
        }
        other => {
            return Err(format!(
                "unknown fake SMSC message type {:?} in {:?}",
                String::from_utf8_lossy(other),
                shown()
            ))
        }
    };
    Ok(SmscMessage {
        sender: String::from_utf8_lossy(sender).into_owned(),
        receiver: String::from_utf8_lossy(receiver).into_owned(),
        coding,
        text,
    })
}

/// Kannel's URL decoding: `%XX` is a byte, `+` a space; a malformed escape is kept.
fn url_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = match (byte, bytes.get(index + 1), bytes.get(index + 2)) {
            (b'%', Some(&high), Some(&low)) => hex(high).zip(hex(low)),
            _ => None,
        };
        match escaped {
            Some((high, low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                index += 3;
            }
            None => {
                out.push(if byte == b'+' { b' ' } else { byte });
                index += 1;
            }
        }
    }
    out
}

fn utf16be(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() % 2 != 0 {
        return Err(format!("UCS-2 data of odd length {}", bytes.len()));
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).map_err(|err| format!("UCS-2 data is not UTF-16: {err}"))
}

#[derive(Default)]
struct Received {
    messages: Vec<SmscMessage>,
    unreadable: Vec<String>,
}

/// A fake SMSC client connected to bearerbox: it reads every message bearerbox writes
/// and keeps it. Dropping it (or [`FakeSmsc::disconnect`]) closes the connection;
/// bearerbox then queues messages until a client connects again.
pub struct FakeSmsc {
    received: Arc<Mutex<Received>>,
    count: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl fmt::Debug for FakeSmsc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSmsc")
            .field("received", &self.count())
            .finish_non_exhaustive()
    }
}

impl FakeSmsc {
    fn run(stream: TcpStream) -> FakeSmsc {
        let received = Arc::new(Mutex::new(Received::default()));
        let (count_tx, count) = watch::channel(0);
        let shared = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
                let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
                let mut received = shared.lock();
                match parse_smsc_line(trimmed) {
                    Ok(message) => received.messages.push(message),
                    Err(problem) => received.unreadable.push(problem),
                }
                let total = received.messages.len() + received.unreadable.len();
                drop(received);
                count_tx.send_replace(total);
            }
        });
        FakeSmsc {
            received,
            count,
            task,
        }
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<SmscMessage> {
        self.received.lock().messages.clone()
    }

    /// How many lines arrived so far (messages and unreadable lines).
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// What was wrong with each line that could not be read.
    pub fn unreadable(&self) -> Vec<String> {
        self.received.lock().unreadable.clone()
    }

    /// Waits until `count` lines have arrived; an error after `timeout` says how many did.
    pub async fn wait_for_count(&self, count: usize, timeout: Duration) -> Result<(), String> {
        let mut watch = self.count.clone();
        let reached = tokio::time::timeout(timeout, watch.wait_for(|n| *n >= count)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "the fake SMSC received {} of {count} messages within {timeout:?}",
                self.count()
            )),
        }
    }

    /// Waits for a message to `receiver` whose text contains `text`; an error after
    /// `timeout` lists what did arrive.
    pub async fn wait_for(
        &self,
        receiver: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<SmscMessage, String> {
        let find = || {
            self.received
                .lock()
                .messages
                .iter()
                .find(|m| m.receiver == receiver && m.text.contains(text))
                .cloned()
        };
        let mut watch = self.count.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            watch.borrow_and_update();
            if let Some(found) = find() {
                return Ok(found);
            }
            let changed = tokio::time::timeout_at(deadline, watch.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                let received = self.received.lock();
                return Err(format!(
                    "no message to {receiver} containing {text:?} within {timeout:?}; \
                     received {:?}, unreadable {:?}",
                    received.messages, received.unreadable
                ));
            }
        }
    }

    /// Closes the connection to bearerbox.
    pub fn disconnect(self) {
        self.task.abort();
    }
}

impl Drop for FakeSmsc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_are_read_as_they_are() {
        let message = parse_smsc_line(b"Dialgate +79161234567 text Your code is 123456")
            .expect("a text line");
        assert_eq!(message.sender, "Dialgate");
        assert_eq!(message.receiver, "+79161234567");
        assert_eq!(message.coding, SmscCoding::Text);
        assert_eq!(message.text, "Your code is 123456");
        let utf8 = parse_smsc_line("D +1 text Code é 12".as_bytes()).expect("utf-8 text");
        assert_eq!(utf8.text, "Code é 12");
    }

    #[test]
    fn ucs2_and_data_lines_are_decoded() {
        // What bearerbox wrote for "Ваш код 123456" sent with coding=2.
        let line = b"Dialgate +79161234567 ucs-2 %04%12%040%04H%00+%04%3A%04%3E%044%00+%001%002%003%004%005%006";
        let message = parse_smsc_line(line).expect("a ucs-2 line");
        assert_eq!(message.coding, SmscCoding::Ucs2);
        assert_eq!(message.text, "Ваш код 123456");
        let data = parse_smsc_line(b"a b data x%C3%A9+y%2").expect("a data line");
        assert_eq!(
            (data.coding, data.text.as_str()),
            (SmscCoding::Data, "xé y%2")
        );
        let udh = parse_smsc_line(b"a b udh %05%00%03%01%02%01 %00h%00i").expect("a udh line");
        assert_eq!((udh.coding, udh.text.as_str()), (SmscCoding::Udh, "hi"));
        let udh = parse_smsc_line(b"a b udh %05%00%03%01%02%01 hi").expect("a udh line");
        assert_eq!(udh.text, "hi");
    }

    #[test]
    fn odd_lines_are_errors() {
        for (line, expected) in [
            (&b"a b"[..], "four fields"),
            (b"a b fax x", "\"fax\""),
            (b"a b ucs-2 %00", "odd length"),
            (b"a b ucs-2 %D8%00", "UTF-16"),
            (b"a b udh %05", "without data"),
        ] {
            let error = parse_smsc_line(line).expect_err("odd");
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_configuration_binds_loopback_and_names_every_port() {
        let ports = Ports {
            admin: 1,
            smsbox: 2,
            smsc: 3,
            sendsms: 4,
        };
        let text = config(Path::new("/tmp/k"), &ports, "u", "p", "a");
        for expected in [
            "admin-port = 1\n",
            "smsbox-port = 2\n",
            "bearerbox-port = 2\n",
            "port = 3\n",
            "sendsms-port = 4\n",
            "log-file = \"/tmp/k/bearerbox.log\"",
            "dlr-storage = internal",
            "smsc = fake",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        assert_eq!(text.matches("127.0.0.1").count(), 9);
        assert!(!text.contains("throughput"), "no throughput limit");
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let error = KannelError::Missing("bearerbox").to_string();
        assert!(
            error.contains("install Debian's kannel: apt-get install kannel"),
            "{error}"
        );
        assert!(matches!(
            find_binary("dialgate-no-such-kannel-box"),
            Err(KannelError::Missing(_))
        ));
    }
}
