package peer

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	libpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// memStore keeps events in memory the way the node's store does for catch-up: by UUID once,
// served in (timestamp, insertion) order.
type memStore struct {
	mu     sync.Mutex
	events []*event.Event
	ids    map[string]*event.Event
}

func newMemStore() *memStore { return &memStore{ids: map[string]*event.Event{}} }

func (m *memStore) add(e *event.Event, _ libpeer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ids[e.UUID] == nil {
		m.events = append(m.events, e)
		m.ids[e.UUID] = e
	}
}

func (m *memStore) uuids() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for id := range m.ids {
		out[id] = true
	}
	return out
}

// sessionOver reports whether n has finished a catch-up session with p: it asks p nothing
// more until p reconnects.
func sessionOver(n *Node, p libpeer.ID) bool {
	n.catch.mu.Lock()
	defer n.catch.mu.Unlock()
	_, ok := n.catch.done[p]
	return ok
}

func (m *memStore) Recent(ctx context.Context, since string, afterID int64, limit int, fn func(*event.Event, int64) error) error {
	type row struct {
		e  *event.Event
		id int64
	}
	m.mu.Lock()
	var rows []row
	for i, e := range m.events {
		if id := int64(i + 1); e.Timestamp > since || e.Timestamp == since && id > afterID {
			rows = append(rows, row{e, id})
		}
	}
	m.mu.Unlock()
	slices.SortFunc(rows, func(a, b row) int {
		if a.e.Timestamp != b.e.Timestamp {
			if a.e.Timestamp < b.e.Timestamp {
				return -1
			}
			return 1
		}
		return int(a.id - b.id)
	})
	for _, r := range rows[:min(limit, len(rows))] {
		if err := fn(r.e, r.id); err != nil {
			return err
		}
	}
	return nil
}

// Two nodes that collected events apart meet and end up with the same set: each pages
// through the other's last 24 hours (more than one page), own events and those it holds from
// a third node alike, which keep that node as their signer. Older events are not asked for.
func TestCatchupConverges(t *testing.T) {
	now := time.Now()
	a, b := newMemStore(), newMemStore()
	for i := range 1200 {
		a.add(testEvent(now.Add(-time.Duration(i)*time.Second)), "")
	}
	old := testEvent(now.Add(-48 * time.Hour))
	a.add(old, "")
	for i := range 300 {
		b.add(testEvent(now.Add(-time.Duration(i)*time.Minute)), "")
	}
	thirdKey, _, _ := crypto.GenerateEd25519Key(nil)
	third, _ := ID(thirdKey)
	for range 5 {
		e := testEvent(now.Add(-time.Hour))
		data, err := Seal(e, thirdKey)
		if err != nil {
			t.Fatal(err)
		}
		e.FromPeer, e.Peer, e.Sealed = true, third.String(), data
		b.add(e, third)
	}
	withStore := func(s *memStore) func(*Config) {
		return func(c *Config) { c.Events, c.Receive = s, s.add }
	}
	na, _ := startTestNode(t, nil, withStore(a))
	nb, _ := startTestNode(t, na.Addrs()[:1], withStore(b))
	testutil.Eventually(t, "both sides caught up", 20*time.Second, func() bool {
		return len(a.uuids()) == 1201+305 && len(b.uuids()) == 1200+305
	})
	// Both sessions are over, and nothing is published: nothing more arrives.
	testutil.Eventually(t, "both catch-up sessions end", 10*time.Second, func() bool {
		return sessionOver(na, nb.ID()) && sessionOver(nb, na.ID())
	})
	ua, ub := a.uuids(), b.uuids()
	delete(ua, old.UUID)
	if !maps.Equal(ua, ub) {
		t.Errorf("sets differ: %d and %d events", len(ua), len(ub))
	}
	if ub[old.UUID] {
		t.Error("an event older than the catch-up window was fetched")
	}
	a.mu.Lock()
	for _, e := range a.events {
		if e.FromPeer && e.Peer != nb.ID().String() && e.Peer != third.String() {
			t.Errorf("event %s stored with signer %q", e.UUID, e.Peer)
		}
		if e.FromPeer && len(e.Sealed) == 0 {
			t.Errorf("event %s stored without its envelope", e.UUID)
		}
	}
	a.mu.Unlock()
	for _, tt := range []struct {
		n    *Node
		peer libpeer.ID
		want uint64
	}{{na, nb.ID(), 305}, {nb, na.ID(), 1200}} {
		var got uint64
		for _, p := range tt.n.Report().Peers {
			if p.ID == tt.peer.String() {
				got = p.CaughtUp
			}
		}
		if got != tt.want {
			t.Errorf("%s caught up %d events from %s, want %d", tt.n.ID(), got, tt.peer, tt.want)
		}
	}
}

