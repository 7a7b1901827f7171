//! Test-only helpers shared by the tests of every crate (a dev-dependency only; depends on nothing).
//!
//! **The one numerical comparison of the workspace.** Folding errors with `f32::max` from 0 skips a
//! NaN (`0.0f32.max(NaN) == 0.0`), so an all-NaN output "matches" anything. Every function here
//! treats a non-finite value on either side as a failure and names its index.
//!
//! - [`diff`] — `max |a − b|`, where, and `max |b|`, or an error naming the first non-finite value
//!   ([`checked_diff`] panics instead);
//! - [`assert_close_rel`] — `max |a − b| ≤ rtol · max |b|` (the whole-vector relative check);
//! - [`assert_close_elem`] — `|a_i − b_i| ≤ atol + rtol · |b_i|` for every `i`;
//! - [`max_abs_rel`] — `max |a − b| / max |b|` as a number (NaN-aware, panics on non-finite);
//! - [`max_abs`] — `max |v|`, panics on a non-finite value;
//! - [`needs_cpu`] — records a CPU-feature-gated test as run or skipped (a line `.ci/run` checks),
//!   so a kernel test that cannot run on this CPU is visible as a skip and never counted as passed.

use std::fmt;

/// Where two vectors differ most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diff {
    /// `max_i |a_i − b_i|`.
    pub max_abs: f64,
    /// The index of that maximum.
    pub at: usize,
    /// `max_i |b_i|` (the reference's scale).
    pub scale: f64,
}

/// Why two vectors cannot be compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Incomparable {
    Lengths { a: usize, b: usize },
    NonFinite { side: &'static str, at: usize, value: f64 },
}

impl fmt::Display for Incomparable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incomparable::Lengths { a, b } => write!(f, "lengths differ: {a} vs {b}"),
            Incomparable::NonFinite { side, at, value } => write!(f, "non-finite value {value} in {side} at index {at}"),
        }
    }
}

/// `max |a − b|` with its index and `max |b|`; an error on different lengths or on the first
/// non-finite value of `a` (the output under test) or `b` (the reference).
pub fn diff<A: Copy + Into<f64>, B: Copy + Into<f64>>(a: &[A], b: &[B]) -> Result<Diff, Incomparable> {
    if a.len() != b.len() {
        return Err(Incomparable::Lengths { a: a.len(), b: b.len() });
    }
    let mut d = Diff { max_abs: 0.0, at: 0, scale: 0.0 };
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y): (f64, f64) = (x.into(), y.into());
        if !x.is_finite() {
            return Err(Incomparable::NonFinite { side: "output", at: i, value: x });
        }
        if !y.is_finite() {
            return Err(Incomparable::NonFinite { side: "reference", at: i, value: y });
        }
        let e = (x - y).abs();
        if e > d.max_abs {
            d.max_abs = e;
            d.at = i;
        }
        d.scale = d.scale.max(y.abs());
    }
    Ok(d)
}

/// [`diff`], panicking with `what` and the reason when the vectors cannot be compared.
#[track_caller]
pub fn checked_diff<A: Copy + Into<f64>, B: Copy + Into<f64>>(what: &str, a: &[A], b: &[B]) -> Diff {
    diff(a, b).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `max |a − b| / max |b|` (the scale floored at 1e-30); panics, naming `what`, on a non-finite value.
#[track_caller]
pub fn max_abs_rel<A: Copy + Into<f64>, B: Copy + Into<f64>>(what: &str, a: &[A], b: &[B]) -> f64 {
    let d = diff(a, b).unwrap_or_else(|e| panic!("{what}: {e}"));
    d.max_abs / d.scale.max(1e-30)
}

/// `max |v|`; panics, naming `what` and the index, on a non-finite value.
#[track_caller]
pub fn max_abs<A: Copy + Into<f64>>(what: &str, v: &[A]) -> f64 {
    let mut m = 0.0f64;
    for (i, &x) in v.iter().enumerate() {
        let x: f64 = x.into();
        assert!(x.is_finite(), "{what}: non-finite value {x} at index {i}");
        m = m.max(x.abs());
    }
    m
}

/// Asserts `max |a − b| ≤ rtol · max(max |b|, floor)` with `floor = 1e-6`; non-finite values fail.
#[track_caller]
pub fn assert_close_rel<A: Copy + Into<f64>, B: Copy + Into<f64>>(what: &str, a: &[A], b: &[B], rtol: f64) {
    let d = diff(a, b).unwrap_or_else(|e| panic!("{what}: {e}"));
    let scale = d.scale.max(1e-6);
    assert!(
        d.max_abs <= rtol * scale,
        "{what}: max abs diff {:e} at index {} (max |ref| {:e}, rtol {rtol:e}: allowed {:e})",
        d.max_abs,
        d.at,
        d.scale,
        rtol * scale
    );
}

/// Asserts `|a_i − b_i| ≤ atol + rtol · |b_i|` for every `i`; non-finite values fail.
#[track_caller]
pub fn assert_close_elem<A: Copy + Into<f64>, B: Copy + Into<f64>>(what: &str, a: &[A], b: &[B], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y): (f64, f64) = (x.into(), y.into());
        assert!(x.is_finite(), "{what}: non-finite value {x} in output at index {i}");
        assert!(y.is_finite(), "{what}: non-finite value {y} in reference at index {i}");
        assert!((x - y).abs() <= atol + rtol * y.abs(), "{what}: element {i}: {x:e} vs {y:e} (atol {atol:e}, rtol {rtol:e})");
    }
}

