// SPDX-License-Identifier: GPL-2.0
// Isthmus kernel fast path: TC (clsact ingress) programs that look a frame up in the agent's flow
// map and, on a hit, apply the flow's actions without the agent seeing the packet. On a miss the
// frame goes up to the agent with an upcall header naming the ingress port (or VNI and remote):
// copied into the upcall ring buffer when it fits, else pushed in front of the frame, which is
// redirected to the upcall device (a veth pair). The agent
// writes frames back with a re-inject trailer saying where they go; upcall_ingress obeys it.
// Layouts are mirrored byte for byte by site-agent/src/agent/kernel/flow-map-codec.ts and
// upcall-frame.ts; docs/kernel-datapath.md explains the design.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_ARP_BE bpf_htons(0x0806)
#define ETH_P_IP_BE bpf_htons(0x0800)
#define VNI_TRACE_BIT 0x800000
#define VNI_LOCAL_MAX 0x0fffff

// Flow key, 40 bytes, no implicit padding. Extracted exactly as flow-key.ts extracts the
// corresponding userspace fields, so the agent can derive it from its own key. Fields the frame
// does not have are zero: non-IPv4/ARP frames match on L2 + ethertype only.
struct flow_key {
	__u32 ifindex;    // 0: ingress ifindex (VM port's host side, or the VXLAN device)
	__u32 tun_id;     // 4: VNI the frame arrived with (trace bit cleared), 0 on VM ports
	__u8 eth_dst[6];  // 8
	__u8 eth_src[6];  // 14
	__be16 ethertype; // 20: network order (tagged frames never reach a lookup)
	__u8 proto;       // 22: IPv4 protocol; ARP opcode (low byte)
	__u8 frag;        // 23: 0 not a fragment, 1 first fragment, 2 later fragment
	__be32 ip_src;    // 24: IPv4 source; ARP sender IP
	__be32 ip_dst;    // 28: IPv4 destination; ARP target IP
	__be16 sport;     // 32: TCP/UDP/SCTP source port; ICMP type
	__be16 dport;     // 34: destination port; ICMP code
	__be16 icmp_id;   // 36: ICMP bytes 4-5 (echo identifier)
	__u16 pad;        // 38: always 0
};

enum flow_action_kind {
	FLOW_ACT_DROP = 0,     // match and drop (counted)
	FLOW_ACT_REDIRECT = 1, // redirect to a local ifindex (egress)
	FLOW_ACT_TUNNEL = 2,   // set tunnel key (VNI, remote) and redirect to the VXLAN device
};

#define FLOW_F_SET_MACS 1
#define FLOW_F_SET_IP_SRC 2 // NAT: rewrite the IPv4 source (IP and TCP/UDP checksums updated)
#define FLOW_F_SET_IP_DST 4
#define FLOW_F_SET_TP_SRC 8 // NAT: rewrite the TCP/UDP source port
#define FLOW_F_SET_TP_DST 16
#define FLOW_F_NAT (FLOW_F_SET_IP_SRC | FLOW_F_SET_IP_DST | FLOW_F_SET_TP_SRC | FLOW_F_SET_TP_DST)
// FLOW_ACT_REDIRECT to a veth whose peer is in another namespace (a VM's): bpf_redirect_peer puts
// the frame straight on the peer's ingress instead of through the veth's transmit and the backlog
// queue (one softirq pass less per packet). The agent sets it only for such veths: for any other
// target (a TAP, a peer in this namespace) the kernel would drop the frame.
#define FLOW_F_PEER 32
// tunnel_ports values: the ifindex, with this bit when it is such a veth (as FLOW_F_PEER).
#define TUNNEL_PORT_PEER 0x80000000u
// last_used_ns is rewritten only when it is older than this: idle expiry counts in seconds, and a
// store per packet would keep the entry's cache line bouncing between the CPUs that forward it.
#define LAST_USED_GRANULARITY_NS 1000000ull

