// @ts-check
// The pchat web client: sign-in, the rooms I belong to or follow, a room's history and live messages, posting.
// Every text that comes from the server is put into the page as text (textContent), never as HTML.

import { ApiError, Stream, call, collect, download, savedToken, signIn, signOut, upload } from "./api.js";
import { h, linkified } from "./dom.js";
import { adminView } from "./admin.js";
import { loadManage, manageView } from "./manage.js";

/** @typedef {{id: string, room: string, seq: number, author: string, ts: string, text: string,
 *   story_title: string | null, alert: boolean, client_id: string | null, replaced: boolean,
 *   file?: {id: string, name: string, size: number, content_type: string}}} Message */

const app = /** @type {HTMLElement} */ (document.getElementById("app"));

const state = {
  /** @type {{address: string, display_name: string} | null} */
  user: null,
  /** @type {any[]} entries of GET /me/rooms */
  rooms: [],
  /** @type {Map<string, string>} category id → name */
  categories: new Map(),
  /** @type {string | null} */
  current: null,
  /** @type {Map<string, Map<number, Message>>} room → seq → message */
  messages: new Map(),
  /** @type {Stream | null} */
  stream: null,
  connection: "connecting",
  /** @type {string | null} why the open room closed */
  notice: null,
  /** @type {"room" | "directory" | "search" | "manage" | "admin" | "account" | "feeds"} what the main pane shows */
  view: "room",
  /** @type {any[]} invitations not yet acted on (newest last) */
  invitations: [],
  /** @type {any[]} the user's topic feeds, each with `unseen` matches */
  feeds: [],
  /** @type {number | null} a message to bring into view once shown */
  target: null,
  admin: false,
  /** @type {"people" | "addin" | null} the room's side pane */
  side: null,
  /** @type {Set<string>} rooms whose oldest message is held */
  complete: new Set(),
};

/** Invitations a user has acted on are remembered in this browser (their ids increase per user). */
function seenInvitation() {
  return Number(localStorage.getItem(`pchat.invitations.${state.user?.address}`) ?? "0");
}

/** @param {string} room */
function held(room) {
  let map = state.messages.get(room);
  if (!map) {
    map = new Map();
    state.messages.set(room, map);
  }
  return map;
}

/** @param {string} room @returns {number | undefined} */
function lastSeq(room) {
  const map = state.messages.get(room);
  if (!map || map.size === 0) return undefined;
  let last = -Infinity;
  for (const seq of map.keys()) if (seq > last) last = seq;
  return last;
}

/** @param {string} room @returns {number | undefined} */
function firstSeq(room) {
  const map = state.messages.get(room);
  if (!map || map.size === 0) return undefined;
  let first = Infinity;
  for (const seq of map.keys()) if (seq < first) first = seq;
  return first;
}

// ---- sign-in ----

function showSignIn(error = "") {
  const user = /** @type {HTMLInputElement} */ (
    h("input", { id: "user", name: "user", type: "email", autocomplete: "username", required: true })
  );
  const password = /** @type {HTMLInputElement} */ (
    h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true })
  );
  const form = h("form", { class: "signin", "aria-labelledby": "signin-title" }, [
    h("h1", { id: "signin-title" }, ["Sign in to pchat"]),
    h("label", { for: "user" }, ["Address"]),
    user,
    h("label", { for: "password" }, ["Password"]),
    password,
    error ? h("p", { class: "error", role: "alert" }, [error]) : null,
    h("button", { type: "submit" }, ["Sign in"]),
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn(user.value, password.value);
      await start();
    } catch (e) {
      showSignIn(e instanceof ApiError && e.status === 401 ? "Wrong address or password." : String(e));
    }
  });
  app.replaceChildren(h("main", { class: "center" }, [form]));
  user.focus();
}

// ---- the signed-in client ----

async function start() {
  const me = await call("GET", "/me");
  state.user = me.user;
  if (!me.chat_enabled) {
    app.replaceChildren(
      h("main", { class: "center" }, [
        h("h1", {}, ["Persistent chat is turned off for you"]),
        h("p", { role: "alert" }, [
          "Your administrator's policy does not enable persistent chat for your account. Ask them to enable it.",
        ]),
        h("button", { type: "button", onclick: leave }, ["Sign out"]),
      ]),
    );
    return;
  }
  try {
    for (const c of (await call("GET", "/categories")).items ?? []) state.categories.set(c.id, c.name);
  } catch {
    // Category names are a nicety: rooms are still listed under their ids.
  }
  const mine = await call("GET", "/me/rooms");
  state.rooms = Array.isArray(mine) ? mine : (mine.items ?? []);
  state.admin = (me.roles ?? []).includes("admin");
  if (location.pathname.startsWith("/manage")) {
    await loadManage(state.user);
    state.view = "manage";
  }
  const invitations = await call("GET", `/me/invitations?after=${seenInvitation()}`).catch(() => ({ items: [] }));
  state.invitations = invitations.items ?? [];
  const feeds = await call("GET", "/me/feeds").catch(() => ({ items: [] }));
  state.feeds = (feeds.items ?? feeds ?? []).map((/** @type {any} */ f) => ({ ...f, unseen: 0 }));
  // Every room of the sidebar is joined from its last known seq, so unread counts and alerts arrive live.
  state.stream = new Stream(onFrame, onConnection, (room) => lastSeq(room) ?? knownLast(room));
  for (const entry of state.rooms) state.stream.join(entry.room.id);
  render();
}

/** The last seq /me/rooms reported for a room (nothing held yet). @param {string} room */
function knownLast(room) {
  const entry = state.rooms.find((r) => r.room.id === room);
  return entry ? (entry.last_seq ?? 0) : undefined;
}

async function leave() {
  state.stream?.close();
  await signOut().catch(() => {});
  location.reload();
}

/** @param {"connecting" | "online" | "offline"} connection */
function onConnection(connection) {
  state.connection = connection;
  const badge = document.getElementById("connection");
  if (badge) {
    badge.textContent = connectionText();
    badge.className = `connection ${connection}`;
  }
}

