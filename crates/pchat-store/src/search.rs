//! The history search port ([`Search`]) and the one search algorithm that runs over it ([`search`]).
//!
//! Every backend keeps the same inverted index: a posting `(term, ts, room, seq)` per distinct term of each kept
//! message (terms from [`pchat_core::text::index_terms`]), ordered by term and then newest first, and written in
//! the transaction that writes, replaces or deletes the message. The port offers two primitives — capped term
//! counts and a windowed scan of one term's postings that keeps those holding some other terms — and [`search`]
//! does the rest the same way for every backend: it drives each alternative of the query from its rarest term,
//! merges alternatives newest first, tests each candidate with [`TextQuery::matches`] on the message's own text,
//! and stops after a bounded amount of work with a cursor to continue.
//!
//! Work is bounded in postings of a term within the filter's times, whatever the filter's rooms: counts look at
//! most [`COUNT_CAP`] of them and windows are measured in them, so a caller who reads few rooms never makes a
//! request walk every posting of a common word to find the few in their rooms.

use std::collections::VecDeque;

use async_trait::async_trait;
use pchat_core::text::TextQuery;

use crate::{MessageRecord, StoreResult};

/// Counts of term postings stop here (they choose the rarest term and feed estimates).
pub const COUNT_CAP: u32 = 10_000;

/// What [`Search::term_counts`] found for one term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TermCount {
    /// Postings of the term within the filter's times (any room), counted up to the cap.
    pub postings: u64,
    /// How many of those counted postings are in the filter's rooms.
    pub in_rooms: u64,
}
/// Most postings one search request examines before it answers with what it found and a cursor.
pub const SCAN_BUDGET: u32 = 40_000;
/// The largest window one scan examines.
const MAX_WINDOW: u32 = 8_192;

/// Where a message sorts in search results: newest first, then by room number and `seq` (descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SearchKey {
    pub ts: i64,
    /// The room's number in this database (rooms have a small integer beside their id for the index).
    pub room: i64,
    pub seq: i64,
}

impl SearchKey {
    /// The text form used in cursors: `ts.room.seq`.
    pub fn encode(self) -> String {
        format!("{}.{}.{}", self.ts, self.room, self.seq)
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let mut parts = raw.split('.');
        let key = Self {
            ts: parts.next()?.parse().ok()?,
            room: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(key)
    }
}

/// Which messages a search may return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFilter {
    /// Only these rooms (ids); `None`: every room.
    pub rooms: Option<Vec<String>>,
    /// Only messages by these authors; `None`: anyone.
    pub authors: Option<Vec<String>>,
    /// Inclusive bounds on the message time.
    pub from_ts: Option<i64>,
    pub to_ts: Option<i64>,
}

/// One windowed scan of a term's postings.
#[derive(Debug, Clone)]
pub struct Scan<'a> {
    /// The term whose postings are walked, newest first.
    pub driver: &'a str,
    /// Terms a posting's message must also hold.
    pub others: &'a [String],
    pub filter: &'a SearchFilter,
    /// Only postings sorting strictly after this key (older).
    pub before: Option<SearchKey>,
    /// Most postings of `driver` within the filter's times (in any room) to examine; those in the filter's rooms
    /// are the candidates.
    pub window: u32,
}

/// A message found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: SearchKey,
    pub message: MessageRecord,
}

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Messages holding every term and written by one of the filter's authors, newest first.
    pub hits: Vec<Found>,
    /// The last posting examined when the window was full (more may follow it); `None` when the postings ran out.
    pub last: Option<SearchKey>,
}

/// A posting held outside a backend's index table (postings not yet merged into it): term, ts, room number, seq.
pub type Posting = (String, i64, i64, i64);

/// The keys of `term`'s postings in `sorted` (postings sorted by term first), in their order.
pub fn keys_in<'a>(sorted: &'a [Posting], term: &'a str) -> impl Iterator<Item = SearchKey> + 'a {
    let start = sorted.partition_point(|e| e.0.as_str() < term);
    sorted[start..].iter().take_while(move |e| e.0 == term).map(|e| SearchKey { ts: e.1, room: e.2, seq: e.3 })
}

