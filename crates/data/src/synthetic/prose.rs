//! The `prose` domain: paragraphs from a small probabilistic grammar with number agreement.
//!
//! Sentences have a subject noun phrase (determiner, optional adjectives, noun, optional
//! prepositional phrase or relative clause), and a verb phrase whose verb agrees with the subject
//! in number — also across an intervening relative clause ("the dog that the cats chase runs").
//! Determiners agree with their noun ("these cats", "a dog", "an owl"), and copular sentences use
//! "is"/"are". Words are drawn with a Zipf-like skew from a vocabulary of about 300 words.

use std::sync::OnceLock;

use moe_kernels::rng::Rng;

use super::{pick, pick_skewed, skewed_index};

const NOUNS: [&str; 90] = [
    "cat", "dog", "bird", "horse", "fox", "wolf", "child", "teacher", "farmer", "king", "queen", "girl", "boy", "man", "woman", "person",
    "mouse", "river", "city", "tree", "house", "box", "church", "garden", "village", "mountain", "forest", "road", "ship", "boat",
    "bridge", "castle", "tower", "door", "window", "table", "chair", "book", "letter", "song", "story", "lamp", "key", "coin", "stone",
    "apple", "bread", "cake", "cup", "bottle", "basket", "wheel", "engine", "machine", "robot", "doctor", "nurse", "pilot", "sailor",
    "soldier", "student", "baby", "lady", "family", "friend", "neighbor", "stranger", "merchant", "painter", "singer", "dancer", "poet",
    "clock", "mirror", "candle", "flower", "leaf", "wall", "field", "cloud", "star", "storm", "island", "lake", "valley", "hill", "owl",
    "eagle", "uncle", "artist",
];

/// Plurals that do not follow the spelling rules in [`plural`].
const IRREGULAR_PLURALS: [(&str, &str); 7] = [
    ("wolf", "wolves"),
    ("child", "children"),
    ("man", "men"),
    ("woman", "women"),
    ("person", "people"),
    ("mouse", "mice"),
    ("leaf", "leaves"),
];

const TRANSITIVE: [&str; 52] = [
    "see", "chase", "find", "follow", "love", "help", "watch", "carry", "build", "paint", "push", "pull", "catch", "fix", "wash", "teach",
    "visit", "greet", "call", "open", "close", "hold", "lift", "throw", "kick", "hide", "miss", "touch", "know", "like", "hate", "need",
    "want", "bring", "take", "keep", "ignore", "draw", "read", "write", "sell", "buy", "steal", "guard", "feed", "clean", "cover", "move",
    "admire", "trust", "fear", "study",
];

const INTRANSITIVE: [&str; 20] = [
    "sleep", "run", "walk", "sing", "dance", "laugh", "cry", "wait", "smile", "shout", "swim", "fall", "rest", "work", "play", "listen",
    "jump", "wander", "hurry", "vanish",
];

const ADJECTIVES: [&str; 60] = [
    "big", "small", "old", "young", "red", "blue", "green", "happy", "sad", "quiet", "loud", "bright", "dark", "tall", "short", "quick",
    "slow", "brave", "clever", "gentle", "angry", "calm", "cold", "warm", "heavy", "light", "strange", "famous", "tiny", "huge", "ancient",
    "hungry", "tired", "lucky", "honest", "proud", "shy", "wild", "golden", "silver", "wooden", "empty", "busy", "lazy", "kind", "cruel",
    "rich", "poor", "sleepy", "noisy", "curious", "eager", "fierce", "grey", "purple", "yellow", "bold", "dirty", "round", "narrow",
];

const ADVERBS: [&str; 24] = [
    "quickly",
    "slowly",
    "quietly",
    "loudly",
    "happily",
    "sadly",
    "often",
    "never",
    "always",
    "rarely",
    "gently",
    "bravely",
    "carefully",
    "suddenly",
    "eagerly",
    "calmly",
    "silently",
    "boldly",
    "softly",
    "proudly",
    "again",
    "now",
    "here",
    "there",
];

