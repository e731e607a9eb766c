//! Running external programs (talosctl, kubectl): where they are, which version they are (part
//! of every key that uses them), and running them so a failure carries the child's stderr.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::derivation::Tool;

/// A child process failure, with what it said.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{tool} not found: set {env} or put it on PATH")]
    NotFound {
        tool: &'static str,
        env: &'static str,
    },
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "{program} {args} did not finish within {limit_s} s and was stopped\n\
         hint: raise TALIX_EXEC_TIMEOUT_S if it legitimately takes longer"
    )]
    TimedOut {
        program: String,
        args: String,
        limit_s: u64,
    },
    #[error("{program} {args} failed ({status}):\n{stderr}")]
    Failed {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
}

/// The program to run for `tool`: `TALIX_TALOSCTL` / `TALIX_KUBECTL`, else the first match on
/// `PATH`.
pub fn locate(tool: Tool) -> Result<PathBuf, ExecError> {
    let (name, env) = match tool {
        Tool::Talosctl => ("talosctl", "TALIX_TALOSCTL"),
        Tool::Kubectl => ("kubectl", "TALIX_KUBECTL"),
    };
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(ExecError::NotFound { tool: name, env })
}

/// Environment override of [`exec_timeout`], in seconds.
pub const ENV_EXEC_TIMEOUT_S: &str = "TALIX_EXEC_TIMEOUT_S";

/// Default bound of one external command: long enough for a `talosctl upgrade --wait` on slow
/// hardware, short enough that a hung child does not hang talix forever.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The bound every external command runs under: `TALIX_EXEC_TIMEOUT_S` (1 s to 1 day) or
/// [`DEFAULT_EXEC_TIMEOUT`]. An unparsable or out-of-range value falls back to the default.
pub fn exec_timeout() -> Duration {
    std::env::var(ENV_EXEC_TIMEOUT_S)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=86_400).contains(s))
        .map_or(DEFAULT_EXEC_TIMEOUT, Duration::from_secs)
}

/// Wait for `child` at most `limit`; on expiry kill it, reap it and return `Ok(None)`.
///
/// The exit is noticed the moment it happens: a helper thread blocks in `waitid(WNOWAIT)`
/// (which waits for the exit without reaping, so the pid stays the child's until this function
/// reaps it and a kill on expiry can never hit a reused pid) and this thread waits on it with
/// the deadline. Polling `try_wait` with a backoff cost up to 50 ms after every child's exit,
/// on the critical path of every talosctl call (issue 10).
pub fn wait_within<C: Reap>(child: &mut C, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_reap()? {
        return Ok(Some(status));
    }
    let pid = child.pid() as libc::id_t;
    let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::spawn(move || {
        loop {
            // SAFETY: waitid writes into the siginfo we own; WNOWAIT leaves the child
            // unreaped (only the caller's `Child::wait` reaps it).
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc =
                unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc == 0 {
                let _ = tx.send(Ok(()));
                return;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                let _ = tx.send(Err(err));
                return;
            }
        }
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => child.reap().map(Some),
        // waitid itself failed (it should not): fall back to a plain wait.
        Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => child.reap().map(Some),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill_now();
            let _ = child.reap();
            Ok(None)
        }
    }
}

/// A child process talix waits for: std's, or one [`crate::spawn`] started.
pub trait Reap {
    fn pid(&self) -> u32;
    fn try_reap(&mut self) -> std::io::Result<Option<ExitStatus>>;
    fn reap(&mut self) -> std::io::Result<ExitStatus>;
    fn kill_now(&mut self) -> std::io::Result<()>;
    /// Its stdout and stderr pipes, taken (each at most once).
    fn take_pipes(&mut self) -> (Option<Pipe>, Option<Pipe>);
}

/// A child's output pipe.
pub type Pipe = Box<dyn Read + Send>;

/// Both child types have the same methods under the same names.
macro_rules! impl_reap {
    ($child:ty) => {
        impl Reap for $child {
            fn pid(&self) -> u32 {
                self.id()
            }
            fn try_reap(&mut self) -> std::io::Result<Option<ExitStatus>> {
                self.try_wait()
            }
            fn reap(&mut self) -> std::io::Result<ExitStatus> {
                self.wait()
            }
            fn kill_now(&mut self) -> std::io::Result<()> {
                self.kill()
            }
            fn take_pipes(&mut self) -> (Option<Pipe>, Option<Pipe>) {
                (
                    self.stdout.take().map(|p| Box::new(p) as Pipe),
                    self.stderr.take().map(|p| Box::new(p) as Pipe),
                )
            }
        }
    };
}

