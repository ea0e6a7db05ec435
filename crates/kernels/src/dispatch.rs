//! The kernel table: per weight type, the activation format, its quantizer and the
//! row · activation dot product. One table per instruction set; the best one for this
//! CPU is chosen once (`THAW_KERNELS` can force a weaker one for testing/comparison).

use std::sync::OnceLock;

use crate::reference::{float, kquants, q4, q5, q8};
use crate::{GgmlType, KernelError};

/// `quantize(x, dst)`: f32 activations → the activation format's bytes.
pub type QuantizeFn = fn(&[f32], &mut [u8]);
/// `dot(n, weight_row, activation_row)` over `n` values.
pub type DotFn = fn(usize, &[u8], &[u8]) -> f32;

/// `tile(cols, w, a, out)`: `w` holds `rows` consecutive weight rows and `a` holds
/// `tokens` consecutive activation rows (each `cols` values); writes
/// `out[i * tokens + j] = dot(w row i, a row j)`.
pub type GemmFn = fn(usize, &[u8], &[u8], &mut [f32]);

/// A GEMM tile kernel and its tile shape (`rows * tokens <= 64`).
#[derive(Clone, Copy)]
pub struct GemmTile {
    pub rows: usize,
    pub tokens: usize,
    pub f: GemmFn,
}

/// Where a packed tile writes: (row i, token j) at `ptr + j * ld + i`, for rows
/// i < `rows` (a partial group writes only its rows; other threads write the rest).
#[derive(Clone, Copy)]
pub struct TileOut {
    pub ptr: *mut f32,
    pub ld: usize,
    pub rows: usize,
}

impl TileOut {
    /// The address of (row i, token j).
    pub fn at(self, i: usize, j: usize) -> *mut f32 {
        self.ptr.wrapping_add(j * self.ld + i)
    }
}

/// `f(cols, packed_group, a, out)`: a packed tile writing straight into the output.
///
/// # Safety
/// `out` must be valid for writes at every (row < out.rows, token < tokens), and no
/// other thread may access those elements during the call.
pub type PackedFn = unsafe fn(usize, &[u8], &[u8], TileOut);

/// A prefill tile on a packed copy of the weights: the driver packs each chunk's rows
/// in groups of `rows` (`pack(cols, rows_data, k, dst)` for the k ≤ `rows` rows present,
/// into `group_bytes(cols)` bytes), then `f(cols, packed_group, a, out)` computes
/// `rows × tokens` results (see [`PackedFn`]). For every (row, token) the result is
/// bit-identical to the type's `gemm` tile, so it replaces that tile for whole
/// `tokens`-token tiles of batches of at least `min_tokens` (where packing pays off).
/// With `prep`, `f` reads prepared activation rows instead of the quantized ones.
#[derive(Clone, Copy)]
pub struct PackedGemm {
    pub rows: usize,
    pub tokens: usize,
    pub min_tokens: usize,
    pub group_bytes: fn(usize) -> usize,
    pub pack: fn(usize, &[u8], usize, &mut [u8]),
    pub f: PackedFn,
    pub prep: Option<ActPrep>,
}

/// A per-call transform of each quantized activation row (`f(cols, row, dst)`, into
/// `row_bytes(cols)` bytes) for a packed tile: work that depends on the token only,
/// done once per call rather than once per row tile.
#[derive(Clone, Copy)]
pub struct ActPrep {
    pub row_bytes: fn(usize) -> usize,
    pub f: fn(usize, &[u8], &mut [u8]),
}

/// How one weight type is multiplied: activations are converted to `act_type` first.
/// `gemm`, when present, is used for batches of at least `gemm_min_tokens` (≥ 2) tokens
/// and `gemv` (a tile of one token) for single tokens and smaller batches; both give
/// `dot`'s results up to f32 summation order. When both are present they have the same
/// `rows`.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    pub act_type: GgmlType,
    pub quantize: QuantizeFn,
    pub dot: DotFn,
    pub gemm: Option<GemmTile>,
    pub gemv: Option<GemmTile>,
    pub gemm_min_tokens: usize,
    pub packed: Option<PackedGemm>,
}

