// A caller of the client @hey-api/openapi-ts generates from openapi.json (openapi-ts.config.mjs):
// its SDK parses every success answer with the zod schemas generated from the same document, and
// this caller parses every problem answer with the generated `zProblem`. Objects are parsed
// `.strict()`: exactly the keys the document names. Any mismatch throws, and the run fails.
// Usage: node validated/dist/caller.js BASE_URL TOKEN (TOKEN: a user whose username and
// last_name are null; webhooks enabled).
import { client } from "./client/client.gen.js";
import {
  deleteMe,
  getHealthz,
  getMe,
  getMetrics,
  getReadyz,
  patchMe,
  pingDatabase,
  receiveClerkWebhook,
} from "./client/sdk.gen.js";
import { zProblem, zReadiness, zStatus, zUser } from "./client/zod.gen.js";

const [baseUrl, token] = process.argv.slice(2);
if (!baseUrl || !token) throw new Error("usage: caller BASE_URL TOKEN");
client.setConfig({ baseUrl });
const auth = { Authorization: `Bearer ${token}` };

function expect(what: string, ok: boolean, detail?: unknown): void {
  if (!ok) {
    console.error(what, JSON.stringify(detail));
    process.exit(1);
  }
}

/** A problem answer: the status, `application/problem+json`, and the body `zProblem` parses. */
function problem(what: string, r: { error?: unknown; response: Response }, status: number) {
  expect(`${what}: status`, r.response.status === status, r.response.status);
  expect(
    `${what}: media type`,
    r.response.headers.get("content-type") === "application/problem+json",
    r.response.headers.get("content-type"),
  );
  expect(`${what}: X-Request-Id`, !!r.response.headers.get("x-request-id"));
  const p = zProblem.strict().parse(r.error);
  expect(`${what}: status in the body`, p.status === status, p);
  return p;
}

const codes: Record<string, string> = {};

const me = await getMe({ headers: auth, throwOnError: true });
const user = zUser.strict().parse(me.data);
expect("username and last_name are null", user.username === null && user.last_name === null, user);

const patched = await patchMe({
  headers: auth,
  body: { metadata: { client: "zod", removed: null } },
  throwOnError: true,
});
zUser.strict().parse(patched.data);

const nul = await patchMe({ headers: auth, body: { metadata: { nul: "\u0000" } } });
codes.nul = problem("PATCH with U+0000", nul, 422).code;

const deleted = await deleteMe({ headers: auth, throwOnError: true });
expect("DELETE is 204", deleted.response.status === 204, deleted.response.status);
const again = await getMe({ headers: auth, throwOnError: true });
expect("GET after DELETE creates the record again", again.data.id !== user.id, again.data);

const bad = await getMe({ headers: { Authorization: "Bearer not.a.token" } });
codes.badToken = problem("a bad token", bad, 401).code;
expect("WWW-Authenticate", !!bad.response.headers.get("www-authenticate"));
const none = await getMe({});
codes.noToken = problem("no token", none, 401).code;

const webhook = await receiveClerkWebhook({
  headers: { "svix-id": "msg_1", "svix-timestamp": "1", "svix-signature": "v1,bm9wZQ==" },
  body: { type: "user.updated", data: {} },
});
codes.webhook = problem("a webhook with a bad signature", webhook, 400).code;

const ready = await getReadyz({ throwOnError: true });
zReadiness.strict().parse(ready.data);
const live = await getHealthz({ throwOnError: true });
zStatus.strict().parse(live.data);
const ping = await pingDatabase({ throwOnError: true });
zStatus.strict().parse(ping.data);
const metrics = await getMetrics({ throwOnError: true });
expect("metrics are text", typeof metrics.data === "string" && metrics.data.includes("clerk_users_"));

console.log(
  JSON.stringify({
    clerkId: user.clerk_id,
    username: user.username,
    lastName: user.last_name,
    metadata: patched.data.metadata,
    codes,
    ready: ready.data.status,
  }),
);