/// Whether `sorted` (postings in their natural order) holds this posting.
pub fn holds_in(sorted: &[Posting], term: &str, key: SearchKey) -> bool {
    sorted.binary_search_by(|e| (e.0.as_str(), e.1, e.2, e.3).cmp(&(term, key.ts, key.room, key.seq))).is_ok()
}

/// The search index of history.
#[async_trait]
pub trait Search: Send + Sync {
    /// For each term: its postings within the filter's times (at most `cap` of them, in the backend's order) and
    /// how many of those are in the filter's rooms.
    async fn term_counts(&self, terms: &[String], filter: &SearchFilter, cap: u32) -> StoreResult<Vec<TermCount>>;
    /// Examines up to `scan.window` postings of `scan.driver` within the filter's times and returns the messages
    /// among them in the filter's rooms that also hold every other term and are by one of the filter's authors.
    async fn scan(&self, scan: &Scan<'_>) -> StoreResult<ScanPage>;
}

/// A search to run: the query, who may be found, where to continue, how many.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    pub query: &'a TextQuery,
    pub filter: SearchFilter,
    /// Continue with results sorting after this key (a cursor from an earlier page).
    pub after: Option<SearchKey>,
    pub limit: u32,
}

/// A page of results.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub found: Vec<Found>,
    /// Where the next page starts; `None` when there is nothing more.
    pub next: Option<SearchKey>,
    /// About how many messages match in all (exact when every one fitted in a first page), from at most
    /// [`COUNT_CAP`] postings per alternative of the query.
    pub total_estimate: u64,
}

/// One alternative of the query being walked.
struct Walk {
    driver: String,
    others: Vec<String>,
    /// The driver's postings within the filter's times (up to the cap), as the estimate's base.
    driver_count: u64,
    started: bool,
    /// The last posting examined so far (once started).
    frontier: Option<SearchKey>,
    exhausted: bool,
    window: u32,
    /// Matching messages found and not yet returned, newest first.
    pending: VecDeque<Found>,
}

/// How far every walk still going has examined: results at or above the line are all known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Some walk has not started: nothing is settled yet.
    Top,
    At(SearchKey),
    /// Every walk is exhausted: everything is settled.
    Bottom,
}

fn line(walks: &[Walk]) -> Line {
    let mut line = Line::Bottom;
    for walk in walks.iter().filter(|w| !w.exhausted) {
        match (walk.started, walk.frontier) {
            (true, Some(f)) => {
                if !matches!(line, Line::At(l) if l >= f) {
                    line = Line::At(f);
                }
            }
            _ => return Line::Top,
        }
    }
    line
}

