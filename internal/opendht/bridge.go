package opendht

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/eventio"
	"github.com/dialtrap/dialtrap/internal/peerinfo"
	"github.com/dialtrap/dialtrap/internal/trust"
)

// Reasons a value is refused; they are the labels of values_refused in /peers.
const (
	ReasonSize      = "size"             // over MaxValue
	ReasonSchema    = event.ReasonSchema // not a JSON object, or not an event
	ReasonTime      = event.ReasonTime   // older than 30 days, or ahead of the clock
	ReasonIP        = event.ReasonIP
	ReasonNumber    = event.ReasonNumber
	ReasonRate      = "rate"      // over the rate of its node id, or of the whole network
	ReasonOwn       = "own"       // this node's own value coming back
	ReasonDuplicate = "duplicate" // an event_uuid received before (OpenDHT delivers again)
)

const (
	maxAge    = 30 * 24 * time.Hour // as peers: no backdated reports
	maxFuture = 5 * time.Minute
	// maxLimiters bounds the per-node-id limiters; beyond it the table starts afresh.
	maxLimiters = 10000
	// networkFactor: the whole network may send this many times one node id's rate, since
	// node ids cost nothing to invent.
	networkFactor = 10
	maxSeen       = 1 << 16 // event_uuids remembered for duplicates
)

// Config says what the bridge does with what it receives and sends.
type Config struct {
	// NodeID is this node's created_by_node_id: its own values coming back are refused.
	NodeID string
	// Rate is how many events a second one created_by_node_id may bring (bursts of ten
	// seconds' worth); the excess is refused, counted.
	Rate float64
	// Gate holds events until enough distinct node ids reported their address or number.
	Gate *trust.Gate
	// Receive takes each event that passed, as a peer event (the hub).
	Receive func(*event.Event)
	Publish bool
	Relay   bool
	Log     *slog.Logger
	Now     func() time.Time
}

// Bridge checks what arrives from OpenDHT and publishes this node's events there. It is the
// hub's sink named "opendht" when Publish is set.
type Bridge struct {
	cfg Config
	dht DHT
	all *rate.Limiter

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	seen     map[string]struct{}
	seenRing []string
	seenNext int
	refused  map[string]uint64

	received, accepted, published, skipped atomic.Uint64
}

// New makes a bridge over an open DHT; Start begins listening.
func New(cfg Config, d DHT) *Bridge {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 200
	}
	burst := max(int(cfg.Rate*10), 1)
	return &Bridge{cfg: cfg, dht: d,
		all:      rate.NewLimiter(rate.Limit(cfg.Rate*networkFactor), burst*networkFactor),
		limiters: map[string]*rate.Limiter{}, seen: map[string]struct{}{},
		seenRing: make([]string, maxSeen), refused: map[string]uint64{}}
}

// Start listens under Key.
func (b *Bridge) Start() { b.dht.Listen(b.Handle) }

// Close leaves the network.
func (b *Bridge) Close(context.Context) error {
	b.dht.Close()
	return nil
}

// Handle checks one value and, when it passes, hands the events the trust gate lets through
// to Receive. It is called on the DHT's thread for every value put under Key.
func (b *Bridge) Handle(data []byte) {
	b.received.Add(1)
	e, reason := b.open(data)
	if reason != "" {
		b.refuse(reason)
		b.cfg.Log.Debug("opendht: value refused", "reason", reason, "bytes", len(data))
		return
	}
	for _, ev := range b.cfg.Gate.Admit(e, Source(e.NodeID)) {
		b.accepted.Add(1)
		b.cfg.Receive(ev)
	}
}

func (b *Bridge) refuse(reason string) {
	b.mu.Lock()
	b.refused[reason]++
	b.mu.Unlock()
}

// open reads a value as the reference writes it: one JSON object with its 13 keys (source_ip
// with or without a port), text without a trailing NUL, which is tolerated all the same.
func (b *Bridge) open(data []byte) (*event.Event, string) {
	if len(data) > MaxValue {
		return nil, ReasonSize
	}
	data = bytes.TrimRight(data, "\x00")
	rec := eventio.Record{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&rec); err != nil || dec.More() {
		return nil, ReasonSchema
	}
	e, err := eventio.Normalize(rec, data, time.UTC)
	if err != nil {
		return nil, reasonOf(err)
	}
	if err := event.Check(e, event.Rules{Now: b.cfg.Now(), MaxAge: maxAge, MaxFuture: maxFuture, Shared: true}); err != nil {
		return nil, reasonOf(err)
	}
	if e.NodeID == b.cfg.NodeID {
		return nil, ReasonOwn
	}
	if !b.firstSight(e.UUID) {
		return nil, ReasonDuplicate
	}
	if !b.allow(e.NodeID) {
		return nil, ReasonRate
	}
	// Nobody signed it: it proves nothing about its source, and it is a peer's report.
	e.SourceVerified, e.RepeatCount = false, 0
	e.FromPeer, e.Trusted, e.Sealed = true, false, nil // the gate sets Peer: Source(node id)
	return e, ""
}