function connectionText() {
  return { connecting: "Connecting…", online: "Connected", offline: "Reconnecting…" }[state.connection] ?? "";
}

/** @param {any} frame */
function onFrame(frame) {
  switch (frame.type) {
    case "message":
    case "ack":
      receive(frame.message);
      break;
    case "removed_from_room":
    case "room_disabled":
    case "room_deleted":
      lost(frame.room, frame.type);
      break;
    case "error":
      if (frame.op === "join" && frame.room) lost(frame.room, "removed_from_room");
      break;
    case "participant_joined":
    case "participant_left":
      if (frame.room === state.current && state.side === "people") render();
      break;
    case "room_updated": {
      const entry = state.rooms.find((r) => r.room.id === frame.room.id);
      if (entry) {
        entry.room = frame.room;
        if (state.view === "room" && state.current === frame.room.id) render();
        else renderSidebar();
      }
      break;
    }
    case "invitation":
      if (!state.invitations.some((i) => i.id === frame.invitation.id)) state.invitations.push(frame.invitation);
      renderSidebar();
      break;
    case "invitation_withdrawn":
      state.invitations = state.invitations.filter((i) => i.id !== frame.id);
      renderSidebar();
      break;
    case "feed_match": {
      const feed = state.feeds.find((f) => f.id === frame.feed);
      if (feed) feed.unseen += 1;
      renderSidebar();
      notify(`${frame.feed_name}: ${frame.room?.name ?? ""}`, `${frame.message.author}: ${frame.highlight}`);
      break;
    }
    case "activity": {
      const entry = state.rooms.find((r) => r.room.id === frame.room);
      if (entry && frame.last_seq > (entry.last_seq ?? 0)) {
        entry.unread = (entry.unread ?? 0) + (frame.last_seq - (entry.last_seq ?? 0));
        entry.last_seq = frame.last_seq;
        renderSidebar();
      }
      break;
    }
    default:
      break;
  }
}

/** @param {Message} m */
function receive(m) {
  const map = held(m.room);
  if (map.has(m.seq)) return;
  map.set(m.seq, m);
  const entry = state.rooms.find((r) => r.room.id === m.room);
  if (entry) entry.last_seq = Math.max(entry.last_seq ?? 0, m.seq);
  if (m.room === state.current) {
    appendMessage(m);
    markRead(m.room, m.seq);
  } else if (entry) {
    entry.unread = (entry.unread ?? 0) + 1;
    if (m.alert) entry.alerts = (entry.alerts ?? 0) + 1;
    renderSidebar();
  }
}

/**
 * Access to a room ended while the client had it: it closes and nothing more of it is shown.
 * @param {string} room @param {string} why the frame's type
 */
function lost(room, why) {
  state.stream?.part(room);
  state.messages.delete(room);
  state.rooms = state.rooms.filter((r) => r.room.id !== room);
  if (state.current === room) {
    state.current = null;
    state.notice =
      why === "room_disabled"
        ? "This room was disabled by an administrator."
        : why === "room_deleted"
          ? "This room was deleted."
          : "You no longer have access to this room.";
  }
  render();
}

/**
 * Records that the user has read `room` up to `seq`. Reads are sent at most one request per room at a time and
 * coalesced over 100 ms: a page of history or a burst of live messages is one request with the highest seq, not one
 * per message. @param {string} room @param {number} seq
 */
function markRead(room, seq) {
  reads.pending.set(room, Math.max(reads.pending.get(room) ?? 0, seq));
  if (!reads.timer) reads.timer = setTimeout(sendReads, 100);
}

/** Read positions not yet sent, per room, and the rooms with a request in flight. */
const reads = {
  /** @type {Map<string, number>} */
  pending: new Map(),
  /** @type {Set<string>} */
  inFlight: new Set(),
  /** @type {ReturnType<typeof setTimeout> | null} */
  timer: null,
};

function sendReads() {
  reads.timer = null;
  for (const [room, seq] of reads.pending) {
    if (reads.inFlight.has(room)) continue;
    reads.pending.delete(room);
    reads.inFlight.add(room);
    call("POST", "/me/read", { room, seq })
      .catch(() => {})
      .finally(() => {
        reads.inFlight.delete(room);
        // What arrived meanwhile goes in the next request.
        if (reads.pending.has(room) && !reads.timer) reads.timer = setTimeout(sendReads, 100);
      });
  }
}

/**
 * Shows a browser notification when the user allowed them and the page is not in front.
 * @param {string} title @param {string} body
 */
function notify(title, body) {
  if (typeof Notification === "undefined" || Notification.permission !== "granted" || !document.hidden) return;
  try {
    new Notification(title, { body });
  } catch {
    // Some browsers only notify from a service worker: the badge is still there.
  }
}

/** @param {string} room @param {number | null} [target] a seq to bring into view */
async function openRoom(room, target = null) {
  state.current = room;
  state.view = "room";
  if (location.pathname !== "/") history.pushState(null, "", "/");
  state.notice = null;
  state.target = target;
  const entry = state.rooms.find((r) => r.room.id === room);
  if (entry) {
    entry.unread = 0;
    entry.alerts = 0;
  }
  render();
  state.stream?.join(room);
  // A room joined from its last seq holds only what came since: the page before it is loaded at once.
  if (!state.complete.has(room) && held(room).size < 30) {
    if (!held(room).size) await firstMessages(room);
    else await older(room);
  }
  if (target !== null) await reach(room, target);
}

/** The latest page of a room nothing of which is held yet. @param {string} room */
async function firstMessages(room) {
  const page = await call("GET", `/rooms/${encodeURIComponent(room)}/messages`).catch(() => null);
  const items = page?.items ?? page ?? [];
  if (!items.length || items[0].seq === 1) state.complete.add(room);
  for (const m of items) receive(m);
}

/**
 * Loads older messages of the open room (one page), keeping the held messages contiguous; a call while a page is
 * loading gets that page's answer. @param {string} room @returns {Promise<number>} messages loaded
 */
