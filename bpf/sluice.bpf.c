// SPDX-License-Identifier: GPL-2.0
/*
 * Sluice's tc programs. One object per node: its maps are pinned under the node's own bpffs directory, so several
 * nodes (agents) can share one machine.
 *
 *   from_container  ingress of a pod's host-side veth
 *   from_netdev     ingress of the node's uplink (native routing and the underlay side of tunnel mode)
 *   from_overlay    ingress of the node's collect_md VXLAN device (decapsulated traffic)
 *   to_overlay      egress of the VXLAN device: chooses the remote VTEP for packets the kernel routes into it
 *
 * With SL_CFG_F_BPF_HOST_ROUTING off every program returns TC_ACT_OK and the kernel forwards (legacy host routing);
 * to_overlay still sets the tunnel key, since a collect_md device cannot send without one.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
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

/* Rewrites the MACs for the pod and hands the frame straight to its eth0, skipping the host's stack. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct sl_endpoint_value *ep)
{
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

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
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

char LICENSE[] SEC("license") = "GPL";
