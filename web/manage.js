// @ts-check
// The room management app (Lync's "My Rooms"), at /manage/: the rooms I manage, creating a room (with a name
// availability check and a principal picker), editing it, disabling and enabling it.

import { ApiError, call, collect } from "./api.js";
import { h } from "./dom.js";

/** @type {{me: string, rooms: any[], categories: any[], creatable: any[], addins: any[], editing: any | null | undefined, error: string, saved: string}} */
const manage = { me: "", rooms: [], categories: [], creatable: [], addins: [], editing: undefined, error: "", saved: "" };

/**
 * Loads what the app shows. `editing`: undefined = the list, null = a new room, a room = that room.
 * @param {{address: string} | null} user
 */
export async function loadManage(user) {
  const [rooms, categories, creatable, addins] = await Promise.all([
    collect("/rooms?managed=true&limit=500", 5000, 200),
    call("GET", "/categories?limit=500"),
    call("GET", "/categories?creatable=true&limit=500"),
    call("GET", "/addins").catch(() => ({ items: [] })),
  ]);
  manage.me = user?.address ?? "";
  manage.rooms = rooms.items ?? [];
  manage.categories = categories.items ?? [];
  manage.creatable = creatable.items ?? [];
  manage.addins = addins.items ?? addins ?? [];
}

/** The reason of an API error, for a person. @param {unknown} e */
function reason(e) {
  if (e instanceof ApiError) {
    const known = {
      name_taken: "A room with this name already exists.",
      principal_out_of_scope: "Someone listed is outside the category's scope: ",
      forbidden: "You may not do this here: ",
    };
    return `${known[/** @type {keyof typeof known} */ (e.code)] ?? ""}${e.message}`;
  }
  return String(e);
}

/**
 * The app's main pane.
 * @param {() => void} rerender draws the page again
 * @param {(room: string) => void} openInChat
 */
export function manageView(rerender, openInChat) {
  const children =
    manage.editing === undefined ? listView(rerender, openInChat) : formView(manage.editing, rerender);
  return h("main", { id: "room", class: "pane", "aria-labelledby": "manage-title" }, children);
}

/** @param {() => void} rerender @param {(room: string) => void} openInChat */
function listView(rerender, openInChat) {
  const toggle = async (/** @type {any} */ room) => {
    try {
      await call("PATCH", `/rooms/${encodeURIComponent(room.id)}`, { disabled: !room.disabled });
      room.disabled = !room.disabled;
      manage.error = "";
      manage.saved = `${room.name} is ${room.disabled ? "disabled" : "enabled"}.`;
    } catch (e) {
      manage.error = reason(e);
    }
    rerender();
  };
  return [
    h("h1", { id: "manage-title" }, ["Rooms I manage"]),
    manage.saved ? h("p", { class: "notice", role: "status" }, [manage.saved]) : null,
    manage.error ? h("p", { class: "error", role: "alert" }, [manage.error]) : null,
    manage.creatable.length
      ? h("button", { type: "button", onclick: () => edit(null, rerender) }, ["Create a room"])
      : h("p", { class: "muted" }, [
          "You cannot create rooms: no category lists you as a creator. An administrator can make you one.",
        ]),
    h(
      "ul",
      { class: "cards" },
      manage.rooms.map((room) =>
        h("li", { class: "card" }, [
          h("div", { class: "card-head" }, [
            h("h2", {}, [room.name]),
            h("span", { class: `privacy ${room.privacy}` }, [room.privacy]),
            room.disabled ? h("span", { class: "privacy" }, ["disabled"]) : null,
          ]),
          room.description ? h("p", { class: "description" }, [room.description]) : null,
          h("div", { class: "actions" }, [
            h("button", { type: "button", onclick: () => edit(room, rerender) }, [`Edit ${room.name}`]),
            h("button", { type: "button", class: "secondary", onclick: () => toggle(room) }, [
              `${room.disabled ? "Enable" : "Disable"} ${room.name}`,
            ]),
            room.disabled
              ? null
              : h("button", { type: "button", class: "secondary", onclick: () => openInChat(room.id) }, [
                  `Open ${room.name} in chat`,
                ]),
          ]),
        ]),
      ),
    ),
    manage.rooms.length ? null : h("p", { class: "muted" }, ["You manage no room yet."]),
  ];
}

