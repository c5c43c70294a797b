// The web client in headless Chromium against the real server: chatting, reconnecting after a restart, losing
// access while a room is open, the policy explanation, text shown as text, accessibility and the phone layout.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Server, browser, signedIn, shot, accessibilityProblems, PASSWORD } from "./harness.mjs";

const ALICE = "alice@example.com";
const BOB = "bob@example.com";
const CAROL = "carol@example.com";
let server;
let chromium;
let rooms;

before(async () => {
  server = await Server.start();
  rooms = await server.setUp([ALICE, BOB, CAROL], {
    "Rates desk": [ALICE, BOB],
    "FX desk": [ALICE, BOB],
    "Restart room": [ALICE, BOB],
  });
  chromium = await browser();
});

after(async () => {
  await chromium?.close();
  await server?.close();
});

/** Opens a room from the sidebar. */
async function open(page, name) {
  await page.getByRole("navigation", { name: "My rooms" }).getByRole("button", { name }).click();
  await page.getByRole("heading", { name, level: 1 }).waitFor();
}

function messages(page) {
  return page.getByRole("log");
}

test("two users chat in a room: a message appears in the other's browser within a second", async () => {
  const alice = await signedIn(chromium, server, ALICE);
  const bob = await signedIn(chromium, server, BOB);
  await shot(alice, "01-rooms-sidebar");
  await open(alice, "Rates desk");
  await open(bob, "Rates desk");
  await bob.getByText("Connected").waitFor();
  await alice.getByText("Connected").waitFor();
  await alice.getByLabel("Message Rates desk").fill("Morning all, curve steepening");
  const sent = Date.now();
  await alice.getByLabel("Message Rates desk").press("Enter");
  await messages(bob).getByText("Morning all, curve steepening").waitFor({ timeout: 1000 });
  const delay = Date.now() - sent;
  assert.ok(delay <= 1000, `delivered after ${delay} ms`);
  await messages(alice).getByText("Morning all, curve steepening").waitFor();
  await shot(bob, "02-room-live-message");
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
  await alice.context().close();
  await bob.context().close();
});

test("a message with HTML is shown as text and runs nothing", async () => {
  const alice = await signedIn(chromium, server, ALICE);
  const bob = await signedIn(chromium, server, BOB);
  let dialogs = 0;
  for (const page of [alice, bob]) page.on("dialog", (d) => { dialogs += 1; d.dismiss(); });
  await open(alice, "FX desk");
  await open(bob, "FX desk");
  await alice.getByText("Connected").waitFor();
  const evil = "<img src=x onerror=alert(1)> see https://example.com/a?b=1";
  await alice.getByLabel("Message FX desk").fill(evil);
  await alice.getByRole("button", { name: "Send" }).click();
  await messages(bob).getByText("<img src=x onerror=alert(1)>", { exact: false }).waitFor();
  assert.equal(await messages(bob).locator("img").count(), 0, "no image element was made from the text");
  const link = messages(bob).getByRole("link", { name: "https://example.com/a?b=1" });
  assert.equal(await link.getAttribute("href"), "https://example.com/a?b=1");
  assert.equal(await link.getAttribute("rel"), "noopener noreferrer");
  await bob.waitForTimeout(300);
  assert.equal(dialogs, 0, "a dialog opened");
  await shot(bob, "03-html-shown-as-text");
  await alice.context().close();
  await bob.context().close();
});

