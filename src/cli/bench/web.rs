//! `clientele bench web`: the HTTPS front of a started server, as staff and attackers see it.
//!
//! The server is the real binary on a fresh data folder, with two accounts made by
//! `clientele user add` before it starts (associates, so no second factor is due). The run:
//!
//! 1. signs in over HTTPS the way a browser does (the login form's double-submit token, then
//!    the password) and keeps the session cookie;
//! 2. puts `--connections` kept-alive connections on `GET /static/app.css` (no session), then on
//!    `GET /` with the session (session lookup, account read, template), and compares their
//!    requests per second: a signed-in page should cost little more than a static file;
//! 3. probes `GET /` at a fixed pace on two connections, alone ("idle"), then during a flood of
//!    `--flood` threads posting sign-ins (as fast as answered, or `--flood-rate` posts per
//!    second): first with the correct password of the second account (each one is a real
//!    Argon2 verify, so this loads the bounded hash pool; beyond its permits the answer is
//!    429), then with a wrong password (the per-account and per-address throttle answers 429
//!    before any hash). The probe's p99 during each flood is compared to its idle p99.
//!
//! The load generator runs on the same machine, one thread per connection, and its CPU use is
//! reported next to the server's: on a small machine it takes a share of the cores the server
//! would otherwise have. Latency is measured from each request's send to its answer's last
//! byte, on connections opened (and TLS handshakes done) before the clock starts.
//!
//! The wrong-password flood runs last: it leaves 127.0.0.1 throttled (the wait doubles with each
//! failure), which would refuse every later sign-in from the benchmark.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;

use super::{
    Answer, CliError, KeepAlive, Launcher, Server, WorkDir, millis, per_second, percentile,
    print_row, process_status_kib, progress, rate, resident_kib, round3, verdict, whole,
};
use crate::clock::SystemRandom;
use crate::web::guard::{LOGIN_COOKIE, SESSION_COOKIE};

/// Sizes of the web benchmark.
#[derive(Debug, Args)]
pub struct WebBenchArgs {
    /// Concurrent kept-alive HTTPS connections in the throughput runs
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,

    /// Length of each run, in seconds
    #[arg(long, value_name = "S", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,

    /// Threads posting sign-ins in each flood, each on its own connection
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    flood: u64,

    /// Sign-in posts per second of each flood, over all its threads; 0 sends each as soon as
    /// the last is answered
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    flood_rate: u64,

    /// Pace of the `GET /` latency probe (two connections), in requests per second
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    probe_rate: u64,

    /// HTTP worker threads of the started server; 0 is one per CPU core, as shipped
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    workers: u64,

    /// `session.max_concurrent_hashes` of the started server
    /// [default: the shipped value]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_concurrent_hashes: Option<u64>,

