//! # quadra-ffi
//!
//! The C ABI of quadra (`include/quadra.h`, generated from this file by cbindgen): open a
//! `.qnet` model (mapped, or copied once from memory), make a session for one input size,
//! run it. Every entry point checks its pointers and lengths, catches any panic, and
//! reports failures as a negative `QUADRA_E_*` code with a message for
//! [`quadra_last_error`]. A Rust caller should use `quadra-cpu` directly.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, TryLockError};

use quadra_cpu::cores::Cores;
use quadra_cpu::{Layout, Network, RunError, Session};

/// Success.
pub const QUADRA_OK: c_int = 0;
/// A file could not be read.
pub const QUADRA_E_IO: c_int = -1;
/// The model bytes are not a valid `.qnet` model.
pub const QUADRA_E_FORMAT: c_int = -2;
/// An input size the model cannot run (too small, too large).
pub const QUADRA_E_SHAPE: c_int = -3;
/// A NULL pointer, a wrong length or an out-of-range argument.
pub const QUADRA_E_ARGUMENT: c_int = -4;
/// A failure inside quadra (a bug: please report it with the message).
pub const QUADRA_E_INTERNAL: c_int = -5;
/// The session is running on another thread: a session serves one thread at a time.
pub const QUADRA_E_BUSY: c_int = -6;

/// Most threads a session runs on: a layer is split into at most this many bands of rows.
pub const QUADRA_MAX_THREADS: u32 = 16;
// A literal for cbindgen, kept equal to the runtime's limit.
const _: () = assert!(QUADRA_MAX_THREADS as usize == quadra_cpu::MAX_THREADS);

/// A loaded model (opaque). Immutable: it may be shared by threads.
pub struct QuadraModel {
    net: Network,
}

/// A model prepared for one input size (opaque): its arena, buffers and threads. Used by
/// one thread at a time: a run entered while another thread's run is in flight returns
/// `QUADRA_E_BUSY`.
pub struct QuadraSession {
    /// Locked by a run; `try_lock` turns a second thread's run into `QUADRA_E_BUSY`.
    session: Mutex<Session>,
    input_len: usize,
    output_len: usize,
    input_size: (usize, usize),
    kernels: &'static CStr,
    cores: Vec<u32>,
    pinned: bool,
    describe: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// What `quadra_last_error` returns on a thread whose message store is already gone (a
/// call from a thread-exit destructor, after Rust's thread-locals were destroyed).
const NO_MESSAGE: &CStr = cstr(b"the error message is unavailable while this thread exits\0");

/// A C string from a NUL-terminated literal, checked at compile time where it is a const.
const fn cstr(bytes: &'static [u8]) -> &'static CStr {
    match CStr::from_bytes_with_nul(bytes) {
        Ok(s) => s,
        Err(_) => panic!("not a NUL-terminated string without inner NULs"),
    }
}

const EMPTY: &CStr = cstr(b"\0");

struct Failure(c_int, String);

impl Failure {
    fn argument(msg: impl Into<String>) -> Self {
        Failure(QUADRA_E_ARGUMENT, msg.into())
    }
}

fn code_of(e: &RunError, otherwise: c_int) -> c_int {
    match e {
        RunError::Io { .. } => QUADRA_E_IO,
        RunError::Model { .. } | RunError::Checkpoint(_) => QUADRA_E_FORMAT,
        // A bad QUADRA_KERNEL, a path this CPU cannot run, cores or threads it does not
        // have: the caller's settings.
        RunError::Dispatch(_)
        | RunError::Misuse(_)
        | RunError::Cores { .. }
        | RunError::Threads { .. } => QUADRA_E_ARGUMENT,
        RunError::Pool(_) | RunError::Poisoned => QUADRA_E_INTERNAL,
        RunError::Input(_) | RunError::Core(_) => otherwise,
        // RunError is non-exhaustive: a kind added later is a bug until it gets its code.
        _ => QUADRA_E_INTERNAL,
    }
}

/// Runs `f`, turning a failure or a panic into its code and this thread's last error.
fn guard(what: &str, f: impl FnOnce() -> Result<(), Failure>) -> c_int {
    let failure = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return QUADRA_OK,
        Ok(Err(f)) => f,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            Failure(QUADRA_E_INTERNAL, format!("internal error: {msg}"))
        }
    };
    let text = format!("{what}: {}", failure.1).replace('\0', "\\0");
    // `try_with`: during thread exit the store may be gone; the code still says it all.
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = Some(CString::new(text).unwrap_or_default());
        }
    });
    failure.0
}

