// Shared by the end-to-end tests: the real pchat server started on a fresh data directory, the administrator's
// API calls that set up users and rooms, Debian's headless Chromium, and screenshots into the folder
// scripts/test names (PCHAT_SCREENSHOTS).

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const PASSWORD = "e2e-password-1";
const BINARY = process.env.PCHAT_BIN ?? new URL("../target/debug/pchat", import.meta.url).pathname;
const CHROMIUM = process.env.PCHAT_CHROMIUM ?? "/usr/bin/chromium";
export const SHOTS = process.env.PCHAT_SCREENSHOTS ?? join(tmpdir(), "pchat-screenshots");
mkdirSync(SHOTS, { recursive: true });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A running server on its own data directory; `restart()` stops it and starts it again on the same data. */
export class Server {
  static async start() {
    const server = new Server(mkdtempSync(join(tmpdir(), "pchat-e2e-")));
    await server.run();
    return server;
  }

  constructor(dir) {
    this.dir = dir;
    this.data = join(dir, "data");
    this.port = 0;
  }

  async run() {
    rmSync(join(this.data, "server.json"), { force: true });
    const config = join(this.dir, "pchat.toml");
    writeFileSync(config, "[limits]\npost_rate_per_sec = 100000.0\npost_burst = 100000.0\n");
    // The same port after a restart, as a person's open page expects.
    const listen = this.port ? `127.0.0.1:${this.port}` : "127.0.0.1:0";
    this.child = spawn(BINARY, ["serve", "--listen", listen, "--data-dir", this.data, "--config", config], {
      env: { ...process.env, PCHAT_BOOTSTRAP_ADMIN_PASSWORD: PASSWORD, RUST_LOG: "warn" },
      stdio: ["ignore", "ignore", "inherit"],
    });
    for (let i = 0; i < 300; i++) {
      const file = join(this.data, "server.json");
      if (existsSync(file)) {
        try {
          this.url = JSON.parse(readFileSync(file, "utf8")).url;
          this.port = Number(new URL(this.url).port);
          return;
        } catch {
          // Being written: read again.
        }
      }
      await sleep(100);
    }
    throw new Error("the server did not start");
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    await exited;
  }

  async restart() {
    await this.stop();
    await this.run();
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Calls the API as `user` (signing in once per user). */
  async api(user, method, path, body) {
    this.tokens ??= new Map();
    if (!this.tokens.has(user)) {
      const session = await this.raw(null, "POST", "/sessions", { user, password: PASSWORD });
      this.tokens.set(user, session.token);
    }
    return this.raw(this.tokens.get(user), method, path, body);
  }

  async raw(token, method, path, body) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${this.url}/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /** Users (chat enabled for everyone), a category open to all, and rooms with these members. */
  async setUp(users, rooms) {
    const admin = "admin@example.com";
    await this.api(admin, "PUT", "/policies/global", { enable_persistent_chat: true });
    for (const user of users) {
      await this.api(admin, "POST", "/users", { address: user, display_name: user.split("@")[0], password: PASSWORD });
    }
    const category = await this.api(admin, "POST", "/categories", {
      name: "Desks",
      allowed_members: ["*"],
      creators: ["*"],
    });
    const made = {};
    for (const [name, members] of Object.entries(rooms)) {
      made[name] = await this.api(admin, "POST", "/rooms", {
        name,
        category: category.id,
        privacy: "closed",
        members,
        managers: [admin],
      });
    }
    return made;
  }
}

/** Headless Debian Chromium. */
export async function browser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
}

/** A signed-in page for `user` in a context of its own. */
export async function signedIn(browserInstance, server, user, viewport = { width: 1100, height: 720 }) {
  const context = await browserInstance.newContext({ viewport });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.problems = problems;
  await page.goto(server.url + "/");
  await page.getByLabel("Address").fill(user);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "My rooms" }).waitFor();
  return page;
}

/** Saves a screenshot named `name` into the screenshot folder. */
export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

/** axe-core's serious and critical violations on the page. */
export async function accessibilityProblems(page) {
  const source = readFileSync(new URL("./node_modules/axe-core/axe.min.js", import.meta.url), "utf8");
  await page.evaluate(source);
  const result = await page.evaluate(async () => {
    // @ts-ignore axe is global once evaluated
    return await axe.run(document, { resultTypes: ["violations"] });
  });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}
