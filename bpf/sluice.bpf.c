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
 *   xdp_netdev      XDP on the uplink (--lb-acceleration): NodePort/external frontends to remote backends before the stack
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
#include "sluice_lb.h"

static __always_inline void count(__u32 index, struct __sk_buff *skb)
{
	count_len(index, skb->len);
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


#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (IP_OFF + offsetof(struct iphdr, daddr))

/* TCP or UDP over IPv4 without IP options (the only shape the load balancer rewrites). */
static __always_inline int parse_l4(struct __sk_buff *skb, struct l4 *out)
{
	return parse_l4_data((void *)(long)skb->data, (void *)(long)skb->data_end, out);
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
	if (dst) {
		l4->daddr = new_ip;
		l4->dport = new_port;
	} else {
		l4->saddr = new_ip;
		l4->sport = new_port;
	}
	return 0;
}

static __always_inline __u16 csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/*
 * A router's TTL decrement, for the paths that forward in BPF (bpf_redirect_peer / _neigh / to the tunnel) instead of
 * the kernel's ip_forward. 0: decremented, checksum fixed up. -1: TTL <= 1 (or not IPv4): not forwarded in BPF — the
 * caller hands it to the stack, whose ip_forward drops it and answers ICMP time exceeded as for legacy routing.
 */
static __always_inline int ttl_decrement(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u16 old_word, new_word;
	__u8 ttl;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	if (ip->ttl <= 1) {
		count(SL_CNT_TTL_EXCEEDED, skb);
		return -1;
	}
	/* TTL and protocol are one 16-bit word of the header checksum. */
	old_word = *(__u16 *)&ip->ttl;
	ttl = ip->ttl - 1;
	new_word = old_word;
	*(__u8 *)&new_word = ttl;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_word, new_word, sizeof(new_word)) < 0 ||
	    bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, ttl), &ttl, sizeof(ttl), 0) < 0)
		return -1;
	return 0;
}

static __always_inline int swap_macs(struct __sk_buff *skb)
{
	__u8 macs[12], swapped[12];

	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) < 0)
		return -1;
	__builtin_memcpy(swapped, macs + 6, 6);
	__builtin_memcpy(swapped + 6, macs, 6);
	return bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0);
}

static __always_inline void reply_ip(struct iphdr *ip, struct l4 *l4, __u8 proto, __u16 len)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(len);
	ip->ttl = 64;
	ip->protocol = proto;
	ip->saddr = l4->daddr;
	ip->daddr = l4->saddr;
	ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
}

/*
 * Answers a packet for a service without backends the way kube-proxy's REJECT rule does: TCP RST, or ICMP port
 * unreachable for UDP, sent back out of the device the packet came in on, from the service address.
 */
