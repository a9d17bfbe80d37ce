// Package hub fans events out from sources to sinks. Each sink has its own bounded queue and
// worker goroutine, so a slow or failing sink never slows capture or the other sinks: when a
// queue is full the oldest event is dropped and counted, except for a sink added with Block,
// whose publishers wait while it is healthy (the store: capture must not lose what it could keep).
// Whether a sink gets events learned from peers is decided here, per sink, and nowhere else.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtrap/dialtrap/internal/backoff"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/ratelog"
)

// Sink receives batches of events. Events are shared between sinks and must not be modified.
// A Write that fails is retried with the same batch after a back-off.
type Sink interface {
	Name() string
	Write(ctx context.Context, batch []*event.Event) error
}

// PartialError is returned by a sink that wrote the first Done events of a batch before
// failing; the hub retries only the rest, so those are not delivered twice.
type PartialError struct {
	Done int
	Err  error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("%v (after %d events of the batch)", e.Err, e.Done)
}

func (e *PartialError) Unwrap() error { return e.Err }

// BadEventError is returned by a sink that wrote the first Index events of a batch and can
// never write event Index (too large for its transport, impossible to encode): the hub counts
// that event as refused, logs it, and goes on with the rest at once. An error of the sink
// itself (disk full, connection lost) is any other error: the hub keeps the batch and retries.
type BadEventError struct {
	Index int
	Err   error
}

func (e *BadEventError) Error() string {
	return fmt.Sprintf("event %d of the batch refused for good: %v", e.Index, e.Err)
}

func (e *BadEventError) Unwrap() error { return e.Err }

// Policy says what Publish does when a sink's queue is full.
type Policy int

const (
	// DropOldest discards the oldest queued event to make room, and counts it.
	DropOldest Policy = iota
	// Block makes publishers wait for room while the sink is healthy. A sink whose last write
	// failed drops the oldest instead, since waiting on it would only stall capture.
	Block
)

// Options tune one sink's queue.
type Options struct {
	Capacity int // queued events; default 65536
	MaxBytes int // queued bytes (Event.Size); default 64 MiB
	MaxBatch int // events per Write; default 1000
	// MaxBatchBytes bounds a Write in bytes too (Event.Size; at least one event each); 0 for
	// no bound. The store's transactions, and so its WAL between checkpoints, stay small
	// when the queue is full of 64 KiB junk.
	MaxBatchBytes int
	Policy        Policy // default DropOldest
	// Linger is how long an event that finds the queue empty waits for others to be written
	// with it: the worker wakes when Linger has passed, when a whole batch (MaxBatch events
	// or MaxBatchBytes) is queued, or when the hub closes. 0 writes at once. At a few events
	// a second most of a write is fixed cost (waking the worker, a transaction's commit, a
	// system call): a short linger shares it among the events of the window. An event that
	// comes more than Linger after the one before is written at once: at that rate there is
	// nothing to share the write with.
	Linger time.Duration
	// PeerEvents lets events learned from peers (Event.FromPeer) into this sink's queue. Off by
	// default: a sink gets only what this node captured unless its owner decides otherwise.
	PeerEvents bool
	// Accept, when set, is asked about each event (after PeerEvents): only those it accepts
	// enter the queue. Skipped events are not counted as dropped.
	Accept func(*event.Event) bool
}

const msgQueueFull = "sink queue full: dropping oldest events"

// retry is the back-off between attempts at a failed Write.
var retry = backoff.Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second}

// Stats are one sink's counters.
type Stats struct {
	Name      string
	Delivered uint64 // events written
	Dropped   uint64 // events discarded: queue full, or still failing at shutdown
	Refused   uint64 // events the sink can never write (BadEventError), skipped
	Failures  uint64 // failed Write calls (each retried)
	Queued    int
	// QueuedBytes is what the queued events hold (Event.Size).
	QueuedBytes int
}

