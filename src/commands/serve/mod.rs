//! `fkp serve`: a live view of the workspace's pipelines in the browser, until
//! Ctrl-C. It reads the cache and `reports/` as `fkp status` and `fkp compare`
//! do (no lock, never a write) and follows running trainings through their
//! live logs (`dag::live`). The API is documented in docs/serve.md.
//!
//! [`hub`] keeps the workspace's state fresh, [`routes`] answers HTTP,
//! [`overview`], [`curves`] and [`faces`] shape what the page shows, [`files`]
//! guards `reports/`, [`page`] holds the page itself.

mod curves;
mod faces;
mod files;
mod hub;
mod live_view;
mod overview;
mod page;
mod routes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use clap::Args;
use tokio::sync::watch;

use super::{Context, Error, Exit};
use crate::config::{Override, discover_pipelines};
use crate::console::Console;
use crate::dag::Graph;
use crate::workspace::{PIPELINES_DIR, Workspace};

#[derive(Args)]
pub(super) struct ServeArgs {
    /// Pipeline files (TOML) to show; none: every *.toml in ./pipelines/,
    /// including ones added while it serves.
    #[arg(value_name = "PIPELINE.toml")]
    pipelines: Vec<PathBuf>,
    #[command(flatten)]
    options: ServeFlags,
}

/// The flags of `fkp serve`, which `fkp watch --serve` shares.
#[derive(Args, Debug, Clone)]
pub struct ServeFlags {
    /// The address to listen on. Any but a loopback one needs a token
    /// (--token, or one is made and printed).
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_host)]
    host: IpAddr,
    /// The port (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// A token every request must carry (`?token=`, `Authorization: Bearer`).
    #[arg(long, env = "FKP_SERVE_TOKEN", value_name = "TOKEN")]
    token: Option<String>,
    /// Open the page in the default browser.
    #[arg(long)]
    open: bool,
}

fn parse_host(text: &str) -> Result<IpAddr, String> {
    match text {
        "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        _ => text
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address (127.0.0.1, 0.0.0.0, ::1, localhost)")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source} (--port picks another port)")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the server: {0}")]
    Start(std::io::Error),
    #[error("--token must be 16 or more characters from A-Z, a-z, 0-9, - and _")]
    WeakToken,
}

pub(super) fn execute(args: ServeArgs, context: &Context) -> Result<Exit, Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Caught before the address is printed: a signal sent as soon as it is
    // seen still stops the server in order.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Error::io("cannot catch Ctrl-C and SIGTERM", e))?;
    refuse_what_no_edit_fixes(&args.pipelines, context)?;
    let workspace = context.workspace.clone();
    let overrides = context.overrides.clone();
    let server = Serving::start(
        workspace,
        args.pipelines,
        overrides,
        &args.options,
        context.console,
    )?;
    let signal = signals.forever().next().unwrap_or(SIGINT);
    server.stop();
    Ok(Exit::Signal(signal))
}

/// A named pipeline file that does not load, or a `--set` that fits no
/// pipeline, is an error now (exit 2, as for `fkp status`); a broken file
/// found in `pipelines/` is shown on the page instead, until it is fixed.
fn refuse_what_no_edit_fixes(named: &[PathBuf], context: &Context) -> Result<(), Error> {
    if !named.is_empty() {
        context.load(named)?;
        return Ok(());
    }
    if context.overrides.is_empty() {
        return Ok(());
    }
    let found = discover_pipelines(&context.workspace.root.join(PIPELINES_DIR)).unwrap_or_default();
    match context.load(&found) {
        Err(error) if Graph::load(&found).is_ok() => Err(error.into()),
        _ => Ok(()),
    }
}

/// A server running on its own threads.
pub struct Serving {
    stop: Arc<AtomicBool>,
    stopping: watch::Sender<bool>,
    follower: std::thread::JoinHandle<()>,
    http: std::thread::JoinHandle<()>,
}

