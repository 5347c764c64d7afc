//! The whole network: the packed weight layout, packing from PyTorch's state_dict
//! (`pack`), quantisation (`quant`), band scheduling (`bands`), and here the model and
//! its forward pass over one caller-provided arena.

use crate::arch::{Arch, BlockSpec, Plan, MAX_SIDE};
use crate::block::{BlockDims, BlockWeights};
use crate::error::{Buffer, Error};
use crate::exec::{Executor, Serial, MAX_BANDS};
use crate::isa::Kernels;
use crate::kernels::{self, Epilogue, MatData, MatMut, MatRef, PackedB};
use crate::weights::{Cursor, Weights};

mod bands;
mod pack;
mod quant;

use bands::{bands_of, finish};
#[doc(hidden)]
pub use bands::{run_block, run_block_scratch, run_block_scratch_for};
#[doc(hidden)]
pub use pack::{pack_float_blocks, pack_model, pack_tensor, visit_tensors, Packing, TensorSlot};
#[doc(hidden)]
pub use quant::{check_scales, quantize_model, quantize_slot, MatDataMut, QuantError, MAX_SCALE};

/// A layer of the network, reported by [`Model::forward_observed`] as it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Stem: 4x4 stride-4 conv and LN.
    Stem,
    /// LN and 2x2 stride-2 conv into stage `stage` (1..=3).
    Downsample {
        /// The stage it feeds.
        stage: usize,
    },
    /// Block `index` of stage `stage` (identity blocks are reported too).
    Block {
        /// Stage (0..=3).
        stage: usize,
        /// Index within the stage.
        index: usize,
        /// Its kernel and expansion.
        spec: BlockSpec,
    },
    /// Mean pool, LN and the linear head.
    Head,
}

/// What one forward pass runs with, shared by its internal steps: the executor of its
/// bands, the kernels, and the channels-last `h x w` input image.
struct Pass<'p, E> {
    exec: &'p E,
    kern: Kernels,
    input: &'p [f32],
    h: usize,
    w: usize,
}

// Not derived: a derive would demand `E: Copy`, and only the reference is copied.
impl<E> Clone for Pass<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Pass<'_, E> {}

/// A network ready to run: an architecture and its packed weights (see the crate example
/// for a whole forward pass).
///
/// ```
/// use quadra_core::{arch::presets, Kernels, MatData, Model, Serial, Weights};
/// let arch = presets::quadranet25(16);
/// let len = arch.weights_len();
/// let (vecs, mats) = (vec![0.01f32; len.vecs], vec![0.01f32; len.mats]);
/// let model = Model::new(arch, Weights { vecs: &vecs, mats: MatData::F32(&mats) })?;
/// let (h, w) = (32, 32);
/// let mut arena = vec![0.0f32; model.arena_len(h, w, 1)];
/// let mut features = vec![0.0f32; 128];
/// model.forward_features(&Serial, Kernels::detect(), &vec![0.5; h * w * 3], h, w, &mut arena, &mut features)?;
/// # Ok::<(), quadra_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    arch: Arch<'a>,
    weights: Weights<'a>,
}

impl<'a> Model<'a> {
    /// Checks the architecture and that both weight streams have exactly the lengths
    /// `arch.weights_len()` gives.
    pub fn new(arch: Arch<'a>, weights: Weights<'a>) -> Result<Self, Error> {
        arch.validate()?;
        if let MatData::W8A8(_, f) = weights.mats {
            f.check(&arch)?;
        }
        let (want, got) = (arch.weights_len(), weights.len());
        for (expected, found) in [(want.vecs, got.vecs), (want.mats, got.mats)] {
            if expected != found {
                return Err(Error::Length {
                    buffer: Buffer::Weights,
                    expected,
                    found,
                });
            }
        }
        Ok(Model { arch, weights })
    }

