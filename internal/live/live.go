// Package live streams the node's new events to browsers as they are captured: a hub sink
// that fans each batch out to a bounded set of subscribers, and the Server-Sent Events
// handler behind GET /events/live that the dashboard's feed reads. Every queue here is
// bounded in events and in bytes: a slow or stalled browser loses its own oldest events
// (counted, and told to it), never slows the hub, capture or the other browsers.
package live

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

// Defaults of Options.
const (
	DefaultMaxSubscribers = 32
	DefaultQueueEvents    = 512
	DefaultQueueBytes     = 1 << 20
	DefaultKeepAlive      = 15 * time.Second
)

// writeWindow is how long one write to a browser may take: one that stops reading is cut
// off then, instead of holding its connection and subscription for ever.
const writeWindow = 30 * time.Second

// Errors of Subscribe.
var (
	ErrTooMany = errors.New("live: too many subscribers")
	ErrClosed  = errors.New("live: closed")
)

// Options tune a Broadcaster; zero values take the defaults.
type Options struct {
	MaxSubscribers int // open streams at once; more are refused (503)
	QueueEvents    int // events queued per subscriber before its oldest are dropped
	QueueBytes     int // bytes queued per subscriber (encoded messages) likewise
	KeepAlive      time.Duration
	// Country, when set, names the country of a source IP; the message then carries it as
	// "source_country" after the event's keys (the event itself has no country).
	Country func(ip string) string
}

// Stats are the broadcaster's counters.
type Stats struct {
	Subscribers int    // open now
	Sent        uint64 // events handed to subscribers' queues
	Dropped     uint64 // events dropped from full queues, all subscribers together
	Refused     uint64 // subscriptions refused: too many open
}

// Broadcaster is a hub sink (hub.Sink) that fans events out to subscribers. Its zero value is
// not usable: call New.
type Broadcaster struct {
	opt     Options
	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	closed  bool
	sent    atomic.Uint64
	dropped atomic.Uint64
	refused atomic.Uint64
	// watching is len(subs), readable without the lock (Watching).
	watching atomic.Int32
}

// New returns a broadcaster with no subscribers.
func New(o Options) *Broadcaster {
	if o.MaxSubscribers <= 0 {
		o.MaxSubscribers = DefaultMaxSubscribers
	}
	if o.QueueEvents <= 0 {
		o.QueueEvents = DefaultQueueEvents
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	return &Broadcaster{opt: o, subs: map[*Subscription]struct{}{}}
}

// Watching reports whether anyone is subscribed: the node's hub.Options.Accept, so that with
// no dashboard open the feed costs capture nothing.
func (b *Broadcaster) Watching(*event.Event) bool { return b.watching.Load() > 0 }

// Name is the sink's name in the hub's counters and logs.
func (b *Broadcaster) Name() string { return "live" }

// Write hands a batch to every subscriber. It never blocks on a subscriber and never fails:
// a browser that cannot keep up loses its oldest events. With no subscriber it encodes
// nothing.
func (b *Broadcaster) Write(_ context.Context, batch []*event.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) == 0 {
		return nil
	}
	for _, e := range batch {
		m, err := b.message(e)
		if err != nil {
			continue // an event JSON cannot encode is no reason to hold the others
		}
		for s := range b.subs {
			if s.push(m) {
				b.dropped.Add(1)
			}
		}
		b.sent.Add(1)
	}
	return nil
}

// message renders one event as an SSE message. It is shared by every subscriber's queue,
// read-only.
func (b *Broadcaster) message(e *event.Event) ([]byte, error) {
	m := make([]byte, 0, 640+len(e.SIPMessage))
	m = append(m, "id: "...)
	m = append(m, e.UUID...)
	m = append(m, "\nevent: probe\ndata: "...)
	m, err := e.AppendJSON(m)
	if err != nil {
		return nil, err
	}
	if b.opt.Country != nil {
		// Compact JSON ends with '}': the key goes in before it. Country codes are [A-Z]{2}
		// but are quoted like any string all the same.
		m = append(m[:len(m)-1], `,"source_country":`...)
		m = strconv.AppendQuote(m, b.opt.Country(e.SourceIP))
		m = append(m, '}')
	}
	// The compact JSON holds no raw newline, so it is one data line.
	return append(m, "\n\n"...), nil
}

// Subscribe opens a subscription; the caller must Close it.
func (b *Broadcaster) Subscribe() (*Subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if len(b.subs) >= b.opt.MaxSubscribers {
		b.refused.Add(1)
		return nil, ErrTooMany
	}
	s := &Subscription{b: b, ring: make([][]byte, b.opt.QueueEvents), maxBytes: b.opt.QueueBytes,
		wake: make(chan struct{}, 1), ended: make(chan struct{})}
	b.subs[s] = struct{}{}
	b.watching.Store(int32(len(b.subs)))
	return s, nil
}

// Close ends every subscription (their streams end) and refuses new ones.
func (b *Broadcaster) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for s := range b.subs {
		close(s.ended)
		delete(b.subs, s)
	}
	b.watching.Store(0)
}