const PREPOSITIONS: [&str; 12] =
    ["near", "under", "behind", "beside", "with", "without", "above", "inside", "across", "beyond", "around", "past"];

const SINGULAR_DETERMINERS: [&str; 9] = ["the", "a", "this", "his", "every", "each", "one", "my", "our"];
const PLURAL_DETERMINERS: [&str; 11] = ["the", "these", "those", "some", "many", "two", "three", "few", "all", "my", "our"];

const CONJUNCTIONS: [&str; 5] = ["and", "but", "because", "while", "so"];

/// Inflected forms, computed once.
struct Lexicon {
    /// (singular, plural) per entry of [`NOUNS`].
    nouns: Vec<(&'static str, String)>,
    /// (base, third person singular) per entry of [`TRANSITIVE`].
    transitive: Vec<(&'static str, String)>,
    /// (base, third person singular) per entry of [`INTRANSITIVE`].
    intransitive: Vec<(&'static str, String)>,
}

fn lexicon() -> &'static Lexicon {
    static LEX: OnceLock<Lexicon> = OnceLock::new();
    LEX.get_or_init(|| Lexicon {
        nouns: NOUNS.iter().map(|&n| (n, plural(n))).collect(),
        transitive: TRANSITIVE.iter().map(|&v| (v, third_singular(v))).collect(),
        intransitive: INTRANSITIVE.iter().map(|&v| (v, third_singular(v))).collect(),
    })
}

fn consonant_y(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 2 && b[b.len() - 1] == b'y' && !b"aeiou".contains(&b[b.len() - 2])
}

fn sibilant(word: &str) -> bool {
    ["s", "x", "z", "ch", "sh"].iter().any(|e| word.ends_with(e))
}

/// Plural of a noun from [`NOUNS`].
fn plural(noun: &str) -> String {
    if let Some((_, p)) = IRREGULAR_PLURALS.iter().find(|(s, _)| *s == noun) {
        (*p).to_string()
    } else if consonant_y(noun) {
        format!("{}ies", &noun[..noun.len() - 1])
    } else if sibilant(noun) {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// Third person singular present of a verb.
fn third_singular(verb: &str) -> String {
    if consonant_y(verb) {
        format!("{}ies", &verb[..verb.len() - 1])
    } else if sibilant(verb) || verb.ends_with('o') {
        format!("{verb}es")
    } else {
        format!("{verb}s")
    }
}

/// Grammatical number of a noun phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Number {
    Singular,
    Plural,
}

fn number(rng: &mut Rng) -> Number {
    if rng.below(5) < 3 {
        Number::Singular
    } else {
        Number::Plural
    }
}

/// Builds one sentence as a list of words.
struct Sentence<'r> {
    rng: &'r mut Rng,
    words: Vec<&'static str>,
}

impl Sentence<'_> {
    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    /// Determiner, adjectives, noun, and optionally a prepositional phrase or (if `allow_rel`)
    /// a relative clause.
    fn noun_phrase(&mut self, num: Number, allow_rel: bool) {
        let lex = lexicon();
        let det = match num {
            Number::Singular => pick(self.rng, &SINGULAR_DETERMINERS),
            Number::Plural => pick(self.rng, &PLURAL_DETERMINERS),
        };
        let mut modifiers = Vec::new();
        if self.chance(50) {
            modifiers.push(pick_skewed(self.rng, &ADJECTIVES));
            if self.chance(20) {
                modifiers.push(pick_skewed(self.rng, &ADJECTIVES));
            }
        }
        let (sing, plur) = &lex.nouns[skewed_index(self.rng, lex.nouns.len())];
        let noun: &'static str = match num {
            Number::Singular => sing,
            Number::Plural => plur.as_str(),
        };
        let next = modifiers.first().copied().unwrap_or(noun);
        let det = if det == "a" && next.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { det };
        self.words.push(det);
        self.words.extend(modifiers);
        self.words.push(noun);
        let r = self.rng.below(100);
        if r < 20 {
            self.words.push(pick(self.rng, &PREPOSITIONS));
            let n = number(self.rng);
            self.noun_phrase(n, false);
        } else if allow_rel && r < 40 {
            self.words.push("that");
            if self.chance(50) {
                // Subject relative: the verb agrees with the head noun.
                self.verb_phrase(num);
            } else {
                // Object relative: the inner verb agrees with the inner subject.
                let inner = number(self.rng);
                self.noun_phrase(inner, false);
                self.verb(inner, true);
            }
        }
    }