impl_reap!(Child);
impl_reap!(crate::spawn::FastChild);

impl<R: Reap + ?Sized> Reap for Box<R> {
    fn pid(&self) -> u32 {
        (**self).pid()
    }
    fn try_reap(&mut self) -> std::io::Result<Option<ExitStatus>> {
        (**self).try_reap()
    }
    fn reap(&mut self) -> std::io::Result<ExitStatus> {
        (**self).reap()
    }
    fn kill_now(&mut self) -> std::io::Result<()> {
        (**self).kill_now()
    }
    fn take_pipes(&mut self) -> (Option<Pipe>, Option<Pipe>) {
        (**self).take_pipes()
    }
}

/// Make the child die with talix: a talix killed mid-run (SIGKILL, OOM) must not leave a
/// talosctl behind that is still applying a config while the next `talix up` decides, from the
/// write-ahead `pending` record, whether that apply reached its node (issue 8/10: an orphaned
/// apply landing after the re-run applied the node again is a double apply). Linux
/// `PR_SET_PDEATHSIG` fires when the thread that spawned the child ends; talix's threads wait
/// for their children, so that is when talix dies. If talix died between fork and the prctl,
/// the child does not start.
pub fn dies_with_talix(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "talix exited before its child started",
                ));
            }
            Ok(())
        });
    }
}

/// `cmd.output()` bounded by `limit`: stdout and stderr are drained concurrently; on expiry the
/// child is killed and `Ok(None)` returned. Pipes still held open by a descendant after that are
/// abandoned, not waited for. Waits for a [`ProcessPermit`] first.
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::io::Result<Option<Output>> {
    output_within_as(cmd, limit, Priority::Normal)
}

/// [`output_within`] with a [`Priority`] for the process permit.
pub fn output_within_as(
    cmd: &mut Command,
    limit: Duration,
    priority: Priority,
) -> std::io::Result<Option<Output>> {
    let _permit = ProcessPermit::acquire_as(priority);
    child_output_within(spawn_piped(cmd, &[])?, limit)
}

