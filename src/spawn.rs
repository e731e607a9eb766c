//! Starting talosctl and kubectl without copying talix: a `vfork`-style `clone` instead of the
//! `fork` that std's `Command` falls back to whenever a `pre_exec` hook is set (and talix needs
//! one for every child: `PR_SET_PDEATHSIG`, and secret pipes kept open across `exec`).
//!
//! Why: `fork` of a talix running 60 nodes copies its page tables, then every page the other
//! threads write faults (copy-on-write) until the child has exec'd, and `execve` tears the copy
//! down again. Measured with `perf record` on the 3+57 first bootstrap (issue 10): fork, the
//! copy-on-write faults and the tear-down were about 30 % of talix's CPU. glibc's
//! `posix_spawn` avoids that with `clone(CLONE_VM | CLONE_VFORK)`, but it cannot set a parent
//! death signal; this module does the same with the few steps talix needs between `clone`
//! and `execve`.
//!
//! Invariants of the child (which shares talix's memory until it execs, while the thread that
//! spawned it is suspended):
//! - it allocates nothing, takes no lock and only makes async-signal-safe calls (sigaction,
//!   sigprocmask, prctl, getppid, dup2, fcntl, chdir, execve, _exit), on its own stack;
//! - every signal is blocked from before `clone` until its handlers are reset to the default,
//!   so no handler of talix ever runs in it; SIGPIPE goes back to the default (std's children
//!   get that too: Rust ignores SIGPIPE, a child must not);
//! - it dies with the thread that spawned it (`PR_SET_PDEATHSIG`), and does not start at all if
//!   talix died in between (its parent is no longer talix);
//! - stdin is `/dev/null`, stdout and stderr are pipes to talix; of talix's other descriptors it
//!   keeps exactly the ones asked for (all of talix's are close-on-exec);
//! - a failure before `execve` (no such program, ...) comes back as the `errno` it set.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

/// A child started by [`spawn`]; reap it with [`FastChild::wait`] (directly or through
/// [`crate::exec::wait_within`]).
#[derive(Debug)]
pub struct FastChild {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

impl FastChild {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.reap(0)? {
                return Ok(status);
            }
        }
    }

    /// SIGKILL, unless it has been reaped already (its pid may belong to another process then).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: plain syscall; the pid is still ours (not reaped).
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        loop {
            let mut raw = 0;
            // SAFETY: waitpid writes the status into `raw`.
            let rc = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if rc == self.pid {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            if rc == 0 {
                return Ok(None);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// What the child reads; all pointers stay valid until `clone` returns (the parent thread is
/// suspended until the child execs or exits).
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    keep: *const RawFd,
    keep_len: usize,
    parent: libc::pid_t,
    /// Set by the child when it fails before `execve`.
    errno: libc::c_int,
}

/// Highest signal number to reset (Linux: 64 real-time signals included).
const NSIG: libc::c_int = 65;

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive and untouched while the parent is
    // suspended; only async-signal-safe libc calls follow.
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        let fail = |a: &mut ChildArgs| -> ! {
            a.errno = *libc::__errno_location();
            if a.errno == 0 {
                a.errno = libc::ECHILD;
            }
            libc::_exit(127)
        };
        for sig in 1..NSIG {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue; // glibc's own signals (32, 33) are refused: nothing to reset
            }
            if old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(a);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(a);
        }
        if libc::getppid() != a.parent {
            *libc::__errno_location() = libc::ESRCH;
            fail(a);
        }
        for (from, to) in [(a.stdin, 0), (a.stdout, 1), (a.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                fail(a);
            }
        }
        for i in 0..a.keep_len {
            let fd = *a.keep.add(i);
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                fail(a);
            }
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) != 0 {
            fail(a);
        }
        libc::execve(a.program, a.argv, a.envp);
        fail(a)
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte"))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether [`spawn`] can start `cmd`: its program is a path (not looked up on PATH).
pub fn can_spawn(cmd: &Command) -> bool {
    cmd.get_program().as_bytes().contains(&b'/')
}

