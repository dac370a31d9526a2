// Topology objects for tests of code that frames stored encodings by hand: their bodies need 1-,
// 2- and 3-byte length prefixes, where a framing mistake would show.
import { topologypb } from "@isthmus/schema";

export const FRAMING_OBJECTS: readonly topologypb.TopologyObject[] = [
  { bridge: topologypb.Bridge.fromPartial({ id: "b1", name: "net", tunnelKey: 0x100001 }) },
  { ipAddrGroup: { id: "g", name: "sg", addresses: Array.from({ length: 40 }, (_, i) => `10.0.0.${i}`) } },
  {
    ipAddrGroup: {
      id: "h",
      name: "big",
      addresses: Array.from({ length: 2000 }, (_, i) => `10.1.${i >> 8}.${i & 255}`),
    },
  },
];
