// A check for SQL that PostgreSQL runs but CockroachDB refuses by default, applied to every
// statement a Database sends when ISTHMUS_SQL_PORTABILITY_CHECK=1 (the test runner sets it, so the
// whole suite — which has PostgreSQL and no CockroachDB — fails on such a statement).
//
// What it checks: one statement modifying the same table in more than one place (two data-modifying
// common table expressions, or one of them and the main statement). PostgreSQL allows it;
// CockroachDB rejects it unless the cluster setting sql.multiple_modifications_of_table.enabled
// is on, which an operator's cluster cannot be assumed to have.

/** The environment variable that turns the check on. */
export const SQL_PORTABILITY_CHECK_ENV = "ISTHMUS_SQL_PORTABILITY_CHECK";

// INSERT INTO t, DELETE FROM t, UPDATE t — but not ON CONFLICT's `DO UPDATE SET`. Quoted
// identifiers and string literals are not used in the project's statements.
const MODIFICATION = /\b(?:INSERT\s+INTO|DELETE\s+FROM|(?<!\bDO\s+)UPDATE)\s+([A-Za-z_][A-Za-z0-9_.]*)/gi;

/** Tables `text` modifies in more than one place, lower-cased (none for a portable statement). */
export function tablesModifiedTwice(text: string): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const m of text.matchAll(MODIFICATION)) {
    const table = m[1]!.toLowerCase();
    if (seen.has(table)) twice.add(table);
    seen.add(table);
  }
  return [...twice];
}

/** Throws when `text` would be refused by CockroachDB for modifying a table twice. */
export function assertPortableStatement(text: string): void {
  const twice = tablesModifiedTwice(text);
  if (twice.length > 0) {
    throw new Error(
      `statement modifies ${twice.join(", ")} more than once, which CockroachDB refuses ` +
        `(sql.multiple_modifications_of_table.enabled): ${text.slice(0, 200)}`,
    );
  }
}