// Hub is the meeting point of sources and sinks. Its lifecycle is New, Add for every sink,
// Start, Close; sources may publish from Start on (events published earlier wait in the
// queues).
type Hub struct {
	log       *slog.Logger
	queues    []*queue
	wg        sync.WaitGroup
	startOnce sync.Once
	started   atomic.Bool
	stop      chan struct{} // closed by Close: workers drain and exit
	closed    atomic.Bool
	drainCtx  atomic.Pointer[context.Context] // Close's context, bounding the final drain
}

// New returns an empty hub.
func New(log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{log: log, stop: make(chan struct{})}
}

// Add registers a sink. Every sink is added before Start: the list of queues is fixed from
// then on, so publishers read it without a lock.
func (h *Hub) Add(s Sink, o Options) {
	if h.started.Load() {
		panic("hub: Add after Start")
	}
	if o.Capacity <= 0 {
		o.Capacity = 1 << 16
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 20
	}
	q := &queue{sink: s, opts: o, ring: make([]*event.Event, o.Capacity), wake: make(chan struct{}, 1),
		log: ratelog.New(h.log, 10*time.Second)}
	if o.Linger > 0 {
		q.due = time.NewTimer(time.Hour)
		q.due.Stop()
	}
	q.healthy.Store(true)
	q.room = sync.NewCond(&q.mu)
	h.queues = append(h.queues, q)
}

// Start runs one worker per sink until Close.
func (h *Hub) Start(context.Context) error {
	h.startOnce.Do(func() {
		h.started.Store(true)
		for _, q := range h.queues {
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				h.run(q)
			}()
		}
	})
	return nil
}

// Publish hands e to every sink that takes it. It returns at once unless a Block sink is full
// and healthy.
func (h *Hub) Publish(e *event.Event) {
	if h.closed.Load() {
		return
	}
	for _, q := range h.queues {
		if e.FromPeer && !q.opts.PeerEvents || q.opts.Accept != nil && !q.opts.Accept(e) {
			continue
		}
		if q.push(e) {
			// Built only when it is logged: in a flood this runs for every dropped event.
			if n, ok := q.log.Allow(slog.LevelWarn, msgQueueFull); ok {
				q.log.Emit(slog.LevelWarn, msgQueueFull, n, "sink", q.sink.Name(),
					"dropped_total", q.dropped.Load(), "capacity", q.opts.Capacity)
			}
		}
	}
}

// Busy reports whether a sink added with Block has its queue more than half full (in events
// or bytes): publishers are about to wait on it. Sources that can fold or shed what they send
// ask it before they add more (internal/fold).
func (h *Hub) Busy() bool {
	for _, q := range h.queues {
		if q.opts.Policy != Block {
			continue
		}
		q.mu.Lock()
		busy := q.n > len(q.ring)/2 || q.bytes > q.opts.MaxBytes/2
		q.mu.Unlock()
		if busy {
			return true
		}
	}
	return false
}

// Stats returns the counters of every sink, in the order they were added.
func (h *Hub) Stats() []Stats {
	out := make([]Stats, 0, len(h.queues))
	for _, q := range h.queues {
		q.mu.Lock()
		n, bytes := q.n, q.bytes
		q.mu.Unlock()
		out = append(out, Stats{
			Name: q.sink.Name(), Delivered: q.delivered.Load(), Dropped: q.dropped.Load() + q.shutdownDropped.Load(),
			Refused: q.refused.Load(), Failures: q.failures.Load(), Queued: n, QueuedBytes: bytes,
		})
	}
	return out
}

