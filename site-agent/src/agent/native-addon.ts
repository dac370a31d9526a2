// The agent's own N-API addons (site-agent/native, built by `npm run build` where a C compiler and
// Node's headers are): where they are, whether one is built, and loading it once with an error that
// says what needed it and how to build it.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** dist/agent → site-agent/native/build/Release. */
const RELEASE_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "native", "build", "Release");

export interface NativeAddon<T> {
  readonly path: string;
  /** Linux and the addon is built. */
  available(): boolean;
  /** The addon (loaded on first use); throws naming `neededFor` when it is not built. */
  load(): T;
}

/** `file`: the addon's file name in build/Release (`isthmus_*.node`). */
export function nativeAddon<T>(file: string, neededFor: string): NativeAddon<T> {
  const path = join(RELEASE_DIR, file);
  let loaded: T | undefined;
  const available = () => process.platform === "linux" && existsSync(path);
  return {
    path,
    available,
    load() {
      if (loaded) return loaded;
      if (!available()) {
        throw new Error(
          `${neededFor} needs the native addon at ${path}; build it with \`npm run build\` (Linux, a C compiler and Node headers)`,
        );
      }
      loaded = createRequire(import.meta.url)(path) as T;
      return loaded;
    },
  };
}