/// Drops what `put` boxed (NULL: nothing), catching any panic: nothing may unwind into C,
/// and a drop has nothing to report.
///
/// # Safety
/// `p` is NULL or came from `put` and was not freed before.
unsafe fn free_boxed<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: made by Box::into_raw in `put` and not freed before (caller's contract).
        let b = unsafe { Box::from_raw(p) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }
}

/// The caller's output slot, set to NULL until the call succeeds; a NULL `out` is
/// `QUADRA_E_ARGUMENT`.
///
/// # Safety
/// `out` is NULL or points to writable storage for a pointer.
unsafe fn out_slot<'a, T>(out: *mut *mut T) -> Result<&'a mut *mut T, Failure> {
    // SAFETY: NULL or valid by the caller's contract; NULL is checked here.
    let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::argument("out is NULL"))?;
    *out = std::ptr::null_mut();
    Ok(out)
}

/// `*out = value` for an output pointer already checked non-NULL.
fn put<T>(out: &mut *mut T, value: T) {
    *out = Box::into_raw(Box::new(value));
}

/// The message of this thread's last failed call (naming the problem: the file, the
/// tensor, what was expected and found), or "" if none failed yet. Valid until this
/// thread's next failing call; never NULL. Callable from a thread-exit destructor (it
/// then returns a fixed message if the store is already gone).
#[no_mangle]
pub extern "C" fn quadra_last_error() -> *const c_char {
    // The pointer stays valid after the borrow ends: the CString is only replaced by the
    // next failing call on this thread.
    LAST_ERROR
        .try_with(|e| {
            e.try_borrow()
                .map(|s| s.as_deref().unwrap_or(EMPTY).as_ptr())
                .ok()
        })
        .ok()
        .flatten()
        .unwrap_or(NO_MESSAGE.as_ptr())
}

/// The library version, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn quadra_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Opens the `.qnet` file at `path` (UTF-8 or the platform's bytes): mapped read-only and
/// validated (checksum, layout, values), then used in place. The file must not be
/// rewritten in place while the model is open. On success `*out` is the model, to free
/// with `quadra_model_free`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to writable storage
/// for a pointer.
#[no_mangle]
pub unsafe extern "C" fn quadra_model_open(
    path: *const c_char,
    out: *mut *mut QuadraModel,
) -> c_int {
    guard("quadra_model_open", || {
        // SAFETY: the caller's contract for `out`, passed on.
        let out = unsafe { out_slot(out) }?;
        if path.is_null() {
            return Err(Failure::argument("path is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        let path = unsafe { CStr::from_ptr(path) };
        #[cfg(unix)]
        let path = {
            use std::os::unix::ffi::OsStrExt;
            std::path::PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes()))
        };
        #[cfg(not(unix))]
        let path = std::path::PathBuf::from(
            path.to_str()
                .map_err(|_| Failure::argument("path is not UTF-8"))?,
        );
        let net = Network::load(&path)
            .map_err(|e| Failure(code_of(&e, QUADRA_E_FORMAT), e.to_string()))?;
        put(out, QuadraModel { net });
        Ok(())
    })
}

/// Copies `len` bytes of a `.qnet` model at `data` once into aligned memory and validates
/// them (the caller's buffer may be freed afterwards). On success `*out` is the model.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes; `out` is NULL or points to writable
/// storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn quadra_model_from_bytes(
    data: *const u8,
    len: usize,
    out: *mut *mut QuadraModel,
) -> c_int {
    guard("quadra_model_from_bytes", || {
        // SAFETY: the caller's contract for `out`, passed on.
        let out = unsafe { out_slot(out) }?;
        if data.is_null() {
            return Err(Failure::argument("data is NULL"));
        }
        if len > isize::MAX as usize {
            return Err(Failure::argument(format!(
                "len {len} is not a buffer length"
            )));
        }
        // SAFETY: non-NULL, and `len` readable bytes by the caller's contract.
        let bytes = unsafe { std::slice::from_raw_parts(data, len) };
        let net = Network::from_bytes(bytes, "model bytes")
            .map_err(|e| Failure(code_of(&e, QUADRA_E_FORMAT), e.to_string()))?;
        put(out, QuadraModel { net });
        Ok(())
    })
}

