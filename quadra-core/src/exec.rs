//! Running the bands of a layer: serially here, on a thread pool in `quadra-cpu`.
//!
//! A layer split into bands gives exactly the result of the unsplit layer (every band
//! computes its rows with the same arithmetic in the same order), so the output does not
//! depend on the executor or its width.

/// Most bands a layer is split into.
pub const MAX_BANDS: usize = 16;

/// Runs independent tasks, possibly in parallel.
pub trait Executor: Sync {
    /// How many bands to split a layer into (1: no splitting). The arena must be sized
    /// for this width ([`crate::Arch::arena_len_with`]).
    fn width(&self) -> usize;

    /// Runs `f` once on every task; returns when all are done.
    fn run<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync));
}

/// Runs tasks one after another on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Executor for Serial {
    fn width(&self) -> usize {
        1
    }

    fn run<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync)) {
        tasks.iter_mut().for_each(f);
    }
}

/// Rows `y0..y1` of band `i` when `rows` rows are split into `bands` bands.
pub const fn band_rows(rows: usize, bands: usize, i: usize) -> (usize, usize) {
    let per = rows.div_ceil(if bands == 0 { 1 } else { bands });
    let y0 = if i * per < rows { i * per } else { rows };
    let y1 = if y0 + per < rows { y0 + per } else { rows };
    (y0, y1)
}
