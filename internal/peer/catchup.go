package peer

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	libpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/dialtrap/dialtrap/internal/backoff"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/peerinfo"
)

// Catch-up: when a node meets a peer (at start, or again after a disconnection) it asks it for
// the events of a recent window, page by page, over a request/response stream. Each answer
// item is a signed envelope exactly as gossip carries it, checked the same way, so a serving
// peer can withhold events but cannot forge or alter one.
//
// Wire format. Request: one JSON line {"since": event_timestamp, "after_id": n, "limit": n}.
// Answer: items, each a uvarint length and an envelope; then a zero length and one JSON line
// {"after_ts": ..., "after_id": n, "more": bool}: the cursor of the next page.

// CatchupProtocol is the protocol ID of the catch-up stream.
const CatchupProtocol = protocol.ID("/dialtrap/catchup/1")

const (
	catchupPage       = 500              // items per answer at most
	catchupMaxEvents  = 1_000_000        // per session, so a peer cannot keep one going forever
	catchupTimeout    = 60 * time.Second // per page, request to trailer
	catchupServeSlots = 4                // answers served at once
	catchupMaxBad     = 10               // refused items before a session is given up
	catchupRetries    = 3                // failed sessions with a peer before waiting for a reconnection
)

// catchupRetry is the wait before asking a peer again after a failed session.
var catchupRetry = backoff.Policy{Min: 5 * time.Second, Max: time.Minute, Jitter: true}

// EventSource is what catch-up serves from: the store (declared in peerinfo, so that the
// store satisfies it in a build without libp2p too).
type EventSource = peerinfo.EventSource

type catchupRequest struct {
	Since   string `json:"since"`
	AfterID int64  `json:"after_id"`
	Limit   int    `json:"limit"`
}

type catchupTrailer struct {
	AfterTS string `json:"after_ts"`
	AfterID int64  `json:"after_id"`
	More    bool   `json:"more"`
}

type catchup struct {
	mu     sync.Mutex
	queued map[libpeer.ID]bool
	tries  map[libpeer.ID]int       // failed sessions in a row
	done   map[libpeer.ID]time.Time // last completed session with the peer
	gone   map[libpeer.ID]time.Time // last time the peer disconnected
	queue  chan libpeer.ID
	slots  chan struct{}
}

func (n *Node) startCatchup(ctx context.Context) {
	c := &n.catch
	c.queued, c.tries = map[libpeer.ID]bool{}, map[libpeer.ID]int{}
	c.done, c.gone = map[libpeer.ID]time.Time{}, map[libpeer.ID]time.Time{}
	c.queue = make(chan libpeer.ID, 256)
	c.slots = make(chan struct{}, catchupServeSlots)
	n.host.SetStreamHandler(CatchupProtocol, func(s network.Stream) { n.serveCatchup(ctx, s) })
	if n.cfg.CatchupWindow <= 0 {
		return
	}
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, conn network.Conn) { n.wantCatchup(conn.RemotePeer()) },
		DisconnectedF: func(nw network.Network, conn network.Conn) {
			if nw.Connectedness(conn.RemotePeer()) != network.Connected {
				c.mu.Lock()
				if len(c.gone) >= maxPeerCounters {
					clear(c.gone)
				}
				c.gone[conn.RemotePeer()] = time.Now()
				c.mu.Unlock()
			}
		},
	})
	for _, p := range n.host.Network().Peers() { // met before the notifier was in place
		n.wantCatchup(p)
	}
	n.wg.Add(2)
	for range 2 {
		go func() {
			defer n.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case p := <-c.queue:
					n.catchupFrom(ctx, p)
				}
			}
		}()
	}
}

// wantCatchup queues a session with p unless one is queued, or p was caught up with and has
// not disconnected since.
func (n *Node) wantCatchup(p libpeer.ID) {
	c := &n.catch
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queued[p] {
		return
	}
	if done, ok := c.done[p]; ok && !c.gone[p].After(done) {
		return
	}
	select {
	case c.queue <- p:
		c.queued[p] = true
	default: // a crowd of new peers: the others will fill the gap
	}
}