/// Frees a model (NULL: nothing). Its sessions stay usable.
///
/// # Safety
/// `model` is NULL or a model from `quadra_model_open`/`quadra_model_from_bytes`, not
/// freed before.
#[no_mangle]
pub unsafe extern "C" fn quadra_model_free(model: *mut QuadraModel) {
    // SAFETY: the caller's contract, passed on.
    unsafe { free_boxed(model) }
}

/// Input channels of the model (0 if `model` is NULL).
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn quadra_model_in_chans(model: *const QuadraModel) -> u32 {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { model.as_ref() }.map_or(0, |m| m.net.config().in_chans as u32)
}

/// Classes of the model's head (0 if `model` is NULL).
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn quadra_model_num_classes(model: *const QuadraModel) -> u32 {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { model.as_ref() }.map_or(0, |m| m.net.config().num_classes as u32)
}

/// Sets the arithmetic of the sessions made from `model` afterwards: "f32", or "fp16" (the
/// pointwise GEMMs in half precision on aarch64 CPUs with FEAT_FP16, detected at run time;
/// elsewhere f32, which `quadra_session_describe` then says). The default is what the
/// model file records (`quadra convert --precision`), else "f32". An unknown name is
/// `QUADRA_E_ARGUMENT`.
///
/// # Safety
/// `model` is NULL or a live model not in use by another thread during the call;
/// `precision` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn quadra_model_set_precision(
    model: *mut QuadraModel,
    precision: *const c_char,
) -> c_int {
    guard("quadra_model_set_precision", || {
        // SAFETY: NULL or live and unshared by the caller's contract.
        let model = unsafe { model.as_mut() }.ok_or_else(|| Failure::argument("model is NULL"))?;
        if precision.is_null() {
            return Err(Failure::argument("precision is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        let text = unsafe { CStr::from_ptr(precision) }
            .to_str()
            .map_err(|_| Failure::argument("precision is not UTF-8"))?;
        let p = quadra_cpu::Precision::from_name(text).ok_or_else(|| {
            Failure::argument(format!("unknown precision '{text}': use f32 or fp16"))
        })?;
        model.net.set_precision(p);
        Ok(())
    })
}

/// Makes a session running `model` on batch-1 inputs of `height` x `width` (at least 32
/// each; QuadraNet downsamples by 32) on `threads` threads (0: one per big core, at most
/// `QUADRA_MAX_THREADS`; more is `QUADRA_E_ARGUMENT`), workers pinned to the big cores
/// (as `quadra_session_new_on` with cores "big"). The session owns its arena and buffers:
/// `quadra_session_run` allocates nothing.
///
/// # Safety
/// `model` is NULL or a live model (a freed model is the caller's bug: undefined
/// behaviour, typically a crash); `out` is NULL or points to writable storage for a
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_new(
    model: *const QuadraModel,
    height: u32,
    width: u32,
    threads: u32,
    out: *mut *mut QuadraSession,
) -> c_int {
    // SAFETY: the caller's contract, passed on; NULL cores means "big".
    unsafe { quadra_session_new_on(model, height, width, threads, std::ptr::null(), out) }
}

/// As `quadra_session_new`, on the cores `cores` names: "big" (every core but the slowest
/// class, all cores when they are equal; also for NULL), "little" (the slowest class),
/// "all", or a CPU list such as "4-7" or "0,2,5". `threads` 0 is one thread per chosen
/// core. Worker threads are pinned to their cores where the OS allows
/// (`quadra_session_pinned` says); the calling thread runs wherever it runs. An unknown
/// policy, an empty list or an offline CPU is `QUADRA_E_ARGUMENT` naming it.
///
/// # Safety
/// As `quadra_session_new`; `cores` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_new_on(
    model: *const QuadraModel,
    height: u32,
    width: u32,
    threads: u32,
    cores: *const c_char,
    out: *mut *mut QuadraSession,
) -> c_int {
    guard("quadra_session_new", || {
        // SAFETY: the caller's contract for `out`, passed on.
        let out = unsafe { out_slot(out) }?;
        // SAFETY: NULL or live by the caller's contract.
        let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::argument("model is NULL"))?;
        if threads > QUADRA_MAX_THREADS {
            return Err(Failure::argument(format!(
                "{threads} threads: at most {QUADRA_MAX_THREADS} (a layer is split into at \
                 most {QUADRA_MAX_THREADS} bands of rows, one per thread)"
            )));
        }
        let policy = if cores.is_null() {
            Cores::Big
        } else {
            // SAFETY: non-NULL and NUL-terminated by the caller's contract.
            let text = unsafe { CStr::from_ptr(cores) }
                .to_str()
                .map_err(|_| Failure::argument("cores is not UTF-8"))?;
            Cores::parse(text).map_err(Failure::argument)?
        };
        let (h, w) = (height as usize, width as usize);
        let session = Session::on_cores(&model.net, h, w, 1, threads as usize, &policy)
            .map_err(|e| Failure(code_of(&e, QUADRA_E_SHAPE), e.to_string()))?;
        let describe = CString::new(session.describe()).unwrap_or_default();
        put(
            out,
            QuadraSession {
                input_len: session.input_len(),
                output_len: session.output_len(),
                input_size: session.input_size(),
                kernels: kernels_name(session.kernels()),
                cores: session.cores().iter().map(|&c| c as u32).collect(),
                pinned: session.pinned(),
                describe,
                session: Mutex::new(session),
            },
        );
        Ok(())
    })
}

/// The CPU numbers of the session's threads, thread 0 (the caller's, not pinned) first:
/// writes at most `capacity` of them to `ids` (which may be NULL when `capacity` is 0) and
/// returns how many there are (0 if `s` is NULL).
///
/// # Safety
/// `s` is NULL or a live session; `ids` is NULL or points to `capacity` writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_cores(
    s: *const QuadraSession,
    ids: *mut u32,
    capacity: usize,
) -> usize {
    // SAFETY: NULL or live by the caller's contract.
    let Some(s) = (unsafe { s.as_ref() }) else {
        return 0;
    };
    if !ids.is_null() {
        let n = capacity.min(s.cores.len());
        // SAFETY: `ids` has room for `capacity >= n` values by the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(s.cores.as_ptr(), ids, n) };
    }
    s.cores.len()
}