// Flow value, 80 bytes. Written by the agent; packets/bytes/last_used_ns by the program.
struct flow_value {
	__u32 action;       // 0: enum flow_action_kind
	__u32 out_ifindex;  // 4: redirect target (the VXLAN device for FLOW_ACT_TUNNEL)
	__u32 flags;        // 8: FLOW_F_SET_MACS
	__u32 tun_id;       // 12: VNI for FLOW_ACT_TUNNEL
	__u32 tun_remote;   // 16: remote IPv4, HOST byte order (bpf_tunnel_key.remote_ipv4 is)
	__u8 eth_dst[6];    // 20
	__u8 eth_src[6];    // 26
	__u8 dec_ttl;       // 32: IPv4 TTL decrement; a packet whose TTL would expire goes to the agent
	__u8 pad[7];        // 33
	__u64 packets;      // 40
	__u64 bytes;        // 48
	__u64 last_used_ns; // 56: bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last hit
	__be32 nat_ip_src;  // 64: FLOW_F_SET_IP_SRC
	__be32 nat_ip_dst;  // 68: FLOW_F_SET_IP_DST
	__be16 nat_tp_src;  // 72: FLOW_F_SET_TP_SRC
	__be16 nat_tp_dst;  // 74: FLOW_F_SET_TP_DST
	__u32 agent_id;     // 76: written by the agent, never read here: names the entry so the
	                    //     agent can read counters back in bulk (BPF_MAP_LOOKUP_BATCH)
};

// Per ingress device: the agent's port number and the upcall rate limiter's state (GCRA: the
// theoretical arrival time of the next allowed upcall).
struct port_info {
	__u32 port_no; // 0 for the VXLAN device
	__u32 pad;
	__u64 tat_ns;
};

struct dp_config {
	__u32 upcall_ifindex; // kernel end of the upcall veth (misses are redirected to its egress)
	__u32 vxlan_ifindex;  // the external-mode VXLAN device
	__u64 upcall_interval_ns; // 1e9 / upcalls per second per port
	__u64 upcall_burst_ns;    // interval * burst
	__u32 upcall_ring;        // 1: hand misses up through upcall_ring when they fit (see below)
	__u32 pad;
};

// The header pushed in front of a frame handed to the agent, 32 bytes. It looks like an Ethernet
// header with the IEEE local experimental ethertype so nothing in the stack mistakes it for IP.
struct upcall_hdr {
	__u8 dst[6];       // 0: fixed 02:69:73:74:6d:75
	__u8 src[6];       // 6: same
	__be16 ethertype;  // 12: 0x88b5
	__u16 vlan_tci;    // 14: the frame's VLAN tag (when vlan_proto != 0), popped for the push
	__u32 port_no;     // 16: ingress port number, 0 from the tunnel
	__u32 tun_id;      // 20: VNI as received (trace bit kept)
	__u32 tun_remote;  // 24: tunnel sender, host byte order
	__be16 vlan_proto; // 28: 0 = untagged
	__u16 reason;      // 30: enum upcall_reason
	__u64 miss_ns;     // 32: bpf_ktime_get_ns() when the program handed the frame up (flow setup
	                   //     latency is measured from here: the first packet's miss, not its read)
};

enum upcall_reason {
	UPCALL_MISS = 1,
	UPCALL_TTL = 2,    // a flow hit whose TTL would expire: the agent answers with ICMP
	UPCALL_VLAN = 3,   // tagged frames are never matched in the kernel
	UPCALL_PARSE = 4,  // headers truncated: the simulation decides
	UPCALL_TRACED = 5, // traced packets always go to the agent
};

// A miss handed up through the ring buffer: the same header, the frame's length, then the frame
// copied from the skb (the skb itself is dropped; the agent re-injects its copy through the upcall
// veth as usual). Records have a fixed size (bpf_ringbuf_reserve needs a constant), so frames
// longer than RING_FRAME_MAX and GSO super-frames take the veth. The frame's L4 checksum may be
// unfinished (CHECKSUM_PARTIAL from a VM's veth) and the ring cannot say so: the agent's reader
// finishes TCP/UDP checksums over IPv4 itself.
#define RING_FRAME_MAX 1600
struct ring_upcall {
	struct upcall_hdr h; // 0
	__u32 frame_len;     // 40
	__u32 pad;           // 44
	__u8 frame[RING_FRAME_MAX]; // 48
};

