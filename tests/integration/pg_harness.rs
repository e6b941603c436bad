//! Real PostgreSQL servers for the tests: Debian's server binaries
//! (`initdb`, `pg_ctl`; scripts/ensure-postgres.sh installs them), each
//! server in a temp dir of its own, listening on 127.0.0.1 only at a free
//! port, password login (scram-sha-256) for the superuser `notify`.
//!
//! - [`fresh_database`]: what most tests want, a database of their own on
//!   the server of the whole test run (scripts/test.sh starts it and sets
//!   `NOTIFY_TEST_PG_URL`), or, under a plain `cargo test`, on one server
//!   this test process starts on first use.
//! - [`PgServer`]: a server of the test's own, for tests that stop and
//!   restart the database.
//!
//! Postgres refuses to run as root: when the tests run as root, the servers
//! run as the unprivileged `NOTIFY_PG_USER` (`notify-pg`, made by
//! scripts/ensure-postgres.sh) through `runuser`. Every server has a
//! watchdog process that stops it and removes its dir if the test process
//! dies without dropping it (killed, or the process-wide server, a static,
//! at exit).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The password in every URL above (tests assert it never shows up in logs).
/// scripts/test.sh gives the run's server the same one.
pub const PG_PASSWORD: &str = "notify-pg-test-secret-5d21e8";
/// The superuser every server is made with.
const PG_USER: &str = "notify";
/// The user that runs the servers when the tests run as root.
const DEFAULT_RUN_AS: &str = "notify-pg";
/// Free ports tried before giving up: another test may take the port between
/// our probe and the server's bind.
const PORT_TRIES: usize = 5;
/// `pg_ctl start -w` gives up after this long (a start takes a second or two;
/// a busy 2-core machine building in parallel is much slower).
const START_TIMEOUT_SECONDS: &str = "120";

const NOT_INSTALLED: &str = "PostgreSQL's server binaries are not installed: run the tests with \
    ./scripts/test.sh (it installs and starts PostgreSQL), or eval \"$(./scripts/ensure-postgres.sh)\" \
    before `cargo test`";

/// Where the binaries are, and whom they run as.
struct Tools {
    bin: PathBuf,
    /// `runuser -u` this user (when we are root).
    run_as: Option<String>,
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let bin = match std::env::var_os("NOTIFY_PG_BIN").filter(|b| !b.is_empty()) {
            Some(b) => PathBuf::from(b),
            None => newest_installed_bin().unwrap_or_else(|| {
                panic!("{NOT_INSTALLED} (no NOTIFY_PG_BIN, no /usr/lib/postgresql/*/bin/initdb)")
            }),
        };
        assert!(
            bin.join("initdb").is_file() && bin.join("pg_ctl").is_file(),
            "{NOT_INSTALLED} (no initdb and pg_ctl in {})",
            bin.display()
        );
        let run_as = match std::env::var("NOTIFY_PG_USER") {
            Ok(user) => Some(user).filter(|u| !u.is_empty()),
            // A plain `cargo test`: as root, the user ensure-postgres.sh made.
            Err(_) if running_as_root() => {
                assert!(
                    command_ok(Command::new("id").args(["-u", DEFAULT_RUN_AS])),
                    "the tests run as root and postgres does not: run ./scripts/test.sh (or \
                     ./scripts/ensure-postgres.sh, which creates the user {DEFAULT_RUN_AS})"
                );
                Some(DEFAULT_RUN_AS.to_string())
            }
            Err(_) => None,
        };
        Tools { bin, run_as }
    })
}

/// The highest-numbered /usr/lib/postgresql/NN/bin with an initdb.
fn newest_installed_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn command_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server binary, run as the server's user, in `dir` (so it never needs
/// to read the test's working directory).
fn server_command(program: &str, dir: &Path) -> Command {
    let tools = tools();
    let path = tools.bin.join(program);
    let mut cmd = match &tools.run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(path);
            c
        }
        None => Command::new(path),
    };
    cmd.current_dir(dir).stdin(Stdio::null());
    cmd
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to its end; panics with its output (and `log`'s) if it failed.
fn run(cmd: &mut Command, what: &str, log: Option<&Path>) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        let log = log
            .and_then(|l| std::fs::read_to_string(l).ok())
            .map(|l| format!("\nserver log:\n{l}"))
            .unwrap_or_default();
        panic!("{what} failed ({}): {}{log}", out.status, output_text(&out));
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// A PostgreSQL server of this test's own (initdb + pg_ctl in a temp dir, 127.0.0.1, a free port), stopped (pg_ctl stop -m immediate) and removed on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// Stops the server should this process die without dropping it.
    watchdog: Mutex<Option<Child>>,
}

impl PgServer {
    pub fn start() -> PgServer {
        let tools = tools();
        let dir = tempfile::Builder::new()
            .prefix("notify-pg-")
            .tempdir()
            .expect("a temp dir for PostgreSQL");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PG_PASSWORD}\n")).expect("write the password file");
        if let Some(user) = &tools.run_as {
            run(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{user}:"))
                    .arg(dir.path()),
                "chown the PostgreSQL temp dir",
                None,
            );
        }
        run(
            server_command("initdb", dir.path())
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    PG_USER,
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
            None,
        );
        std::fs::remove_file(&pwfile).expect("remove the password file");

