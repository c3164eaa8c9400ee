/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The load balancer's core, shared by the tc programs and the XDP program of sluice.bpf.c: the maps, the parse of
 * a TCP/UDP packet, the frontend lookup, the backend choice (connection tracking, affinity, Maglev) and the NAT
 * decision. Nothing here touches a packet, so both program types make the same choice from the same state: a flow
 * whose first packet XDP translated continues in tc (and the other way round) through sl_lb_fwd / sl_lb_ct.
 */
#ifndef SLUICE_LB_H
#define SLUICE_LB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
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
	__uint(max_entries, SL_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sl_maglev_value);
} sl_lb_maglev SEC(".maps");

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
	__type(key, struct sl_lb_tuple);
	__type(value, struct sl_lb_fwd_value);
} sl_lb_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_MAX_LB_CT);
	__type(key, struct sl_lb_tuple);
	__type(value, struct sl_lb_rev_value);
} sl_lb_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_MAX_AFFINITY);
	__type(key, struct sl_affinity_key);
	__type(value, struct sl_affinity_value);
} sl_lb_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_MAX_AFFINITY_SOCK);
	__type(key, struct sl_affinity_sock_key);
	__type(value, struct sl_affinity_value);
} sl_lb_affinity_sock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_AFFINITY_MATCH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_affinity_match_key);
	__type(value, struct sl_affinity_match_value);
} sl_lb_affinity_match SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_SNAT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_snat_key);
	__type(value, struct sl_snat_value);
} sl_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_SNAT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_snat_key);
	__type(value, struct sl_snat_value);
} sl_snat_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SL_MAX_IPMASQ);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_lpm_key);
	__type(value, struct sl_ipmasq_value);
} sl_ipmasq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_MAX_SOCK_NAT);
	__type(key, struct sl_sock_key);
	__type(value, struct sl_sock_value);
} sl_lb_sock SEC(".maps");

static __always_inline void count_len(__u32 index, __u32 len)
{
	struct sl_counter *c = bpf_map_lookup_elem(&sl_counters, &index);
	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __always_inline struct sl_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&sl_config, &zero);
}

#define IP_OFF ETH_HLEN
#define L4_OFF (IP_OFF + sizeof(struct iphdr))

struct l4 {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto;
	__u8 tcp_flags;
	__u16 ip_len; /* IP total length, host order */
	__u32 csum_off;
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* TCP or UDP over IPv4 without IP options (the only shape the load balancer rewrites). */
static __always_inline int parse_l4_data(void *data, void *data_end, struct l4 *out)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u16 *ports = data + L4_OFF;

	if ((void *)(ports + 2) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return -1;
	if (ip->frag_off & bpf_htons(0x3fff))
		return -1;
	out->tcp_flags = 0;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = data + L4_OFF;
		if ((void *)(tcp + 1) > data_end)
			return -1;
		out->csum_off = L4_OFF + offsetof(struct tcphdr, check);
		out->tcp_flags = ((__u8 *)tcp)[13];
	} else if (ip->protocol == IPPROTO_UDP) {
		out->csum_off = L4_OFF + offsetof(struct udphdr, check);
	} else {
		return -1;
	}
	out->proto = ip->protocol;
	out->saddr = ip->saddr;
	out->daddr = ip->daddr;
	out->sport = ports[0];
	out->dport = ports[1];
	out->ip_len = bpf_ntohs(ip->tot_len);
	return 0;
}

static __always_inline __u32 now_s(void)
{
	return bpf_ktime_get_ns() / 1000000000ULL;
}

static __always_inline __u32 lb_hash(struct l4 *l4)
{
	/* Multiply-xorshift so every bit of the 5-tuple matters: Linux picks even source ports for connect(), so a hash
	 * that only looked at low bits would send every flow to the same slot. */
	__u32 hash = (l4->saddr ^ ((__u32)l4->sport << 16) ^ l4->dport ^ l4->proto) * 2654435761u;
	hash ^= hash >> 16;
	hash ^= l4->daddr;
	hash *= 2246822519u;
	hash ^= hash >> 13;
	hash *= 3266489917u;
	hash ^= hash >> 16;
	return hash;
}

