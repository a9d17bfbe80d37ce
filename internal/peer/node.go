package peer

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	libpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	dutil "github.com/libp2p/go-libp2p/p2p/discovery/util"
	ma "github.com/multiformats/go-multiaddr"

	"golang.org/x/time/rate"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/trust"
)

// Topic is the gossipsub topic of bad-actor events.
const Topic = "dialtrap/bad-actors/1"

// dhtPrefix keeps the DHT apart from the public IPFS one.
const dhtPrefix = protocol.ID("/dialtrap")

// Config configures a Node.
type Config struct {
	Key         crypto.PrivKey
	ListenAddrs []string // multiaddrs
	Bootstrap   []string // multiaddrs with /p2p/<id>
	Limits      Limits
	// PerPeerRate and PerPeerBurst bound the events accepted from one originating node (per
	// second, and at once); beyond them its events are ignored (not relayed), not penalised.
	// Defaults 200/s and 2,000.
	PerPeerRate  float64
	PerPeerBurst int
	// Receive gets each event from another node that passed the checks and the trust
	// policy, with the peer ID that signed it. It must not block for long.
	Receive func(e *event.Event, from libpeer.ID)
	// Policy holds peer events until they count (--p2p-trust, --p2p-min-sightings).
	Policy Policy
	// Events serves peers catching up (see catchup.go); nil serves nothing.
	Events EventSource
	// Share, when set, decides which stored events catch-up serves (local policy: the same
	// that decides what is published); the others are skipped.
	Share func(*event.Event) bool
	// CatchupWindow is how far back a node asks its peers for events when it meets them;
	// 0 asks for nothing (the node still answers peers' requests).
	CatchupWindow time.Duration
	Log           *slog.Logger
}

// Policy says which peer events count at once and which wait for confirmation: a
// trust.Policy whose sources are peer IDs (see there for each field).
type Policy struct {
	Trusted         []libpeer.ID
	MinSightings    int
	Known           func(ip, number string) bool
	MaxPending      int
	MaxPendingBytes int
}

// gatePolicy is p for the trust gate, which names a peer by its ID's text form (what Event.Peer
// holds): one ID has one text form, so the gate tells peers apart as libp2p does.
func (p Policy) gatePolicy() trust.Policy {
	t := trust.Policy{Trusted: make([]string, len(p.Trusted)), MinSightings: p.MinSightings, Known: p.Known,
		MaxPending: p.MaxPending, MaxPendingBytes: p.MaxPendingBytes}
	for i, id := range p.Trusted {
		t.Trusted[i] = id.String()
	}
	return t
}

// Node is this node's place in the peer-to-peer network.
type Node struct {
	cfg    Config
	log    *slog.Logger
	host   host.Host
	dht    *dht.IpfsDHT
	ps     *pubsub.PubSub
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	self   libpeer.ID
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool

	published atomic.Uint64
	skipped   atomic.Uint64 // own events peers would refuse (too large, bad fields)
	received  atomic.Uint64
	mu        sync.Mutex
	rejected  map[string]uint64 // by reason
	scores    atomic.Value      // map[libpeer.ID]float64

	limitMu  sync.Mutex
	limiters map[libpeer.ID]*rate.Limiter

	gate  *trust.Gate
	drops drops
	seen  *seenEvents
	peers peerTable
	catch catchup
}

// maxLimiters bounds the per-originator limiter table; beyond it the table starts afresh
// (a flood of fresh identities gets no more than the burst each anyway).
const maxLimiters = 10000

// allow reports whether one more event from signer fits its rate.
func (n *Node) allow(signer libpeer.ID) bool {
	n.limitMu.Lock()
	defer n.limitMu.Unlock()
	l, ok := n.limiters[signer]
	if !ok {
		if len(n.limiters) >= maxLimiters {
			clear(n.limiters)
		}
		l = rate.NewLimiter(rate.Limit(n.cfg.PerPeerRate), n.cfg.PerPeerBurst)
		n.limiters[signer] = l
	}
	return l.Allow()
}

