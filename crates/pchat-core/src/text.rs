//! Text as search sees it: one tokenizer shared by every backend, so that the index and the matching of results
//! are the same on SQLite and PostgreSQL.
//!
//! Text is cut into **units**. A unit is a word (a run of letters and digits with their combining marks), or one
//! character of a script written without spaces (Chinese, Japanese, Korean, Thai, Lao, Khmer, Myanmar), which
//! remembers whether it follows another such character directly (`joined`). Case-insensitive folding applies
//! compatibility decomposition (full-width letters become ASCII, half-width kana full-width, ligatures letters),
//! lower-cases, and drops the diacritics of the Latin, Greek and Cyrillic combining blocks (`é` = `e`, `Ä` = `a`);
//! marks of other scripts (the kana voicing marks, Thai vowels, Indic matras) are kept. Case-sensitive matching
//! only applies the compatibility normalisation (NFKC), so `Café` matches `Café` and not `cafe`.
//!
//! The index stores **terms**, always in the folded form: every word (its first [`MAX_TERM_CHARS`] characters),
//! every pair of adjacent words (so that a phrase of common words is looked up as a rare term), and every pair of
//! joined characters (bigrams), so that any string of two or more Chinese, Japanese or Korean characters is found
//! wherever it occurs, inside longer runs and next to Latin text. Terms select candidates;
//! [`TextQuery::matches`] then decides on the message's own text, so case sensitivity, exact phrases and strings
//! longer than two characters are exact, not approximations.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::ValidationError;

/// Changes whenever the terms produced for a text change: indexes built by another version are rebuilt.
pub const TOKENIZER_VERSION: i64 = 2;
/// Longest term stored in the index, in characters (longer words are indexed by their start and matched whole).
pub const MAX_TERM_CHARS: usize = 32;
/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most words in a search query.
pub const MAX_QUERY_WORDS: usize = 50;

/// How text is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folding {
    /// Case and Latin diacritics are ignored (`Café` = `cafe`).
    Insensitive,
    /// Only compatibility forms are unified (`Ｃａｆé` = `Café`).
    Sensitive,
}

/// A word, or one character of a script written without spaces, with where it came from in the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub text: String,
    /// One character of a script written without spaces.
    pub spaceless: bool,
    /// A spaceless unit directly after another (the same run, nothing in between).
    pub joined: bool,
    /// Character offsets of the unit in the original text: `start..end`.
    pub start: usize,
    pub end: usize,
}

/// Whether `c` belongs to a script written without spaces between words.
fn is_spaceless(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF            // Thai, Lao
        | 0x1000..=0x109F          // Myanmar
        | 0x1100..=0x11FF          // Hangul Jamo
        | 0x1780..=0x17FF          // Khmer
        | 0x2E80..=0x2FDF          // CJK radicals, Kangxi radicals
        | 0x3005 | 0x3006 | 0x3007 // 々 〆 〇
        | 0x3021..=0x3029 | 0x3038..=0x303B
        | 0x3040..=0x30FF          // Hiragana, Katakana
        | 0x3100..=0x312F          // Bopomofo
        | 0x3130..=0x318F          // Hangul compatibility Jamo
        | 0x31A0..=0x31FF          // Bopomofo extended, CJK strokes, Katakana extensions
        | 0x3400..=0x4DBF          // CJK extension A
        | 0x4E00..=0x9FFF          // CJK unified ideographs
        | 0xA960..=0xA97F          // Hangul Jamo extended A
        | 0xAC00..=0xD7FF          // Hangul syllables, Jamo extended B
        | 0xF900..=0xFAFF          // CJK compatibility ideographs
        | 0xFF66..=0xFF9D          // half-width Katakana (folded to full width first)
        | 0xFFA0..=0xFFDC          // half-width Hangul
        | 0x1B000..=0x1B16F        // Kana supplement and extensions
        | 0x20000..=0x3134F        // CJK extensions B to G, compatibility supplement
    )
}

