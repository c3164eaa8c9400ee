/*
 * Every map's key and value struct. The TypeScript codecs in ../src/maps.ts mirror these byte for byte; the test
 * bpf/test/btf.test.ts compares both against the BTF that clang emits, so change them together.
 *
 * Byte order: IPv4 addresses are stored as they appear on the wire (network order), so the programs compare them
 * with the packet without swapping. LPM trie prefix lengths are host order, as the kernel requires.
 *
 * Sizes (100,000 pods per cluster, 5,000 nodes):
 *   sl_endpoints  hash,   131,072 entries  local endpoints; a node has ~110, the headroom lets benchmarks load 100k
 *   sl_ipcache_host hash, 262,144 entries  every pod IP in the cluster (100k) and node IPs (5k), as exact /32s, + slack
 *   sl_ipcache    LPM,     65,536 entries  CIDRs: one podCIDR per node (5,000) and other prefixes
 *   sl_tunnel     LPM,     16,384 entries  one podCIDR per remote node (5,000) with room for several CIDRs per node
 *   sl_services   hash,    65,536 entries  service frontends (20,000 services with ClusterIP + NodePort + slack)
 *   sl_lb_maglev  hash,    65,536 entries  one Maglev table (4 KiB) per distinct backend set of a service
 *   sl_backends   hash,   262,144 entries  backend id -> IP:port (100,000 backends + slack)
 *   sl_lb_fwd     LRU,    262,144 entries  forward connection tracking of load-balanced flows through this node
 *   sl_lb_ct      LRU,    262,144 entries  their reverse NAT
 *   sl_lb_affinity LRU,    65,536 entries  sessionAffinity ClientIP
 *   sl_lb_affinity_sock LRU, 16,384 entries  sessionAffinity ClientIP of the socket LB: one per (network namespace,
 *                  affinity service) pair that connected through it, the node's own namespace and the few others
 *                  in its cgroup; the least recently used one goes first (that client only loses its affinity)
 *   sl_lb_affinity_match hash, 262,144 entries  (service id, backend id): one per active backend of each backend
 *                  set with sessionAffinity ClientIP, the sum of those sets' sizes (services x backends at worst);
 *                  a backend is in few sets (a Local traffic policy's internal and external ones, a pod behind a
 *                  few services), so every one of the 100,000 backends in affinity sets fits, with sl_backends'
 *                  slack; no prealloc: only affinity services cost memory
 *   sl_lb_sock    LRU,     65,536 entries  socket LB of unconnected UDP: (socket, backend) -> the frontend it was sent to
 *   sl_snat       hash,   131,072 entries  masquerade: (pod, peer) -> node IP and NAT port (entries made on use)
 *   sl_snat_rev   hash,   131,072 entries  masquerade: (node IP, NAT port, peer) -> pod address
 *   sl_ipmasq     LPM,     16,384 entries  ip-masq-agent's nonMasqueradeCIDRs: destinations never masqueraded
 *   sl_config     array,        1 entry    this node's datapath settings
 *   sl_counters   percpu array, 40 slots  packet/byte counters per program decision (enum sl_counter_index)
 */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

#include <linux/types.h>

#define SL_MAX_ENDPOINTS 131072
#define SL_MAX_IPCACHE_HOST 262144
#define SL_MAX_IPCACHE 65536
#define SL_MAX_TUNNEL 16384
#define SL_NUM_COUNTERS 40
#define SL_MAX_SERVICES 65536
#define SL_MAX_BACKENDS 262144
#define SL_MAX_LB_CT 262144
#define SL_MAX_AFFINITY 65536
#define SL_MAX_AFFINITY_MATCH 262144
#define SL_MAX_AFFINITY_SOCK 16384
#define SL_MAX_SOCK_NAT 65536
#define SL_MAX_SNAT 131072
#define SL_MAX_IPMASQ 16384

/* sl_endpoints: pod IPv4 -> where its host-side veth is. */
struct sl_endpoint_key {
	__u32 ip; /* network order */
};

