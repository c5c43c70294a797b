// @ts-check
// Administration pages (administrators only; the server checks every call): categories, policies,
// configuration, add-ins, pool status, compliance and the audit trail. Each tab reads the API when opened.

import { ApiError, call } from "./api.js";
import { h } from "./dom.js";

const TABS = ["Categories", "Policies", "Configuration", "Add-ins", "Pool", "Compliance", "Audit trail"];

/** @type {{tab: string, body: HTMLElement | null, message: string, error: string}} */
const admin = { tab: "Categories", body: null, message: "", error: "" };

/** @param {unknown} e */
function reason(e) {
  return e instanceof ApiError ? `${e.code}: ${e.message}` : String(e);
}

/** One principal per line. @param {string} text */
function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean);
}

/** @param {string} id @param {string} label @param {HTMLElement} input */
function field(id, label, input) {
  input.id = id;
  return h("div", { class: "field" }, [h("label", { for: id }, [label]), input]);
}

/** @param {string} id @param {string} label @param {boolean} checked */
function checkbox(id, label, checked) {
  const box = /** @type {HTMLInputElement} */ (h("input", { id, type: "checkbox", checked }));
  return { box, node: h("label", { class: "check", for: id }, [box, label]) };
}

/** @param {string} value */
function text(value = "") {
  const input = /** @type {HTMLInputElement} */ (h("input", { autocomplete: "off" }));
  input.value = value;
  return input;
}

/** @param {string[]} value */
function area(value = []) {
  const t = /** @type {HTMLTextAreaElement} */ (h("textarea", { rows: "2" }));
  t.value = value.join("\n");
  return t;
}

/** A table of rows. @param {string[]} head @param {(string | Node)[][]} rows @param {string} caption */
function table(head, rows, caption) {
  return h("table", {}, [
    h("caption", {}, [caption]),
    h("thead", {}, [h("tr", {}, head.map((c) => h("th", { scope: "col" }, [c])))]),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, [c]))))),
  ]);
}

/** Runs an action, then shows the tab again with its outcome. @param {() => Promise<string>} action */
async function act(action) {
  try {
    admin.message = await action();
    admin.error = "";
  } catch (e) {
    admin.error = reason(e);
    admin.message = "";
  }
  await show(admin.tab);
}

/** Fills the tab's body. @param {string} tab */
async function show(tab) {
  admin.tab = tab;
  const body = admin.body;
  if (!body) return;
  for (const button of document.querySelectorAll("[role=tab]")) {
    button.setAttribute("aria-selected", String(button.textContent === tab));
  }
  const content = await build(tab).catch((e) => [h("p", { class: "error", role: "alert" }, [reason(e)])]);
  body.replaceChildren(
    ...(admin.message ? [h("p", { class: "notice", role: "status" }, [admin.message])] : []),
    ...(admin.error ? [h("p", { class: "error", role: "alert" }, [admin.error])] : []),
    ...content,
  );
}

