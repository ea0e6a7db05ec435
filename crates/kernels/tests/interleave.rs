//! Q4_1 and Q8_0 matrices interleaved by 16 rows: packing round-trips, and every
//! kernel set that reads the layout gives, for every (row, token), the bits the same
//! set gives on the plain matrix (so decode, prefill and the llama.cpp cross-checks
//! are unchanged).

mod common;

use common::{Rng, random_rows};
use thaw_kernels::interleave::{self, ROWS};
use thaw_kernels::{GgmlType, QMatrix, ThreadPool, available_kernel_sets, matmul_with};

const TYPES: [GgmlType; 2] = [GgmlType::Q4_1, GgmlType::Q8_0];

#[test]
fn packing_round_trips_and_keeps_the_tail_plain() {
    let mut rng = Rng(5);
    let shapes = [(16usize, 1usize), (37, 3), (5, 2), (64, 18)];
    for (ty, (rows, blocks)) in TYPES.iter().flat_map(|&t| shapes.map(|s| (t, s))) {
        let cols = 32 * blocks;
        let plain = random_rows(&mut rng, ty, rows, cols);
        let mut packed = vec![0u8; plain.len()];
        interleave::pack_matrix(ty, cols, rows, &plain, &mut packed);
        let rb = plain.len() / rows;
        let full = interleave::interleaved_rows(rows);
        assert_eq!(full % ROWS, 0);
        assert_eq!(
            packed[full * rb..],
            plain[full * rb..],
            "tail rows stay plain"
        );
        if full > 0 {
            assert_ne!(packed[..full * rb], plain[..full * rb]);
        }
        let mut back = vec![0u8; plain.len()];
        interleave::unpack_matrix(ty, cols, rows, &packed, &mut back);
        assert_eq!(back, plain);
        // Any one row comes back from the packed matrix.
        for r in [0, rows / 2, rows - 1] {
            let mut row = vec![0u8; rb];
            interleave::plain_row(ty, cols, rows, &packed, r, &mut row);
            assert_eq!(row, plain[r * rb..][..rb], "{ty} row {r} of {rows}");
        }
    }
}

#[test]
fn interleaved_matmul_equals_plain_bit_for_bit() {
    let mut rng = Rng(41);
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let mut tested = 0;
    let shapes = [(16usize, 1usize), (21, 2), (48, 18), (200, 7), (576, 48)];
    for set in available_kernel_sets() {
        for (ty, (rows, blocks)) in TYPES.iter().flat_map(|&t| shapes.map(|s| (t, s))) {
            let ity = interleave::interleaved(ty).unwrap();
            if set.for_type(ity).is_err() {
                continue;
            }
            tested += 1;
            let cols = 32 * blocks;
            let plain = random_rows(&mut rng, ty, rows, cols);
            let mut packed = vec![0u8; plain.len()];
            interleave::pack_matrix(ty, cols, rows, &plain, &mut packed);
            let wp = QMatrix {
                ty,
                rows,
                cols,
                data: &plain,
            };
            let wi = QMatrix {
                ty: ity,
                data: &packed,
                ..wp
            };
            for n in [1usize, 2, 3, 4, 5, 9, 17, 70] {
                let x = rng.vec(n * cols, 1.5);
                for pool in &pools {
                    let mut op = vec![f32::NAN; n * rows];
                    let mut oi = vec![f32::NAN; n * rows];
                    matmul_with(set, pool, &wp, &x, n, &mut op).unwrap();
                    matmul_with(set, pool, &wi, &x, n, &mut oi).unwrap();
                    for (i, (a, b)) in op.iter().zip(&oi).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{} {ty} {rows}x{cols} n={n} element {i}: {a} vs {b}",
                            set.name()
                        );
                    }
                }
            }
        }
    }
    // Every set that lacks the layout says so instead of misreading it.
    for (set, ty) in available_kernel_sets()
        .into_iter()
        .flat_map(|s| [(s, GgmlType::Q4_1x16), (s, GgmlType::Q8_0x16)])
    {
        if set.for_type(ty).is_err() {
            let d = vec![0u8; 16 * ty.row_bytes(32).unwrap()];
            let w = QMatrix {
                ty,
                rows: 16,
                cols: 32,
                data: &d,
            };
            let mut out = vec![0.0; 16];
            let err = matmul_with(set, &pools[0], &w, &[0.5; 32], 1, &mut out);
            assert!(
                err.is_err(),
                "{} accepted an interleaved matrix",
                set.name()
            );
        }
    }
    if std::is_x86_feature_detected!("avx512vnni") {
        assert!(
            tested > 0,
            "the AVX-512 set reads interleaved Q4_1 and Q8_0"
        );
    }
}
