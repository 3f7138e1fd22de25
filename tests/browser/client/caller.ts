// A small caller of the client generated from openapi.json (openapi-typescript + openapi-fetch).
// It must type-check against the generated types, then run against the live service.
// Usage: node dist/caller.js BASE_URL TOKEN
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type User = components["schemas"]["User"];
type Problem = components["schemas"]["Problem"];

const [baseUrl, token] = process.argv.slice(2);
if (!baseUrl || !token) throw new Error("usage: caller BASE_URL TOKEN");
const client = createClient<paths>({ baseUrl });
const auth = { Authorization: `Bearer ${token}` };

function fail(what: string, detail: unknown): never {
  console.error(what, detail);
  process.exit(1);
}

const me = await client.GET("/users/me", { headers: auth });
if (!me.data) fail("GET /users/me", me.error);
const user: User = me.data;

const patched = await client.PATCH("/users/me", {
  headers: auth,
  body: { metadata: { client: "typescript", removed: null } },
});
if (!patched.data) fail("PATCH /users/me", patched.error);

const refused = await client.GET("/users/me", { headers: { Authorization: "Bearer not.a.token" } });
const problem: Problem | undefined = refused.error;
if (refused.response.status !== 401 || problem?.code !== "token-invalid") {
  fail("expected a typed 401 problem", problem);
}

const ready = await client.GET("/readyz");
console.log(
  JSON.stringify({
    clerkId: user.clerk_id,
    email: user.email,
    metadata: patched.data.metadata,
    problemCode: problem.code,
    ready: ready.data?.status,
  }),
);
