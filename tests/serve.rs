//! `fkp serve` end to end: the real binary serving a scratch workspace, asked
//! over plain TCP (so paths reach it exactly as written, `..` and all), while
//! the real `fkp run` trains beside it. The browser tests drive Debian's
//! Chromium through chromedriver with Selenium (tests/serve/browser.py).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Scratch, blob_csv};

const PATIENCE: Duration = Duration::from_secs(120);

/// A tiny LeNet training of `epochs` epochs on 24x24 faces, with [evaluate];
/// `description` goes into [pipeline].
fn pipeline(epochs: usize, seed: u64, description: &str) -> String {
    format!(
        "[pipeline]\ndescription = {description:?}\n\
         [ingest]\ntrain = \"../faces.csv\"\n[prepare]\nmissing = \"mask\"\n\
         [model]\narch = \"lenet\"\n\
         [train]\ndevice = \"cpu\"\nepochs = {epochs}\nbatch_size = 16\nlr = 1e-3\nseed = {seed}\n\
         [evaluate]\nsamples = 2\n"
    )
}

/// A workspace with `pipelines/a.toml` and `pipelines/b.toml`, both run.
fn workspace() -> Scratch {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(120, 24, 5));
    s.write("pipelines/a.toml", pipeline(2, 1, "first"));
    s.write(
        "pipelines/b.toml",
        pipeline(3, 2, "second <script>window.__pwned=1</script>"),
    );
    s.ok(&["run", "pipelines/a.toml", "pipelines/b.toml"]);
    s
}

/// A running `fkp serve` on a free port.
struct Serving {
    child: Child,
    /// `127.0.0.1:PORT`.
    address: String,
    /// What it printed on standard output, to its URL line.
    printed: Vec<String>,
}

impl Serving {
    fn start(s: &Scratch, args: &[&str]) -> Serving {
        let mut all = vec!["serve", "--port", "0"];
        all.extend(args);
        Serving::spawn(s, &all)
    }

