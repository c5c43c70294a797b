//! Messages: history and paging, posting (durable before acknowledged, idempotent by `client_id`, rate limited),
//! joining the live stream with history first, and the administrators' clear / remove / replace.

use std::sync::Arc;

use pchat_api_types as api;
use pchat_core::{Address, Name};
use pchat_store::{
    Appended, CategoryRecord, ClusterEvent, MessageFilter, MessageRange, MessageRecord, NewMessage, RoomRecord,
};

use crate::directory::require_admin;
use crate::hub::Conn;
use crate::time::parse_micros;
use crate::{Caller, Service, ServiceError, ServiceResult};
use serde_json::json;

/// Most messages one history request returns.
pub const MAX_PAGE: u32 = 500;
/// Default replacement text (Lync's `Remove-CsPersistentChatMessage -ReplaceMessage` default).
pub const DEFAULT_REPLACEMENT: &str = "This message was replaced by the Persistent Chat administrator.";
/// Longest replacement text (Lync's default is one sentence).
const MAX_REPLACEMENT_CHARS: usize = 1024;
/// Longest `client_id`.
const MAX_CLIENT_ID: usize = 128;

/// A new message's id: a UUID of version 7, which begins with the time, so that ids of messages posted one after
/// another sort in posting order and each store's unique index on them grows at its end (a random UUID put every
/// post on a page of its own in that index: one more page written per post).
pub(crate) fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct History {
    pub messages: Vec<MessageRecord>,
}

/// A room the connection has joined: proof that the caller may read it, for resuming in pages.
#[derive(Debug, Clone)]
pub struct Joined {
    pub room_id: String,
    pub last_seq: i64,
    /// The `after_seq` the join was served from: the client's, or the room's last `seq` when the client's lay
    /// beyond it (a client that remembers more than the room holds gets every message from now on).
    pub after_seq: Option<i64>,
    /// Who joined (history they read is captured as theirs).
    pub user: String,
}

impl Service {
    /// The room, if the caller may read it: `not_found` if they may not see it, `room_disabled` for a disabled
    /// room its managers can see, `forbidden` otherwise.
    pub(crate) async fn readable_room(
        &self,
        caller: &Caller,
        reference: &str,
    ) -> ServiceResult<(RoomRecord, CategoryRecord, bool)> {
        Self::require_chat(caller)?;
        let (view, category) = self.room_view(caller, reference).await?;
        if !view.access.read {
            return Err(if view.room.disabled {
                ServiceError::RoomDisabled
            } else {
                ServiceError::Forbidden("only the room's members and presenters read it".into())
            });
        }
        Ok((view.room, category, view.access.post))
    }

