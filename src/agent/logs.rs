//! Container logs: a small forked shim per container turns its stdout/stderr
//! pipes into CRI-format log files (`<RFC3339Nano> stdout F <line>`), so a
//! container outlives the agent; `open` streams them back for `pods/log`.

use super::error::{AgentError, Result};
use bytes::Bytes;
use std::ffi::CString;
use std::io::BufRead;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest line kept whole; longer ones are split into `P` (partial) records.
const LINE_MAX: usize = 16 * 1024;

/// Writes `secs.nanos` since the epoch as `2026-01-01T00:00:00.000000000Z`
/// into `out` (30 bytes) without allocating (the shim runs after `fork`).
pub fn format_timestamp(secs: i64, nanos: u32, out: &mut [u8; 30]) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut put = |at: usize, value: i64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, rem / 3600, 2);
    put(14, rem % 3600 / 60, 2);
    put(17, rem % 60, 2);
    put(20, i64::from(nanos), 9);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[29] = b'Z';
}

/// One CRI log record (for tests and for lines the agent writes itself).
pub fn cri_line(secs: i64, nanos: u32, stream: &str, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut ts = [0u8; 30];
    format_timestamp(secs, nanos, &mut ts);
    let mut line = Vec::with_capacity(content.len() + 42);
    line.extend_from_slice(&ts);
    line.push(b' ');
    line.extend_from_slice(stream.as_bytes());
    line.extend_from_slice(if partial { b" P " } else { b" F " });
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// A parsed CRI log record.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

pub fn parse_line(line: &[u8]) -> Option<Record<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    Some(Record { timestamp, stream, partial: tag == b"P", content })
}

/// Forks the log shim of one container: it reads both pipes until they close,
/// appends CRI records to `log`, creates `done` and exits. Returns its PID
/// (a child of the agent: the reaper collects it).
pub fn spawn_shim(stdout: OwnedFd, stderr: OwnedFd, log: &Path, done: &Path) -> Result<i32> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(AgentError::io("open container log", log))?;
    let done_c = CString::new(done.as_os_str().as_encoded_bytes()).map_err(|_| AgentError::Io {
        what: "log marker path",
        path: done.into(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let fds = [stdout.as_raw_fd(), stderr.as_raw_fd(), file.as_raw_fd()];
    // SAFETY: the child only makes async-signal-safe system calls on stack
    // buffers and ends with `_exit`; it never returns into Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(AgentError::Sys { what: "fork the log shim".into(), source: nix::Error::last() }),
        0 => unsafe { shim_main(fds, done_c.as_ptr()) },
        pid => Ok(pid),
    }
}

/// The shim's body (after fork): no allocation, no locks.
unsafe fn shim_main(fds: [i32; 3], done: *const libc::c_char) -> ! {
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        // Move our three descriptors to 3, 4, 5 (via high numbers so none clobbers
        // another) and close everything else: the agent's sockets and database.
        let mut high = [0i32; 3];
        for (i, fd) in fds.iter().enumerate() {
            high[i] = libc::fcntl(*fd, libc::F_DUPFD, 1000);
        }
        for (i, fd) in high.iter().enumerate() {
            libc::dup2(*fd, 3 + i as i32);
        }
        libc::syscall(libc::SYS_close_range, 6u32, u32::MAX, 0u32);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
        }
        let mut bufs = [[0u8; LINE_MAX]; 2];
        let mut lens = [0usize; 2];
        let mut open = [true, true];
        let streams: [&[u8]; 2] = [b" stdout ", b" stderr "];
        while open[0] || open[1] {
            let mut pfds = [
                libc::pollfd { fd: if open[0] { 3 } else { -1 }, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: if open[1] { 4 } else { -1 }, events: libc::POLLIN, revents: 0 },
            ];
            if libc::poll(pfds.as_mut_ptr(), 2, -1) < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            for i in 0..2 {
                if !open[i] || pfds[i].revents == 0 {
                    continue;
                }
                let buf = &mut bufs[i];
                let n = libc::read(3 + i as i32, buf[lens[i]..].as_mut_ptr().cast(), LINE_MAX - lens[i]);
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                if n <= 0 {
                    if lens[i] > 0 {
                        shim_record(streams[i], false, &buf[..lens[i]]);
                    }
                    lens[i] = 0;
                    open[i] = false;
                    continue;
                }
                lens[i] += n as usize;
                let mut start = 0;
                while let Some(pos) = buf[start..lens[i]].iter().position(|b| *b == b'\n') {
                    shim_record(streams[i], false, &buf[start..start + pos]);
                    start += pos + 1;
                }
                if start == 0 && lens[i] == LINE_MAX {
                    shim_record(streams[i], true, &buf[..LINE_MAX]);
                    lens[i] = 0;
                } else if start > 0 {
                    buf.copy_within(start..lens[i], 0);
                    lens[i] -= start;
                }
            }
        }
        let marker = libc::open(done, libc::O_CREAT | libc::O_WRONLY, 0o644);
        if marker >= 0 {
            libc::close(marker);
        }
        libc::_exit(0)
    }
}