// New returns a node for cfg. Nothing listens and no goroutine runs before Start.
func New(cfg Config) *Node {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.PerPeerRate <= 0 {
		cfg.PerPeerRate = 200
	}
	if cfg.PerPeerBurst <= 0 {
		cfg.PerPeerBurst = 2000
	}
	return &Node{cfg: cfg, log: cfg.Log, cancel: func() {},
		rejected: map[string]uint64{}, limiters: map[libpeer.ID]*rate.Limiter{},
		gate: trust.New(cfg.Policy.gatePolicy()), seen: newSeenEvents(1 << 16), peers: peerTable{m: map[libpeer.ID]*peerCounters{}}}
}

// Start joins the network: listens, connects to the bootstrap peers, joins the DHT and the
// topic, and delivers accepted events to cfg.Receive until Close. Whatever Receive feeds must
// be ready before Start: events can arrive at once. On error the node is closed.
func (n *Node) Start(context.Context) (err error) {
	if n.cfg.Key == nil {
		return errors.New("p2p: no node key")
	}
	boot, err := parseBootstrap(n.cfg.Bootstrap)
	if err != nil {
		return err
	}
	h, err := libp2p.New(libp2p.Identity(n.cfg.Key), libp2p.ListenAddrStrings(n.cfg.ListenAddrs...))
	if err != nil {
		return fmt.Errorf("start libp2p on %v (is the port in use? set --p2p-addr): %w", n.cfg.ListenAddrs, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.host, n.self, n.cancel = h, h.ID(), cancel
	defer func() {
		if err != nil {
			n.Close(context.Background())
		}
	}()
	// Before any connection: a peer that meets this node asks for catch-up at once.
	n.startCatchup(ctx)
	n.dht, err = dht.New(h, dht.Mode(dht.ModeServer), dht.ProtocolPrefix(dhtPrefix), dht.BootstrapPeers(boot...))
	if err != nil {
		return fmt.Errorf("start the DHT: %w", err)
	}
	n.ps, err = pubsub.NewGossipSub(ctx, h, append(ProtocolOptions(),
		pubsub.WithMaxMessageSize(MaxEnvelope+4096),
		pubsub.WithValidateQueueSize(1024), // a burst from one peer does not crowd out the rest
		// Messages to a peer whose queue is full are dropped, not retried: 32 (the default)
		// loses events when a scan bursts hundreds a second (measured in bench/p2p).
		pubsub.WithPeerOutboundQueueSize(1024),
		pubsub.WithRawTracer(&n.drops),
		pubsub.WithPeerScore(scoreParams(n.appScore), scoreThresholds()),
		pubsub.WithPeerScoreInspect(func(m map[libpeer.ID]float64) { n.scores.Store(m) }, time.Second),
	)...)
	if err != nil {
		return fmt.Errorf("start gossipsub: %w", err)
	}
	if err := n.ps.RegisterTopicValidator(Topic, n.validate); err != nil {
		return err
	}
	if n.topic, err = n.ps.Join(Topic); err != nil {
		return err
	}
	// The reader hands events to the hub, which may pause it briefly (store back-pressure);
	// gossipsub drops what does not fit in this buffer meanwhile.
	if n.sub, err = n.topic.Subscribe(pubsub.WithBufferSize(8192)); err != nil {
		return err
	}
	for _, ai := range boot {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		if err := h.Connect(cctx, ai); err != nil {
			n.log.Warn("p2p: cannot reach a bootstrap peer; will keep trying through the DHT", "peer", ai.ID, "err", err)
		}
		ccancel()
	}
	if err := n.dht.Bootstrap(ctx); err != nil {
		return fmt.Errorf("bootstrap the DHT: %w", err)
	}
	n.wg.Add(2)
	go func() { defer n.wg.Done(); n.readLoop(ctx) }()
	go func() { defer n.wg.Done(); n.discover(ctx) }()
	return nil
}

// ProtocolOptions are the gossipsub settings every node of the network must share. Messages
// carry no gossipsub signature: the event inside is a signed envelope already, and a second
// signature by the same key would cost every node a second verification per message (half
// its CPU at a thousand events a second, measured in bench/p2p). Without a signature gossipsub
// has no sender and sequence number to name a message by, so the same sealed event is the
// same message by its hash, whoever forwards it.
func ProtocolOptions() []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithMessageIdFn(func(m *pb.Message) string {
			sum := sha256.Sum256(m.Data)
			return string(sum[:])
		}),
	}
}