function older(room) {
  const inFlight = loading.get(room);
  if (inFlight) return inFlight;
  if (state.complete.has(room) || !held(room).size) return Promise.resolve(0);
  const load = olderPage(room).finally(() => loading.delete(room));
  loading.set(room, load);
  return load;
}

/** The older page being fetched, per room. @type {Map<string, Promise<number>>} */
const loading = new Map();

/** @param {string} room */
async function olderPage(room) {
  const first = firstSeq(room);
  const page = await call("GET", `/rooms/${encodeURIComponent(room)}/messages?before_seq=${first}&limit=100`);
  const items = page.items ?? page ?? [];
  if (items.length < 100 || items[0]?.seq === 1) state.complete.add(room);
  const scroller = document.getElementById("scroller");
  const list = document.getElementById("messages");
  const fromBottom = scroller ? scroller.scrollHeight - scroller.scrollTop : 0;
  const fresh = items.filter((/** @type {Message} */ m) => !held(room).has(m.seq));
  for (const m of fresh) held(room).set(m.seq, m);
  if (room === state.current && list && fresh.length) {
    // Only the older page is drawn, as a block of its own above what is shown (work per page, not per message held).
    const page = h("ol", { class: "page" });
    let previousDay = "";
    for (const m of fresh.sort((/** @type {Message} */ a, /** @type {Message} */ b) => a.seq - b.seq)) {
      const day = dayOf(m.ts);
      if (day !== previousDay) page.append(h("li", { class: "day", "data-day": day }, [day]));
      previousDay = day;
      page.append(messageItem(m, day));
    }
    const first = list.firstElementChild?.firstElementChild;
    if (first instanceof HTMLElement && first.classList.contains("day") && first.dataset.day === previousDay) first.remove();
    list.prepend(page);
    // The messages in view stay where they were.
    if (scroller) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  }
  return items.length;
}

/** Pages back until `seq` is held, then scrolls it into view and marks it. @param {string} room @param {number} seq */
async function reach(room, seq) {
  for (let i = 0; i < 200 && state.current === room; i++) {
    if (held(room).has(seq) || (held(room).size && (firstSeq(room) ?? Infinity) <= seq)) break;
    if (!held(room).size) {
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    if ((await older(room)) === 0) break;
  }
  const node = document.querySelector(`li.message[data-seq="${seq}"]`);
  if (node) {
    node.classList.add("target");
    node.scrollIntoView({ block: "center" });
    /** @type {HTMLElement} */ (node).focus();
  }
}

function render() {
  const main =
    state.view === "feeds"
      ? feedsView()
      : state.view === "account"
      ? accountView()
      : state.view === "admin"
      ? adminView()
      : state.view === "manage"
      ? manageView(render, (id) => openRoom(id))
      : state.view === "directory"
      ? directoryView()
      : state.view === "search"
        ? searchView()
        : state.current
          ? roomView(state.current)
          : emptyView();
  const query = /** @type {HTMLInputElement} */ (h("input", { id: "search-q", type: "search", name: "q" }));
  const searchForm = h("form", { role: "search", class: "search" }, [
    h("label", { for: "search-q", class: "visually-hidden" }, ["Search messages"]),
    query,
    h("button", { type: "submit" }, ["Search"]),
  ]);
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (query.value.trim()) runSearch({ q: query.value });
  });
  app.replaceChildren(
    h("header", { class: "top" }, [
      h("span", { class: "brand" }, ["pchat"]),
      searchForm,
      h("span", { id: "connection", class: `connection ${state.connection}`, role: "status" }, [connectionText()]),
      state.view === "manage"
        ? h("a", { href: "/", class: "nav-link" }, ["Chat"])
        : h("a", { href: "/manage/", class: "nav-link" }, ["Manage rooms"]),
      state.admin
        ? h("button", { type: "button", class: "secondary", onclick: () => { state.view = "admin"; render(); } }, ["Administration"])
        : null,
      h("button", { type: "button", class: "secondary", onclick: () => { state.view = "account"; render(); } }, ["Account"]),
      h("span", { class: "me" }, [state.user?.display_name || state.user?.address || ""]),
      h("button", { type: "button", onclick: leave }, ["Sign out"]),
    ]),
    h("div", { class: "layout" }, [h("nav", { id: "sidebar", "aria-label": "My rooms" }), main]),
  );
  renderSidebar();
  if (document.getElementById("messages")) {
    drawMessages();
    const scroller = /** @type {HTMLElement} */ (document.getElementById("scroller"));
    scroller.addEventListener("scroll", () => {
      if (scroller.scrollTop < 80 && state.current) older(state.current).catch(() => {});
    });
    document.getElementById("composer-text")?.focus();
  }
}

/** Draws the open room's held messages again, in order. */
function drawMessages() {
  const list = document.getElementById("messages");
  if (!list || !state.current) return;
  list.replaceChildren();
  for (const m of [...held(state.current).values()].sort((a, b) => a.seq - b.seq)) appendMessage(m);
}

