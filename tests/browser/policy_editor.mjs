// Drives a real headless Chromium (Debian's) against Pylon's status page: the fleet view,
// the policy document and its editor. Usage:
//   node policy_editor.mjs URL WRITE_TOKEN BAD_ADDITION GOOD_ADDITION NEW_PREFIX
// Enters the write token, reads the document and its hash, appends BAD_ADDITION and
// validates (the error is expected on one of its lines), then appends GOOD_ADDITION
// instead and applies, and waits for the new hash and NEW_PREFIX in the routes table.
// Prints "done <json>" with what it saw at each step, the console's errors and warnings
// (with the URL they came from), and any request that left the page's origin.
import { chromium } from "playwright-core";

const [url, writeToken, bad, good, newPrefix] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const problems = [];
const foreign = [];
const seen = {};
try {
  const page = await browser.newPage();
  const origin = new URL(url).origin;
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") {
      problems.push({ text: msg.text(), url: msg.location().url });
    }
  });
  page.on("pageerror", (e) => problems.push({ text: "page error: " + e.message, url: "" }));
  page.on("request", (req) => {
    if (new URL(req.url()).origin !== origin) foreign.push(req.url());
  });
  const step = async (name, fn) => {
    try {
      await fn();
    } catch (e) {
      problems.push({ text: name + ": " + e.message, url: "" });
      throw e;
    }
  };
  const text = (id) => page.evaluate((id) => document.getElementById(id).textContent, id);
  const wait = (fn, arg) => page.waitForFunction(fn, arg, { timeout: 15000, polling: 100 });

  await page.goto(url);
  await step("the fleet", async () => {
    await wait(() => document.querySelectorAll("#fleet tr").length > 0);
    seen.fleet = await page.evaluate(() => ({
      summary: document.getElementById("fleet-summary").textContent,
      agree: document.getElementById("fleet-summary").dataset.agree,
      nodes: [...document.querySelectorAll("#fleet tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    }));
  });
  await step("the document", async () => {
    await wait(() => /^[0-9a-f]{16}$/.test(document.getElementById("config-hash").textContent));
    seen.hash = await text("config-hash");
    seen.readOnly = await text("policy");
    seen.editorHiddenBefore = await page.evaluate(() => document.getElementById("editor").hidden);
  });
  await step("the write token", async () => {
    await page.fill("#write-token", writeToken);
    await page.click("#use-write-token");
    await wait(() => !document.getElementById("editor").hidden && document.getElementById("document").value !== "");
    seen.loaded = await page.inputValue("#document");
  });
  await step("a bad document", async () => {
    await page.fill("#document", seen.loaded.replace(/\n*$/, "\n") + bad);
    await page.click("#validate");
    await wait(() => document.querySelectorAll("#editor-errors li").length > 0);
    seen.bad = await page.evaluate(() => ({
      result: document.getElementById("editor-result").textContent,
      errors: [...document.querySelectorAll("#editor-errors li")].map((li) => li.textContent),
      marked: [...document.querySelectorAll("#gutter .bad")].map((s) => Number(s.textContent)),
      lines: document.getElementById("document").value.split("\n").length,
    }));
  });
  await step("a good document", async () => {
    await page.fill("#document", seen.loaded.replace(/\n*$/, "\n") + good);
    await page.click("#validate");
    // "validating…" also starts with "valid": wait for the answer itself
    await wait(() => document.getElementById("editor-result").textContent.startsWith("valid;"));
    seen.valid = await text("editor-result");
    seen.markedAfterValid = await page.evaluate(() => document.querySelectorAll("#gutter .bad").length);
    await page.click("#apply");
    await wait(() => document.getElementById("editor-result").textContent.startsWith("applied"));
    seen.applied = await text("editor-result");
    await wait(
      (prefix) => [...document.querySelectorAll("#routes tr")].some((tr) => tr.dataset.prefix === prefix),
      newPrefix,
    );
    seen.hashAfter = await text("config-hash");
    seen.routes = await page.evaluate(() => [...document.querySelectorAll("#routes tr")].map((tr) => tr.dataset.prefix));
    await wait(
      (hash) => [...document.querySelectorAll("#fleet tr")].every((tr) => tr.cells[2].textContent === hash),
      seen.hashAfter,
    );
    seen.fleetAfter = await page.evaluate(() => [...document.querySelectorAll("#fleet tr")].map((tr) => [...tr.cells].map((c) => c.textContent)));
  });
} catch (e) {
  // recorded in problems by the step
} finally {
  console.log("done " + JSON.stringify({ seen, problems, foreign }));
  await browser.close();
}
