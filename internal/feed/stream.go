package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// The change stream (GET /feeds/stream) is newline-delimited JSON, one Msg a line:
//
//	{"op":"add","ip":"203.0.113.9","timeout":86399}   put in the set (again: a new timeout)
//	{"op":"del","ip":"203.0.113.9"}                   its TTL ran out
//	{"op":"sync","cursor":"…","full":true,"time":"…"} the set as of cursor was sent
//	{"op":"cursor","cursor":"…"}                      the changes before it were sent
//	{"op":"heartbeat","cursor":"…","time":"…"}        nothing changed (an idle proxy keeps the line)
//
// A client that reconnects with ?cursor= (the last one it read) gets only what changed since,
// expiries included; an unknown cursor (another database, a future sequence) gets the whole
// set again, with full true.

// Stream operations.
const (
	OpAdd       = "add"
	OpDel       = "del"
	OpSync      = "sync"
	OpCursor    = "cursor"
	OpHeartbeat = "heartbeat"
)

// Msg is one line of the change stream.
type Msg struct {
	Op      string `json:"op"`
	IP      string `json:"ip,omitempty"`
	Timeout int64  `json:"timeout,omitempty"` // seconds left; absent: no expiry
	Cursor  string `json:"cursor,omitempty"`
	Full    bool   `json:"full,omitempty"`
	Time    string `json:"time,omitempty"` // the node's clock, event_timestamp layout
}

// Cursor is a position in a store's changes: the write sequence sent up to, the node's clock
// then (expiries after it are still to come), and which selection it belongs to (a hash of
// Query.Selection: a cursor of other filters would resume the wrong set).
type Cursor struct {
	Epoch     int64
	Seq       int64
	Time      time.Time
	Selection uint32
}

func (c Cursor) String() string {
	return fmt.Sprintf("%d.%d.%d.%d", c.Epoch, c.Seq, c.Time.UnixMilli(), c.Selection)
}

// ParseCursor reads a cursor; ok is false for anything else.
func ParseCursor(s string) (c Cursor, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return c, false
	}
	var n [4]int64
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return c, false
		}
		n[i] = v
	}
	if n[3] > math.MaxUint32 {
		return c, false
	}
	return Cursor{Epoch: n[0], Seq: n[1], Time: time.UnixMilli(n[2]), Selection: uint32(n[3])}, true
}

// selectionHash is the Selection of a cursor for q.
func selectionHash(q Query) uint32 {
	h := fnv.New32a()
	h.Write([]byte(q.Selection))
	return h.Sum32()
}

// StreamSource is what the stream reads (the store).
type StreamSource interface {
	Pager
	ChangeSeq(ctx context.Context) (epoch, seq int64, err error)
}

// StreamOptions tune Serve.
type StreamOptions struct {
	Query     Query  // List must be store.IPAddresses
	Cursor    string // where the client left off, or ""
	Guards    Guards
	Heartbeat time.Duration // a line at least this often (default 15 s)
	Poll      time.Duration // how often the store is asked for changes (default 250 ms)
	// ExpiryEvery is how often it is asked for keys whose TTL ran out (default 1 s).
	ExpiryEvery time.Duration
	Now         func() time.Time
	Done        <-chan struct{} // closed when the server shuts down
	// Changes, when set, reads the change sequence for every stream at once (one query a
	// poll however many streams are open); else each stream asks the store every Poll.
	Changes *Watcher
	// Flush sends what was written to the client; Progress is called after each flush (the
	// API extends its write deadline while the client reads).
	Flush    func() error
	Progress func()
}

// ErrEpoch ends a stream whose store was replaced under it (the client starts over).
var ErrEpoch = errors.New("the node's database changed: reconnect for the whole set")