// The trailer the agent appends to a frame it writes to the upcall device, 20 bytes.
struct reinject_trailer {
	__u32 action;     // FLOW_ACT_REDIRECT or FLOW_ACT_TUNNEL
	__u32 out_ifindex;
	__u32 tun_id;
	__u32 tun_remote; // host byte order
	__u32 magic;      // REINJECT_MAGIC
};
#define REINJECT_MAGIC 0x52545349 // "ISTR" little-endian

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct port_info);
} ports SEC(".maps");

// Intra-site tunnel keys: VNI -> ifindex of the local port it names (delivered without lookup).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} tunnel_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_config);
} config SEC(".maps");

// Misses to the agent without a device hop: bpf_ringbuf_reserve/submit wakes the agent's poll on
// the map fd directly (no veth transmit, backlog softirq or socket queue in between). 2 MiB holds
// ~1270 records; when it is full the miss is dropped and counted (ST_RING_FULL), as a full upcall
// socket would drop it.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 21);
} upcall_ring SEC(".maps");

enum dp_stat {
	ST_HIT = 0,
	ST_UPCALL = 1,        // misses from VM ports handed to the agent
	ST_MALFORMED = 2,     // no tunnel metadata on the VXLAN device
	ST_TTL_UPCALL = 3,
	ST_RATE_LIMITED = 4,  // upcall refused by the per-port limiter (frame dropped)
	ST_TUNNEL_DELIVER = 5,
	ST_REINJECT = 6,
	ST_REINJECT_BAD = 7,  // a frame on the upcall device without a valid trailer
	ST_UPCALL_FAIL = 8,   // no upcall device configured, or the header could not be pushed
	ST_UNKNOWN_PORT = 9,  // frame on a device with the program but no port entry
	ST_UNKNOWN_KEY = 10,  // intra-site VNI that names no local port
	ST_TUNNEL_UPCALL = 11, // frames from the tunnel handed to the agent (flow state, global keys)
	ST_RING_UPCALL = 12,   // of the upcalls above, those handed up through upcall_ring
	ST_RING_FULL = 13,     // miss dropped: upcall_ring had no room
	ST_MAX = 14,
};

// Per CPU: every forwarded packet counts, and one shared counter would bounce its cache line
// between the CPUs forwarding both directions of a connection. The agent sums the CPUs.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dp_stats SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&dp_stats, &idx);
	if (c)
		*c += 1; // this CPU's slot; softirq context does not nest on one CPU
}

// Returns 0 when the key was filled, -1 when a header is truncated (the agent then decides).
static __always_inline int parse(struct __sk_buff *skb, struct flow_key *k)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memcpy(k->eth_dst, eth->h_dest, 6);
	__builtin_memcpy(k->eth_src, eth->h_source, 6);
	k->ethertype = eth->h_proto;
	if (eth->h_proto == ETH_P_ARP_BE) {
		__u8 *arp = (void *)(eth + 1);
		if ((void *)(arp + 28) > end)
			return -1;
		k->proto = arp[7];
		__builtin_memcpy(&k->ip_src, arp + 14, 4);
		__builtin_memcpy(&k->ip_dst, arp + 24, 4);
		return 0;
	}
	if (eth->h_proto != ETH_P_IP_BE)
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return -1;
	k->proto = ip->protocol;
	k->ip_src = ip->saddr;
	k->ip_dst = ip->daddr;
	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & 0x1fff) {
		k->frag = 2; // later fragments carry no L4 header
		return 0;
	}
	if (frag & 0x2000)
		k->frag = 1;
	__u32 ihl = ip->ihl * 4;
	if (ihl < 20)
		return -1;
	__u8 *l4 = (__u8 *)ip + ihl;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP || ip->protocol == 132) {
		if ((void *)(l4 + 4) > end)
			return -1;
		k->sport = *(__be16 *)l4;
		k->dport = *(__be16 *)(l4 + 2);
	} else if (ip->protocol == IPPROTO_ICMP) {
		if ((void *)(l4 + 6) > end)
			return -1;
		k->sport = bpf_htons(l4[0]);
		k->dport = bpf_htons(l4[1]);
		k->icmp_id = *(__be16 *)(l4 + 4);
	}
	return 0;
}