/// Records whether a test that needs a CPU feature runs here, so that a skip is visible and
/// never counted as a pass: returns `available`; when it is false, prints
/// `SKIPPED: <test>: no <feature> on this CPU` to stderr. Either way, when `MOE_TEST_MARKERS` names
/// a directory, one line `RAN <feature> <test>` or `SKIPPED <feature> <test>` is appended to
/// `<dir>/markers`; `.ci/run` fails when the CPU has the feature (per `/proc/cpuinfo`) and its
/// tests did not all run. Features: `avx2` (with FMA), `avx512` (F/BW/VL), `avx512_vnni`, `avx512_bf16`.
///
/// ```ignore
/// if !moe_testutil::needs_cpu("avx512_vnni", "gemv::vnni_matches_twin", Kernel::Avx512Vnni.available()) {
///     return;
/// }
/// ```
pub fn needs_cpu(feature: &str, test: &str, available: bool) -> bool {
    let verdict = if available { "RAN" } else { "SKIPPED" };
    if !available {
        eprintln!("SKIPPED: {test}: no {feature} on this CPU");
    }
    if let Some(dir) = std::env::var_os("MOE_TEST_MARKERS") {
        use std::io::Write;
        let path = std::path::Path::new(&dir).join("markers");
        // one short line per O_APPEND write: lines of concurrent test processes do not interleave
        let line = format!("{verdict} {feature} {test}\n");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f.write_all(line.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    available
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panics(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
        std::panic::catch_unwind(f).is_err()
    }

    #[test]
    fn a_nan_or_inf_fails_every_helper() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let good = [1.0f32, 2.0, 3.0];
            let mut out = good;
            out[1] = bad;
            let all_bad = [bad; 3];
            for (a, b) in [(&out, &good), (&good, &out), (&all_bad, &good), (&all_bad, &all_bad)] {
                let (a, b) = (*a, *b);
                assert!(diff(&a, &b).is_err(), "diff accepted {a:?} vs {b:?}");
                assert!(
                    panics(move || {
                        checked_diff("t", &a, &b);
                    }),
                    "checked_diff accepted {a:?} vs {b:?}"
                );
                assert!(panics(move || assert_close_rel("t", &a, &b, 1e9)), "assert_close_rel accepted {a:?} vs {b:?}");
                assert!(panics(move || assert_close_elem("t", &a, &b, 1e9, 1e9)), "assert_close_elem accepted {a:?} vs {b:?}");
                assert!(
                    panics(move || {
                        max_abs_rel("t", &a, &b);
                    }),
                    "max_abs_rel accepted {a:?} vs {b:?}"
                );
            }
            assert!(panics(move || {
                max_abs("t", &out);
            }));
        }
    }

    #[test]
    fn the_error_names_the_index() {
        let e = diff(&[0.0f32, 0.0, f32::NAN], &[0.0f32; 3]).unwrap_err();
        assert!(matches!(e, Incomparable::NonFinite { side: "output", at: 2, value } if value.is_nan()), "{e:?}");
        assert!(e.to_string().contains("index 2"), "{e}");
        let e = diff(&[0.0f32; 2], &[0.0f32, f32::INFINITY]).unwrap_err();
        assert!(matches!(e, Incomparable::NonFinite { side: "reference", at: 1, .. }), "{e:?}");
    }

    #[test]
    fn close_values_pass_and_far_values_fail() {
        assert_close_rel("t", &[1.0f32, 2.0], &[1.0f64, 2.000001], 1e-5);
        assert!(panics(|| assert_close_rel("t", &[1.0f32, 2.1], &[1.0f32, 2.0], 1e-3)));
        assert_close_elem("t", &[1.0f64], &[1.0005f64], 1e-3, 0.0);
        assert!(panics(|| assert_close_elem("t", &[1.0f64], &[1.1f64], 1e-3, 1e-3)));
        assert!(panics(|| assert_close_rel("t", &[1.0f32], &[1.0f32, 2.0], 1.0)));
        let d = diff(&[1.0f32, 5.0, 2.0], &[1.0f32, 1.0, 2.5]).unwrap();
        assert_eq!((d.max_abs, d.at, d.scale), (4.0, 1, 2.5));
        assert!((max_abs_rel("t", &[1.0f32, 3.0], &[1.0f32, 2.0]) - 0.5).abs() < 1e-12);
    }
}

