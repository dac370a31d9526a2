// One PostgreSQL server per test file: node:test hooks start it before the file's tests and stop
// it after them; each test takes a fresh database of its own. A machine without the server
// binaries skips the tests, printing why once (in CI that is an error: see startTestPostgres).
import { after, before } from "node:test";
import { startTestPostgres, type TestPostgres } from "./test-postgres.js";

export interface PostgresForTests {
  /** Why the tests cannot run here (known once the file's first hook ran), else undefined. */
  readonly skip: string | undefined;
  /** A fresh, empty database on the file's server. */
  createDatabase(): Promise<string>;
}

/** Registers the hooks; call at the top level of a test file. `what` names the tests in the skip line. */
export function postgresForTests(what = ""): PostgresForTests {
  let server: TestPostgres | undefined;
  let skip: string | undefined;
  before(async () => {
    const r = await startTestPostgres();
    if ("skip" in r) {
      skip = r.skip;
      console.log(`# skipping${what ? ` ${what}` : ""}: ${r.skip}`);
    } else server = r;
  });
  after(async () => {
    await server?.stop();
  });
  return {
    get skip() {
      return skip;
    },
    createDatabase() {
      if (!server)
        return Promise.reject(new Error("no test PostgreSQL server (the test should have skipped)"));
      return server.createDatabase();
    },
  };
}
