// Package storespool keeps capturing while the store is away. It wraps the store's hub sink:
// while the store takes writes they go straight to it; when a write fails (a database
// restarting, a network cut) the batch goes to a crash-safe spool on disk instead and the
// hub's queue keeps moving, so capture loses nothing. From then on every batch is appended to
// the spool, behind the ones already there, and a goroutine replays the spool into the store
// with back-off, oldest first; once it has caught up, writes go straight to the store again.
// Events thus reach the store in the order the hub gave them, and since stores write each
// event_uuid once, a batch replayed twice (a crash between the store's commit and the
// spool's ack) counts nothing twice.
//
// It is meant for a store that can go away (PostgreSQL); an embedded SQLite file on the same
// disk as the spool gains nothing from it.
package storespool

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
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/ratelog"
	"github.com/dialtrap/dialtrap/internal/spool"
)

// Config configures the wrapper.
type Config struct {
	Dir      string // the spool's directory, e.g. <data-dir>/store-spool; one process at a time
	MaxBytes int64  // the spool's cap on disk; when full, Write fails (the hub's queue holds, then drops)
	Flag     string // the option setting MaxBytes, named in errors; default --store-spool-max

	// MaxBatch and MaxBatchBytes bound one replayed write, in events and in spooled bytes (at
	// least one event each); defaults 1000 and 8 MiB.
	MaxBatch      int
	MaxBatchBytes int
	// Backoff is the wait between failed replays; default 250 ms doubling to 30 s, with jitter
	// so that a fleet of nodes does not hit a database coming back all in step.
	Backoff backoff.Policy
	// Timeout bounds one replayed write; default 30 s, as the hub's.
	Timeout time.Duration

	Log *slog.Logger
}

// Messages of the rate-limited warnings (ratelog keys).
const (
	msgSpooling = "store write failed: events go to the disk spool and are written when the store is back"
	msgFull     = "store spool full: events wait in memory and the oldest are dropped when that is full too; raise --store-spool-max or bring the store back"
	msgReplay   = "store still failing: the spool is replayed with back-off"
	msgRefused  = "store refused a spooled event for good; it is skipped"
	msgCorrupt  = "store spool: a record cannot be read back; it is skipped"
)

// Sink wraps a store's hub.Sink. Its lifecycle is New, Start, Close; Write works from New on.
type Sink struct {
	inner hub.Sink
	cfg   Config
	log   *slog.Logger
	warn  *ratelog.Logger // an outage lasts long: each warning at most once per 30 s
	spool *spool.Spool

	// mu serialises Write and the switch back to direct writes, so no batch passes another.
	mu       sync.Mutex
	spooling atomic.Bool // written under mu
	closed   bool

	kick      chan struct{} // wakes the replayer; capacity 1
	startOnce sync.Once
	stop      context.CancelFunc
	done      chan struct{} // closed when the replayer has returned
	closeOnce sync.Once
	closeErr  error

	spooled, replayed, fullRefusals, refused, corrupt, failures atomic.Uint64
}

// Stats are the wrapper's counters.
type Stats struct {
	Spooling bool   // batches go to the spool now (it holds events, or the last write failed)
	Pending  int64  // events in the spool not yet written to the store
	Bytes    int64  // the spool's size on disk
	Spooled  uint64 // events appended to the spool
	Replayed uint64 // events written from the spool into the store
	// FullRefusals counts writes refused because the spool was full (the hub retries them).
	FullRefusals uint64
	Refused      uint64 // spooled events the store refused for good (BadEventError), skipped
	Corrupt      uint64 // records that could not be read back, skipped
	Torn         uint64 // records cut at start: torn by a crash in the middle of their append
	Failures     uint64 // failed replay writes, each retried
}