/// A complete set of kernels for one instruction set.
pub struct KernelSet {
    name: &'static str,
    f32: TypeKernels,
    f16: TypeKernels,
    bf16: TypeKernels,
    q4_0: TypeKernels,
    q4_1: TypeKernels,
    q5_0: TypeKernels,
    q5_1: TypeKernels,
    q8_0: TypeKernels,
    q4_k: TypeKernels,
    q5_k: TypeKernels,
    q6_k: TypeKernels,
    /// Q4_1 and Q8_0 interleaved by 16 rows, where this set has tiles for them.
    q4_1x16: Option<TypeKernels>,
    q8_0x16: Option<TypeKernels>,
}

impl KernelSet {
    /// "scalar", "avx2" or "avx512".
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The kernels for weight type `ty`, or `Unsupported`.
    pub fn for_type(&self, ty: GgmlType) -> Result<TypeKernels, KernelError> {
        Ok(match ty {
            GgmlType::F32 => self.f32,
            GgmlType::F16 => self.f16,
            GgmlType::BF16 => self.bf16,
            GgmlType::Q4_0 => self.q4_0,
            GgmlType::Q4_1 => self.q4_1,
            GgmlType::Q5_0 => self.q5_0,
            GgmlType::Q5_1 => self.q5_1,
            GgmlType::Q8_0 => self.q8_0,
            GgmlType::Q4K => self.q4_k,
            GgmlType::Q5K => self.q5_k,
            GgmlType::Q6K => self.q6_k,
            GgmlType::Q4_1x16 => self.q4_1x16.ok_or(KernelError::Unsupported(ty))?,
            GgmlType::Q8_0x16 => self.q8_0x16.ok_or(KernelError::Unsupported(ty))?,
            other => return Err(KernelError::Unsupported(other)),
        })
    }
}

const fn tk(act_type: GgmlType, quantize: QuantizeFn, dot: DotFn) -> TypeKernels {
    TypeKernels {
        act_type,
        quantize,
        dot,
        gemm: None,
        gemv: None,
        gemm_min_tokens: 2,
        packed: None,
    }
}

/// Q4_K: llama.cpp (AVX2 CPUs) repacks Q4_K matrices and sums a batch's first
/// `n - n % 4` tokens in its 4-token gemm order, the rest (and single tokens) in the
/// gemv order; a 1 × 4 tile in the gemm order and the dot in the gemv order reproduce
/// that split (see `reference::kquants::dot_q4_k_q8_k`).
const fn q4_k_kernels(dot: DotFn, gemm: GemmFn) -> TypeKernels {
    TypeKernels {
        act_type: GgmlType::Q8K,
        quantize: kquants::quantize_q8_k,
        dot,
        gemm: Some(GemmTile {
            rows: 1,
            tokens: 4,
            f: gemm,
        }),
        gemv: None,
        gemm_min_tokens: 2,
        packed: None,
    }
}

/// Q6_K: llama.cpp (x86) does not repack Q6_K; it sums batches of fewer than
/// [`kquants::Q6_K_BATCH_TOKENS`] tokens with ggml's AVX2 lane order (`dot`) and larger
/// batches, every token, with one FMA per super-block (`gemm`, a 1 × 1 tile; see
/// `reference::kquants::dot_q6_k_q8_k_batch`).
const fn q6_k_kernels(dot: DotFn, gemm: GemmFn) -> TypeKernels {
    TypeKernels {
        act_type: GgmlType::Q8K,
        quantize: kquants::quantize_q8_k,
        dot,
        gemm: Some(GemmTile {
            rows: 1,
            tokens: 1,
            f: gemm,
        }),
        gemv: None,
        gemm_min_tokens: kquants::Q6_K_BATCH_TOKENS,
        packed: None,
    }
}

/// `tk` with a GEMM tile kernel.
#[cfg(target_arch = "x86_64")]
const fn tkg(
    act_type: GgmlType,
    quantize: QuantizeFn,
    dot: DotFn,
    rows: usize,
    tokens: usize,
    gemm: GemmFn,
    gemv: Option<GemmFn>,
) -> TypeKernels {
    TypeKernels {
        act_type,
        quantize,
        dot,
        gemm: Some(GemmTile {
            rows,
            tokens,
            f: gemm,
        }),
        gemv: match gemv {
            Some(f) => Some(GemmTile { rows, tokens: 1, f }),
            None => None,
        },
        gemm_min_tokens: 2,
        packed: None,
    }
}