/// Start `cmd` with stdin `/dev/null` and piped stdout and stderr, keeping the descriptors
/// `keep` open in the child (secret pipes) and dying with talix: without copying talix
/// ([`crate::spawn`]) when its program is a path, else by std (`fork` with a `pre_exec` hook).
/// Take a [`ProcessPermit`] first.
pub fn spawn_piped(
    cmd: &mut Command,
    keep: &[std::os::fd::RawFd],
) -> std::io::Result<Box<dyn Reap + Send>> {
    if crate::spawn::can_spawn(cmd) {
        return Ok(Box::new(while_text_busy(|| {
            crate::spawn::spawn(cmd, keep)
        })?));
    }
    for &fd in keep {
        keep_in_child(cmd, fd);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    dies_with_talix(cmd);
    Ok(Box::new(while_text_busy(|| cmd.spawn())?))
}

/// Start a program again while `execve` says it is open for writing (`ETXTBSY`), up to 5 s:
/// a program just written (a package upgrade, a test's fake talosctl) stays "busy" for as long
/// as any process forked meanwhile holds a copy of the writer's descriptor, that is until that
/// child has exec'd -- moments, but not never.
fn while_text_busy<T>(mut start: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_millis(1);
    loop {
        match start() {
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Make `cmd`'s child keep `fd` open across `exec` (talix opens every descriptor
/// close-on-exec; only the child clears the flag on its copy, so no other child started
/// concurrently inherits it).
pub fn keep_in_child(cmd: &mut Command, fd: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls fcntl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Which waiter gets a free process slot first: a waiter is served only when no waiter of a
/// higher priority waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Most children (workers' renders and applies, readiness checks).
    Normal = 0,
    /// The critical path of a first bootstrap: the base configs and the control planes' renders
    /// and applies (etcd is bootstrapped on the first one, and workers get their certificates
    /// from them, so a worker up before any control plane is not trusted yet).
    Critical = 1,
    /// Children every node waits for (discovery's `get links`: no node can be applied before
    /// every machine has been named).
    High = 2,
}
/// How many child processes talix runs at once (0: no limit); see [`set_process_limit`].
static PROCESS_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Children running and waiters by priority, and the condition waiters wait on.
static PROCESSES: (Mutex<Slots>, std::sync::Condvar) = (
    Mutex::new(Slots {
        running: 0,
        waiting: [0; 3],
    }),
    std::sync::Condvar::new(),
);

struct Slots {
    running: usize,
    /// Waiters by [`Priority`] (its discriminant).
    waiting: [usize; 3],
}

impl Slots {
    fn higher_waits(&self, priority: Priority) -> bool {
        self.waiting[priority as usize + 1..].iter().any(|&n| n > 0)
    }
}

/// Bound the external programs (talosctl, kubectl) running at once to `n` (`up --jobs`):
/// nodes are worked on in parallel, and each waits for a free slot to run one.
pub fn set_process_limit(n: usize) {
    PROCESS_LIMIT.store(n, std::sync::atomic::Ordering::SeqCst);
    PROCESSES.1.notify_all();
}

/// A slot for one child process, held while it runs (released on drop). Never hold one while
/// waiting for another.
pub struct ProcessPermit(bool);

impl ProcessPermit {
    pub fn acquire() -> Self {
        Self::acquire_as(Priority::Normal)
    }

    /// A slot; a waiter is served before every waiter of a lower [`Priority`].
    pub fn acquire_as(priority: Priority) -> Self {
        let limit = || {
            PROCESS_LIMIT
                .load(std::sync::atomic::Ordering::SeqCst)
                .max(1)
        };
        if PROCESS_LIMIT.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return Self(false);
        }
        let (lock, cvar) = &PROCESSES;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.waiting[priority as usize] += 1;
        while state.running >= limit() || state.higher_waits(priority) {
            state = cvar.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.waiting[priority as usize] -= 1;
        state.running += 1;
        Self(true)
    }

    /// Child processes holding a permit right now.
    pub fn running() -> usize {
        PROCESSES
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
    }

    /// Whether no thread waits for a permit (the processes talix runs do not fill the slots).
    pub fn uncontended() -> bool {
        PROCESSES
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .iter()
            .all(|&n| n == 0)
    }

    /// Threads waiting for a permit of `priority`.
    pub fn waiting(priority: Priority) -> usize {
        PROCESSES
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting[priority as usize]
    }
}

impl Drop for ProcessPermit {
    fn drop(&mut self) {
        if self.0 {
            let (lock, cvar) = &PROCESSES;
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            state.running = state.running.saturating_sub(1);
            // Waiters of one priority only: any one of them may take the slot. Of several
            // priorities, every waiter looks again (waking one could wake a lower one, which
            // must leave the slot to the higher). Waking all of 60 waiting nodes on every exit
            // was 5 % of talix's CPU at 3+57.
            if state.waiting.iter().filter(|&&n| n > 0).count() > 1 {
                cvar.notify_all();
            } else {
                cvar.notify_one();
            }
        }
    }
}

/// [`output_within`] for a child already spawned (with piped stdout and stderr).
pub fn child_output_within<C: Reap>(
    mut child: C,
    limit: Duration,
) -> std::io::Result<Option<Output>> {
    let drain = |pipe: Option<Pipe>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let (stdout, stderr) = child.take_pipes();
    let out = drain(stdout);
    let err = drain(stderr);
    let Some(status) = wait_within(&mut child, limit)? else {
        return Ok(None);
    };
    let join = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    Ok(Some(Output {
        status,
        stdout: join(out),
        stderr: join(err),
    }))
}

/// Run `program args`, capturing stdout; a non-zero exit is an error carrying the argv and the
/// child's stderr. Never pass secrets as arguments: they go through pipes
/// (see [`crate::secrets::SecretPipe`]).
pub fn run_capture<I, S>(
    program: &Path,
    args: I,
    configure: impl FnOnce(&mut Command),
) -> Result<Output, ExecError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let mut cmd = Command::new(program);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut cmd);
    let limit = exec_timeout();
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let argv = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let output = output_within(&mut cmd, limit)
        .map_err(|source| ExecError::Spawn {
            program: program.display().to_string(),
            source,
        })?
        .ok_or_else(|| ExecError::TimedOut {
            program: name.clone(),
            args: argv.clone(),
            limit_s: limit.as_secs(),
        })?;
    if !output.status.success() {
        return Err(ExecError::Failed {
            program: name,
            args: argv,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_string(),
        });
    }
    Ok(output)
}

/// Tool versions, resolved once per process and only for tools a step actually uses.
///
/// A probed version is also remembered between runs ([`ToolVersions::remembering`]), keyed by
/// the identity of the binary that answered: its real path, device, inode, size, mtime and
/// ctime, so an upgraded, replaced or re-linked binary is probed again. `kubectl version
/// --client` alone took ~85 ms, most of a no-op `up` or a `plan` (issue 10). Only an ELF
/// executable whose own file name begins with the tool's name is remembered: a script, or a
/// dispatcher such as a mise shim (a link to `mise`), may answer for a different binary
/// depending on the directory or the environment, so it is asked every time.
#[derive(Debug, Default)]
pub struct ToolVersions {
    cache: Mutex<BTreeMap<Tool, Slot>>,
    /// Where versions are remembered between runs (`None`: not at all).
    remembered: Option<RememberedVersions>,
}

/// Versions remembered between runs, one small file per binary identity under
/// `<cache>/talix/tool-versions-v1/` (`$XDG_CACHE_HOME`, else `~/.cache`). Read by every
/// command; written only by commands that may write (`plan` leaves no trace).
#[derive(Debug, Clone)]
struct RememberedVersions {
    dir: PathBuf,
    write: bool,
}

impl RememberedVersions {
    /// The directory under the user's cache dir, from `env` (absolute paths only).
    fn dir_from(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
        let base = env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                env("HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .map(|h| h.join(".cache"))
            })?;
        Some(base.join("talix").join("tool-versions-v1"))
    }

    fn get(&self, identity: &str) -> Option<String> {
        let bytes = crate::store::local::read_optional(&self.dir.join(identity)).ok()??;
        let text = String::from_utf8(bytes).ok()?;
        let version = text.strip_suffix('\n')?;
        // Anything but one plausible version line is not ours: ask the tool.
        (!version.is_empty()
            && version.len() <= 128
            && version.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| version.to_string())
    }

    fn put(&self, identity: &str, version: &str) {
        if !self.write || version.len() > 128 || !version.bytes().all(|b| b.is_ascii_graphic()) {
            return;
        }
        // Best effort: a cache that cannot be written is a cache miss next time. A torn file
        // (power loss) fails the check in `get`; no fsync.
        let _ = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(&self.dir)?;
            std::io::Write::write_all(&mut tmp, format!("{version}\n").as_bytes())?;
            tmp.persist(self.dir.join(identity)).map_err(|e| e.error)?;
            Ok(())
        });
    }
}

