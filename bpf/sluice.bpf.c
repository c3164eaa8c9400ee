// SPDX-License-Identifier: GPL-2.0
/*
 * Sluice's tc programs. One object per node: its maps are pinned under the node's own bpffs directory, so several
 * nodes (agents) can share one machine.
 *
 *   from_container  ingress of a pod's host-side veth
 *   from_netdev     ingress of the node's uplink (native routing and the underlay side of tunnel mode)
 *   from_overlay    ingress of the node's collect_md VXLAN device (decapsulated traffic)
 *   to_overlay      egress of the VXLAN device: chooses the remote VTEP for packets the kernel routes into it
 *   to_netdev       egress of the node's uplink: masquerade of pods' traffic leaving the cluster
 *   to_container    egress of a pod's host-side veth: reverse NAT of service replies the kernel delivers (legacy)
 *
 * With SL_CFG_F_BPF_HOST_ROUTING off every program returns TC_ACT_OK and the kernel forwards (legacy host routing);
 * to_overlay still sets the tunnel key, since a collect_md device cannot send without one.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sluice_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_ENDPOINTS);
	__type(key, struct sl_endpoint_key);
	__type(value, struct sl_endpoint_value);
} sl_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_IPCACHE_HOST);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_endpoint_key);
	__type(value, struct sl_ipcache_value);
} sl_ipcache_host SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SL_MAX_IPCACHE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_lpm_key);
	__type(value, struct sl_ipcache_value);
} sl_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SL_MAX_TUNNEL);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_lpm_key);
	__type(value, struct sl_tunnel_value);
} sl_tunnel SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_config);
} sl_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_NUM_COUNTERS);
	__type(key, __u32);
	__type(value, struct sl_counter);
} sl_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_service_key);
	__type(value, struct sl_service_value);
} sl_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_backend_key);
	__type(value, struct sl_backend_value);
} sl_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_MAX_LB_CT);
	__type(key, struct sl_ct_key);
	__type(value, struct sl_ct_value);
} sl_lb_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_MAX_SNAT);
	__type(key, struct sl_snat_key);
	__type(value, struct sl_snat_value);
} sl_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_MAX_SNAT);
	__type(key, struct sl_snat_key);
	__type(value, struct sl_snat_value);
} sl_snat_rev SEC(".maps");

static __always_inline void count(__u32 index, struct __sk_buff *skb)
{
	struct sl_counter *c = bpf_map_lookup_elem(&sl_counters, &index);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

static __always_inline struct sl_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&sl_config, &zero);
}

/* The IPv4 destination, or 0 when the frame is not IPv4 or too short. */
static __always_inline __u32 ipv4_daddr(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > data_end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return ip->daddr;
}


#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (IP_OFF + offsetof(struct iphdr, daddr))
#define L4_OFF (IP_OFF + sizeof(struct iphdr))

struct l4 {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto;
	__u32 csum_off;
};

/* TCP or UDP over IPv4 without IP options (the only shape the load balancer rewrites). */
static __always_inline int parse_l4(struct __sk_buff *skb, struct l4 *out)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u16 *ports = data + L4_OFF;

	if ((void *)(ports + 2) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return -1;
	if (ip->frag_off & bpf_htons(0x3fff))
		return -1;
	if (ip->protocol == IPPROTO_TCP)
		out->csum_off = L4_OFF + offsetof(struct tcphdr, check);
	else if (ip->protocol == IPPROTO_UDP)
		out->csum_off = L4_OFF + offsetof(struct udphdr, check);
	else
		return -1;
	out->proto = ip->protocol;
	out->saddr = ip->saddr;
	out->daddr = ip->daddr;
	out->sport = ports[0];
	out->dport = ports[1];
	return 0;
}

/* Rewrites one address and port (source or destination) with the IP and L4 checksums fixed up. */
static __always_inline int rewrite(struct __sk_buff *skb, struct l4 *l4, int dst, __u32 new_ip, __u16 new_port)
{
	__u32 old_ip = dst ? l4->daddr : l4->saddr;
	__u16 old_port = dst ? l4->dport : l4->sport;
	__u64 mangled = l4->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (bpf_l4_csum_replace(skb, l4->csum_off, old_ip, new_ip, BPF_F_PSEUDO_HDR | mangled | sizeof(new_ip)) < 0 ||
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ip, new_ip, sizeof(new_ip)) < 0 ||
	    bpf_skb_store_bytes(skb, dst ? IP_DST_OFF : IP_SRC_OFF, &new_ip, sizeof(new_ip), 0) < 0 ||
	    bpf_l4_csum_replace(skb, l4->csum_off, old_port, new_port, mangled | sizeof(new_port)) < 0 ||
	    bpf_skb_store_bytes(skb, L4_OFF + (dst ? 2 : 0), &new_port, sizeof(new_port), 0) < 0)
		return -1;
	return 0;
}