// Source is the peer name an OpenDHT event carries (Event.Peer): "opendht:" and the
// reporting node's id, so that the store counts distinct reporters and anyone can tell
// where the event came from.
func Source(nodeID string) string { return Provenance + ":" + nodeID }

// IsFrom reports whether e came from OpenDHT.
func IsFrom(e *event.Event) bool { return e.FromPeer && strings.HasPrefix(e.Peer, Provenance+":") }

func reasonOf(err error) string {
	if r := event.ReasonOf(err); r != "" {
		return r
	}
	if strings.HasPrefix(err.Error(), "event_timestamp") { // eventio.ParseTimestamp's refusals
		return ReasonTime
	}
	return ReasonSchema
}

// firstSight remembers an event_uuid; false when it was seen before.
func (b *Bridge) firstSight(uuid string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen[uuid]; ok {
		return false
	}
	if old := b.seenRing[b.seenNext]; old != "" {
		delete(b.seen, old)
	}
	b.seenRing[b.seenNext] = uuid
	b.seenNext = (b.seenNext + 1) % maxSeen
	b.seen[uuid] = struct{}{}
	return true
}

func (b *Bridge) allow(nodeID string) bool {
	b.mu.Lock()
	l := b.limiters[nodeID]
	if l == nil {
		if len(b.limiters) >= maxLimiters {
			b.limiters = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(rate.Limit(b.cfg.Rate), max(int(b.cfg.Rate*10), 1))
		b.limiters[nodeID] = l
	}
	b.mu.Unlock()
	return l.Allow() && b.all.Allow()
}

// Name is the sink's name in the hub.
func (b *Bridge) Name() string { return "opendht" }

// Write puts this node's events under Key, in the reference's 13-key JSON (the hub gives it
// only events this node may share).
func (b *Bridge) Write(_ context.Context, batch []*event.Event) error {
	for _, e := range batch {
		v, err := Value(e)
		if err != nil || len(v) > MaxValue {
			b.skipped.Add(1)
			continue
		}
		b.dht.Put(v)
		b.published.Add(1)
	}
	return nil
}

// Value is an event as the reference's nodes put it: its 13 keys, bare addresses.
func Value(e *event.Event) ([]byte, error) {
	v := struct {
		AppName         string `json:"app_name"`
		AppVersion      string `json:"app_version"`
		Timestamp       string `json:"event_timestamp"`
		UUID            string `json:"event_uuid"`
		NodeID          string `json:"created_by_node_id"`
		CollectedMethod string `json:"collected_method"`
		Transport       string `json:"transport_type"`
		SourceIP        string `json:"source_ip"`
		DestinationIP   string `json:"destination_ip"`
		CalledNumber    string `json:"called_number"`
		SIPMethod       string `json:"sip_method"`
		SIPUserAgent    string `json:"sip_user_agent"`
		SIPMessage      string `json:"sip_message"`
	}{e.AppName, e.AppVersion, e.Timestamp, e.UUID, e.NodeID, e.CollectedMethod, e.Transport,
		e.SourceIP, e.DestinationIP, e.CalledNumber, e.SIPMethod, e.SIPUserAgent, e.SIPMessage}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// Report is the OpenDHT part of /peers.
func (b *Bridge) Report() *peerinfo.OpenDHT {
	b.mu.Lock()
	refused := make(map[string]uint64, len(b.refused))
	for k, v := range b.refused {
		refused[k] = v
	}
	b.mu.Unlock()
	held, dropped := b.cfg.Gate.Pending()
	ok, failed := b.dht.Puts()
	return &peerinfo.OpenDHT{
		NodeID: b.dht.NodeID(), Port: b.dht.Port(), Key: Key, KeyHash: KeyHash, Nodes: b.dht.Nodes(),
		Received: b.received.Load(), Accepted: b.accepted.Load(), Refused: refused,
		Publish: b.cfg.Publish, Relay: b.cfg.Relay, Published: b.published.Load(),
		PutsConfirmed: ok, PutsFailed: failed,
		Pending: held, PendingDropped: dropped, MinSightings: b.cfg.Gate.MinSightings(),
	}
}
