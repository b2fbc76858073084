// Drives a real headless Chromium (Debian's) against Pylon's admin status page.
// Usage: node status_page.mjs URL
// Prints "ready <json>" once the page shows its first generation, then waits for the
// test to reload the gateway (SIGHUP) and prints "done <json>" once the page, refreshing
// by itself, shows the next generation (or after 20 s).
import { chromium } from "playwright-core";

const url = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const problems = [];
const foreign = [];
try {
  const page = await browser.newPage();
  const origin = new URL(url).origin;
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") problems.push(msg.text());
  });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("request", (req) => {
    if (new URL(req.url()).origin !== origin) foreign.push(req.url());
  });
  await page.goto(url);
  const view = () =>
    page.evaluate(() => ({
      generation: document.getElementById("generation").textContent,
      lastReload: document.getElementById("last-reload").textContent,
      routes: [...document.querySelectorAll("#routes tr")].map((tr) => ({
        prefix: tr.dataset.prefix,
        text: tr.textContent,
      })),
    }));
  await page.waitForFunction(() => document.querySelectorAll("#routes tr").length > 0, null, {
    timeout: 15000,
  });
  const before = await view();
  console.log("ready " + JSON.stringify(before));
  let after = before;
  try {
    await page.waitForFunction(
      (g) => document.getElementById("generation").textContent !== g,
      before.generation,
      { timeout: 20000, polling: 100 },
    );
    after = await view();
  } catch (e) {
    problems.push("the page did not show a new generation: " + e.message);
  }
  console.log("done " + JSON.stringify({ before, after, problems, foreign, url: page.url() }));
} finally {
  await browser.close();
}
