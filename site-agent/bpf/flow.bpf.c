// SPDX-License-Identifier: GPL-2.0
// Isthmus kernel fast path: TC (clsact ingress) programs that look a frame up in the agent's flow
// map and, on a hit, apply the flow's actions without the agent seeing the packet. On a miss the
// frame continues up the stack (TC_ACT_OK); handing misses to the agent's upcall path comes later.
// The key/value layouts are mirrored byte for byte by site-agent/src/agent/kernel/flow-map-codec.ts.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Flow key, 36 bytes, no implicit padding. Fields the frame does not have are zero: ARP and other
// non-IPv4 frames match on L2 + ethertype only; ports are set only for TCP and UDP (ICMP carries
// type in sport and code in dport so echo requests and replies are separate flows).
struct flow_key {
	__u32 ifindex;    // 0: ingress ifindex (VM port's host side, or the VXLAN device)
	__u32 tun_id;     // 4: VNI the frame arrived with (VXLAN ingress), 0 on VM ports
	__u8 eth_dst[6];  // 8
	__u8 eth_src[6];  // 14
	__be16 ethertype; // 20: network order, outermost (VLAN-tagged frames are not parsed)
	__u8 proto;       // 22: IPv4 protocol
	__u8 pad;         // 23: always 0
	__be32 ip_src;    // 24: network order
	__be32 ip_dst;    // 28: network order
	__be16 sport;     // 32: network order
	__be16 dport;     // 34: network order
};

enum flow_action_kind {
	FLOW_ACT_DROP = 0,     // match and drop (counted)
	FLOW_ACT_REDIRECT = 1, // redirect to a local ifindex (egress)
	FLOW_ACT_TUNNEL = 2,   // set tunnel key (VNI, remote) and redirect to the VXLAN device
};

enum flow_action_flags {
	FLOW_F_SET_MACS = 1, // rewrite eth dst/src with the value's MACs
	FLOW_F_DEC_TTL = 2,  // IPv4 only: decrement TTL and fix the header checksum
};

// Flow value, 56 bytes. Written by the agent; packets/bytes/last_used_ns are written by the program
// (an agent update of an entry resets them, so refreshes should carry the counters they read).
struct flow_value {
	__u32 action;      // 0: enum flow_action_kind
	__u32 out_ifindex; // 4: redirect target (VXLAN device for FLOW_ACT_TUNNEL)
	__u32 flags;       // 8: enum flow_action_flags
	__u32 tun_id;      // 12: VNI for FLOW_ACT_TUNNEL
	__u32 tun_remote;  // 16: remote IPv4, HOST byte order (bpf_tunnel_key.remote_ipv4 is)
	__u8 eth_dst[6];   // 20
	__u8 eth_src[6];   // 26
	__u64 packets;     // 32
	__u64 bytes;       // 40
	__u64 last_used_ns; // 48: bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last hit
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

// Datapath counters: index 0 hits, 1 misses, 2 malformed (too short to parse), 3 TTL expired.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} dp_stats SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&dp_stats, &idx);
	if (c)
		__sync_fetch_and_add(c, 1);
}

// Returns 0 when the key was filled, -1 when the frame is too short for what its headers claim.
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
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return -1;
	k->proto = ip->protocol;
	k->ip_src = ip->saddr;
	k->ip_dst = ip->daddr;
	// Fragments after the first carry no L4 header; they match with zero ports.
	if (ip->frag_off & bpf_htons(0x1fff))
		return 0;
	__u8 *l4 = (__u8 *)ip + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		if ((void *)(l4 + 4) > end)
			return -1;
		k->sport = *(__be16 *)l4;
		k->dport = *(__be16 *)(l4 + 2);
	} else if (ip->protocol == IPPROTO_ICMP) {
		if ((void *)(l4 + 2) > end)
			return -1;
		k->sport = bpf_htons(l4[0]);
		k->dport = bpf_htons(l4[1]);
	}
	return 0;
}

static __always_inline int dec_ttl(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return -1;
	if (ip->ttl <= 1)
		return -1;
	// TTL and protocol share one 16-bit word of the header checksum.
	__be16 old = *(__be16 *)&ip->ttl;
	__u8 ttl = ip->ttl - 1;
	__be16 new = bpf_htons(((__u16)ttl << 8) | ip->protocol);
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &ttl, 1, 0) < 0)
		return -1;
	return 0;
}

static __always_inline int forward(struct __sk_buff *skb, __u32 tun_id)
{
	struct flow_key k = {};
	k.ifindex = skb->ingress_ifindex;
	k.tun_id = tun_id;
	if (parse(skb, &k) < 0) {
		count(2);
		return TC_ACT_OK;
	}
	struct flow_value *v = bpf_map_lookup_elem(&flows, &k);
	if (!v) {
		// TODO(issue 8): hand the miss to the agent's upcall path instead of the host stack.
		count(1);
		return TC_ACT_OK;
	}
	count(0);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, skb->len);
	v->last_used_ns = bpf_ktime_get_ns();

	if (v->action == FLOW_ACT_DROP)
		return TC_ACT_SHOT;
	if ((v->flags & FLOW_F_DEC_TTL) && k.ethertype == bpf_htons(ETH_P_IP)) {
		if (dec_ttl(skb) < 0) {
			// Expired (or unwritable): the agent will answer with ICMP time exceeded once upcalls exist.
			count(3);
			return TC_ACT_SHOT;
		}
	}
	if (v->flags & FLOW_F_SET_MACS) {
		if (bpf_skb_store_bytes(skb, 0, v->eth_dst, 6, 0) < 0 ||
		    bpf_skb_store_bytes(skb, 6, v->eth_src, 6, 0) < 0)
			return TC_ACT_SHOT;
	}
	if (v->action == FLOW_ACT_TUNNEL) {
		struct bpf_tunnel_key tk = {};
		tk.tunnel_id = v->tun_id;
		tk.remote_ipv4 = v->tun_remote;
		tk.tunnel_ttl = 64;
		// Without BPF_F_ZERO_CSUM_TX the kernel turns the outer UDP checksum on.
		if (bpf_skb_set_tunnel_key(skb, &tk, sizeof(tk), BPF_F_ZERO_CSUM_TX) < 0)
			return TC_ACT_SHOT;
	}
	return bpf_redirect(v->out_ifindex, 0);
}

// On the host side of a VM's veth (ingress = frames the VM sent).
SEC("tc")
int port_ingress(struct __sk_buff *skb)
{
	return forward(skb, 0);
}

// On an external-mode (collect_md) VXLAN device's ingress: frames already decapsulated, with the
// tunnel metadata (VNI) available.
SEC("tc")
int vxlan_ingress(struct __sk_buff *skb)
{
	struct bpf_tunnel_key tk = {};
	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0) {
		count(2);
		return TC_ACT_SHOT;
	}
	return forward(skb, tk.tunnel_id);
}

char LICENSE[] SEC("license") = "GPL";