    /// Folder to work in (a fresh sub-folder is made there and removed at the end)
    /// [default: the system temporary folder]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Targets from the web issue.
const TARGET_PAGE_RATIO: f64 = 0.30;
const TARGET_FLOOD_P99_RATIO: f64 = 2.0;

/// The signed-in account whose session loads `GET /`.
const STAFF_LOGIN: &str = "bench";
const STAFF_PASSWORD: &str = "violet tractor hums at dawn";
/// The account the floods sign in to.
const FLOOD_LOGIN: &str = "bench-flood";
const FLOOD_PASSWORD: &str = "copper kettle sings at noon";
const WRONG_PASSWORD: &str = "not the password of anyone";

/// Connections of the latency probe.
const PROBE_CONNECTIONS: u64 = 2;
/// Load before the measured runs, so caches and connection pools are warm.
const WARM_UP: Duration = Duration::from_secs(1);
/// Pause between runs, so hashes and commits of one run do not finish in the next.
const SETTLE: Duration = Duration::from_millis(500);
/// Failed exchanges one connection tolerates (each is followed by a new connection).
const MAX_FAILURES: u64 = 100;
/// Linux reports process CPU time in these ticks per second (`USER_HZ`, fixed at 100 for the
/// user-space ABI on every architecture Clientele ships for).
const TICKS_PER_SECOND: f64 = 100.0;

pub(super) fn bench_web(args: &WebBenchArgs) -> Result<ExitCode, CliError> {
    let random = SystemRandom::new();
    let work = WorkDir::create(args.dir.as_deref(), &random)?;
    progress(&format!("working in {}", work.path.display()));
    let server = start_server(&work.path, args)?;
    let figures = measure(&server, args)?;
    let report = Report {
        peak_rss_kib: process_status_kib(server.pid(), "VmHWM")?,
        figures,
    };
    drop(server);

    print_table(args, &report);
    println!("{}", report_json(args, &report));
    Ok(ExitCode::SUCCESS)
}

/// Initialises a data folder, adds the two accounts and starts `clientele serve`.
fn start_server(root: &std::path::Path, args: &WebBenchArgs) -> Result<Server, CliError> {
    let launcher = Launcher::new(root)?;
    let data_dir = root.join("serve");
    progress("creating a store and two associate accounts");
    launcher.init(&data_dir)?;
    launcher.add_user(&data_dir, STAFF_LOGIN, "associate", STAFF_PASSWORD)?;
    launcher.add_user(&data_dir, FLOOD_LOGIN, "associate", FLOOD_PASSWORD)?;

    let mut settings = vec![("CLIENTELE_SERVER__WORKERS", args.workers.to_string())];
    if let Some(hashes) = args.max_concurrent_hashes {
        settings.push((
            "CLIENTELE_SESSION__MAX_CONCURRENT_HASHES",
            hashes.to_string(),
        ));
    }
    progress("starting `clientele serve`");
    Server::start(&launcher, &data_dir, &settings)
}

// ---------------------------------------------------------------------------------------------
// Requests

/// `GET path`, with the session cookie when given.
pub(super) fn get(path: &str, session: Option<&str>) -> Vec<u8> {
    let cookie = session.map_or_else(String::new, |s| format!("Cookie: {SESSION_COOKIE}={s}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{cookie}\r\n").into_bytes()
}

/// `POST /login` as the sign-in form sends it, with the form's double-submit token.
fn post_login(token: &str, login: &str, password: &str) -> Result<Vec<u8>, CliError> {
    let body =
        serde_urlencoded::to_string([("csrf", token), ("login", login), ("password", password)])
            .map_err(|e| CliError::Other(format!("cannot encode the sign-in form: {e}")))?;
    Ok(format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Cookie: {LOGIN_COOKIE}={token}\r\nSec-Fetch-Site: same-origin\r\n\r\n{body}",
        body.len()
    )
    .into_bytes())
}

/// The value of the sign-in form's hidden `csrf` field.
fn csrf_field(html: &[u8]) -> Option<String> {
    let html = std::str::from_utf8(html).ok()?;
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker)? + marker.len();
    let rest = html.get(start..)?;
    let end = rest.find('"')?;
    rest.get(..end).map(str::to_owned)
}

fn exchange(connection: &mut KeepAlive, request: &[u8], what: &str) -> Result<Answer, CliError> {
    connection
        .exchange(request)
        .map_err(|e| CliError::Other(format!("{what} failed: {e}")))
}

pub(super) fn connect(server: &Server) -> Result<KeepAlive, CliError> {
    KeepAlive::open(server.port, &server.tls).map_err(|e| {
        CliError::Other(format!(
            "cannot connect to the started server on port {}: {e}",
            server.port
        ))
    })
}

/// Opens the sign-in form and returns its double-submit token (cookie and field agree).
fn login_token(connection: &mut KeepAlive) -> Result<String, CliError> {
    let answer = exchange(connection, &get("/login", None), "GET /login")?;
    let cookie = answer.cookie(LOGIN_COOKIE).map(str::to_owned);
    let field = csrf_field(&answer.body);
    match (answer.status, cookie, field) {
        (200, Some(cookie), Some(field)) if !cookie.is_empty() && cookie == field => Ok(cookie),
        (status, cookie, field) => Err(CliError::Other(format!(
            "GET /login answered {status} with {} and {}; the sign-in form has changed, so \
             the benchmark cannot sign in",
            if cookie.is_some() {
                "a login cookie"
            } else {
                "no login cookie"
            },
            if field.is_some() {
                "a csrf field"
            } else {
                "no csrf field"
            },
        ))),
    }
}

