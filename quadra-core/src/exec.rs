//! Running the bands of a layer: serially here, on a thread gang in `quadra-cpu`.
//!
//! A layer split into bands gives exactly the result of the unsplit layer (every band
//! computes its rows with the same arithmetic in the same order), so the output does not
//! depend on the executor, its width or how it splits rows: even bands, bands sized to
//! unequal cores, bands of one row and empty bands all give the same bits.

/// Most bands a layer is split into.
pub const MAX_BANDS: usize = 16;

/// Runs independent tasks, possibly in parallel.
pub trait Executor: Sync {
    /// How many bands to split a layer into (1: no splitting). The arena must be sized
    /// for this width ([`crate::Arch::arena_len_with`]).
    fn width(&self) -> usize;

    /// Runs `f` once on every task; returns when all are done. Task `i` runs on thread
    /// `i mod width` of the executor.
    fn run<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync));

    /// Rows `y0..y1` of band `i` when a layer of `rows` rows is split into `bands` bands
    /// (`bands <= width`; band `i` runs on thread `i`). The bands must cover `0..rows` in
    /// order without overlap; any such split gives the same result. The default splits
    /// evenly ([`band_rows`]); an executor over unequal cores gives a faster core more rows.
    /// It must give the same split for the same arguments until [`Executor::pass_start`].
    fn split(&self, rows: usize, bands: usize, i: usize) -> (usize, usize) {
        band_rows(rows, bands, i)
    }

    /// [`Executor::run`] for a job of row bands made by [`Executor::split`] (whose time
    /// per thread tells an executor how fast each thread is).
    fn run_bands<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync)) {
        self.run(tasks, f)
    }

    /// Called by the forward passes before their first layer, outside any job: where an
    /// executor may change its [`Executor::split`].
    fn pass_start(&self) {}
}

/// Rows `y0..y1` of band `i` when `rows` rows are split in proportion to `weights` (one
/// per band, `bands = weights.len()`): band `i` ends at `round(rows · W_i / W)` where `W_i`
/// sums the weights of bands `0..=i`. Zero weights (or all zero: even bands) are allowed;
/// a band may be empty.
pub fn weighted_band_rows(rows: usize, weights: &[u32], i: usize) -> (usize, usize) {
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    if total == 0 {
        return band_rows(rows, weights.len(), i);
    }
    let edge = |upto: usize| -> usize {
        let w: u64 = weights[..upto.min(weights.len())]
            .iter()
            .map(|&w| w as u64)
            .sum();
        // In u128: `rows · w` cannot overflow.
        ((rows as u128 * w as u128 + total as u128 / 2) / total as u128) as usize
    };
    let y0 = edge(i).min(rows);
    let y1 = edge(i + 1).min(rows).max(y0);
    (y0, y1)
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

/// Rows `y0..y1` of band `i` when `rows` rows are split into `bands` even bands.
pub const fn band_rows(rows: usize, bands: usize, i: usize) -> (usize, usize) {
    let per = rows.div_ceil(if bands == 0 { 1 } else { bands });
    let y0 = if i * per < rows { i * per } else { rows };
    let y1 = if y0 + per < rows { y0 + per } else { rows };
    (y0, y1)
}