/// Whether `c` is a diacritic that case-insensitive folding drops (the general combining blocks, used by Latin,
/// Greek and Cyrillic), as opposed to the marks that are part of other scripts' letters.
fn is_dropped_diacritic(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// Folds one cluster (a character and the combining marks after it) into `out`.
fn fold_cluster(cluster: &[char], folding: Folding, out: &mut String) {
    if let [c] = cluster
        && c.is_ascii()
    {
        out.push(if folding == Folding::Insensitive { c.to_ascii_lowercase() } else { *c });
        return;
    }
    match folding {
        Folding::Sensitive => out.extend(cluster.iter().copied().nfkc()),
        Folding::Insensitive => {
            let stripped: String = cluster
                .iter()
                .copied()
                .nfkd()
                .flat_map(char::to_lowercase)
                .filter(|c| !is_dropped_diacritic(*c))
                .map(|c| if c == 'ς' { 'σ' } else { c })
                .collect();
            out.extend(stripped.nfc());
        }
    }
}

/// The text with case and Latin diacritics folded (for substring matching, as in the room directory).
pub fn fold(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (start, end) in clusters(&chars) {
        fold_cluster(&chars[start..end], Folding::Insensitive, &mut out);
    }
    out
}

/// The `(start, end)` character ranges of a base character and the combining marks after it.
fn clusters(chars: &[char]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= chars.len() {
            return None;
        }
        let start = i;
        i += 1;
        while i < chars.len() && is_combining_mark(chars[i]) {
            i += 1;
        }
        Some((start, i))
    })
}

/// Cuts text into units (see the module documentation).
pub fn units(text: &str, folding: Folding) -> Vec<Unit> {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<Unit> = Vec::new();
    let mut word: Option<Unit> = None;
    // Whether the last unit pushed is spaceless and nothing has come between it and the current position.
    let mut in_run = false;
    let mut folded = String::new();
    for (start, i) in clusters(&chars) {
        folded.clear();
        fold_cluster(&chars[start..i], folding, &mut folded);
        for c in folded.chars() {
            if is_combining_mark(c) {
                // A mark left after folding belongs to the unit it follows.
                if let Some(w) = word.as_mut() {
                    w.text.push(c);
                    w.end = i;
                } else if in_run && let Some(last) = out.last_mut() {
                    last.text.push(c);
                    last.text = last.text.nfc().collect();
                    last.end = i;
                }
            } else if is_spaceless(c) {
                out.extend(word.take());
                out.push(Unit { text: c.to_string(), spaceless: true, joined: in_run, start, end: i });
                in_run = true;
            } else if c.is_alphanumeric() {
                in_run = false;
                match word.as_mut() {
                    Some(w) => {
                        w.text.push(c);
                        w.end = i;
                    }
                    None => word = Some(Unit { text: c.to_string(), spaceless: false, joined: false, start, end: i }),
                }
            } else {
                in_run = false;
                out.extend(word.take());
            }
        }
    }
    out.extend(word);
    out
}

/// The index terms of a unit sequence, appended to `out`: words (cut to [`MAX_TERM_CHARS`]), pairs of adjacent
/// words (`"buy bonds"`: a phrase of common words is then a rare term), and joined pairs of spaceless characters.
fn terms_of(units: &[Unit], out: &mut Vec<String>) {
    for (i, unit) in units.iter().enumerate() {
        let next = units.get(i + 1);
        if unit.spaceless {
            if let Some(next) = next
                && next.spaceless
                && next.joined
            {
                out.push(format!("{}{}", unit.text, next.text));
            }
        } else {
            out.push(term(&unit.text));
            if let Some(next) = next.filter(|n| !n.spaceless) {
                out.push(format!("{} {}", term(&unit.text), term(&next.text)));
            }
        }
    }
}