function renderSidebar() {
  const nav = document.getElementById("sidebar");
  if (!nav) return;
  /** @type {Map<string, any[]>} */
  const groups = new Map();
  for (const entry of state.rooms) {
    const name = state.categories.get(entry.room.category) ?? entry.room.category;
    groups.set(name, [...(groups.get(name) ?? []), entry]);
  }
  /** @param {any} entry */
  const roomButton = (entry) =>
    h("li", {}, [
      h(
        "button",
        {
          type: "button",
          class: entry.room.id === state.current && state.view === "room" ? "room current" : "room",
          "aria-current": entry.room.id === state.current && state.view === "room" ? "page" : false,
          onclick: () => openRoom(entry.room.id),
        },
        [
          h("span", { class: "name" }, [entry.room.name]),
          entry.following ? h("span", { class: "followed", title: "Followed" }, ["★"]) : null,
          entry.alerts > 0
            ? h("span", { class: "alert-badge", "aria-label": `${entry.alerts} unread alerts` }, ["!"])
            : null,
          entry.unread > 0
            ? h("span", { class: "unread", "aria-label": `${entry.unread} unread` }, [String(entry.unread)])
            : null,
        ],
      ),
    ]);
  const sections = [...groups.entries()]
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([category, entries]) =>
      h("section", {}, [
        h("h2", {}, [category]),
        h("ul", {}, entries.sort((a, b) => a.room.name.localeCompare(b.room.name)).map(roomButton)),
      ]),
    );
  const invitations = state.invitations.length
    ? h("section", { class: "invitations" }, [
        h("h2", {}, [`New rooms (${state.invitations.length})`]),
        h(
          "ul",
          {},
          state.invitations.map((inv) =>
            h("li", {}, [
              h("button", { type: "button", class: "room", onclick: () => acceptInvitation(inv) }, [
                h("span", { class: "name" }, [`Join ${inv.room.name}`]),
              ]),
            ]),
          ),
        ),
      ])
    : null;
  const feeds = h("section", { class: "feeds" }, [
        h("h2", {}, ["Topic feeds"]),
        h("button", { type: "button", class: "secondary small", onclick: () => { state.view = "feeds"; render(); } }, ["Manage topic feeds"]),
        h(
          "ul",
          {},
          state.feeds.map((feed) =>
            h("li", {}, [
              h("button", { type: "button", class: "room", onclick: () => openFeed(feed) }, [
                h("span", { class: "name" }, [feed.name]),
                feed.unseen > 0
                  ? h("span", { class: "unread", "aria-label": `${feed.unseen} new matches` }, [String(feed.unseen)])
                  : null,
              ]),
            ]),
          ),
        ),
      ]);
  const parts = [
    h("h1", { class: "visually-hidden" }, ["My rooms"]),
    h("button", { type: "button", class: "browse", onclick: () => openDirectory() }, ["Browse rooms"]),
    invitations,
    ...(sections.length ? sections : [h("p", { class: "muted" }, ["You are not in any room yet."])]),
    feeds,
  ];
  nav.replaceChildren(...parts.filter((p) => p !== null));
}

/** Joins an invited room: it opens, joins the sidebar, and the invitation is done with. @param {any} inv */
async function acceptInvitation(inv) {
  state.invitations = state.invitations.filter((i) => i.id !== inv.id);
  localStorage.setItem(`pchat.invitations.${state.user?.address}`, String(Math.max(seenInvitation(), inv.id)));
  if (!state.rooms.some((r) => r.room.id === inv.room.id)) {
    state.rooms.push({ room: inv.room, following: false, unread: 0, last_seq: 0 });
  }
  await openRoom(inv.room.id);
}

// ---- my account ----

function accountView() {
  const current = /** @type {HTMLInputElement} */ (h("input", { id: "current-password", type: "password", autocomplete: "current-password", required: true }));
  const next = /** @type {HTMLInputElement} */ (h("input", { id: "new-password", type: "password", autocomplete: "new-password", minlength: "8", required: true }));
  const outcome = h("p", { role: "status" });
  const form = h("form", { class: "manage-form" }, [
    h("h2", {}, ["Change password"]),
    h("label", { for: "current-password" }, ["Current password"]),
    current,
    h("label", { for: "new-password" }, ["New password (at least 8 characters)"]),
    next,
    h("button", { type: "submit" }, ["Change password"]),
    outcome,
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await call("PUT", "/me/password", { current_password: current.value, new_password: next.value });
      outcome.textContent = "Your password is changed.";
      outcome.className = "notice";
    } catch (e) {
      outcome.textContent = e instanceof ApiError ? e.message : String(e);
      outcome.className = "error";
    }
    current.value = "";
    next.value = "";
  });
  const notifications =
    typeof Notification === "undefined"
      ? h("p", { class: "muted" }, ["This browser cannot show notifications."])
      : h("div", {}, [
          h("p", {}, [
            Notification.permission === "granted"
              ? "Topic feed matches are shown as notifications while pchat is in the background."
              : "Topic feed matches raise a badge; the browser can also notify you.",
          ]),
          Notification.permission === "default"
            ? h("button", { type: "button", onclick: () => Notification.requestPermission().then(() => render()) }, ["Allow notifications"])
            : null,
        ]);
  return h("main", { id: "room", class: "pane", "aria-labelledby": "account-title" }, [
    h("h1", { id: "account-title" }, ["My account"]),
    h("p", {}, [`Signed in as ${state.user?.address ?? ""}.`]),
    form,
    h("h2", {}, ["Notifications"]),
    notifications,
  ]);
}

// ---- the room directory ----

/** @type {any[]} */
let directory = [];

async function openDirectory(query = "") {
  state.view = "directory";
  const params = new URLSearchParams({ limit: "200" });
  if (query) params.set("query", query);
  const page = await collect(`/rooms?${params}`, 200);
  directory = page.items;
  render();
  const input = /** @type {HTMLInputElement | null} */ (document.getElementById("directory-q"));
  if (input) {
    input.value = query;
    input.focus();
  }
}

function directoryView() {
  const input = /** @type {HTMLInputElement} */ (h("input", { id: "directory-q", type: "search", name: "query" }));
  const form = h("form", { class: "inline", role: "search" }, [
    h("label", { for: "directory-q" }, ["Find a room by name"]),
    input,
    h("button", { type: "submit" }, ["Find"]),
  ]);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    openDirectory(input.value.trim());
  });
  return h("main", { id: "room", class: "pane", "aria-labelledby": "directory-title" }, [
    h("h1", { id: "directory-title" }, ["Rooms"]),
    form,
    h(
      "ul",
      { class: "cards" },
      directory.map((room) => {
        const mine = state.rooms.find((r) => r.room.id === room.id);
        return h("li", { class: "card" }, [
          h("div", { class: "card-head" }, [
            h("h2", {}, [room.name]),
            h("span", { class: `privacy ${room.privacy}` }, [room.privacy]),
          ]),
          room.description ? h("p", { class: "description" }, [room.description]) : null,
          h("div", { class: "actions" }, [
            h("button", { type: "button", onclick: () => openFromDirectory(room) }, [`Open ${room.name}`]),
            h(
              "button",
              { type: "button", class: "secondary", onclick: () => setFollow(room, !mine?.following) },
              [mine?.following ? `Unfollow ${room.name}` : `Follow ${room.name}`],
            ),
          ]),
        ]);
      }),
    ),
    directory.length ? null : h("p", { class: "muted" }, ["No room matches."]),
  ]);
}

