//! The `recall` domain: random `key=value` pairs, then `?key->value` queries on earlier keys.
//!
//! Keys are 3–4 random lowercase letters (unique within a document), values random numbers below
//! 10000. A query's answer can only be predicted by finding its key earlier in the document,
//! up to a few hundred bytes back.

use moe_kernels::rng::Rng;

use super::range;

/// A document of about `target` bytes: `n` pairs and `n` queries.
pub(super) fn document(rng: &mut Rng, target: usize) -> String {
    // A pair line is ~9 bytes and a query line ~11, so ~20 bytes per pair+query.
    let n = (target / 20).clamp(6, 24);
    let mut keys: Vec<String> = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    while keys.len() < n {
        let len = range(rng, 3, 4) as usize;
        let key: String = (0..len).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
        if !keys.contains(&key) {
            keys.push(key);
            values.push(rng.below(10_000));
        }
    }
    let mut s = String::with_capacity(n * 22);
    for (k, v) in keys.iter().zip(&values) {
        s.push_str(&format!("{k}={v}\n"));
    }
    for _ in 0..n {
        let i = rng.below(n as u64) as usize;
        s.push_str(&format!("?{}->{}\n", keys[i], values[i]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn recall_queries_answerable_from_earlier_pairs() {
        let mut rng = Rng::new(8);
        let mut n_queries = 0;
        for _ in 0..200 {
            let doc = document(&mut rng, 400);
            let mut seen: HashMap<&str, &str> = HashMap::new();
            let mut in_queries = false;
            for line in doc.lines() {
                if let Some(q) = line.strip_prefix('?') {
                    in_queries = true;
                    let (k, v) = q.split_once("->").unwrap();
                    assert_eq!(seen.get(k), Some(&v), "query {line:?} not answerable");
                    n_queries += 1;
                } else {
                    assert!(!in_queries, "pair after queries");
                    let (k, v) = line.split_once('=').unwrap();
                    assert!((3..=4).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_lowercase()));
                    assert!(v.parse::<u32>().unwrap() < 10_000);
                    assert!(seen.insert(k, v).is_none(), "duplicate key {k}");
                }
            }
        }
        assert!(n_queries >= 200 * 6);
    }

    #[test]
    fn recall_document_length_tracks_target() {
        let mut rng = Rng::new(1);
        let short = document(&mut rng, 200).len();
        let long = document(&mut rng, 480).len();
        assert!(short < long, "{short} {long}");
        assert!((100..=400).contains(&short) && (250..=800).contains(&long), "{short} {long}");
    }
}
