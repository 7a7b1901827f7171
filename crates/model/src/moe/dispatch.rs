//! Dispatch: group the kept (token, slot) assignments by expert with a counting sort.

use super::router::Routing;

/// Assignments sorted by expert. Rows of expert `e` are `offsets[e]..offsets[e+1]`, in token order.
#[derive(Clone, Debug, Default)]
pub struct Dispatch {
    /// `[n_expert + 1]` row offsets
    pub offsets: Vec<usize>,
    /// token of each sorted row `[n_rows]`
    pub token: Vec<u32>,
    /// sorted row of each assignment `t·k + slot`, `u32::MAX` when dropped `[n_tok·k]`
    pub row_of: Vec<u32>,
}

impl Dispatch {
    /// Number of routed rows (kept assignments).
    pub fn n_rows(&self) -> usize {
        self.token.len()
    }
    /// Rows of expert `e`.
    pub fn rows(&self, e: usize) -> std::ops::Range<usize> {
        self.offsets[e]..self.offsets[e + 1]
    }
}

/// Build the dispatch of a routing decision.
pub fn dispatch<T>(r: &Routing<T>) -> Dispatch {
    let (e, k) = (r.settings.n_expert, r.settings.k);
    let mut offsets = vec![0usize; e + 1];
    for (a, &j) in r.idx.iter().enumerate() {
        if r.kept[a] {
            offsets[j as usize + 1] += 1;
        }
    }
    for i in 0..e {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let mut token = vec![0u32; offsets[e]];
    let mut row_of = vec![u32::MAX; r.idx.len()];
    for (a, &j) in r.idx.iter().enumerate() {
        if r.kept[a] {
            let row = next[j as usize];
            next[j as usize] += 1;
            token[row] = (a / k) as u32;
            row_of[a] = row as u32;
        }
    }
    Dispatch { offsets, token, row_of }
}