    /// The weights.
    pub const fn weights(&self) -> Weights<'a> {
        self.weights
    }

    /// The architecture.
    pub const fn arch(&self) -> &Arch<'a> {
        &self.arch
    }

    /// Arena floats for `h x w` images run `bands` wide: `arch.arena_len_with(h, w,
    /// bands)`, more for w8a8 weights ([`Arch::arena_len_for`]).
    pub const fn arena_len(&self, h: usize, w: usize, bands: usize) -> usize {
        self.arch
            .arena_len_for(h, w, bands, self.weights.mats.dtype())
    }

    /// Classifies one image: `input` is channels-last `[h, w, in_chans]`, `logits` gets
    /// `num_classes` floats, `arena` needs [`Model::arena_len`]`(h, w, 1)` floats.
    pub fn forward(
        &self,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), Error> {
        self.forward_with(&Serial, kern, input, h, w, arena, logits)
    }

    /// [`Model::forward`] with each layer split into `exec.width()` bands run by `exec`;
    /// `arena` needs [`Model::arena_len`]`(h, w, exec.width())` floats. The logits are
    /// bit-identical to [`Model::forward`]'s.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with<E: Executor>(
        &self,
        exec: &E,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), Error> {
        self.forward_observed(exec, kern, input, h, w, arena, logits, &mut |_| {})
    }

    /// [`Model::forward_with`], calling `on_layer` as each layer completes (stem, each
    /// downsample, each block including identities, head): with a clock, a per-layer
    /// latency table.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_observed<E: Executor>(
        &self,
        exec: &E,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        logits: &mut [f32],
        on_layer: &mut dyn FnMut(Layer),
    ) -> Result<(), Error> {
        let nc = self.arch.num_classes;
        if logits.len() != nc {
            return Err(Error::Length {
                buffer: Buffer::Output,
                expected: nc,
                found: logits.len(),
            });
        }
        let pass = Pass {
            exec,
            kern,
            input,
            h,
            w,
        };
        let (mut cur, plan) = self.run_body(&pass, arena, on_layer)?;
        let d3 = self.arch.dim(3);
        let (_, scratch) = arena.split_at_mut(plan.act_len);
        let (normed, _) = scratch[d3..2 * d3].split_at_mut(d3);
        let head = cur.layer(d3, nc)?;
        let bias = cur.vec(nc)?;
        kernels::gemm(
            kern,
            MatRef::dense(normed, 1, d3),
            head,
            Epilogue::Bias(bias),
            MatMut::dense(logits, 1, nc),
        )?;
        on_layer(Layer::Head);
        Ok(())
    }

    /// The pooled, normalised embedding before the head (`dims[3]` floats): what a new
    /// head would be trained on. Runs like [`Model::forward_with`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_features<E: Executor>(
        &self,
        exec: &E,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        features: &mut [f32],
    ) -> Result<(), Error> {
        let d3 = self.arch.dim(3);
        if features.len() != d3 {
            return Err(Error::Length {
                buffer: Buffer::Features,
                expected: d3,
                found: features.len(),
            });
        }
        let pass = Pass {
            exec,
            kern,
            input,
            h,
            w,
        };
        let (_, plan) = self.run_body(&pass, arena, &mut |_| {})?;
        features.copy_from_slice(&arena[plan.act_len + d3..plan.act_len + 2 * d3]);
        Ok(())
    }

    /// Stem, stages, pooling and the final norm. Leaves the normalised pooled features at
    /// `scratch[d3..2·d3]` and returns the weight cursor at the head.
    fn run_body<E: Executor>(
        &self,
        pass: &Pass<'_, E>,
        arena: &mut [f32],
        obs: &mut dyn FnMut(Layer),
    ) -> Result<(Cursor<'a>, Plan), Error> {
        let Pass {
            exec,
            kern,
            input,
            h,
            w,
        } = *pass;
        let arch = &self.arch;
        if h < 32 || w < 32 || h > MAX_SIDE || w > MAX_SIDE {
            return Err(Error::InputSize { h, w });
        }
        let cin = arch.in_chans;
        if input.len() != h * w * cin {
            return Err(Error::Length {
                buffer: Buffer::Input,
                expected: h * w * cin,
                found: input.len(),
            });
        }
        let bands = exec.width().clamp(1, MAX_BANDS);
        exec.pass_start();
        let plan = arch.plan_for(h, w, bands, self.weights.mats.dtype());
        if arena.len() < plan.arena_len() {
            return Err(Error::Length {
                buffer: Buffer::Arena,
                expected: plan.arena_len(),
                found: arena.len(),
            });
        }
        let (act, scratch) = arena.split_at_mut(plan.act_len);
        let mut cur = Cursor::new(self.weights);

        // Stem: 4x4 stride-4 patches, then LN, in bands of output rows.
        let c0 = arch.dim(0);
        let (h0, w0) = plan.hw[0];
        let stem = Stem {
            conv: cur.layer(16 * cin, c0)?,
            bias: cur.vec(c0)?,
            ln_w: cur.vec(c0)?,
            ln_b: cur.vec(c0)?,
            cin,
            w,
            w0,
        };
        {
            let x0 = &mut act[plan.offsets[0]..plan.offsets[0] + h0 * w0 * c0];
            let mut tasks = bands_of(exec, x0, w0 * c0, h0, bands, scratch, plan.band_scratch)?;
            exec.run_bands(&mut tasks, &|t| {
                t.res = stem.rows(kern, input, t.y0, t.x, t.scratch)
            });
            finish(&tasks)?;
        }
        obs(Layer::Stem);

        for s in 0..4 {
            let (sh, sw) = plan.hw[s];
            let d = arch.dim(s);
            if s > 0 {
                self.downsample(pass, &mut cur, &plan, s, act, scratch)?;
                obs(Layer::Downsample { stage: s });
            }
            let x = &mut act[plan.offsets[s]..plan.offsets[s] + sh * sw * d];
            for (index, spec) in arch.stages[s].blocks.iter().enumerate() {
                let done = Layer::Block {
                    stage: s,
                    index,
                    spec: *spec,
                };
                if spec.is_identity() {
                    obs(done);
                    continue;
                }
                let (k, e) = (spec.kernel as usize, spec.expansion as usize);
                let bw = BlockWeights::read(&mut cur, d, k, e)?;
                let dims = BlockDims {
                    h: sh,
                    w: sw,
                    c: d,
                    k,
                    e,
                };
                run_block(exec, kern, dims, &bw, x, scratch, plan.band_scratch)?;
                obs(done);
            }
        }

        // Head body: global mean pool, LN.
        let d3 = arch.dim(3);
        let (h3, w3) = plan.hw[3];
        let x = &act[plan.offsets[3]..plan.offsets[3] + h3 * w3 * d3];
        let (pooled, rest) = scratch.split_at_mut(d3);
        pooled.fill(0.0);
        for px in x.chunks_exact(d3) {
            for (p, v) in pooled.iter_mut().zip(px) {
                *p += v;
            }
        }
        let inv = 1.0 / (h3 * w3) as f32;
        pooled.iter_mut().for_each(|p| *p *= inv);
        let (nw, nb) = (cur.vec(d3)?, cur.vec(d3)?);
        kernels::layer_norm_rows(kern, pooled, d3, nw, nb, &mut rest[..d3])?;
        Ok((cur, plan))
    }

    /// LN + 2x2 stride-2 conv from stage `s-1` to stage `s`, one output row at a time.
    /// When the plan gives both stages one region, output row `y` is written only after
    /// input rows `2y, 2y+1` are gathered, behind every input row still to be read; when
    /// they have separate regions, bands of output rows run through `exec`.
    fn downsample<E: Executor>(
        &self,
        &Pass { exec, kern, .. }: &Pass<'_, E>,
        cur: &mut Cursor<'a>,
        plan: &Plan,
        s: usize,
        act: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let (dp, d) = (self.arch.dim(s - 1), self.arch.dim(s));
        let (ho, wo) = plan.hw[s];
        let (hi, wi) = plan.hw[s - 1];
        let ds = Downsample {
            ln_w: cur.vec(dp)?,
            ln_b: cur.vec(dp)?,
            conv: cur.layer(4 * dp, d)?,
            bias: cur.vec(d)?,
            wi,
            wo,
        };
        let (oi, oo) = (plan.offsets[s - 1], plan.offsets[s]);
        let (in_len, out_len) = (hi * wi * dp, ho * wo * d);
        if oi + in_len <= oo || oo + out_len <= oi {
            // Separate regions: input read-only, output rows in bands.
            let (input, output) = if oi < oo {
                let (a, b) = act.split_at_mut(oo);
                (&a[oi..oi + in_len], &mut b[..out_len])
            } else {
                let (a, b) = act.split_at_mut(oi);
                (&b[..in_len], &mut a[oo..oo + out_len])
            };
            let mut tasks = bands_of(
                exec,
                output,
                wo * d,
                ho,
                exec.width(),
                scratch,
                plan.band_scratch,
            )?;
            exec.run_bands(&mut tasks, &|t| {
                t.res = (|| {
                    for (i, row) in t.x.chunks_exact_mut(wo * d).enumerate() {
                        ds.gather(kern, input, t.y0 + i, t.scratch)?;
                        ds.conv(kern, t.scratch, row)?;
                    }
                    Ok(())
                })()
            });
            return finish(&tasks);
        }
        for y in 0..ho {
            ds.gather(kern, &act[oi..oi + in_len], y, scratch)?;
            ds.conv(
                kern,
                scratch,
                &mut act[oo + y * wo * d..oo + (y + 1) * wo * d],
            )?;
        }
        Ok(())
    }
}