static __always_inline int lb_reject(struct __sk_buff *skb, struct l4 *l4)
{
	struct iphdr ip;

	count(SL_CNT_LB_REJECT, skb);
	if (swap_macs(skb) < 0)
		return TC_ACT_SHOT;
	if (l4->proto == IPPROTO_TCP) {
		struct tcphdr in, tcp = {};
		struct { __u32 saddr, daddr; __u8 zero, proto; __u16 len; } pseudo;
		__u32 sum;

		if (l4->tcp_flags & TCP_RST)
			return TC_ACT_SHOT;
		if (bpf_skb_load_bytes(skb, L4_OFF, &in, sizeof(in)) < 0)
			return TC_ACT_SHOT;
		tcp.source = l4->dport;
		tcp.dest = l4->sport;
		tcp.doff = 5;
		tcp.rst = 1;
		if (in.ack) {
			tcp.seq = in.ack_seq;
		} else {
			__u32 payload = l4->ip_len - sizeof(struct iphdr) - in.doff * 4;
			tcp.ack = 1;
			tcp.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + (payload & 0xffff) + in.syn + in.fin);
		}
		pseudo.saddr = l4->daddr;
		pseudo.daddr = l4->saddr;
		pseudo.zero = 0;
		pseudo.proto = IPPROTO_TCP;
		pseudo.len = bpf_htons(sizeof(tcp));
		sum = bpf_csum_diff(0, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
		sum = bpf_csum_diff(0, 0, (__be32 *)&tcp, sizeof(tcp), sum);
		tcp.check = csum_fold(sum);
		reply_ip(&ip, l4, IPPROTO_TCP, sizeof(ip) + sizeof(tcp));
		if (bpf_skb_change_tail(skb, L4_OFF + sizeof(tcp), 0) < 0 ||
		    bpf_skb_store_bytes(skb, IP_OFF, &ip, sizeof(ip), 0) < 0 ||
		    bpf_skb_store_bytes(skb, L4_OFF, &tcp, sizeof(tcp), 0) < 0)
			return TC_ACT_SHOT;
	} else {
		/* ICMP header (type 3 code 3, checksum, 4 unused bytes), then the original IP header and 8 bytes of UDP. */
		struct { __u8 type, code; __u16 check; __u32 unused; __u8 orig[28]; } icmp = { .type = 3, .code = 3 };

		if (bpf_skb_load_bytes(skb, IP_OFF, icmp.orig, sizeof(icmp.orig)) < 0)
			return TC_ACT_SHOT;
		icmp.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&icmp, sizeof(icmp), 0));
		reply_ip(&ip, l4, IPPROTO_ICMP, sizeof(ip) + sizeof(icmp));
		if (bpf_skb_change_tail(skb, L4_OFF + sizeof(icmp), 0) < 0 ||
		    bpf_skb_store_bytes(skb, IP_OFF, &ip, sizeof(ip), 0) < 0 ||
		    bpf_skb_store_bytes(skb, L4_OFF, &icmp, sizeof(icmp), 0) < 0)
			return TC_ACT_SHOT;
	}
	return bpf_redirect(skb->ifindex, 0);
}
/* lb_decide, then the rewrite with the skb helpers (checksums fixed up by the kernel's csum helpers). */
static __always_inline int lb_dnat(struct __sk_buff *skb, struct sl_config *cfg, struct l4 *l4, int from_pod)
{
	struct lb_nat nat;
	int verdict = lb_decide(cfg, l4, from_pod, skb->len, &nat);

	if (verdict != LB_DONE)
		return verdict;
	if (rewrite(skb, l4, 1, nat.be_ip, nat.be_port) < 0)
		return LB_ERROR;
	if (nat.nat_ip && rewrite(skb, l4, 0, nat.nat_ip, nat.nat_port) < 0)
		return LB_ERROR;
	count(SL_CNT_LB_DNAT, skb);
	return LB_DONE;
}
/* Backend -> frontend on a reply (and back to the real client when the forward direction was SNATed). */
static __always_inline int lb_rev_nat(struct __sk_buff *skb)
{
	struct sl_lb_tuple key = {};
	struct sl_lb_rev_value *rev;
	struct l4 l4;

	if (parse_l4(skb, &l4) < 0)
		return 0;
	key.client_ip = l4.daddr;
	key.client_port = l4.dport;
	key.peer_ip = l4.saddr;
	key.peer_port = l4.sport;
	key.proto = l4.proto;
	rev = bpf_map_lookup_elem(&sl_lb_ct, &key);
	if (!rev)
		return 0;
	if (rewrite(skb, &l4, 0, rev->vip, rev->vport) < 0)
		return -1;
	if (rev->client_ip && rewrite(skb, &l4, 1, rev->client_ip, rev->client_port) < 0)
		return -1;
	count(SL_CNT_LB_REV_NAT, skb);
	return 1;
}

/* Rewrites the MACs for the pod and hands the frame straight to its eth0, skipping the host's stack. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct sl_endpoint_value *ep)
{
	if (lb_rev_nat(skb) < 0 ||
	    bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0) < 0 ||
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

/*
 * A packet too big for the tunnel: a pod made while the node routed natively has the uplink's MTU, and VXLAN adds
 * 50 bytes once the node switches to tunnel routing. bpf_redirect to the VXLAN device checks no MTU (the outer packet
 * would be fragmented, or dropped by a NIC's segmentation), so such packets go to the stack instead, whose route to
 * the podCIDR via the VXLAN device (MTU uplink - 50) answers ICMP "fragmentation needed": the pod's path MTU narrows
 * as under legacy host routing. GSO packets are judged by their segments.
 */
static __always_inline int too_big_for(struct __sk_buff *skb, __u32 ifindex)
{
	__u32 mtu = 0;

	return bpf_check_mtu(skb, ifindex, &mtu, 0, BPF_MTU_CHK_SEGS) != BPF_MTU_CHK_RET_SUCCESS;
}

/*
 * BPF host routing of a packet whose destination is final (after any service translation): a local pod gets it
 * through bpf_redirect_peer, a pod on another node through the tunnel or bpf_redirect_neigh, anything else goes to
 * the kernel stack — or, with `neigh_fallback`, straight out of the uplink (bpf_redirect_neigh: the kernel's route
 * and neighbour, without its input checks). `local`, `pass`: counters; the remote ones are from_container's.
 */