/// Mutation fuzzing on stable Rust: deterministic mutants of a real fixture file, generated with
/// [`arbitrary::Unstructured`] over a fixed-seed byte stream, for tests that assert a loader
/// answers every one with a clean `Err` or a valid load, never a panic.
pub mod mutate {
    use arbitrary::Unstructured;

    /// SplitMix64 bytes: the entropy `arbitrary` draws from (fixed seed → the same mutants).
    fn entropy(seed: u64, n: usize) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out
    }

    const HUGE: &[&str] = &[
        "18446744073709551616",
        "9223372036854775807",
        "4294967296",
        "-1",
        "1e308",
        "-0",
        "1e-320",
        "NaN",
        "inf",
        "0",
        "65536",
        "2147483648",
        "\"x\"",
        "true",
        "null",
        "[]",
        "{}",
        "[1,2]",
    ];

    /// One mutant of `base`; `hot` bytes at the start (a safetensors header, a whole text file)
    /// are where most edits land. 1–3 edits: bit flips, random bytes, truncation, a huge or
    /// wrong-typed token in place of a number or string, a duplicated or deleted span
    /// (duplicated keys), a random little-endian u64 (offsets and lengths out of range).
    pub fn mutant(base: &[u8], hot: usize, u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
        let mut v = base.to_vec();
        let edits = u.int_in_range(1..=3)?;
        for _ in 0..edits {
            if v.is_empty() {
                let n = u.int_in_range(0..=8)?;
                v.extend_from_slice(u.bytes(n)?);
                continue;
            }
            let span = if u.ratio(7, 10)? { hot.clamp(1, v.len()) } else { v.len() };
            let at = u.int_in_range(0..=span - 1)?;
            match u.int_in_range(0..=7)? {
                0 => v[at] ^= 1 << u.int_in_range(0..=7)?,
                1 => v[at] = u.arbitrary()?,
                2 => v.truncate(at),
                3 => {
                    // replace the token (a run of digits/letters/quotes) at `at` with a huge or wrong-typed one
                    let is_tok = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'"' || b == b'_';
                    let (mut s, mut e) = (at, at);
                    while s > 0 && is_tok(v[s - 1]) {
                        s -= 1;
                    }
                    while e < v.len() && is_tok(v[e]) {
                        e += 1;
                    }
                    let t = HUGE[u.choose_index(HUGE.len())?];
                    v.splice(s..e, t.bytes());
                }
                4 => {
                    // duplicate a span (e.g. a `"key": value,` pair)
                    let len = u.int_in_range(1..=64usize)?.min(v.len() - at);
                    let dup = v[at..at + len].to_vec();
                    v.splice(at..at, dup);
                }
                5 => {
                    let len = u.int_in_range(1..=64usize)?.min(v.len() - at);
                    v.drain(at..at + len);
                }
                6 => {
                    let x: u64 = if u.arbitrary()? { u.arbitrary()? } else { u.int_in_range(0..=1u64 << 40)? };
                    let end = (at + 8).min(v.len());
                    v[at..end].copy_from_slice(&x.to_le_bytes()[..end - at]);
                }
                _ => {
                    let n = u.int_in_range(1..=16)?;
                    let bytes = u.bytes(n)?.to_vec();
                    v.splice(at..at, bytes);
                }
            }
        }
        Ok(v)
    }

    /// `n` mutants of `base` from `seed` (see [`mutant`]).
    pub fn mutants(base: &[u8], hot: usize, seed: u64, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let e = entropy(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407), 256);
                let mut u = Unstructured::new(&e);
                mutant(base, hot, &mut u).unwrap_or_else(|_| base[..base.len() / 2].to_vec())
            })
            .collect()
    }

    /// Feeds every mutant to `load` (which returns whether it loaded: `Ok` → true), catching
    /// panics; returns `(loaded, refused)` or panics listing the inputs that panicked.
    pub fn survive<E>(what: &str, inputs: &[Vec<u8>], mut load: impl FnMut(&[u8]) -> Result<(), E>) -> (usize, usize) {
        let (mut ok, mut err, mut panics) = (0, 0, Vec::new());
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        for (i, x) in inputs.iter().enumerate() {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(x))) {
                Ok(Ok(())) => ok += 1,
                Ok(Err(_)) => err += 1,
                Err(p) => {
                    let msg =
                        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                    panics.push(format!("mutant {i}: {msg}"));
                }
            }
        }
        std::panic::set_hook(prev);
        eprintln!("fuzz {what}: {} mutants: {ok} loaded, {err} refused with an error, {} panicked", inputs.len(), panics.len());
        assert!(panics.is_empty(), "fuzz {what}: {} of {} mutants panicked:\n{}", panics.len(), inputs.len(), panics.join("\n"));
        (ok, err)
    }
}
