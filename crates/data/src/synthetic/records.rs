//! The `records` domain: rows of a fixed schema `name, age, city, job, score`, as CSV (with a
//! header line) or as JSON objects, one per line.
//!
//! Fields depend on each other so there is structure to learn: the job sets the age range
//! (students are young, retirees old), cities follow a skewed distribution, and the score is a
//! job-specific base plus a city-specific offset plus small noise.

use moe_kernels::rng::Rng;

use super::{pick, range, skewed_index};

const NAMES: [&str; 40] = [
    "ada", "alan", "anna", "ben", "carla", "chen", "dara", "david", "elena", "emil", "farah", "felix", "grace", "hana", "ivan", "jonas",
    "kai", "lara", "leo", "lina", "marco", "maya", "nadia", "noah", "olga", "omar", "paula", "priya", "quinn", "rosa", "sami", "sara",
    "tariq", "tom", "uma", "vera", "wei", "yara", "yusuf", "zoe",
];

/// Cities, most frequent first, with each city's score offset.
const CITIES: [(&str, i64); 16] = [
    ("london", 4),
    ("paris", 2),
    ("tokyo", 6),
    ("berlin", 0),
    ("madrid", -2),
    ("rome", -3),
    ("oslo", 5),
    ("lagos", 1),
    ("lima", -4),
    ("cairo", -1),
    ("seoul", 7),
    ("delhi", 3),
    ("quito", -5),
    ("perth", 2),
    ("kyiv", 0),
    ("hanoi", -2),
];

/// Jobs with (min age, max age, base score).
const JOBS: [(&str, u64, u64, i64); 10] = [
    ("student", 18, 25, 62),
    ("teacher", 24, 64, 71),
    ("nurse", 22, 63, 68),
    ("engineer", 23, 64, 77),
    ("baker", 19, 66, 55),
    ("pilot", 26, 60, 83),
    ("farmer", 20, 75, 52),
    ("artist", 18, 80, 60),
    ("doctor", 28, 70, 86),
    ("retired", 65, 94, 48),
];

/// One record's fields.
struct Record {
    name: &'static str,
    age: u64,
    city: &'static str,
    job: &'static str,
    score: i64,
}

fn record(rng: &mut Rng) -> Record {
    let name = pick(rng, &NAMES);
    let (job, lo, hi, base) = JOBS[rng.below(JOBS.len() as u64) as usize];
    let age = range(rng, lo, hi);
    let (city, offset) = CITIES[skewed_index(rng, CITIES.len())];
    let noise = range(rng, 0, 12) as i64 - 6;
    let score = (base + offset + noise).clamp(0, 100);
    Record { name, age, city, job, score }
}

/// A document of rows in one format, stopping once it reaches `target` bytes.
pub(super) fn document(rng: &mut Rng, target: usize) -> String {
    let csv = rng.below(2) == 0;
    let mut s = String::with_capacity(target + 80);
    if csv {
        s.push_str("name,age,city,job,score\n");
    }
    while s.len() < target {
        let r = record(rng);
        if csv {
            s.push_str(&format!("{},{},{},{},{}\n", r.name, r.age, r.city, r.job, r.score));
        } else {
            s.push_str(&format!(
                "{{\"name\":\"{}\",\"age\":{},\"city\":\"{}\",\"job\":\"{}\",\"score\":{}}}\n",
                r.name, r.age, r.city, r.job, r.score
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the field dependencies of one row given as (age, city, job, score).
    fn check_row(age: u64, city: &str, job: &str, score: i64) {
        let &(_, lo, hi, base) = JOBS.iter().find(|j| j.0 == job).unwrap();
        assert!((lo..=hi).contains(&age), "{job} aged {age}");
        let offset = CITIES.iter().find(|c| c.0 == city).unwrap().1;
        assert!((score - base - offset).abs() <= 6, "{job} in {city} scored {score}");
    }

    #[test]
    fn records_rows_follow_schema_and_dependencies() {
        let mut rng = Rng::new(4);
        let (mut n_csv, mut n_json) = (0, 0);
        for _ in 0..100 {
            let doc = document(&mut rng, 400);
            let mut lines = doc.lines();
            let first = lines.clone().next().unwrap();
            if first == "name,age,city,job,score" {
                lines.next();
                for l in lines {
                    let f: Vec<&str> = l.split(',').collect();
                    assert_eq!(f.len(), 5, "{l:?}");
                    assert!(NAMES.contains(&f[0]));
                    check_row(f[1].parse().unwrap(), f[2], f[3], f[4].parse().unwrap());
                    n_csv += 1;
                }
            } else {
                for l in lines {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    check_row(
                        v["age"].as_u64().unwrap(),
                        v["city"].as_str().unwrap(),
                        v["job"].as_str().unwrap(),
                        v["score"].as_i64().unwrap(),
                    );
                    assert!(NAMES.contains(&v["name"].as_str().unwrap()));
                    n_json += 1;
                }
            }
        }
        assert!(n_csv > 100 && n_json > 100, "{n_csv} {n_json}");
    }
}