// Close stops accepting events and waits until every queue is written out (it starts the
// workers if Start was never called, so nothing queued is lost). A sink that is still failing
// when ctx ends is given up: what it holds is counted as dropped and reported in the error. A
// healthy sink, however slow, is drained to the end.
func (h *Hub) Close(ctx context.Context) error {
	if h.closed.Swap(true) {
		return nil
	}
	h.Start(ctx)
	h.drainCtx.Store(&ctx)
	close(h.stop)
	for _, q := range h.queues {
		q.mu.Lock()
		q.room.Broadcast() // release publishers blocked on a full queue
		q.mu.Unlock()
		q.signal()
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		<-done // failing workers give up once ctx is done
	}
	var errs []error
	for _, q := range h.queues {
		// A publisher still running when Close began may have queued after the last take.
		q.shutdownDropped.Add(uint64(q.discardAll()))
		if d := q.shutdownDropped.Load(); d > 0 {
			errs = append(errs, fmt.Errorf("sink %s: %d events not written at shutdown", q.sink.Name(), d))
		}
	}
	return errors.Join(errs...)
}

func (h *Hub) run(q *queue) {
	failures := 0
	var batch []*event.Event
	var due <-chan time.Time // fires when the oldest queued event has lingered (Linger > 0)
	if q.due != nil {
		due = q.due.C
	}
	for {
		if batch == nil && (due == nil || q.batchQueued()) {
			batch = q.take()
		}
		if batch == nil {
			select {
			case <-q.wake: // events to write at once (a full batch, or Linger 0)
				if batch = q.take(); batch == nil {
					continue
				}
			case <-due:
				if batch = q.take(); batch == nil {
					continue
				}
			case <-h.stop:
				if batch = q.take(); batch == nil {
					return
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := q.sink.Write(ctx, batch)
		cancel()
		if err == nil {
			q.delivered.Add(uint64(len(batch)))
			q.healthy.Store(true)
			batch = nil
			failures = 0
			continue
		}
		if be := (*BadEventError)(nil); errors.As(err, &be) && be.Index >= 0 && be.Index < len(batch) {
			// One event the sink will never take: skip it, keep the queue moving.
			q.delivered.Add(uint64(be.Index))
			q.refused.Add(1)
			q.healthy.Store(true) // the sink works; one event was not for it
			failures = 0
			q.log.Warn("sink refused an event for good; it is skipped", "sink", q.sink.Name(),
				"refused_total", q.refused.Load(), "err", be.Err)
			if batch = batch[be.Index+1:]; len(batch) == 0 {
				batch = nil
			}
			continue
		}
		q.failures.Add(1)
		q.healthy.Store(false)
		// Publishers waiting for room would wait for the whole outage: wake them so that
		// they drop the oldest instead.
		q.mu.Lock()
		q.room.Broadcast()
		q.mu.Unlock()
		if pe := (*PartialError)(nil); errors.As(err, &pe) && pe.Done > 0 && pe.Done <= len(batch) {
			q.delivered.Add(uint64(pe.Done))
			batch = batch[pe.Done:]
			if len(batch) == 0 {
				batch = nil
				continue
			}
		}
		failures++
		wait := retry.Delay(failures)
		q.log.Warn("sink write failed; the batch is kept and retried", "sink", q.sink.Name(),
			"events", len(batch), "retry_in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-h.drainDone():
			// Shutting down and out of time: give up what this sink still holds.
			q.giveUp()
			q.shutdownDropped.Add(uint64(len(batch) + q.discardAll()))
			return
		}
	}
}

// drainDone is closed when Close's context ends; nil (never ready) before Close.
func (h *Hub) drainDone() <-chan struct{} {
	if ctx := h.drainCtx.Load(); ctx != nil {
		return (*ctx).Done()
	}
	return nil
}

type queue struct {
	sink Sink
	opts Options
	log  *ratelog.Logger // one per sink: a failing sink does not hide another's failures

	mu    sync.Mutex
	room  *sync.Cond // signalled when take frees space
	ring  []*event.Event
	head  int // index of the oldest event
	n     int
	bytes int // Event.Size of the queued events
	wake  chan struct{}
	// due is the linger timer (Linger > 0): armed when an event enters an empty queue, and
	// when a take leaves events behind.
	due      *time.Timer
	lastPush time.Time // when the last event was queued (Linger > 0)

	healthy         atomic.Bool
	delivered       atomic.Uint64
	dropped         atomic.Uint64
	refused         atomic.Uint64
	failures        atomic.Uint64
	shutdownDropped atomic.Uint64
	gaveUp          atomic.Bool
}

// push queues e and reports whether older events were dropped to make room. The queue is
// full when it holds Capacity events or when e would take it past MaxBytes (an event larger
// than MaxBytes alone still goes into an empty queue).
func (q *queue) push(e *event.Event) (dropped bool) {
	size := e.Size()
	q.mu.Lock()
	for q.full(size) && q.opts.Policy == Block && q.healthy.Load() && !q.isStopping() {
		q.room.Wait()
	}
	for q.full(size) {
		old := q.ring[q.head]
		q.ring[q.head] = nil
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		q.bytes -= old.Size()
		q.dropped.Add(1)
		dropped = true
	}
	q.ring[(q.head+q.n)%len(q.ring)] = e
	q.n++
	q.bytes += size
	var gap time.Duration
	if q.due != nil {
		now := time.Now()
		gap, q.lastPush = now.Sub(q.lastPush), now
	}
	switch {
	case q.due == nil, q.fullBatch():
		q.mu.Unlock()
		q.signal()
	case q.n == 1 && gap >= q.opts.Linger:
		// The event before came longer than a linger ago: the next one is not likely to
		// come within it either, and lingering would only add a wake-up to the write.
		q.mu.Unlock()
		q.signal()
	case q.n == 1:
		q.due.Reset(q.opts.Linger)
		q.mu.Unlock()
	default:
		q.mu.Unlock()
	}
	return dropped
}

// fullBatch reports whether a whole batch is queued, or the queue is half full (of large
// events, a batch may never fill it before it overflows): no reason to linger. Called with
// mu held.
func (q *queue) fullBatch() bool {
	return q.n >= q.opts.MaxBatch || q.opts.MaxBatchBytes > 0 && q.bytes >= q.opts.MaxBatchBytes ||
		2*q.n >= len(q.ring) || 2*q.bytes >= q.opts.MaxBytes
}

func (q *queue) batchQueued() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.fullBatch()
}

func (q *queue) full(size int) bool {
	return q.n == len(q.ring) || q.n > 0 && q.bytes+size > q.opts.MaxBytes
}

// isStopping is true once the worker gave up the sink; publishers must not wait on it then.
func (q *queue) isStopping() bool { return q.gaveUp.Load() }

func (q *queue) giveUp() {
	q.gaveUp.Store(true)
	q.mu.Lock()
	q.room.Broadcast()
	q.mu.Unlock()
}

// take removes the next batch, oldest first (MaxBatch events, and MaxBatchBytes when set, but
// at least one event); nil when empty.
func (q *queue) take() []*event.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return nil
	}
	batch := make([]*event.Event, 0, min(q.n, q.opts.MaxBatch))
	bytes := 0
	for q.n > 0 && len(batch) < q.opts.MaxBatch {
		e := q.ring[q.head]
		size := e.Size()
		if q.opts.MaxBatchBytes > 0 && len(batch) > 0 && bytes+size > q.opts.MaxBatchBytes {
			break
		}
		batch = append(batch, e)
		bytes += size
		q.bytes -= size
		q.ring[q.head] = nil
		q.head = (q.head + 1) % len(q.ring)
		q.n--
	}
	if q.due != nil && q.n > 0 {
		q.due.Reset(q.opts.Linger) // those left behind linger too, once
	}
	q.room.Broadcast()
	return batch
}

func (q *queue) discardAll() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.n
	clear(q.ring)
	q.head, q.n, q.bytes = 0, 0, 0
	q.room.Broadcast()
	return n
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
