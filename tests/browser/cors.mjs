// The example SPA calls /users/me from another origin: allowed → the user is shown; not
// allowed → the browser refuses the response. Usage:
//   node cors.mjs --api URL --allowed SPA_URL --denied SPA_URL --token JWT
import { args, launch, report } from "./lib.mjs";

const a = args();
const browser = await launch();
try {
  const result = {};
  for (const which of ["allowed", "denied"]) {
    const page = await browser.newPage();
    const console_ = [];
    page.on("console", (m) => console_.push(m.text()));
    const url = `${a[which]}/index.html#api=${encodeURIComponent(a.api)}&token=${encodeURIComponent(a.token)}`;
    await page.goto(url);
    await page.waitForSelector("#status:not([data-state='loading'])", { timeout: 20000 });
    result[which] = {
      origin: new URL(a[which]).origin,
      state: await page.getAttribute("#status", "data-state"),
      status: await page.textContent("#status"),
      name: await page.textContent("#name"),
      email: await page.textContent("#email"),
      clerkId: await page.textContent("#clerk-id"),
      console: console_.filter((m) => /CORS|Access-Control/i.test(m)).slice(0, 2),
    };
    await page.close();
  }
  report(result);
} finally {
  await browser.close();
}
