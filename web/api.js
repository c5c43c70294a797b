// @ts-check
// The pchat API as the web client uses it: HTTP calls with the session's token, and the live stream with its
// reconnection. Only the public API of API.md is used.

/** An error answer of the API (problem+json). */
export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} detail */
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status;
    this.code = code;
  }
}

const TOKEN_KEY = "pchat.token";

/** The session token of this tab (sessionStorage: it ends with the tab). */
export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/**
 * Calls the API.
 * @param {string} method
 * @param {string} path under /api/v1
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function call(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = {};
  const token = savedToken();
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new ApiError(response.status, data?.code ?? "error", data?.detail ?? response.statusText);
  }
  return data;
}

/**
 * Items of a listing, following `next_cursor` until `want` items are in or the listing ends: the room directory and
 * the user search may answer a page that is short (even empty) and still continues, when the server stopped after
 * examining its bounded share of the directory. At most `requests` pages are asked for; `next` is where to go on.
 * @param {string} path under /api/v1, with its query string
 * @param {number} want @param {number} [requests]
 * @returns {Promise<{items: any[], next: string | null}>}
 */
export async function collect(path, want, requests = 20) {
  /** @type {any[]} */
  const items = [];
  /** @type {string | null} */
  let next = null;
  for (let asked = 0; asked < requests; asked++) {
    const cursor = next ? `${path.includes("?") ? "&" : "?"}cursor=${encodeURIComponent(next)}` : "";
    const page = await call("GET", `${path}${cursor}`);
    items.push(...(page.items ?? []));
    next = page.next_cursor ?? null;
    if (!next || items.length >= want) break;
  }
  return { items, next };
}

/**
 * Uploads a file into a room, streamed from disk, reporting progress (0–1). Resolves with the API's answer.
 * @param {string} room @param {File} file @param {(done: number) => void} onProgress
 * @returns {Promise<any>}
 */
export function upload(room, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/rooms/${encodeURIComponent(room)}/files?name=${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader("authorization", `Bearer ${savedToken() ?? ""}`);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      const data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data?.code ?? "error", data?.detail ?? xhr.statusText));
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload was interrupted"));
    xhr.send(file);
  });
}

/**
 * Downloads a file of a room. The API asks for a short-lived download link (a minute, for this file and this
 * session) and the browser follows it, streaming the file to disk however large it is, with its own progress.
 * @param {{id: string, name: string}} file
 */
export async function download(file) {
  const link = await call("POST", `/files/${encodeURIComponent(file.id)}/link`);
  const a = document.createElement("a");
  a.href = link.url;
  a.download = file.name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
}

/** Signs in; keeps the token for this tab. @param {string} user @param {string} password */
export async function signIn(user, password) {
  sessionStorage.removeItem(TOKEN_KEY);
  const session = await call("POST", "/sessions", { user, password });
  sessionStorage.setItem(TOKEN_KEY, session.token);
  return session;
}

export async function signOut() {
  try {
    await call("DELETE", "/sessions/current");
  } finally {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

/**
 * The live stream: one WebSocket, reconnected after any drop (backoff up to 5 s). Joined rooms are joined again
 * with `after_seq` = the last message the client holds, so the server fills every gap; posts not yet
 * acknowledged are sent again with the same `client_id` (the server answers a retry with the original message).
 */
export class Stream {
  /**
   * @param {(frame: any) => void} onFrame
   * @param {(state: "connecting" | "online" | "offline") => void} onState
   * @param {(room: string) => number | undefined} lastSeqOf the last seq the client holds for a room
   */
  constructor(onFrame, onState, lastSeqOf) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.lastSeqOf = lastSeqOf;
    /** @type {Set<string>} */
    this.rooms = new Set();
    /** @type {Map<string, any>} client_id → post frame */
    this.unacked = new Map();
    /** @type {WebSocket | null} */
    this.socket = null;
    this.delay = 250;
    this.closed = false;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    this.onState("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = encodeURIComponent(savedToken() ?? "");
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/stream?token=${token}`);
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 250;
      this.onState("online");
      for (const room of this.rooms) this.sendJoin(room);
      for (const post of this.unacked.values()) socket.send(JSON.stringify(post));
    };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "ack") this.unacked.delete(frame.client_id);
      this.onFrame(frame);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.closed) return;
      this.onState("offline");
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 5000);
    };
  }

  /** @param {string} room */
  sendJoin(room) {
    const last = this.lastSeqOf(room);
    /** @type {Record<string, unknown>} */
    const frame = { op: "join", room };
    if (last !== undefined) frame.after_seq = last;
    this.send(frame);
  }

  /** @param {unknown} frame */
  send(frame) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  /** @param {string} room */
  join(room) {
    if (this.rooms.has(room)) return;
    this.rooms.add(room);
    this.sendJoin(room);
  }

  /** @param {string} room */
  part(room) {
    this.rooms.delete(room);
    this.send({ op: "part", room });
  }

  /**
   * Posts; the `ack` frame answers it.
   * @param {string} room @param {string} text @param {{story_title?: string, alert?: boolean}} [extra]
   * @returns {string} client_id
   */
  post(room, text, extra = {}) {
    const clientId = crypto.randomUUID();
    const frame = { op: "post", room, text, client_id: clientId, ...extra };
    this.unacked.set(clientId, frame);
    this.send(frame);
    return clientId;
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }
}