/** @param {any} room */
async function openFromDirectory(room) {
  if (!state.rooms.some((r) => r.room.id === room.id)) {
    state.rooms.push({ room, following: false, unread: 0, last_seq: 0 });
  }
  await openRoom(room.id);
}

/** @param {any} room @param {boolean} follow */
async function setFollow(room, follow) {
  await call(follow ? "PUT" : "DELETE", `/me/follows/${encodeURIComponent(room.id)}`);
  const mine = await call("GET", "/me/rooms");
  state.rooms = Array.isArray(mine) ? mine : (mine.items ?? []);
  render();
}

// ---- history search and topic feeds ----

/** @type {{title: string, items: any[], next: string | null, params: Record<string, string> | null, error: string}} */
let results = { title: "", items: [], next: null, params: null, error: "" };

/** The query string of a search: `room` may hold several ids, comma-separated. @param {Record<string, string>} params */
function searchQuery(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (!value) continue;
    if (key === "room") value.split(",").forEach((room) => query.append("room", room));
    else query.set(key, value);
  }
  return query;
}

/** @param {Record<string, string>} params */
async function runSearch(params) {
  const query = searchQuery({ ...params, limit: "50" });
  try {
    const page = await call("GET", `/search?${query}`);
    results = { title: `Results for “${params.q}”`, items: page.items ?? [], next: page.next_cursor ?? null, params, error: "" };
  } catch (e) {
    results = { title: `Results for “${params.q}”`, items: [], next: null, params, error: e instanceof ApiError ? e.message : String(e) };
  }
  state.view = "search";
  render();
}

/** The search filters (API.md's parameters), prefilled with the last search. */
function searchFilters() {
  const p = results.params ?? {};
  const q = /** @type {HTMLInputElement} */ (h("input", { id: "f-q", required: true }));
  q.value = p.q ?? "";
  const match = h("select", { id: "f-match" }, [
    h("option", { value: "all", selected: p.match === "all" || !p.match }, ["All words"]),
    h("option", { value: "any", selected: p.match === "any" }, ["Any word"]),
    h("option", { value: "exact", selected: p.match === "exact" }, ["Exact phrase"]),
  ]);
  const cs = /** @type {HTMLInputElement} */ (h("input", { id: "f-case", type: "checkbox", checked: p.case_sensitive === "true" }));
  const author = /** @type {HTMLInputElement} */ (h("input", { id: "f-author", type: "email" }));
  author.value = p.author ?? "";
  const from = /** @type {HTMLInputElement} */ (h("input", { id: "f-from", type: "date" }));
  from.value = p.from ? p.from.slice(0, 10) : "";
  const to = /** @type {HTMLInputElement} */ (h("input", { id: "f-to", type: "date" }));
  to.value = p.to ? p.to.slice(0, 10) : "";
  const room = h("select", { id: "f-room" }, [
    h("option", { value: "" }, ["Every room I may read"]),
    ...state.rooms.map((r) => h("option", { value: r.room.id, selected: p.room === r.room.id }, [r.room.name])),
  ]);
  const form = h("form", { class: "filters" }, [
    h("div", { class: "field" }, [h("label", { for: "f-q" }, ["Words"]), q]),
    h("div", { class: "field" }, [h("label", { for: "f-match" }, ["Match"]), match]),
    h("label", { class: "check", for: "f-case" }, [cs, "Case sensitive"]),
    h("div", { class: "field" }, [h("label", { for: "f-author" }, ["Author"]), author]),
    h("div", { class: "field" }, [h("label", { for: "f-from" }, ["From"]), from]),
    h("div", { class: "field" }, [h("label", { for: "f-to" }, ["To"]), to]),
    h("div", { class: "field" }, [h("label", { for: "f-room" }, ["Room"]), room]),
    h("button", { type: "submit" }, ["Apply filters"]),
  ]);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch({
      q: q.value,
      match: /** @type {HTMLSelectElement} */ (match).value,
      case_sensitive: cs.checked ? "true" : "",
      author: author.value.trim(),
      from: from.value ? new Date(`${from.value}T00:00:00`).toISOString() : "",
      to: to.value ? new Date(`${to.value}T23:59:59.999`).toISOString() : "",
      room: /** @type {HTMLSelectElement} */ (room).value,
    });
  });
  return h("details", { class: "filter-box", open: Object.keys(p).some((k) => k !== "q" && p[k]) }, [
    h("summary", {}, ["Filters"]),
    form,
  ]);
}

/** @param {any} feed */
async function openFeed(feed) {
  feed.unseen = 0;
  const page = await call("GET", `/me/feeds/${encodeURIComponent(feed.id)}/messages?limit=50`);
  results = { title: `Topic feed “${feed.name}”`, items: page.items ?? [], next: null, params: null, error: "" };
  state.view = "search";
  render();
}

/** @type {any | null} the topic feed being edited in place (null: the form creates a new one) */
let editingFeed = null;