test("after a server restart the open room catches up: every message once, in order", async () => {
  const bob = await signedIn(chromium, server, BOB);
  await open(bob, "Restart room");
  await bob.getByText("Connected").waitFor();
  const room = rooms["Restart room"].id;
  await server.api(ALICE, "POST", `/rooms/${room}/messages`, { text: "before restart" });
  await messages(bob).getByText("before restart").waitFor();
  await server.stop();
  await bob.getByText("Reconnecting…").waitFor();
  await shot(bob, "04-reconnecting");
  await server.run();
  server.tokens = new Map();
  for (let i = 1; i <= 5; i++) {
    await server.api(ALICE, "POST", `/rooms/${room}/messages`, { text: `while away ${i}` });
  }
  await messages(bob).getByText("while away 5").waitFor({ timeout: 15000 });
  await bob.getByText("Connected").waitFor();
  await server.api(ALICE, "POST", `/rooms/${room}/messages`, { text: "after reconnect" });
  await messages(bob).getByText("after reconnect").waitFor();
  const texts = await messages(bob).locator("li.message .text").allTextContents();
  assert.deepEqual(texts, [
    "before restart",
    "while away 1",
    "while away 2",
    "while away 3",
    "while away 4",
    "while away 5",
    "after reconnect",
  ]);
  await shot(bob, "05-caught-up-after-restart");
  await bob.context().close();
});

test("a user walled off while the room is open sees it close and receives nothing more", async () => {
  const bob = await signedIn(chromium, server, BOB);
  await open(bob, "Rates desk");
  await bob.getByText("Connected").waitFor();
  const room = rooms["Rates desk"].id;
  const category = rooms["Rates desk"].category;
  await server.api(ALICE, "POST", `/rooms/${room}/messages`, { text: "visible before the wall" });
  await messages(bob).getByText("visible before the wall").waitFor();
  await server.api("admin@example.com", "PATCH", `/categories/${category}`, { denied_members: { add: [BOB] } });
  await bob.getByText("You no longer have access to this room.").waitFor();
  await server.api(ALICE, "POST", `/rooms/${room}/messages`, { text: "behind the wall" });
  await bob.waitForTimeout(500);
  assert.equal(await bob.getByText("behind the wall").count(), 0);
  assert.equal(await bob.getByText("visible before the wall").count(), 0, "the closed room's history is gone");
  await shot(bob, "06-walled-off");
  await server.api("admin@example.com", "PATCH", `/categories/${category}`, { denied_members: { remove: [BOB] } });
  await bob.context().close();
});

test("a user whose policy disables chat sees why", async () => {
  await server.api("admin@example.com", "PUT", `/policies/user:${CAROL}`, { enable_persistent_chat: false });
  const context = await chromium.newContext();
  const page = await context.newPage();
  await page.goto(server.url + "/");
  await page.getByLabel("Address").fill(CAROL);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Persistent chat is turned off for you" }).waitFor();
  await shot(page, "07-chat-disabled-by-policy");
  await context.close();
});

test("pages pass axe-core (no serious or critical violation) and fit a 360 px phone", async () => {
  const context = await chromium.newContext({ viewport: { width: 360, height: 740 } });
  const page = await context.newPage();
  await page.goto(server.url + "/");
  await page.getByLabel("Address").waitFor();
  assert.deepEqual(await accessibilityProblems(page), [], "sign-in page");
  await shot(page, "08-phone-sign-in");
  await page.getByLabel("Address").fill(ALICE);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await open(page, "FX desk");
  await page.getByText("Connected").waitFor();
  assert.deepEqual(await accessibilityProblems(page), [], "room page");
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `the page is ${width} px wide on a 360 px screen`);
  await shot(page, "09-phone-room");
  await context.close();
  const desktop = await signedIn(chromium, server, ALICE);
  await open(desktop, "FX desk");
  await desktop.getByText("Connected").waitFor();
  assert.deepEqual(await accessibilityProblems(desktop), [], "room page, desktop");
  await desktop.context().close();
});