    pub async fn history(
        &self,
        caller: &Caller,
        reference: &str,
        before_seq: Option<i64>,
        after_seq: Option<i64>,
        limit: Option<u32>,
    ) -> ServiceResult<History> {
        let (room, _, _) = self.readable_room(caller, reference).await?;
        let via = if before_seq.is_some() || after_seq.is_some() { "page" } else { "latest" };
        let limit = limit.unwrap_or(50);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::validation("limit", format!("must be between 1 and {MAX_PAGE}")));
        }
        let range = match (before_seq, after_seq) {
            (Some(_), Some(_)) => {
                return Err(ServiceError::validation("before_seq", "give before_seq or after_seq, not both"));
            }
            (Some(b), None) => MessageRange::Before { before: b, limit },
            (None, Some(a)) => MessageRange::After { after: a, limit },
            (None, None) => MessageRange::Latest { limit: self.effective_config().await?.default_chat_history },
        };
        let messages = self.store.messages(&room.id, range).await?;
        self.record(|| self.backchat(caller.address(), &room.id, via, &messages).into_iter().collect()).await?;
        Ok(History { messages })
    }

    /// The BACKCHAT event of a history read (none when nothing was read).
    pub(crate) fn backchat(
        &self,
        user: &str,
        room_id: &str,
        via: &str,
        messages: &[MessageRecord],
    ) -> Option<pchat_store::NewEvent> {
        let (first, last) = (messages.first()?, messages.last()?);
        let read: Vec<_> = messages.iter().map(|m| json!({ "id": m.id, "seq": m.seq })).collect();
        let content = format!("read {} message(s), seq {} to {}", messages.len(), first.seq, last.seq);
        Some(self.event("BACKCHAT", Some(room_id), user, content, json!({ "via": via, "messages": read })))
    }

    /// Posts a message; returns once it is durably committed. A repeated `client_id` returns the original.
    pub async fn post(&self, caller: &Caller, reference: &str, input: api::PostMessage) -> ServiceResult<Appended> {
        Self::require_chat(caller)?;
        if let Err(retry_after_secs) = self.limiter.check(caller.address()) {
            self.metrics.rate_limited.inc();
            return Err(ServiceError::RateLimited { retry_after_secs });
        }
        let (room, category, may_post) = self.readable_room(caller, reference).await?;
        if !may_post {
            return Err(ServiceError::Forbidden("only presenters post in an auditorium".into()));
        }
        let config = self.effective_config().await?;
        if input.text.trim().is_empty() {
            return Err(ServiceError::validation("text", "must not be empty"));
        }
        if input.text.len() > config.max_message_bytes as usize {
            return Err(ServiceError::TooLarge {
                field: "text".into(),
                detail: format!("is {} bytes; the limit is {} bytes", input.text.len(), config.max_message_bytes),
            });
        }
        if input.text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(ServiceError::validation(
                "text",
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        let story_title =
            input.story_title.as_deref().map(|t| Name::parse("story_title", t).map(Name::into_string)).transpose()?;
        if let Some(id) = &input.client_id
            && (id.is_empty() || id.len() > MAX_CLIENT_ID || id.chars().any(char::is_control))
        {
            return Err(ServiceError::validation(
                "client_id",
                format!("must be 1 to {MAX_CLIENT_ID} bytes without control characters"),
            ));
        }
        let started = std::time::Instant::now();
        let appended = self
            .store
            .append_message(NewMessage {
                id: new_message_id(),
                room_id: room.id,
                author: caller.address().to_owned(),
                text: input.text,
                story_title,
                alert: input.alert.unwrap_or(false),
                client_id: input.client_id,
                keep: category.chat_history,
                capture: self.capturing().await,
                file: None,
            })
            .await?;
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        if appended.created {
            self.metrics.posts.inc();
        }
        Ok(appended)
    }

    /// Joins a room on a live connection: subscribes first, then reads history, so that nothing committed in
    /// between is missed (the connection skips what it receives twice by `seq`). `caller` is the connection's
    /// user as of now (policy and groups may have changed since it connected).
    pub async fn join(
        &self,
        caller: &Caller,
        conn: &Arc<Conn>,
        reference: &str,
        after_seq: Option<i64>,
    ) -> ServiceResult<(Joined, Vec<MessageRecord>)> {
        let (room, _, _) = self.readable_room(caller, reference).await?;
        let config = self.effective_config().await?;
        // Read before subscribing: messages posted from here on come as history or live, never neither.
        let after_seq = match after_seq {
            Some(after) if after > 0 => Some(after.min(self.store.last_seq(&room.id).await?)),
            other => other,
        };
        self.hub.subscribe(conn, &room.id, config.participant_update_limit);
        let history = match after_seq {
            Some(after) => self.store.messages(&room.id, MessageRange::After { after, limit: MAX_PAGE }).await,
            None => self.store.messages(&room.id, MessageRange::Latest { limit: config.default_chat_history }).await,
        };
        let history = match history {
            Ok(h) => h,
            Err(e) => {
                self.hub.unsubscribe(conn, &room.id);
                return Err(e.into());
            }
        };
        let captured = async {
            let last_seq = self.store.last_seq(&room.id).await?;
            let via = if after_seq.is_some() { "resume" } else { "join" };
            self.record(|| {
                let join = self.event("JOIN", Some(&room.id), caller.address(), "", json!({ "after_seq": after_seq }));
                std::iter::once(join).chain(self.backchat(caller.address(), &room.id, via, &history)).collect()
            })
            .await?;
            Ok::<_, ServiceError>(last_seq)
        };
        match captured.await {
            Ok(last_seq) => {
                Ok((Joined { room_id: room.id, last_seq, after_seq, user: caller.address().to_owned() }, history))
            }
            Err(e) => {
                // Nothing is delivered that was not captured.
                self.hub.unsubscribe(conn, &room.id);
                Err(e)
            }
        }
    }

    /// The next page of a resume after `after` (empty when caught up).
    pub async fn resume_page(&self, joined: &Joined, after: i64) -> ServiceResult<Vec<MessageRecord>> {
        let page = self.store.messages(&joined.room_id, MessageRange::After { after, limit: MAX_PAGE }).await?;
        self.record(|| self.backchat(&joined.user, &joined.room_id, "resume", &page).into_iter().collect()).await?;
        Ok(page)
    }

    pub fn part(&self, conn: &Arc<Conn>, room_id: &str) -> bool {
        self.hub.unsubscribe(conn, room_id)
    }

    /// Deletes every message of the room up to and including `end_date` (Lync `Clear-CsPersistentChatRoom`).
    pub async fn clear_room(&self, caller: &Caller, reference: &str, input: api::ClearRoom) -> ServiceResult<u64> {
        require_admin(caller)?;
        let room = self.resolve_room(reference).await?;
        let end_ts = parse_micros("end_date", &input.end_date)?;
        let events = || {
            let details = json!({ "end_date": input.end_date, "end_ts": end_ts, "room_name": room.name });
            vec![self.event("ROOM_CLEARED", Some(&room.id), caller.address(), input.end_date.clone(), details)]
        };
        let removed = self.audited(events, self.store.clear_room(&room.id, end_ts)).await?;
        self.sweep_room_files(&room.id).await;
        self.announce(ClusterEvent::RoomCleared { room_id: room.id, end_ts }).await;
        Ok(removed)
    }

    /// Removes or replaces messages chosen by author, date range and keywords (Lync `Remove-CsPersistentChatMessage`).
    pub async fn remove_messages(
        &self,
        caller: &Caller,
        reference: &str,
        input: api::RemoveMessages,
    ) -> ServiceResult<u64> {
        require_admin(caller)?;
        let room = self.resolve_room(reference).await?;
        let author = input.author.as_deref().map(|a| Address::parse("author", a).map(|a| a.to_string())).transpose()?;
        let start_ts = input.start_date.as_deref().map(|d| parse_micros("start_date", d)).transpose()?;
        let end_ts = input.end_date.as_deref().map(|d| parse_micros("end_date", d)).transpose()?;
        let matcher = KeywordMatch::parse(
            input.keywords.as_deref(),
            input.match_.as_deref(),
            input.case_sensitive.unwrap_or(false),
        )?;
        let replacement = input.replace_with.map(|t| if t.is_empty() { DEFAULT_REPLACEMENT.to_owned() } else { t });
        if let Some(text) = &replacement
            && (text.chars().count() > MAX_REPLACEMENT_CHARS
                || text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')))
        {
            return Err(ServiceError::validation(
                "replace_with",
                format!("must be at most {MAX_REPLACEMENT_CHARS} characters without control characters"),
            ));
        }
        if author.is_none() && start_ts.is_none() && end_ts.is_none() && matcher.is_none() {
            return Err(ServiceError::validation(
                "keywords",
                "give at least one of author, start_date, end_date or keywords",
            ));
        }
        let candidates = self.store.find_messages(&room.id, &MessageFilter { author, start_ts, end_ts }).await?;
        let chosen: Vec<MessageRecord> =
            candidates.into_iter().filter(|m| matcher.as_ref().is_none_or(|k| k.matches(&m.text))).collect();
        let ids: Vec<String> = chosen.iter().map(|m| m.id.clone()).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        // The archive keeps what the messages said before (PRODUCT.md §2: the original lives on only there).
        let events = || {
            let kind = if replacement.is_some() { "MESSAGE_REPLACED" } else { "MESSAGE_REMOVED" };
            let originals: Vec<_> = chosen
                .iter()
                .map(|m| json!({ "id": m.id, "seq": m.seq, "author": m.author, "text": m.text }))
                .collect();
            let details = json!({ "messages": originals, "replacement": replacement });
            let content = format!("{} message(s)", chosen.len());
            vec![self.event(kind, Some(&room.id), caller.address(), content, details)]
        };
        let affected = self.audited(events, self.store.alter_messages(&room.id, &ids, replacement.as_deref())).await?;
        if chosen.iter().any(|m| m.file.is_some()) {
            self.sweep_room_files(&room.id).await;
        }
        let event = match replacement {
            Some(text) => ClusterEvent::MessagesReplaced { room_id: room.id, ids, text },
            None => ClusterEvent::MessagesRemoved { room_id: room.id, ids },
        };
        self.announce(event).await;
        Ok(affected)
    }
}

/// Keyword selection of messages: every word, any word, or the exact phrase; case-insensitive unless asked.
#[derive(Debug, Clone)]
pub(crate) struct KeywordMatch {
    mode: MatchMode,
    words: Vec<String>,
    phrase: String,
    case_sensitive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchMode {
    All,
    Any,
    Exact,
}

impl KeywordMatch {
    pub(crate) fn parse(
        keywords: Option<&str>,
        mode: Option<&str>,
        case_sensitive: bool,
    ) -> ServiceResult<Option<Self>> {
        let mode = match mode.unwrap_or("all") {
            "all" => MatchMode::All,
            "any" => MatchMode::Any,
            "exact" => MatchMode::Exact,
            _ => {
                return Err(ServiceError::validation("match", "must be one of: all, any, exact"));
            }
        };
        let Some(raw) = keywords.map(str::trim).filter(|k| !k.is_empty()) else {
            return Ok(None);
        };
        let fold = |s: &str| {
            if case_sensitive { s.to_owned() } else { s.to_lowercase() }
        };
        Ok(Some(Self { mode, words: raw.split_whitespace().map(fold).collect(), phrase: fold(raw), case_sensitive }))
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        let text = if self.case_sensitive { text.to_owned() } else { text.to_lowercase() };
        match self.mode {
            MatchMode::All => self.words.iter().all(|w| text.contains(w.as_str())),
            MatchMode::Any => self.words.iter().any(|w| text.contains(w.as_str())),
            MatchMode::Exact => text.contains(&self.phrase),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_modes() {
        let m = |k: &str, mode: &str, cs: bool, text: &str| {
            KeywordMatch::parse(Some(k), Some(mode), cs).unwrap().unwrap().matches(text)
        };
        assert!(m("buy bonds", "all", false, "We BUY some Bonds"));
        assert!(!m("buy bonds", "all", false, "We buy stocks"));
        assert!(m("buy bonds", "any", false, "We buy stocks"));
        assert!(!m("buy bonds", "exact", false, "bonds buy"));
        assert!(m("buy bonds", "exact", false, "please BUY BONDS now"));
        assert!(!m("Buy", "all", true, "buy"));
        assert!(KeywordMatch::parse(Some("x"), Some("some"), false).is_err());
        assert!(KeywordMatch::parse(Some("  "), None, false).unwrap().is_none());
    }

    #[test]
    fn message_ids_are_version_7_uuids_that_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..2_000).map(|_| new_message_id()).collect();
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 7, "{id}");
            assert_eq!(id, &parsed.hyphenated().to_string(), "the canonical lower-case form");
        }
        // Strictly increasing as text (what both stores' unique indexes compare), even within one millisecond.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");
    }
}