struct sl_endpoint_value {
	__u32 ifindex;    /* host-side veth ifindex, in the node's network namespace */
	__u32 flags;      /* SL_EP_F_* */
	__u8 mac[6];      /* the pod's eth0 MAC: destination MAC when delivering to it */
	__u8 node_mac[6]; /* the host-side veth MAC: source MAC when delivering to the pod */
};

#define SL_EP_F_HOST 0x1 /* reserved: the endpoint is the node itself */

/* sl_ipcache and sl_tunnel: longest-prefix-match keys. */
struct sl_lpm_key {
	__u32 prefixlen; /* host order, 0..32 */
	__u32 ip;        /* network order */
};

/*
 * The ipcache: pod IPs and CIDRs -> the node that owns them. Split in two so the per-packet cost stays flat at
 * 100,000 pods: single addresses live in the sl_ipcache_host hash (key: struct sl_endpoint_key), looked up first;
 * prefixes shorter than /32 live in the sl_ipcache LPM trie, whose lookup cost grows with its depth.
 */
struct sl_ipcache_value {
	__u32 node_ip; /* network order; the owning node's underlay IP */
	__u32 flags;   /* SL_IPCACHE_F_* */
};

#define SL_IPCACHE_F_LOCAL 0x1 /* owned by this node */

/* sl_tunnel: remote podCIDR -> VXLAN endpoint. */
struct sl_tunnel_value {
	__u32 node_ip; /* network order */
	__u32 vni;     /* host order; 0 means the node's configured VNI */
};

/*
 * Service load-balancing (kube-proxy replacement). Ports are network order, as in the packet.
 *
 *   sl_services    frontend (address, port, protocol) -> service id, active backend count, flags
 *   sl_lb_maglev   service id -> its Maglev lookup table (SL_MAGLEV_M backend ids, computed by the agent)
 *   sl_backends    backend id -> backend address; ids are the agent's, stable while the backend exists
 *   sl_lb_fwd      forward connection tracking: (client, frontend) -> backend id, expiry; pins a flow's backend
 *   sl_lb_ct       reverse NAT: (client as the backend sees it, backend) -> frontend (and the real client when the
 *                  forward direction was SNATed: NodePort to another node's backend, hairpin)
 *   sl_lb_affinity sessionAffinity ClientIP: (service id, client address) -> backend id, last use
 *   sl_lb_affinity_sock  the same for the socket LB (host-namespace clients): (network namespace cookie, service
 *                  id) -> backend id, last use
 *   sl_lb_affinity_match  (service id, backend id) -> present: the backends an affinity service may follow its
 *                  clients' entries to (Cilium's cilium_lb_affinity_match)
 *
 * A new flow (no live forward entry) is hashed onto the Maglev table, so adding or removing one backend moves only
 * the flows that hashed to its slots, and the forward entry keeps every established flow where it is regardless.
 * Terminating backends are left out of the table (new flows never pick them) but stay in sl_backends, so the flows
 * they already serve keep working. A frontend with no backend in its table rejects: TCP RST, ICMP port unreachable.
 */
#define SL_MAGLEV_M 1009 /* prime; an element (key + 4,036-byte value + kernel header) fits a 4 KiB allocation */

struct sl_service_key {
	__u32 vip;   /* network order; 0.0.0.0: a NodePort, on every address of this node */
	__u16 port;  /* network order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct sl_service_value {
	__u32 id;               /* key of the service's Maglev table and its affinity entries */
	__u16 count;            /* backends in the Maglev table; 0: reject (or drop with SL_SVC_F_DROP) */
	__u8 flags;             /* SL_SVC_F_* */
	__u8 pad;
	__u32 affinity_timeout; /* seconds, with SL_SVC_F_AFFINITY */
};

#define SL_SVC_F_EXTERNAL 0x1 /* NodePort, externalIP or LoadBalancer frontend (externalTrafficPolicy applies) */
#define SL_SVC_F_AFFINITY 0x2 /* sessionAffinity: ClientIP */
#define SL_SVC_F_DROP 0x4     /* no local backend under a Local traffic policy: drop (as kube-proxy), not reject */
#define SL_SVC_F_NODE_ADDR 0x8 /* the frontend's address is one of this node's (NodePort on a node IP): replies
                                  from it are forwarded in BPF, as for the primary node IP */