/** Topic feeds: the user's saved searches, created, edited in place and deleted here. */
function feedsView() {
  const feed = editingFeed;
  const name = /** @type {HTMLInputElement} */ (h("input", { id: "feed-name", required: true, maxlength: "256" }));
  const keywords = /** @type {HTMLInputElement} */ (h("input", { id: "feed-keywords", required: true, maxlength: "1000" }));
  const match = /** @type {HTMLSelectElement} */ (
    h("select", { id: "feed-match" }, [
      h("option", { value: "all" }, ["All words"]),
      h("option", { value: "any" }, ["Any word"]),
      h("option", { value: "exact" }, ["Exact phrase"]),
    ])
  );
  const caseSensitive = /** @type {HTMLInputElement} */ (h("input", { id: "feed-case", type: "checkbox" }));
  const authors = /** @type {HTMLInputElement} */ (
    h("input", { id: "feed-authors", placeholder: "anyone", "aria-describedby": "feed-authors-hint" })
  );
  // Rooms: any room I may read (empty: all of them); those in my sidebar are offered by name.
  const rooms = /** @type {HTMLSelectElement} */ (
    h(
      "select",
      { id: "feed-rooms", multiple: true, size: String(Math.min(6, Math.max(2, state.rooms.length))), "aria-describedby": "feed-rooms-hint" },
      state.rooms.map((entry) =>
        h("option", { value: entry.room.id, selected: Boolean(feed?.rooms?.includes(entry.room.id)) }, [entry.room.name]),
      ),
    )
  );
  if (feed) {
    name.value = feed.name;
    keywords.value = feed.keywords;
    match.value = feed.match;
    caseSensitive.checked = Boolean(feed.case_sensitive);
    authors.value = (feed.authors ?? []).join(", ");
  }
  const outcome = h("p", { role: "status" });
  const form = h("form", { class: "manage-form", "aria-labelledby": "feed-form-title" }, [
    h("h2", { id: "feed-form-title" }, [feed ? `Edit “${feed.name}”` : "New topic feed"]),
    h("label", { for: "feed-name" }, ["Feed name"]),
    name,
    h("label", { for: "feed-keywords" }, ["Keywords"]),
    keywords,
    h("label", { for: "feed-match" }, ["Match"]),
    match,
    h("label", { class: "check" }, [caseSensitive, " Match case and accents exactly"]),
    h("label", { for: "feed-authors" }, ["Authors"]),
    authors,
    h("p", { id: "feed-authors-hint", class: "muted hint" }, ["Addresses separated by commas; empty for anyone."]),
    h("label", { for: "feed-rooms" }, ["Rooms"]),
    rooms,
    h("p", { id: "feed-rooms-hint", class: "muted hint" }, ["None selected: every room you may read."]),
    h("div", { class: "actions" }, [
      h("button", { type: "submit" }, [feed ? "Save feed" : "Create feed"]),
      feed
        ? h("button", { type: "button", class: "secondary", onclick: () => { editingFeed = null; render(); } }, ["Cancel"])
        : null,
    ]),
    outcome,
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      name: name.value,
      keywords: keywords.value,
      match: match.value,
      case_sensitive: caseSensitive.checked,
      authors: authors.value.split(/[\s,;]+/).filter(Boolean),
      // Rooms outside the sidebar that the feed already names are kept.
      rooms: [
        ...Array.from(rooms.selectedOptions, (o) => o.value),
        ...(feed?.rooms ?? []).filter((/** @type {string} */ id) => !state.rooms.some((e) => e.room.id === id)),
      ],
    };
    try {
      if (feed) {
        const saved = await call("PATCH", `/me/feeds/${encodeURIComponent(feed.id)}`, body);
        state.feeds = state.feeds.map((f) => (f.id === saved.id ? { ...saved, unseen: f.unseen } : f));
        editingFeed = null;
      } else {
        const made = await call("POST", "/me/feeds", body);
        state.feeds.push({ ...made, unseen: 0 });
      }
      render();
    } catch (e) {
      outcome.textContent = e instanceof ApiError ? e.message : String(e);
      outcome.className = "error";
    }
  });
  const remove = async (/** @type {any} */ gone) => {
    await call("DELETE", `/me/feeds/${encodeURIComponent(gone.id)}`);
    state.feeds = state.feeds.filter((f) => f.id !== gone.id);
    if (editingFeed?.id === gone.id) editingFeed = null;
    render();
  };
  const edit = (/** @type {any} */ chosen) => {
    editingFeed = chosen;
    render();
    document.getElementById("feed-name")?.focus();
  };
  const roomName = (/** @type {string} */ id) => state.rooms.find((e) => e.room.id === id)?.room.name ?? "another room";
  return h("main", { id: "room", class: "pane", "aria-labelledby": "feeds-title" }, [
    h("h1", { id: "feeds-title" }, ["Topic feeds"]),
    h("p", { class: "muted" }, ["A topic feed watches every room you may read and tells you when a new message matches."]),
    h(
      "ul",
      { class: "cards" },
      state.feeds.map((f) =>
        h("li", { class: "card" }, [
          h("div", { class: "card-head" }, [h("h2", {}, [f.name]), h("span", { class: "privacy" }, [f.match])]),
          h("p", { class: "description" }, [f.keywords]),
          f.authors?.length ? h("p", { class: "muted" }, [`By ${f.authors.join(", ")}`]) : null,
          f.rooms?.length ? h("p", { class: "muted" }, [`In ${f.rooms.map(roomName).join(", ")}`]) : null,
          h("div", { class: "actions" }, [
            h("button", { type: "button", class: "secondary", onclick: () => edit(f) }, [`Edit ${f.name}`]),
            h("button", { type: "button", class: "secondary", onclick: () => remove(f) }, [`Delete ${f.name}`]),
          ]),
        ]),
      ),
    ),
    form,
  ]);
}

/** The highlight with its matched ranges marked. @param {any} item */
function highlight(item) {
  const chars = Array.from(item.highlight ?? "");
  const out = h("p", { class: "text" });
  let at = 0;
  for (const range of item.highlight_ranges ?? []) {
    out.append(document.createTextNode(chars.slice(at, range.start).join("")));
    out.append(h("mark", {}, [chars.slice(range.start, range.end).join("")]));
    at = range.end;
  }
  out.append(document.createTextNode(chars.slice(at).join("")));
  return out;
}