/* ClusterIP -> backend for a packet leaving a pod. 0: not a service (or done); -1: drop. */
static __always_inline int lb_dnat(struct __sk_buff *skb)
{
	struct sl_service_key svc = {};
	struct sl_service_value *service;
	struct sl_backend_key bk = {};
	struct sl_backend_value *backend;
	struct sl_ct_key ct = {};
	struct sl_ct_value rev = {};
	struct l4 l4;
	__u32 hash;

	if (parse_l4(skb, &l4) < 0)
		return 0;
	svc.vip = l4.daddr;
	svc.port = l4.dport;
	svc.proto = l4.proto;
	service = bpf_map_lookup_elem(&sl_services, &svc);
	if (!service)
		return 0;
	if (!service->count) {
		count(SL_CNT_LB_NO_BACKEND, skb);
		return 0;
	}
	bk.service_id = service->id;
	/* Multiply-xorshift so every bit of the client's address and port matters: Linux picks even source ports for
	 * connect(), so a hash that only looked at low bits would send every flow to the same slot. */
	hash = (l4.saddr ^ ((__u32)l4.sport << 16) ^ l4.sport) * 2654435761u;
	hash ^= hash >> 16;
	hash *= 2246822519u;
	hash ^= hash >> 13;
	bk.slot = hash % service->count;
	backend = bpf_map_lookup_elem(&sl_backends, &bk);
	if (!backend) {
		count(SL_CNT_LB_NO_BACKEND, skb);
		return 0;
	}
	ct.client_ip = l4.saddr;
	ct.client_port = l4.sport;
	ct.backend_ip = backend->ip;
	ct.backend_port = backend->port;
	ct.proto = l4.proto;
	rev.vip = l4.daddr;
	rev.vport = l4.dport;
	bpf_map_update_elem(&sl_lb_ct, &ct, &rev, BPF_ANY);
	if (rewrite(skb, &l4, 1, backend->ip, backend->port) < 0)
		return -1;
	count(SL_CNT_LB_DNAT, skb);
	return 0;
}

/* Backend -> service address on a reply about to reach the client pod. */
static __always_inline void lb_rev_nat(struct __sk_buff *skb)
{
	struct sl_ct_key ct = {};
	struct sl_ct_value *rev;
	struct l4 l4;

	if (parse_l4(skb, &l4) < 0)
		return;
	ct.client_ip = l4.daddr;
	ct.client_port = l4.dport;
	ct.backend_ip = l4.saddr;
	ct.backend_port = l4.sport;
	ct.proto = l4.proto;
	rev = bpf_map_lookup_elem(&sl_lb_ct, &ct);
	if (!rev)
		return;
	if (rewrite(skb, &l4, 0, rev->vip, rev->vport) == 0)
		count(SL_CNT_LB_REV_NAT, skb);
}