static __always_inline int route(struct __sk_buff *skb, struct sl_config *cfg, __u32 local, __u32 pass, int neigh_fallback)
{
	struct sl_endpoint_value *ep;
	struct sl_ipcache_value *remote;
	struct sl_lpm_key lpm = { .prefixlen = 32 };
	__u32 daddr = ipv4_daddr(skb);

	if (!daddr)
		goto pass;
	ep = bpf_map_lookup_elem(&sl_endpoints, &daddr);
	if (ep) {
		if (ttl_decrement(skb) < 0)
			return TC_ACT_OK;
		count(local, skb);
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
		if (!cfg->tunnel_ifindex || too_big_for(skb, cfg->tunnel_ifindex) || set_tunnel(skb, remote->node_ip, cfg->vni) < 0)
			goto pass;
		if (ttl_decrement(skb) < 0)
			return TC_ACT_OK;
		count(SL_CNT_FROM_CONTAINER_TUNNEL, skb);
		return bpf_redirect(cfg->tunnel_ifindex, 0);
	}
	if (!cfg->uplink_ifindex)
		goto pass;
	if (ttl_decrement(skb) < 0)
		return TC_ACT_OK;
	count(SL_CNT_FROM_CONTAINER_NEIGH, skb);
	/* No neighbour parameters: the kernel looks up the route to the destination (the agent's route to the remote
	 * podCIDR via the remote node) and resolves the next hop's MAC itself. */
	return bpf_redirect_neigh(cfg->uplink_ifindex, 0, 0, 0);
pass:
	count(pass, skb);
	if (neigh_fallback && cfg->uplink_ifindex) {
		if (ttl_decrement(skb) < 0)
			return TC_ACT_SHOT; /* the stack would drop it too: a martian (its source is this node's) */
		return bpf_redirect_neigh(cfg->uplink_ifindex, 0, 0, 0);
	}
	return TC_ACT_OK;
}

/*
 * A reply that reverse NAT gave this node's own address as its source (a NodePort's): the kernel would drop it as
 * a martian (a local source arriving on a device), so it is forwarded in BPF in either host-routing mode. The
 * primary node IP, or any other address of the node that has a NodePort frontend (the agent marks those).
 */
static __always_inline int from_node_address(struct __sk_buff *skb, struct sl_config *cfg)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct sl_service_key sk = {};
	struct sl_service_value *svc;
	struct l4 l4;

	if (!cfg || (void *)(ip + 1) > data_end)
		return 0;
	if (ip->saddr == cfg->node_ip)
		return 1;
	if (parse_l4(skb, &l4) < 0)
		return 0;
	sk.vip = l4.saddr;
	sk.port = l4.sport;
	sk.proto = l4.proto;
	svc = bpf_map_lookup_elem(&sl_services, &sk);
	return svc && (svc->flags & SL_SVC_F_NODE_ADDR);
}

/*
 * Service translation for a packet entering the node; TC_ACT_UNSPEC (-1) means go on as usual (*translated tells
 * whether the destination was rewritten).
 */
static __always_inline int lb_ingress(struct __sk_buff *skb, struct sl_config *cfg, int from_pod, int *translated)
{
	struct l4 l4;
	int verdict;

	if (parse_l4(skb, &l4) < 0)
		return TC_ACT_UNSPEC;
	verdict = lb_dnat(skb, cfg, &l4, from_pod);
	if (verdict == LB_DONE)
		*translated = 1;
	if (verdict == LB_REJECT)
		return lb_reject(skb, &l4);
	if (verdict == LB_DROP)
		return TC_ACT_SHOT;
	if (verdict == LB_ERROR) {
		count(SL_CNT_DROP_MALFORMED, skb);
		return TC_ACT_SHOT;
	}
	return TC_ACT_UNSPEC;
}

/* A pod may only send from its own address, through its own veth: anything else is dropped and counted. */
static __always_inline int spoofed(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct sl_endpoint_value *ep;
	__u32 saddr;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if ((void *)(ip + 1) > data_end)
		return 1;
	saddr = ip->saddr;
	ep = bpf_map_lookup_elem(&sl_endpoints, &saddr);
	return !ep || ep->ifindex != skb->ifindex;
}

/*
 * The masquerade's view of a packet: TCP and UDP as the load balancer parses them, and ICMP echo, whose identifier
 * plays the port: the request's source port (`dir` 0, leaving), the reply's destination port (`dir` 1, coming back),
 * the other port 0. 0: parsed; -1: not IPv4 (or too short to tell); -2: IPv4 that cannot be translated (another
 * protocol or ICMP type, IP options, a fragment) — saddr and daddr are set then.
 */