test("stories, alerts, the people pane, following and the room's add-in", async () => {
  const admin = "admin@example.com";
  await server.api(admin, "POST", "/addins", { name: "Blotter", url: `${server.url}/healthz` });
  await server.api(admin, "PATCH", `/rooms/${rooms["FX desk"].id}`, { addin: "Blotter" });
  const alice = await signedIn(chromium, server, ALICE);
  const bob = await signedIn(chromium, server, BOB);
  await open(alice, "FX desk");
  await open(bob, "FX desk");
  await alice.getByText("Connected").waitFor();
  await alice.getByLabel("Story title (optional)").fill("EUR/USD outlook");
  await alice.getByLabel("Alert").check();
  await alice.getByLabel("Message FX desk").fill("Long body of the weekly outlook");
  await alice.getByRole("button", { name: "Send" }).click();
  const story = messages(bob).locator("li.message.alert details.story");
  await story.waitFor();
  assert.equal(await story.locator("summary").textContent(), "EUR/USD outlook");
  assert.equal(await story.getByText("Long body of the weekly outlook").isVisible(), false, "the body starts folded");
  await story.locator("summary").click();
  await story.getByText("Long body of the weekly outlook").waitFor();
  await bob.getByRole("button", { name: "People" }).click();
  await bob.getByRole("complementary", { name: "People in this room" }).getByText("alice").waitFor();
  await shot(bob, "19-story-alert-people");
  await bob.getByRole("button", { name: "Add-in" }).click();
  const frame = bob.locator("iframe[title='Add-in Blotter']");
  await frame.waitFor();
  assert.equal(await frame.getAttribute("sandbox"), "allow-scripts allow-forms allow-popups", "a same-origin add-in gets no same-origin rights");
  await shot(bob, "20-addin-pane");
  await bob.getByRole("button", { name: "Follow", exact: true }).click();
  await bob.getByRole("button", { name: "Unfollow", exact: true }).waitFor();
  const mine = await server.api(BOB, "GET", "/me/rooms");
  const entry = (mine.items ?? mine).find((r) => r.room.id === rooms["FX desk"].id);
  assert.equal(entry.following, true);
  await alice.context().close();
  await bob.context().close();
});

test("the client's assets come compressed, under cache-busting names, with a strict CSP", async () => {
  const context = await chromium.newContext();
  const page = await context.newPage();
  const assets = [];
  page.on("response", (r) => {
    if (r.url().includes("/assets/")) assets.push(r);
  });
  const document = await page.goto(server.url + "/");
  const csp = document.headers()["content-security-policy"];
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  await page.getByLabel("Address").waitFor();
  const app = assets.find((r) => r.url().endsWith("/app.js"));
  assert.ok(app, "app.js was loaded");
  assert.match(new URL(app.url()).pathname, /^\/assets\/[0-9a-f]{16}\/app\.js$/);
  const headers = await app.allHeaders();
  assert.equal(headers["content-encoding"], "gzip");
  assert.match(headers["cache-control"], /immutable/);
  for (const r of assets) assert.equal(new URL(r.url()).origin, server.url, "nothing loads from elsewhere");
  await context.close();
});

test("the client works from the keyboard alone, with the focus visible", async () => {
  const context = await chromium.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  await page.goto(server.url + "/");
  await page.getByLabel("Address").waitFor();
  // The address field has the focus on arrival; Tab moves to the password, Enter signs in.
  await page.keyboard.type(ALICE);
  await page.keyboard.press("Tab");
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press("Enter");
  await page.getByRole("navigation", { name: "My rooms" }).waitFor();
  // Tab until the Rates desk button of the sidebar has the focus, then open it with Enter.
  let found = false;
  for (let i = 0; i < 40 && !found; i++) {
    await page.keyboard.press("Tab");
    found = await page.evaluate(() => document.activeElement?.textContent?.startsWith("Rates desk") ?? false);
  }
  assert.ok(found, "the room button is reachable with Tab");
  const outline = await page.evaluate(() => getComputedStyle(/** @type {Element} */ (document.activeElement)).outlineStyle);
  assert.notEqual(outline, "none", "the focused control shows a focus ring");
  await shot(page, "27-keyboard-focus");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Rates desk", level: 1 }).waitFor();
  // Opening a room puts the focus in its message box: typing and Enter post.
  await page.keyboard.type("sent from the keyboard");
  await page.keyboard.press("Enter");
  await messages(page).getByText("sent from the keyboard").waitFor();
  await context.close();
});