// Returns 0 on success, 1 when the TTL would expire (the agent must answer), -1 on error.
static __always_inline int dec_ttl(struct __sk_buff *skb, __u8 by)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return -1;
	if (ip->ttl <= by)
		return 1;
	// TTL and protocol share one 16-bit word of the header checksum.
	__be16 old = *(__be16 *)&ip->ttl;
	__u8 ttl = ip->ttl - by;
	__be16 new = bpf_htons(((__u16)ttl << 8) | ip->protocol);
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &ttl, 1, 0) < 0)
		return -1;
	return 0;
}

// Applies the flow's NAT rewrites the way flow-actions.ts applyRewrites does: IPv4 header checksum
// always, the TCP/UDP checksum for unfragmented TCP/UDP (a zero UDP checksum stays zero), ports
// only for TCP/UDP. The agent writes NAT entries only for unfragmented IPv4.
static __always_inline int nat(struct __sk_buff *skb, struct flow_value *v, __u8 proto)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return -1;
	__u32 l4 = ETH_HLEN + ip->ihl * 4;
	__u32 csum = 0;
	__u64 l4flags = 0;
	if (proto == IPPROTO_TCP) {
		csum = l4 + 16;
	} else if (proto == IPPROTO_UDP) {
		csum = l4 + 6;
		l4flags = BPF_F_MARK_MANGLED_0;
	}
	__u32 ip_check = ETH_HLEN + offsetof(struct iphdr, check);
	if (v->flags & FLOW_F_SET_IP_SRC) {
		__be32 old = ip->saddr;
		__be32 new = v->nat_ip_src;
		if (csum && bpf_l4_csum_replace(skb, csum, old, new, l4flags | BPF_F_PSEUDO_HDR | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, ip_check, old, new, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &new, 4, 0) < 0)
			return -1;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > end)
			return -1;
	}
	if (v->flags & FLOW_F_SET_IP_DST) {
		__be32 old = ip->daddr;
		__be32 new = v->nat_ip_dst;
		if (csum && bpf_l4_csum_replace(skb, csum, old, new, l4flags | BPF_F_PSEUDO_HDR | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, ip_check, old, new, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr), &new, 4, 0) < 0)
			return -1;
	}
	if (!csum)
		return 0;
	if (v->flags & FLOW_F_SET_TP_SRC) {
		__be16 old;
		__be16 new = v->nat_tp_src;
		if (bpf_skb_load_bytes(skb, l4, &old, 2) < 0 ||
		    bpf_l4_csum_replace(skb, csum, old, new, l4flags | 2) < 0 ||
		    bpf_skb_store_bytes(skb, l4, &new, 2, 0) < 0)
			return -1;
	}
	if (v->flags & FLOW_F_SET_TP_DST) {
		__be16 old;
		__be16 new = v->nat_tp_dst;
		if (bpf_skb_load_bytes(skb, l4 + 2, &old, 2) < 0 ||
		    bpf_l4_csum_replace(skb, csum, old, new, l4flags | 2) < 0 ||
		    bpf_skb_store_bytes(skb, l4 + 2, &new, 2, 0) < 0)
			return -1;
	}
	return 0;
}

static __always_inline int ring_upcall(struct __sk_buff *skb, struct upcall_hdr *h, __u32 len)
{
	struct ring_upcall *r = bpf_ringbuf_reserve(&upcall_ring, sizeof(*r), 0);
	if (!r) {
		count(ST_RING_FULL);
		return TC_ACT_SHOT;
	}
	__builtin_memcpy(&r->h, h, sizeof(*h));
	r->frame_len = len;
	r->pad = 0;
	if (len < ETH_HLEN || len > RING_FRAME_MAX || bpf_skb_load_bytes(skb, 0, r->frame, len) < 0) {
		bpf_ringbuf_discard(r, 0);
		count(ST_UPCALL_FAIL);
		return TC_ACT_SHOT;
	}
	bpf_ringbuf_submit(r, 0);
	count(h->port_no ? ST_UPCALL : ST_TUNNEL_UPCALL);
	count(ST_RING_UPCALL);
	return TC_ACT_SHOT;
}