        let mut server = PgServer {
            data,
            log,
            port: 0,
            watchdog: Mutex::new(None),
            dir,
        };
        server.spawn_watchdog();
        for attempt in 1..=PORT_TRIES {
            server.port = free_port();
            server.configure();
            let started = server_command("pg_ctl", server.dir.path())
                .arg("-D")
                .arg(&server.data)
                .arg("-l")
                .arg(&server.log)
                .args(["-w", "-t", START_TIMEOUT_SECONDS, "start"])
                .output()
                .expect("run pg_ctl start");
            if started.status.success() {
                return server;
            }
            if attempt == PORT_TRIES {
                panic!(
                    "PostgreSQL did not start ({} ports tried): {}\nserver log:\n{}",
                    PORT_TRIES,
                    output_text(&started),
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Appends this server's settings (the last of a setting wins, so a
    /// retry on another port appends again).
    fn configure(&self) {
        use std::io::Write as _;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        write!(
            conf,
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             # Tests run several hosts, each with a pool.\nmax_connections = 200\n",
            self.port,
            self.data.display()
        )
        .expect("write postgresql.conf");
    }

    fn spawn_watchdog(&self) {
        let tools = tools();
        let script = r#"trap '' INT HUP
while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -n "$5" ]; then
  runuser -u "$5" -- "$4" -D "$3" stop -m immediate
else
  "$4" -D "$3" stop -m immediate
fi >/dev/null 2>&1
rm -rf "$2""#;
        let child = Command::new("sh")
            .args(["-c", script, "pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(self.dir.path())
            .arg(&self.data)
            .arg(tools.bin.join("pg_ctl"))
            .arg(tools.run_as.as_deref().unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the PostgreSQL watchdog");
        *self.watchdog.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
    }

    /// postgres://notify:PASSWORD@127.0.0.1:PORT/DATABASE
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a database with a unique name derived from `name`; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        create_database_on(&self.url("postgres"), name)
    }

    /// pg_ctl stop -m fast (connections are cut, the port refuses).
    pub fn stop(&self) {
        run(
            server_command("pg_ctl", self.dir.path())
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", START_TIMEOUT_SECONDS, "stop", "-m", "fast"]),
            "pg_ctl stop",
            Some(&self.log),
        );
    }

    /// Starts it again on the same port and data.
    pub fn start_again(&self) {
        run(
            server_command("pg_ctl", self.dir.path())
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", START_TIMEOUT_SECONDS, "start"]),
            "pg_ctl start (again)",
            Some(&self.log),
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Stopped already (by `stop`) is fine: then this fails quietly.
        let _ = server_command("pg_ctl", self.dir.path())
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let watchdog = self
            .watchdog
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut w) = watchdog {
            let _ = w.kill();
            let _ = w.wait();
        }
        // The temp dir (data, log) goes with `self.dir`.
    }
}

/// A database name of `[a-z0-9_]`, unique in this process and (by the pid
/// and the clock) across runs on a server that outlives them.
fn unique_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stem: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(32)
        .collect();
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 0x100_0000)
        .unwrap_or(0);
    format!(
        "t_{stem}_{}_{}_{clock:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `CREATE DATABASE` on the server of `admin_url` (a URL of any database
/// there, as its superuser); the new database's URL.
fn create_database_on(admin_url: &str, name: &str) -> String {
    let database = unique_name(name);
    let mut admin = url::Url::parse(admin_url)
        .unwrap_or_else(|e| panic!("not a PostgreSQL URL ({e}): {admin_url}"));
    admin.set_path("/postgres");
    psql(admin.as_str(), &format!("CREATE DATABASE \"{database}\""))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {database}: {e}"));
    let mut url = admin;
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// Runs `sql` with psql (the client beside the server binaries) on `url`;
/// its output, or its error.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(tools().bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(output_text(&out).trim().to_string())
    }
}

/// A fresh, uniquely named database on the shared server of the test run (NOTIFY_TEST_PG_URL, started by scripts/test.sh), or, when that is unset (a developer running `cargo test` directly), on one private server started lazily for this test process. Returns its URL.
pub fn fresh_database(name: &str) -> String {
    match std::env::var("NOTIFY_TEST_PG_URL") {
        Ok(shared) if !shared.is_empty() => create_database_on(&shared, name),
        _ => {
            // Never dropped (a static): its watchdog stops it once this
            // process is gone.
            static PRIVATE: OnceLock<PgServer> = OnceLock::new();
            PRIVATE.get_or_init(PgServer::start).create_database(name)
        }
    }
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

#[test]
fn a_server_of_its_own_keeps_its_data_across_a_stop_and_a_start_on_its_port() {
    let server = PgServer::start();
    let url = server.create_database("harness");
    assert!(url.contains(PG_PASSWORD), "{url}");
    assert!(url.starts_with(&format!(
        "postgres://notify:{PG_PASSWORD}@127.0.0.1:{}/",
        server.port()
    )));
    assert_eq!(
        psql(
            &url,
            "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7); SELECT v FROM kept"
        ),
        Ok("7".to_string())
    );
    // Password login: a wrong password is refused.
    let wrong = url.replace(PG_PASSWORD, "not-the-password");
    let refused = psql(&wrong, "SELECT 1").expect_err("a wrong password is refused");
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    server.stop();
    assert!(!port_open(server.port()), "the port refuses once stopped");
    assert!(psql(&url, "SELECT 1").is_err());

    server.start_again();
    assert_eq!(psql(&url, "SELECT v FROM kept"), Ok("7".to_string()));
    assert_eq!(
        psql(&server.url("postgres"), "SELECT current_user"),
        Ok("notify".to_string())
    );
}

#[test]
fn each_fresh_database_is_a_new_empty_one() {
    let first = fresh_database("harness fresh");
    let second = fresh_database("harness fresh");
    assert_ne!(first, second);
    assert!(first.contains(PG_PASSWORD), "{first}");
    psql(&first, "CREATE TABLE only_here (v int)").expect("create a table");
    assert_eq!(
        psql(
            &second,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'"
        ),
        Ok("0".to_string())
    );
}