struct sl_maglev_value {
	__u32 backend_ids[SL_MAGLEV_M];
};

struct sl_backend_key {
	__u32 id;
};

struct sl_backend_value {
	__u32 ip;   /* network order */
	__u16 port; /* network order */
	__u8 flags; /* SL_BE_F_* */
	__u8 pad;
};

#define SL_BE_F_TERMINATING 0x1 /* every service holding it says terminating (shown by sluice bpf lb list); the
                                   programs do not read it: each Maglev table leaves out its service's terminating
                                   backends, affinity follows only sl_lb_affinity_match */
#define SL_BE_F_LOCAL 0x2       /* a pod of this node: a NodePort flow to it needs no SNAT */

/* Both connection-tracking maps: forward keys are (client, frontend), reverse keys (client as NATed, backend). */
struct sl_lb_tuple {
	__u32 client_ip;
	__u32 peer_ip;
	__u16 client_port;
	__u16 peer_port;
	__u8 proto;
	__u8 pad[3];
};

struct sl_lb_fwd_value {
	__u32 backend_id;
	__u32 expires;    /* CLOCK_MONOTONIC seconds (bpf_ktime_get_ns); past it the entry is dead */
	__u32 service_id; /* the frontend changed service (re-created): the entry is dead */
	__u16 nat_port;   /* network order; the source port after SNAT (SL_CT_F_SNAT, SL_CT_F_HAIRPIN) */
	__u8 flags;       /* SL_CT_F_* */
	__u8 pad;
};

#define SL_CT_F_SNAT 0x1    /* source rewritten to this node's IP:nat_port (NodePort to another node's backend) */
#define SL_CT_F_HAIRPIN 0x2 /* a pod reaching itself through its service: source rewritten to SL_HAIRPIN_IP */
#define SL_CT_F_CLOSING 0x4 /* a FIN or RST was seen: short lifetime, a new SYN picks a backend afresh */

/* Lifetimes, seconds (Cilium's defaults). */
#define SL_CT_LIFETIME_TCP 21600
#define SL_CT_LIFETIME_SYN 60
#define SL_CT_LIFETIME_CLOSING 10
#define SL_CT_LIFETIME_UDP 60

/* 169.254.42.1 (host order), the source a hairpinned pod sees, so its reply leaves it instead of looping inside. */
#define SL_HAIRPIN_IP 0xa9fe2a01

struct sl_lb_rev_value {
	__u32 vip;         /* the frontend address the client used (network order) */
	__u16 vport;       /* network order */
	__u16 client_port; /* network order; with client_ip */
	__u32 client_ip;   /* 0: not SNATed; else the real client the reply's destination is restored to */
};

/*
 * Socket LB of unconnected UDP (sendmsg4 rewrites each datagram's destination, recvmsg4 shows the replies as coming
 * from the frontend): (socket cookie, backend address, port) -> the frontend.
 */
struct sl_sock_key {
	__u64 cookie;
	__u32 addr; /* network order */
	__u16 port; /* network order */
	__u16 pad;
};

struct sl_sock_value {
	__u32 vip;   /* network order */
	__u16 vport; /* network order */
	__u16 pad;
};

struct sl_affinity_key {
	__u32 service_id;
	__u32 client_ip;
};

struct sl_affinity_value {
	__u32 backend_id;
	__u32 last_used; /* CLOCK_MONOTONIC seconds */
};

/*
 * sl_lb_affinity_sock: sessionAffinity of the socket LB (sock4_connect, sock4_sendmsg). connect() runs before the
 * socket has a source address, so, as Cilium's socket LB, the client is its network namespace
 * (bpf_get_netns_cookie): every process of the node's own namespace is one client, as its packets would all carry
 * the node's address. A key space of its own (a cookie is no address), followed under the same rules as
 * sl_lb_affinity's entries: within the service's timeout and while sl_lb_affinity_match lists the backend. Value:
 * struct sl_affinity_value.
 */