/// Runs a search over `index` (see the module documentation).
pub async fn search<S: Search + ?Sized>(index: &S, request: &SearchRequest<'_>) -> StoreResult<SearchPage> {
    let alternatives = request.query.alternatives();
    let mut terms: Vec<String> = alternatives.iter().flatten().cloned().collect();
    terms.sort_unstable();
    terms.dedup();
    let counts = index.term_counts(&terms, &request.filter, COUNT_CAP).await?;
    let count_of = |t: &String| terms.binary_search(t).ok().map_or(TermCount::default(), |i| counts[i]);
    let mut walks: Vec<Walk> = alternatives
        .into_iter()
        .filter_map(|mut alternative| {
            // The rarest term drives: the work of a walk is in its driver's postings. Ties go to the one with
            // fewest in the filter's rooms, then to the longest (usually the most selective).
            alternative.sort_by_key(|t| {
                let c = count_of(t);
                (c.postings, c.in_rooms, std::cmp::Reverse(t.chars().count()))
            });
            let driver = alternative.first()?.clone();
            let count = count_of(&driver);
            // Nothing to find: no postings at all, or every one counted and none in the filter's rooms.
            let empty = count.in_rooms == 0 && count.postings < u64::from(COUNT_CAP);
            Some(Walk {
                others: alternative[1..].to_vec(),
                driver,
                driver_count: if empty { 0 } else { count.postings },
                started: false,
                frontier: request.after,
                exhausted: empty,
                window: first_window(request.limit, count),
                pending: VecDeque::new(),
            })
        })
        .collect();
    let mut out = Progress { found: Vec::new(), examined: 0, accepted: 0 };
    let limit = request.limit as usize;
    loop {
        let settled = line(&walks);
        // Return the settled results, newest first, each once (alternatives can find the same message).
        loop {
            let best = walks
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.pending.front().map(|f| (f.key, i)))
                .max_by_key(|(key, _)| *key);
            let Some((key, i)) = best else { break };
            let safe = match settled {
                Line::Top => false,
                Line::At(l) => key >= l,
                Line::Bottom => true,
            };
            if !safe {
                break;
            }
            let Some(next) = walks[i].pending.pop_front() else { break };
            if out.found.last().is_some_and(|f| f.key == key) {
                continue;
            }
            if out.found.len() == limit {
                let last = out.found.last().map(|f| f.key);
                return Ok(out.page(last, &walks, request.after));
            }
            out.found.push(next);
        }
        match settled {
            Line::Bottom => return Ok(out.page(None, &walks, request.after)),
            Line::At(l) if out.examined >= u64::from(SCAN_BUDGET) => {
                // Out of budget: everything down to the line is returned; the next page continues below it.
                return Ok(out.page(Some(l), &walks, request.after));
            }
            _ => {}
        }
        // Scan the walk that is furthest behind: one not started, else the one with the highest frontier.
        let Some(walk) = walks.iter_mut().filter(|w| !w.exhausted).max_by_key(|w| (!w.started, w.frontier)) else {
            continue;
        };
        let scan = Scan {
            driver: &walk.driver,
            others: &walk.others,
            filter: &request.filter,
            before: walk.frontier,
            window: walk.window,
        };
        let result = index.scan(&scan).await?;
        out.examined += u64::from(walk.window);
        walk.started = true;
        for hit in result.hits {
            if request.query.matches(&hit.message.text, hit.message.story_title.as_deref()) {
                out.accepted += 1;
                walk.pending.push_back(hit);
            }
        }
        match result.last {
            Some(last) => {
                walk.frontier = Some(last);
                walk.window = walk.window.saturating_mul(2).min(MAX_WINDOW);
            }
            None => walk.exhausted = true,
        }
    }
}

/// The first window of a walk: enough postings of its driver to hold about twice the page in the filter's rooms
/// (a caller reading a tenth of the rooms starts with ten times the postings), so one scan usually fills a page.
fn first_window(limit: u32, driver: TermCount) -> u32 {
    let wanted = u64::from(limit.saturating_mul(2));
    let postings = wanted.saturating_mul(driver.postings.max(1)) / driver.in_rooms.max(1);
    u32::try_from(postings).unwrap_or(MAX_WINDOW).clamp(64, MAX_WINDOW)
}

/// Results gathered so far, and how much work it took.
struct Progress {
    found: Vec<Found>,
    examined: u64,
    accepted: u64,
}

impl Progress {
    fn page(self, next: Option<SearchKey>, walks: &[Walk], after: Option<SearchKey>) -> SearchPage {
        let total_estimate = if next.is_none() && after.is_none() {
            self.found.len() as u64
        } else {
            let ratio = if self.examined == 0 { 1.0 } else { (self.accepted as f64 / self.examined as f64).min(1.0) };
            let drivers: u64 = walks.iter().map(|w| w.driver_count).sum();
            ((drivers as f64 * ratio).round() as u64).max(self.found.len() as u64)
        };
        SearchPage { found: self.found, next, total_estimate }
    }
}