static __always_inline int upcall(struct __sk_buff *skb, struct port_info *pi, __u32 port_no,
				  __u32 tun_id, __u32 tun_remote, __u16 reason)
{
	__u32 zero = 0;
	struct dp_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->upcall_ifindex == 0) {
		count(ST_UPCALL_FAIL);
		return TC_ACT_SHOT;
	}
	// A burst of new flows from one port must not overflow the upcall device or starve the
	// other ports: each port gets upcall_interval_ns per upcall with a burst allowance.
	__u64 now = bpf_ktime_get_ns();
	__u64 tat = pi->tat_ns;
	if (tat < now)
		tat = now;
	if (tat - now > cfg->upcall_burst_ns) {
		count(ST_RATE_LIMITED);
		return TC_ACT_SHOT;
	}
	pi->tat_ns = tat + cfg->upcall_interval_ns;

	struct upcall_hdr h = {};
	h.dst[0] = 0x02;
	h.dst[1] = 0x69;
	h.dst[2] = 0x73;
	h.dst[3] = 0x74;
	h.dst[4] = 0x6d;
	h.dst[5] = 0x75;
	__builtin_memcpy(h.src, h.dst, 6);
	h.ethertype = bpf_htons(0x88b5);
	h.port_no = port_no;
	h.tun_id = tun_id;
	h.tun_remote = tun_remote;
	h.reason = reason;
	h.miss_ns = now;
	if (skb->vlan_present) {
		h.vlan_tci = skb->vlan_tci;
		h.vlan_proto = skb->vlan_proto;
		if (bpf_skb_vlan_pop(skb) < 0) {
			count(ST_UPCALL_FAIL);
			return TC_ACT_SHOT;
		}
	}
	__u32 len = skb->len;
	if (cfg->upcall_ring && skb->gso_size == 0 && len >= ETH_HLEN && len <= RING_FRAME_MAX)
		return ring_upcall(skb, &h, len);
	if (bpf_skb_change_head(skb, sizeof(h), 0) < 0 || bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0) < 0) {
		count(ST_UPCALL_FAIL);
		return TC_ACT_SHOT;
	}
	count(port_no ? ST_UPCALL : ST_TUNNEL_UPCALL);
	return bpf_redirect(cfg->upcall_ifindex, 0);
}

static __always_inline int set_tunnel(struct __sk_buff *skb, __u32 tun_id, __u32 remote)
{
	struct bpf_tunnel_key tk = {};
	tk.tunnel_id = tun_id;
	tk.remote_ipv4 = remote;
	tk.tunnel_ttl = 64;
	// Without BPF_F_ZERO_CSUM_TX the kernel turns the outer UDP checksum on.
	return bpf_skb_set_tunnel_key(skb, &tk, sizeof(tk), BPF_F_ZERO_CSUM_TX);
}

static __always_inline int forward(struct __sk_buff *skb, struct port_info *pi, __u32 port_no,
				   __u32 tun_id, __u32 tun_remote)
{
	__u32 key_vni = tun_id & ~VNI_TRACE_BIT;
	if (tun_id & VNI_TRACE_BIT)
		return upcall(skb, pi, port_no, tun_id, tun_remote, UPCALL_TRACED);
	if (skb->vlan_present)
		return upcall(skb, pi, port_no, tun_id, tun_remote, UPCALL_VLAN);
	struct flow_key k = {};
	k.ifindex = skb->ifindex;
	k.tun_id = key_vni;
	if (parse(skb, &k) < 0)
		return upcall(skb, pi, port_no, tun_id, tun_remote, UPCALL_PARSE);
	struct flow_value *v = bpf_map_lookup_elem(&flows, &k);
	if (!v)
		return upcall(skb, pi, port_no, tun_id, tun_remote, UPCALL_MISS);
	if (v->dec_ttl && k.ethertype == ETH_P_IP_BE) {
		int r = dec_ttl(skb, v->dec_ttl);
		if (r > 0) {
			count(ST_TTL_UPCALL);
			return upcall(skb, pi, port_no, tun_id, tun_remote, UPCALL_TTL);
		}
		if (r < 0)
			return TC_ACT_SHOT;
	}
	count(ST_HIT);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, skb->len);
	__u64 now = bpf_ktime_get_ns();
	if (now - v->last_used_ns >= LAST_USED_GRANULARITY_NS)
		v->last_used_ns = now;
	if (v->action == FLOW_ACT_DROP)
		return TC_ACT_SHOT;
	if ((v->flags & FLOW_F_NAT) && k.ethertype == ETH_P_IP_BE && nat(skb, v, k.proto) < 0)
		return TC_ACT_SHOT;
	if (v->flags & FLOW_F_SET_MACS) {
		if (bpf_skb_store_bytes(skb, 0, v->eth_dst, 6, 0) < 0 ||
		    bpf_skb_store_bytes(skb, 6, v->eth_src, 6, 0) < 0)
			return TC_ACT_SHOT;
	}
	if (v->action == FLOW_ACT_TUNNEL && set_tunnel(skb, v->tun_id, v->tun_remote) < 0)
		return TC_ACT_SHOT;
	if (v->flags & FLOW_F_PEER)
		return bpf_redirect_peer(v->out_ifindex, 0);
	return bpf_redirect(v->out_ifindex, 0);
}

