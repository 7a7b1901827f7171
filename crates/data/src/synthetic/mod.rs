//! The built-in synthetic corpus: six domains of ASCII text generated from a seed.
//!
//! It needs nothing outside the binary and is built so that a small byte-level model keeps
//! improving for millions of tokens, while each domain has a clearly different structure (which
//! makes expert specialisation visible):
//! - `arithmetic`: `a+b=c`, `a-b=c`, `a*b=c` lines with correct answers (carries, borrows);
//! - `formal`: balanced bracket sequences over four bracket kinds, and `word|drow` reversals —
//!   the closing part is determined by the opening part;
//! - `recall`: random `key=value` pairs followed by `?key->value` queries answerable only by
//!   looking back in the document;
//! - `records`: CSV or JSON rows with a fixed schema whose fields depend on each other;
//! - `prose`: sentences from a small probabilistic grammar with number agreement;
//! - `facts`: statements about a fixed world of invented people (city, birth year, job, pet)
//!   that recur across documents — predictable only from what the weights have stored.
//!
//! Documents are a few hundred bytes each. Domains are interleaved at random while keeping their
//! byte totals within a few KB of each other, so shares are balanced at any corpus size.

mod arithmetic;
mod facts;
mod formal;
mod prose;
mod recall;
mod records;

use moe_kernels::rng::Rng;

use crate::corpus::Document;

/// The synthetic domains, in the order of their generator streams.
pub const DOMAINS: [&str; 6] = ["arithmetic", "formal", "recall", "records", "prose", "facts"];

/// A domain may be chosen only while its byte total is within this many bytes of the smallest.
const BALANCE_SLACK: usize = 2048;

/// Documents are aimed at a length drawn uniformly from this range (bytes).
const DOC_LEN: (u64, u64) = (200, 600);

/// Generate documents until their total text length is at least `n_bytes` (none for 0).
///
/// Each document's `domain` is `Some` of one of [`DOMAINS`]. The same seed always gives the same
/// documents, and each domain draws from its own random stream.
pub fn generate(seed: u64, n_bytes: usize) -> Vec<Document> {
    let mut mix = Rng::derive(seed, 0);
    let mut streams: [Rng; 6] = std::array::from_fn(|d| Rng::derive(seed, d as u64 + 1));
    let world = facts::World::new(&mut Rng::derive(seed, 100));
    let mut bytes = [0usize; 6];
    let mut total = 0usize;
    let mut docs = Vec::new();
    while total < n_bytes {
        let min = bytes.iter().copied().min().unwrap_or(0);
        let mut eligible = [0usize; 6];
        let mut n_eligible = 0;
        for (d, &b) in bytes.iter().enumerate() {
            if b <= min + BALANCE_SLACK {
                eligible[n_eligible] = d;
                n_eligible += 1;
            }
        }
        let d = eligible[mix.below(n_eligible as u64) as usize];
        let target = range(&mut mix, DOC_LEN.0, DOC_LEN.1) as usize;
        let text = generate_domain(d, &mut streams[d], target, &world);
        bytes[d] += text.len();
        total += text.len();
        docs.push(Document::new(text, Some(DOMAINS[d].to_string())));
    }
    docs
}

/// One document of domain index `d` (into [`DOMAINS`]) of about `target` bytes.
fn generate_domain(d: usize, rng: &mut Rng, target: usize, world: &facts::World) -> String {
    match d {
        0 => arithmetic::document(rng, target),
        1 => formal::document(rng, target),
        2 => recall::document(rng, target),
        3 => records::document(rng, target),
        4 => prose::document(rng, target),
        _ => facts::document(world, rng, target),
    }
}

/// Uniform integer in `lo..=hi`.
fn range(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.below(hi - lo + 1)
}

/// A uniformly chosen item.
fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

/// An index in `0..n` skewed towards small values (density ∝ 1/√x), for Zipf-like word use.
fn skewed_index(rng: &mut Rng, n: usize) -> usize {
    let u = rng.uniform();
    ((u * u * n as f64) as usize).min(n - 1)
}

/// An item chosen with [`skewed_index`]: earlier items are more frequent.
fn pick_skewed<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[skewed_index(rng, items.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(docs: &[Document]) -> String {
        docs.iter().map(|d| d.text.as_str()).collect()
    }

    #[test]
    fn generate_same_seed_same_text_different_seed_different() {
        let a = generate(42, 50_000);
        let b = generate(42, 50_000);
        let c = generate(43, 50_000);
        assert_eq!(a, b);
        assert_ne!(concat(&a), concat(&c));
    }

    #[test]
    fn generate_reaches_size_with_ascii_domain_tagged_documents() {
        let docs = generate(1, 30_000);
        let total: usize = docs.iter().map(|d| d.text.len()).sum();
        assert!(total >= 30_000);
        let last = docs.last().unwrap().text.len();
        assert!(total - last < 30_000, "generated more documents than needed");
        for d in &docs {
            assert!(d.text.is_ascii());
            assert!(!d.text.is_empty());
            assert!(DOMAINS.contains(&d.domain.as_deref().unwrap()));
        }
        assert!(generate(1, 0).is_empty());
    }

    #[test]
    fn generate_domains_balanced_and_interleaved() {
        let docs = generate(7, 300_000);
        let mut bytes = [0usize; DOMAINS.len()];
        for d in &docs {
            let i = DOMAINS.iter().position(|&n| Some(n) == d.domain.as_deref()).unwrap();
            bytes[i] += d.text.len();
        }
        let total: usize = bytes.iter().sum();
        for (name, b) in DOMAINS.iter().zip(bytes) {
            let share = b as f64 / total as f64;
            assert!((share - 1.0 / DOMAINS.len() as f64).abs() < 0.02, "{name} share {share}");
        }
        // Interleaved: no long run of one domain.
        let mut run = 1;
        let mut longest = 1;
        for w in docs.windows(2) {
            run = if w[0].domain == w[1].domain { run + 1 } else { 1 };
            longest = longest.max(run);
        }
        assert!(longest <= 12, "longest single-domain run {longest}");
        let first: std::collections::HashSet<_> = docs[..20].iter().map(|d| d.domain.clone()).collect();
        assert!(first.len() >= 4, "first 20 documents cover only {} domains", first.len());
    }

    #[test]
    fn generate_document_lengths_are_a_few_hundred_bytes() {
        let docs = generate(3, 100_000);
        let mean = docs.iter().map(|d| d.text.len()).sum::<usize>() as f64 / docs.len() as f64;
        assert!((200.0..=700.0).contains(&mean), "mean document length {mean}");
        assert!(docs.iter().all(|d| d.text.len() < 2000));
    }

    #[test]
    fn generate_arithmetic_documents_have_correct_answers() {
        let docs = generate(9, 50_000);
        let n: usize =
            docs.iter().filter(|d| d.domain.as_deref() == Some("arithmetic")).map(|d| arithmetic::tests::check_document(&d.text)).sum();
        assert!(n > 300, "only {n} arithmetic lines");
    }

    #[test]
    fn skewed_index_favours_small_values_within_bounds() {
        let mut rng = Rng::new(0);
        let mut counts = [0usize; 10];
        for _ in 0..10_000 {
            counts[skewed_index(&mut rng, 10)] += 1;
        }
        assert!(counts[0] > counts[9] * 3, "{counts:?}");
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }
}
