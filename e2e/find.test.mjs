// Finding things in the web client: the room directory (privacy honoured), history search with a Chinese word
// and jump-to-message, and a topic feed's live badge.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Server, browser, signedIn, shot, accessibilityProblems } from "./harness.mjs";

const ALICE = "alice@example.com";
const BOB = "bob@example.com";
const DAVE = "dave@example.com";
let server;
let chromium;
let rooms;

before(async () => {
  server = await Server.start();
  rooms = await server.setUp([ALICE, BOB, DAVE], { "Asia desk": [ALICE, BOB] });
  const admin = "admin@example.com";
  const category = rooms["Asia desk"].category;
  await server.api(admin, "POST", "/rooms", {
    name: "Board secrets",
    category,
    privacy: "secret",
    members: [ALICE],
    managers: [admin],
  });
  await server.api(admin, "POST", "/rooms", { name: "Lobby", category, privacy: "open", managers: [admin] });
  chromium = await browser();
});

after(async () => {
  await chromium?.close();
  await server?.close();
});

test("the directory shows open rooms to everyone and a secret room only to its members", async () => {
  const dave = await signedIn(chromium, server, DAVE);
  await dave.getByRole("button", { name: "Browse rooms" }).click();
  await dave.getByRole("heading", { name: "Rooms", level: 1, exact: true }).waitFor();
  await dave.getByRole("heading", { name: "Lobby" }).waitFor();
  assert.equal(await dave.getByText("Board secrets").count(), 0, "a secret room shows to a non-member");
  await shot(dave, "10-directory-non-member");
  assert.deepEqual(await accessibilityProblems(dave), [], "directory page");
  // Following a room from the directory puts it in the sidebar.
  await dave.getByRole("button", { name: "Follow Lobby" }).click();
  await dave.getByRole("navigation", { name: "My rooms" }).getByRole("button", { name: /Lobby/ }).waitFor();
  const alice = await signedIn(chromium, server, ALICE);
  await alice.getByRole("button", { name: "Browse rooms" }).click();
  await alice.getByRole("heading", { name: "Board secrets" }).waitFor();
  await alice.getByLabel("Find a room by name").fill("board");
  await alice.getByRole("button", { name: "Find" }).click();
  // The filtered list replaces the whole one: Lobby goes, Board secrets stays.
  await alice.getByRole("heading", { name: "Lobby" }).waitFor({ state: "detached" });
  await alice.getByRole("button", { name: "Open Board secrets" }).waitFor();
  await dave.context().close();
  await alice.context().close();
});

test("search finds a two-character Chinese word and jumps to the message in its room", async () => {
  const room = rooms["Asia desk"].id;
  await server.api(ALICE, "POST", `/rooms/${room}/messages`, { text: "我们明天去北京开会" });
  for (let i = 0; i < 150; i++) {
    await server.api(BOB, "POST", `/rooms/${room}/messages`, { text: `filler ${i}` });
  }
  const bob = await signedIn(chromium, server, BOB);
  await bob.getByLabel("Search messages").fill("北京");
  await bob.getByRole("button", { name: "Search", exact: true }).click();
  await bob.getByRole("heading", { name: "Results for “北京”" }).waitFor();
  const hit = bob.locator(".results li");
  assert.equal(await hit.count(), 1);
  assert.equal(await hit.locator("mark").textContent(), "北京");
  await shot(bob, "11-search-chinese");
  assert.deepEqual(await accessibilityProblems(bob), [], "search results page");
  await bob.getByRole("button", { name: "Show in Asia desk" }).click();
  const target = bob.locator("li.message.target");
  await target.waitFor();
  assert.equal(await target.locator(".text").textContent(), "我们明天去北京开会");
  assert.ok(await target.isVisible());
  // The history between the jump target and the newest message is all there, once each.
  const texts = await bob.locator("li.message .text").allTextContents();
  assert.equal(texts.filter((t) => t.startsWith("filler")).length, 150);
  await shot(bob, "12-jumped-to-message");
  await bob.context().close();
});

test("search filters narrow the results by author, match and room", async () => {
  const bob = await signedIn(chromium, server, BOB);
  await bob.getByLabel("Search messages").fill("filler");
  await bob.getByRole("button", { name: "Search", exact: true }).click();
  await bob.getByRole("heading", { name: "Results for “filler”" }).waitFor();
  await bob.locator(".results li").first().waitFor();
  await bob.getByText("Filters", { exact: true }).click();
  await bob.getByLabel("Author").fill(ALICE);
  await bob.getByRole("button", { name: "Apply filters" }).click();
  await bob.getByText("Nothing found.").waitFor();
  await bob.getByLabel("Author").fill(BOB);
  await bob.getByLabel("Words").fill("filler 149");
  await bob.getByLabel("Match").selectOption("exact");
  await bob.getByLabel("Room", { exact: true }).selectOption({ label: "Asia desk" });
  await bob.getByRole("button", { name: "Apply filters" }).click();
  await bob.getByRole("heading", { name: "Results for “filler 149”" }).waitFor();
  await bob.locator(".results li mark").first().waitFor();
  assert.equal(await bob.locator(".results li").count(), 1);
  await shot(bob, "25-search-filters");
  assert.deepEqual(await accessibilityProblems(bob), [], "search with filters");
  // A one-character Chinese query is refused with the server's reason, shown in the page.
  await bob.getByLabel("Words").fill("京");
  await bob.getByRole("button", { name: "Apply filters" }).click();
  await bob.getByRole("alert").getByText(/at least 2 characters/).waitFor();
  await bob.context().close();
});

