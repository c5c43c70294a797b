// Each benchmark uses part of the corpus.
#![allow(dead_code)]

//! Generated chat text for the benchmarks: words drawn from a Zipf distribution over a vocabulary of common
//! English words followed by 20,000 synthetic words with realistic lengths (2 to 12 letters, mostly 3 to 7), and
//! one message in ten in Chinese (3,000 Han characters, also Zipf-distributed), some with a Latin word inside.

use rand::Rng;
use rand::rngs::StdRng;

const COMMON: &[&str] = &[
    "the", "to", "and", "a", "of", "in", "is", "it", "you", "that", "for", "on", "this", "we", "be", "at", "with",
    "have", "are", "i", "will", "not", "can", "as", "so", "but", "just", "from", "by", "or", "what", "all", "if", "do",
    "about", "get", "me", "they", "our", "my", "was", "up", "out", "an", "now", "one", "time", "there", "see", "when",
    "how", "more", "some", "new", "no", "like", "market", "price", "deal", "trade", "rate", "bond", "buy", "sell",
    "today", "call", "client", "desk", "risk", "book", "yield", "spread", "close", "open", "bid", "offer",
];

pub(crate) struct Corpus {
    words: Vec<String>,
    word_cdf: Vec<f64>,
    han: Vec<char>,
    han_cdf: Vec<f64>,
}

fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|rank| {
            acc += 1.0 / rank as f64;
            acc
        })
        .collect();
    for v in &mut cdf {
        *v /= acc;
    }
    cdf
}

fn pick(cdf: &[f64], rng: &mut StdRng) -> usize {
    let x: f64 = rng.r#gen();
    cdf.partition_point(|&c| c < x).min(cdf.len() - 1)
}

impl Corpus {
    pub(crate) fn new(rng: &mut StdRng) -> Self {
        const LENGTHS: &[(usize, u32)] =
            &[(2, 5), (3, 12), (4, 16), (5, 16), (6, 14), (7, 12), (8, 9), (9, 7), (10, 4), (11, 3), (12, 2)];
        let total: u32 = LENGTHS.iter().map(|l| l.1).sum();
        let mut words: Vec<String> = COMMON.iter().map(|w| (*w).to_owned()).collect();
        let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
        while words.len() < COMMON.len() + 20_000 {
            let mut roll = rng.gen_range(0..total);
            let len = LENGTHS
                .iter()
                .find(|(_, w)| {
                    if roll < *w {
                        true
                    } else {
                        roll -= w;
                        false
                    }
                })
                .map_or(5, |l| l.0);
            let word: String = (0..len).map(|_| rng.gen_range(b'a'..=b'z') as char).collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let han: Vec<char> = (0..3000u32).filter_map(|i| char::from_u32(0x4E00 + i * 7 % 20_000)).collect();
        let word_cdf = zipf_cdf(words.len());
        let han_cdf = zipf_cdf(han.len());
        Self { words, word_cdf, han, han_cdf }
    }

    pub(crate) fn word(&self, rng: &mut StdRng) -> &str {
        &self.words[pick(&self.word_cdf, rng)]
    }

    /// A word of a frequency class: 0 = among the 100 most common, 1 = ranks 100 to 2,000, 2 = rarer.
    pub(crate) fn word_of_class(&self, class: usize, rng: &mut StdRng) -> &str {
        let (lo, hi) = match class {
            0 => (0, 100),
            1 => (100, 2_000),
            _ => (2_000, self.words.len()),
        };
        &self.words[rng.gen_range(lo..hi)]
    }

    /// A message of about `words` words (one in ten: `2 × words` Chinese characters instead).
    pub(crate) fn message_of(&self, words: usize, rng: &mut StdRng) -> String {
        if rng.gen_range(0..10) == 0 {
            (0..words * 2).map(|_| self.han[pick(&self.han_cdf, rng)]).collect()
        } else {
            (0..words).map(|_| self.word(rng)).collect::<Vec<_>>().join(" ")
        }
    }

    /// One chat message: nine in ten are 4 to 25 words, one in ten 8 to 40 Chinese characters (a third of those
    /// with a Latin word inside).
    pub(crate) fn message(&self, rng: &mut StdRng) -> String {
        if rng.gen_range(0..10) == 0 {
            let n = rng.gen_range(8..=40);
            let mut text: String = (0..n).map(|_| self.han[pick(&self.han_cdf, rng)]).collect();
            if rng.gen_range(0..3) == 0 {
                let at = text.char_indices().nth(n / 2).map_or(0, |(i, _)| i);
                text.insert_str(at, self.word(rng));
            }
            text
        } else {
            let n = rng.gen_range(4..=25);
            let mut text = String::new();
            for i in 0..n {
                if i > 0 {
                    text.push(' ');
                }
                text.push_str(self.word(rng));
            }
            text
        }
    }
}