/// The identity a remembered version of `tool` at `program` is filed under, or `None` when the
/// binary must be asked every time (see [`ToolVersions`]).
fn binary_identity(tool: Tool, program: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(program).ok()?;
    if !real.file_name()?.to_str()?.starts_with(tool.name()) {
        return None;
    }
    let mut file = std::fs::File::open(&real).ok()?;
    let meta = file.metadata().ok()?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).ok()?;
    if !meta.is_file() || magic != *b"\x7fELF" {
        return None;
    }
    let mut h = blake3::Hasher::new();
    h.update(tool.name().as_bytes());
    h.update(&[0]);
    h.update(real.as_os_str().as_encoded_bytes());
    h.update(&[0]);
    for n in [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ctime() as u64,
        meta.ctime_nsec() as u64,
    ] {
        h.update(&n.to_le_bytes());
    }
    Some(h.finalize().to_hex().to_string())
}

/// One tool's version, probed at most once (a second asker waits for the first probe).
type Slot = std::sync::Arc<std::sync::OnceLock<Result<String, String>>>;

impl ToolVersions {
    /// Versions remembered between runs in the user's cache dir (`$XDG_CACHE_HOME/talix`, else
    /// `~/.cache/talix`); `write` lets this process add to them.
    pub fn remembering(write: bool) -> Self {
        Self::remembering_in(
            RememberedVersions::dir_from(&|name| std::env::var_os(name)),
            write,
        )
    }