/// Signs in as `login` and returns the session cookie, checked on `GET /`.
pub(super) fn sign_in(server: &Server, login: &str, password: &str) -> Result<String, CliError> {
    let mut connection = connect(server)?;
    let token = login_token(&mut connection)?;
    let answer = exchange(
        &mut connection,
        &post_login(&token, login, password)?,
        "POST /login",
    )?;
    let session = answer
        .cookie(SESSION_COOKIE)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let Some(session) = session.filter(|_| answer.status == 303) else {
        return Err(CliError::Other(format!(
            "signing in as {login} answered {} without a session cookie; expected a 303 \
             with {SESSION_COOKIE}",
            answer.status
        )));
    };

    let home = exchange(&mut connection, &get("/", Some(&session)), "GET /")?;
    if home.status != 200 {
        return Err(CliError::Other(format!(
            "GET / with the new session of {login} answered {}, not 200; the session is not \
             fully signed in",
            home.status
        )));
    }
    Ok(session)
}

// ---------------------------------------------------------------------------------------------
// Load

/// One kind of traffic in a run: the same request sent over `connections` connections, as
/// fast as answered, or each connection paced to one request per `pace`.
#[derive(Debug, Clone, Copy)]
struct Load<'a> {
    request: &'a [u8],
    connections: u64,
    pace: Option<Duration>,
}

/// What the connections of one load saw.
#[derive(Debug, Default)]
struct LoadRun {
    elapsed: Duration,
    /// Send to last byte of each answer, sorted.
    latencies: Vec<Duration>,
    by_status: BTreeMap<u16, u64>,
    /// Exchanges that failed (the connection was replaced).
    failures: u64,
}

impl LoadRun {
    fn rate(&self) -> f64 {
        rate(self.latencies.len() as u64, self.elapsed)
    }

    fn status_rate(&self, status: u16) -> f64 {
        rate(self.answered(status), self.elapsed)
    }

    fn answered(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or_default()
    }

    fn latency_ms(&self, per_mille: usize) -> f64 {
        millis(percentile(&self.latencies, per_mille))
    }

    /// Every answer had `status`, or an error naming what came instead.
    fn expect_all(&self, status: u16, what: &str) -> Result<(), CliError> {
        let others: Vec<String> = self
            .by_status
            .iter()
            .filter(|&(&s, _)| s != status)
            .map(|(s, n)| format!("{n} × {s}"))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        Err(CliError::Other(format!(
            "{what} expected only {status} answers but also got {}; the figures would mean \
             nothing, so the benchmark stopped",
            others.join(", ")
        )))
    }

