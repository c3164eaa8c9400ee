// SPDX-License-Identifier: GPL-2.0
/*
 * The xdp bench's traffic: a generator run with BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES (the kernel's
 * xdp-trafficgen technique: every run's frame really leaves through the device's ndo_xdp_xmit), a sink that counts
 * what the node under test forwarded back and drops it, and a bare reflector for the baseline run (the cost of
 * everything that is not the node's own work: generator, veth hops, sink).
 *
 *   generator ns: g0  <-- veth -->  up0: node ns (xdp_netdev native, or GRO + tc from_netdev)
 *
 * and a tc reflector for the second baseline (the skb path without the load balancer).
 *
 * Built by the bench itself (clang, not bpf/Makefile: it is no part of the datapath).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define HDR_LEN (14 + 20 + 20)

/* What the generator writes: the headers of flow 0, and how many flows (source ports) to rotate through. */
struct pktgen_cfg {
	__u32 expect_saddr; /* the sink's "forwarded" test: source SNATed to this address ... */
	__u32 expect_dmask; /* ... and destination inside expect_dnet/expect_dmask (network byte order) */
	__u32 expect_dnet;
	__u16 flows;
	__u16 pad;
	__u8 hdr[HDR_LEN];
	__u8 pad2[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pktgen_cfg);
} pktgen_cfg SEC(".maps");

enum { CNT_SENT, CNT_FORWARDED, CNT_OTHER, CNT_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pktgen_cnt SEC(".maps");

static __always_inline void bump(__u32 index)
{
	__u64 *c = bpf_map_lookup_elem(&pktgen_cnt, &index);

	if (c)
		(*c)++;
}

static __always_inline __u16 csum_add16(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check + (__u16)~from + to;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * Pages of the live-frames pool are recycled with whatever the last hop left in them (the node rewrote addresses
 * and MACs), so every run writes the whole header again, then moves the flow's source port (checksum adjusted).
 */
SEC("xdp")
int pktgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0, sent = CNT_SENT;
	struct pktgen_cfg *cfg = bpf_map_lookup_elem(&pktgen_cfg, &zero);
	__u64 *n = bpf_map_lookup_elem(&pktgen_cnt, &sent);
	struct tcphdr *tcp = data + 14 + 20;
	__u16 base, port;

	if (!cfg || !n || data + HDR_LEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, cfg->hdr, HDR_LEN);
	base = tcp->source;
	port = bpf_htons(bpf_ntohs(base) + (__u16)(*n % (cfg->flows ? cfg->flows : 1)));
	tcp->source = port;
	tcp->check = csum_add16(tcp->check, base, port);
	(*n)++;
	return XDP_TX;
}

/* Counts what comes back from the node: forwarded (SNATed to the node, DNATed to a backend) or anything else. */
SEC("xdp")
int pktgen_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + 14;
	__u32 zero = 0;
	struct pktgen_cfg *cfg = bpf_map_lookup_elem(&pktgen_cfg, &zero);

	if (cfg && (void *)(ip + 1) <= data_end && ip->saddr == cfg->expect_saddr && (ip->daddr & cfg->expect_dmask) == cfg->expect_dnet)
		bump(CNT_FORWARDED);
	else
		bump(CNT_OTHER);
	return XDP_DROP;
}

/* The baseline's node: sends every frame straight back, so the run costs everything but the node's own work. */
SEC("xdp")
int pktgen_reflect(struct xdp_md *ctx)
{
	return XDP_TX;
}

/*
 * The skb path's own cost: the tc program of a second baseline, which only sends the frame back out of the device
 * it came in on (no lookup, no rewrite), so that run is GRO, the stack's receive, tc, the transmit and the skb's
 * life, without the load balancer.
 */
SEC("tc")
int pktgen_tc_reflect(struct __sk_buff *skb)
{
	return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