    /// Any command that serves (`fkp watch --serve`), printing its address.
    fn spawn(s: &Scratch, all: &[&str]) -> Serving {
        let mut child = s
            .command(all)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("fkp starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let address = loop {
            let line = lines.next().expect("fkp serve prints its address").unwrap();
            printed.push(line.clone());
            if let Some(url) = line.strip_prefix("fkp serve: http://") {
                break url.split('/').next().unwrap().to_string();
            }
        };
        // The rest of what it prints is read (and dropped) so it never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        let port = address.rsplit(':').next().unwrap();
        Serving {
            child,
            address: format!("127.0.0.1:{port}"),
            printed,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        request(&self.address, path, &self.address, "")
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Polls `path` until `ready` holds for its JSON.
    fn wait_for(
        &self,
        path: &str,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.json(path);
            if ready(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "waited for {what}: {value:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET over a fresh connection, the path sent as written.
fn request(address: &str, path: &str, host: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("the server accepts");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("a response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (code, body)
}

/// The status of a GET whose body never ends (an event stream).
fn status_line(address: &str, path: &str, headers: &str) -> u16 {
    let mut stream = TcpStream::connect(address).expect("the server accepts");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n{headers}\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("a status line");
    line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn stage_state<'a>(overview: &'a serde_json::Value, pipeline: &str, stage: &str) -> &'a serde_json::Value {
    let found = overview["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pipeline)
        .unwrap_or_else(|| panic!("no `{pipeline}` in {overview:#}"));
    found["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage} of {pipeline}"))
}

#[test]
fn the_api_says_what_status_and_compare_say() {
    let s = workspace();
    let server = Serving::start(&s, &[]);
    let overview = server.json("/api/overview");
    let names: Vec<&str> = overview["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(stage_state(&overview, "a", "train")["state"], "cached");
    // The description comes back as it is written: escaping is the page's job.
    assert_eq!(
        overview["pipelines"][1]["description"],
        "second <script>window.__pwned=1</script>"
    );

    let status = server.json("/api/status");
    let cli = s.status_json(&["pipelines/a.toml", "pipelines/b.toml"]);
    assert_eq!(
        status, cli,
        "/api/status is `fkp status --json` of every pipeline"
    );

    let compared = server.json("/api/compare?pipelines=a,b");
    let out = s.fkp(&[
        "compare",
        "--format",
        "json",
        "pipelines/a.toml",
        "pipelines/b.toml",
    ]);
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(compared, cli, "/api/compare is `fkp compare --format json`");
    let (code, body) = server.get("/api/compare?pipelines=a,nope");
    assert_eq!((code, body.contains("no pipeline `nope`")), (404, true), "{body}");
    let (code, body) = server.get("/api/compare?pipelines=a&baseline=b");
    assert_eq!(
        (code, body.contains("not among the pipelines compared")),
        (404, true),
        "{body}"
    );
    // Every error is JSON, also a request the router itself refuses.
    for path in ["/api/curves", "/api/face.png?pipeline=a&row=-1"] {
        let (code, body) = server.get(path);
        assert_eq!(code, 400, "{path}: {body}");
        let error: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }

    let curves = server.json("/api/curves?pipeline=b");
    let points = curves["runs"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    assert!(points.iter().all(|p| p["val_rmse_px"].as_f64().unwrap() > 0.0));

    let faces = server.json("/api/faces?pipeline=a");
    let face = &faces["faces"][0];
    assert_eq!(
        face["predicted"].as_array().unwrap().len(),
        faces["coordinate_names"].as_array().unwrap().len()
    );
    let (code, png) = server.get(&format!("/api/face.png?pipeline=a&row={}", face["row"]));
    assert_eq!(code, 200);
    assert!(png.as_bytes().starts_with(b"\x89PNG") || png.contains("PNG"));
    assert_eq!(server.get("/api/face.png?pipeline=a&row=100000").0, 404);

    let files = server.json("/api/reports?pipeline=a");
    assert!(
        files.as_array().unwrap().iter().any(|f| f == "a/metrics.md"),
        "{files}"
    );
    let (code, text) = server.get("/reports/a/metrics.md");
    assert_eq!(code, 200);
    assert!(text.contains("RMSE"), "{text}");
}

#[test]
fn nothing_outside_reports_is_served() {
    let s = workspace();
    s.write("secret.txt", "secret");
    std::os::unix::fs::symlink(s.path("secret.txt"), s.path("reports/a/link.txt")).unwrap();
    std::os::unix::fs::symlink(s.dir.path(), s.path("reports/up")).unwrap();
    let server = Serving::start(&s, &[]);
    for path in [
        "/reports/../secret.txt",
        "/reports/a/../../secret.txt",
        "/reports/%2e%2e/secret.txt",
        "/reports/a/%2e%2e/%2e%2e/secret.txt",
        "/reports/%2e%2e%2fsecret.txt",
        "/reports/..%2f..%2fsecret.txt",
        "/reports//etc/passwd",
        "/reports/%2fetc%2fpasswd",
        "/reports/a/link.txt",
        "/reports/up/secret.txt",
        "/reports/up/pipelines/a.toml",
        "/../secret.txt",
        "/assets/../secret.txt",
        "/.fkp/lock",
    ] {
        let (code, body) = server.get(path);
        assert_eq!(code, 404, "{path} must be refused: {body}");
        assert!(!body.contains("secret"), "{path}: {body}");
    }
    assert_eq!(server.get("/reports/a/metrics.md").0, 200);
    // A page elsewhere whose name resolves here (DNS rebinding) is refused.
    let (code, _) = request(&server.address, "/api/status", "evil.example:80", "");
    assert_eq!(code, 403);
}

#[test]
fn beyond_loopback_every_request_needs_the_token() {
    let s = workspace();
    let server = Serving::start(&s, &["--host", "0.0.0.0"]);
    let url = server
        .printed
        .iter()
        .find(|l| l.starts_with("fkp serve:"))
        .unwrap();
    let token = url
        .split("token=")
        .nth(1)
        .expect("a generated token is printed")
        .to_string();
    assert_eq!(token.len(), 32);
    let host = &server.address;
    assert_eq!(request(host, "/api/status", host, "").0, 401);
    assert_eq!(request(host, "/", host, "").0, 401);
    assert_eq!(
        request(
            host,
            "/api/status?token=wrong-token-of-32-characters-xx",
            host,
            ""
        )
        .0,
        401
    );
    assert_eq!(
        request(host, &format!("/api/status?token={token}"), host, "").0,
        200
    );
    assert_eq!(
        request(
            host,
            "/api/status",
            host,
            &format!("Authorization: Bearer {token}\r\n")
        )
        .0,
        200
    );
    assert_eq!(
        status_line(host, "/api/events", &format!("Cookie: fkp_token={token}\r\n")),
        200
    );

    assert_eq!(
        s.fails(&["serve", "--host", "0.0.0.0", "--port", "0", "--token", "short"])
            .0,
        2
    );
    // What no edit can fix is said at once, as `fkp status` says it.
    for args in [
        &["serve", "--set", "train.epoch=3"][..],
        &["serve", "pipelines/nope.toml"],
    ] {
        let (code, error) = s.fails(args);
        assert_eq!(code, 2, "{args:?}: {error}");
    }
    let (code, error) = s.fails(&["serve", "--host", "example.com"]);
    assert_eq!(code, 2, "{error}");
    assert!(error.contains("not an IP address"), "{error}");
}

/// Reads an event stream until an event named `name`; returns its data.
fn next_event(stream: &mut impl BufRead, name: &str) -> serde_json::Value {
    let mut current = String::new();
    for line in stream.lines() {
        let line = line.expect("the stream stays open");
        if let Some(event) = line.strip_prefix("event: ") {
            current = event.to_string();
        } else if let Some(data) = line.strip_prefix("data: ")
            && current == name
        {
            return serde_json::from_str(data).unwrap();
        }
    }
    panic!("the stream ended before a `{name}` event");
}

#[test]
fn a_training_in_another_process_is_followed_live() {
    let s = workspace();
    s.write("pipelines/live.toml", pipeline(40, 3, "live"));
    let server = Serving::start(&s, &[]);
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.address
    )
    .unwrap();
    let mut events = BufReader::new(stream);
    next_event(&mut events, "hello");

    let mut run = s
        .command(&["run", "pipelines/live.toml"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let epoch = next_event(&mut events, "epoch");
    assert_eq!(epoch["pipeline"], "live");
    assert_eq!(epoch["epoch"], 1);
    assert!(epoch["val_rmse"].as_f64().unwrap() > 0.0, "{epoch}");
    let overview = server.wait_for("/api/overview", "the training to show as running", |o| {
        stage_state(o, "live", "train")["state"] == "running"
    });
    assert_eq!(stage_state(&overview, "live", "train")["run"]["epochs"], 40);
    let progress = next_event(&mut events, "progress");
    // 96 training faces (the default 20% held out of 120) in batches of 16.
    assert_eq!(progress["batches"], 6, "{progress}");

    // kill -9: no end record; the page says killed, and status partial.
    next_event(&mut events, "epoch");
    run.kill().unwrap();
    run.wait().unwrap();
    let overview = server.wait_for("/api/overview", "the killed training", |o| {
        stage_state(o, "live", "train")["run"]["state"] == "killed"
    });
    assert_eq!(stage_state(&overview, "live", "train")["state"], "partial");
    let curve = server.json("/api/curves?pipeline=live");
    let done = curve["runs"][0]["points"].as_array().unwrap().len();
    assert!(done >= 2, "{curve}");

    // Resumed and run to the end: the live log goes, the entry tells the story.
    let live_dir = s.path(".fkp/live");
    s.ok(&["run", "pipelines/live.toml"]);
    let overview = server.wait_for("/api/overview", "the finished training", |o| {
        stage_state(o, "live", "evaluate")["state"] == "cached"
    });
    assert!(stage_state(&overview, "live", "train")["run"].is_null());
    // A stage that succeeded is no kill, though its process is gone by now.
    events
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let rest: Vec<String> = (&mut events).lines().map_while(Result::ok).collect();
    let false_kills: Vec<&String> = rest
        .iter()
        .filter(|l| l.contains("\"killed\"") && l.contains("\"evaluate\""))
        .collect();
    assert!(false_kills.is_empty(), "{false_kills:?}");
    assert_eq!(
        server.json("/api/curves?pipeline=live")["runs"][0]["points"]
            .as_array()
            .unwrap()
            .len(),
        40
    );
    assert_eq!(
        std::fs::read_dir(&live_dir).unwrap().count(),
        0,
        "live logs left behind"
    );
}

#[test]
fn an_edited_pipeline_shows_as_stale_within_a_second() {
    let s = workspace();
    let server = Serving::start(&s, &[]);
    let started = Instant::now();
    s.write("pipelines/a.toml", pipeline(5, 1, "first"));
    server.wait_for("/api/overview", "a.toml's edit", |o| {
        stage_state(o, "a", "train")["state"] == "stale"
    });
    // The promise is a second; a loaded CI machine (tests train beside this one) gets half more.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    let overview = server.json("/api/overview");
    let reason = stage_state(&overview, "a", "train")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("epochs"), "{reason}");
    // A broken file is shown with its line, and hides only itself.
    s.write("pipelines/broken.toml", "[train]\nepochs = \"many\"\n");
    let overview = server.wait_for("/api/overview", "the broken file", |o| {
        !o["problems"].as_array().unwrap().is_empty()
    });
    let problem = overview["problems"][0]["message"].as_str().unwrap();
    assert!(
        problem.contains("broken.toml") && problem.contains("epochs"),
        "{problem}"
    );
    assert_eq!(overview["pipelines"].as_array().unwrap().len(), 2);
}

#[test]
fn watch_serves_the_rounds_it_runs() {
    let s = workspace();
    s.write("pipelines/live.toml", pipeline(3, 4, "live"));
    let server = Serving::spawn(&s, &["watch", "pipelines/live.toml", "--serve", "--port", "0"]);
    let overview = server.wait_for("/api/overview", "watch's first round", |o| {
        stage_state(o, "live", "evaluate")["state"] == "cached"
    });
    // It shows the pipelines it watches, not the whole folder.
    assert_eq!(overview["pipelines"].as_array().unwrap().len(), 1, "{overview:#}");
    assert_eq!(
        server.json("/api/curves?pipeline=live")["runs"][0]["points"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn sigterm_stops_it_with_143() {
    let s = workspace();
    let mut server = Serving::start(&s, &[]);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    let code = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit.code();
        }
        assert!(Instant::now() < deadline, "fkp serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(143));
}

#[test]
#[ignore = "needs Chromium, chromedriver and Selenium: FKP_TEST_PYTHON, a Python with selenium (.ci/run sets it up)"]
fn the_page_works_in_chromium() {
    let python = std::env::var_os("FKP_TEST_PYTHON").expect("FKP_TEST_PYTHON names a Python with selenium");
    let s = workspace();
    s.write("pipelines/live.toml", pipeline(60, 3, "live"));
    let server = Serving::start(&s, &[]);
    let script = crate::common::repo_file("tests/serve/browser.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(["--url", &format!("http://{}/", server.address)])
        .args(["--fkp", env!("CARGO_BIN_EXE_fkp")])
        .args(["--workspace", s.dir.path().to_str().unwrap()])
        .output()
        .expect("the browser script runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tests/serve/browser.py failed:\n{printed}");
    assert!(printed.contains("all browser checks passed"), "{printed}");
}

#[test]
fn clean_keeps_a_resumable_runs_live_log_and_removes_a_leftover() {
    let s = workspace();
    s.write("pipelines/live.toml", pipeline(40, 5, "live"));
    let mut run = s
        .command(&["run", "pipelines/live.toml"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let live_dir = s.path(".fkp/live");
    let logs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&live_dir).map_or(Vec::new(), |d| d.flatten().map(|e| e.path()).collect())
    };
    let deadline = Instant::now() + PATIENCE;
    // Two epochs logged: the first one's checkpoint is on disk.
    while !logs().iter().any(|log| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("\"event\":\"epoch\"")
            .count()
            >= 2
    }) {
        assert!(Instant::now() < deadline, "no epoch was logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(logs().len(), 1);
    s.ok(&["clean"]);
    assert_eq!(logs().len(), 1, "the next run resumes and continues its curve");
    s.write("pipelines/live.toml", pipeline(41, 5, "live"));
    s.ok(&["clean"]);
    assert_eq!(
        logs(),
        Vec::<std::path::PathBuf>::new(),
        "nothing resumes that training now"
    );
}