/// A downsample's weights and widths.
struct Downsample<'w> {
    ln_w: &'w [f32],
    ln_b: &'w [f32],
    conv: PackedB<'w>,
    bias: &'w [f32],
    wi: usize,
    wo: usize,
}

impl Downsample<'_> {
    /// LN'd 2x2 patches of input rows `2y, 2y+1` into `patch` (`wo` rows of `4·C_in`).
    fn gather(
        &self,
        kern: Kernels,
        input: &[f32],
        y: usize,
        patch: &mut [f32],
    ) -> Result<(), Error> {
        let dp = self.ln_w.len();
        let found = patch.len();
        let patch = patch.get_mut(..self.wo * 4 * dp).ok_or(Error::Length {
            buffer: Buffer::Scratch,
            expected: self.wo * 4 * dp,
            found,
        })?;
        for (xo, p) in patch.chunks_exact_mut(4 * dp).enumerate() {
            for t in 0..4 {
                let (ky, kx) = (t / 2, t % 2);
                let src = ((2 * y + ky) * self.wi + 2 * xo + kx) * dp;
                let dst = &mut p[t * dp..(t + 1) * dp];
                kernels::layer_norm_rows(
                    kern,
                    &input[src..src + dp],
                    dp,
                    self.ln_w,
                    self.ln_b,
                    dst,
                )?;
            }
        }
        Ok(())
    }

    /// The 2x2 conv of gathered patches into one output row.
    fn conv(&self, kern: Kernels, patch: &[f32], out: &mut [f32]) -> Result<(), Error> {
        let (k, d) = (self.conv.k(), self.conv.n());
        kernels::gemm(
            kern,
            MatRef::dense(&patch[..self.wo * k], self.wo, k),
            self.conv,
            Epilogue::Bias(self.bias),
            MatMut::dense(out, self.wo, d),
        )
    }
}