/// The terms a query needs to look up for a sequence of units: as [`terms_of`], but a word next to another word
/// is looked up only through their pair (which holds both), so that common words do not drive the search.
fn query_terms(units: &[Unit]) -> Vec<String> {
    let mut all = Vec::new();
    terms_of(units, &mut all);
    let paired = |i: usize| {
        let word = |j: usize| units.get(j).is_some_and(|u| !u.spaceless);
        word(i) && ((i > 0 && word(i - 1)) || word(i + 1))
    };
    let covered: Vec<String> = (0..units.len()).filter(|&i| paired(i)).map(|i| term(&units[i].text)).collect();
    let mut out: Vec<String> = all.into_iter().filter(|t| t.contains(' ') || !covered.contains(t)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn term(word: &str) -> String {
    match word.char_indices().nth(MAX_TERM_CHARS) {
        Some((cut, _)) => word[..cut].to_owned(),
        None => word.to_owned(),
    }
}

/// The distinct index terms of a message (its text and its story title), sorted.
pub fn index_terms(text: &str, title: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    terms_of(&units(text, Folding::Insensitive), &mut out);
    if let Some(title) = title {
        terms_of(&units(title, Folding::Insensitive), &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// How the words of a query combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    /// Every word (the default).
    All,
    /// At least one word.
    Any,
    /// The words in this order, next to each other (punctuation between them does not matter).
    Exact,
}

impl MatchMode {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "all" => Ok(Self::All),
            "any" => Ok(Self::Any),
            "exact" => Ok(Self::Exact),
            _ => Err(ValidationError::new(field, "must be one of: all, any, exact")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Any => "any",
            Self::Exact => "exact",
        }
    }
}

#[derive(Debug, Clone)]
struct QueryWord {
    /// In the matching form (folded unless case-sensitive).
    units: Vec<Unit>,
    /// Index terms, folded.
    terms: Vec<String>,
}

/// A parsed search query: what to look up in the index, and the exact test of a candidate.
#[derive(Debug, Clone)]
pub struct TextQuery {
    mode: MatchMode,
    folding: Folding,
    words: Vec<QueryWord>,
    phrase: QueryWord,
}

/// Where a query matched in one text: character ranges of each occurrence.
pub type Ranges = Vec<(usize, usize)>;

const SPACELESS_TOO_SHORT: &str =
    "a word in Chinese, Japanese or Korean (or another script written without spaces) needs at least 2 characters";

impl TextQuery {
    pub fn parse(field: &str, q: &str, mode: MatchMode, case_sensitive: bool) -> Result<Self, ValidationError> {
        let given = q.chars().count();
        let q = q.trim();
        if q.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if given > MAX_QUERY_CHARS {
            return Err(ValidationError::new(field, format!("must be at most {MAX_QUERY_CHARS} characters")));
        }
        if q.chars().any(char::is_control) {
            return Err(ValidationError::new(field, "must not contain control characters"));
        }
        let folding = if case_sensitive { Folding::Sensitive } else { Folding::Insensitive };
        let word =
            |raw: &str| QueryWord { units: units(raw, folding), terms: query_terms(&units(raw, Folding::Insensitive)) };
        let words: Vec<QueryWord> = q.split_whitespace().map(word).filter(|w| !w.units.is_empty()).collect();
        if words.is_empty() {
            return Err(ValidationError::new(field, "must contain a letter or a digit to search for"));
        }
        if words.len() > MAX_QUERY_WORDS {
            return Err(ValidationError::new(field, format!("must have at most {MAX_QUERY_WORDS} words")));
        }
        let phrase = word(q);
        let query = Self { mode, folding, words, phrase };
        let alternatives = query.alternatives();
        if alternatives.is_empty() || alternatives.iter().any(Vec::is_empty) {
            return Err(ValidationError::new(field, SPACELESS_TOO_SHORT));
        }
        Ok(query)
    }

    pub fn mode(&self) -> MatchMode {
        self.mode
    }

    /// What to look up: a message is a candidate when it holds every term of at least one alternative (one
    /// alternative for `all` and `exact`, one per word for `any`).
    pub fn alternatives(&self) -> Vec<Vec<String>> {
        match self.mode {
            MatchMode::Exact => vec![self.phrase.terms.clone()],
            MatchMode::All => {
                let mut all: Vec<String> = self.words.iter().flat_map(|w| w.terms.iter().cloned()).collect();
                all.sort_unstable();
                all.dedup();
                vec![all]
            }
            MatchMode::Any => self.words.iter().map(|w| w.terms.clone()).collect(),
        }
    }

    /// Whether a message with this text and story title matches.
    pub fn matches(&self, text: &str, title: Option<&str>) -> bool {
        let fields: Vec<Vec<Unit>> = std::iter::once(text).chain(title).map(|t| units(t, self.folding)).collect();
        let found = |w: &QueryWord| fields.iter().any(|f| occurrences(f, &w.units).next().is_some());
        match self.mode {
            MatchMode::All => self.words.iter().all(found),
            MatchMode::Any => self.words.iter().any(found),
            MatchMode::Exact => found(&self.phrase),
        }
    }

    /// Where the query occurs in `text`: the character ranges of every occurrence of its words (of its phrase
    /// for `exact`), in order, without overlaps.
    pub fn ranges(&self, text: &str) -> Ranges {
        let hay = units(text, self.folding);
        let needles: Vec<&QueryWord> = match self.mode {
            MatchMode::Exact => vec![&self.phrase],
            MatchMode::All | MatchMode::Any => self.words.iter().collect(),
        };
        let mut ranges: Ranges = needles
            .iter()
            .flat_map(|w| occurrences(&hay, &w.units).map(|at| (hay[at].start, hay[at + w.units.len() - 1].end)))
            .collect();
        ranges.sort_unstable();
        let mut merged: Ranges = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

/// Where `needle` occurs in `hay` as consecutive units (joined characters of the needle joined in the hay too).
fn occurrences<'a>(hay: &'a [Unit], needle: &'a [Unit]) -> impl Iterator<Item = usize> + 'a {
    let last = (hay.len() + 1).saturating_sub(needle.len().max(1));
    (0..last).filter(move |&at| {
        !needle.is_empty()
            && needle.iter().enumerate().all(|(j, n)| {
                let h = &hay[at + j];
                h.text == n.text && h.spaceless == n.spaceless && (j == 0 || !n.joined || h.joined)
            })
    })
}

/// A piece of `text` of at most about `max_chars` characters around the first range, on one line, with "…" where
/// it was cut, and the ranges that fall inside it moved to its offsets.
pub fn snippet(text: &str, ranges: &[(usize, usize)], max_chars: usize) -> (String, Ranges) {
    let chars: Vec<char> = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let (mut begin, mut end) = (0, chars.len());
    if chars.len() > max_chars {
        let first = ranges.first().map_or(0, |r| r.0);
        begin = first.saturating_sub(max_chars / 4);
        // Start at a word boundary when one is near.
        if begin > 0
            && let Some(space) = chars[begin..first].iter().position(|c| c.is_whitespace())
            && space < max_chars / 8
        {
            begin += space + 1;
        }
        end = (begin + max_chars).min(chars.len());
        if end == chars.len() {
            begin = end.saturating_sub(max_chars);
        }
    }
    let lead = usize::from(begin > 0);
    let mut out = String::new();
    if begin > 0 {
        out.push('…');
    }
    out.extend(&chars[begin..end]);
    if end < chars.len() {
        out.push('…');
    }
    let inside = ranges
        .iter()
        .filter(|(s, e)| *s >= begin && *e <= end)
        .map(|(s, e)| (s - begin + lead, e - begin + lead))
        .collect();
    (out, inside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(units: &[Unit]) -> Vec<&str> {
        units.iter().map(|u| u.text.as_str()).collect()
    }

    fn q(query: &str, mode: MatchMode, cs: bool) -> TextQuery {
        TextQuery::parse("q", query, mode, cs).unwrap()
    }

    #[test]
    fn words_fold_case_diacritics_and_compatibility_forms() {
        assert_eq!(
            texts(&units("Café, CAFÉ! ｃａｆｅ naïve Ærø", Folding::Insensitive)),
            ["cafe", "cafe", "cafe", "naive", "ærø"]
        );
        assert_eq!(texts(&units("Café, CAFÉ", Folding::Sensitive)), ["Café", "CAFÉ"]);
        // A decomposed é is the same as a composed one.
        assert_eq!(texts(&units("Cafe\u{301}", Folding::Sensitive)), ["Café"]);
        assert_eq!(texts(&units("Cafe\u{301}", Folding::Insensitive)), ["cafe"]);
        assert_eq!(texts(&units("O'Brien e-mail 3.5%", Folding::Insensitive)), ["o", "brien", "e", "mail", "3", "5"]);
        assert_eq!(texts(&units("ΟΔΟΣ οδος", Folding::Insensitive)), ["οδοσ", "οδοσ"]);
        assert_eq!(fold("Trading Desk — Zürich"), "trading desk — zurich");
    }

    #[test]
    fn spaceless_scripts_are_characters_that_know_their_run() {
        let u = units("我去中国 iPhone手机", Folding::Insensitive);
        assert_eq!(texts(&u), ["我", "去", "中", "国", "iphone", "手", "机"]);
        let joined: Vec<bool> = u.iter().map(|u| u.joined).collect();
        assert_eq!(joined, [false, true, true, true, false, false, true]);
        // Half-width katakana with a separate voicing mark fold to the full-width composed letter.
        assert_eq!(texts(&units("ｶﾞｽ", Folding::Insensitive)), ["ガ", "ス"]);
        // The voicing mark is kept: ガス (gas) is not カス.
        assert_ne!(texts(&units("ガス", Folding::Insensitive)), texts(&units("カス", Folding::Insensitive)));
        assert_eq!(texts(&units("회의는", Folding::Insensitive)), ["회", "의", "는"]);
        // Offsets point into the original text.
        let u = units("ab 中国", Folding::Insensitive);
        assert_eq!((u[1].start, u[1].end, u[2].start, u[2].end), (3, 4, 4, 5));
    }

    #[test]
    fn terms_are_words_and_joined_pairs() {
        assert_eq!(index_terms("我去中国 iPhone手机", Some("Buy")), ["buy", "iphone", "中国", "去中", "我去", "手机"]);
        // A lone character of a spaceless script gives no term; a long word is cut.
        assert_eq!(index_terms("我 a", None), ["a"]);
        // Adjacent words are also a term together.
        assert_eq!(index_terms("We buy, Bonds", None), ["bonds", "buy", "buy bonds", "we", "we buy"]);
        // A phrase looks its words up through their pairs; a lone word by itself.
        assert_eq!(q("we buy bonds", MatchMode::Exact, false).alternatives(), [vec!["buy bonds", "we buy"]]);
        assert_eq!(q("bonds 北京", MatchMode::Exact, false).alternatives(), [vec!["bonds", "北京"]]);
        let long = "x".repeat(40);
        assert_eq!(index_terms(&long, None), ["x".repeat(MAX_TERM_CHARS)]);
    }

    #[test]
    fn word_queries_match_whole_words_in_text_or_title() {
        let all = q("buy Bonds", MatchMode::All, false);
        assert!(all.matches("We BUY some bonds.", None));
        assert!(all.matches("We buy", Some("Bonds today")));
        assert!(!all.matches("We buy bondsmen", None));
        assert!(!all.matches("buyers of bonds", None));
        assert_eq!(all.alternatives(), [vec!["bonds".to_owned(), "buy".to_owned()]]);
        let any = q("buy bonds", MatchMode::Any, false);
        assert!(any.matches("buy stocks", None));
        assert_eq!(any.alternatives().len(), 2);
        let exact = q("buy bonds", MatchMode::Exact, false);
        assert!(exact.matches("please BUY, bonds now", None));
        assert!(!exact.matches("bonds buy", None));
        assert!(!exact.matches("buy", Some("bonds")));
        let cs = q("Café", MatchMode::All, true);
        assert!(cs.matches("au Café", None));
        assert!(!cs.matches("au café", None));
        assert!(!cs.matches("au Cafe", None));
        assert!(q("cafe", MatchMode::All, false).matches("au CAFÉ", None));
    }

    #[test]
    fn spaceless_queries_match_substrings_of_two_or_more_characters() {
        let two = q("中国", MatchMode::All, false);
        assert!(two.matches("我去中国了", None));
        assert!(two.matches("iPhone中国版", None));
        assert!(!two.matches("中 国", None));
        let three = q("中国人", MatchMode::All, false);
        assert!(three.matches("他是中国人吗", None));
        // Both pairs present but not as one string.
        assert!(!three.matches("中国和国人", None));
        assert!(q("カタカナ", MatchMode::All, false).matches("これはカタカナです", None));
        assert!(q("회의", MatchMode::All, false).matches("내일 회의는 취소", None));
        assert!(q("iPhone手机", MatchMode::Exact, false).matches("新款iphone 手机", None));
        let lone = TextQuery::parse("q", "中", MatchMode::All, false).unwrap_err();
        assert!(lone.message.contains("2 characters"), "{lone:?}");
        // A lone character next to a searchable word is checked on the candidates.
        let mixed = q("股 price", MatchMode::All, false);
        assert!(mixed.matches("A股 price", None));
        assert!(!mixed.matches("price", None));
        assert!(TextQuery::parse("q", "中 price", MatchMode::Any, false).is_err());
    }

    #[test]
    fn bad_queries_are_refused() {
        for bad in ["", "   ", "!!! ---", "a\u{7}b"] {
            assert!(TextQuery::parse("q", bad, MatchMode::All, false).is_err(), "{bad:?}");
        }
        assert!(TextQuery::parse("q", &"a".repeat(MAX_QUERY_CHARS + 1), MatchMode::All, false).is_err());
        let many = vec!["w"; MAX_QUERY_WORDS + 1].join(" ");
        assert!(TextQuery::parse("q", &many, MatchMode::All, false).is_err());
        assert!(MatchMode::parse("match", "some").is_err());
    }

    #[test]
    fn ranges_and_snippets_point_at_the_match() {
        let query = q("bonds", MatchMode::All, false);
        let text = "We buy Bonds and more BONDS";
        assert_eq!(query.ranges(text), [(7, 12), (22, 27)]);
        let long = format!("{} the bonds {}", "lead ".repeat(60), "tail ".repeat(60));
        let ranges = query.ranges(&long);
        let (snip, inside) = snippet(&long, &ranges, 120);
        assert!(snip.starts_with('…') && snip.ends_with('…'), "{snip}");
        let (s, e) = inside[0];
        let picked: String = snip.chars().skip(s).take(e - s).collect();
        assert_eq!(picked, "bonds");
        assert!(snip.chars().count() <= 122);
        let cjk = q("中国", MatchMode::All, false);
        assert_eq!(cjk.ranges("我去中国"), [(2, 4)]);
        assert_eq!(snippet("a\nb", &[], 10).0, "a b");
    }

    #[test]
    fn names_are_found_by_word_starts_and_any_part_of_a_cjk_run() {
        assert_eq!(directory_terms("Café Zürich-desk"), ["cafe", "desk", "zurich"]);
        assert_eq!(
            directory_terms("北京办公室 FX"),
            ["fx", "京", "京办", "公", "公室", "办", "办公", "北", "北京", "室"]
        );
        let m = |query: &str, name: &str| NameQuery::parse(query).matches(name);
        assert!(m("CAFE zur", "Café Zürich"));
        assert!(m("zur caf", "Café Zürich"), "word order does not matter");
        assert!(!m("afe", "Café Zürich"), "a word is found by its start");
        assert!(!m("cafe bern", "Café Zürich"), "every word must be there");
        assert!(m("北京", "北京办公室") && m("办公", "北京办公室") && m("室", "北京办公室"));
        assert!(!m("北办", "北京办公室"), "a run must occur as written");
        assert!(m("alice@exa", "alice@example.com Alice Smith"));
        assert!(NameQuery::parse(" @- ").is_empty());
        let terms = NameQuery::parse("fx 北京开 london").terms();
        let texts: Vec<(&str, bool)> = terms.iter().map(|t| (t.text.as_str(), t.prefix)).collect();
        assert_eq!(texts, [("london", true), ("京开", false), ("北京", false), ("fx", true)]);
    }
}

/// Changes whenever [`directory_terms`] changes: directory indexes built by another version are rebuilt.
pub const DIRECTORY_TERMS_VERSION: i64 = 1;

/// The terms under which a name (a person's address and display name, a room's name or description) is found in
/// the directory, distinct and sorted: every folded word (its first [`MAX_TERM_CHARS`] characters), every
/// character of a script written without spaces, and every pair of such characters written together.
pub fn directory_terms(text: &str) -> Vec<String> {
    let units = units(text, Folding::Insensitive);
    let mut out = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        if unit.spaceless {
            out.push(unit.text.clone());
            if let Some(next) = units.get(i + 1).filter(|n| n.spaceless && n.joined) {
                out.push(format!("{}{}", unit.text, next.text));
            }
        } else {
            out.push(term(&unit.text));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What the directory looks up for a query: a term exactly, or every term starting with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryTerm {
    pub text: String,
    pub prefix: bool,
}

/// The text a user is found by in the directory: address and display name. The index and the matching of
/// results both use it.
pub fn user_directory_text(address: &str, display_name: &str) -> String {
    format!("{address} {display_name}")
}

/// A search of the directory by name, as people type into a picker: every word of the query starts a word of the
/// name, case and accents folded (`fx lon` finds "FX London", `zur` finds "Zürich"), and every run of Chinese,
/// Japanese or Korean characters occurs in it anywhere (`北京` finds "北京办公室", `办公` too).
#[derive(Debug, Clone)]
pub struct NameQuery {
    words: Vec<String>,
    runs: Vec<Vec<Unit>>,
}

impl NameQuery {
    pub fn parse(q: &str) -> Self {
        let mut words = vec![];
        let mut runs: Vec<Vec<Unit>> = vec![];
        for unit in units(q, Folding::Insensitive) {
            if !unit.spaceless {
                words.push(unit.text);
            } else if unit.joined
                && let Some(run) = runs.last_mut()
            {
                run.push(unit);
            } else {
                runs.push(vec![unit]);
            }
        }
        words.sort_unstable();
        words.dedup();
        Self { words, runs }
    }

    /// A query without a letter, digit or character to look for.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty() && self.runs.is_empty()
    }

    /// The terms a matching name has, the longest (most selective) first.
    pub fn terms(&self) -> Vec<DirectoryTerm> {
        let mut out: Vec<DirectoryTerm> =
            self.words.iter().map(|w| DirectoryTerm { text: term(w), prefix: true }).collect();
        for run in &self.runs {
            match run.as_slice() {
                [one] => out.push(DirectoryTerm { text: one.text.clone(), prefix: false }),
                many => out.extend(
                    many.windows(2)
                        .map(|w| DirectoryTerm { text: format!("{}{}", w[0].text, w[1].text), prefix: false }),
                ),
            }
        }
        // Longer terms first, and an exact term before a prefix as long: both are likely to be rarer.
        out.sort_by(|a, b| {
            let longer = b.text.chars().count().cmp(&a.text.chars().count());
            longer.then_with(|| a.prefix.cmp(&b.prefix)).then_with(|| a.text.cmp(&b.text))
        });
        out.dedup();
        out
    }

    /// Whether `text` matches: each word starts one of its words, each run occurs in it.
    pub fn matches(&self, text: &str) -> bool {
        let hay = units(text, Folding::Insensitive);
        self.words.iter().all(|w| hay.iter().any(|u| !u.spaceless && u.text.starts_with(w.as_str())))
            && self.runs.iter().all(|run| occurrences(&hay, run).next().is_some())
    }
}
