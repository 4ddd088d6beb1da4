//! Where `tracer top` gets the state: the service's socket, or a tracer of
//! its own run in-process (the same pipeline as `tracer run`, serving its
//! API on a private socket and writing its records nowhere).

use std::{
    collections::VecDeque,
    io::BufRead as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser as _;
use ratatui::DefaultTerminal;
use serde_json::Value;

use super::{App, Phase};
use crate::{
    cli::{Cli, Command},
    service::client,
};

/// How long a tracer of our own may take to write its final records.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Lines of the tracer's stderr kept while the view is up, replayed after.
const STDERR_KEPT: usize = 50;

/// A tracer of our own, run on a thread.
struct Own {
    thread: Option<JoinHandle<Result<()>>>,
    socket: PathBuf,
    /// It answered: its signal handlers are in place, so SIGINT stops it.
    served: bool,
}

pub(super) struct Feed {
    socket: PathBuf,
    pub(super) interval: Duration,
    own: Option<Own>,
    requests: Sender<()>,
    answers: Receiver<Result<Value>>,
    /// The first state, read while deciding where to read from.
    first: Option<Value>,
    stderr: Option<Lines>,
}

/// Nothing serves the socket (no file, or nobody listening): not a reason
/// to give up, but to trace the host ourselves.
fn unserved(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(io.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused)
        })
    })
}

impl Feed {
    pub(super) fn open(socket: &Path, interval: Duration) -> Result<Self> {
        let (first, own, socket) = match client::state(socket) {
            Ok(state) => (Some(state), None, socket.to_owned()),
            Err(e) if unserved(&e) => {
                let own = Own::start(interval)?;
                let at = own.socket.clone();
                (None, Some(own), at)
            }
            Err(e) => return Err(e),
        };
        // Reads happen on a thread: a socket bound but not yet served (our
        // own tracer loading its programs) holds a read until it serves,
        // and the keys must work meanwhile.
        let (requests, asked) = mpsc::channel::<()>();
        let (answer, answers) = mpsc::channel();
        let at = socket.clone();
        std::thread::Builder::new().name("tracer-top-read".into()).spawn(move || {
            while asked.recv().is_ok() {
                // Requests that piled up behind a slow read are one read.
                while asked.try_recv().is_ok() {}
                if answer.send(client::state(&at)).is_err() {
                    break;
                }
            }
        })?;
        Ok(Self { socket, interval, own, requests, answers, first, stderr: None })
    }

    pub(super) fn is_self_traced(&self) -> bool {
        self.own.is_some()
    }

    pub(super) fn describe(&self) -> String {
        if self.own.is_some() {
            "self-traced (no tracer serves the API)".to_owned()
        } else {
            self.socket.display().to_string()
        }
    }

    pub(super) fn first_phase(&self) -> Phase {
        if self.own.is_some() { Phase::Loading } else { Phase::Waiting }
    }

    /// Asks for a fresh state; `poll` hands it over when it is there.
    pub(super) fn request(&self) {
        let _ = self.requests.send(());
    }