/** @param {string} tab @returns {Promise<HTMLElement[]>} */
async function build(tab) {
  switch (tab) {
    case "Categories": {
      const categories = (await call("GET", "/categories")).items ?? [];
      const name = text();
      const allowed = area(["*"]);
      const denied = area();
      const creators = area();
      const upload = checkbox("cat-files", "File upload", false);
      const invitations = checkbox("cat-invitations", "Invitations", true);
      const form = h("form", { class: "manage-form" }, [
        h("h2", {}, ["New category"]),
        field("cat-name", "Name", name),
        field("cat-allowed", "Allowed members (scope)", allowed),
        field("cat-denied", "Denied members (ethical wall)", denied),
        field("cat-creators", "Creators", creators),
        upload.node,
        invitations.node,
        h("button", { type: "submit" }, ["Create category"]),
      ]);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        act(async () => {
          const made = await call("POST", "/categories", {
            name: name.value,
            allowed_members: lines(allowed.value),
            denied_members: lines(denied.value),
            creators: lines(creators.value),
            file_upload: upload.box.checked,
            invitations: invitations.box.checked,
          });
          return `Category ${made.name} is created.`;
        });
      });
      return [
        table(
          ["Name", "Allowed", "Denied", "Creators", "Files", "Invitations"],
          categories.map((/** @type {any} */ c) => [
            c.name,
            c.allowed_members.join(", "),
            c.denied_members.join(", "),
            c.creators.join(", "),
            c.file_upload ? "on" : "off",
            c.invitations ? "on" : "off",
          ]),
          "Categories",
        ),
        form,
      ];
    }
    case "Policies": {
      const scope = text("global");
      const enabled = checkbox("policy-enabled", "Enable persistent chat", false);
      const load = h("button", { type: "button", class: "secondary" }, ["Read"]);
      load.addEventListener("click", async () => {
        try {
          enabled.box.checked = (await call("GET", `/policies/${encodeURIComponent(scope.value)}`)).enable_persistent_chat;
          admin.error = "";
        } catch (e) {
          admin.error = reason(e);
        }
      });
      const form = h("form", { class: "manage-form" }, [
        h("h2", {}, ["Persistent chat policy"]),
        field("policy-scope", "Scope (global, site:NAME, pool:NAME or user:ADDRESS)", scope),
        load,
        enabled.node,
        h("button", { type: "submit" }, ["Save policy"]),
      ]);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        act(async () => {
          await call("PUT", `/policies/${encodeURIComponent(scope.value)}`, { enable_persistent_chat: enabled.box.checked });
          return `The policy of ${scope.value} is saved.`;
        });
      });
      const global = await call("GET", "/policies/global");
      enabled.box.checked = global.enable_persistent_chat;
      return [form];
    }
    case "Configuration": {
      const config = await call("GET", "/configuration/global");
      const inputs = Object.fromEntries(
        Object.entries(config)
          .filter(([k]) => k !== "scope")
          .map(([k, v]) => [k, text(v === null ? "" : String(v))]),
      );
      const form = h("form", { class: "manage-form" }, [
        h("h2", {}, ["Global configuration"]),
        ...Object.entries(inputs).map(([k, input]) => field(`config-${k}`, k.replaceAll("_", " "), input)),
        h("button", { type: "submit" }, ["Save configuration"]),
      ]);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        act(async () => {
          /** @type {Record<string, unknown>} */
          const body = {};
          for (const [k, input] of Object.entries(inputs)) {
            const original = config[k];
            body[k] = typeof original === "number" ? Number(input.value) : input.value;
          }
          await call("PUT", "/configuration/global", body);
          return "The configuration is saved.";
        });
      });
      return [form];
    }
    case "Add-ins": {
      const addins = (await call("GET", "/addins")).items ?? [];
      const name = text();
      const url = text("https://");
      const form = h("form", { class: "manage-form" }, [
        h("h2", {}, ["Register an add-in"]),
        field("addin-name", "Name", name),
        field("addin-url", "URL", url),
        h("button", { type: "submit" }, ["Register add-in"]),
      ]);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        act(async () => {
          await call("POST", "/addins", { name: name.value, url: url.value });
          return `Add-in ${name.value} is registered.`;
        });
      });
      return [
        table(
          ["Name", "URL", ""],
          addins.map((/** @type {any} */ a) => [
            a.name,
            a.url,
            h(
              "button",
              {
                type: "button",
                class: "secondary",
                onclick: () => act(async () => {
                  await call("DELETE", `/addins/${encodeURIComponent(a.name)}`);
                  return `Add-in ${a.name} is deleted.`;
                }),
              },
              [`Delete ${a.name}`],
            ),
          ]),
          "Add-ins",
        ),
        form,
      ];
    }
    case "Pool": {
      const servers = await call("GET", "/pool/servers");
      const items = servers.items ?? servers.servers ?? servers ?? [];
      return [
        table(
          ["Server", "URL", "Active", "Connections", "Last heartbeat"],
          items.map((/** @type {any} */ s) => [
            String(s.name ?? ""),
            String(s.url ?? ""),
            s.active ? "yes" : "no",
            String(s.connections ?? ""),
            String(s.heartbeat_at ?? ""),
          ]),
          "Servers of this pool",
        ),
      ];
    }
    case "Compliance": {
      const config = await call("GET", "/compliance/configuration/global");
      const verify = h("button", { type: "button" }, ["Verify the archive"]);
      verify.addEventListener("click", () =>
        act(async () => {
          const result = await call("POST", "/compliance/verify");
          return result.ok
            ? `The archive verifies: ${result.events_checked} events checked, the chain is unbroken.`
            : `The archive is broken at event ${result.first_broken} (${result.events_checked} checked).`;
        }),
      );
      return [
        h("h2", {}, ["Compliance"]),
        table(
          ["Setting", "Value"],
          Object.entries(config).map(([k, v]) => [k.replaceAll("_", " "), String(v)]),
          "Global compliance configuration",
        ),
        verify,
      ];
    }
    default: {
      const page = await call("GET", "/audit?limit=100");
      return [
        table(
          ["Time", "Action", "Who", "Room", "Details"],
          (page.items ?? []).map((/** @type {any} */ e) => [
            new Date(e.ts).toLocaleString(),
            String(e.type ?? e.kind ?? ""),
            String(e.actor ?? e.user ?? ""),
            String(e.room ?? ""),
            typeof e.details === "string" ? e.details : JSON.stringify(e.details ?? e.content ?? ""),
          ]),
          "The latest audit events",
        ),
      ];
    }
  }
}

/** The administration pane. */
export function adminView() {
  const body = h("div", { id: "admin-body", role: "tabpanel", tabindex: "0", "aria-labelledby": "admin-title" });
  admin.body = body;
  admin.message = "";
  admin.error = "";
  const tabs = h(
    "div",
    { role: "tablist", "aria-label": "Administration" },
    TABS.map((tab) =>
      h("button", { type: "button", role: "tab", "aria-selected": String(tab === admin.tab), onclick: () => show(tab) }, [tab]),
    ),
  );
  queueMicrotask(() => show(admin.tab));
  return h("main", { id: "room", class: "pane", "aria-labelledby": "admin-title" }, [
    h("h1", { id: "admin-title" }, ["Administration"]),
    tabs,
    body,
  ]);
}
