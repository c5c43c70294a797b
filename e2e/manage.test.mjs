// The room management app at /manage/: a manager creates a closed room, adds a member with the principal picker,
// and the member sees the invitation live and joins; editing and disabling a room.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Server, browser, signedIn, shot, accessibilityProblems } from "./harness.mjs";

const ALICE = "alice@example.com";
const BOB = "bob@example.com";
const CAROL = "carol@example.com";
let server;
let chromium;
let rooms;

before(async () => {
  server = await Server.start();
  rooms = await server.setUp([ALICE, BOB, CAROL], { "Existing room": [ALICE] });
  // Carol is walled off from the Desks category; Research takes rooms from Bob only.
  await server.api("admin@example.com", "PATCH", `/categories/${rooms["Existing room"].category}`, {
    invitations: true,
    denied_members: { add: [CAROL] },
  });
  await server.api("admin@example.com", "POST", "/categories", { name: "Research", allowed_members: ["*"], creators: [BOB] });
  chromium = await browser();
});

after(async () => {
  await chromium?.close();
  await server?.close();
});

test("a manager creates a closed room in /manage/, adds a member, and the member sees the invitation and joins", async () => {
  const bob = await signedIn(chromium, server, BOB);
  await bob.getByText("Connected").waitFor();
  const alice = await signedIn(chromium, server, ALICE);
  await alice.getByRole("link", { name: "Manage rooms" }).click();
  await alice.getByRole("heading", { name: "Rooms I manage" }).waitFor();
  assert.deepEqual(await accessibilityProblems(alice), [], "manage list");
  await alice.getByRole("button", { name: "Create a room" }).click();
  await alice.getByLabel("Room name").fill("Existing room");
  await alice.getByText("“Existing room” is taken.").waitFor();
  await alice.getByLabel("Room name").fill("Credit desk");
  await alice.getByText("“Credit desk” is available.").waitFor();
  await alice.getByLabel("Description").fill("Credit trading, EMEA");
  await alice.getByLabel("Privacy").selectOption("closed");
  // Only categories where Alice is a creator are offered; the picker finds only people in the category's scope.
  const offered = await alice.getByLabel("Category").locator("option").allTextContents();
  assert.deepEqual(offered, ["Desks"]);
  await alice.getByLabel("Find a person").fill("carol");
  await alice.getByLabel("Find a person").fill("bob");
  await alice.locator("#people option").first().waitFor({ state: "attached" });
  const found = await alice.locator("#people option").evaluateAll((os) => os.map((o) => /** @type {HTMLOptionElement} */ (o).value));
  assert.deepEqual(found, [BOB]);
  await alice.getByLabel("Find a person").fill("example.com");
  await alice.locator(`#people option[value="${ALICE}"]`).waitFor({ state: "attached" });
  const everyone = await alice.locator("#people option").evaluateAll((os) => os.map((o) => /** @type {HTMLOptionElement} */ (o).value));
  assert.ok(everyone.includes(BOB) && !everyone.includes(CAROL), `walled-off Carol offered: ${everyone}`);
  await alice.getByLabel("Find a person").fill(BOB);
  await alice.getByRole("button", { name: "Add as member" }).click();
  assert.equal(await alice.getByLabel("Members").inputValue(), BOB);
  assert.deepEqual(await accessibilityProblems(alice), [], "create form");
  await shot(alice, "14-manage-create-room");
  await alice.getByRole("button", { name: "Create room" }).click();
  await alice.getByText("Credit desk is created.").waitFor();
  await alice.getByRole("heading", { name: "Credit desk" }).waitFor();
  await shot(alice, "15-manage-list");

  const invitation = bob.getByRole("button", { name: "Join Credit desk" });
  await invitation.waitFor({ timeout: 5000 });
  await shot(bob, "16-invitation");
  await invitation.click();
  await bob.getByRole("heading", { name: "Credit desk", level: 1 }).waitFor();
  await bob.getByText("Credit trading, EMEA").waitFor();
  await bob.getByLabel("Message Credit desk").fill("thanks for the invite");
  await bob.getByLabel("Message Credit desk").press("Enter");
  await bob.getByRole("log").getByText("thanks for the invite").waitFor();
  assert.equal(await bob.getByRole("button", { name: "Join Credit desk" }).count(), 0, "the invitation is done with");

  // Disabling the room closes it for its member; enabling makes it usable again.
  await alice.getByRole("button", { name: "Disable Credit desk" }).click();
  await alice.getByText("Credit desk is disabled.").waitFor();
  await bob.getByText("This room was disabled by an administrator.").waitFor();
  await alice.getByRole("button", { name: "Enable Credit desk" }).click();
  await alice.getByText("Credit desk is enabled.").waitFor();
  await alice.getByRole("button", { name: "Edit Credit desk" }).click();
  await alice.getByLabel("Description").fill("Credit trading, EMEA and APAC");
  await alice.getByRole("button", { name: "Save changes" }).click();
  await alice.getByText("Credit desk is saved.").waitFor();
  const saved = await server.api(ALICE, "GET", "/rooms/name:Credit%20desk");
  assert.equal(saved.description, "Credit trading, EMEA and APAC");
  assert.deepEqual(saved.members, [BOB]);
  await alice.context().close();
  await bob.context().close();
});