    fn statuses_json(&self) -> serde_json::Value {
        self.by_status
            .iter()
            .map(|(status, n)| (status.to_string(), serde_json::Value::from(*n)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Cores kept busy during a run, by the server and by this load generator.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    server: f64,
    client: f64,
}

/// A run of `N` loads at once for `length`; all connections are opened first.
fn run_loads<const N: usize>(
    server: &Server,
    loads: [Load<'_>; N],
    length: Duration,
) -> Result<([LoadRun; N], CpuUse), CliError> {
    let mut connections = Vec::new();
    for load in &loads {
        let mut of_load = Vec::new();
        for _ in 0..load.connections {
            of_load.push(connect(server)?);
        }
        connections.push(of_load);
    }

    let server_before = cpu_ticks(&format!("/proc/{}/stat", server.pid()))?;
    let client_before = cpu_ticks("/proc/self/stat")?;
    let (runs, elapsed) = std::thread::scope(|scope| {
        let mut gates = Vec::new();
        let mut handles = Vec::new();
        for (index, (load, of_load)) in loads.iter().zip(connections).enumerate() {
            for (slot, connection) in (0u64..).zip(of_load) {
                let (gate, wait) = mpsc::channel::<()>();
                let handle = std::thread::Builder::new()
                    .name(format!("bench-load-{index}-{slot}"))
                    .spawn_scoped(scope, move || {
                        // A closed gate means the run was abandoned before it began.
                        if wait.recv().is_err() {
                            return Ok(LoadRun::default());
                        }
                        drive(server, load, slot, connection, length)
                    })
                    .map_err(|e| CliError::Other(format!("cannot start a load thread: {e}")))?;
                gates.push(gate);
                handles.push((index, handle));
            }
        }

        let start = Instant::now();
        for gate in gates {
            // A thread that is gone already has nothing to measure.
            let _ = gate.send(());
        }
        let mut runs: [LoadRun; N] = std::array::from_fn(|_| LoadRun::default());
        for (index, handle) in handles {
            let run = handle
                .join()
                .map_err(|_| CliError::Other("a load thread stopped unexpectedly".into()))?
                .map_err(CliError::Other)?;
            if let Some(total) = runs.get_mut(index) {
                total.latencies.extend(run.latencies);
                total.failures += run.failures;
                for (status, n) in run.by_status {
                    *total.by_status.entry(status).or_default() += n;
                }
            }
        }
        Ok::<_, CliError>((runs, start.elapsed()))
    })?;
    let server_after = cpu_ticks(&format!("/proc/{}/stat", server.pid()))?;
    let client_after = cpu_ticks("/proc/self/stat")?;

    let cores = |before: u64, after: u64| {
        after.saturating_sub(before) as f64 / TICKS_PER_SECOND / elapsed.as_secs_f64()
    };
    let cpu = CpuUse {
        server: cores(server_before, server_after),
        client: cores(client_before, client_after),
    };
    let runs = runs.map(|mut run| {
        run.elapsed = elapsed;
        run.latencies.sort_unstable();
        run
    });
    Ok((runs, cpu))
}

/// One connection of a load, until `length` has passed since it was let go.
fn drive(
    server: &Server,
    load: &Load<'_>,
    slot: u64,
    mut connection: KeepAlive,
    length: Duration,
) -> Result<LoadRun, String> {
    let start = Instant::now();
    let deadline = start + length;
    let mut run = LoadRun::default();
    // Paced connections are spread evenly over one interval, so the probe is not bursty.
    let mut next = load
        .pace
        .map(|pace| start + pace.mul_f64(slot as f64 / load.connections.max(1) as f64));
    loop {
        if let Some(at) = next {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        let began = Instant::now();
        if began >= deadline {
            return Ok(run);
        }
        match connection.exchange(load.request) {
            Ok(answer) => {
                run.latencies.push(began.elapsed());
                *run.by_status.entry(answer.status).or_default() += 1;
                if answer.closing {
                    connection = KeepAlive::open(server.port, &server.tls)?;
                }
            }
            Err(err) => {
                run.failures += 1;
                if run.failures > MAX_FAILURES {
                    return Err(format!(
                        "more than {MAX_FAILURES} exchanges failed on one connection (last: \
                         {err})"
                    ));
                }
                connection = KeepAlive::open(server.port, &server.tls)?;
            }
        }
        if let (Some(at), Some(pace)) = (next.as_mut(), load.pace) {
            // A late probe is sent at once, not in a burst of catch-up requests.
            *at = (*at + pace).max(Instant::now());
        }
    }
}

/// User plus system CPU time in a `/proc/PID/stat` file, in clock ticks.
fn cpu_ticks(path: &str) -> Result<u64, CliError> {
    let stat = std::fs::read_to_string(path)
        .map_err(|e| CliError::Other(format!("cannot read {path}: {e}")))?;
    stat_ticks(&stat).ok_or_else(|| CliError::Other(format!("{path} has no CPU times")))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line; the command name in
/// parentheses may hold spaces, so fields are counted after its closing parenthesis.
fn stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

// ---------------------------------------------------------------------------------------------
// The measurements

#[derive(Debug)]
struct Figures {
    static_file: LoadRun,
    page: LoadRun,
    throughput_cpu: [CpuUse; 2],
    idle_probe: LoadRun,
    idle_cpu: CpuUse,
    /// The correct password of the flood account.
    sign_in_flood: Flood,
    /// A wrong password for the flood account.
    wrong_password_flood: Flood,
    rss_after_sign_in_kib: u64,
}

/// A flood of sign-ins with the probe of `GET /` running alongside.
#[derive(Debug)]
struct Flood {
    probe: LoadRun,
    logins: LoadRun,
    cpu: CpuUse,
}

fn measure(server: &Server, args: &WebBenchArgs) -> Result<Figures, CliError> {
    let length = Duration::from_secs(args.seconds);
    progress(&format!("signing in as {STAFF_LOGIN}"));
    let session = sign_in(server, STAFF_LOGIN, STAFF_PASSWORD)?;
    let rss_after_sign_in_kib = resident_kib(server.pid())?;

    let static_request = get("/static/app.css", None);
    let page_request = get("/", Some(&session));
    let full = |request| Load {
        request,
        connections: args.connections,
        pace: None,
    };

    progress("warming up: static file and page together, 1s");
    run_loads(
        server,
        [full(&static_request), full(&page_request)],
        WARM_UP,
    )?;

    progress(&format!(
        "GET /static/app.css without a session: {} connections, {}s",
        args.connections, args.seconds
    ));
    let ([static_file], static_cpu) = run_loads(server, [full(&static_request)], length)?;
    static_file.expect_all(200, "GET /static/app.css")?;

    progress(&format!(
        "GET / signed in: {} connections, {}s",
        args.connections, args.seconds
    ));
    let ([page], page_cpu) = run_loads(server, [full(&page_request)], length)?;
    page.expect_all(200, "GET /")?;
    std::thread::sleep(SETTLE);

    let probe = Load {
        request: &page_request,
        connections: PROBE_CONNECTIONS,
        pace: Some(Duration::from_secs_f64(
            PROBE_CONNECTIONS as f64 / args.probe_rate as f64,
        )),
    };
    progress(&format!(
        "GET / probe at {}/s, no other load, {}s",
        args.probe_rate, args.seconds
    ));
    let ([idle_probe], idle_cpu) = run_loads(server, [probe], length)?;
    idle_probe.expect_all(200, "the GET / probe")?;
    std::thread::sleep(SETTLE);

    let mut connection = connect(server)?;
    let token = login_token(&mut connection)?;
    drop(connection);

    progress(&format!(
        "GET / probe during {} threads signing in as {FLOOD_LOGIN} (correct password), {}s",
        args.flood, args.seconds
    ));
    let sign_in_flood = flood(
        server,
        &probe,
        &post_login(&token, FLOOD_LOGIN, FLOOD_PASSWORD)?,
        args,
    )?;
    std::thread::sleep(SETTLE);

    progress(&format!(
        "GET / probe during {} threads posting a wrong password for {FLOOD_LOGIN}, {}s",
        args.flood, args.seconds
    ));
    let wrong_password_flood = flood(
        server,
        &probe,
        &post_login(&token, FLOOD_LOGIN, WRONG_PASSWORD)?,
        args,
    )?;

    Ok(Figures {
        static_file,
        page,
        throughput_cpu: [static_cpu, page_cpu],
        idle_probe,
        idle_cpu,
        sign_in_flood,
        wrong_password_flood,
        rss_after_sign_in_kib,
    })
}

fn flood(
    server: &Server,
    probe: &Load<'_>,
    sign_in: &[u8],
    args: &WebBenchArgs,
) -> Result<Flood, CliError> {
    let logins = Load {
        request: sign_in,
        connections: args.flood,
        pace: (args.flood_rate > 0)
            .then(|| Duration::from_secs_f64(args.flood as f64 / args.flood_rate as f64)),
    };
    let ([probe, logins], cpu) =
        run_loads(server, [*probe, logins], Duration::from_secs(args.seconds))?;
    probe.expect_all(200, "the GET / probe during the flood")?;
    Ok(Flood { probe, logins, cpu })
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Debug)]
struct Report {
    figures: Figures,
    /// Highest resident memory of the server over the whole run (`VmHWM`).
    peak_rss_kib: u64,
}

impl Figures {
    fn page_ratio(&self) -> f64 {
        self.page.rate() / self.static_file.rate()
    }

    fn idle_p99_ms(&self) -> f64 {
        self.idle_probe.latency_ms(990)
    }

    fn flood_ratio(&self, flood: &Flood) -> f64 {
        flood.probe.latency_ms(990) / self.idle_p99_ms()
    }
}

/// `1.234 ms` with two decimals.
fn ms(figure: f64) -> String {
    format!("{figure:.2} ms")
}

/// Answers by status, such as `303: 412, 429: 100,232`.
fn statuses(run: &LoadRun) -> String {
    let parts: Vec<String> = run
        .by_status
        .iter()
        .map(|(status, n)| {
            let grouped = per_second(*n as f64);
            format!("{status}: {}", grouped.trim_end_matches("/s"))
        })
        .collect();
    if parts.is_empty() {
        return "none".into();
    }
    parts.join(", ")
}

fn print_table(args: &WebBenchArgs, report: &Report) {
    let figures = &report.figures;
    println!(
        "Clientele web benchmark: {} connections for {}s per run; probe of GET / at {}/s on \
         {PROBE_CONNECTIONS} connections; floods of {} sign-in threads{}; {} HTTP workers; \
         {} concurrent password hashes",
        args.connections,
        args.seconds,
        args.probe_rate,
        args.flood,
        flood_pace_text(args),
        workers_text(args),
        hashes_text(args),
    );
    println!();
    print_row(
        "measure", "baseline", "measured", "ratio", "target", "result",
    );
    let ratio = figures.page_ratio();
    print_row(
        "requests/s: static file vs page",
        &per_second(figures.static_file.rate()),
        &per_second(figures.page.rate()),
        &format!("{ratio:.2}"),
        ">= 0.30",
        verdict(ratio >= TARGET_PAGE_RATIO),
    );
    for (name, flood) in [
        ("page p99: idle vs sign-in flood", &figures.sign_in_flood),
        (
            "page p99: idle vs wrong-password flood",
            &figures.wrong_password_flood,
        ),
    ] {
        let ratio = figures.flood_ratio(flood);
        print_row(
            name,
            &ms(figures.idle_p99_ms()),
            &ms(flood.probe.latency_ms(990)),
            &format!("{ratio:.1}x"),
            "< 2x",
            verdict(ratio < TARGET_FLOOD_P99_RATIO),
        );
    }
    println!();
    print_details(report);
}

fn print_details(report: &Report) {
    let Figures {
        static_file,
        page,
        throughput_cpu: [static_cpu, page_cpu],
        idle_probe,
        idle_cpu,
        sign_in_flood,
        wrong_password_flood,
        ..
    } = &report.figures;
    println!(
        "latency p50/p99: static file {:.2}/{:.2} ms, page {:.2}/{:.2} ms",
        static_file.latency_ms(500),
        static_file.latency_ms(990),
        page.latency_ms(500),
        page.latency_ms(990),
    );
    println!(
        "GET / probe p50/p99: idle {:.2}/{:.2} ms, sign-in flood {:.2}/{:.2} ms, \
         wrong-password flood {:.2}/{:.2} ms",
        idle_probe.latency_ms(500),
        idle_probe.latency_ms(990),
        sign_in_flood.probe.latency_ms(500),
        sign_in_flood.probe.latency_ms(990),
        wrong_password_flood.probe.latency_ms(500),
        wrong_password_flood.probe.latency_ms(990),
    );
    println!(
        "sign-in flood answers: {}; {:.1} sign-ins/s; answer p50/p99 {:.2}/{:.2} ms",
        statuses(&sign_in_flood.logins),
        sign_in_flood.logins.status_rate(303),
        sign_in_flood.logins.latency_ms(500),
        sign_in_flood.logins.latency_ms(990),
    );
    println!(
        "wrong-password flood answers: {}; answer p50/p99 {:.2}/{:.2} ms",
        statuses(&wrong_password_flood.logins),
        wrong_password_flood.logins.latency_ms(500),
        wrong_password_flood.logins.latency_ms(990),
    );
    println!(
        "cores busy, server/load generator: static {:.2}/{:.2}, page {:.2}/{:.2}, idle probe \
         {:.2}/{:.2}, sign-in flood {:.2}/{:.2}, wrong-password flood {:.2}/{:.2} (of {})",
        static_cpu.server,
        static_cpu.client,
        page_cpu.server,
        page_cpu.client,
        idle_cpu.server,
        idle_cpu.client,
        sign_in_flood.cpu.server,
        sign_in_flood.cpu.client,
        wrong_password_flood.cpu.server,
        wrong_password_flood.cpu.client,
        available_cores(),
    );
    println!(
        "server memory: {:.1} MB after sign-in, peak {:.1} MB",
        kib_to_mb(report.figures.rss_after_sign_in_kib),
        kib_to_mb(report.peak_rss_kib),
    );
    let failures = [
        static_file,
        page,
        idle_probe,
        &sign_in_flood.probe,
        &sign_in_flood.logins,
        &wrong_password_flood.probe,
        &wrong_password_flood.logins,
    ]
    .iter()
    .map(|run| run.failures)
    .sum::<u64>();
    if failures > 0 {
        println!("failed exchanges (connection replaced): {failures}");
    }
}

fn flood_pace_text(args: &WebBenchArgs) -> String {
    if args.flood_rate == 0 {
        return " (unpaced)".into();
    }
    format!(" at {}/s", args.flood_rate)
}

fn workers_text(args: &WebBenchArgs) -> String {
    if args.workers == 0 {
        return format!("{} (one per core)", available_cores());
    }
    args.workers.to_string()
}

/// Password hashes the started server allows at once.
fn max_hashes(args: &WebBenchArgs) -> u64 {
    args.max_concurrent_hashes.unwrap_or_else(|| {
        crate::config::Config::default()
            .session
            .max_concurrent_hashes as u64
    })
}

fn hashes_text(args: &WebBenchArgs) -> String {
    match args.max_concurrent_hashes {
        Some(n) => n.to_string(),
        None => format!("{} (shipped)", max_hashes(args)),
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1_000_000.0
}

fn load_json(run: &LoadRun) -> serde_json::Value {
    serde_json::json!({
        "requests": run.latencies.len(),
        "per_s": whole(run.rate()),
        "p50_ms": round3(run.latency_ms(500)),
        "p99_ms": round3(run.latency_ms(990)),
        "statuses": run.statuses_json(),
        "failures": run.failures,
    })
}

fn cpu_json(cpu: CpuUse) -> serde_json::Value {
    serde_json::json!({
        "server_cores": round3(cpu.server),
        "load_generator_cores": round3(cpu.client),
    })
}

fn flood_json(figures: &Figures, flood: &Flood) -> serde_json::Value {
    let ratio = figures.flood_ratio(flood);
    serde_json::json!({
        "probe": load_json(&flood.probe),
        "logins": load_json(&flood.logins),
        "sign_ins_per_s": round3(flood.logins.status_rate(303)),
        "cpu": cpu_json(flood.cpu),
        "p99_ratio": round3(ratio),
        "target_p99_ratio": TARGET_FLOOD_P99_RATIO,
        "met": ratio < TARGET_FLOOD_P99_RATIO,
    })
}

fn report_json(args: &WebBenchArgs, report: &Report) -> serde_json::Value {
    let figures = &report.figures;
    let [static_cpu, page_cpu] = figures.throughput_cpu;
    let ratio = figures.page_ratio();
    serde_json::json!({
        "bench": "web",
        "version": env!("CARGO_PKG_VERSION"),
        "seconds": args.seconds,
        "connections": args.connections,
        "flood_threads": args.flood,
        "flood_rate": args.flood_rate,
        "probe_rate": args.probe_rate,
        "probe_connections": PROBE_CONNECTIONS,
        "workers": args.workers,
        "max_concurrent_hashes": max_hashes(args),
        "cores": available_cores(),
        "throughput": {
            "static": load_json(&figures.static_file),
            "static_cpu": cpu_json(static_cpu),
            "page": load_json(&figures.page),
            "page_cpu": cpu_json(page_cpu),
            "ratio": round3(ratio),
            "target_ratio": TARGET_PAGE_RATIO,
            "met": ratio >= TARGET_PAGE_RATIO,
        },
        "idle_probe": load_json(&figures.idle_probe),
        "idle_probe_cpu": cpu_json(figures.idle_cpu),
        "sign_in_flood": flood_json(figures, &figures.sign_in_flood),
        "wrong_password_flood": flood_json(figures, &figures.wrong_password_flood),
        "memory": {
            "rss_kib_after_sign_in": report.figures.rss_after_sign_in_kib,
            "peak_rss_kib": report.peak_rss_kib,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_field_is_read_from_the_form() {
        let html =
            br#"<form><input type="hidden" name="csrf" value="AbC-_12"><input name="login">"#;
        assert_eq!(csrf_field(html), Some("AbC-_12".into()));
        assert_eq!(csrf_field(b"<form></form>"), None);
    }

    #[test]
    fn sign_in_posts_are_form_encoded_with_both_tokens() {
        let request = post_login("tok", "bench", "a b&c").map(String::from_utf8);
        let Ok(Ok(request)) = request else {
            unreachable!("the request is ASCII text");
        };
        assert!(request.starts_with("POST /login HTTP/1.1\r\n"));
        assert!(request.contains("Cookie: __Host-clientele-login=tok\r\n"));
        assert!(request.contains("Sec-Fetch-Site: same-origin\r\n"));
        assert!(request.ends_with("\r\n\r\ncsrf=tok&login=bench&password=a+b%26c"));
        assert!(request.contains("Content-Length: 37\r\n"));
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "1234 (clientele (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 4 0 100 1000 200";
        assert_eq!(stat_ticks(stat), Some(325));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn page_requests_carry_the_session_cookie() {
        assert_eq!(
            get("/", Some("s3")),
            b"GET / HTTP/1.1\r\nHost: localhost\r\nCookie: __Host-clientele=s3\r\n\r\n".to_vec()
        );
        assert_eq!(
            get("/static/app.css", None),
            b"GET /static/app.css HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()
        );
    }
}