/** @param {any} room @param {() => void} rerender */
function edit(room, rerender) {
  manage.editing = room;
  manage.error = "";
  manage.saved = "";
  rerender();
  document.getElementById("room-name-input")?.focus();
}

/**
 * A labelled field.
 * @param {string} id @param {string} label @param {HTMLElement} input @param {string} [hint]
 */
function field(id, label, input, hint) {
  input.id = id;
  if (hint) input.setAttribute("aria-describedby", `${id}-hint`);
  return h("div", { class: "field" }, [
    h("label", { for: id }, [label]),
    input,
    hint ? h("p", { id: `${id}-hint`, class: "muted hint" }, [hint]) : null,
  ]);
}

/** @param {string[]} options @param {string} value */
function select(options, value) {
  return h(
    "select",
    {},
    options.map((o) => h("option", { value: o, selected: o === value }, [o])),
  );
}

/** @param {any} room (null: a new room) @param {() => void} rerender */
function formView(room, rerender) {
  const name = /** @type {HTMLInputElement} */ (h("input", { required: true, maxlength: "256", autocomplete: "off" }));
  name.value = room?.name ?? "";
  const availability = h("p", { id: "room-name-status", class: "muted hint", role: "status" });
  let checked = 0;
  const check = async () => {
    const wanted = name.value.trim();
    const ticket = ++checked;
    if (!wanted || wanted === room?.name) {
      availability.textContent = "";
      return;
    }
    let text;
    try {
      await call("GET", `/rooms/name:${encodeURIComponent(wanted)}`);
      text = `“${wanted}” is taken.`;
    } catch (e) {
      text = e instanceof ApiError && e.status === 404 ? `“${wanted}” is available.` : reason(e);
    }
    if (ticket === checked) availability.textContent = text;
  };
  name.addEventListener("input", () => setTimeout(check, 250));
  const description = /** @type {HTMLTextAreaElement} */ (h("textarea", { rows: "2", maxlength: "256" }));
  description.value = room?.description ?? "";
  // A new room goes into a category where I am a creator; an edited room stays where it is or moves to one.
  const current = room ? manage.categories.find((c) => c.id === room.category) ?? { id: room.category, name: room.category } : null;
  const choices = [...(current ? [current] : []), ...manage.creatable.filter((c) => c.id !== current?.id)];
  const category = /** @type {HTMLSelectElement} */ (
    h(
      "select",
      { required: true },
      choices.map((c) => h("option", { value: c.id, selected: c.id === room?.category }, [c.name])),
    )
  );
  const privacy = select(["open", "closed", "secret"], room?.privacy ?? "closed");
  const type = select(["normal", "auditorium"], room?.type ?? "normal");
  const invitations = select(["inherit", "off"], room?.invitations ?? "inherit");
  const addin = h("select", {}, [
    h("option", { value: "" }, ["(none)"]),
    ...manage.addins.map((a) => h("option", { value: a.name, selected: a.name === room?.addin }, [a.name])),
  ]);
  /** @param {string[] | undefined} list */
  const lines = (list) => {
    const area = /** @type {HTMLTextAreaElement} */ (h("textarea", { rows: "3", list: "people" }));
    area.value = (list ?? []).join("\n");
    return area;
  };
  const members = lines(room?.members);
  const managers = lines(room ? room.managers : [manage.me]);
  const presenters = lines(room?.presenters);
  // The principal picker: people found by name or address, added to a list with one click.
  const who = /** @type {HTMLInputElement} */ (h("input", { list: "people", autocomplete: "off" }));
  // It offers only people in the chosen category's scope (whom the server accepts on the room's lists).
  const people = h("datalist", { id: "people" });
  let asked = 0;
  const find = async () => {
    const text = who.value.trim();
    const ticket = ++asked;
    if (text.length < 2) return;
    const path = `/users?query=${encodeURIComponent(text)}&category=${encodeURIComponent(category.value)}&limit=20`;
    const found = await collect(path, 20, 5).catch(() => ({ items: [] }));
    if (ticket !== asked) return;
    people.replaceChildren(
      ...(found.items ?? []).map((/** @type {any} */ u) =>
        h("option", { value: u.address }, [`${u.display_name} <${u.address}>`]),
      ),
    );
  };
  who.addEventListener("input", find);
  category.addEventListener("change", () => {
    people.replaceChildren();
    find();
  });
  /** @param {HTMLTextAreaElement} area @param {string} label */
  const adder = (area, label) =>
    h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: () => {
          const value = who.value.trim();
          if (!value) return;
          const list = area.value.split("\n").map((l) => l.trim()).filter(Boolean);
          if (!list.includes(value)) list.push(value);
          area.value = list.join("\n");
          who.value = "";
        },
      },
      [label],
    );
  const listOf = (/** @type {HTMLTextAreaElement} */ area) =>
    area.value.split("\n").map((l) => l.trim()).filter(Boolean);
  const form = h("form", { class: "manage-form" }, [
    h("h1", { id: "manage-title" }, [room ? `Edit ${room.name}` : "Create a room"]),
    manage.error ? h("p", { class: "error", role: "alert" }, [manage.error]) : null,
    h("div", { class: "field" }, [
      h("label", { for: "room-name-input" }, ["Room name"]),
      Object.assign(name, { id: "room-name-input" }),
      availability,
    ]),
    field("room-description", "Description", description),
    field("room-category", "Category", category, "Rooms can be created in categories where you are a creator; people are found among those in the category's scope."),
    field("room-privacy", "Privacy", privacy, "Open: anyone in the category may read. Closed: members only. Secret: members only, and hidden from the directory."),
    field("room-type", "Type", type, "Auditorium: only presenters post."),
    field("room-invitations", "Invitations", invitations),
    field("room-addin", "Add-in", addin),
    field("room-who", "Find a person", who, "Type part of a name or address, then add them to a list. Lists take one principal per line: user@domain, group:NAME, domain:DOMAIN or *."),
    people,
    h("div", { class: "actions" }, [
      adder(members, "Add as member"),
      adder(managers, "Add as manager"),
      adder(presenters, "Add as presenter"),
    ]),
    field("room-members", "Members", members),
    field("room-managers", "Managers", managers),
    field("room-presenters", "Presenters", presenters),
    h("div", { class: "actions" }, [
      h("button", { type: "submit" }, [room ? "Save changes" : "Create room"]),
      h("button", { type: "button", class: "secondary", onclick: () => { manage.editing = undefined; rerender(); } }, ["Cancel"]),
    ]),
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    /** @type {Record<string, unknown>} */
    const body = {
      name: name.value.trim(),
      description: description.value,
      category: category.value,
      privacy: /** @type {HTMLSelectElement} */ (privacy).value,
      type: /** @type {HTMLSelectElement} */ (type).value,
      invitations: /** @type {HTMLSelectElement} */ (invitations).value,
    };
    const chosenAddin = /** @type {HTMLSelectElement} */ (addin).value;
    try {
      if (room) {
        body.addin = chosenAddin || null;
        body.members = { replace: listOf(members) };
        body.managers = { replace: listOf(managers) };
        body.presenters = { replace: listOf(presenters) };
        const saved = await call("PATCH", `/rooms/${encodeURIComponent(room.id)}`, body);
        manage.rooms = manage.rooms.map((r) => (r.id === saved.id ? saved : r));
        manage.saved = `${saved.name} is saved.`;
      } else {
        if (chosenAddin) body.addin = chosenAddin;
        body.members = listOf(members);
        body.managers = listOf(managers);
        body.presenters = listOf(presenters);
        const made = await call("POST", "/rooms", body);
        manage.rooms = [...manage.rooms, made];
        manage.saved = `${made.name} is created.`;
      }
      manage.editing = undefined;
      manage.error = "";
    } catch (e) {
      manage.error = reason(e);
    }
    rerender();
  });
  return [form];
}