// catchupFrom pages through p's recent events. After an earlier session with p it asks only
// for what came since the disconnection, with a margin.
func (n *Node) catchupFrom(ctx context.Context, p libpeer.ID) {
	c := &n.catch
	now := time.Now()
	from := now.Add(-n.cfg.CatchupWindow)
	c.mu.Lock()
	if _, ok := c.done[p]; ok {
		if g := c.gone[p].Add(-2 * time.Minute); g.After(from) {
			from = g
		}
	}
	c.mu.Unlock()
	got, err := n.catchupSession(ctx, p, event.FormatTime(from))
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.queued, p)
	var lied *misbehaved
	if err != nil && ctx.Err() == nil && !errors.As(err, &lied) && c.tries[p] < catchupRetries {
		// The peer may not be ready yet, or the connection dropped: ask again later.
		c.tries[p]++
		wait := catchupRetry.Delay(c.tries[p])
		n.log.Debug("p2p: catch-up with a peer failed; will retry", "peer", p, "events", got, "in", wait, "err", err)
		time.AfterFunc(wait, func() {
			if ctx.Err() == nil {
				n.wantCatchup(p)
			}
		})
		return
	}
	delete(c.tries, p)
	if len(c.done) >= maxPeerCounters {
		clear(c.done)
	}
	c.done[p] = time.Now()
	switch {
	case err != nil && ctx.Err() == nil:
		n.log.Info("p2p: catch-up with a peer stopped", "peer", p, "events", got, "err", err)
	case got > 0:
		n.log.Info("p2p: caught up with a peer", "peer", p, "events", got, "since", event.FormatTime(from))
	}
}

// misbehaved is a catch-up failure that is the serving peer's doing: it is not asked again
// until it reconnects.
type misbehaved struct{ err error }

func (m *misbehaved) Error() string { return m.err.Error() }
func (m *misbehaved) Unwrap() error { return m.err }

func (n *Node) catchupSession(ctx context.Context, p libpeer.ID, since string) (int, error) {
	req := catchupRequest{Since: since, Limit: catchupPage}
	total, bad := 0, 0
	for total < catchupMaxEvents {
		tr, items, err := n.catchupPage(ctx, p, req, &bad)
		total += items
		if err != nil {
			return total, err
		}
		if !tr.More {
			return total, nil
		}
		// The cursor must move forward, or a peer could keep us asking for the same page.
		if tr.AfterTS < req.Since || tr.AfterTS == req.Since && tr.AfterID <= req.AfterID {
			return total, &misbehaved{fmt.Errorf("peer sent a cursor that does not advance (%s/%d)", tr.AfterTS, tr.AfterID)}
		}
		req.Since, req.AfterID = tr.AfterTS, tr.AfterID
	}
	return total, nil
}

