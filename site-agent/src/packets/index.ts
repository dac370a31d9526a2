// Public surface of the packet codecs.
export * from "./addr.js";
export * from "./checksum.js";
export * from "./encode.js";
export * from "./packet.js";
export * from "./packet-dsl.js";
export * from "./vxlan.js";