struct sl_affinity_sock_key {
	__u64 netns_cookie;
	__u32 service_id;
	__u32 pad;
};

/*
 * sl_lb_affinity_match, written by the agent: exactly the active backends of each backend set with sessionAffinity
 * (its Maglev table's members). A client's affinity entry is followed only while its backend is there: a backend
 * the service no longer has (while another service keeps its sl_backends entry), or one this service calls
 * terminating (while another calls it ready), is not; the client gets a Maglev backend and a new entry.
 */
struct sl_affinity_match_key {
	__u32 service_id; /* sl_service_value.id: the key of the set's Maglev table */
	__u32 backend_id;
};

struct sl_affinity_match_value {
	__u8 pad[4]; /* presence is the value */
};

/*
 * Masquerade (SNAT to the node's IP) for traffic from local pods to destinations outside the cluster (not in the
 * ipcache), done at the uplink's egress (to_netdev); replies are translated back at its ingress (from_netdev).
 * The same key shape serves both directions: forward {pod, pod port, peer, peer port}, reverse {node IP, NAT port,
 * peer, peer port}. Ports network order.
 */
struct sl_snat_key {
	__u32 addr;
	__u32 peer_ip;
	__u16 port;
	__u16 peer_port;
	__u8 proto;
	__u8 pad[3];
};

struct sl_snat_value {
	__u32 addr;
	__u16 port;
	__u8 flags;      /* SL_SNAT_F_* */
	__u8 pad;
	__u32 last_seen; /* CLOCK_MONOTONIC seconds of this direction's last packet (the agent's GC reads it) */
};

#define SL_SNAT_F_CLOSING 0x1 /* a FIN or RST was seen in this direction */

/*
 * Both directions live in plain hash maps, so the kernel never evicts one half of a mapping (an LRU map could drop
 * the reverse entry of a live flow, or keep a forward entry whose port another flow then takes). Only the agent's
 * garbage collection removes entries, a flow's two halves together, once the flow has been idle past its lifetime
 * (seconds; TCP as the load balancer's conntrack): a full map drops new flows (counted) rather than corrupting old ones.
 */
#define SL_SNAT_LIFETIME_TCP 21600
#define SL_SNAT_LIFETIME_CLOSING 10
#define SL_SNAT_LIFETIME_UDP 60
#define SL_SNAT_LIFETIME_ICMP 30

/*
 * The NAT ports of the masquerade, host order: above the kernel's default ip_local_port_range (32768..60999), so a
 * masqueraded flow never takes a port the node's own connections or netfilter's masquerade (which keeps a pod's
 * source port, from that range) already hold. The agent reserves them in the node (ip_local_reserved_ports).
 */
#define SL_SNAT_PORT_MIN 61000
#define SL_SNAT_PORT_MAX 65535

/*
 * skb->mark bit from_container sets on a pod's packet whose masquerade is BPF's (BPF masquerading on, or a flow the
 * BPF NAT table already maps): Sluice's iptables chain returns on it, so netfilter never translates a flow BPF does
 * (while both run, during a switch between the modes and until netfilter's own flows end).
 */
#define SL_MARK_SNAT_BPF 0x00100000

/*
 * sl_ipmasq (key: struct sl_lpm_key): ip-masq-agent's nonMasqueradeCIDRs, from the configuration, and every cluster
 * node's IP — a pod's traffic to them keeps its address, as traffic inside the cluster (the ipcache) does. Only new flows look: a flow mapped
 * before its destination was added keeps its mapping until it ends.
 */
struct sl_ipmasq_value {
	__u32 flags; /* SL_IPMASQ_F_* */
};

#define SL_IPMASQ_F_NODE 0x1 /* a cluster node's IP (/32), kept by the agent: pod -> node keeps the pod's address */

/* sl_config: one entry, key 0. */
struct sl_config {
	__u32 flags;          /* SL_CFG_F_* */
	__u32 node_ip;        /* network order */
	__u32 uplink_ifindex; /* the underlay device, target of bpf_redirect_neigh in native routing */
	__u32 tunnel_ifindex; /* the collect_md VXLAN device in tunnel mode */
	__u32 vni;            /* host order */
	__u8 uplink_mac[6];
	__u8 pad[2];
};