impl Serving {
    /// Listens, looks at the workspace once, says where the page is, and
    /// serves on other threads until [`Serving::stop`].
    pub fn start(
        workspace: Workspace,
        pipelines: Vec<PathBuf>,
        overrides: Vec<Override>,
        flags: &ServeFlags,
        console: &Console,
    ) -> Result<Serving, ServeError> {
        let requested = SocketAddr::new(flags.host, flags.port);
        let listener = TcpListener::bind(requested).map_err(|source| ServeError::Listen {
            address: requested,
            source,
        })?;
        let address = listener.local_addr().map_err(ServeError::Start)?;
        listener.set_nonblocking(true).map_err(ServeError::Start)?;
        let loopback = address.ip().is_loopback();
        let token = match (&flags.token, loopback) {
            (Some(token), _) if !strong(token) => return Err(ServeError::WeakToken),
            (Some(token), _) => Some(token.clone()),
            (None, true) => None,
            (None, false) => Some(new_token()),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (hub, follower) = hub::Hub::start(workspace, pipelines, overrides, stop.clone());
        let (stopping, stopping_rx) = watch::channel(false);
        let server = Arc::new(routes::Server {
            hub,
            hosts: loopback.then(|| own_hosts(address.port())),
            token: token.clone(),
            faces: faces::FaceImages::default(),
            streams: AtomicUsize::new(0),
            compared: std::sync::Mutex::new(Vec::new()),
            stopping: stopping_rx.clone(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fkp-serve")
            .enable_all()
            .build()
            .map_err(ServeError::Start)?;
        let app = routes::router(server.clone());
        let http = std::thread::Builder::new()
            .name("fkp-serve".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let mut stopping = stopping_rx;
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopping.wait_for(|stop| *stop).await;
                        })
                        .await;
                });
            })
            .map_err(ServeError::Start)?;
        let shown = match address.ip() {
            ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port()),
            _ => address,
        };
        let url = match &token {
            Some(token) => format!("http://{shown}/?token={token}"),
            None => format!("http://{shown}/"),
        };
        let view = server.hub.view();
        let count = view.status.as_ref().map_or(0, |s| s.pipelines.len());
        console.result(&format!(
            "fkp serve: {url}\n  {} of {}, live; Ctrl-C stops",
            super::count(count, "pipeline", "pipelines"),
            server.hub.workspace.root.display()
        ));
        for problem in &view.problems {
            console.warn(&format!("{}: {}", problem.file, problem.message));
        }
        if !loopback {
            console.result(&format!(
                "  listening on {address}, beyond this machine: every request must carry the token \
                 (?token=…, or the header Authorization: Bearer …)"
            ));
        }
        if flags.open {
            open_browser(&url, console);
        }
        Ok(Serving {
            stop,
            stopping,
            follower,
            http,
        })
    }

    /// Ends the event streams, stops answering and waits for the threads.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stopping.send(true);
        let _ = self.http.join();
        let _ = self.follower.join();
    }
}

/// The Host headers a loopback server answers.
fn own_hosts(port: u16) -> Vec<String> {
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .map(|host| format!("{host}:{port}"))
        .collect()
}

fn strong(token: &str) -> bool {
    token.len() >= 16
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 128 random bits, as 32 hex digits.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn open_browser(url: &str, console: &Console) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        console.warn(&format!(
            "cannot open a browser ({opener}: {e}): open {url} yourself"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(strong(&a) && a.len() == 32, "{a}");
        assert!(!strong("short"));
        assert!(!strong("sixteen-or-more&but=unsafe"));
    }

    #[test]
    fn hosts_are_addresses_or_localhost() {
        assert_eq!(parse_host("localhost").unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(parse_host("0.0.0.0").unwrap().is_unspecified());
        assert!(
            parse_host("example.com")
                .unwrap_err()
                .contains("not an IP address")
        );
    }

    #[test]
    fn the_page_stays_small() {
        // index, script, style and uPlot: a page for a laptop on a slow link.
        assert!(page::total_bytes() < 160_000, "{} bytes", page::total_bytes());
    }
}
