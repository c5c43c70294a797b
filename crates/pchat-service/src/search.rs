//! History search: the rooms the caller may read at query time, the query parsed by the shared tokenizer, the
//! index searched through [`pchat_store::search::search`], a highlight around each match, and a BACKCHAT event
//! per room with hits.

use std::collections::{BTreeMap, HashMap};

use pchat_core::Address;
use pchat_core::text::{MatchMode, TextQuery, snippet};
use pchat_store::search::{SearchPage, SearchRequest, search};
use pchat_store::{CategoryRecord, MessageRecord, RoomQuery, RoomRecord, SearchFilter, SearchKey};

use crate::rooms::access_to;
use crate::time::parse_micros;
use crate::{Caller, Service, ServiceError, ServiceResult};

/// Most rooms one search may name.
pub const MAX_SEARCH_ROOMS: usize = 50;
/// Longest highlight, in characters (plus the "…" marks where it was cut).
const HIGHLIGHT_CHARS: usize = 200;

/// What to search for (the parameters of `GET /api/v1/search`, not yet validated).
#[derive(Debug, Clone, Default)]
pub struct SearchInput {
    pub q: String,
    /// `all` (default), `any` or `exact`.
    pub match_mode: Option<String>,
    pub case_sensitive: bool,
    pub author: Option<String>,
    /// RFC 3339, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Room ids or `name:` references; empty: every room the caller may read.
    pub rooms: Vec<String>,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// Search criteria once validated (also what a topic feed keeps).
#[derive(Debug, Clone)]
pub(crate) struct Criteria {
    pub(crate) query: TextQuery,
    pub(crate) authors: Vec<String>,
    pub(crate) from_ts: Option<i64>,
    pub(crate) to_ts: Option<i64>,
    /// Room ids the caller named (already checked readable); empty: every readable room.
    pub(crate) rooms: Vec<String>,
}

/// Where a hit's highlight comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HighlightField {
    Text,
    StoryTitle,
}

impl HighlightField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::StoryTitle => "story_title",
        }
    }
}

/// One result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub message: MessageRecord,
    pub room_name: String,
    /// A piece of the text (or story title) around the match, on one line.
    pub highlight: String,
    /// Where the query matched in `highlight`: character offsets, `start..end`.
    pub highlight_ranges: Vec<(usize, usize)>,
    pub highlight_field: HighlightField,
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    pub next_cursor: Option<String>,
    pub total_estimate: u64,
}

impl Service {
    /// Searches the history of every room the caller may read now (those named, when some are).
    pub async fn search(&self, caller: &Caller, input: SearchInput) -> ServiceResult<SearchResults> {
        if !caller.admin {
            Self::require_chat(caller)?;
        }
        let mode = MatchMode::parse("match", input.match_mode.as_deref().unwrap_or("all"))?;
        let query = TextQuery::parse("q", &input.q, mode, input.case_sensitive)?;
        let authors = match input.author.as_deref() {
            Some(a) => vec![Address::parse("author", a)?.to_string()],
            None => vec![],
        };
        let from_ts = input.from.as_deref().map(|d| parse_micros("from", d)).transpose()?;
        let to_ts = input.to.as_deref().map(|d| parse_micros("to", d)).transpose()?;
        if let (Some(from), Some(to)) = (from_ts, to_ts)
            && from > to
        {
            return Err(ServiceError::validation("from", "must not be after to"));
        }
        let rooms = self.named_rooms(caller, "room", &input.rooms).await?;
        let after = input
            .cursor
            .as_deref()
            .map(|c| SearchKey::decode(c).ok_or_else(|| ServiceError::validation("cursor", "is not a search cursor")))
            .transpose()?;
        if input.limit == 0 || input.limit > crate::MAX_PAGE {
            return Err(ServiceError::validation("limit", format!("must be between 1 and {}", crate::MAX_PAGE)));
        }
        let criteria = Criteria { query, authors, from_ts, to_ts, rooms };
        self.search_criteria(caller, &criteria, after, input.limit, "search").await
    }

    /// Checks the rooms a search names: each must exist and be readable by the caller (as for reading history),
    /// at most [`MAX_SEARCH_ROOMS`]; returns their ids, each once.
    pub(crate) async fn named_rooms(
        &self,
        caller: &Caller,
        field: &str,
        references: &[String],
    ) -> ServiceResult<Vec<String>> {
        if references.len() > MAX_SEARCH_ROOMS {
            return Err(ServiceError::validation(field, format!("at most {MAX_SEARCH_ROOMS} rooms")));
        }
        let mut ids: Vec<String> = Vec::new();
        for reference in references {
            let room = if caller.admin {
                let (view, category) = self.room_view(caller, reference).await?;
                if !searchable(caller, &category, &view.room) {
                    return Err(ServiceError::Forbidden("only the room's members and presenters read it".into()));
                }
                view.room
            } else {
                self.readable_room(caller, reference).await?.0
            };
            if !ids.contains(&room.id) {
                ids.push(room.id);
            }
        }
        Ok(ids)
    }

