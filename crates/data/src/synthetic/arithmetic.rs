//! The `arithmetic` domain: one exercise with its correct answer per line, e.g. `417+2986=3403`.
//!
//! Operands of addition and subtraction have 1–4 digits (length drawn first, so short and long
//! numbers are equally common); multiplication uses 1–3 by 1–2 digits. Subtraction never goes
//! negative. Predicting the answers requires learning carries and borrows.

use moe_kernels::rng::Rng;

use super::range;

/// A number with a uniformly chosen digit count in `1..=max_digits`, uniform within that count.
fn number(rng: &mut Rng, max_digits: u32) -> u64 {
    let digits = range(rng, 1, max_digits as u64) as u32;
    let lo = if digits == 1 { 0 } else { 10u64.pow(digits - 1) };
    range(rng, lo, 10u64.pow(digits) - 1)
}

/// One exercise line (with trailing newline).
fn line(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=3 => {
            let (a, b) = (number(rng, 4), number(rng, 4));
            format!("{a}+{b}={}\n", a + b)
        }
        4..=6 => {
            let (a, b) = (number(rng, 4), number(rng, 4));
            let (a, b) = if a >= b { (a, b) } else { (b, a) };
            format!("{a}-{b}={}\n", a - b)
        }
        _ => {
            let (a, b) = (number(rng, 3), number(rng, 2));
            format!("{a}*{b}={}\n", a * b)
        }
    }
}

/// A document of exercise lines, stopping once it reaches `target` bytes.
pub(super) fn document(rng: &mut Rng, target: usize) -> String {
    let mut s = String::with_capacity(target + 16);
    while s.len() < target {
        s.push_str(&line(rng));
    }
    s
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Check every line of an arithmetic document; returns the number of lines checked.
    pub(in crate::synthetic) fn check_document(doc: &str) -> usize {
        let mut n = 0;
        for l in doc.lines() {
            let (lhs, rhs) = l.split_once('=').unwrap_or_else(|| panic!("no '=' in {l:?}"));
            let op_pos = lhs.find(['+', '-', '*']).unwrap_or_else(|| panic!("no operator in {l:?}"));
            let a: u64 = lhs[..op_pos].parse().unwrap();
            let b: u64 = lhs[op_pos + 1..].parse().unwrap();
            let c: u64 = rhs.parse().unwrap();
            let expected = match &lhs[op_pos..op_pos + 1] {
                "+" => a + b,
                "-" => a - b,
                _ => a * b,
            };
            assert_eq!(c, expected, "wrong answer in {l:?}");
            n += 1;
        }
        n
    }

    #[test]
    fn arithmetic_document_answers_are_correct() {
        let mut rng = Rng::new(11);
        let mut lines = 0;
        for _ in 0..200 {
            let doc = document(&mut rng, 300);
            assert!(doc.len() >= 300 && doc.ends_with('\n'));
            lines += check_document(&doc);
        }
        assert!(lines > 2000);
    }

    #[test]
    fn arithmetic_number_digit_lengths_all_occur() {
        let mut rng = Rng::new(2);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let n = number(&mut rng, 4);
            assert!(n < 10_000);
            seen[n.to_string().len()] = true;
        }
        assert_eq!(seen, [false, true, true, true, true]);
    }

    #[test]
    fn arithmetic_line_uses_all_operators() {
        let mut rng = Rng::new(3);
        let text: String = (0..300).map(|_| line(&mut rng)).collect();
        for op in ['+', '-', '*'] {
            assert!(text.contains(op), "operator {op} never generated");
        }
    }
}
