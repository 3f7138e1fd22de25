// @hey-api/openapi-ts: a fetch client from ../../openapi.json whose SDK checks every answer against
// zod schemas generated from the same document (tests/api/browser.rs runs it; the README shows it).
export default {
  input: "../../openapi.json",
  // Imports with `.js`, so that node runs what tsc emits (ES modules).
  output: { path: "validated/client", importFileExtension: ".js" },
  plugins: [
    "@hey-api/client-fetch",
    "zod",
    // Every answer is parsed with the zod schemas. Requests are not: this version's request
    // validator reads header parameters from a `Headers` object as if it were a plain one.
    { name: "@hey-api/sdk", validator: { request: false, response: "zod" } },
  ],
};
