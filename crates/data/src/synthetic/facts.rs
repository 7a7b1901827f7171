//! The `facts` domain: statements about a fixed world of invented people, drawn from the corpus
//! seed once and repeated across documents (`Dorava Kelstin lives in Maruvel.`).
//!
//! Unlike `recall`, where the answer is in the document, a fact here can only be predicted from
//! what the model has stored in its weights, so this domain rewards parameters — the capacity an
//! MoE adds without adding compute per token. People are mentioned with a skewed (Zipf-like)
//! frequency, so frequent facts are learned early and rare ones keep the loss falling.

use moe_kernels::rng::Rng;

use super::{pick, range};

/// People in the world.
const N_PEOPLE: usize = 600;
/// Invented city names.
const N_CITIES: usize = 48;

const ONSETS: [&str; 20] = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr", "sh"];
const VOWELS: [&str; 7] = ["a", "e", "i", "o", "u", "ai", "ou"];
const CODAS: [&str; 8] = ["", "", "", "n", "r", "l", "s", "th"];

const JOBS: [&str; 24] = [
    "baker", "potter", "weaver", "sailor", "miller", "mason", "scribe", "healer", "smith", "tanner", "carver", "fisher", "farmer",
    "glazier", "cooper", "chandler", "brewer", "tailor", "roofer", "dyer", "jeweler", "saddler", "printer", "builder",
];

const ANIMALS: [&str; 12] = ["cat", "dog", "goat", "horse", "owl", "crow", "fox", "hare", "pig", "duck", "mule", "lynx"];

struct Person {
    name: String,
    city: usize,
    year: u64,
    job: &'static str,
    animal: &'static str,
}

/// The invented world of one corpus.
pub(super) struct World {
    people: Vec<Person>,
    cities: Vec<String>,
}

fn word(rng: &mut Rng, syllables: u64) -> String {
    let mut w = String::new();
    for _ in 0..syllables {
        w.push_str(pick(rng, &ONSETS));
        w.push_str(pick(rng, &VOWELS));
        w.push_str(pick(rng, &CODAS));
    }
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => w,
    }
}

impl World {
    /// Draw the world from its own random stream.
    pub(super) fn new(rng: &mut Rng) -> Self {
        let cities = (0..N_CITIES)
            .map(|_| {
                let n = range(rng, 2, 3);
                word(rng, n)
            })
            .collect();
        let people = (0..N_PEOPLE)
            .map(|_| Person {
                name: {
                    let n = range(rng, 2, 3);
                    let first = word(rng, n);
                    format!("{first} {}", word(rng, 2))
                },
                city: rng.below(N_CITIES as u64) as usize,
                year: range(rng, 1700, 1999),
                job: pick(rng, &JOBS),
                animal: pick(rng, &ANIMALS),
            })
            .collect();
        World { people, cities }
    }

    fn statement(&self, rng: &mut Rng) -> String {
        // Zipf-like: P(index < x) = (x / N)^(1/3), so a head of people recurs often
        let u = rng.uniform();
        let p = &self.people[((u * u * u * N_PEOPLE as f64) as usize).min(N_PEOPLE - 1)];
        let city = &self.cities[p.city];
        match rng.below(5) {
            0 => format!("{} lives in {}.", p.name, city),
            1 => format!("{} was born in {}.", p.name, p.year),
            2 => format!("{} works as a {}.", p.name, p.job),
            3 => format!("{} keeps a {}.", p.name, p.animal),
            _ => format!("{}, the {} from {}, was born in {}.", p.name, p.job, city, p.year),
        }
    }
}

/// One document of about `target` bytes: facts about people of `world`, one per line.
pub(super) fn document(world: &World, rng: &mut Rng, target: usize) -> String {
    let mut out = String::new();
    while out.len() < target {
        out.push_str(&world.statement(rng));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_repeat_consistently_across_documents() {
        let world = World::new(&mut Rng::new(1));
        let mut rng = Rng::new(2);
        let text: String = (0..200).map(|_| document(&world, &mut rng, 400)).collect();
        // every "lives in" statement about one person names the same city
        let mut seen = std::collections::HashMap::new();
        let mut repeats = 0;
        for line in text.lines() {
            if let Some((name, city)) = line.strip_suffix('.').and_then(|l| l.split_once(" lives in ")) {
                if let Some(prev) = seen.insert(name.to_string(), city.to_string()) {
                    assert_eq!(prev, city, "{name} moved");
                    repeats += 1;
                }
            }
        }
        assert!(repeats > 50, "facts should recur across documents, got {repeats} repeats");
        assert!(text.is_ascii());
    }
}