#define SL_CFG_F_BPF_HOST_ROUTING 0x1 /* redirect in BPF; otherwise TC_ACT_OK and the kernel stack forwards */
#define SL_CFG_F_TUNNEL 0x2           /* VXLAN tunnel mode; otherwise native routing */
#define SL_CFG_F_MASQUERADE 0x4       /* SNAT pods' traffic leaving the cluster to node_ip */

/* sl_counters: per-CPU, indexed by enum sl_counter_index. */
struct sl_counter {
	__u64 packets;
	__u64 bytes;
};

enum sl_counter_index {
	SL_CNT_FROM_CONTAINER = 0,
	SL_CNT_FROM_CONTAINER_LOCAL = 1,  /* bpf_redirect_peer to a local pod */
	SL_CNT_FROM_CONTAINER_NEIGH = 2,  /* bpf_redirect_neigh to the uplink (native routing) */
	SL_CNT_FROM_CONTAINER_TUNNEL = 3, /* bpf_skb_set_tunnel_key + redirect to the VXLAN device */
	SL_CNT_FROM_CONTAINER_PASS = 4,   /* handed to the kernel stack */
	SL_CNT_FROM_NETDEV = 5,
	SL_CNT_FROM_NETDEV_LOCAL = 6,
	SL_CNT_FROM_NETDEV_PASS = 7,
	SL_CNT_FROM_OVERLAY = 8,
	SL_CNT_FROM_OVERLAY_LOCAL = 9,
	SL_CNT_FROM_OVERLAY_PASS = 10,
	SL_CNT_TO_OVERLAY = 11,
	SL_CNT_TO_OVERLAY_ENCAP = 12,
	SL_CNT_TO_OVERLAY_NO_ROUTE = 13,
	SL_CNT_DROP_MALFORMED = 14,
	SL_CNT_LEGACY = 15, /* BPF host routing off: every program passes */
	SL_CNT_LB_DNAT = 16,       /* a service address translated to a backend */
	SL_CNT_LB_NO_BACKEND = 17, /* a service without backends */
	SL_CNT_LB_REV_NAT = 18,    /* a reply's source translated back to the service address */
	SL_CNT_SNAT = 19,          /* masqueraded to the node IP */
	SL_CNT_SNAT_REV = 20,      /* a reply to a masqueraded flow translated back to the pod */
	SL_CNT_SNAT_NO_PORT = 21,  /* no free NAT port found: dropped, never sent with the pod's address */
	SL_CNT_TO_NETDEV = 22,
	SL_CNT_LB_REJECT = 23,      /* a service without backends answered with TCP RST / ICMP port unreachable */
	SL_CNT_LB_DROP_LOCAL = 24,  /* a Local-policy frontend without a local backend: dropped */
	SL_CNT_DROP_SPOOFED = 25,   /* a pod sent with a source address that is not its own */
	SL_CNT_LB_CT_HIT = 26,      /* a packet of an established load-balanced flow (forward entry found) */
	SL_CNT_LB_SNAT = 27,        /* a new NodePort flow to another node's backend, SNATed to this node */
	SL_CNT_LB_HAIRPIN = 28,     /* a new flow of a pod to itself through its service */
	SL_CNT_XDP = 29,            /* frames seen by xdp_netdev */
	SL_CNT_XDP_FWD = 30,        /* translated and forwarded in XDP (XDP_TX / redirect) */
	SL_CNT_XDP_PASS = 31,       /* handed on to the stack and tc unchanged */
	SL_CNT_TTL_EXCEEDED = 32,   /* TTL <= 1 on a path BPF forwards: left to the stack (ICMP time exceeded) */
	SL_CNT_SNAT_UNSUPPORTED = 33, /* to masquerade but not translatable (not TCP/UDP/ICMP echo, IP options, fragment): dropped */
	SL_CNT_SNAT_ICMP = 34,      /* an ICMP echo masqueraded (identifier translated), or its reply translated back */
};

#endif
