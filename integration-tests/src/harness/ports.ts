// Fixed-address test ports: the helper lives in @isthmus/schema so every package's tests (and
// `isthmus dev --listen host:0`) share one picker that stays out of the kernel's ephemeral range.
export { fixedPort } from "@isthmus/schema";