/// Start `cmd` (program, arguments, environment changes and working directory are read from
/// it; its stdio settings are not: stdin is `/dev/null`, stdout and stderr are piped), keeping
/// the descriptors `keep` open in the child. See the module documentation.
pub fn spawn(cmd: &Command, keep: &[RawFd]) -> io::Result<FastChild> {
    let program = cstring(cmd.get_program().as_bytes())?;
    let mut args = vec![program.clone()];
    for a in cmd.get_args() {
        args.push(cstring(a.as_bytes())?);
    }
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in cmd.get_envs() {
        env.retain(|(key, _)| key.as_os_str() != k);
        if let Some(v) = v {
            env.push((k.to_os_string(), v.to_os_string()));
        }
    }
    let env: Vec<CString> = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstring(&kv)
        })
        .collect::<io::Result<_>>()?;
    let cwd = cmd
        .get_current_dir()
        .map(|d| cstring(d.as_os_str().as_bytes()))
        .transpose()?;
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let devnull = File::options().read(true).open(OsStr::new("/dev/null"))?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut a = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        keep: keep.as_ptr(),
        keep_len: keep.len(),
        parent: std::process::id() as libc::pid_t,
        errno: 0,
    };
    // The child's stack: it only makes a few libc calls.
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the stack grows down from its (16-aligned) top; all signals are blocked across
    // clone (restored right after) so nothing runs in the child before it resets the handlers;
    // CLONE_VFORK suspends this thread until the child has exec'd or exited, so `a`, the
    // strings and the stack outlive every use the child makes of them.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = (top as usize & !15) as *mut libc::c_void;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut a as *mut ChildArgs as *mut libc::c_void,
        );
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_err);
        }
        pid
    };
    drop((devnull, out_w, err_w, stack));
    let mut child = FastChild {
        pid,
        status: None,
        stdout: Some(File::from(out_r)),
        stderr: Some(File::from(err_r)),
    };
    // The child has exec'd, or exited after setting errno (read after the vfork returned).
    let errno = unsafe { std::ptr::read_volatile(&a.errno) };
    if errno != 0 {
        let _ = child.wait();
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run(cmd: &Command, keep: &[RawFd]) -> (ExitStatus, String, String) {
        let mut child = spawn(cmd, keep).unwrap();
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (child.wait().unwrap(), out, err)
    }

    #[test]
    fn runs_with_args_env_cwd_and_piped_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "echo \"$1 $TALIX_SPAWN_T $(pwd)\"; read x || echo eof >&2; exit 3",
        ])
        .arg("sh")
        .arg("arg one")
        .env("TALIX_SPAWN_T", "set")
        .env_remove("HOME")
        .current_dir(dir.path());
        let (status, out, err) = run(&cmd, &[]);
        assert_eq!(status.code(), Some(3));
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("arg one set {}\n", cwd.display()));
        assert_eq!(err, "eof\n", "stdin is /dev/null");
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo ${HOME-unset}"]).env_remove("HOME");
        assert_eq!(run(&cmd, &[]).1, "unset\n");
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_child() {
        let cmd = Command::new("/nonexistent/talosctl");
        let e = spawn(&cmd, &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    /// Only the descriptors asked for reach the child; SIGPIPE is back to its default there.
    #[test]
    fn keeps_exactly_the_descriptors_asked_for_and_resets_sigpipe() {
        let (r1, _w1) = pipe().unwrap();
        let (r2, _w2) = pipe().unwrap();
        let script = format!(
            "test -e /dev/fd/{} && echo kept; test -e /dev/fd/{} || echo closed; grep SigIgn /proc/self/status",
            r1.as_raw_fd(),
            r2.as_raw_fd()
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script]);
        let (status, out, _) = run(&cmd, &[r1.as_raw_fd()]);
        assert!(status.success());
        assert!(out.starts_with("kept\nclosed\n"), "{out}");
        let ignored = u64::from_str_radix(
            out.lines()
                .nth(2)
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap(),
            16,
        )
        .unwrap();
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored in the child"
        );
    }

    /// PR_SET_PDEATHSIG is set: the child's `/proc/self/status` is not enough to see it, so
    /// it is checked the way it matters: the child dies when the spawning thread ends.
    #[test]
    fn the_child_dies_with_the_thread_that_spawned_it() {
        let mut child = std::thread::spawn(|| {
            let mut cmd = Command::new("/bin/sleep");
            cmd.arg("600");
            spawn(&cmd, &[]).unwrap()
        })
        .join()
        .unwrap();
        let status = crate::exec::wait_within(&mut child, std::time::Duration::from_secs(120))
            .unwrap()
            .expect("the child outlived the thread that started it");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