    fn verb(&mut self, num: Number, transitive: bool) {
        let lex = lexicon();
        let forms = if transitive { &lex.transitive } else { &lex.intransitive };
        let (base, third) = &forms[skewed_index(self.rng, forms.len())];
        self.words.push(match num {
            Number::Singular => third.as_str(),
            Number::Plural => base,
        });
    }

    /// A verb agreeing with `num`, with its object or adverbial extras.
    fn verb_phrase(&mut self, num: Number) {
        if self.chance(65) {
            self.verb(num, true);
            let n = number(self.rng);
            self.noun_phrase(n, false);
            if self.chance(30) {
                self.words.push(pick(self.rng, &ADVERBS));
            }
        } else {
            self.verb(num, false);
            if self.chance(40) {
                self.words.push(pick(self.rng, &ADVERBS));
            }
            if self.chance(30) {
                self.words.push(pick(self.rng, &PREPOSITIONS));
                let n = number(self.rng);
                self.noun_phrase(n, false);
            }
        }
    }

    /// Subject and verb phrase.
    fn clause(&mut self) {
        let num = number(self.rng);
        self.noun_phrase(num, true);
        self.verb_phrase(num);
    }

    /// "<subject> is/are [very] <adjective>".
    fn copula(&mut self) {
        let num = number(self.rng);
        self.noun_phrase(num, true);
        self.words.push(if num == Number::Singular { "is" } else { "are" });
        if self.chance(20) {
            self.words.push("very");
        }
        self.words.push(pick_skewed(self.rng, &ADJECTIVES));
    }
}

/// One sentence, capitalised and ending with a period.
fn sentence(rng: &mut Rng, out: &mut String) {
    let mut s = Sentence { rng, words: Vec::with_capacity(24) };
    match s.rng.below(10) {
        0..=4 => s.clause(),
        5..=7 => {
            s.clause();
            let conj = pick(s.rng, &CONJUNCTIONS);
            s.words.push(",");
            s.words.push(conj);
            s.clause();
        }
        _ => s.copula(),
    }
    let start = out.len();
    for (i, w) in s.words.iter().enumerate() {
        if i > 0 && *w != "," {
            out.push(' ');
        }
        out.push_str(w);
    }
    out.push('.');
    out[start..start + 1].make_ascii_uppercase();
}