/* Rewrites the MACs for the pod and hands the frame straight to its eth0, skipping the host's stack. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct sl_endpoint_value *ep)
{
	lb_rev_nat(skb);
	if (bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, ep->node_mac, ETH_ALEN, 0) < 0) {
		count(SL_CNT_DROP_MALFORMED, skb);
		return TC_ACT_SHOT;
	}
	return bpf_redirect_peer(ep->ifindex, 0);
}

static __always_inline int set_tunnel(struct __sk_buff *skb, __u32 node_ip, __u32 vni)
{
	struct bpf_tunnel_key key = {};

	key.tunnel_id = vni;
	key.remote_ipv4 = bpf_ntohl(node_ip);
	key.tunnel_ttl = 64;
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct sl_config *cfg = config();
	struct sl_endpoint_value *ep;
	struct sl_ipcache_value *remote;
	struct sl_lpm_key lpm = { .prefixlen = 32 };
	__u32 daddr;

	count(SL_CNT_FROM_CONTAINER, skb);
	/* Service translation happens in both host-routing modes: legacy only hands the result to the kernel. */
	if (lb_dnat(skb) < 0) {
		count(SL_CNT_DROP_MALFORMED, skb);
		return TC_ACT_SHOT;
	}
	if (!cfg || !(cfg->flags & SL_CFG_F_BPF_HOST_ROUTING)) {
		count(SL_CNT_LEGACY, skb);
		return TC_ACT_OK;
	}
	daddr = ipv4_daddr(skb);
	if (!daddr)
		goto pass;

	ep = bpf_map_lookup_elem(&sl_endpoints, &daddr);
	if (ep) {
		count(SL_CNT_FROM_CONTAINER_LOCAL, skb);
		return deliver_local(skb, ep);
	}

	remote = bpf_map_lookup_elem(&sl_ipcache_host, &daddr);
	if (!remote) {
		lpm.ip = daddr;
		remote = bpf_map_lookup_elem(&sl_ipcache, &lpm);
	}
	if (!remote || (remote->flags & SL_IPCACHE_F_LOCAL) || remote->node_ip == cfg->node_ip)
		goto pass;

	if (cfg->flags & SL_CFG_F_TUNNEL) {
		if (!cfg->tunnel_ifindex || set_tunnel(skb, remote->node_ip, cfg->vni) < 0)
			goto pass;
		count(SL_CNT_FROM_CONTAINER_TUNNEL, skb);
		return bpf_redirect(cfg->tunnel_ifindex, 0);
	}
	if (!cfg->uplink_ifindex)
		goto pass;
	count(SL_CNT_FROM_CONTAINER_NEIGH, skb);
	/* No neighbour parameters: the kernel looks up the route to the destination (the agent's route to the remote
	 * podCIDR via the remote node) and resolves the next hop's MAC itself. */
	return bpf_redirect_neigh(cfg->uplink_ifindex, 0, 0, 0);
pass:
	count(SL_CNT_FROM_CONTAINER_PASS, skb);
	return TC_ACT_OK;
}

static __always_inline int ingress_to_local(struct __sk_buff *skb, __u32 seen, __u32 local, __u32 pass, int overlay)
{
	struct sl_config *cfg = config();
	struct sl_endpoint_value *ep;
	__u32 daddr;

	count(seen, skb);
	if (overlay && skb->pkt_type == PACKET_OTHERHOST) {
		/* The outer header was addressed to this node, so the inner frame is ours whatever its MACs say: the
		 * sender's inner destination MAC is its own gateway's (BPF mode) or its VXLAN device's (legacy, NOARP).
		 * Without this the stack (legacy) or the pod after bpf_redirect_peer would drop it as PACKET_OTHERHOST. */
		bpf_skb_change_type(skb, PACKET_HOST);
	}
	if (!cfg || !(cfg->flags & SL_CFG_F_BPF_HOST_ROUTING)) {
		count(SL_CNT_LEGACY, skb);
		return TC_ACT_OK;
	}
	/* A frame the underlay bridge flooded to us for another node is not ours to deliver. */
	daddr = skb->pkt_type == PACKET_HOST ? ipv4_daddr(skb) : 0;
	if (daddr) {
		ep = bpf_map_lookup_elem(&sl_endpoints, &daddr);
		if (ep) {
			count(local, skb);
			return deliver_local(skb, ep);
		}
	}
	count(pass, skb);
	return TC_ACT_OK;
}

/* A reply to a masqueraded flow: node IP:NAT port -> the pod's address, before anything else looks at it. */
static __always_inline void snat_rev(struct __sk_buff *skb)
{
	struct sl_config *cfg = config();
	struct sl_snat_key key = {};
	struct sl_snat_value *pod;
	struct l4 l4;

	if (!cfg || !(cfg->flags & SL_CFG_F_MASQUERADE) || parse_l4(skb, &l4) < 0 || l4.daddr != cfg->node_ip)
		return;
	key.addr = l4.daddr;
	key.port = l4.dport;
	key.peer_ip = l4.saddr;
	key.peer_port = l4.sport;
	key.proto = l4.proto;
	pod = bpf_map_lookup_elem(&sl_snat_rev, &key);
	if (pod && rewrite(skb, &l4, 1, pod->addr, pod->port) == 0)
		count(SL_CNT_SNAT_REV, skb);
}

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	snat_rev(skb);
	return ingress_to_local(skb, SL_CNT_FROM_NETDEV, SL_CNT_FROM_NETDEV_LOCAL, SL_CNT_FROM_NETDEV_PASS, 0);
}

SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	return ingress_to_local(skb, SL_CNT_FROM_OVERLAY, SL_CNT_FROM_OVERLAY_LOCAL, SL_CNT_FROM_OVERLAY_PASS, 1);
}

SEC("tc")
int to_overlay(struct __sk_buff *skb)
{
	struct sl_config *cfg = config();
	struct sl_tunnel_value *vtep;
	struct sl_lpm_key lpm = { .prefixlen = 32 };
	__u32 vni;

	count(SL_CNT_TO_OVERLAY, skb);
	lpm.ip = ipv4_daddr(skb);
	if (!lpm.ip)
		goto no_route;
	vtep = bpf_map_lookup_elem(&sl_tunnel, &lpm);
	if (!vtep)
		goto no_route;
	vni = vtep->vni ? vtep->vni : (cfg ? cfg->vni : 0);
	if (set_tunnel(skb, vtep->node_ip, vni) < 0)
		goto no_route;
	count(SL_CNT_TO_OVERLAY_ENCAP, skb);
	return TC_ACT_OK;
no_route:
	/* A collect_md device drops frames without a tunnel key; counting them here makes that visible. */
	count(SL_CNT_TO_OVERLAY_NO_ROUTE, skb);
	return TC_ACT_OK;
}

#define NAT_PORT_MIN 32768
#define NAT_PORT_RANGE 28232 /* 32768..60999 */
#define NAT_PORT_TRIES 8

/* Masquerade: a local pod's TCP/UDP to a destination outside the cluster leaves with the node's IP. */
SEC("tc")
int to_netdev(struct __sk_buff *skb)
{
	struct sl_config *cfg = config();
	struct sl_snat_key fwd = {}, rev = {};
	struct sl_snat_value *nat, out = {}, back = {};
	struct sl_lpm_key lpm = { .prefixlen = 32 };
	struct l4 l4;
	__u32 hash;
	int i;

	count(SL_CNT_TO_NETDEV, skb);
	if (!cfg || !(cfg->flags & SL_CFG_F_MASQUERADE) || parse_l4(skb, &l4) < 0 || l4.saddr == cfg->node_ip)
		return TC_ACT_OK;
	if (!bpf_map_lookup_elem(&sl_endpoints, &l4.saddr))
		return TC_ACT_OK;
	lpm.ip = l4.daddr;
	if (bpf_map_lookup_elem(&sl_ipcache_host, &l4.daddr) || bpf_map_lookup_elem(&sl_ipcache, &lpm))
		return TC_ACT_OK;

	fwd.addr = l4.saddr;
	fwd.port = l4.sport;
	fwd.peer_ip = l4.daddr;
	fwd.peer_port = l4.dport;
	fwd.proto = l4.proto;
	nat = bpf_map_lookup_elem(&sl_snat, &fwd);
	if (nat) {
		out.addr = nat->addr;
		out.port = nat->port;
	} else {
		rev.addr = cfg->node_ip;
		rev.peer_ip = l4.daddr;
		rev.peer_port = l4.dport;
		rev.proto = l4.proto;
		hash = (l4.saddr ^ ((__u32)l4.sport << 16) ^ l4.daddr ^ l4.dport) * 2654435761u;
		hash ^= hash >> 15;
#pragma unroll
		for (i = 0; i < NAT_PORT_TRIES; i++) {
			rev.port = bpf_htons(NAT_PORT_MIN + (hash + i * 7919) % NAT_PORT_RANGE);
			if (!bpf_map_lookup_elem(&sl_snat_rev, &rev))
				break;
		}
		if (i == NAT_PORT_TRIES) {
			count(SL_CNT_SNAT_NO_PORT, skb);
			return TC_ACT_OK;
		}
		back.addr = l4.saddr;
		back.port = l4.sport;
		out.addr = cfg->node_ip;
		out.port = rev.port;
		if (bpf_map_update_elem(&sl_snat_rev, &rev, &back, BPF_NOEXIST) < 0 ||
		    bpf_map_update_elem(&sl_snat, &fwd, &out, BPF_ANY) < 0) {
			count(SL_CNT_SNAT_NO_PORT, skb);
			return TC_ACT_OK;
		}
	}
	if (rewrite(skb, &l4, 0, out.addr, out.port) < 0) {
		count(SL_CNT_DROP_MALFORMED, skb);
		return TC_ACT_SHOT;
	}
	count(SL_CNT_SNAT, skb);
	return TC_ACT_OK;
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	lb_rev_nat(skb);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
