// Transparent huge pages for malloc'd memory, asked of glibc through its GLIBC_TUNABLES variable
// (read once, when a process starts: a launcher sets it for the process it starts).
//
// Node's Buffers live in malloc'd memory. A page the process touches for the first time costs a
// page fault, and on the VMs this was measured on (docs/site-controller.md) one costs about 15 µs:
// an agent's first snapshot (24 MB of messages, assembled by gRPC into fresh buffers, and as much
// read from the socket) spent some 150 ms of its ~900 ms faulting pages in. With
// `glibc.malloc.hugetlb=1` glibc marks its memory MADV_HUGEPAGE, and the kernel (THP "madvise" or
// "always") faults it in 2 MiB at a time. Other C libraries ignore the variable; a kernel with THP
// "never" ignores the advice.

/** The tunable: madvise(MADV_HUGEPAGE) on malloc's memory. */
export const MALLOC_HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1";

/**
 * `env` with MALLOC_HUGE_PAGES_TUNABLE added to its GLIBC_TUNABLES, or undefined when there is
 * nothing to add: not Linux, or GLIBC_TUNABLES already sets glibc.malloc.hugetlb (to 0, say: an
 * operator's choice stays).
 */
export function withMallocHugePages(
  env: NodeJS.ProcessEnv,
  platform: NodeJS.Platform = process.platform,
): NodeJS.ProcessEnv | undefined {
  if (platform !== "linux") return undefined;
  const current = env.GLIBC_TUNABLES ?? "";
  const entries = current.split(":").filter((e) => e !== "");
  if (entries.some((e) => e.startsWith("glibc.malloc.hugetlb="))) return undefined;
  return { ...env, GLIBC_TUNABLES: [...entries, MALLOC_HUGE_PAGES_TUNABLE].join(":") };
}

/** `env` as a process that should have malloc's huge pages gets it (unchanged when withMallocHugePages adds nothing). */
export function mallocHugePagesEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return withMallocHugePages(env) ?? env;
}