    fn remembering_in(dir: Option<PathBuf>, write: bool) -> Self {
        Self {
            cache: Default::default(),
            remembered: dir.map(|dir| RememberedVersions { dir, write }),
        }
    }

    fn slot(&self, tool: Tool) -> Slot {
        self.cache.lock().unwrap().entry(tool).or_default().clone()
    }

    /// The version string of `tool` (`v1.11.5`), or why it is unavailable.
    pub fn get(&self, tool: Tool) -> Result<String, String> {
        let remembered = self.remembered.clone();
        self.slot(tool)
            .get_or_init(|| probe_remembered(tool, remembered.as_ref()).map_err(|e| e.to_string()))
            .clone()
    }

    /// Start probing `tools` in the background, so their `version --client` runs (tens of
    /// milliseconds for kubectl) overlap with the work before their versions are asked for
    /// (issue 10: on a no-op `up` the probes were most of the time). [`ToolVersions::get`]
    /// waits for a probe under way.
    pub fn prefetch(&self, tools: impl IntoIterator<Item = Tool>) {
        let tools: std::collections::BTreeSet<Tool> = tools.into_iter().collect();
        for tool in tools {
            let slot = self.slot(tool);
            if slot.get().is_none() {
                let remembered = self.remembered.clone();
                std::thread::spawn(move || {
                    slot.get_or_init(|| {
                        probe_remembered(tool, remembered.as_ref()).map_err(|e| e.to_string())
                    });
                });
            }
        }
    }
}

/// [`probe`], answered from `remembered` when the same binary was asked before.
fn probe_remembered(
    tool: Tool,
    remembered: Option<&RememberedVersions>,
) -> Result<String, ExecError> {
    let Some(remembered) = remembered else {
        return probe(tool);
    };
    let program = locate(tool)?;
    let Some(identity) = binary_identity(tool, &program) else {
        return probe_at(tool, &program);
    };
    if let Some(version) = remembered.get(&identity) {
        tracing::debug!(tool = tool.name(), %version, "tool version remembered");
        return Ok(version);
    }
    let version = probe_at(tool, &program)?;
    remembered.put(&identity, &version);
    Ok(version)
}

fn probe(tool: Tool) -> Result<String, ExecError> {
    probe_at(tool, &locate(tool)?)
}

fn probe_at(tool: Tool, program: &Path) -> Result<String, ExecError> {
    let program = program.to_path_buf();
    let args: &[&str] = match tool {
        Tool::Talosctl => &["version", "--client", "--short"],
        Tool::Kubectl => &["version", "--client", "-o", "json"],
    };
    let out = run_capture(&program, args, |_| {})?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(first_version(&text).unwrap_or_else(|| text.trim().to_string()))
}