/// A paragraph of sentences, stopping once it reaches `target` bytes; ends with a newline.
pub(super) fn document(rng: &mut Rng, target: usize) -> String {
    let mut s = String::with_capacity(target + 160);
    while s.len() < target {
        if !s.is_empty() {
            s.push(' ');
        }
        sentence(rng, &mut s);
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn prose_inflection_follows_spelling_rules() {
        assert_eq!(plural("box"), "boxes");
        assert_eq!(plural("story"), "stories");
        assert_eq!(plural("key"), "keys");
        assert_eq!(plural("child"), "children");
        assert_eq!(plural("church"), "churches");
        assert_eq!(third_singular("carry"), "carries");
        assert_eq!(third_singular("watch"), "watches");
        assert_eq!(third_singular("play"), "plays");
        assert_eq!(third_singular("see"), "sees");
    }

    #[test]
    fn prose_word_classes_are_disjoint() {
        let lex = lexicon();
        let nouns: HashSet<&str> = lex.nouns.iter().flat_map(|(s, p)| [*s, p.as_str()]).collect();
        let verbs: HashSet<&str> = lex.transitive.iter().chain(&lex.intransitive).flat_map(|(b, t)| [*b, t.as_str()]).collect();
        let adjectives: HashSet<&str> = ADJECTIVES.into_iter().collect();
        let adverbs: HashSet<&str> = ADVERBS.into_iter().collect();
        let classes = [&nouns, &verbs, &adjectives, &adverbs];
        for (i, a) in classes.iter().enumerate() {
            for b in &classes[i + 1..] {
                assert!(a.is_disjoint(b), "{:?}", a.intersection(b).collect::<Vec<_>>());
            }
        }
        let n_words = nouns.len() / 2 + verbs.len() / 2 + ADJECTIVES.len() + ADVERBS.len() + PREPOSITIONS.len();
        assert!(n_words >= 250, "vocabulary of {n_words} words");
    }

    #[test]
    fn prose_copula_agrees_with_subject_number() {
        let lex = lexicon();
        let singular: HashSet<&str> = lex.nouns.iter().map(|(s, _)| *s).collect();
        let plural: HashSet<&str> = lex.nouns.iter().map(|(_, p)| p.as_str()).collect();
        let mut rng = Rng::new(12);
        let mut checked = 0;
        for _ in 0..500 {
            let mut s = Sentence { rng: &mut rng, words: Vec::new() };
            s.copula();
            // Without a post-modifier the head noun directly precedes the copula.
            let words = s.words;
            let cop = words.iter().position(|w| *w == "is" || *w == "are").unwrap();
            if words[..cop].iter().any(|w| *w == "that" || PREPOSITIONS.contains(w)) {
                continue;
            }
            let head = words[cop - 1];
            assert!(singular.contains(head) || plural.contains(head), "{words:?}");
            assert_eq!(words[cop], if singular.contains(head) { "is" } else { "are" }, "{words:?}");
            checked += 1;
        }
        assert!(checked > 200, "only {checked} sentences checked");
    }

    #[test]
    fn prose_subject_verb_agreement_holds_without_modifiers() {
        let lex = lexicon();
        let third: HashSet<&str> = lex.transitive.iter().chain(&lex.intransitive).map(|(_, t)| t.as_str()).collect();
        let base: HashSet<&str> = lex.transitive.iter().chain(&lex.intransitive).map(|(b, _)| *b).collect();
        let singular: HashSet<&str> = lex.nouns.iter().map(|(s, _)| *s).collect();
        let mut rng = Rng::new(13);
        let mut checked = 0;
        for _ in 0..500 {
            let mut s = Sentence { rng: &mut rng, words: Vec::new() };
            s.clause();
            // Subjects without a post-modifier are followed directly by their verb.
            let words = s.words;
            let Some(v) = words.iter().position(|w| third.contains(w) || base.contains(w)) else {
                panic!("no verb in {words:?}");
            };
            if words[..v].iter().any(|w| *w == "that" || PREPOSITIONS.contains(w)) {
                continue;
            }
            let head_singular = singular.contains(words[v - 1]);
            assert_eq!(third.contains(words[v]), head_singular, "{words:?}");
            checked += 1;
        }
        assert!(checked > 200, "only {checked} clauses checked");
    }

    #[test]
    fn prose_document_is_capitalised_ascii_sentences() {
        let mut rng = Rng::new(14);
        for _ in 0..50 {
            let doc = document(&mut rng, 300);
            assert!(doc.is_ascii() && doc.len() >= 300 && doc.ends_with(".\n"));
            for sent in doc.trim_end().split(". ") {
                assert!(sent.as_bytes()[0].is_ascii_uppercase(), "{sent:?}");
            }
            assert!(!doc.contains(" a a") && !doc.contains(" a e") && !doc.contains("A o"), "{doc}");
        }
    }
}