/// 1 if every worker thread of the session is pinned to its core, else 0 (one thread, a
/// NULL session, or an OS or container that refused: see `quadra_session_describe`).
///
/// # Safety
/// `s` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_pinned(s: *const QuadraSession) -> c_int {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { s.as_ref() }.map_or(0, |s| s.pinned as c_int)
}

/// The session's kernels, threads, cores and pinning in words, e.g. "avx512+vnni kernels,
/// 2 threads on cores 0-1 (big), capacity bands, workers pinned" ("" if `s` is NULL).
/// Valid while the session lives.
///
/// # Safety
/// `s` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_describe(s: *const QuadraSession) -> *const c_char {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { s.as_ref() }.map_or(EMPTY.as_ptr(), |s| s.describe.as_ptr())
}

/// Floats `quadra_session_run` takes: in_chans x height x width (0 if `s` is NULL).
///
/// # Safety
/// `s` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_input_len(s: *const QuadraSession) -> usize {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { s.as_ref() }.map_or(0, |s| s.input_len)
}

/// Floats `quadra_session_run` gives: num_classes (0 if `s` is NULL).
///
/// # Safety
/// `s` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_output_len(s: *const QuadraSession) -> usize {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { s.as_ref() }.map_or(0, |s| s.output_len)
}

/// The kernel path the session runs, e.g. "avx512+vnni", "avx2", "neon+dotprod"
/// ("" if `s` is NULL). A static string.
///
/// # Safety
/// `s` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_kernels(s: *const QuadraSession) -> *const c_char {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { s.as_ref() }.map_or(EMPTY, |s| s.kernels).as_ptr()
}

/// Every name [`quadra_core::Kernels::describe`] gives, as C strings.
const KERNEL_NAMES: [(&str, &CStr); 9] = [
    ("scalar", cstr(b"scalar\0")),
    ("avx2", cstr(b"avx2\0")),
    ("avx2+vnni", cstr(b"avx2+vnni\0")),
    ("avx512", cstr(b"avx512\0")),
    ("avx512+vnni", cstr(b"avx512+vnni\0")),
    ("neon", cstr(b"neon\0")),
    ("neon+dotprod", cstr(b"neon+dotprod\0")),
    ("neon+fp16", cstr(b"neon+fp16\0")),
    ("neon+dotprod+fp16", cstr(b"neon+dotprod+fp16\0")),
];

/// [`quadra_cpu::Kernels::describe`] as a C string (every name it gives; a test keeps the
/// two in step).
fn kernels_name(k: quadra_core::Kernels) -> &'static CStr {
    const OTHER: &CStr = cstr(b"other\0");
    let name = k.describe();
    KERNEL_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(OTHER, |(_, c)| c)
}