/// The first `vX.Y.Z` token in `text`.
pub fn first_version(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .find(|w| {
            let body = w.strip_prefix('v').unwrap_or("");
            let parts: Vec<&str> = body.split(['.', '-', '+']).collect();
            parts.len() >= 3
                && parts[..3]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The tests that change the process-wide limit run one at a time.
    static LIMIT_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn a_program_still_open_for_writing_is_started_once_the_writer_closes_it() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("talosctl");
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&path)
            .unwrap();
        writer.write_all(b"#!/bin/sh\necho started\n").unwrap();
        // While the writer is open, execve refuses: ETXTBSY (the failure the unit tests of
        // discovery met when another test forked meanwhile).
        let busy = Command::new(&path).output().unwrap_err();
        assert_eq!(busy.raw_os_error(), Some(libc::ETXTBSY), "{busy}");
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(writer);
        });
        let child = spawn_piped(&mut Command::new(&path), &[]).unwrap();
        let out = child_output_within(child, Duration::from_secs(60))
            .unwrap()
            .unwrap();
        closer.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    }

    /// Wait (bounded) until `cond` holds: a condition, not a duration.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !cond() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::yield_now();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waiters are served by priority, whatever order they came in: discovery's `get links`
    /// (high), then a control plane's render (critical), then a worker's (normal).
    #[test]
    fn waiters_get_the_next_slots_by_priority() {
        let _serial = LIMIT_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        set_process_limit(1);
        let held = ProcessPermit::acquire();
        let order = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for priority in [Priority::Normal, Priority::Critical, Priority::High] {
                let order = &order;
                scope.spawn(move || {
                    let _p = ProcessPermit::acquire_as(priority);
                    order.lock().unwrap().push(priority);
                });
                eventually("the waiter waits", || ProcessPermit::waiting(priority) == 1);
            }
            drop(held);
        });
        set_process_limit(0);
        assert_eq!(
            *order.lock().unwrap(),
            [Priority::High, Priority::Critical, Priority::Normal]
        );
    }

    /// The exit status is the child's, whether it ends before or after the wait starts.
    #[test]
    fn the_wait_returns_the_childs_own_status() {
        for script in ["exit 3", "read x; exit 4"] {
            let mut child = Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdin.take());
            let status = wait_within(&mut child, Duration::from_secs(120))
                .unwrap()
                .unwrap();
            assert_eq!(status.code(), Some(if script == "exit 3" { 3 } else { 4 }));
        }
    }

    /// The child of a talix that dies is killed with it (PR_SET_PDEATHSIG): here the spawning
    /// thread ends without waiting, as a SIGKILLed talix would, and `sleep 600` must not
    /// survive it. Without `dies_with_talix` the wait below would last the whole bound.
    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        let mut child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("600");
            dies_with_talix(&mut cmd);
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let status = wait_within(&mut child, Duration::from_secs(120)).unwrap();
        let status = status.expect("the child outlived the thread that started it");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    /// Defect 8: a hung child is stopped at the bound instead of hanging talix.
    #[test]
    fn a_hung_child_is_stopped_at_the_bound() {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        let started = Instant::now();
        let out = output_within(&mut cmd, Duration::from_millis(200)).unwrap();
        assert!(out.is_none());
        assert!(started.elapsed() < Duration::from_secs(100));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2"]);
        let out = output_within(&mut cmd, Duration::from_secs(300))
            .unwrap()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn no_more_children_than_the_process_limit_run_at_once() {
        let _serial = LIMIT_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        set_process_limit(2);
        let peak = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    let _permit = ProcessPermit::acquire();
                    peak.fetch_max(
                        ProcessPermit::running(),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                    let mut cmd = Command::new("true");
                    // The permit above is this thread's; output_within would wait for a second
                    // one, so the child is run directly here.
                    let _ = child_output_within(
                        cmd.stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .spawn()
                            .unwrap(),
                        Duration::from_secs(60),
                    );
                });
            }
        });
        set_process_limit(0);
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "peak {peak}");
    }

    #[test]
    fn finds_versions_in_tool_output() {
        assert_eq!(
            first_version("Client:\n\tTag:         v1.11.5\n").as_deref(),
            Some("v1.11.5")
        );
        assert_eq!(first_version("Talos v1.13.9").as_deref(), Some("v1.13.9"));
        assert_eq!(
            first_version("{\"gitVersion\": \"v1.34.1\",").as_deref(),
            Some("v1.34.1")
        );
        assert_eq!(first_version("no version"), None);
    }

    #[test]
    fn a_prefetched_version_is_the_probed_one_and_probed_once() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("kubectl");
        let count = dir.path().join("count");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho x >> {}\necho '{{\"gitVersion\": \"v1.2.3\",'\n",
                count.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        // SAFETY: no other unit test locates kubectl or reads TALIX_KUBECTL.
        unsafe { std::env::set_var("TALIX_KUBECTL", &fake) };
        let tools = ToolVersions::default();
        tools.prefetch([Tool::Kubectl]);
        assert_eq!(tools.get(Tool::Kubectl).as_deref(), Ok("v1.2.3"));
        tools.prefetch([Tool::Kubectl]);
        assert_eq!(tools.get(Tool::Kubectl).as_deref(), Ok("v1.2.3"));
        unsafe { std::env::remove_var("TALIX_KUBECTL") };
        let runs = std::fs::read_to_string(&count).unwrap();
        assert_eq!(runs.lines().count(), 1, "probed once");
    }

    #[test]
    fn failure_carries_stderr() {
        let err = run_capture(
            Path::new("/bin/sh"),
            ["-c", "echo boom >&2; exit 3"],
            |_| {},
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("boom") && text.contains("exit status: 3"),
            "{text}"
        );
    }
}