/// Appends one record to fd 5 (the shim's log file).
unsafe fn shim_record(stream: &[u8], partial: bool, content: &[u8]) {
    unsafe {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
        let mut head = [0u8; 30 + 8 + 2];
        let mut ts = [0u8; 30];
        format_timestamp(now.tv_sec, now.tv_nsec as u32, &mut ts);
        head[..30].copy_from_slice(&ts);
        head[30..38].copy_from_slice(stream);
        head[38] = if partial { b'P' } else { b'F' };
        head[39] = b' ';
        let iov = [
            libc::iovec { iov_base: head.as_ptr() as *mut _, iov_len: head.len() },
            libc::iovec { iov_base: content.as_ptr() as *mut _, iov_len: content.len() },
            libc::iovec { iov_base: b"\n".as_ptr() as *mut _, iov_len: 1 },
        ];
        libc::writev(5, iov.as_ptr(), 3);
    }
}

/// What `pods/log` asks for.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub timestamps: bool,
    pub previous: bool,
}

/// Reads container logs from the agent's log folder; the API server's
/// `pods/log` handler calls `open` directly for the local agent.
#[derive(Clone, Debug)]
pub struct Logs {
    root: PathBuf,
}

/// The log folder of one pod: `<root>/<namespace>_<name>_<uid>`.
pub fn pod_dir(root: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    root.join(format!("{namespace}_{name}_{uid}"))
}

/// The log file of one run of a container, and the marker the shim leaves when done.
pub fn container_log(pod_dir: &Path, container: &str, restart: u32) -> (PathBuf, PathBuf) {
    let dir = pod_dir.join(container);
    (dir.join(format!("{restart}.log")), dir.join(format!("{restart}.done")))
}

/// The restart numbers that have a log, oldest first.
fn runs(dir: &Path) -> Vec<u32> {
    let mut runs: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    runs.sort_unstable();
    runs
}