/// The stem's weights and shapes: 4x4 stride-4 patch conv, then LN.
struct Stem<'w> {
    conv: PackedB<'w>,
    bias: &'w [f32],
    ln_w: &'w [f32],
    ln_b: &'w [f32],
    cin: usize,
    w: usize,
    w0: usize,
}

impl Stem<'_> {
    /// Output rows `y0..` (as many as `out` holds) from the `[h, w, cin]` input.
    fn rows(
        &self,
        kern: Kernels,
        input: &[f32],
        y0: usize,
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let (cin, w, w0) = (self.cin, self.w, self.w0);
        let c0 = self.bias.len();
        let k = 16 * cin;
        let patch_len = w0 * k;
        if scratch.len() < patch_len {
            return Err(Error::Length {
                buffer: Buffer::Scratch,
                expected: patch_len,
                found: scratch.len(),
            });
        }
        let patch = &mut scratch[..patch_len];
        for (i, out) in out.chunks_exact_mut(w0 * c0).enumerate() {
            let y = y0 + i;
            for (xo, p) in patch.chunks_exact_mut(k).enumerate() {
                for ky in 0..4 {
                    let src = ((4 * y + ky) * w + 4 * xo) * cin;
                    p[ky * 4 * cin..(ky + 1) * 4 * cin].copy_from_slice(&input[src..src + 4 * cin]);
                }
            }
            kernels::gemm(
                kern,
                MatRef::dense(patch, w0, k),
                self.conv,
                Epilogue::Bias(self.bias),
                MatMut::dense(out, w0, c0),
            )?;
            kernels::layer_norm_rows_inplace(kern, out, c0, self.ln_w, self.ln_b)?;
        }
        Ok(())
    }
}