function searchView() {
  const more = async () => {
    if (!results.next || !results.params) return;
    const page = await call("GET", `/search?${searchQuery({ ...results.params, cursor: results.next })}`);
    results = { ...results, items: [...results.items, ...(page.items ?? [])], next: page.next_cursor ?? null };
    render();
  };
  return h("main", { id: "room", class: "pane", "aria-labelledby": "results-title" }, [
    h("h1", { id: "results-title" }, [results.title]),
    results.params ? searchFilters() : null,
    results.error ? h("p", { class: "error", role: "alert" }, [results.error]) : null,
    h(
      "ol",
      { class: "cards results" },
      results.items.map((item) =>
        h("li", { class: "card" }, [
          h("div", { class: "meta" }, [
            h("span", { class: "author" }, [item.message.author]),
            h("span", { class: "muted" }, [`in ${item.room?.name ?? ""}`]),
            h("time", { datetime: item.message.ts }, [new Date(item.message.ts).toLocaleString()]),
          ]),
          highlight(item),
          h(
            "button",
            {
              type: "button",
              class: "secondary",
              onclick: () => jumpTo(item),
            },
            [`Show in ${item.room?.name ?? "room"}`],
          ),
        ]),
      ),
    ),
    results.items.length ? null : h("p", { class: "muted" }, ["Nothing found."]),
    results.next ? h("button", { type: "button", onclick: more }, ["More results"]) : null,
  ]);
}

/** @param {any} item */
async function jumpTo(item) {
  const room = item.message.room;
  if (!state.rooms.some((r) => r.room.id === room)) {
    const full = await call("GET", `/rooms/${encodeURIComponent(room)}`);
    state.rooms.push({ room: full, following: false, unread: 0, last_seq: 0 });
  }
  await openRoom(room, item.message.seq);
}

function emptyView() {
  return h("main", { id: "room", class: "empty" }, [
    state.notice ? h("p", { class: "notice", role: "alert" }, [state.notice]) : null,
    h("p", { class: "muted" }, ["Choose a room."]),
  ]);
}

/** @param {string} roomId */
function roomView(roomId) {
  const entry = state.rooms.find((r) => r.room.id === roomId);
  const room = entry?.room;
  const text = /** @type {HTMLTextAreaElement} */ (
    h("textarea", { id: "composer-text", name: "text", rows: "2", required: true })
  );
  const picker = /** @type {HTMLInputElement} */ (h("input", { id: "attach", type: "file", multiple: true, class: "visually-hidden" }));
  picker.addEventListener("change", () => {
    if (picker.files?.length) sendFiles(roomId, picker.files);
    picker.value = "";
  });
  const form = h("form", { class: "composer" }, [
    h("label", { for: "composer-text", class: "visually-hidden" }, [`Message ${room?.name ?? ""}`]),
    text,
    picker,
    h("label", { for: "attach", class: "attach", title: "Attach files" }, ["Attach file"]),
    h("button", { type: "submit" }, ["Send"]),
  ]);
  const title = /** @type {HTMLInputElement} */ (h("input", { id: "story-title", maxlength: "256", placeholder: "Story title" }));
  const alert = /** @type {HTMLInputElement} */ (h("input", { id: "as-alert", type: "checkbox" }));
  const options = h("div", { class: "post-options" }, [
    h("label", { for: "story-title", class: "visually-hidden" }, ["Story title (optional)"]),
    title,
    h("label", { class: "check" }, [alert, "Alert"]),
  ]);
  const send = () => {
    const value = text.value;
    if (!value.trim()) return;
    /** @type {{story_title?: string, alert?: boolean}} */
    const extra = {};
    if (title.value.trim()) extra.story_title = title.value.trim();
    if (alert.checked) extra.alert = true;
    state.stream?.post(roomId, value, extra);
    text.value = "";
    title.value = "";
    alert.checked = false;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      send();
    }
  });
  const main = h("main", { id: "room", "aria-labelledby": "room-name" }, [
    h("div", { class: "room-head" }, [
      h("h1", { id: "room-name" }, [room?.name ?? ""]),
      room ? h("span", { class: `privacy ${room.privacy}` }, [room.privacy]) : null,
      h("span", { class: "head-actions" }, [
        h("button", { type: "button", class: "secondary", "aria-pressed": state.side === "people" ? "true" : "false", onclick: () => toggleSide("people") }, ["People"]),
        room?.addin
          ? h("button", { type: "button", class: "secondary", "aria-pressed": state.side === "addin" ? "true" : "false", onclick: () => toggleSide("addin") }, ["Add-in"])
          : null,
        room
          ? h("button", { type: "button", class: "secondary", onclick: () => setFollow(room, !entry?.following) }, [
              entry?.following ? "Unfollow" : "Follow",
            ])
          : null,
      ]),
      room?.description ? h("p", { class: "description" }, [room.description]) : null,
    ]),
    h("div", { id: "scroller", class: "messages", role: "log", "aria-label": `Messages in ${room?.name ?? ""}` }, [
      h("div", { id: "messages" }),
    ]),
    h("div", { id: "uploads", class: "uploads", "aria-live": "polite" }),
    options,
    form,
  ]);
  if (state.side) {
    const side = h("aside", { id: "side", class: "side", "aria-label": state.side === "people" ? "People in this room" : "Add-in" });
    fillSide(side, roomId, room);
    main.classList.add("with-side");
    main.append(side);
  }
  // Files dropped anywhere on the room are uploaded into it.
  main.addEventListener("dragover", (event) => event.preventDefault());
  main.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer?.files.length) sendFiles(roomId, event.dataTransfer.files);
  });
  return main;
}

/** @param {"people" | "addin"} what */
function toggleSide(what) {
  state.side = state.side === what ? null : what;
  render();
}