func (n *Node) catchupPage(ctx context.Context, p libpeer.ID, req catchupRequest, bad *int) (catchupTrailer, int, error) {
	var tr catchupTrailer
	sctx, cancel := context.WithTimeout(ctx, catchupTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(sctx, "catch-up"), p, CatchupProtocol)
	if err != nil {
		return tr, 0, fmt.Errorf("open catch-up stream: %w", err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(catchupTimeout))
	b, _ := json.Marshal(req)
	if _, err := s.Write(append(b, '\n')); err != nil {
		s.Reset()
		return tr, 0, fmt.Errorf("send catch-up request: %w", err)
	}
	s.CloseWrite()
	r := bufio.NewReaderSize(s, 64<<10)
	items := 0
	for {
		size, err := binary.ReadUvarint(r)
		if err != nil {
			s.Reset()
			return tr, items, fmt.Errorf("read catch-up answer: %w", err)
		}
		if size == 0 {
			break
		}
		if size > MaxEnvelope || items >= req.Limit {
			s.Reset()
			n.peers.count(p, func(c *peerCounters) { c.bad++; c.rejected++ })
			return tr, items, &misbehaved{errors.New("catch-up answer item too large, or more items than asked for")}
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(r, data); err != nil {
			s.Reset()
			return tr, items, fmt.Errorf("read catch-up answer: %w", err)
		}
		items++
		e, signer, err := n.accept(data, p, false)
		switch {
		case err == nil:
			n.peers.count(p, func(c *peerCounters) { c.caughtUp++ })
			n.deliver(e, signer)
		case blameless(ReasonOf(err)):
		default:
			n.peers.count(p, func(c *peerCounters) { c.bad++ })
			if *bad++; *bad >= catchupMaxBad {
				s.Reset()
				return tr, items, &misbehaved{fmt.Errorf("peer served %d events that fail the checks (last: %w)", *bad, err)}
			}
		}
	}
	line, err := r.ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return tr, items, fmt.Errorf("read catch-up trailer: %w", err)
	}
	if err := json.Unmarshal(line, &tr); err != nil {
		return tr, items, &misbehaved{fmt.Errorf("catch-up trailer is not JSON: %w", err)}
	}
	return tr, items, nil
}

// serveCatchup answers one page of a peer's catch-up.
func (n *Node) serveCatchup(ctx context.Context, s network.Stream) {
	select {
	case n.catch.slots <- struct{}{}:
		defer func() { <-n.catch.slots }()
	default:
		s.Reset() // busy: the peer asks another one, or again later
		return
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(catchupTimeout))
	line, err := bufio.NewReader(io.LimitReader(s, 1024)).ReadSlice('\n')
	var req catchupRequest
	if err != nil || json.Unmarshal(line, &req) != nil {
		s.Reset()
		return
	}
	since, err := event.ParseTime(req.Since)
	if err != nil || req.AfterID < 0 {
		s.Reset()
		return
	}
	lim := n.cfg.Limits.withDefaults()
	if oldest := time.Now().Add(-lim.MaxAge); since.Before(oldest) {
		req.Since, req.AfterID = event.FormatTime(oldest), 0 // older ones would be refused anyway
	}
	req.Limit = min(max(req.Limit, 1), catchupPage)
	w := bufio.NewWriterSize(s, 64<<10)
	tr := catchupTrailer{AfterTS: req.Since, AfterID: req.AfterID}
	rows := 0
	var buf [binary.MaxVarintLen64]byte
	if n.cfg.Events != nil {
		err = n.cfg.Events.Recent(ctx, req.Since, req.AfterID, req.Limit, func(e *event.Event, id int64) error {
			rows++
			tr.AfterTS, tr.AfterID = e.Timestamp, id
			if n.cfg.Share != nil && !n.cfg.Share(e) {
				return nil
			}
			data := e.Sealed
			if !e.FromPeer {
				if check(e, time.Now(), n.cfg.Limits) != nil {
					return nil
				}
				var err error
				if data, err = Seal(e, n.cfg.Key); err != nil {
					return nil
				}
			}
			if len(data) == 0 || len(data) > MaxEnvelope {
				return nil // a peer event stored before envelopes were kept
			}
			if _, err := w.Write(buf[:binary.PutUvarint(buf[:], uint64(len(data)))]); err != nil {
				return err
			}
			_, err := w.Write(data)
			return err
		})
		if err != nil {
			n.log.Debug("p2p: catch-up answer failed", "peer", s.Conn().RemotePeer(), "err", err)
			s.Reset()
			return
		}
	}
	tr.More = rows == req.Limit
	b, _ := json.Marshal(tr)
	w.WriteByte(0)
	w.Write(append(b, '\n'))
	if w.Flush() != nil {
		s.Reset()
	}
}