static __always_inline int parse_masq(struct __sk_buff *skb, struct l4 *out, int dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u8 *icmp = data + L4_OFF;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	out->saddr = ip->saddr;
	out->daddr = ip->daddr;
	if (parse_l4(skb, out) == 0)
		return 0;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + sizeof(*eth);
	icmp = data + L4_OFF;
	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->protocol != IPPROTO_ICMP || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || (void *)(icmp + 8) > data_end)
		return -2;
	if (icmp[0] != (dir ? 0 : 8)) /* echo reply : echo request */
		return -2;
	out->proto = IPPROTO_ICMP;
	out->tcp_flags = 0;
	out->csum_off = L4_OFF + 2;
	out->ip_len = bpf_ntohs(ip->tot_len);
	out->sport = dir ? 0 : *(__u16 *)(icmp + 4);
	out->dport = dir ? *(__u16 *)(icmp + 4) : 0;
	return 0;
}

/* rewrite() for the masquerade: an ICMP echo's identifier is at its own offset and its checksum has no pseudo-header. */
static __always_inline int masq_rewrite(struct __sk_buff *skb, struct l4 *l4, int dst, __u32 new_ip, __u16 new_port)
{
	__u32 old_ip = dst ? l4->daddr : l4->saddr;
	__u16 old_id = dst ? l4->dport : l4->sport;

	if (l4->proto != IPPROTO_ICMP)
		return rewrite(skb, l4, dst, new_ip, new_port);
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ip, new_ip, sizeof(new_ip)) < 0 ||
	    bpf_skb_store_bytes(skb, dst ? IP_DST_OFF : IP_SRC_OFF, &new_ip, sizeof(new_ip), 0) < 0 ||
	    bpf_l4_csum_replace(skb, l4->csum_off, old_id, new_port, sizeof(new_port)) < 0 ||
	    bpf_skb_store_bytes(skb, L4_OFF + 4, &new_port, sizeof(new_port), 0) < 0)
		return -1;
	count(SL_CNT_SNAT_ICMP, skb);
	return 0;
}

/*
 * Marks a pod's TCP/UDP/ICMP echo packet whose masquerade is BPF's (SL_MARK_SNAT_BPF): with BPF masquerading on, or when the
 * BPF NAT table maps its flow already. Sluice's iptables chain returns on the mark, so while netfilter's masquerade
 * rules are still (or again) in place — during a switch, until the flows netfilter's conntrack translates end —
 * netfilter leaves BPF's flows alone, and BPF leaves netfilter's (to_netdev skips what leaves with the node's IP).
 */
static __always_inline void mark_bpf_snat(struct __sk_buff *skb, struct sl_config *cfg)
{
	struct sl_snat_key fwd = {};
	struct l4 l4;

	struct sl_lpm_key lpm = { .prefixlen = 32 };

	if (!cfg || parse_masq(skb, &l4, 0) < 0)
		return;
	lpm.ip = l4.daddr;
	if (!(cfg->flags & SL_CFG_F_MASQUERADE) || bpf_map_lookup_elem(&sl_ipmasq, &lpm)) {
		fwd.addr = l4.saddr;
		fwd.port = l4.sport;
		fwd.peer_ip = l4.daddr;
		fwd.peer_port = l4.dport;
		fwd.proto = l4.proto;
		if (!bpf_map_lookup_elem(&sl_snat, &fwd))
			return;
	}
	skb->mark |= SL_MARK_SNAT_BPF;
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct sl_config *cfg = config();
	int ret, translated = 0;

	count(SL_CNT_FROM_CONTAINER, skb);
	if (spoofed(skb)) {
		count(SL_CNT_DROP_SPOOFED, skb);
		return TC_ACT_SHOT;
	}
	/* Replies of local backends (to a hairpinned pod, a NodePort client) first, then service translation; both
	 * happen in either host-routing mode: legacy only hands the result to the kernel. */
	ret = lb_rev_nat(skb);
	if (ret < 0) {
		count(SL_CNT_DROP_MALFORMED, skb);
		return TC_ACT_SHOT;
	}
	if (ret > 0 && from_node_address(skb, cfg))
		return route(skb, cfg, SL_CNT_FROM_CONTAINER_LOCAL, SL_CNT_FROM_CONTAINER_PASS, 1);
	ret = lb_ingress(skb, cfg, 1, &translated);
	if (ret != TC_ACT_UNSPEC)
		return ret;
	mark_bpf_snat(skb, cfg);
	if (!cfg || !(cfg->flags & SL_CFG_F_BPF_HOST_ROUTING)) {
		count(SL_CNT_LEGACY, skb);
		return TC_ACT_OK;
	}
	return route(skb, cfg, SL_CNT_FROM_CONTAINER_LOCAL, SL_CNT_FROM_CONTAINER_PASS, 0);
}