/// Renders one record as `kubectl logs` shows it.
fn render(record: &Record<'_>, timestamps: bool, out: &mut Vec<u8>) {
    if timestamps {
        out.extend_from_slice(record.timestamp.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(record.content);
    if !record.partial {
        out.push(b'\n');
    }
}

impl Logs {
    pub fn new(root: impl Into<PathBuf>) -> Logs {
        Logs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The log of `container` in the pod with `pod_uid`: the current run, or the
    /// one before with `previous`. With `follow` the stream goes on until that run ends.
    pub fn open(
        &self,
        pod_uid: &str,
        container: &str,
        options: LogOptions,
    ) -> Result<impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static + use<>> {
        let suffix = format!("_{pod_uid}");
        let pod = std::fs::read_dir(&self.root)
            .map_err(AgentError::io("read the log folder", &self.root))?
            .flatten()
            .find(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)))
            .map(|e| e.path())
            .ok_or_else(|| AgentError::InvalidPod {
                pod: pod_uid.into(),
                message: "has no logs on this node".into(),
            })?;
        let dir = pod.join(container);
        let runs = runs(&dir);
        let pick = if options.previous { runs.len().checked_sub(2) } else { runs.len().checked_sub(1) };
        let run = pick.map(|i| runs[i]).ok_or_else(|| AgentError::InvalidPod {
            pod: pod_uid.into(),
            message: format!(
                "{} container {container:?} in pod has no log",
                if options.previous { "previous terminated" } else { "the" }
            ),
        })?;
        let (log, done) = container_log(&pod, container, run);
        let file = std::fs::File::open(&log).map_err(AgentError::io("open container log", &log))?;
        let mut reader = std::io::BufReader::new(file);
        let mut first = Vec::new();
        let mut lines: std::collections::VecDeque<Vec<u8>> = Default::default();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) if line.ends_with(b"\n") => {
                    lines.push_back(line);
                    if let Some(tail) = options.tail_lines
                        && lines.len() > tail
                    {
                        lines.pop_front();
                    }
                }
                Ok(n) => {
                    // A record still being written: read it again later.
                    let _ = reader.seek_relative(-(n as i64));
                    break;
                }
                Err(err) => return Err(AgentError::io("read container log", &log)(err)),
            }
        }
        for line in &lines {
            if let Some(record) = parse_line(line) {
                render(&record, options.timestamps, &mut first);
            }
        }
        let state = (reader, options, done, Some(Bytes::from(first)), Vec::<u8>::new());
        Ok(futures::stream::unfold(state, |(mut reader, options, done, first, mut pending)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (reader, options, done, None, pending)));
            }
            if !options.follow {
                return None;
            }
            loop {
                let finished = done.exists();
                let mut out = Vec::new();
                loop {
                    match reader.read_until(b'\n', &mut pending) {
                        Ok(0) => break,
                        Ok(_) if pending.ends_with(b"\n") => {
                            if let Some(record) = parse_line(&pending) {
                                render(&record, options.timestamps, &mut out);
                            }
                            pending.clear();
                        }
                        Ok(_) => break,
                        Err(err) => return Some((Err(err), (reader, options, done, None, pending))),
                    }
                }
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), (reader, options, done, None, pending)));
                }
                if finished {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }
}

/// The `pods/log` response for a pod of the local agent: picks the container
/// (the only one when `container` is not given), applies `follow`,
/// `tailLines`, `timestamps` and `previous`, and streams `text/plain`.
pub fn respond(
    logs: &Logs,
    pod: &serde_json::Value,
    params: &std::collections::HashMap<String, String>,
) -> std::result::Result<http::Response<axum::body::Body>, crate::server::error::ApiError> {
    use crate::server::error::ApiError;
    use serde_json::Value;
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let uid = super::static_pods::runtime_uid(pod);
    let container = container_for(pod, params)?;
    let flag = |key: &str| params.get(key).is_some_and(|v| v == "true" || v == "1");
    let options = LogOptions {
        follow: flag("follow"),
        tail_lines: params.get("tailLines").and_then(|t| t.parse().ok()),
        timestamps: flag("timestamps"),
        previous: flag("previous"),
    };
    let stream = logs.open(uid, &container, options).map_err(|err| {
        ApiError::bad_request(format!("container {container:?} in pod {name:?} is waiting to start: {err}"))
    })?;
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(axum::body::Body::from_stream(stream))
        .map_err(|err| ApiError::internal("build a log response", &err))
}

