import assert from "node:assert/strict";
import { test } from "node:test";
import { assertPortableStatement, tablesModifiedTwice } from "./portable-sql.js";

test("a table written by two data-modifying expressions of one statement is found", () => {
  const text = `WITH d AS (DELETE FROM intent_objects WHERE id = $1),
    u AS (INSERT INTO intent_objects (kind, id) VALUES ($2, $3) ON CONFLICT (kind, id) DO UPDATE SET id = excluded.id)
    SELECT 1`;
  assert.deepEqual(tablesModifiedTwice(text), ["intent_objects"]);
  assert.throws(() => assertPortableStatement(text), /modifies intent_objects more than once.*CockroachDB/);
});

test("an expression and the main statement writing one table count twice, case and line breaks aside", () => {
  assert.deepEqual(
    tablesModifiedTwice(
      "with r as (update Topology_Revision set revision = 2 returning revision)\nUPDATE topology_revision SET x = 1",
    ),
    ["topology_revision"],
  );
});

test("an upsert's DO UPDATE, different tables and reads are portable", () => {
  const text = `WITH m AS (UPDATE intent_state SET applied_index = $1 WHERE id = 1 RETURNING 1 AS ok),
    r AS (UPDATE topology_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision),
    c AS (INSERT INTO topology_changes (revision, body) SELECT revision, $2 FROM r),
    o AS (INSERT INTO topology_objects (kind, id) SELECT 1, 'a' FROM r
          ON CONFLICT (kind, id) DO
          UPDATE SET body = excluded.body)
    SELECT (SELECT revision FROM r), (SELECT count(*) FROM topology_objects)`;
  assert.deepEqual(tablesModifiedTwice(text), []);
  assert.doesNotThrow(() => assertPortableStatement(text));
});
