//! The `formal` domain: lines of a small formal language whose closing part is determined by
//! the opening part.
//!
//! Two line kinds: balanced bracket sequences over `()`, `[]`, `{}`, `<>` nested up to depth 8
//! (after each opening, the model must remember which bracket to close), and reversals
//! `word|drow` of 3–10 random letters.

use moe_kernels::rng::Rng;

use super::range;

const OPEN: [u8; 4] = [b'(', b'[', b'{', b'<'];
const CLOSE: [u8; 4] = [b')', b']', b'}', b'>'];
const MAX_DEPTH: usize = 8;

/// A balanced bracket sequence with 2–20 bracket pairs.
fn brackets(rng: &mut Rng, out: &mut String) {
    let mut opens_left = range(rng, 2, 20);
    let mut stack: Vec<usize> = Vec::with_capacity(MAX_DEPTH);
    while opens_left > 0 || !stack.is_empty() {
        let open = opens_left > 0 && (stack.is_empty() || (stack.len() < MAX_DEPTH && rng.uniform() < 0.55));
        if open {
            let k = rng.below(4) as usize;
            out.push(OPEN[k] as char);
            stack.push(k);
            opens_left -= 1;
        } else if let Some(k) = stack.pop() {
            out.push(CLOSE[k] as char);
        }
    }
    out.push('\n');
}

/// A `word|drow` reversal line.
fn reversal(rng: &mut Rng, out: &mut String) {
    let n = range(rng, 3, 10) as usize;
    let word: Vec<u8> = (0..n).map(|_| b'a' + rng.below(26) as u8).collect();
    out.extend(word.iter().map(|&b| b as char));
    out.push('|');
    out.extend(word.iter().rev().map(|&b| b as char));
    out.push('\n');
}

/// A document of formal-language lines, stopping once it reaches `target` bytes.
pub(super) fn document(rng: &mut Rng, target: usize) -> String {
    let mut s = String::with_capacity(target + 48);
    while s.len() < target {
        if rng.below(3) == 0 {
            reversal(rng, &mut s);
        } else {
            brackets(rng, &mut s);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_balanced(line: &str) -> bool {
        let mut stack = Vec::new();
        for b in line.bytes() {
            if let Some(k) = OPEN.iter().position(|&o| o == b) {
                stack.push(k);
            } else if let Some(k) = CLOSE.iter().position(|&c| c == b) {
                if stack.pop() != Some(k) {
                    return false;
                }
            } else {
                return false;
            }
            if stack.len() > MAX_DEPTH {
                return false;
            }
        }
        stack.is_empty()
    }

    #[test]
    fn formal_document_lines_are_balanced_or_exact_reversals() {
        let mut rng = Rng::new(5);
        let (mut n_brackets, mut n_reversals) = (0, 0);
        for _ in 0..100 {
            let doc = document(&mut rng, 400);
            for line in doc.lines() {
                if let Some((w, r)) = line.split_once('|') {
                    assert_eq!(w.chars().rev().collect::<String>(), r, "bad reversal {line:?}");
                    assert!((3..=10).contains(&w.len()));
                    n_reversals += 1;
                } else {
                    assert!(is_balanced(line), "unbalanced {line:?}");
                    n_brackets += 1;
                }
            }
        }
        assert!(n_brackets > 500 && n_reversals > 200, "{n_brackets} {n_reversals}");
    }

    #[test]
    fn formal_is_balanced_rejects_mismatch() {
        assert!(is_balanced("([]{<>})"));
        assert!(!is_balanced("([)]"));
        assert!(!is_balanced("(("));
    }
}
