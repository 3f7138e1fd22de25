// Swagger UI at /docs: the operations are listed, Authorize takes a token, and "Try it out" on
// GET /users/me gets a 200. Usage: node swagger.mjs --api URL --token JWT
import { args, launch, report } from "./lib.mjs";

const a = args();
const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(`${a.api}/docs`);
  await page.waitForSelector(".opblock", { timeout: 20000 });
  const operations = await page.$$eval(".opblock", (els) =>
    els.map((e) => e.id.replace(/^operations-/, "")),
  );

  // Authorize with the bearer token.
  await page.click("button.authorize");
  const dialog = page.locator(".dialog-ux");
  const bearer = dialog.locator(".auth-container").filter({ hasText: "ClerkSession" }).first();
  await bearer.locator("input").first().fill(a.token);
  await bearer.locator("button.authorize").click();
  // Swagger UI then marks the scheme "Authorized" and offers Logout.
  const authorized = await bearer
    .locator("button[aria-label='Remove authorization']")
    .waitFor({ timeout: 5000 })
    .then(() => true, () => false);
  await dialog.locator("button.btn-done, button.close-modal").first().click();

  // Try it out on GET /users/me.
  const op = page.locator("#operations-Users-getMe");
  await op.locator(".opblock-summary").click();
  await op.locator("button.try-out__btn").click();
  await op.locator("button.execute").click();
  const statusCell = op.locator(".live-responses-table tbody .response-col_status").first();
  await statusCell.waitFor({ timeout: 20000 });
  const status = (await statusCell.textContent()).trim();
  const body = await op.locator(".live-responses-table .response-col_description pre").first().textContent();
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  report({ operations, authorized, status, body: JSON.parse(body) });
} finally {
  await browser.close();
}