/// Activation quantizers are the scalar reference in every set: they are O(cols) per
/// token against O(rows × cols) for the dots, and sharing them keeps every set's
/// activations bit-identical to ggml's reference quantizers. (Except Q8_K on AVX-512,
/// ~4% of a Gemma 3 prompt in scalar code: its SIMD quantizer writes the same bytes,
/// tested in `tests/dot.rs`.)
static SCALAR: KernelSet = KernelSet {
    name: "scalar",
    f32: tk(GgmlType::F32, float::quantize_f32, float::dot_f32),
    f16: tk(GgmlType::F16, float::quantize_f16, float::dot_f16),
    bf16: tk(GgmlType::BF16, float::quantize_bf16, float::dot_bf16),
    q4_0: tk(GgmlType::Q8_0, q8::quantize_q8_0, q4::dot_q4_0_q8_0),
    q4_1: tk(GgmlType::Q8_1, q8::quantize_q8_1, q4::dot_q4_1_q8_1),
    q5_0: tk(GgmlType::Q8_0, q8::quantize_q8_0, q5::dot_q5_0_q8_0),
    q5_1: tk(GgmlType::Q8_1, q8::quantize_q8_1, q5::dot_q5_1_q8_1),
    q8_0: tk(GgmlType::Q8_0, q8::quantize_q8_0, q8::dot_q8_0_q8_0),
    q4_k: q4_k_kernels(kquants::dot_q4_k_q8_k, kquants::gemm_q4_k_q8_k),
    q5_k: tk(
        GgmlType::Q8K,
        kquants::quantize_q8_k,
        kquants::dot_q5_k_q8_k,
    ),
    q6_k: q6_k_kernels(kquants::dot_q6_k_q8_k, kquants::gemm_q6_k_q8_k),
    q4_1x16: None,
    q8_0x16: None,
};

/// A SIMD set: the given module's dots where it has them, scalar elsewhere (Q5_1).
#[cfg(target_arch = "x86_64")]
macro_rules! simd_set {
    ($name:literal, $m:path) => {{
        use $m as k;
        KernelSet {
            name: $name,
            f32: tk(GgmlType::F32, float::quantize_f32, k::dot_f32),
            f16: tk(GgmlType::F16, float::quantize_f16, k::dot_f16),
            bf16: tk(GgmlType::BF16, float::quantize_bf16, k::dot_bf16),
            q4_0: tk(GgmlType::Q8_0, q8::quantize_q8_0, k::dot_q4_0_q8_0),
            q4_1: tkg(
                GgmlType::Q8_1,
                q8::quantize_q8_1,
                k::dot_q4_1_q8_1,
                k::GEMM_ROWS,
                k::GEMM_TOKENS,
                k::gemm_q4_1_q8_1,
                Some(k::gemv_q4_1_q8_1),
            ),
            q5_0: tkg(
                GgmlType::Q8_0,
                q8::quantize_q8_0,
                k::dot_q5_0_q8_0,
                k::GEMM_ROWS,
                k::GEMM_TOKENS,
                k::gemm_q5_0_q8_0,
                Some(k::gemv_q5_0_q8_0),
            ),
            q5_1: tk(GgmlType::Q8_1, q8::quantize_q8_1, q5::dot_q5_1_q8_1),
            q8_0: tkg(
                GgmlType::Q8_0,
                q8::quantize_q8_0,
                k::dot_q8_0_q8_0,
                k::GEMM_ROWS,
                k::GEMM_TOKENS,
                k::gemm_q8_0_q8_0,
                // Measured: on the 28 MB tied output matrix the 4-row gemv streamed
                // ~15% slower than the per-row dot, so Q8_0 decodes with the dot.
                None,
            ),
            q4_k: q4_k_kernels(k::dot_q4_k_q8_k, k::gemm_q4_k_q8_k),
            q5_k: tk(GgmlType::Q8K, kquants::quantize_q8_k, k::dot_q5_k_q8_k),
            q6_k: q6_k_kernels(k::dot_q6_k_q8_k, k::gemm_q6_k_q8_k),
            q4_1x16: None,
            q8_0x16: None,
        }
    }};
}

