//! Which backend runs when the caller does not choose: decided once per process, from the
//! `LAMINAR_IO_BACKEND` environment variable if set, else the faster backend measured for the
//! write-ahead log (see `docs/storage-format.md`), falling back to `std` where io_uring does
//! not work (containers often refuse to create a ring).

use std::sync::{Arc, OnceLock};

use super::{Backend, IoBackendKind, StdBackend};
use crate::error::{Result, StorageError};

/// Environment variable forcing a backend: `std` or `uring` (unset or `auto`: the default).
pub const BACKEND_ENV: &str = "LAMINAR_IO_BACKEND";

/// The backend used when nothing else is asked for, where it works: the faster of the two
/// for the write-ahead log as `laminardb bench wal` measured them (figures in
/// `docs/storage-format.md`).
const PREFERRED: IoBackendKind = IoBackendKind::Std;

/// The outcome of backend detection.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The backend that runs.
    pub kind: IoBackendKind,
    /// Why it is not the one asked for or preferred, if it is not (e.g. io_uring refused
    /// here, or an invalid environment value): for the caller to log.
    pub note: Option<String>,
}

/// The backend detection made for this process (done at the first call).
pub fn detection() -> &'static Detection {
    static DETECTION: OnceLock<Detection> = OnceLock::new();
    DETECTION.get_or_init(|| {
        let forced = std::env::var(BACKEND_ENV).ok();
        decide(forced.as_deref(), &uring_support())
    })
}

/// The backend that runs when the caller does not pass one.
pub fn detect() -> IoBackendKind {
    detection().kind
}

/// The name of the backend [`detect`] picked: `std` or `uring`.
pub fn active_name() -> &'static str {
    detect().name()
}

/// The backend [`detect`] picked.
pub fn default_backend() -> Backend {
    match detect() {
        IoBackendKind::Std => Arc::new(StdBackend),
        #[cfg(target_os = "linux")]
        IoBackendKind::Uring => Arc::new(super::uring::UringBackend),
        // `uring_support` is an error off Linux, so `detect` never picks io_uring there.
        #[cfg(not(target_os = "linux"))]
        IoBackendKind::Uring => Arc::new(StdBackend),
    }
}

/// The backend `kind`, or an error naming why it cannot run here.
pub fn backend(kind: IoBackendKind) -> Result<Backend> {
    match kind {
        IoBackendKind::Std => Ok(Arc::new(StdBackend)),
        IoBackendKind::Uring => match uring_support() {
            #[cfg(target_os = "linux")]
            Ok(()) => Ok(Arc::new(super::uring::UringBackend)),
            #[cfg(not(target_os = "linux"))]
            Ok(()) => unreachable!("io_uring support is an error off Linux"),
            Err(reason) => Err(StorageError::InvalidOption {
                option: "I/O backend",
                value: kind.name().into(),
                reason,
            }),
        },
    }
}

/// Whether io_uring works here, probed once.
fn uring_support() -> std::result::Result<(), String> {
    static SUPPORT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    SUPPORT
        .get_or_init(|| {
            #[cfg(target_os = "linux")]
            return super::uring::probe();
            #[cfg(not(target_os = "linux"))]
            return Err("io_uring exists only on Linux".to_string());
        })
        .clone()
}

/// The pure decision: the forced value if valid and usable, else the preferred backend if
/// usable, else std, with a note whenever the result is not what was asked for.
fn decide(forced: Option<&str>, uring: &std::result::Result<(), String>) -> Detection {
    let usable = |kind: IoBackendKind| kind == IoBackendKind::Std || uring.is_ok();
    let uring_reason = || uring.clone().err().unwrap_or_default();
    let wanted = match forced.map(str::trim) {
        None | Some("" | "auto") => None,
        Some(text) => match text.parse::<IoBackendKind>() {
            Ok(kind) => Some(kind),
            Err(e) => {
                let kind = if usable(PREFERRED) {
                    PREFERRED
                } else {
                    IoBackendKind::Std
                };
                return Detection {
                    kind,
                    note: Some(format!("{BACKEND_ENV}: {e}; using {kind}")),
                };
            }
        },
    };
    match wanted {
        Some(kind) if usable(kind) => Detection { kind, note: None },
        Some(kind) => Detection {
            kind: IoBackendKind::Std,
            note: Some(format!(
                "{BACKEND_ENV}={kind} but io_uring does not work here ({}); using std",
                uring_reason()
            )),
        },
        None if usable(PREFERRED) => Detection {
            kind: PREFERRED,
            note: None,
        },
        None => Detection {
            kind: IoBackendKind::Std,
            note: Some(format!(
                "io_uring does not work here ({}); using std",
                uring_reason()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_backend_is_used_when_it_works() {
        let d = decide(Some("uring"), &Ok(()));
        assert_eq!((d.kind, d.note), (IoBackendKind::Uring, None));
        let d = decide(Some(" STD "), &Ok(()));
        assert_eq!((d.kind, d.note), (IoBackendKind::Std, None));
    }

    #[test]
    fn io_uring_that_does_not_work_falls_back_to_std_with_a_note() {
        let d = decide(Some("uring"), &Err("EPERM".into()));
        assert_eq!(d.kind, IoBackendKind::Std);
        assert!(d.note.unwrap().contains("EPERM"));
        let d = decide(None, &Err("ENOSYS".into()));
        assert_eq!(d.kind, IoBackendKind::Std);
        if PREFERRED == IoBackendKind::Uring {
            assert!(d.note.unwrap().contains("ENOSYS"));
        }
    }

    #[test]
    fn without_a_choice_the_preferred_backend_runs() {
        for forced in [None, Some("auto"), Some("")] {
            let d = decide(forced, &Ok(()));
            assert_eq!((d.kind, d.note), (PREFERRED, None));
        }
    }

    #[test]
    fn an_invalid_environment_value_is_noted_not_fatal() {
        let d = decide(Some("fast"), &Ok(()));
        assert_eq!(d.kind, PREFERRED);
        let note = d.note.unwrap();
        assert!(
            note.contains("'fast'") && note.contains("std, uring"),
            "{note}"
        );
    }

    #[test]
    fn the_requested_backend_reports_its_kind() {
        assert_eq!(
            backend(IoBackendKind::Std).unwrap().kind(),
            IoBackendKind::Std
        );
        match backend(IoBackendKind::Uring) {
            Ok(b) => assert_eq!(b.kind(), IoBackendKind::Uring),
            Err(e) => assert!(e.to_string().contains("uring"), "{e}"),
        }
    }
}
