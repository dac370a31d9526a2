// Writing and reading files that hold keys or tokens: owner-only permissions (0600, directories
// 0700), atomic replacement, and a refusal to read a private key others could read (as ssh does).
import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";

export const SECRET_FILE_MODE = 0o600;
export const SECRET_DIR_MODE = 0o700;

/**
 * Creates `dir` with mode 0700. An existing directory is used only if group and others already have
 * no access: changing the mode of a directory someone else chose (say /etc) is not ours to do.
 */
export async function ensureSecretDir(dir: string): Promise<void> {
  const created = await mkdir(dir, { recursive: true, mode: SECRET_DIR_MODE });
  if (created !== undefined) {
    await chmod(dir, SECRET_DIR_MODE); // the umask may have cleared bits; be exact
    return;
  }
  const st = await stat(dir);
  if (!st.isDirectory()) throw new Error(`${dir} exists and is not a directory`);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(
      `${dir} is accessible by other users (mode ${(st.mode & 0o777).toString(8)}); ` +
        `run \`chmod 700 ${dir}\` or choose a new directory for keys`,
    );
  }
}

/** Writes `data` to `path` with mode 0600 via a temporary file and rename, so readers never see half a file. */
export async function writeSecretFile(path: string, data: string): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  const fh = await open(tmp, "wx", SECRET_FILE_MODE);
  try {
    await fh.writeFile(data);
    await fh.chmod(SECRET_FILE_MODE); // the umask may have cleared bits, never added them; be exact
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(dirname(path));
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Reads a file holding a secret, refusing it when group or others may read or write it. */
export async function readSecretFile(path: string): Promise<string> {
  const st = await stat(path);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(
      `${path} is accessible by other users (mode ${(st.mode & 0o777).toString(8)}); run \`chmod 600 ${path}\``,
    );
  }
  return readFile(path, "utf8");
}

export async function readJsonFile<T>(path: string, secret: boolean): Promise<T> {
  const text = secret ? await readSecretFile(path) : await readFile(path, "utf8");
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
}