/// Runs one image: `input_nchw` holds `input_len` floats (`quadra_session_input_len`, in
/// C x H x W order, as PyTorch holds a batch-1 tensor), `output` receives `output_len`
/// floats (`quadra_session_output_len`: the logits). No allocation.
///
/// A session serves one thread at a time: a call made while another thread's run on the
/// same session is in flight returns `QUADRA_E_BUSY` and touches nothing. A run that
/// failed inside quadra (`QUADRA_E_INTERNAL`) leaves the session poisoned: later runs
/// return `QUADRA_E_INTERNAL` too; free it and make a new one.
///
/// # Safety
/// `s` is NULL or a live session; `input_nchw` is NULL or points to `input_len` readable
/// floats; `output` is NULL or points to `output_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_run(
    s: *mut QuadraSession,
    input_nchw: *const f32,
    input_len: usize,
    output: *mut f32,
    output_len: usize,
) -> c_int {
    guard("quadra_session_run", || {
        // SAFETY: NULL or live by the caller's contract; shared, since another thread may
        // be in a run (the lock below tells).
        let s = unsafe { s.as_ref() }.ok_or_else(|| Failure::argument("session is NULL"))?;
        if input_nchw.is_null() || output.is_null() {
            let which = if input_nchw.is_null() {
                "input"
            } else {
                "output"
            };
            return Err(Failure::argument(format!("{which} is NULL")));
        }
        let (want_in, want_out) = (s.input_len, s.output_len);
        if input_len != want_in {
            let (h, w) = s.input_size;
            return Err(Failure::argument(format!(
                "input_len is {input_len} floats, the session takes {want_in} (C x {h} x {w})"
            )));
        }
        if output_len != want_out {
            return Err(Failure::argument(format!(
                "output_len is {output_len} floats, the session gives {want_out}"
            )));
        }
        // SAFETY: non-NULL, and `input_len` readable floats by the caller's contract.
        let input = unsafe { std::slice::from_raw_parts(input_nchw, input_len) };
        // SAFETY: non-NULL, and `output_len` writable floats by the caller's contract.
        let output = unsafe { std::slice::from_raw_parts_mut(output, output_len) };
        let mut session = match s.session.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => {
                return Err(Failure(
                    QUADRA_E_BUSY,
                    "the session is running on another thread: a session serves one thread \
                     at a time (make one per thread)"
                        .into(),
                ))
            }
            // A run that panicked: the session's own poisoning reports it below.
            Err(TryLockError::Poisoned(g)) => g.into_inner(),
        };
        let y = session
            .run(input, Layout::Nchw)
            .map_err(|e| Failure(code_of(&e, QUADRA_E_ARGUMENT), e.to_string()))?;
        output.copy_from_slice(y);
        Ok(())
    })
}

/// Frees a session and stops its threads (NULL: nothing).
///
/// # Safety
/// `s` is NULL or a session from `quadra_session_new`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn quadra_session_free(s: *mut QuadraSession) {
    // SAFETY: the caller's contract, passed on.
    unsafe { free_boxed(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: quadra_last_error never returns NULL and its string lives until the next
        // failing call on this thread.
        unsafe { CStr::from_ptr(quadra_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn every_kernel_path_has_its_c_name() {
        use quadra_core::{Isa, Kernels};
        for isa in Isa::ALL {
            // SAFETY: only named, never run.
            let k = unsafe { Kernels::new_unchecked(isa) };
            // SAFETY: as above.
            for k in [k.without_int8_dot(), unsafe { k.with_int8_dot_unchecked() }] {
                assert_eq!(kernels_name(k).to_str().unwrap(), k.describe());
                // SAFETY: as above.
                let h = unsafe { k.with_fp16_unchecked() };
                assert_eq!(kernels_name(h).to_str().unwrap(), h.describe());
            }
        }
    }

    #[test]
    fn a_panic_becomes_internal_with_its_message_and_nothing_unwinds() {
        let rc = guard("quadra_test", || panic!("boom at {}", 42));
        assert_eq!(rc, QUADRA_E_INTERNAL);
        assert_eq!(last(), "quadra_test: internal error: boom at 42");
        assert_eq!(guard("quadra_test", || Ok(())), QUADRA_OK);
        // Success leaves the last failure's message in place.
        assert!(last().contains("boom"));
        let rc = guard("quadra_test", || Err(Failure::argument("a \0 inside")));
        assert_eq!(
            (rc, last()),
            (QUADRA_E_ARGUMENT, "quadra_test: a \\0 inside".into())
        );
    }
}
