// @ts-check
// The pchat web client: sign-in, the rooms I belong to or follow, a room's history and live messages, posting.
// Every text that comes from the server is put into the page as text (textContent), never as HTML.

import { ApiError, Stream, call, savedToken, signIn, signOut } from "./api.js";

/** @typedef {{id: string, room: string, seq: number, author: string, ts: string, text: string,
 *   story_title: string | null, alert: boolean, client_id: string | null, replaced: boolean}} Message */

const app = /** @type {HTMLElement} */ (document.getElementById("app"));

/**
 * Creates an element. Children that are strings become text nodes.
 * @param {string} tag
 * @param {Record<string, string | boolean | ((e: any) => void)>} [attrs]
 * @param {(Node | string | null | undefined | false)[]} [children]
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (typeof value === "function") node.addEventListener(key.replace(/^on/, ""), value);
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Text with its http(s) links made clickable; everything else stays text. @param {string} text */
function linkified(text) {
  const out = document.createDocumentFragment();
  const pattern = /\bhttps?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]]/g;
  let at = 0;
  for (const match of text.matchAll(pattern)) {
    const index = match.index ?? 0;
    out.append(document.createTextNode(text.slice(at, index)));
    out.append(h("a", { href: match[0], target: "_blank", rel: "noopener noreferrer" }, [match[0]]));
    at = index + match[0].length;
  }
  out.append(document.createTextNode(text.slice(at)));
  return out;
}

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
};

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
  return Math.max(...map.keys());
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
  state.stream = new Stream(onFrame, onConnection, lastSeq);
  render();
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
    renderSidebar();
  }
}

/** Access to a room ended while the client had it: it closes and nothing more of it is shown. */
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

/** @param {string} room @param {number} seq */
function markRead(room, seq) {
  call("POST", "/me/read", { room, seq }).catch(() => {});
}

/** @param {string} room */
async function openRoom(room) {
  if (state.current && state.current !== room) state.stream?.part(state.current);
  state.current = room;
  state.notice = null;
  const entry = state.rooms.find((r) => r.room.id === room);
  if (entry) entry.unread = 0;
  render();
  state.stream?.join(room);
}

function render() {
  const main = state.current ? roomView(state.current) : emptyView();
  app.replaceChildren(
    h("header", { class: "top" }, [
      h("span", { class: "brand" }, ["pchat"]),
      h("span", { id: "connection", class: `connection ${state.connection}`, role: "status" }, [connectionText()]),
      h("span", { class: "me" }, [state.user?.display_name || state.user?.address || ""]),
      h("button", { type: "button", onclick: leave }, ["Sign out"]),
    ]),
    h("div", { class: "layout" }, [h("nav", { id: "sidebar", "aria-label": "My rooms" }), main]),
  );
  renderSidebar();
  const list = document.getElementById("messages");
  if (list) {
    for (const m of [...held(state.current ?? "").values()].sort((a, b) => a.seq - b.seq)) appendMessage(m);
    const composer = document.getElementById("composer-text");
    composer?.focus();
  }
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
  const sections = [...groups.entries()]
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([category, entries]) =>
      h("section", {}, [
        h("h2", {}, [category]),
        h(
          "ul",
          {},
          entries
            .sort((a, b) => a.room.name.localeCompare(b.room.name))
            .map((entry) =>
              h("li", {}, [
                h(
                  "button",
                  {
                    type: "button",
                    class: entry.room.id === state.current ? "room current" : "room",
                    "aria-current": entry.room.id === state.current ? "page" : false,
                    onclick: () => openRoom(entry.room.id),
                  },
                  [
                    h("span", { class: "name" }, [entry.room.name]),
                    entry.unread > 0
                      ? h("span", { class: "unread", "aria-label": `${entry.unread} unread` }, [String(entry.unread)])
                      : null,
                  ],
                ),
              ]),
            ),
        ),
      ]),
    );
  nav.replaceChildren(
    h("h1", { class: "visually-hidden" }, ["My rooms"]),
    ...(sections.length ? sections : [h("p", { class: "muted" }, ["You are not in any room yet."])]),
  );
}

function emptyView() {
  return h("main", { id: "room", class: "empty" }, [
    state.notice ? h("p", { class: "notice", role: "alert" }, [state.notice]) : null,
    h("p", { class: "muted" }, ["Choose a room."]),
  ]);
}

/** @param {string} roomId */
function roomView(roomId) {
  const room = state.rooms.find((r) => r.room.id === roomId)?.room;
  const text = /** @type {HTMLTextAreaElement} */ (
    h("textarea", { id: "composer-text", name: "text", rows: "2", required: true })
  );
  const form = h("form", { class: "composer" }, [
    h("label", { for: "composer-text", class: "visually-hidden" }, [`Message ${room?.name ?? ""}`]),
    text,
    h("button", { type: "submit" }, ["Send"]),
  ]);
  const send = () => {
    const value = text.value;
    if (!value.trim()) return;
    state.stream?.post(roomId, value);
    text.value = "";
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
  return h("main", { id: "room", "aria-labelledby": "room-name" }, [
    h("div", { class: "room-head" }, [
      h("h1", { id: "room-name" }, [room?.name ?? ""]),
      room ? h("span", { class: `privacy ${room.privacy}` }, [room.privacy]) : null,
      room?.description ? h("p", { class: "description" }, [room.description]) : null,
    ]),
    h("div", { id: "scroller", class: "messages", role: "log", "aria-label": `Messages in ${room?.name ?? ""}` }, [
      h("ol", { id: "messages" }),
    ]),
    form,
  ]);
}

/** @param {string} ts */
function dayOf(ts) {
  return new Date(ts).toLocaleDateString(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

/** Adds a message to the open room's list in seq order, with a day separator when the day changes. @param {Message} m */
function appendMessage(m) {
  const list = document.getElementById("messages");
  if (!list || list.querySelector(`[data-seq="${m.seq}"]`)) return;
  const last = /** @type {HTMLElement | undefined} */ ([...list.querySelectorAll("li.message")].at(-1));
  if (last && Number(last.dataset.seq) > m.seq) {
    // Older than what is shown (rare: history arrives in order): draw the list again.
    list.replaceChildren();
    for (const held of [...(state.messages.get(m.room)?.values() ?? [])].sort((a, b) => a.seq - b.seq)) {
      appendMessage(held);
    }
    return;
  }
  const day = dayOf(m.ts);
  const scroller = /** @type {HTMLElement} */ (list.parentElement);
  const stick = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  if (!last || last.dataset.day !== day) {
    list.append(h("li", { class: "day", "data-day": day }, [day]));
  }
  const time = new Date(m.ts);
  list.append(
    h("li", { class: m.alert ? "message alert" : "message", "data-seq": String(m.seq), "data-day": day }, [
      h("div", { class: "meta" }, [
        h("span", { class: "author" }, [m.author]),
        h("time", { datetime: m.ts }, [time.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })]),
      ]),
      m.story_title ? h("h3", { class: "story" }, [m.story_title]) : null,
      h("p", { class: "text" }, [linkified(m.text)]),
    ]),
  );
  if (stick) scroller.scrollTop = scroller.scrollHeight;
}

if (savedToken()) {
  start().catch(() => showSignIn());
} else {
  showSignIn();
}