test("administration pages: every tab works and passes axe-core; a category is created; the archive verifies", async () => {
  const admin = await signedIn(chromium, server, "admin@example.com");
  await admin.getByRole("button", { name: "Administration" }).click();
  await admin.getByRole("heading", { name: "Administration" }).waitFor();
  for (const tab of ["Categories", "Policies", "Configuration", "Add-ins", "Pool", "Compliance", "Audit trail"]) {
    await admin.getByRole("tab", { name: tab }).click();
    await admin.locator(`[role=tab][aria-selected=true]`, { hasText: tab }).waitFor();
    await admin.locator("#admin-body > *").first().waitFor();
    assert.equal(await admin.locator("#admin-body [role=alert]").count(), 0, `${tab}: an error is shown`);
    assert.deepEqual(await accessibilityProblems(admin), [], `${tab} tab`);
    await shot(admin, `21-admin-${tab.toLowerCase().replace(" ", "-")}`);
  }
  await admin.getByRole("tab", { name: "Categories" }).click();
  await admin.getByLabel("Name").fill("Legal");
  await admin.getByLabel("Denied members (ethical wall)").fill("bob@example.com");
  await admin.getByRole("button", { name: "Create category" }).click();
  await admin.getByText("Category Legal is created.").waitFor();
  await admin.getByRole("cell", { name: "Legal", exact: true }).waitFor();
  const legal = (await server.api("admin@example.com", "GET", "/categories")).items.find((c) => c.name === "Legal");
  assert.deepEqual(legal.denied_members, ["bob@example.com"]);
  await admin.getByRole("tab", { name: "Audit trail" }).click();
  await admin.getByRole("cell", { name: /CATEGORY/ }).first().waitFor();
  await admin.getByRole("tab", { name: "Compliance" }).click();
  await admin.getByRole("button", { name: "Verify the archive" }).click();
  await admin.getByText(/The archive verifies/).waitFor();
  await admin.context().close();
});

test("a user changes their password in My account", async () => {
  const bob = await signedIn(chromium, server, BOB);
  await bob.getByRole("button", { name: "Account" }).click();
  await bob.getByLabel("Current password").fill("wrong-password");
  await bob.getByLabel("New password (at least 8 characters)").fill("a-new-password-1");
  await bob.getByRole("button", { name: "Change password" }).click();
  await bob.locator("p.error").waitFor();
  assert.deepEqual(await accessibilityProblems(bob), [], "account page");
  const { PASSWORD } = await import("./harness.mjs");
  await bob.getByLabel("Current password").fill(PASSWORD);
  await bob.getByLabel("New password (at least 8 characters)").fill("a-new-password-1");
  await bob.getByRole("button", { name: "Change password" }).click();
  await bob.getByText("Your password is changed.").waitFor();
  await shot(bob, "22-account");
  await server.raw(null, "POST", "/sessions", { user: BOB, password: "a-new-password-1" });
  await bob.context().close();
});

test("with room_management_url set, /manage/ sends the browser to that app instead", async () => {
  const admin = "admin@example.com";
  await server.api(admin, "PUT", "/configuration/global", { room_management_url: "https://rooms.example.com/my-rooms" });
  try {
    const answer = await fetch(`${server.url}/manage/`, { redirect: "manual" });
    assert.equal(answer.status, 307);
    assert.equal(answer.headers.get("location"), "https://rooms.example.com/my-rooms");
    const chat = await fetch(`${server.url}/`, { redirect: "manual" });
    assert.equal(chat.status, 200, "the chat client itself stays here");
  } finally {
    await server.api(admin, "PUT", "/configuration/global", { room_management_url: "" });
  }
  const back = await fetch(`${server.url}/manage/`, { redirect: "manual" });
  assert.equal(back.status, 200, "cleared, the built-in app is served again");
});