static __always_inline __u32 ct_lifetime(struct l4 *l4)
{
	if (l4->proto != IPPROTO_TCP)
		return SL_CT_LIFETIME_UDP;
	if (l4->tcp_flags & (TCP_FIN | TCP_RST))
		return SL_CT_LIFETIME_CLOSING;
	if ((l4->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		return SL_CT_LIFETIME_SYN;
	return SL_CT_LIFETIME_TCP;
}

/*
 * A new connection's backend, for the per-packet path (lb_select) and the socket LB (sock_backend) alike: the
 * client's affinity entry (aff_key in aff_map, sl_lb_affinity or sl_lb_affinity_sock) while it lasts and the service
 * still has its backend active (sl_lb_affinity_match), refreshed; else the Maglev slot `hash` picks, recorded as the
 * client's entry. Always inlined, so each caller's map is a constant the verifier knows.
 */
static __always_inline struct sl_backend_value *lb_select_backend(void *aff_map, void *aff_key, struct sl_service_value *svc, __u32 hash, __u32 now, __u32 *id)
{
	struct sl_affinity_match_key mk = { .service_id = svc->id };
	struct sl_affinity_value *aff, fresh;
	struct sl_backend_value *be;
	struct sl_maglev_value *table;
	__u32 slot;

	if (svc->flags & SL_SVC_F_AFFINITY) {
		aff = bpf_map_lookup_elem(aff_map, aff_key);
		if (aff && now - aff->last_used <= svc->affinity_timeout) {
			mk.backend_id = aff->backend_id;
			be = bpf_map_lookup_elem(&sl_lb_affinity_match, &mk) ? bpf_map_lookup_elem(&sl_backends, &aff->backend_id) : 0;
			if (be) {
				*id = aff->backend_id;
				aff->last_used = now;
				return be;
			}
		}
	}
	table = bpf_map_lookup_elem(&sl_lb_maglev, &svc->id);
	if (!table)
		return 0;
	slot = hash % SL_MAGLEV_M;
	/* The verifier does not bound a modulo; keep clang from dropping the check it knows is true. */
	asm volatile("" : "+r"(slot));
	if (slot >= SL_MAGLEV_M)
		return 0;
	*id = table->backend_ids[slot];
	be = bpf_map_lookup_elem(&sl_backends, id);
	if (be && (svc->flags & SL_SVC_F_AFFINITY)) {
		fresh.backend_id = *id;
		fresh.last_used = now;
		bpf_map_update_elem(aff_map, aff_key, &fresh, BPF_ANY);
	}
	return be;
}

/* A new flow's backend (per packet): affinity by the client's address, else Maglev on the 5-tuple's hash. */
static __always_inline struct sl_backend_value *lb_select(struct l4 *l4, struct sl_service_value *svc, __u32 now, __u32 *id)
{
	struct sl_affinity_key ak = { .service_id = svc->id, .client_ip = l4->saddr };

	return lb_select_backend(&sl_lb_affinity, &ak, svc, lb_hash(l4), now, id);
}

#define NAT_PORT_MIN 32768
#define NAT_PORT_RANGE 28232 /* 32768..60999 */
#define NAT_PORT_TRIES 8

enum lb_verdict { LB_PASS = 0, LB_DONE = 1, LB_ERROR = -1, LB_REJECT = 2, LB_DROP = 3 };

/* What lb_decide chose: the backend (DNAT) and, when nat_ip is set, the source to write (SNAT or hairpin). */
struct lb_nat {
	__u32 be_ip;
	__u16 be_port;
	__u8 be_flags;
	__u8 pad;
	__u32 nat_ip;
	__u16 nat_port;
	__u16 pad2;
};

/*
 * Service frontend -> backend (DNAT) for a packet from a local pod (from_pod) or arriving from the network. A flow
 * with a live forward entry keeps its backend; a new one is load-balanced and gets its forward and reverse entries.
 * From the network, a backend on another node needs SNAT to this node (its reply must come back here to be
 * translated); a pod reaching itself is SNATed to SL_HAIRPIN_IP. Only decides and records (connection tracking,
 * affinity, NAT port): the caller rewrites the packet with *out, with the helpers of its program type.
 */
static __always_inline int lb_decide(struct sl_config *cfg, struct l4 *l4, int from_pod, __u32 len, struct lb_nat *out)
{
	struct sl_service_key sk = {};
	struct sl_service_value *svc;
	struct sl_lb_tuple fwd = {}, rev = {};
	struct sl_lb_fwd_value *ct, entry = {};
	struct sl_lb_rev_value back = {};
	struct sl_backend_value *be = 0;
	__u32 now, id = 0, nat_ip = 0, hash, life;
	__u16 nat_port = 0;
	int i;

	sk.vip = l4->daddr;
	sk.port = l4->dport;
	sk.proto = l4->proto;
	svc = bpf_map_lookup_elem(&sl_services, &sk);
	if (!svc && cfg && l4->daddr == cfg->node_ip) {
		sk.vip = 0;
		svc = bpf_map_lookup_elem(&sl_services, &sk);
	}
	if (!svc)
		return LB_PASS;

	now = now_s();
	life = ct_lifetime(l4);
	fwd.client_ip = l4->saddr;
	fwd.client_port = l4->sport;
	fwd.peer_ip = l4->daddr;
	fwd.peer_port = l4->dport;
	fwd.proto = l4->proto;
	ct = bpf_map_lookup_elem(&sl_lb_fwd, &fwd);
	if (ct && (__s32)(ct->expires - now) >= 0 && ct->service_id == svc->id &&
	    !((ct->flags & SL_CT_F_CLOSING) && (l4->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)) {
		be = bpf_map_lookup_elem(&sl_backends, &ct->backend_id);
		if (be) {
			count_len(SL_CNT_LB_CT_HIT, len);
			if (life == SL_CT_LIFETIME_CLOSING)
				ct->flags |= SL_CT_F_CLOSING;
			if (!(ct->flags & SL_CT_F_CLOSING) || life == SL_CT_LIFETIME_CLOSING) {
				if (ct->expires != now + life)
					ct->expires = now + life;
			}
			if (ct->flags & SL_CT_F_SNAT)
				nat_ip = cfg ? cfg->node_ip : 0;
			else if (ct->flags & SL_CT_F_HAIRPIN)
				nat_ip = bpf_htonl(SL_HAIRPIN_IP);
			nat_port = ct->nat_port;
		}
	}
	if (!be) {
		if (!svc->count) {
			if (svc->flags & SL_SVC_F_DROP) {
				count_len(SL_CNT_LB_DROP_LOCAL, len);
				return LB_DROP;
			}
			return LB_REJECT;
		}
		be = lb_select(l4, svc, now, &id);
		if (!be)
			return LB_REJECT;
		entry.backend_id = id;
		entry.service_id = svc->id;
		entry.expires = now + life;
		if (life == SL_CT_LIFETIME_CLOSING)
			entry.flags |= SL_CT_F_CLOSING;
		rev.client_ip = l4->saddr;
		rev.client_port = l4->sport;
		rev.peer_ip = be->ip;
		rev.peer_port = be->port;
		rev.proto = l4->proto;
		back.vip = l4->daddr;
		back.vport = l4->dport;
		if (be->ip == l4->saddr) {
			nat_ip = bpf_htonl(SL_HAIRPIN_IP);
			nat_port = l4->sport;
			entry.flags |= SL_CT_F_HAIRPIN;
			count_len(SL_CNT_LB_HAIRPIN, len);
		} else if (!from_pod && !(be->flags & SL_BE_F_LOCAL) && cfg) {
			nat_ip = cfg->node_ip;
			entry.flags |= SL_CT_F_SNAT;
			count_len(SL_CNT_LB_SNAT, len);
		}
		if (nat_ip) {
			back.client_ip = l4->saddr;
			back.client_port = l4->sport;
			rev.client_ip = nat_ip;
		}
		if (entry.flags & SL_CT_F_SNAT) {
			/* The client's own port if free towards this backend, else a few hashed tries in the NAT range. */
			hash = (l4->saddr ^ ((__u32)l4->sport << 16)) * 2654435761u;
			hash ^= hash >> 15;
			rev.client_port = l4->sport;
#pragma unroll
			for (i = 0; i < NAT_PORT_TRIES; i++) {
				if (bpf_map_update_elem(&sl_lb_ct, &rev, &back, BPF_NOEXIST) == 0)
					break;
				rev.client_port = bpf_htons(NAT_PORT_MIN + (hash + i * 7919) % NAT_PORT_RANGE);
			}
			if (i == NAT_PORT_TRIES) {
				count_len(SL_CNT_SNAT_NO_PORT, len);
				return LB_DROP;
			}
			nat_port = rev.client_port;
		} else {
			nat_port = rev.client_port;
			bpf_map_update_elem(&sl_lb_ct, &rev, &back, BPF_ANY);
		}
		entry.nat_port = nat_port;
		bpf_map_update_elem(&sl_lb_fwd, &fwd, &entry, BPF_ANY);
	}
	out->be_ip = be->ip;
	out->be_port = be->port;
	out->be_flags = be->flags;
	out->nat_ip = nat_ip;
	out->nat_port = nat_port;
	return LB_DONE;
}


#endif
