{
  "targets": [
    {
      "target_name": "isthmus_afpacket",
      "sources": ["afpacket.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "isthmus_udpbatch",
      "sources": ["udpbatch.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "isthmus_bpfmap",
      "sources": ["bpfmap.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "isthmus_sched",
      "sources": ["sched.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "isthmus_upcallring",
      "sources": ["upcallring.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