/** The side pane: the roster, or the room's add-in in a sandboxed frame. @param {HTMLElement} side @param {string} roomId @param {any} room */
async function fillSide(side, roomId, room) {
  if (state.side === "people") {
    side.append(h("h2", {}, ["People"]));
    try {
      const roster = await call("GET", `/rooms/${encodeURIComponent(roomId)}/participants`);
      const people = roster.participants ?? [];
      side.append(
        roster.suppressed
          ? h("p", { class: "muted" }, ["This room is too large to list who is here."])
          : h("ul", { class: "people" }, people.map((/** @type {any} */ u) => h("li", {}, [u.display_name || u.address]))),
        people.length || roster.suppressed ? "" : h("p", { class: "muted" }, ["Nobody else is here now."]),
      );
    } catch (e) {
      side.append(h("p", { class: "error" }, [e instanceof ApiError ? e.message : String(e)]));
    }
  } else if (state.side === "addin" && room?.addin) {
    try {
      const addin = await call("GET", `/addins/${encodeURIComponent(room.addin)}`);
      const url = new URL(addin.url);
      // An add-in from this server's own origin gets no same-origin rights: it could otherwise reach the client.
      const sandbox = ["allow-scripts", "allow-forms", "allow-popups"];
      if (url.origin !== location.origin) sandbox.push("allow-same-origin");
      side.append(
        h("h2", {}, [addin.name]),
        h("iframe", { src: url.href, sandbox: sandbox.join(" "), title: `Add-in ${addin.name}`, referrerpolicy: "no-referrer" }),
      );
    } catch (e) {
      side.append(h("p", { class: "error" }, [e instanceof ApiError ? e.message : String(e)]));
    }
  }
}

/** A human size. @param {number} bytes */
function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** @param {{id: string, name: string, size: number}} file */
function fileButton(file) {
  const status = h("span", { class: "muted", role: "status" });
  return h("div", { class: "file" }, [
    h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: () =>
          download(file).catch((e) => {
            status.textContent = e instanceof ApiError ? e.message : String(e);
          }),
      },
      [`Download ${file.name}`],
    ),
    h("span", { class: "muted" }, [size(file.size)]),
    status,
  ]);
}

/** Uploads files into the room with a progress bar each. @param {string} roomId @param {FileList | File[]} files */
async function sendFiles(roomId, files) {
  const area = document.getElementById("uploads");
  for (const file of Array.from(files)) {
    const bar = /** @type {HTMLProgressElement} */ (h("progress", { max: "1", value: "0", "aria-label": `Uploading ${file.name}` }));
    const row = h("div", { class: "upload" }, [h("span", {}, [file.name]), bar]);
    area?.append(row);
    try {
      const answer = await upload(roomId, file, (done) => {
        bar.value = done;
      });
      receive(answer.message);
      row.remove();
    } catch (e) {
      row.replaceChildren(h("span", { class: "error", role: "alert" }, [`${file.name}: ${e instanceof ApiError ? e.message : String(e)}`]));
      setTimeout(() => row.remove(), 8000);
    }
  }
}

/** @param {string} ts */
function dayOf(ts) {
  return dayFormat.format(new Date(ts));
}

// Made once: `toLocaleDateString` with options builds a formatter on every call, twice per message drawn.
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/** Adds a message to the open room's list in seq order, with a day separator when the day changes. @param {Message} m */
function appendMessage(m) {
  const list = document.getElementById("messages");
  if (!list) return;
  // The last item is a message whenever there is one (a day separator is always followed by its message).
  let page = /** @type {HTMLElement | null} */ (list.lastElementChild);
  const last = /** @type {HTMLElement | null} */ (page?.lastElementChild ?? null);
  if (last && Number(last.dataset.seq) === m.seq) return;
  if (last && Number(last.dataset.seq) > m.seq) {
    if (list.querySelector(`[data-seq="${m.seq}"]`)) return;
    // Older than what is shown (rare: history arrives in order): draw the list again.
    list.replaceChildren();
    for (const held of [...(state.messages.get(m.room)?.values() ?? [])].sort((a, b) => a.seq - b.seq)) {
      appendMessage(held);
    }
    return;
  }
  const day = dayOf(m.ts);
  if (stickToBottom === null) {
    // Measured once per frame, before the first message of the frame is added: measuring after each one would lay
    // out the whole list again for every message of a page or a burst.
    const scroller = /** @type {HTMLElement} */ (list.parentElement);
    stickToBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    requestAnimationFrame(() => {
      const scroller = document.getElementById("scroller");
      if (stickToBottom && scroller) scroller.scrollTop = scroller.scrollHeight;
      stickToBottom = null;
    });
  }
  if (!page || page.childElementCount >= PAGE_ITEMS) {
    page = h("ol", { class: "page" });
    list.append(page);
  }
  if (!last || last.dataset.day !== day) {
    page.append(h("li", { class: "day", "data-day": day }, [day]));
  }
  page.append(messageItem(m, day));
}

/**
 * Items (messages and day separators) in one block of the message list. The list is a column of such blocks, each
 * contained (style.css): adding a page above or a message below then lays out and paints one block's worth of
 * items, where one flat list of 10,000 items cost the browser some 40 ms per page of history (measured in Chromium
 * on the development machine, 2026-11-28).
 */
const PAGE_ITEMS = 100;

/** Whether the messages added in this frame keep the list scrolled to the bottom (null: none added yet). @type {boolean | null} */
let stickToBottom = null;

/** One message's list item. @param {Message} m @param {string} day */
function messageItem(m, day) {
  const time = new Date(m.ts);
  return (
    h("li", { class: m.alert ? "message alert" : "message", "data-seq": String(m.seq), "data-day": day, tabindex: "-1" }, [
      h("div", { class: "meta" }, [
        h("span", { class: "author" }, [m.author]),
        h("time", { datetime: m.ts }, [timeFormat.format(time)]),
      ]),
      m.story_title
        ? h("details", { class: "story" }, [h("summary", {}, [m.story_title]), h("p", { class: "text" }, [linkified(m.text)])])
        : h("p", { class: "text" }, [linkified(m.text)]),
      m.file ? fileButton(m.file) : null,
    ])
  );
}

if (savedToken()) {
  start().catch(() => showSignIn());
} else {
  showSignIn();
}