    /// Runs validated criteria for the caller: only rooms they may read at this moment, newest first.
    pub(crate) async fn search_criteria(
        &self,
        caller: &Caller,
        criteria: &Criteria,
        after: Option<SearchKey>,
        limit: u32,
        via: &str,
    ) -> ServiceResult<SearchResults> {
        let readable = self.searchable_rooms(caller).await?;
        let rooms: Option<Vec<String>> = if criteria.rooms.is_empty() {
            (readable.len() < readable.total).then(|| readable.names.keys().cloned().collect())
        } else {
            // Named rooms were readable when checked; access may have narrowed since.
            Some(criteria.rooms.iter().filter(|r| readable.names.contains_key(*r)).cloned().collect())
        };
        let authors = (!criteria.authors.is_empty()).then(|| criteria.authors.clone());
        let filter = SearchFilter { rooms, authors, from_ts: criteria.from_ts, to_ts: criteria.to_ts };
        let request = SearchRequest { query: &criteria.query, filter, after, limit };
        let page: SearchPage = search(&*self.store, &request).await?;
        let mut by_room: BTreeMap<String, Vec<MessageRecord>> = BTreeMap::new();
        let mut hits = Vec::with_capacity(page.found.len());
        for found in page.found {
            let message = found.message;
            by_room.entry(message.room_id.clone()).or_default().push(message.clone());
            let room_name = readable.names.get(&message.room_id).cloned().unwrap_or_default();
            hits.push(highlighted(&criteria.query, message, room_name));
        }
        self.record(|| {
            by_room.iter().filter_map(|(room, messages)| self.backchat(caller.address(), room, via, messages)).collect()
        })
        .await?;
        Ok(SearchResults { hits, next_cursor: page.next.map(SearchKey::encode), total_estimate: page.total_estimate })
    }

    /// Every room the caller may search now, by id with its name.
    async fn searchable_rooms(&self, caller: &Caller) -> ServiceResult<Readable> {
        let categories: HashMap<String, CategoryRecord> =
            self.store.list_categories().await?.into_iter().map(|c| (c.id.clone(), c)).collect();
        let mut readable = Readable { names: HashMap::new(), total: 0 };
        let mut after = None;
        loop {
            let page = self.store.list_rooms(&RoomQuery { category_id: None, after_name: after, limit: 500 }).await?;
            let full = page.len() == 500;
            after = page.last().map(|r| r.name.clone());
            readable.total += page.len();
            for room in page {
                if let Some(category) = categories.get(&room.category_id)
                    && searchable(caller, category, &room)
                {
                    readable.names.insert(room.id, room.name);
                }
            }
            if !full {
                return Ok(readable);
            }
        }
    }
}

/// Rooms a caller may search, and how many rooms there are in all.
struct Readable {
    names: HashMap<String, String>,
    total: usize,
}

impl Readable {
    fn len(&self) -> usize {
        self.names.len()
    }
}

/// Whether the caller may search a room: they may read it, or (administrators) would if it were enabled.
fn searchable(caller: &Caller, category: &CategoryRecord, room: &RoomRecord) -> bool {
    if caller.admin && room.disabled {
        let enabled = RoomRecord { disabled: false, ..room.clone() };
        return access_to(caller, category, &enabled).read;
    }
    access_to(caller, category, room).read
}

/// A hit with its highlight: around the match in the text, else in the story title.
pub(crate) fn highlighted(query: &TextQuery, message: MessageRecord, room_name: String) -> SearchHit {
    let in_text = query.ranges(&message.text);
    let (field, source, ranges) = match (&message.story_title, in_text.is_empty()) {
        (Some(title), true) if !query.ranges(title).is_empty() => {
            (HighlightField::StoryTitle, title.as_str(), query.ranges(title))
        }
        _ => (HighlightField::Text, message.text.as_str(), in_text),
    };
    let (highlight, highlight_ranges) = snippet(source, &ranges, HIGHLIGHT_CHARS);
    SearchHit { highlight, highlight_ranges, highlight_field: field, room_name, message }
}