// Serve writes the change stream to w until ctx ends or o.Done is closed (nil), or a write
// fails.
func Serve(ctx context.Context, w io.Writer, src StreamSource, o StreamOptions) (err error) {
	defer func() {
		if ctx.Err() != nil {
			err = nil // ended as asked (the client left, or the caller stopped it) mid-query
		}
	}()
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.ExpiryEvery <= 0 {
		o.ExpiryEvery = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &streamer{w: w, src: src, o: o, enc: json.NewEncoder(w)}
	epoch, seq, err := src.ChangeSeq(ctx)
	if err != nil {
		return err
	}
	now := o.Now()
	sel := selectionHash(o.Query)
	from, resume := ParseCursor(o.Cursor)
	resume = resume && from.Epoch == epoch && from.Seq <= seq && !from.Time.After(now) && from.Selection == sel
	if resume {
		if err := s.changes(ctx, from, seq, now, now); err != nil {
			return err
		}
	} else if err := s.whole(ctx, now); err != nil {
		return err
	}
	cur := Cursor{epoch, seq, now, sel}
	if err := s.send(Msg{Op: OpSync, Cursor: cur.String(), Full: !resume, Time: event.FormatTime(now)}); err != nil {
		return err
	}
	last := time.Now() // heartbeats keep real time, whatever clock the window is read by
	lastExpiry := last
	every := o.Poll
	if o.Changes != nil {
		every = o.ExpiryEvery // woken by the watcher for changes; the ticker is for expiries
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	if o.Changes != nil {
		defer o.Changes.Watch()()
	}
	for {
		var changed <-chan struct{}
		if o.Changes != nil {
			_, _, changed, _ = o.Changes.Current()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-o.Done:
			return nil
		case <-tick.C:
		case <-changed:
		}
		var e, seq int64
		if o.Changes != nil {
			e, seq, _, err = o.Changes.Current()
			if e == 0 && err == nil {
				continue // not read yet
			}
		} else {
			e, seq, err = src.ChangeSeq(ctx)
		}
		if err != nil {
			return err
		}
		if e != epoch {
			return ErrEpoch
		}
		// Expiries are looked for at most once a second (o.ExpiryEvery), new keys at every
		// poll that sees a new sequence: an idle stream costs the store little. The cursor's
		// time is that of the last look for expiries.
		now := o.Now()
		s.sent = 0
		until := cur.Time
		if time.Since(lastExpiry) >= o.ExpiryEvery {
			until, lastExpiry = now, time.Now()
		}
		if seq == cur.Seq && until == cur.Time {
			if time.Since(last) < o.Heartbeat {
				continue
			}
		} else if err := s.changes(ctx, cur, seq, until, now); err != nil {
			return err
		}
		cur = Cursor{epoch, seq, until, sel}
		switch {
		case s.sent > 0:
			err = s.send(Msg{Op: OpCursor, Cursor: cur.String()})
		case time.Since(last) >= o.Heartbeat:
			err = s.send(Msg{Op: OpHeartbeat, Cursor: cur.String(), Time: event.FormatTime(now)})
		default:
			continue
		}
		if err != nil {
			return err
		}
		last = time.Now()
	}
}

type streamer struct {
	w    io.Writer
	src  StreamSource
	o    StreamOptions
	enc  *json.Encoder
	sent int // add and del lines since the last cursor
}

// send writes a line and flushes it: stream lines are rare, and a firewall waits for them.
func (s *streamer) send(m Msg) error {
	if err := s.write(m); err != nil {
		return err
	}
	if s.o.Flush != nil {
		if err := s.o.Flush(); err != nil {
			return err
		}
	}
	if s.o.Progress != nil {
		s.o.Progress()
	}
	return nil
}

func (s *streamer) write(m Msg) error {
	if m.Op == OpAdd || m.Op == OpDel {
		s.sent++
	}
	return s.enc.Encode(m)
}

func (s *streamer) add(it store.FeedItem, now time.Time) error {
	key, ok := s.o.Guards.allowed(store.IPAddresses, it.Key)
	if !ok {
		return nil
	}
	return s.write(Msg{Op: OpAdd, IP: key, Timeout: int64(s.o.Query.Timeout(it.LastSeen, now) / time.Second)})
}

// whole sends every key the query selects now.
func (s *streamer) whole(ctx context.Context, now time.Time) error {
	return s.pages(ctx, s.o.Query.Live(now), store.ByKey, store.FeedItem{}, func(it store.FeedItem) error {
		return s.add(it, now)
	})
}

// changes sends the keys written after cursor c (as live at now), and those whose TTL ran out
// between c's time and until.
func (s *streamer) changes(ctx context.Context, c Cursor, seq int64, until, now time.Time) error {
	if seq > c.Seq {
		err := s.pages(ctx, s.o.Query.Live(now), store.BySeq, store.FeedItem{Seq: c.Seq + 1}, func(it store.FeedItem) error {
			return s.add(it, now)
		})
		if err != nil {
			return err
		}
	}
	if ttl := s.o.Query.TTL; ttl > 0 && until.After(c.Time) {
		f := s.o.Query.Filter
		f.Since = max(f.Since, event.FormatTime(c.Time.Add(-ttl)))
		f.Until = event.FormatTime(until.Add(-ttl))
		return s.pages(ctx, f, store.ByLastSeen, store.FeedItem{}, func(it store.FeedItem) error {
			key, ok := s.o.Guards.allowed(store.IPAddresses, it.Key)
			if !ok {
				return nil
			}
			return s.write(Msg{Op: OpDel, IP: key})
		})
	}
	return nil
}

func (s *streamer) pages(ctx context.Context, f store.FeedFilter, o store.FeedOrder, after store.FeedItem, fn func(store.FeedItem) error) error {
	f.KeysOnly = true
	for {
		page, err := s.src.FeedPage(ctx, store.IPAddresses, f, o, after, pageSize)
		if err != nil {
			return err
		}
		for _, it := range page {
			if err := fn(it); err != nil {
				return err
			}
		}
		if len(page) < pageSize {
			return nil
		}
		after = page[len(page)-1]
		if s.o.Flush != nil {
			if err := s.o.Flush(); err != nil {
				return err
			}
		}
		if s.o.Progress != nil {
			s.o.Progress()
		}
	}
}

// Watcher reads a store's change sequence for all the streams of a server: one query a poll,
// however many streams are open, and a stream wakes only when the sequence moves.
type Watcher struct {
	src  StreamSource
	poll time.Duration

	mu         sync.Mutex
	epoch, seq int64
	err        error
	changed    chan struct{} // closed, and replaced, when epoch, seq or err change
	// watchers are the streams open; with none the watcher asks the store nothing (an idle
	// node does no work for streams nobody reads). wake is signalled when the first opens.
	watchers int
	wake     chan struct{}
	gen      int // counts the times the last stream ended (and the state was reset)
}

// NewWatcher returns a watcher of src that polls every poll (default 250 ms) once Run runs.
func NewWatcher(src StreamSource, poll time.Duration) *Watcher {
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	return &Watcher{src: src, poll: poll, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// Watch registers a stream: the watcher polls while at least one is registered. The stream
// calls the returned function when it ends.
func (w *Watcher) Watch() (done func()) {
	w.mu.Lock()
	w.watchers++
	first := w.watchers == 1
	w.mu.Unlock()
	if first {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return sync.OnceFunc(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.watchers--; w.watchers == 0 {
			// What it read goes stale while nobody watches: the next stream waits for a
			// fresh read (epoch 0 is "not read yet").
			w.epoch, w.seq, w.err = 0, 0, nil
			w.gen++
		}
	})
}

// Run polls until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		w.mu.Lock()
		idle := w.watchers == 0
		w.mu.Unlock()
		if idle {
			t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			t.Reset(w.poll)
			continue // the stream that woke it may have ended already
		}
		w.mu.Lock()
		gen := w.gen
		w.mu.Unlock()
		e, s, err := w.src.ChangeSeq(ctx)
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		// A read begun before the last stream ended is stale for the next one: dropped.
		if gen == w.gen && (e != w.epoch || s != w.seq || (err == nil) != (w.err == nil)) {
			w.epoch, w.seq, w.err = e, s, err
			close(w.changed)
			w.changed = make(chan struct{})
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Current returns the last sequence read (epoch 0 before the first), and a channel closed at
// the next change.
func (w *Watcher) Current() (epoch, seq int64, changed <-chan struct{}, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.epoch, w.seq, w.changed, w.err
}
