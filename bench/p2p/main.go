// Command p2p measures event sharing between dialtrap nodes: the latency from capture on one
// node to storage on every node of an N-node network, and the events each node stores per
// second, next to bare gossipsub (same library, same N and connection pattern, no signing,
// no checks, no store) measured in the same run.
//
// The dialtrap nodes run in this process, each as the node runs them: peer.Node (libp2p
// host, DHT, gossipsub, validation, trust gate) feeding a hub with a real SQLite store in a
// temporary directory; the publishing node's events enter its hub as captured ones do. All
// hosts listen on 127.0.0.1 only; the only bootstrap peer is node 0.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	libpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/peer"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

func main() {
	var (
		sizes    = flag.String("nodes", "5,20", "network sizes")
		rates    = flag.String("rates", "100,1000", "events/s published, network-wide")
		duration = flag.Duration("duration", 10*time.Second, "publishing time per step")
		pubs     = flag.Int("publishers", 1, "nodes that capture and publish (round robin); 1 = node A only")
		peerRate = flag.Float64("peer-rate", 5000, "per-originator accepted rate (--p2p-rate) on every node")
		bare     = flag.Bool("bare", true, "also measure bare gossipsub")
		drain    = flag.Duration("drain", 10*time.Second, "longest wait for the last events after publishing")
		profile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	)
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var ns, rs []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 {
			fatal(fmt.Errorf("-nodes %q: want sizes of at least 2", s))
		}
		ns = append(ns, n)
	}
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(s)
		if err != nil || r < 1 {
			fatal(fmt.Errorf("-rates %q", s))
		}
		rs = append(rs, r)
	}
	fmt.Printf("%-8s %5s %6s %7s %6s %5s %8s %8s %8s %12s\n", "system", "nodes", "rate/s", "sent", "stored", "lost", "p50", "p99", "max", "stored/s/node")
	for _, n := range ns {
		net, err := startDialtrap(n, *peerRate)
		if err != nil {
			fatal(err)
		}
		var ours []result
		for _, r := range rs {
			res := run(net, r, *duration, *drain, min(*pubs, n))
			ours = append(ours, res)
			res.print("dialtrap", n)
			if os.Getenv("P2P_BENCH_DEBUG") != "" {
				for i, nd := range net.nodes {
					fmt.Printf("  node %d: %+v hub %+v\n", i, nd.p2p.Stats(), nd.hub.Stats())
				}
			}
		}
		net.close()
		if !*bare {
			continue
		}
		bn, err := startBare(n)
		if err != nil {
			fatal(err)
		}
		for i, r := range rs {
			res := run(bn, r, *duration, *drain, min(*pubs, n))
			res.print("bare", n)
			if ours[i].p99 > 0 && res.p99 > 0 {
				fmt.Printf("%-8s %5d %6d   p99 ratio dialtrap/bare %.2f, stored/s ratio %.2f\n", "ratio", n, r,
					float64(ours[i].p99)/float64(res.p99), ours[i].perNode/res.perNode)
			}
		}
		bn.close()
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "p2p:", err)
	os.Exit(1)
}

// network is N nodes: publish hands an event to node i as its capture would; stored is
// called once per event and node when the event is stored (or, bare, delivered).
type network interface {
	size() int
	publish(i int, seq int)
	setStored(func(node, seq int))
	close()
}

type result struct {
	rate, sent, stored, lost int
	p50, p99, max            time.Duration
	perNode                  float64
}

func (r result) print(system string, n int) {
	fmt.Printf("%-8s %5d %6d %7d %6d %5d %8s %8s %8s %12.0f\n", system, n, r.rate, r.sent, r.stored, r.lost,
		r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.max.Round(time.Millisecond), r.perNode)
}