// Stats returns the counters.
func (b *Broadcaster) Stats() Stats {
	b.mu.Lock()
	n := len(b.subs)
	b.mu.Unlock()
	return Stats{Subscribers: n, Sent: b.sent.Load(), Dropped: b.dropped.Load(), Refused: b.refused.Load()}
}

// Subscription is one reader's bounded queue of messages.
type Subscription struct {
	b        *Broadcaster
	mu       sync.Mutex
	ring     [][]byte // a ring of len(ring) slots: head is the oldest, n are queued
	head, n  int
	bytes    int
	maxBytes int
	dropped  uint64
	wake     chan struct{} // a message was queued (capacity 1: wakes coalesce)
	ended    chan struct{} // closed when the broadcaster closes
	once     sync.Once
}

// push queues m, dropping the oldest messages while the queue is over its bounds; it
// reports whether any was dropped. A message larger than the byte bound alone is still
// queued alone: the count of bytes bounds what waits, and one event is at most 64 KiB and
// change.
func (s *Subscription) push(m []byte) (dropped bool) {
	s.mu.Lock()
	dropped = s.pushLocked(m)
	s.mu.Unlock()
	s.wakeUp()
	return dropped
}

// pushLocked queues m, dropping the oldest messages to make room; s.mu is held.
func (s *Subscription) pushLocked(m []byte) (dropped bool) {
	for s.n > 0 && (s.n == len(s.ring) || s.bytes+len(m) > s.maxBytes) {
		old := s.ring[s.head]
		s.ring[s.head] = nil
		s.head = (s.head + 1) % len(s.ring)
		s.n--
		s.bytes -= len(old)
		s.dropped++
		dropped = true
	}
	s.ring[(s.head+s.n)%len(s.ring)] = m
	s.n++
	s.bytes += len(m)
	return dropped
}

// wakeUp tells the reader that messages wait (once, however many came).
func (s *Subscription) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Take appends the queued messages to dst, oldest first, empties the queue, and returns
// dst and how many messages this subscription has dropped so far.
func (s *Subscription) Take(dst [][]byte) ([][]byte, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ; s.n > 0; s.n-- {
		dst = append(dst, s.ring[s.head])
		s.ring[s.head] = nil
		s.head = (s.head + 1) % len(s.ring)
	}
	s.bytes = 0
	return dst, s.dropped
}

// Wake receives a value after messages were queued.
func (s *Subscription) Wake() <-chan struct{} { return s.wake }

// Ended is closed when the broadcaster closes.
func (s *Subscription) Ended() <-chan struct{} { return s.ended }

// Close ends the subscription; it may be called more than once.
func (s *Subscription) Close() {
	s.once.Do(func() {
		b := s.b
		b.mu.Lock()
		delete(b.subs, s)
		b.watching.Store(int32(len(b.subs)))
		b.mu.Unlock()
	})
}

// Serve streams new events to one client as text/event-stream until the client goes, done
// is closed (the server shuts down) or the broadcaster closes. Each event is a message
// "event: probe" whose data is the event's JSON line; a comment line every KeepAlive keeps
// proxies and the browser from timing out, and "event: dropped" (data {"dropped": N}) tells
// the client how many events its queue lost so far when that grew. Beyond MaxSubscribers it
// answers 503. Authentication is the caller's.
func (b *Broadcaster) Serve(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
	sub, err := b.Subscribe()
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "30")
		msg := "Too many live streams are open; try again later."
		if errors.Is(err, ErrClosed) {
			msg = "The node is shutting down."
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("{\n  \"error\": \"" + msg + "\"\n}"))
		return
	}
	defer sub.Close()
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // proxies that buffer (nginx) would hold the events back
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	// Every write gets its own window: the server's WriteTimeout would end a healthy stream.
	send := func(p []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(writeWindow)) // unsupported only in tests' writers
		if _, err := w.Write(p); err != nil {
			return err
		}
		return rc.Flush()
	}
	// retry: how long EventSource-like clients wait before reconnecting.
	if send([]byte(": dialtrap live feed\nretry: 3000\n\n")) != nil {
		return
	}
	keep := time.NewTicker(b.opt.KeepAlive)
	defer keep.Stop()
	var msgs [][]byte
	var reported uint64
	buf := make([]byte, 0, 4096)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-done:
			return
		case <-sub.Ended():
			return
		case <-keep.C:
			if send([]byte(": keep-alive\n\n")) != nil {
				return
			}
		case <-sub.Wake():
			var dropped uint64
			msgs, dropped = sub.Take(msgs[:0])
			buf = buf[:0]
			if dropped != reported {
				reported = dropped
				buf = append(buf, "event: dropped\ndata: {\"dropped\": "...)
				buf = strconv.AppendUint(buf, dropped, 10)
				buf = append(buf, "}\n\n"...)
			}
			for i, m := range msgs {
				buf = append(buf, m...)
				msgs[i] = nil
			}
			if len(buf) > 0 && send(buf) != nil {
				return
			}
			if cap(buf) > 1<<20 {
				buf = make([]byte, 0, 4096) // one burst of large events need not stay held
			}
		}
	}
}