// A peer that answers catch-up with forged, tampered and out-of-bounds items, and a cursor
// that never moves, gets nothing stored, is counted and scored down, and cannot keep the
// session going.
func TestCatchupFromLyingPeer(t *testing.T) {
	liarKey, _, _ := crypto.GenerateEd25519Key(nil)
	h, err := libp2p.New(libp2p.Identity(liarKey), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	honest := testEvent(time.Now()) // the liar may share its own events like anyone
	honestData, _ := Seal(honest, liarKey)
	tampered, _ := Seal(testEvent(time.Now()), liarKey)
	tampered[len(tampered)-80] ^= 1
	// Its own event again under the same event_uuid with another number: a conflict.
	changed := *honest
	changed.CalledNumber = "0046812118999"
	conflicting, _ := Seal(&changed, liarKey)
	items := [][]byte{
		honestData,
		conflicting,
		tampered,
		mustSeal(t, func(e *event.Event) { e.SourceIP = "not-an-ip" }, liarKey),
		mustSeal(t, func(e *event.Event) { e.Timestamp = event.FormatTime(time.Now().Add(time.Hour)) }, liarKey),
		[]byte("junk"),
	}
	var requests atomic.Int32
	h.SetStreamHandler(CatchupProtocol, func(s network.Stream) {
		defer s.Close()
		requests.Add(1)
		line, err := bufio.NewReader(s).ReadSlice('\n')
		var req catchupRequest
		if err != nil || json.Unmarshal(line, &req) != nil {
			s.Reset()
			return
		}
		w := bufio.NewWriter(s)
		var buf [binary.MaxVarintLen64]byte
		for _, it := range items {
			w.Write(buf[:binary.PutUvarint(buf[:], uint64(len(it)))])
			w.Write(it)
		}
		w.WriteByte(0)
		tr, _ := json.Marshal(catchupTrailer{AfterTS: req.Since, AfterID: req.AfterID, More: true}) // stuck
		w.Write(append(tr, '\n'))
		w.Flush()
	})
	liarAddr := fmt.Sprintf("%s/p2p/%s", h.Addrs()[0], h.ID())
	victim, in := startTestNode(t, []string{liarAddr})
	testutil.Eventually(t, "the liar's catch-up answer is processed", 10*time.Second, func() bool {
		return victim.peers.get(h.ID()).bad == 4
	})
	// Once the session is over the liar is asked nothing more (until it reconnects), so the
	// count of requests below is final.
	testutil.Eventually(t, "the catch-up session with the liar ends", 10*time.Second, func() bool { return sessionOver(victim, h.ID()) })
	in.mu.Lock()
	got := slices.Collect(maps.Keys(in.got))
	in.mu.Unlock()
	if !slices.Equal(got, []string{honest.UUID}) {
		t.Errorf("delivered %v, want only the liar's one valid event %s", got, honest.UUID)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("the liar was asked %d times; a cursor that does not advance must end the session", n)
	}
	if s := victim.appScore(h.ID()); s >= 0 {
		t.Errorf("the liar's application score is %.0f, want negative", s)
	}
	r := victim.Stats().Rejected
	if r[ReasonSignature] != 2 || r[ReasonIP] != 1 || r[ReasonTime] != 1 || r[ReasonConflict] != 1 {
		t.Errorf("rejections %v", r)
	}
}

// With --p2p-min-sightings 2, an IP reported by one peer waits; when a second peer reports it,
// both events count. A node with the default policy takes the first at once.
func TestMinSightingsHoldsUntilConfirmed(t *testing.T) {
	boot, bootIn := startTestNode(t, nil)
	strict, strictIn := startTestNode(t, boot.Addrs()[:1], func(c *Config) { c.Policy.MinSightings = 2 })
	p1, _ := startTestNode(t, boot.Addrs()[:1])
	p2, _ := startTestNode(t, boot.Addrs()[:1])
	for _, n := range []*Node{boot, strict, p1, p2} {
		testutil.Eventually(t, "mesh", 15*time.Second, func() bool { return len(n.TopicPeers()) > 0 })
	}
	time.Sleep(time.Second) // let the mesh settle: see startMesh
	first := testEvent(time.Now())
	if err := p1.Write(context.Background(), []*event.Event{first}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the default node takes the first report", 10*time.Second, func() bool {
		_, ok := bootIn.has(first.UUID)
		return ok
	})
	testutil.Eventually(t, "the strict node holds the first report, or counts it", 10*time.Second, func() bool {
		held, _ := strict.gate.Pending()
		_, ok := strictIn.has(first.UUID)
		return held > 0 || ok
	})
	// A fixed wait on purpose: the strict node must not count the report, and not counting is
	// no event to wait for.
	time.Sleep(500 * time.Millisecond)
	if _, ok := strictIn.has(first.UUID); ok {
		t.Fatal("the strict node counted an IP only one peer reported")
	}
	if held, _ := strict.gate.Pending(); held != 1 {
		t.Errorf("strict node holds %d events, want 1", held)
	}
	second := testEvent(time.Now()) // same source IP, another node
	if err := p2.Write(context.Background(), []*event.Event{second}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "both count once a second peer reports the IP", 10*time.Second, func() bool {
		f1, ok1 := strictIn.has(first.UUID)
		f2, ok2 := strictIn.has(second.UUID)
		return ok1 && ok2 && f1 == p1.ID() && f2 == p2.ID()
	})
}