// run publishes rate events/s for d, paced in 10 ms slots, and measures for each event the
// time until every node stored it.
func run(net network, rate int, d, drain time.Duration, pubs int) result {
	total := int(float64(rate) * d.Seconds())
	n := net.size()
	var mu sync.Mutex
	sent := make([]time.Time, total)
	last := make([]time.Time, total) // latest storage among nodes
	count := make([]int, total)
	done := make(chan struct{}, 1)
	complete, perNode := 0, make([]int, n)
	net.setStored(func(node, seq int) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if seq < 0 || seq >= total {
			return
		}
		count[seq]++
		perNode[node]++
		last[seq] = now
		if count[seq] == n {
			if complete++; complete == total {
				select {
				case done <- struct{}{}:
				default:
				}
			}
		}
	})
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	seq := 0
	for seq < total {
		<-tick.C
		due := min(total, int(float64(rate)*time.Since(start).Seconds()))
		for ; seq < due; seq++ {
			mu.Lock()
			sent[seq] = time.Now()
			mu.Unlock()
			net.publish(seq%pubs, seq)
		}
	}
	tick.Stop()
	elapsed := time.Since(start)
	select {
	case <-done:
	case <-time.After(drain):
	}
	mu.Lock()
	defer mu.Unlock()
	res := result{rate: rate, sent: total}
	var lat []time.Duration
	stored := 0
	for i := range total {
		if count[i] == n {
			lat = append(lat, last[i].Sub(sent[i]))
		} else {
			res.lost++
		}
	}
	for _, c := range perNode {
		stored += c
	}
	res.stored = len(lat)
	res.perNode = float64(stored) / float64(n) / elapsed.Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		res.p50 = lat[len(lat)/2]
		res.p99 = lat[min(len(lat)-1, int(math.Ceil(float64(len(lat))*0.99))-1)]
		res.max = lat[len(lat)-1]
	}
	return res
}

// dialtrap nodes.

type dtNode struct {
	p2p    *peer.Node
	hub    *hub.Hub
	st     *sqlite.Store
	origin event.Origin
}

type dtNet struct {
	storedHook
	dir   string
	nodes []*dtNode
}

// timedStore reports each event of a batch once the store holds it.
type timedStore struct {
	*sqlite.Store
	node int
	net  *dtNet
}

func (t timedStore) Write(ctx context.Context, batch []*event.Event) error {
	if err := t.Store.Write(ctx, batch); err != nil {
		return err
	}
	for _, e := range batch {
		t.net.stored(t.node, seqOf(e.CalledNumber))
	}
	return nil
}

// Each event carries its sequence number in its called number, "00999" + seq.
func seqOf(number string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(number, "00999"))
	if err != nil {
		return -1
	}
	return n
}

func startDialtrap(n int, peerRate float64) (*dtNet, error) {
	dir, err := os.MkdirTemp("", "dialtrap-bench-p2p")
	if err != nil {
		return nil, err
	}
	net := &dtNet{dir: dir}
	var boot []string
	for i := range n {
		key, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, err
		}
		st, err := sqlite.Open(context.Background(), filepath.Join(dir, fmt.Sprint(i), "dialtrap.db"))
		if err != nil {
			return nil, err
		}
		h := hub.New(slog.New(slog.DiscardHandler))
		// As internal/node routes them: the store keeps peer events, the p2p sink never
		// gets them back.
		h.Add(timedStore{st, i, net}, hub.Options{Capacity: 1 << 15, MaxBatch: 5000, Policy: hub.Block, PeerEvents: true})
		p := peer.New(peer.Config{
			Key: key, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot,
			PerPeerRate: peerRate, PerPeerBurst: int(peerRate * 10),
			// Every node is there from the start: nothing to catch up (no Events, no window).
			Receive: func(e *event.Event, _ libpeer.ID) { h.Publish(e) },
		})
		h.Add(p, hub.Options{Capacity: 1 << 14, MaxBatch: 500})
		if err := h.Start(context.Background()); err != nil {
			return nil, err
		}
		if err := p.Start(context.Background()); err != nil {
			return nil, err
		}
		if i == 0 {
			boot = p.Addrs()[:1]
		}
		net.nodes = append(net.nodes, &dtNode{p2p: p, hub: h, st: st, origin: event.Origin{
			AppVersion: "bench", NodeID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Method: event.Responsive, Transport: event.UDP,
			Source: netip.MustParseAddrPort(fmt.Sprintf("192.0.2.%d:5070", 1+i%250)),
			Dest:   netip.MustParseAddrPort("198.51.100.1:5060"),
		}})
	}
	if err := waitMesh(n, func(i int) int { return len(net.nodes[i].p2p.TopicPeers()) }); err != nil {
		return nil, err
	}
	return net, nil
}