// New opens the spool in cfg.Dir. Events a previous run left there are replayed from Start
// on, before any new one reaches the store.
func New(inner hub.Sink, cfg Config) (*Sink, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Flag == "" {
		cfg.Flag = "--store-spool-max"
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = 8 << 20
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 30 * time.Second, Jitter: true}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	sp, err := spool.Open(cfg.Dir, spool.Options{MaxBytes: cfg.MaxBytes, RefuseWhenFull: true,
		Name: "store spool", Flag: cfg.Flag, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	s := &Sink{inner: inner, cfg: cfg, log: cfg.Log, warn: ratelog.New(cfg.Log, 30*time.Second), spool: sp,
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	if p := sp.Stats().Pending; p > 0 {
		s.spooling.Store(true)
		s.log.Info("store spool: events left by the previous run are written to the store first", "events", p, "dir", cfg.Dir)
	}
	return s, nil
}

// Name is the inner sink's: the hub's counters and routes know the store by its own name.
func (s *Sink) Name() string { return s.inner.Name() }

// Write implements hub.Sink. It returns nil once the batch is in the store or in the spool;
// an error only when the store failed and the spool could not take all of the batch either
// (full, a disk error: a hub.PartialError when it took some), or for an event that the store
// refuses for good or that cannot be encoded (hub.BadEventError).
func (s *Sink) Write(ctx context.Context, batch []*event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("store spool: write after close: %w", spool.ErrClosed)
	}
	if s.spooling.Load() {
		if n, err := s.append(batch); err != nil {
			return hubError(0, n, err)
		}
		return nil
	}
	err := s.inner.Write(ctx, batch)
	if err == nil {
		return nil
	}
	if be := (*hub.BadEventError)(nil); errors.As(err, &be) {
		return err // the store works; that one event is not for it
	}
	done := 0
	if pe := (*hub.PartialError)(nil); errors.As(err, &pe) && pe.Done > 0 && pe.Done <= len(batch) {
		done = pe.Done
	}
	s.warn.Warn(msgSpooling, "store", s.inner.Name(), "events", len(batch)-done, "err", err)
	if n, serr := s.append(batch[done:]); serr != nil {
		return hubError(done, n, fmt.Errorf("%w; and the spool cannot take all of the batch: %w", err, serr))
	}
	return nil
}

// append spools batch behind what the spool holds, in one write, and returns how many of its
// events it took: all; or those before one that cannot be encoded (err is a
// *hub.BadEventError); or, the spool being nearly full, as many as fit (err wraps
// spool.ErrFull), so that it fills to its cap whatever the size of batches. Callers hold mu.
func (s *Sink) append(batch []*event.Event) (int, error) {
	recs := make([][]byte, 0, len(batch))
	var encErr error
	for _, e := range batch {
		r, err := appendRecord(nil, e)
		if err != nil {
			encErr = &hub.BadEventError{Index: len(recs), Err: fmt.Errorf("encode for the store spool: %w", err)}
			break
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return 0, encErr
	}
	err := s.spool.Append(recs)
	if errors.Is(err, spool.ErrFull) {
		s.fullRefusals.Add(1)
		st := s.spool.Stats()
		s.warn.Warn(msgFull, "events_in_spool", st.Pending, "bytes", st.Bytes, "max", s.cfg.MaxBytes,
			"refusals_total", s.fullRefusals.Load())
		// Only this goroutine appends (mu) and the replay only frees room: what fits now fits.
		fit, size := 0, st.Bytes
		for _, r := range recs {
			if size += int64(len(r)) + 1; size > s.cfg.MaxBytes {
				break
			}
			fit++
		}
		if fit == 0 || s.spool.Append(recs[:fit]) != nil {
			return 0, err
		}
		recs, encErr = recs[:fit], err
	} else if err != nil {
		return 0, err
	}
	s.spooled.Add(uint64(len(recs)))
	s.spooling.Store(true)
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return len(recs), encErr
}

// hubError tells the hub what became of a batch whose first done events are in the store and
// the next spooled in the spool when err stopped the rest.
func hubError(done, spooled int, err error) error {
	if be := (*hub.BadEventError)(nil); errors.As(err, &be) {
		return &hub.BadEventError{Index: done + spooled, Err: be.Err}
	}
	if done+spooled > 0 {
		return &hub.PartialError{Done: done + spooled, Err: err}
	}
	return err
}

// Start runs the replayer until ctx ends or Close. After that, Write still spools (until
// Close), and what is spooled is written at the next start.
func (s *Sink) Start(ctx context.Context) error {
	s.startOnce.Do(func() {
		ctx, s.stop = context.WithCancel(ctx)
		go s.replay(ctx)
		select {
		case s.kick <- struct{}{}: // events from the previous run, if any
		default:
		}
	})
	return nil
}

// Close stops the replayer (a write in flight is cancelled; what it held stays spooled and
// is written at the next start: the store skips what it already has) and closes the spool,
// which keeps on disk whatever is not in the store yet. It is safe more than once and from
// several goroutines; Write fails after it.
func (s *Sink) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.startOnce.Do(func() { close(s.done) }) // never started: no replayer to wait for
		if s.stop != nil {
			s.stop()
		}
		select {
		case <-s.done:
		case <-ctx.Done():
			s.log.Warn("store spool: the replayer did not stop in time; closing the spool under it", "err", ctx.Err())
		}
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if p := s.spool.Stats().Pending; p > 0 {
			s.log.Warn("store spool: events not yet in the store stay on disk and are written at the next start",
				"events", p, "dir", s.cfg.Dir)
		}
		s.closeErr = s.spool.Close()
	})
	return s.closeErr
}