#[cfg(target_arch = "x86_64")]
static AVX2: KernelSet = simd_set!("avx2", crate::x86_64::avx2);
#[cfg(target_arch = "x86_64")]
static AVX512: KernelSet = with_wide_tiles(simd_set!("avx512", crate::x86_64::avx512));

/// The AVX-512 set runs Q8_0, Q5_0 and Q4_1 with 8-row tiles of two rows per 512-bit
/// register (bit-identical to the 256-bit tiles, and for Q8_0 / Q5_0 decode to the dot).
#[cfg(target_arch = "x86_64")]
const fn with_wide_tiles(mut s: KernelSet) -> KernelSet {
    use crate::x86_64::gemv512 as g;
    use crate::x86_64::packed as p;
    const fn tile(rows: usize, tokens: usize, f: GemmFn) -> Option<GemmTile> {
        Some(GemmTile { rows, tokens, f })
    }
    s.q8_0.gemv = tile(g::ROWS, 1, g::gemv_q8_0_q8_0);
    s.q8_0.gemm = tile(g::ROWS, g::TOKENS, g::gemm_q8_0_q8_0);
    s.q4_1.gemv = tile(g::ROWS, 1, g::gemv_q4_1_q8_1);
    s.q4_1.gemm = tile(g::ROWS, g::TOKENS, g::gemm_q4_1_q8_1);
    s.q5_0.gemv = tile(g::ROWS, 1, g::gemv_q5_0_q8_0);
    s.q5_0.gemm = tile(g::ROWS, g::TOKENS, g::gemm_q5_0_q8_0);
    // Interleaved Q4_1 and Q8_0: 16-row tiles over whole groups (the plain tail rows
    // are multiplied as a plain matrix, see `matmul`); no packed prefill tile, the
    // 16 × 4 tile reads the layout as it is.
    {
        use crate::interleave::ROWS;
        use crate::x86_64::x16 as x;
        let mut k = s.q4_1;
        k.gemv = tile(ROWS, 1, x::gemv_q4_1x16_q8_1);
        k.gemm = tile(ROWS, x::TOKENS, x::gemm_q4_1x16_q8_1);
        k.packed = None;
        s.q4_1x16 = Some(k);
        let mut k = s.q8_0;
        k.gemv = tile(ROWS, 1, x::gemv_q8_0x16_q8_0);
        k.gemm = tile(ROWS, x::TOKENS, x::gemm_q8_0x16_q8_0);
        k.packed = None;
        s.q8_0x16 = Some(k);
    }
    const fn rows8(
        pack: fn(usize, &[u8], usize, &mut [u8]),
        f: PackedFn,
        prep: fn(usize, &[u8], &mut [u8]),
    ) -> Option<PackedGemm> {
        Some(PackedGemm {
            rows: g::ROWS,
            tokens: g::TOKENS,
            min_tokens: PACKED_MIN_TOKENS,
            group_bytes: g::rows8_group_bytes,
            pack,
            f,
            prep: Some(ActPrep {
                row_bytes: g::q8_0_prep_bytes,
                f: prep,
            }),
        })
    }
    s.q5_0.packed = rows8(g::pack_q5_0, g::gemm_offset_packed, g::prep_q8_0_for_q5_0);
    s.q8_0.packed = rows8(g::pack_q8_0, g::gemm_offset_packed, g::prep_q8_0_for_q8_0);
    // Q8_K activations in SIMD (byte-identical to the reference quantizer).
    s.q4_k.quantize = p::quantize_q8_k;
    s.q5_k.quantize = p::quantize_q8_k;
    s.q6_k.quantize = p::quantize_q8_k;
    s.q4_k.packed = Some(packed(
        p::gemm_q4_k_packed,
        p::q4_k_group_bytes,
        p::pack_q4_k,
    ));
    s.q6_k.packed = Some(packed(
        p::gemm_q6_k_packed,
        p::q6_k_group_bytes,
        p::pack_q6_k,
    ));
    s
}

