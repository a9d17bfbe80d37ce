package opendht

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	ReasonRate      = "rate"      // over --opendht-rate
	ReasonBusy      = "busy"      // arrived while the checks were queue-full
	ReasonOwn       = "own"       // this node's own value coming back
	ReasonDuplicate = "duplicate" // an event_uuid received before (OpenDHT delivers again)
)

const (
	maxAge      = 30 * 24 * time.Hour // as peers: no backdated reports
	maxFuture   = 5 * time.Minute
	maxSeen     = 1 << 16 // event_uuids remembered for duplicates
	queueValues = 1024    // values waiting for the checks
)

// Config says what the bridge does with what it receives and sends.
type Config struct {
	// NodeID is this node's created_by_node_id: its own values coming back are refused.
	NodeID string
	// Rate is how many events a second the whole network may bring (bursts of ten seconds'
	// worth); the excess is refused, counted. Node ids cost nothing to invent, so no limit
	// per node id would hold a flood back: this is the bound on what OpenDHT may write here.
	Rate float64
	// Gate holds events until their address or number is known here. Every value counts as
	// one source, "opendht": their node ids are the writer's to choose, so they cannot count
	// as distinct reporters.
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
	cfg    Config
	dht    DHT
	limit  *rate.Limiter
	values chan []byte // from the DHT's thread to the goroutine that checks them
	done   chan struct{}

	mu       sync.Mutex
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
		cfg.Rate = DefaultRate
	}
	return &Bridge{cfg: cfg, dht: d,
		limit:  rate.NewLimiter(rate.Limit(cfg.Rate), max(int(cfg.Rate*10), 1)),
		values: make(chan []byte, queueValues), done: make(chan struct{}),
		seen: map[string]struct{}{}, seenRing: make([]string, maxSeen), refused: map[string]uint64{}}
}

// Start listens under Key. The DHT's thread only queues each value (a full queue drops it,
// counted as "busy"): OpenDHT holds its lock while it calls back, so the checks, the store
// and the hub run on a goroutine of their own, never on that thread.
func (b *Bridge) Start() {
	go func() {
		defer close(b.done)
		for v := range b.values {
			b.Handle(v)
		}
	}()
	b.dht.Listen(func(v []byte) {
		select {
		case b.values <- v:
		default:
			b.received.Add(1)
			b.refuse(ReasonBusy)
		}
	})
}

// Close leaves the network, within ctx: the DHT's threads are joined in the background.
func (b *Bridge) Close(ctx context.Context) error {
	closed := make(chan struct{})
	go func() {
		b.dht.Close() // no callback comes after it
		close(b.values)
		close(closed)
	}()
	select {
	case <-closed:
	case <-ctx.Done():
		return fmt.Errorf("opendht: leaving the network: %w", ctx.Err())
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("opendht: checking the last values: %w", ctx.Err())
	}
}

// Handle checks one value and, when it passes, hands the events the trust gate lets through
// to Receive.
func (b *Bridge) Handle(data []byte) {
	b.received.Add(1)
	e, reason := b.open(data)
	if reason != "" {
		b.refuse(reason)
		b.cfg.Log.Debug("opendht: value refused", "reason", reason, "bytes", len(data))
		return
	}
	for _, ev := range b.cfg.Gate.Admit(e, Provenance) {
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
	rec, ok := decodeObject(data)
	if !ok {
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
	// A repeat is told apart before the rate is charged, and remembered only once the rate
	// let the value in: a value refused for rate and delivered again later is judged again.
	if b.seenBefore(e.UUID) {
		return nil, ReasonDuplicate
	}
	if !b.limit.Allow() {
		return nil, ReasonRate
	}
	b.remember(e.UUID)
	// Nobody signed it: it proves nothing about its source, and what the reference never
	// sends (a tool, payloads, a length, repeats) is not taken from a stranger either.
	e.SourceVerified, e.RepeatCount, e.SIPMessageLength = false, 0, 0
	e.Tool, e.UASpoofed, e.Payload = "", false, nil
	e.FromPeer, e.Trusted, e.Sealed = true, false, nil // the gate sets Peer to Provenance
	return e, ""
}

// decodeObject reads one JSON object and nothing after it but white space, refusing a key
// given twice (which parsers resolve differently: the reference's might read the other one).
func decodeObject(data []byte) (eventio.Record, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	rec := eventio.Record{}
	for dec.More() {
		t, err := dec.Token()
		k, isKey := t.(string)
		if err != nil || !isKey {
			return nil, false
		}
		if _, dup := rec[k]; dup {
			return nil, false
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		rec[k] = v
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, false
	}
	rest := data[dec.InputOffset():]
	return rec, len(bytes.TrimSpace(rest)) == 0
}

// IsFrom reports whether e came from OpenDHT.
func IsFrom(e *event.Event) bool { return e.FromPeer && e.Peer == Provenance }

func reasonOf(err error) string {
	if r := event.ReasonOf(err); r != "" {
		return r
	}
	if strings.HasPrefix(err.Error(), "event_timestamp") { // eventio.ParseTimestamp's refusals
		return ReasonTime
	}
	return ReasonSchema
}

// seenBefore says whether an event_uuid was accepted before.
func (b *Bridge) seenBefore(uuid string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.seen[uuid]
	return ok
}

// remember keeps an accepted event_uuid, the oldest of maxSeen going.
func (b *Bridge) remember(uuid string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old := b.seenRing[b.seenNext]; old != "" {
		delete(b.seen, old)
	}
	b.seenRing[b.seenNext] = uuid
	b.seenNext = (b.seenNext + 1) % maxSeen
	b.seen[uuid] = struct{}{}
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

// Value is an event as the reference's nodes put it: its 13 keys, bare addresses. It is the
// event encoder's output cut before the keys dialtrap appends (a quote inside a value is
// escaped, so the first `,"source_port":` is the key itself).
func Value(e *event.Event) ([]byte, error) {
	b, err := e.AppendJSON(nil)
	if err != nil {
		return nil, err
	}
	i := bytes.Index(b, []byte(`,"source_port":`))
	if i < 0 {
		return nil, errors.New("opendht: the event encoder wrote no source_port")
	}
	return append(b[:i], '}'), nil
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