// ParseBootstrap reads -b's multiaddrs, each ending in /p2p/<peer ID>.
func ParseBootstrap(addrs []string) ([]libpeer.AddrInfo, error) { return parseBootstrap(addrs) }

func parseBootstrap(addrs []string) ([]libpeer.AddrInfo, error) {
	var out []libpeer.AddrInfo
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %q is not a multiaddr (e.g. /ip4/192.0.2.1/tcp/4222/p2p/12D3Koo...): %w", a, err)
		}
		ai, err := libpeer.AddrInfoFromP2pAddr(m)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %q must end in /p2p/<peer ID>: %w", a, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// discover advertises the topic in the DHT and connects to peers found there, so nodes that
// know only a bootstrap peer find each other.
func (n *Node) discover(ctx context.Context) {
	rd := drouting.NewRoutingDiscovery(n.dht)
	for {
		dutil.Advertise(ctx, rd, Topic)
		if peers, err := rd.FindPeers(ctx, Topic); err == nil {
			for ai := range peers {
				if ai.ID == n.self || len(ai.Addrs) == 0 || n.host.Network().Connectedness(ai.ID) == network.Connected {
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				n.host.Connect(cctx, ai)
				cancel()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// validate runs inside gossipsub before a message is forwarded or delivered: a rejected
// message is neither, and counts against the peer that sent it (peer score).
func (n *Node) validate(_ context.Context, from libpeer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == n.self {
		return pubsub.ValidationAccept // our own publish
	}
	e, signer, err := n.accept(m.Data, from, true)
	switch {
	case err == nil:
		m.ValidatorData = received{e, signer}
		return pubsub.ValidationAccept
	case blameless(ReasonOf(err)):
		return pubsub.ValidationIgnore
	default:
		return pubsub.ValidationReject
	}
}

// blameless reports whether a refusal is no fault of the peer that delivered the message:
// an honest relay or catch-up server passes on such messages too.
func blameless(reason string) bool {
	switch reason {
	case ReasonOwn, ReasonRate, ReasonDuplicate, ReasonConflict:
		return true
	}
	return false
}

// accept opens data that peer from delivered (by gossip, or by catch-up when gossip is false)
// and applies every check; each refusal is counted by reason and against from.
func (n *Node) accept(data []byte, from libpeer.ID, gossip bool) (*event.Event, libpeer.ID, error) {
	e, signer, err := Open(data, time.Now(), n.cfg.Limits)
	switch {
	case err != nil:
	case signer == n.self:
		err = reject(ReasonOwn, "our own event")
	case gossip && !n.allow(signer):
		err = reject(ReasonRate, "over the rate of %s", signer)
	default:
		err = n.seen.add(e.UUID, data)
	}
	if err != nil {
		n.countReject(ReasonOf(err))
		n.peers.count(from, func(c *peerCounters) {
			if r := ReasonOf(err); r != ReasonDuplicate && r != ReasonOwn {
				c.rejected++
			}
		})
		return nil, "", err
	}
	e.Sealed = data
	n.peers.count(from, func(c *peerCounters) { c.received++ })
	return e, signer, nil
}

type received struct {
	e      *event.Event
	signer libpeer.ID
}

func (n *Node) countReject(reason string) {
	n.mu.Lock()
	n.rejected[reason]++
	n.mu.Unlock()
}

func (n *Node) readLoop(ctx context.Context) {
	for {
		m, err := n.sub.Next(ctx)
		if err != nil {
			return
		}
		r, ok := m.ValidatorData.(received)
		if !ok {
			continue // our own message
		}
		n.deliver(r.e, r.signer)
	}
}

// deliver passes a checked event through the trust policy to Receive.
func (n *Node) deliver(e *event.Event, signer libpeer.ID) {
	n.received.Add(1)
	for _, c := range n.gate.Admit(e, signer.String()) {
		if n.cfg.Receive != nil {
			from := signer
			if c != e { // released from the pending sightings: its own signer
				from, _ = libpeer.Decode(c.Peer)
			}
			n.cfg.Receive(c, from)
		}
	}
}

// Name implements hub.Sink.
func (n *Node) Name() string { return "p2p" }

// Write implements hub.Sink: it publishes the batch, this node's own events (the node never
// routes peer events here: they are never re-published). Events peers would refuse are
// skipped and counted.
func (n *Node) Write(ctx context.Context, batch []*event.Event) error {
	if n.topic == nil {
		return errors.New("p2p: not started")
	}
	for _, e := range batch {
		if err := check(e, time.Now(), n.cfg.Limits); err != nil {
			n.skipped.Add(1) // peers would refuse it and lower our score
			continue
		}
		data, err := Seal(e, n.cfg.Key)
		if err != nil || len(data) > MaxEnvelope {
			n.skipped.Add(1)
			continue
		}
		if err := n.topic.Publish(ctx, data); err != nil {
			return fmt.Errorf("publish to peers: %w", err)
		}
		n.published.Add(1)
	}
	return nil
}

// ID is this node's peer ID.
func (n *Node) ID() libpeer.ID { return n.self }

// Addrs are the addresses this node listens on, each with /p2p/<peer ID>; none before Start.
func (n *Node) Addrs() []string {
	if n.host == nil {
		return nil
	}
	var out []string
	for _, a := range n.host.Addrs() {
		out = append(out, a.String()+"/p2p/"+n.self.String())
	}
	return out
}

// TopicPeers are the peers this node exchanges events with now.
func (n *Node) TopicPeers() []libpeer.ID { return n.ps.ListPeers(Topic) }

// Stats are the node's counters.
type Stats struct {
	Published, Skipped, Received uint64
	Rejected                     map[string]uint64
	// Dropped counts messages gossipsub had no room for: "outbound" (a peer's send queue),
	// "validation" (the validation queue) and "delivery" (this node's reader).
	Dropped map[string]uint64
}

// Stats returns the counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	rej := make(map[string]uint64, len(n.rejected))
	for k, v := range n.rejected {
		rej[k] = v
	}
	n.mu.Unlock()
	return Stats{Published: n.published.Load(), Skipped: n.skipped.Load(), Received: n.received.Load(), Rejected: rej,
		Dropped: map[string]uint64{"outbound": n.drops.outbound.Load(), "validation": n.drops.validation.Load(),
			"delivery": n.drops.delivery.Load()}}
}

// Score returns gossipsub's latest score of p as this node sees it (updated every second).
func (n *Node) Score(p libpeer.ID) float64 {
	m, _ := n.scores.Load().(map[libpeer.ID]float64)
	return m[p]
}

// Close leaves the network; it is safe after a failed Start and more than once.
func (n *Node) Close(ctx context.Context) error {
	if n.host == nil || n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	if n.sub != nil {
		n.sub.Cancel()
	}
	if n.topic != nil {
		errs = append(errs, n.topic.Close())
	}
	n.cancel()
	if n.dht != nil {
		errs = append(errs, n.dht.Close())
	}
	errs = append(errs, n.host.Close())
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("p2p goroutines still running at shutdown: %w", ctx.Err()))
	}
	// Pieces that the cancel already stopped report context.Canceled: not a failure.
	errs = slices.DeleteFunc(errs, func(err error) bool { return errors.Is(err, context.Canceled) })
	return errors.Join(errs...)
}