// waitMesh waits until each of n nodes has min(n-1, 4) topic peers, then lets the mesh settle.
func waitMesh(n int, topicPeers func(i int) int) error {
	want := min(n-1, 4)
	deadline := time.Now().Add(60 * time.Second)
	for i := range n {
		for topicPeers(i) < want {
			if time.Now().After(deadline) {
				return fmt.Errorf("the mesh of %d nodes did not form in 60 s", n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second)
	return nil
}

// storedHook holds the callback run sets for each step.
type storedHook struct {
	mu sync.RWMutex
	f  func(node, seq int)
}

func (h *storedHook) setStored(f func(node, seq int)) {
	h.mu.Lock()
	h.f = f
	h.mu.Unlock()
}

func (h *storedHook) stored(node, seq int) {
	h.mu.RLock()
	f := h.f
	h.mu.RUnlock()
	if f != nil {
		f(node, seq)
	}
}

func (d *dtNet) size() int { return len(d.nodes) }

// A scanner's INVITE, as big as real ones.
var invite = []byte("INVITE sip:00999@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-bench;rport\r\n" +
	"Max-Forwards: 70\r\nFrom: \"bench\" <sip:100@192.0.2.1>;tag=bench\r\nTo: <sip:00999@198.51.100.1>\r\n" +
	"Call-ID: bench@192.0.2.1\r\nCSeq: 1 INVITE\r\nContact: <sip:100@192.0.2.1:5070>\r\nUser-Agent: friendly-scanner\r\n" +
	"Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n")

func (d *dtNet) publish(i, seq int) {
	nd := d.nodes[i]
	nd.hub.Publish(event.New(nd.origin, time.Now(), "00999"+strconv.Itoa(seq), "INVITE", "friendly-scanner", invite))
}

func (d *dtNet) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, nd := range d.nodes {
		nd.hub.Close(ctx)
		nd.p2p.Close(ctx)
		nd.st.Close()
	}
	os.RemoveAll(d.dir)
}

// Bare gossipsub: default parameters, one topic, each node connected to node 0 and to up to
// five random earlier nodes (about what the DHT discovery gives the dialtrap nodes).

type bareNet struct {
	hosts  []host.Host
	topics []*pubsub.Topic
	cancel context.CancelFunc
	storedHook
	wg sync.WaitGroup
}

func startBare(n int) (*bareNet, error) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &bareNet{cancel: cancel}
	for i := range n {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			return nil, err
		}
		ps, err := pubsub.NewGossipSub(ctx, h)
		if err != nil {
			return nil, err
		}
		t, err := ps.Join(peer.Topic)
		if err != nil {
			return nil, err
		}
		sub, err := t.Subscribe()
		if err != nil {
			return nil, err
		}
		targets := append([]int{0}, mrand.Perm(max(i, 1))[:min(i, 5)]...)
		for _, j := range targets {
			if j < i {
				h.Connect(ctx, libpeer.AddrInfo{ID: b.hosts[j].ID(), Addrs: b.hosts[j].Addrs()})
			}
		}
		b.hosts, b.topics = append(b.hosts, h), append(b.topics, t)
		b.wg.Add(1)
		go func(node int) {
			defer b.wg.Done()
			for {
				m, err := sub.Next(ctx)
				if err != nil {
					return
				}
				if len(m.Data) >= 8 {
					b.stored(node, int(binary.BigEndian.Uint64(m.Data)))
				}
			}
		}(i)
	}
	if err := waitMesh(n, func(i int) int { return len(b.topics[i].ListPeers()) }); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *bareNet) size() int { return len(b.hosts) }

// publish sends a message as large as a sealed event, and counts it at the publisher (its own
// subscription delivers it too).
func (b *bareNet) publish(i, seq int) {
	msg := make([]byte, 8, 1200)
	binary.BigEndian.PutUint64(msg, uint64(seq))
	msg = append(msg, invite...)
	msg = append(msg, make([]byte, 1200-len(msg))...)
	b.topics[i].Publish(context.Background(), msg)
}

func (b *bareNet) close() {
	b.cancel()
	for _, t := range b.topics {
		t.Close()
	}
	for _, h := range b.hosts {
		h.Close()
	}
	b.wg.Wait()
}