test("a topic feed made in the client raises a badge live; alerts mark their room", async () => {
  const bob = await signedIn(chromium, server, BOB);
  await bob.getByRole("button", { name: "Manage topic feeds" }).click();
  await bob.getByLabel("Feed name").fill("Tokyo news");
  await bob.getByLabel("Keywords").fill("東京");
  await bob.getByRole("button", { name: "Create feed" }).click();
  const feed = bob.getByRole("navigation", { name: "My rooms" }).getByRole("button", { name: /Tokyo news/ });
  await feed.waitFor();
  assert.deepEqual(await accessibilityProblems(bob), [], "topic feeds page");
  await bob.getByText("Connected").waitFor();
  await server.api(ALICE, "POST", `/rooms/${rooms["Asia desk"].id}/messages`, { text: "東京の会議は延期" });
  await bob.getByLabel("1 new matches").waitFor({ timeout: 5000 });
  await shot(bob, "13-feed-badge");
  await feed.click();
  await bob.getByRole("heading", { name: "Topic feed “Tokyo news”" }).waitFor();
  await bob.locator(".results li mark", { hasText: "東京" }).first().waitFor();
  // An alert in a room bob is not looking at marks the room until he opens it.
  await server.api(ALICE, "POST", `/rooms/${rooms["Asia desk"].id}/messages`, { text: "Margin call", alert: true });
  await bob.getByLabel("1 unread alerts").waitFor();
  await shot(bob, "26-alert-badge");
  await bob.getByRole("navigation", { name: "My rooms" }).getByRole("button", { name: /Asia desk/ }).click();
  await bob.locator("li.message.alert", { hasText: "Margin call" }).waitFor();
  assert.equal(await bob.getByLabel("1 unread alerts").count(), 0);
  // The feed is edited in place: new keywords, narrowed to one room; the next match of the new words counts.
  await bob.getByRole("button", { name: "Manage topic feeds" }).click();
  await bob.getByRole("button", { name: "Edit Tokyo news" }).click();
  assert.equal(await bob.getByLabel("Keywords").inputValue(), "東京");
  await bob.getByLabel("Keywords").fill("大阪 会議");
  await bob.getByLabel("Rooms", { exact: true }).selectOption({ label: "Asia desk" });
  assert.deepEqual(await accessibilityProblems(bob), [], "editing a topic feed");
  await shot(bob, "28-feed-edit");
  await bob.getByRole("button", { name: "Save feed" }).click();
  await bob.locator(".card", { hasText: "Tokyo news" }).getByText("In Asia desk").waitFor();
  const edited = (await server.api(BOB, "GET", "/me/feeds")).items[0];
  assert.deepEqual([edited.keywords, edited.rooms], ["大阪 会議", [rooms["Asia desk"].id]]);
  await server.api(ALICE, "POST", `/rooms/${rooms["Asia desk"].id}/messages`, { text: "東京の会議" });
  await server.api(ALICE, "POST", `/rooms/${rooms["Asia desk"].id}/messages`, { text: "大阪の会議は明日" });
  await bob.getByLabel("1 new matches").waitFor({ timeout: 5000 });
  await bob.getByRole("button", { name: "Delete Tokyo news" }).click();
  await bob.getByRole("navigation", { name: "My rooms" }).getByRole("button", { name: /Tokyo news/ }).waitFor({ state: "detached" });
  const left = await server.api(BOB, "GET", "/me/feeds");
  assert.equal((left.items ?? left).length, 0);
  await bob.context().close();
});

test("a feed match shows a browser notification when allowed and the page is in the background", async () => {
  await server.api(BOB, "POST", "/me/feeds", { name: "Rates watch", keywords: "steepener" });
  const context = await chromium.newContext({ permissions: ["notifications"] });
  // The page is in the background, and every notification it shows is recorded.
  await context.addInitScript(() => {
    Object.defineProperty(document, "hidden", { get: () => true });
    const Real = window.Notification;
    // @ts-ignore test instrumentation
    window.shown = [];
    // @ts-ignore
    window.Notification = class extends Real {
      constructor(title, options) {
        super(title, options);
        // @ts-ignore
        window.shown.push(`${title} | ${options?.body ?? ""}`);
      }
    };
  });
  const page = await context.newPage();
  await page.goto(server.url + "/");
  const { PASSWORD } = await import("./harness.mjs");
  await page.getByLabel("Address").fill(BOB);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Connected").waitFor();
  await server.api(ALICE, "POST", `/rooms/${rooms["Asia desk"].id}/messages`, { text: "buying the 2s10s steepener" });
  await page.getByLabel("1 new matches").waitFor({ timeout: 5000 });
  // @ts-ignore
  const shown = await page.evaluate(() => window.shown);
  assert.equal(shown.length, 1, JSON.stringify(shown));
  assert.match(shown[0], /^Rates watch: Asia desk \| alice@example.com: .*steepener/);
  await context.close();
});
