//! [`LocalRedis`]: one `redis-server` process on loopback, from start to stop.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;

/// How long a server may take to answer after it was started, by default.
const STARTUP: Duration = Duration::from_secs(10);

/// Free ports found free can be taken before the server binds them: tries this many.
const FREE_PORT_TRIES: usize = 5;

/// How much of the log an error quotes.
const LOG_TAIL_LINES: usize = 15;

/// A `redis-server` on loopback, stopped (SIGKILL) when dropped; its data directory and log
/// are removed with it.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    settings: LocalRedisBuilder,
}

/// Settings of a [`LocalRedis`] beyond the defaults (a free port, persistence off, plain TCP).
#[derive(Debug, Clone)]
pub struct LocalRedisBuilder {
    program: PathBuf,
    port: Option<u16>,
    config: Option<String>,
    sentinel: bool,
    tls: Option<Tls>,
    args: Vec<OsString>,
    startup: Duration,
}

/// The TLS files of a server that speaks TLS only.
#[derive(Debug, Clone)]
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    auth_clients: bool,
}

impl Default for LocalRedisBuilder {
    fn default() -> Self {
        LocalRedisBuilder {
            program: PathBuf::from("redis-server"),
            port: None,
            config: None,
            sentinel: false,
            tls: None,
            args: Vec::new(),
            startup: STARTUP,
        }
    }
}

impl LocalRedisBuilder {
    /// The binary to run (default `redis-server`, looked up on `PATH`).
    #[must_use]
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Listen on `port` (default: a free one). A taken port is an [`Error::PortTaken`].
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// A configuration file's text, written into the server's directory and given as its
    /// first argument (the port, directory and log given by this builder still apply).
    #[must_use]
    pub fn config(mut self, text: impl Into<String>) -> Self {
        self.config = Some(text.into());
        self
    }

    /// Runs a Sentinel (`--sentinel`; with [`config`](Self::config) holding its `sentinel
    /// monitor` lines) instead of a data server.
    #[must_use]
    pub fn sentinel(mut self) -> Self {
        self.sentinel = true;
        self
    }

    /// Speaks TLS only, on the server's port, with these PEM files; `auth_clients` asks
    /// clients for a certificate signed by `ca`.
    #[must_use]
    pub fn tls(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
        auth_clients: bool,
    ) -> Self {
        self.tls = Some(Tls {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            auth_clients,
        });
        self
    }

    /// One more command-line argument (`--maxmemory`, `100mb`, `--user`, …), after this
    /// builder's own.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More command-line arguments, after this builder's own.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// How long the server may take to answer (default 10 s).
    #[must_use]
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup = timeout;
        self
    }

    /// Starts the server and waits until it answers.
    pub fn start(self) -> Result<LocalRedis, Error> {
        let dir = tempfile::Builder::new().prefix("strata-redis-").tempdir()?;
        if let Some(text) = &self.config {
            std::fs::write(dir.path().join("redis.conf"), text)?;
        }
        let given = self.port;
        let mut server = LocalRedis {
            child: None,
            port: 0,
            dir,
            settings: self,
        };
        if let Some(port) = given {
            // Another server on the port would answer our readiness probe: look first.
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
                return Err(Error::PortTaken { port });
            }
            server.port = port;
            server.spawn()?;
            return Ok(server);
        }
        let mut last = None;
        for _ in 0..FREE_PORT_TRIES {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e @ Error::PortTaken { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Io(std::io::Error::other("no free port"))))
    }
}

impl LocalRedis {
    /// Settings for a server beyond the defaults.
    pub fn builder() -> LocalRedisBuilder {
        LocalRedisBuilder::default()
    }

    /// A server on a free port, persistence off.
    pub fn start() -> Result<LocalRedis, Error> {
        LocalRedisBuilder::default().start()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://localhost:<port>` for a TLS server.
    pub fn url(&self) -> String {
        match self.settings.tls {
            Some(_) => format!("rediss://localhost:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Its data directory (removed when it is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it (SIGKILL): a crash, not a shutdown. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers — a hung server.
    pub fn freeze(&self) -> Result<(), Error> {
        self.signal("STOP")
    }

    /// Thaws it (SIGCONT): it answers what was sent meanwhile, in order.
    pub fn thaw(&self) -> Result<(), Error> {
        self.signal("CONT")
    }

    /// Kills it and starts it again on the same port (empty: persistence is off).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.spawn()
    }

    fn signal(&self, name: &str) -> Result<(), Error> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::Signal("it is not running".into()))?;
        // kill(1) rather than libc: no `unsafe` for two signals.
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| Error::Signal(format!("kill(1): {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Signal(format!("kill -{name} {pid}: {status}")))
        }
    }

    /// Starts the process on `self.port` and waits until it answers.
    fn spawn(&mut self) -> Result<(), Error> {
        let s = &self.settings;
        let dir = self.dir.path();
        let mut cmd = Command::new(&s.program);
        if s.config.is_some() {
            cmd.arg(dir.join("redis.conf"));
        }
        if s.sentinel {
            cmd.arg("--sentinel");
        }
        cmd.args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(self.log_path());
        if !s.sentinel {
            cmd.args(["--save", "", "--appendonly", "no"]);
        }
        let port = self.port.to_string();
        match &s.tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args([
                        "--tls-auth-clients",
                        if tls.auth_clients { "yes" } else { "no" },
                    ]);
            }
            None => {
                cmd.args(["--port", &port]);
            }
        }
        cmd.args(&s.args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                program: s.program.clone(),
            },
            _ => Error::Io(e),
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.settings.startup;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log = self.log_tail();
                if log.contains("Address already in use") {
                    return Err(Error::PortTaken { port: self.port });
                }
                return Err(Error::Exited {
                    port: self.port,
                    status: status.to_string(),
                    log,
                });
            }
            // Answering, and still ours: a server that lost the port to another exits.
            if self.answers() && matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(Error::Timeout {
            port: self.port,
            waited: self.settings.startup,
            log: self.log_tail(),
        })
    }

    /// Whether it accepts connections and, without TLS, answers `PING` (an ACL-protected
    /// default user answers `-NOAUTH`: still up).
    fn answers(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        if self.settings.tls.is_some() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 64];
        stream.write_all(b"PING\r\n").is_ok() && stream.read(&mut buf).is_ok_and(|n| n > 0)
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