// Stats returns the counters.
func (s *Sink) Stats() Stats {
	st := s.spool.Stats()
	return Stats{
		Spooling: s.spooling.Load(), Pending: st.Pending, Bytes: st.Bytes, Torn: st.Torn,
		Spooled: s.spooled.Load(), Replayed: s.replayed.Load(), FullRefusals: s.fullRefusals.Load(),
		Refused: s.refused.Load(), Corrupt: s.corrupt.Load(), Failures: s.failures.Load(),
	}
}

// replay writes the spool into the store, a batch at a time, until ctx ends.
func (s *Sink) replay(ctx context.Context) {
	defer close(s.done)
	failures := 0
	var recs []spool.Record
	var events []*event.Event
	defer func() { s.spool.Release(recs...) }() // stays spooled for the next start
	for ctx.Err() == nil {
		if len(recs) == 0 {
			var err error
			if recs, events, err = s.read(); err != nil {
				if errors.Is(err, spool.ErrClosed) {
					return
				}
				failures++
				s.warn.Error("store spool: cannot read the spool; retrying (is the disk failing?)", "err", err)
				s.sleep(ctx, s.cfg.Backoff.Delay(failures))
				continue
			}
			if len(recs) == 0 {
				s.caughtUp()
				select {
				case <-s.kick:
				case <-ctx.Done():
				}
				continue
			}
		}
		wctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err := s.inner.Write(wctx, events)
		cancel()
		n, refused := len(events), false // events settled by this write
		if err != nil {
			n = 0
			if be := (*hub.BadEventError)(nil); errors.As(err, &be) && be.Index >= 0 && be.Index < len(events) {
				n, refused = be.Index+1, true
			} else if pe := (*hub.PartialError)(nil); errors.As(err, &pe) && pe.Done > 0 && pe.Done <= len(events) {
				n = pe.Done
			}
		}
		if ctx.Err() != nil && (err != nil || n < len(events)) {
			break // shutting down: the write may have been cut short; what was not acked stays
		}
		if n > 0 {
			if aerr := s.spool.Ack(recs[:n]...); aerr != nil {
				// The events are in the store; a lost ack only means they are written again.
				s.warn.Warn("store spool: ack failed", "err", aerr)
			}
			s.replayed.Add(uint64(n) - b2u(refused))
			recs, events = recs[n:], events[n:]
		}
		if refused {
			s.refused.Add(1)
			s.warn.Warn(msgRefused, "refused_total", s.refused.Load(), "err", err)
			failures = 0
			continue
		}
		if err == nil {
			failures = 0
			continue
		}
		failures++
		s.failures.Add(1)
		wait := s.cfg.Backoff.Delay(failures)
		s.warn.Warn(msgReplay, "store", s.inner.Name(), "events_in_spool", s.spool.Stats().Pending, "retry_in", wait, "err", err)
		s.sleep(ctx, wait)
	}
}

// read takes the next batch from the spool: records and their events, at most MaxBatch,
// stopping once MaxBatchBytes is reached. A record that cannot be read back is acked and
// counted: it would fail the same way forever.
func (s *Sink) read() ([]spool.Record, []*event.Event, error) {
	var recs []spool.Record
	var events []*event.Event
	bytes := 0
	for len(recs) < s.cfg.MaxBatch && bytes < s.cfg.MaxBatchBytes {
		r, ok, err := s.spool.TryNext()
		if err != nil && len(recs) > 0 {
			break // write these; the error comes back at the next read
		}
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			break
		}
		e, err := parseRecord(r.Data)
		if err != nil {
			s.corrupt.Add(1)
			s.warn.Warn(msgCorrupt, "corrupt_total", s.corrupt.Load(), "err", err, "record", truncate(r.Data, 200))
			s.spool.Ack(r)
			continue
		}
		recs, events = append(recs, r), append(events, e)
		bytes += len(r.Data)
	}
	return recs, events, nil
}

// caughtUp switches back to direct writes once the spool is empty. Write holds mu while it
// appends, so no batch can slip into the spool behind this check and be overtaken.
func (s *Sink) caughtUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.spooling.Load() || s.spool.Stats().Pending > 0 {
		return
	}
	s.spooling.Store(false)
	s.warn.Reset(msgSpooling) // the next outage is told at once
	// At the node's notice level (slog.LevelInfo+2), printed by default: the outage was
	// warned of, and its end must be told as plainly.
	s.log.Log(context.Background(), slog.LevelInfo+2, "store spool: caught up; events go straight to the store again",
		"replayed_total", s.replayed.Load(), "store", s.inner.Name())
}

func (s *Sink) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
