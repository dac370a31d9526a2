// Loads a process's configuration from defaults, an optional YAML file, ISTHMUS_* environment
// variables and command-line overrides (in that order of precedence, last wins), then validates
// it with a zod schema. Errors name the field, the source and what was expected.
import { readFileSync } from "node:fs";
import { isMap, isSeq, LineCounter, parseDocument } from "yaml";
import type { z } from "zod";

export class ConfigError extends Error {
  constructor(
    message: string,
    /** Dotted path of the offending field, e.g. "coordinator.listen"; empty for whole-file errors. */
    readonly field: string,
    readonly source: string,
  ) {
    super(message);
    this.name = "ConfigError";
  }
}

export interface LoadConfigOptions {
  /** Path to a YAML file; missing means defaults, env and overrides only. */
  file?: string;
  /** Environment to read ISTHMUS_<SECTION>__<FIELD> variables from (double underscore nests). */
  env?: NodeJS.ProcessEnv;
  /** Values from flags; keys are dotted paths. Undefined values are ignored. */
  overrides?: Record<string, unknown>;
  /** Environment prefix; "ISTHMUS_" by default. */
  envPrefix?: string;
}

type Tree = Record<string, unknown>;

function setPath(tree: Tree, path: string[], value: unknown): void {
  let node = tree;
  for (const [i, key] of path.entries()) {
    if (i === path.length - 1) {
      node[key] = value;
      return;
    }
    const next = node[key];
    if (typeof next !== "object" || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Tree;
  }
}

function camel(s: string): string {
  return s.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** The command-line flag of a field: its last segment in kebab case (`agent.tunnelIp` → `--tunnel-ip`). */
export function flagOf(field: string): string {
  return `--${(field.split(".").pop() ?? "").replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The environment variable of a field (`agent.tunnelIp` → `ISTHMUS_AGENT__TUNNEL_IP`). */
export function envOf(field: string, prefix: string): string {
  return (
    prefix +
    field
      .split(".")
      .map((seg) => seg.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase())
      .join("__")
  );
}

function getPath(tree: Tree, path: readonly PropertyKey[]): unknown {
  let node: unknown = tree;
  for (const key of path) {
    if (typeof node !== "object" || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** Env values are strings; numbers, booleans and JSON arrays are decoded so zod sees real types. */
function decodeEnvValue(raw: string): unknown {
  const t = raw.trim();
  if (t === "true") return true;
  if (t === "false") return false;
  if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
  if (t.startsWith("[") || t.startsWith("{")) {
    try {
      return JSON.parse(t);
    } catch {
      return raw;
    }
  }
  return raw;
}

function fileLineOf(
  source: string,
  doc: ReturnType<typeof parseDocument>,
  lc: LineCounter,
  path: (string | number)[],
) {
  let node: unknown = doc.contents;
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => String((p.key as { value?: unknown })?.value ?? p.key) === String(key),
      );
      node = pair?.value;
    } else if (isSeq(node)) {
      node = node.items[Number(key)];
    } else {
      node = undefined;
    }
  }
  const range = (node as { range?: [number, number, number] } | undefined)?.range;
  if (!range) return source;
  const { line, col } = lc.linePos(range[0]);
  return `${source}:${line}:${col}`;
}

export function loadConfig<S extends z.ZodType>(schema: S, opts: LoadConfigOptions = {}): z.infer<S> {
  const tree: Tree = {};
  let doc: ReturnType<typeof parseDocument> | undefined;
  const lc = new LineCounter();
  const fileSource = opts.file ?? "";

  if (opts.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.file, "utf8");
    } catch (err) {
      throw new ConfigError(`cannot read config file ${opts.file}: ${(err as Error).message}`, "", opts.file);
    }
    doc = parseDocument(text, { lineCounter: lc, prettyErrors: true });
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      const pos = e.linePos?.[0];
      const where = pos ? `${opts.file}:${pos.line}:${pos.col}` : opts.file;
      throw new ConfigError(`invalid YAML in ${where}: ${e.message.split("\n")[0]}`, "", opts.file);
    }
    const value = doc.toJS();
    if (value !== null && value !== undefined) {
      if (typeof value !== "object" || Array.isArray(value)) {
        throw new ConfigError(`config file ${opts.file} must hold a mapping at the top level`, "", opts.file);
      }
      Object.assign(tree, value);
    }
  }

  const fromEnv = new Map<string, string>();
  const prefix = opts.envPrefix ?? "ISTHMUS_";
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (!k.startsWith(prefix) || v === undefined) continue;
    const path = k.slice(prefix.length).split("__").map(camel);
    setPath(tree, path, decodeEnvValue(v));
    fromEnv.set(path.join("."), k);
  }
  const fromFlags = new Set<string>();
  const hasFlag = new Set(Object.keys(opts.overrides ?? {}));
  for (const [k, v] of Object.entries(opts.overrides ?? {})) {
    if (v === undefined) continue;
    setPath(tree, k.split("."), v);
    fromFlags.add(k);
  }

  const result = schema.safeParse(tree);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = issue.path.map(String).join(".");
  if (field !== "" && issue.code === "invalid_type" && getPath(tree, issue.path) === undefined) {
    // Nothing set it: say how to, rather than what type `undefined` is not.
    const ways = [
      ...(hasFlag.has(field) ? [`the flag ${flagOf(field)}`] : []),
      `the environment variable ${envOf(field, prefix)}`,
      `"${field}" in the config file`,
    ];
    throw new ConfigError(
      `missing field "${field}": set it with ${ways.slice(0, -1).join(", ")} or ${ways.at(-1)}`,
      field,
      "defaults",
    );
  }
  let source: string;
  if (fromFlags.has(field)) source = `flag ${flagOf(field)}`;
  else if (fromEnv.has(field)) source = `environment variable ${fromEnv.get(field)}`;
  else if (doc) source = fileLineOf(fileSource, doc, lc, issue.path as (string | number)[]);
  else source = "defaults";
  const label = field === "" ? "configuration" : `field "${field}"`;
  throw new ConfigError(`invalid ${label} (from ${source}): ${issue.message}`, field, source);
}
