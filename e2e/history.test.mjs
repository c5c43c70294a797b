// A room with 10,000 messages: the client scrolls back through all of them with the page staying responsive
// (no long task over 200 ms) and without the message in view moving while older pages load; opening it marks it read
// with one request. Also the dark theme.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Server, browser, signedIn, shot, accessibilityProblems } from "./harness.mjs";

const ALICE = "alice@example.com";
const TOTAL = 10_000;
let server;
let chromium;
let rooms;

before(async () => {
  server = await Server.start();
  rooms = await server.setUp([ALICE], { Archive: [ALICE] });
  const room = rooms.Archive.id;
  // Posted 50 at a time (so a message's number and its seq can differ within a batch of 50); order and
  // completeness are checked by seq.
  for (let i = 0; i < TOTAL; i += 50) {
    await Promise.all(
      Array.from({ length: 50 }, (_, j) =>
        server.api(ALICE, "POST", `/rooms/${room}/messages`, { text: `message ${i + j + 1}`, client_id: `m${i + j + 1}` }),
      ),
    );
  }
  chromium = await browser();
});

after(async () => {
  await chromium?.close();
  await server?.close();
});

test("scrolling back through 10,000 messages keeps the page responsive and the view steady", async () => {
  const alice = await signedIn(chromium, server, ALICE);
  await alice.evaluate(() => {
    // @ts-ignore test instrumentation
    window.tasks = [];
    new PerformanceObserver((list) => {
      // @ts-ignore
      for (const e of list.getEntries()) window.tasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: "longtask" });
  });
  /** @type {number[]} */
  const reads = [];
  alice.on("request", (r) => {
    if (r.method() === "POST" && r.url().endsWith("/api/v1/me/read")) reads.push(JSON.parse(r.postData() ?? "{}").seq);
  });
  await alice.getByRole("navigation", { name: "My rooms" }).getByRole("button", { name: "Archive" }).click();
  await alice.locator(`li.message[data-seq="${TOTAL}"]`).waitFor();
  // The page of history shown on opening is marked read with one request (not one per message), up to its last.
  const mine = async () => {
    const answer = await server.api(ALICE, "GET", "/me/rooms");
    return (answer.items ?? answer).find((/** @type {any} */ e) => e.room.id === rooms.Archive.id);
  };
  for (let i = 0; i < 50 && (await mine()).unread !== 0; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal((await mine()).unread, 0, "the room is read once opened");
  assert.ok(reads.length >= 1 && reads.length <= 2, `opening the room sent ${reads.length} read markers: ${reads}`);
  assert.equal(Math.max(...reads), TOTAL);
  const scrollFrom = await alice.evaluate(() => performance.now());
  const started = Date.now();
  let moved = 0;
  let pages = 0;
  for (let round = 0; round < 400; round++) {
    // As a reader does: scroll to the top, and watch the message that was there while the older page loads.
    const step = await alice.evaluate(async () => {
      const scroller = /** @type {HTMLElement} */ (document.getElementById("scroller"));
      const list = /** @type {HTMLElement} */ (document.getElementById("messages"));
      scroller.scrollTop = 0;
      const top = /** @type {HTMLElement} */ (list.querySelector("li.message"));
      const before = top.getBoundingClientRect().top;
      const count = list.children.length;
      const t = performance.now();
      while (list.children.length === count && performance.now() - t < 3000) {
        await new Promise((r) => requestAnimationFrame(() => r(null)));
      }
      await new Promise((r) => requestAnimationFrame(() => r(null)));
      return {
        grew: list.children.length > count,
        moved: Math.abs(top.getBoundingClientRect().top - before),
        done: list.querySelector('li.message[data-seq="1"]') !== null,
      };
    });
    if (step.grew) {
      pages += 1;
      moved = Math.max(moved, step.moved);
    }
    if (step.done || moved >= 2 || Date.now() - started > 90_000) break;
  }
  const seconds = (Date.now() - started) / 1000;
  const seqs = await alice.evaluate(() => [...document.querySelectorAll("li.message")].map((li) => Number(li.getAttribute("data-seq"))));
  assert.equal(seqs.length, TOTAL, "every message is in the list once");
  assert.ok(seqs.every((s, i) => s === i + 1), "in order");
  // Long tasks (over 50 ms), each said to be while opening the room or so many seconds into scrolling.
  /** @type {{start: number, duration: number}[]} */
  // @ts-ignore
  const tasks = await alice.evaluate(() => window.tasks);
  const longest = Math.max(0, ...tasks.map((t) => t.duration));
  const when = (/** @type {{start: number}} */ t) => (t.start < scrollFrom ? "opening" : `${((t.start - scrollFrom) / 1000).toFixed(1)} s`);
  const listed = tasks.map((t) => `${t.duration.toFixed(0)} ms (${when(t)})`).join(", ") || "none";
  console.log(`scrolled back through ${TOTAL} messages (${pages} pages) in ${seconds.toFixed(1)} s; long tasks: ${listed}; largest move of the message in view ${moved.toFixed(1)} px`);
  assert.ok(pages >= 90, `only ${pages} older pages were loaded`);
  assert.ok(longest < 200, `a task blocked the page for ${longest} ms`);
  assert.ok(moved < 2, `the message in view moved ${moved} px while an older page loaded`);
  await shot(alice, "23-top-of-10000-messages");
  await alice.context().close();
});

test("the dark theme follows the system setting and passes axe-core", async () => {
  const context = await chromium.newContext({ colorScheme: "dark", viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  await page.goto(server.url + "/");
  const { PASSWORD } = await import("./harness.mjs");
  await page.getByLabel("Address").fill(ALICE);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "My rooms" }).getByRole("button", { name: "Archive" }).click();
  await page.locator(`li.message[data-seq="${TOTAL}"]`).waitFor();
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(background, "rgb(21, 24, 28)", "the dark background");
  assert.deepEqual(await accessibilityProblems(page), [], "room page, dark");
  await shot(page, "24-dark-theme");
  await context.close();
});