/// The container a `pods/log` request means: `container`, or the pod's only one.
pub fn container_for(
    pod: &serde_json::Value,
    params: &std::collections::HashMap<String, String>,
) -> std::result::Result<String, crate::server::error::ApiError> {
    use crate::server::error::ApiError;
    use serde_json::Value;
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let names: Vec<&str> = ["/spec/initContainers", "/spec/containers"]
        .iter()
        .flat_map(|p| pod.pointer(p).and_then(Value::as_array).into_iter().flatten())
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let apps = pod.pointer("/spec/containers").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
    match params.get("container").filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c.as_str()) => Ok(c.clone()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if apps == 1 => {
            Ok(pod.pointer("/spec/containers/0/name").and_then(Value::as_str).unwrap_or_default().to_string())
        }
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: {names:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn timestamps_match_rfc3339_nano() {
        let mut out = [0u8; 30];
        format_timestamp(0, 0, &mut out);
        assert_eq!(&out, b"1970-01-01T00:00:00.000000000Z");
        format_timestamp(1_767_225_600, 5, &mut out);
        assert_eq!(&out, b"2026-01-01T00:00:00.000000005Z");
        for secs in [951_782_400i64, 1_709_210_096, 4_102_444_799] {
            format_timestamp(secs, 123_456_789, &mut out);
            let expected = jiff::Timestamp::new(secs, 123_456_789).expect("timestamp");
            assert_eq!(
                std::str::from_utf8(&out).expect("utf8"),
                expected.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
            );
        }
    }

    #[test]
    fn cri_records_round_trip() {
        let line = cri_line(1_767_225_600, 0, "stdout", false, b"hello world");
        assert_eq!(line, b"2026-01-01T00:00:00.000000000Z stdout F hello world\n");
        let record = parse_line(&line).expect("parse");
        assert_eq!(record.stream, "stdout");
        assert!(!record.partial);
        assert_eq!(record.content, b"hello world");
        let partial = cri_line(1, 0, "stderr", true, b"");
        let record = parse_line(&partial).expect("parse");
        assert!(record.partial);
        assert_eq!(record.content, b"");
    }

    #[tokio::test]
    async fn shim_writes_cri_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
        let (err_r, err_w) = nix::unistd::pipe().expect("pipe");
        let pod = pod_dir(dir.path(), "default", "web", "u1");
        std::fs::create_dir_all(pod.join("c")).expect("mkdir");
        let (log, done) = container_log(&pod, "c", 0);
        let pid = spawn_shim(out_r, err_r, &log, &done).expect("shim");
        nix::unistd::write(&out_w, b"hello\nwor").expect("write");
        nix::unistd::write(&err_w, b"oops\n").expect("write");
        nix::unistd::write(&out_w, b"ld\nlast").expect("write");
        drop(out_w);
        drop(err_w);
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("wait shim");
        assert!(done.exists());
        let text = std::fs::read_to_string(&log).expect("log");
        let records: Vec<String> = text
            .lines()
            .map(|l| {
                let r = parse_line(l.as_bytes()).expect("record");
                format!("{} {}", r.stream, String::from_utf8_lossy(r.content))
            })
            .collect();
        assert!(records.contains(&"stdout hello".to_string()), "{text}");
        assert!(records.contains(&"stdout world".to_string()), "{text}");
        assert!(records.contains(&"stdout last".to_string()), "{text}");
        assert!(records.contains(&"stderr oops".to_string()), "{text}");

        let logs = Logs::new(dir.path());
        let stream = logs.open("u1", "c", LogOptions { tail_lines: Some(1), ..Default::default() }).expect("open");
        let chunks: Vec<_> = stream.collect().await;
        let all: Vec<u8> = chunks.into_iter().flat_map(|c| c.expect("chunk").to_vec()).collect();
        assert_eq!(all.iter().filter(|b| **b == b'\n').count(), 1);
        let stream = logs.open("u1", "c", LogOptions { follow: true, ..Default::default() }).expect("open");
        let all: Vec<u8> =
            stream.collect::<Vec<_>>().await.into_iter().flat_map(|c| c.expect("chunk").to_vec()).collect();
        assert!(String::from_utf8_lossy(&all).contains("hello\n"));
        assert!(logs.open("u1", "c", LogOptions { previous: true, ..Default::default() }).is_err());
    }
}
