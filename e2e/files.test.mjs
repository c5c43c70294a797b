// Files in rooms through the web client: an upload with a visible progress bar, announced in the room, and
// downloaded by another member byte for byte through a short-lived download link.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { Server, browser, signedIn, shot } from "./harness.mjs";

const ALICE = "alice@example.com";
const BOB = "bob@example.com";
let server;
let chromium;
let rooms;

before(async () => {
  server = await Server.start();
  rooms = await server.setUp([ALICE, BOB], { "Documents": [ALICE, BOB] });
  await server.api("admin@example.com", "PATCH", `/categories/${rooms.Documents.category}`, { file_upload: true });
  chromium = await browser();
});

after(async () => {
  await chromium?.close();
  await server?.close();
});

test("a file is uploaded with a visible progress bar and downloaded by another member", async () => {
  const alice = await signedIn(chromium, server, ALICE);
  const bob = await signedIn(chromium, server, BOB);
  for (const page of [alice, bob]) {
    await page.getByRole("navigation", { name: "My rooms" }).getByRole("button", { name: "Documents" }).click();
    await page.getByText("Connected").waitFor();
  }
  // Record every progress value the bar showed (the upload of 8 MB over loopback is quick).
  await alice.evaluate(() => {
    // @ts-ignore test instrumentation
    window.progressSeen = [];
    new MutationObserver((changes) => {
      for (const c of changes) {
        const bar = c.target instanceof HTMLProgressElement ? c.target : null;
        for (const node of c.addedNodes) {
          if (node instanceof HTMLElement && node.querySelector("progress")) {
            // @ts-ignore
            window.progressSeen.push("shown");
          }
        }
        // @ts-ignore
        if (bar) window.progressSeen.push(bar.value);
      }
    }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["value"] });
  });
  const bytes = randomBytes(8 * 1024 * 1024);
  const chooser = alice.waitForEvent("filechooser");
  await alice.getByText("Attach file").click();
  await (await chooser).setFiles({ name: "term sheet.pdf", mimeType: "application/pdf", buffer: bytes });
  await alice.getByRole("progressbar", { name: "Uploading term sheet.pdf" }).waitFor({ state: "attached" }).catch(() => {});
  await shot(alice, "17-upload-progress");
  const announced = bob.getByRole("button", { name: "Download term sheet.pdf" });
  await announced.waitFor({ timeout: 15000 });
  // @ts-ignore
  const seen = await alice.evaluate(() => window.progressSeen);
  assert.ok(seen.includes("shown"), "no progress bar was shown");
  await shot(bob, "18-file-announced");
  // The browser follows a short-lived download link (no bearer token in it) and streams the file to disk.
  const before = bob.url();
  const downloading = bob.waitForEvent("download");
  await announced.click();
  const file = await downloading;
  assert.equal(file.suggestedFilename(), "term sheet.pdf");
  const got = readFileSync(await file.path());
  assert.equal(createHash("sha256").update(got).digest("hex"), createHash("sha256").update(bytes).digest("hex"));
  assert.match(file.url(), /\/api\/v1\/files\/[0-9a-f-]+\?link=[^&]+$/, "the download followed a link");
  const token = await bob.evaluate(() => sessionStorage.getItem("pchat.token"));
  assert.ok(token && !file.url().includes(token), "the link does not carry the session's token");
  assert.equal(bob.url(), before, "the chat stays where it was");
  await bob.getByText("Connected").waitFor();
  await alice.context().close();
  await bob.context().close();
});