/// The AVX-512 K-quant prefill tiles on row-interleaved copies of the weights.
#[cfg(target_arch = "x86_64")]
const fn packed(
    f: PackedFn,
    group_bytes: fn(usize) -> usize,
    pack: fn(usize, &[u8], usize, &mut [u8]),
) -> PackedGemm {
    use crate::x86_64::packed as p;
    PackedGemm {
        rows: p::ROWS,
        tokens: p::TOKENS,
        min_tokens: PACKED_MIN_TOKENS,
        group_bytes,
        pack,
        f,
        prep: None,
    }
}

/// Batches from which packing the K-quant weights pays for itself.
#[cfg(target_arch = "x86_64")]
const PACKED_MIN_TOKENS: usize = 16;

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// Every kernel set this CPU can run, best last (tests compare each against scalar).
pub fn available_kernel_sets() -> Vec<&'static KernelSet> {
    #[allow(unused_mut)]
    let mut sets = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            sets.push(&AVX2);
        }
        if has_avx512() {
            sets.push(&AVX512);
        }
    }
    sets
}

/// For tests: runs the current test binary again, with libtest arguments `args`,
/// under each kernel set this CPU has other than the active one (`THAW_KERNELS`), and
/// panics with the output of any run that fails. The set is chosen once per process,
/// so without this a test binary checks only the active set's paths of the functions
/// that dispatch on it (attention, softmax): on an AVX-512 machine the AVX2 ones would
/// never run. Does nothing when `THAW_KERNELS` is set (in such a run, or by hand).
#[doc(hidden)]
pub fn rerun_tests_in_other_kernel_sets(args: &[&str]) {
    if std::env::var_os("THAW_KERNELS").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    for set in available_kernel_sets() {
        if set.name == active().name {
            continue;
        }
        let out = std::process::Command::new(&exe)
            .args(args)
            .env("THAW_KERNELS", set.name)
            .output()
            .expect("run the test binary again");
        assert!(
            out.status.success(),
            "THAW_KERNELS={} {}: {}\n{}",
            set.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The kernel set named `name`, if it exists and this CPU supports it.
pub fn kernel_set(name: &str) -> Option<&'static KernelSet> {
    available_kernel_sets().into_iter().find(|s| s.name == name)
}

struct Selection {
    set: &'static KernelSet,
    bad_override: Option<String>,
}

static SELECTED: OnceLock<Selection> = OnceLock::new();

fn selection() -> &'static Selection {
    SELECTED.get_or_init(|| {
        let best = *available_kernel_sets()
            .last()
            .expect("scalar is always available");
        match std::env::var("THAW_KERNELS") {
            Ok(v) if !v.is_empty() => match kernel_set(&v) {
                Some(set) => Selection {
                    set,
                    bad_override: None,
                },
                None => Selection {
                    set: best,
                    bad_override: Some(v),
                },
            },
            _ => Selection {
                set: best,
                bad_override: None,
            },
        }
    })
}

/// Chooses the kernel set (once; later calls return the same answer): the best this CPU
/// supports, or the one named by `THAW_KERNELS`. An unknown or unavailable override is
/// reported here as `BadOverride` (nothing is printed) and the best set is used instead.
pub fn select_kernels() -> Result<&'static str, KernelError> {
    let s = selection();
    match &s.bad_override {
        Some(v) => Err(KernelError::BadOverride(v.clone())),
        None => Ok(s.set.name),
    }
}

/// The kernel set in use.
pub fn active() -> &'static KernelSet {
    selection().set
}

/// Whether the kernel set in use reads Q4_1 and Q8_0 matrices interleaved by 16 rows
/// ([`GgmlType::Q4_1x16`], [`GgmlType::Q8_0x16`]): model loaders then interleave
/// plain ones, and otherwise restore interleaved ones to plain rows.
pub fn reads_interleaved() -> bool {
    let s = active();
    s.q4_1x16.is_some() && s.q8_0x16.is_some()
}