static __always_inline int ingress_to_local(struct __sk_buff *skb, __u32 seen, __u32 local, __u32 pass, int overlay)
{
	struct sl_config *cfg = config();
	struct sl_endpoint_value *ep;
	__u32 daddr;
	int ret, translated = 0;

	count(seen, skb);
	if (overlay && skb->pkt_type == PACKET_OTHERHOST) {
		/* The outer header was addressed to this node, so the inner frame is ours whatever its MACs say: the
		 * sender's inner destination MAC is its own gateway's (BPF mode) or its VXLAN device's (legacy, NOARP).
		 * Without this the stack (legacy) or the pod after bpf_redirect_peer would drop it as PACKET_OTHERHOST. */
		bpf_skb_change_type(skb, PACKET_HOST);
	}
	/* A frame the underlay bridge flooded to us for another node is not ours to translate or deliver. */
	if (skb->pkt_type == PACKET_HOST) {
		/* A backend's reply to a flow this node SNATed (NodePort), then NodePort and external frontends. */
		ret = lb_rev_nat(skb);
		if (ret < 0) {
			count(SL_CNT_DROP_MALFORMED, skb);
			return TC_ACT_SHOT;
		}
		translated = ret;
		if (translated && from_node_address(skb, cfg))
			return route(skb, cfg, local, pass, 1);
		if (!translated) {
			ret = lb_ingress(skb, cfg, 0, &translated);
			if (ret != TC_ACT_UNSPEC)
				return ret;
			/* SNATed to this node (a NodePort's backend on another node): the kernel would drop it too. */
			if (translated && from_node_address(skb, cfg))
				return route(skb, cfg, local, pass, 1);
		}
	}
	if (!cfg || !(cfg->flags & SL_CFG_F_BPF_HOST_ROUTING)) {
		count(SL_CNT_LEGACY, skb);
		return TC_ACT_OK;
	}
	if (translated)
		return route(skb, cfg, local, pass, 0);
	daddr = skb->pkt_type == PACKET_HOST ? ipv4_daddr(skb) : 0;
	if (daddr) {
		ep = bpf_map_lookup_elem(&sl_endpoints, &daddr);
		if (ep) {
			if (ttl_decrement(skb) < 0)
				return TC_ACT_OK;
			count(local, skb);
			return deliver_local(skb, ep);
		}
	}
	count(pass, skb);
	return TC_ACT_OK;
}

/* A packet of a masqueraded flow in one direction: when (the GC's idle time), and whether it is closing. */
static __always_inline void snat_seen(struct sl_snat_value *v, struct l4 *l4)
{
	__u32 now = now_s();

	if (v->last_seen != now)
		v->last_seen = now;
	if (l4->proto == IPPROTO_TCP && (l4->tcp_flags & (TCP_FIN | TCP_RST)) && !(v->flags & SL_SNAT_F_CLOSING))
		v->flags |= SL_SNAT_F_CLOSING;
}