    /// Gives the app what came in; an error when our own tracer stopped.
    pub(super) fn poll(&mut self, app: &mut App) -> Result<()> {
        if let Some(state) = self.first.take() {
            app.update(state);
        }
        let mut failed = None;
        while let Ok(answer) = self.answers.try_recv() {
            match answer {
                Ok(state) => {
                    app.update(state);
                    failed = None;
                    if let Some(own) = &mut self.own {
                        own.served = true;
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            // Our own tracer has no socket until its programs are loaded.
            if self.own.as_ref().is_none_or(|o| o.served) {
                app.message = Some(format!("{e:#}"));
            }
        } else if let Some(last) = self.stderr.as_ref().and_then(|l| l.lock().unwrap().back().cloned()) {
            app.message = Some(last);
        } else if !app.state.is_null() {
            app.message = None;
        }
        if let Some(own) = &mut self.own
            && own.thread.as_ref().is_some_and(JoinHandle::is_finished)
        {
            let ended = own.thread.take().unwrap().join();
            return match ended {
                // A signal stopped it (SIGTERM, SIGINT): the view ends too.
                Ok(Ok(())) => {
                    app.quit = true;
                    Ok(())
                }
                Ok(Err(e)) => Err(e.context("tracing this host")),
                Err(_) => bail!("the tracer top started panicked"),
            };
        }
        Ok(())
    }

    /// Stops our own tracer, if any, and waits for its final records.
    pub(super) fn stop(&mut self) {
        let Some(mut own) = self.own.take() else { return };
        // Not serving yet, it is still loading, with no handler for SIGINT:
        // the programs go with the process.
        if let Some(thread) = own.thread.take()
            && own.served
        {
            // SAFETY: plain syscalls; the tracer's handler takes SIGINT as
            // it does under `tracer run`, and shuts down.
            unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
            let until = Instant::now() + STOP_GRACE;
            while !thread.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if thread.is_finished()
                && let Ok(Err(e)) = thread.join()
            {
                eprintln!("tracer: {e:#}");
            }
        }
        let _ = std::fs::remove_file(&own.socket);
    }
}

impl Own {
    fn start(interval: Duration) -> Result<Self> {
        let socket = PathBuf::from(format!("/run/tracer/top-{}.sock", std::process::id()));
        let every = format!("{}ms", interval.as_millis().max(1));
        // Through the command line, so the defaults are those of `tracer run`.
        let cli = Cli::try_parse_from([
            "tracer",
            "run",
            "--api",
            socket.to_str().context("the socket path")?,
            "--sink",
            "/dev/null",
            "--activity-interval",
            &every,
            "--health-interval",
            &every,
        ])?;
        let Command::Run(args) = cli.command else { unreachable!("parsed as run") };
        let thread = std::thread::Builder::new()
            .name("tracer-top-run".into())
            .spawn(move || crate::pipeline::run(args, false))?;
        Ok(Self { thread: Some(thread), socket, served: false })
    }
}

/// Where stderr was before the view took it; -1: not taken. A panic hook
/// gives it back, so a panic's message is seen.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

fn give_stderr_back() {
    let fd = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: both fds are ours; dup2 replaces fd 2 atomically.
        unsafe {
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

/// The latest lines of stderr, oldest first.
type Lines = Arc<Mutex<VecDeque<String>>>;

/// Sends fd 2 into a pipe whose lines are kept: what our own tracer says
/// on stderr would otherwise scribble over the view.
fn take_stderr() -> Result<(Lines, JoinHandle<()>)> {
    let mut fds = [0; 2];
    // SAFETY: a valid array for pipe2's two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: pipe2 gave us both fds.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain fd syscalls on our own fds.
    let saved = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 || unsafe { libc::dup2(write.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error()).context("redirecting stderr");
    }
    drop(write);
    SAVED_STDERR.store(saved, Ordering::SeqCst);
    let lines = Arc::new(Mutex::new(VecDeque::new()));
    let kept = lines.clone();
    let reader = std::thread::Builder::new().name("tracer-top-stderr".into()).spawn(move || {
        // Ends when fd 2, the pipe's last writer, is given back.
        for line in std::io::BufReader::new(std::fs::File::from(read)).lines().map_while(Result::ok) {
            let mut kept = kept.lock().unwrap();
            if kept.len() == STDERR_KEPT {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    })?;
    Ok((lines, reader))
}

/// Runs `f` with the terminal in the view's mode and restores it after,
/// also on an error or a panic.
pub(super) fn with_terminal(
    feed: &mut Feed,
    f: impl FnOnce(&mut DefaultTerminal, &mut Feed) -> Result<()>,
) -> Result<()> {
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let taken = if feed.is_self_traced() {
        match take_stderr() {
            Ok((lines, reader)) => {
                feed.stderr = Some(lines);
                Some(reader)
            }
            Err(e) => {
                ratatui::restore();
                return Err(e);
            }
        }
    } else {
        None
    };
    // ratatui's hook restores the terminal and then reports the panic;
    // stderr must be back before.
    let restore_terminal = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        give_stderr_back();
        restore_terminal(info);
    }));
    let result = f(&mut terminal, feed);
    ratatui::restore();
    give_stderr_back();
    if let Some(reader) = taken {
        // What was said while the view was up is said again where it is read.
        // It ends when the pipe's last writer closes; a child that
        // inherited fd 2 could hold it, so the wait is short.
        let until = Instant::now() + Duration::from_millis(500);
        while !reader.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(lines) = feed.stderr.take() {
            for line in lines.lock().unwrap().drain(..) {
                eprintln!("{line}");
            }
        }
    }
    result
}