// On the host side of a VM's veth (ingress = frames the VM sent).
SEC("tc")
int port_ingress(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct port_info *pi = bpf_map_lookup_elem(&ports, &ifindex);
	if (!pi) {
		count(ST_UNKNOWN_PORT);
		return TC_ACT_SHOT;
	}
	return forward(skb, pi, pi->port_no, 0, 0);
}

// On the external-mode (collect_md) VXLAN device: frames already decapsulated, with the tunnel
// metadata. Intra-site keys name a local port and are delivered as they are (the sender simulated
// the whole path); other keys (global keys at gateways, flow state) go through the flow map.
SEC("tc")
int vxlan_ingress(struct __sk_buff *skb)
{
	struct bpf_tunnel_key tk = {};
	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0) {
		count(ST_MALFORMED);
		return TC_ACT_SHOT;
	}
	__u32 vni = tk.tunnel_id & 0xffffff;
	__u32 key_vni = vni & ~VNI_TRACE_BIT;
	if (key_vni >= 1 && key_vni <= VNI_LOCAL_MAX) {
		__u32 *out = bpf_map_lookup_elem(&tunnel_ports, &key_vni);
		if (!out) {
			count(ST_UNKNOWN_KEY);
			return TC_ACT_SHOT;
		}
		count(ST_TUNNEL_DELIVER);
		__u32 target = *out;
		if (target & TUNNEL_PORT_PEER)
			return bpf_redirect_peer(target & ~TUNNEL_PORT_PEER, 0);
		return bpf_redirect(target, 0);
	}
	__u32 ifindex = skb->ifindex;
	struct port_info *pi = bpf_map_lookup_elem(&ports, &ifindex);
	if (!pi) {
		count(ST_UNKNOWN_PORT);
		return TC_ACT_SHOT;
	}
	return forward(skb, pi, 0, vni, tk.remote_ipv4);
}

// On the kernel end of the upcall veth: frames the agent wrote, each with a re-inject trailer.
SEC("tc")
int upcall_ingress(struct __sk_buff *skb)
{
	struct reinject_trailer t;
	__u32 len = skb->len;
	if (len < ETH_HLEN + sizeof(t) || len > 0xffff ||
	    bpf_skb_load_bytes(skb, len - sizeof(t), &t, sizeof(t)) < 0 || t.magic != REINJECT_MAGIC) {
		count(ST_REINJECT_BAD);
		return TC_ACT_SHOT;
	}
	if (bpf_skb_change_tail(skb, len - sizeof(t), 0) < 0) {
		count(ST_REINJECT_BAD);
		return TC_ACT_SHOT;
	}
	if (t.action == FLOW_ACT_TUNNEL) {
		if (set_tunnel(skb, t.tun_id, t.tun_remote) < 0) {
			count(ST_REINJECT_BAD);
			return TC_ACT_SHOT;
		}
	} else if (t.action != FLOW_ACT_REDIRECT) {
		count(ST_REINJECT_BAD);
		return TC_ACT_SHOT;
	}
	count(ST_REINJECT);
	return bpf_redirect(t.out_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