/* A reply to a masqueraded flow: node IP:NAT port -> the pod's address, before anything else looks at it. */
static __always_inline void snat_rev(struct __sk_buff *skb)
{
	struct sl_config *cfg = config();
	struct sl_snat_key key = {};
	struct sl_snat_value *pod;
	struct l4 l4;

	/* Not only with SL_CFG_F_MASQUERADE: a flow BPF masqueraded before a switch to iptables (or off) keeps its
	 * mapping until it ends; netfilter knows nothing of it. */
	if (!cfg || parse_masq(skb, &l4, 1) < 0 || l4.daddr != cfg->node_ip)
		return;
	key.addr = l4.daddr;
	key.port = l4.dport;
	key.peer_ip = l4.saddr;
	key.peer_port = l4.sport;
	key.proto = l4.proto;
	pod = bpf_map_lookup_elem(&sl_snat_rev, &key);
	if (!pod)
		return;
	snat_seen(pod, &l4);
	if (masq_rewrite(skb, &l4, 1, pod->addr, pod->port) == 0)
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

/* Masquerade: a local pod's TCP/UDP to a destination outside the cluster leaves with the node's IP. */
SEC("tc")
int to_netdev(struct __sk_buff *skb)
{
	struct sl_config *cfg = config();
	struct sl_snat_key fwd = {}, rev = {};
	struct sl_snat_value *nat, out = {}, back = {};
	struct sl_lpm_key lpm = { .prefixlen = 32 };
	struct l4 l4 = {};
	__u32 hash;
	int i, parsed;

	count(SL_CNT_TO_NETDEV, skb);
	/* A packet netfilter already masqueraded (iptables mode, or a flow its conntrack owns from before a switch)
	 * leaves with the node's address: never a second mapping for it. */
	parsed = cfg ? parse_masq(skb, &l4, 0) : -1;
	if (parsed == -1 || l4.saddr == cfg->node_ip)
		return TC_ACT_OK;
	if (!bpf_map_lookup_elem(&sl_endpoints, &l4.saddr))
		return TC_ACT_OK;
	lpm.ip = l4.daddr;
	if (bpf_map_lookup_elem(&sl_ipcache_host, &l4.daddr) || bpf_map_lookup_elem(&sl_ipcache, &lpm))
		return TC_ACT_OK;
	if (parsed < 0) {
		/* A pod's packet leaving the cluster that BPF cannot translate: never out with the pod's address. */
		if (!(cfg->flags & SL_CFG_F_MASQUERADE) || bpf_map_lookup_elem(&sl_ipmasq, &lpm))
			return TC_ACT_OK;
		count(SL_CNT_SNAT_UNSUPPORTED, skb);
		return TC_ACT_SHOT;
	}

	fwd.addr = l4.saddr;
	fwd.port = l4.sport;
	fwd.peer_ip = l4.daddr;
	fwd.peer_port = l4.dport;
	fwd.proto = l4.proto;
	nat = bpf_map_lookup_elem(&sl_snat, &fwd);
	if (nat) {
		/* Also with masquerading switched to iptables or off: the flow keeps the mapping it started with. */
		snat_seen(nat, &l4);
		out.addr = nat->addr;
		out.port = nat->port;
	} else if (!(cfg->flags & SL_CFG_F_MASQUERADE) || bpf_map_lookup_elem(&sl_ipmasq, &lpm)) {
		return TC_ACT_OK; /* not ours to map (masquerading off or netfilter's), or a nonMasqueradeCIDR */
	} else {
		rev.addr = cfg->node_ip;
		rev.peer_ip = l4.daddr;
		rev.peer_port = l4.dport;
		rev.proto = l4.proto;
		hash = (l4.saddr ^ ((__u32)l4.sport << 16) ^ l4.daddr ^ l4.dport) * 2654435761u;
		hash ^= hash >> 15;
#pragma unroll
		for (i = 0; i < NAT_PORT_TRIES; i++) {
			rev.port = bpf_htons(SL_SNAT_PORT_MIN + (hash + i * 7919) % (SL_SNAT_PORT_MAX - SL_SNAT_PORT_MIN + 1));
			if (!bpf_map_lookup_elem(&sl_snat_rev, &rev))
				break;
		}
		/* No mapping, no packet: sent on untranslated it would leave with the pod's address. */
		if (i == NAT_PORT_TRIES) {
			count(SL_CNT_SNAT_NO_PORT, skb);
			return TC_ACT_SHOT;
		}
		back.addr = l4.saddr;
		back.port = l4.sport;
		out.addr = cfg->node_ip;
		out.port = rev.port;
		snat_seen(&out, &l4);
		back.last_seen = out.last_seen;
		if (bpf_map_update_elem(&sl_snat_rev, &rev, &back, BPF_NOEXIST) < 0 ||
		    bpf_map_update_elem(&sl_snat, &fwd, &out, BPF_ANY) < 0) {
			count(SL_CNT_SNAT_NO_PORT, skb);
			return TC_ACT_SHOT;
		}
	}
	if (masq_rewrite(skb, &l4, 0, out.addr, out.port) < 0) {
		count(SL_CNT_DROP_MALFORMED, skb);
		return TC_ACT_SHOT;
	}
	count(SL_CNT_SNAT, skb);
	return TC_ACT_OK;
}

/*
 * XDP acceleration on the node's uplink (native routing): NodePort, externalIP and LoadBalancer traffic from the
 * network is translated and forwarded before the kernel allocates an skb. The choice is lb_decide's, the same as
 * from_netdev's, from the same maps; XDP only handles what it can finish itself, a new or established flow to a
 * backend on another node (SNAT to this node, then bpf_fib_lookup and XDP_TX / bpf_redirect). Everything else goes
 * on UNCHANGED to tc with XDP_PASS: replies (reverse NAT), local backends (bpf_redirect_peer is tc's), hairpin,
 * reject, and a next hop whose neighbour is not resolved yet; since lb_decide already wrote the flow's entries,
 * from_netdev finds them and continues the same flow on the same backend.
 */
static __always_inline __u16 csum_replace(__u16 check, __u32 from, __u32 to, int bits32)
{
	/* RFC 1624: HC' = ~(~HC + ~m + m'), in 16-bit words of the same byte order as the packet. */
	__u32 sum = (__u16)~check;

	if (bits32) {
		sum += (~from & 0xffff) + (~from >> 16) + (to & 0xffff) + (to >> 16);
	} else {
		sum += (~from & 0xffff) + (to & 0xffff);
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The XDP counterpart of rewrite(): the same fields, checksums fixed up by hand (a UDP checksum of 0 stays 0). */
static __always_inline int xdp_rewrite(void *data, void *data_end, struct l4 *l4, int dst, __u32 new_ip, __u16 new_port)
{
	struct iphdr *ip = data + IP_OFF;
	__u16 *ports = data + L4_OFF;
	__u16 *l4sum = data + l4->csum_off;
	__u32 old_ip = dst ? l4->daddr : l4->saddr;
	__u16 old_port = dst ? l4->dport : l4->sport;

	if ((void *)(ip + 1) > data_end || (void *)(ports + 2) > data_end || (void *)(l4sum + 1) > data_end)
		return -1;
	ip->check = csum_replace(ip->check, old_ip, new_ip, 1);
	if (l4->proto == IPPROTO_TCP || *l4sum) {
		__u16 sum = csum_replace(*l4sum, old_ip, new_ip, 1);
		sum = csum_replace(sum, old_port, new_port, 0);
		if (l4->proto == IPPROTO_UDP && !sum)
			sum = 0xffff;
		*l4sum = sum;
	}
	if (dst) {
		ip->daddr = new_ip;
		ports[1] = new_port;
		l4->daddr = new_ip;
		l4->dport = new_port;
	} else {
		ip->saddr = new_ip;
		ports[0] = new_port;
		l4->saddr = new_ip;
		l4->sport = new_port;
	}
	return 0;
}

static __always_inline int xdp_pass(__u32 len)
{
	count_len(SL_CNT_XDP_PASS, len);
	return XDP_PASS;
}

SEC("xdp")
int xdp_netdev(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct sl_config *cfg = config();
	struct bpf_fib_lookup fib = {};
	struct sl_lb_tuple reply = {};
	struct sl_snat_key masq = {};
	struct lb_nat nat;
	struct iphdr *ip;
	struct l4 l4;
	__u16 ttl_word;
	__u32 len = data_end - data;
	int verdict, i;

	count_len(SL_CNT_XDP, len);
	/* Tunnel mode reaches remote backends through the VXLAN device's tunnel key, which only tc can set. */
	if (!cfg || (cfg->flags & SL_CFG_F_TUNNEL) || parse_l4_data(data, data_end, &l4) < 0)
		return xdp_pass(len);
	/* tc translates PACKET_HOST frames only: a bridge floods other nodes' frames to us too. */
	for (i = 0; i < ETH_ALEN; i++)
		if (eth->h_dest[i] != cfg->uplink_mac[i])
			return xdp_pass(len);
	/* A reply that tc translates back (a NodePort flow SNATed here, a masqueraded pod's): not a new frontend. */
	reply.client_ip = l4.daddr;
	reply.client_port = l4.dport;
	reply.peer_ip = l4.saddr;
	reply.peer_port = l4.sport;
	reply.proto = l4.proto;
	if (bpf_map_lookup_elem(&sl_lb_ct, &reply))
		return xdp_pass(len);
	if (l4.daddr == cfg->node_ip) {
		masq.addr = l4.daddr;
		masq.port = l4.dport;
		masq.peer_ip = l4.saddr;
		masq.peer_port = l4.sport;
		masq.proto = l4.proto;
		if (bpf_map_lookup_elem(&sl_snat_rev, &masq))
			return xdp_pass(len);
	}

	verdict = lb_decide(cfg, &l4, 0, len, &nat);
	if (verdict == LB_DROP)
		return XDP_DROP;
	/* Not a frontend, no backend (tc answers with RST / ICMP), or a backend on this node (or the client itself). */
	if (verdict != LB_DONE || !nat.nat_ip || nat.nat_ip != cfg->node_ip)
		return xdp_pass(len);

	fib.family = 2; /* AF_INET */
	fib.l4_protocol = l4.proto;
	fib.tot_len = l4.ip_len;
	fib.ipv4_src = nat.nat_ip;
	fib.ipv4_dst = nat.be_ip;
	fib.ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return xdp_pass(len); /* tc's bpf_redirect_neigh resolves the neighbour, with the entries lb_decide wrote */
	/* Forwarded here, so the router's TTL decrement is here too; TTL <= 1 goes on to tc, which leaves it to the
	 * stack (ICMP time exceeded). */
	ip = data + IP_OFF;
	if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
		return xdp_pass(len);

	if (xdp_rewrite(data, data_end, &l4, 1, nat.be_ip, nat.be_port) < 0 ||
	    xdp_rewrite(data, data_end, &l4, 0, nat.nat_ip, nat.nat_port) < 0)
		return xdp_pass(len);
	ttl_word = *(__u16 *)&ip->ttl;
	ip->ttl--;
	ip->check = csum_replace(ip->check, ttl_word, *(__u16 *)&ip->ttl, 0);
	if ((void *)(eth + 1) > data_end)
		return xdp_pass(len);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	count_len(SL_CNT_LB_DNAT, len);
	count_len(SL_CNT_XDP_FWD, len);
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	if (lb_rev_nat(skb) < 0) {
		count(SL_CNT_DROP_MALFORMED, skb);
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

/*
 * Socket-level load balancing for processes of the node itself (host-namespace clients): connect() to a service
 * frontend is rewritten to a backend before the socket exists on the wire, so no per-packet translation and no
 * reverse NAT are needed (TCP, and UDP sockets that connect(); unconnected UDP through sendmsg4/recvmsg4 and
 * sl_lb_sock). Attached to the node's cgroup (cgroup/connect4, sendmsg4, recvmsg4). A backend is drawn at random
 * from the Maglev table (so terminating backends, never in the table, are never drawn), except that a
 * sessionAffinity ClientIP service keeps a client on its backend as lb_select does, the client being the socket's
 * network namespace (sl_lb_affinity_sock); a frontend without backends fails the connect() at once instead of
 * letting it hang.
 */
/* The backend for a socket's destination, or 0 (not a service: leave it); *reject: a service without backends. */
static __always_inline struct sl_backend_value *sock_backend(struct bpf_sock_addr *ctx, int *reject)
{
	struct sl_config *cfg = config();
	struct sl_service_key sk = {};
	struct sl_affinity_sock_key ak = {};
	struct sl_service_value *svc;
	struct sl_backend_value *be;
	__u32 id;

	*reject = 0;
	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 0;
	sk.vip = ctx->user_ip4;
	sk.port = (__u16)ctx->user_port;
	sk.proto = ctx->protocol;
	svc = bpf_map_lookup_elem(&sl_services, &sk);
	if (!svc && cfg && sk.vip == cfg->node_ip) {
		sk.vip = 0;
		svc = bpf_map_lookup_elem(&sl_services, &sk);
	}
	if (!svc)
		return 0;
	*reject = 1;
	if (!svc->count)
		return 0;
	if (svc->flags & SL_SVC_F_AFFINITY) {
		ak.netns_cookie = bpf_get_netns_cookie(ctx);
		ak.service_id = svc->id;
	}
	be = lb_select_backend(&sl_lb_affinity_sock, &ak, svc, bpf_get_prandom_u32(), now_s(), &id);
	if (be)
		*reject = 0;
	return be;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	int reject;
	struct sl_backend_value *be = sock_backend(ctx, &reject);

	if (!be)
		return reject ? 0 : 1;
	ctx->user_ip4 = be->ip;
	ctx->user_port = be->port;
	return 1;
}

/* Unconnected UDP: each datagram to a frontend goes to a backend; the reply is shown as the frontend's (recvmsg4). */
SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	struct sl_sock_key key = {};
	struct sl_sock_value fe = {};
	int reject;
	struct sl_backend_value *be;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	fe.vip = ctx->user_ip4;
	fe.vport = (__u16)ctx->user_port;
	be = sock_backend(ctx, &reject);
	if (!be)
		return reject ? 0 : 1;
	key.cookie = bpf_get_socket_cookie(ctx);
	key.addr = be->ip;
	key.port = be->port;
	bpf_map_update_elem(&sl_lb_sock, &key, &fe, BPF_ANY);
	ctx->user_ip4 = be->ip;
	ctx->user_port = be->port;
	return 1;
}

SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	struct sl_sock_key key = {};
	struct sl_sock_value *fe;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	key.cookie = bpf_get_socket_cookie(ctx);
	key.addr = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	fe = bpf_map_lookup_elem(&sl_lb_sock, &key);
	if (fe) {
		ctx->user_ip4 = fe->vip;
		ctx->user_port = fe->vport;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
