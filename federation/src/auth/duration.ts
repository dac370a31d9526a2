// Parses the short durations people type on the command line ("90s", "15m", "1h", "7d") into
// seconds, rejecting anything else with a message that shows the accepted forms.

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

export function parseDuration(text: string, what = "duration"): number {
  const m = /^\s*(\d+)\s*([smhd])\s*$/.exec(text);
  if (!m) {
    throw new Error(`${what} "${text}" is not a duration; use a number with s, m, h or d (e.g. 15m, 1h, 7d)`);
  }
  const seconds = Number(m[1]) * (UNITS[m[2]!] ?? 1);
  if (seconds <= 0) throw new Error(`${what} must be longer than zero, got "${text}"`);
  return seconds;
}

/** "3600" → "1h", "900" → "15m": for messages. */
export function formatDuration(seconds: number): string {
  for (const [unit, n] of [
    ["d", 86400],
    ["h", 3600],
    ["m", 60],
  ] as const) {
    if (seconds >= n && seconds % n === 0) return `${seconds / n}${unit}`;
  }
  return `${seconds}s`;
}
