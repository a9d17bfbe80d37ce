// Package storetest is the conformance suite every event store must pass: what the hub (the
// writer), the API and `dialtrap check` (lookups, lists, statistics, analytics), peers'
// catch-up, export and retention rely on, checked through the methods they call. A backend's
// tests call Run with a function that opens an empty store: SQLite's and PostgreSQL's do.
package storetest

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Backend is every method of a store the suite checks. Each consumer declares the part it
// uses (hub.Sink, api.Store, api.Analytics, peer.EventSource...); a backend has them all.
type Backend interface {
	Write(ctx context.Context, batch []*event.Event) error
	WriteCount(ctx context.Context, batch []*event.Event) (int, error)
	IP(ctx context.Context, ip string) (store.Aggregate, bool, error)
	Number(ctx context.Context, n string) (store.Aggregate, bool, error)
	MatchNumbers(ctx context.Context, n string) ([]store.Aggregate, error)
	Count(ctx context.Context, l store.List, since string) (int64, error)
	Each(ctx context.Context, l store.List, o store.ListOptions, fn func(store.Aggregate) error) error
	Top(ctx context.Context, d store.Dimension, since string, limit int) ([]store.ValueCount, int64, error)
	CountEvents(ctx context.Context) (int64, error)
	Events(ctx context.Context, fn func(*event.Event) error) error
	Recent(ctx context.Context, since string, afterID int64, limit int, fn func(e *event.Event, id int64) error) error
	PruneEvents(ctx context.Context, before string, limit int) (int64, error)
	SetLabeler(store.Labeler)
	Targets(ctx context.Context, o store.TargetOptions, fn func(store.Target) error) (int64, error)
	Campaigns(ctx context.Context, o store.ListOptions, fn func(store.Campaign) error) error
	Timeline(ctx context.Context, from, until time.Time, step time.Duration) ([]store.TimeCount, error)
	CountTargets(ctx context.Context, o store.TargetOptions) (int64, error)
	Target(ctx context.Context, target string) (store.Target, bool, error)
	CountCampaigns(ctx context.Context, since string) (int64, error)
	TopNumbers(ctx context.Context, since string, limit int) ([]store.ValueCount, int64, error)
	ChangeSeq(ctx context.Context) (epoch, seq int64, err error)
	FeedPage(ctx context.Context, l store.List, f store.FeedFilter, o store.FeedOrder, after store.FeedItem, limit int) ([]store.FeedItem, error)
}

// base is the time of the suite's events: 2026-11-23 10:00 UTC.
var base = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// ev is a scanner's probe at base+at from ip to number.
func ev(at time.Duration, ip, number string) *event.Event {
	return &event.Event{
		AppName: event.AppName, AppVersion: "suite", Timestamp: event.FormatTime(base.Add(at)),
		UUID: uuid.Must(uuid.NewV7()).String(), NodeID: "0190f4a2-0000-7000-8000-000000000001",
		CollectedMethod: event.Responsive, Transport: event.UDP, SourceIP: ip, SourcePort: 5070,
		DestinationIP: "192.0.2.1", DestinationPort: 5060, CalledNumber: number, SIPMethod: "INVITE",
		SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE sip:" + number + "@192.0.2.1 SIP/2.0\r\n\r\n",
		Tool: "sipvicious",
	}
}

func fromPeer(e *event.Event, peer string, trusted bool) *event.Event {
	e.FromPeer, e.Peer, e.Trusted, e.Sealed = true, peer, trusted, []byte("envelope of "+e.UUID)
	return e
}

// Run runs the suite; open returns a new, empty store that the test may close when it ends.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"WriteIsIdempotent", writeIsIdempotent},
		{"Aggregates", aggregates},
		{"NationalMatch", nationalMatch},
		{"Lists", lists},
		{"Top", top},
		{"EventsRoundTrip", eventsRoundTrip},
		{"Recent", recent},
		{"Retention", retention},
		{"Analytics", analytics},
		{"Targets", targets},
		{"TopNumbers", topNumbers},
		{"Campaigns", campaigns},
		{"Feed", feedPages},
		{"RetriedBatchCountsNew", retriedBatch},
		{"ConcurrentWriters", concurrentWriters},
		{"FoldedWeights", foldedWeights},
		{"FoldedEvents", foldedEvents},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open(t)) })
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A batch written twice (a retry after a timeout, an import run again) is stored and
// counted once.
func writeIsIdempotent(t *testing.T, s Backend) {
	ctx := context.Background()
	batch := []*event.Event{ev(0, "198.51.100.1", "100"), ev(time.Second, "198.51.100.1", "100"), ev(2*time.Second, "198.51.100.2", "200")}
	must(t, s.Write(ctx, batch))
	must(t, s.Write(ctx, batch))
	must(t, s.Write(ctx, batch[:1]))
	if n, err := s.CountEvents(ctx); err != nil || n != 3 {
		t.Errorf("%d events (%v), want 3", n, err)
	}
	if a, ok, err := s.IP(ctx, "198.51.100.1"); err != nil || !ok || a.Count != 2 {
		t.Errorf("IP counted %d (%v %v), want 2", a.Count, ok, err)
	}
}

// The aggregate of a key holds first and last seen, the count, and where it was seen: here,
// by how many peers and trusted peers, and how often from a proven source.
func aggregates(t *testing.T, s Backend) {
	ctx := context.Background()
	verified := ev(3*time.Minute, "198.51.100.7", "0046812118532")
	verified.Transport, verified.SourceVerified = event.TCP, true
	must(t, s.Write(ctx, []*event.Event{
		ev(time.Minute, "198.51.100.7", "0046812118532"),
		fromPeer(ev(2*time.Minute, "198.51.100.7", "0046812118532"), "12D3KooWPeerA", true),
		fromPeer(ev(4*time.Minute, "198.51.100.7", "0046812118532"), "12D3KooWPeerB", false),
		fromPeer(ev(5*time.Minute, "198.51.100.7", "0046812118532"), "12D3KooWPeerB", false),
		verified,
	}))
	want := store.Aggregate{Key: "198.51.100.7", FirstSeen: event.FormatTime(base.Add(time.Minute)),
		LastSeen: event.FormatTime(base.Add(5 * time.Minute)), Count: 5, Local: 2, Peers: 2, TrustedPeers: 1,
		Verified: 1, VerifiedLocal: 1}
	for _, get := range []func() (store.Aggregate, bool, error){
		func() (store.Aggregate, bool, error) { return s.IP(ctx, "198.51.100.7") },
		func() (store.Aggregate, bool, error) { return s.Number(ctx, "0046812118532") },
	} {
		a, ok, err := get()
		want := want
		if a.Key == "0046812118532" {
			want.Key = a.Key
		}
		if err != nil || !ok || a != want {
			t.Errorf("aggregate %+v (%v %v)\nwant      %+v", a, ok, err, want)
		}
	}
	for _, miss := range []func() (store.Aggregate, bool, error){
		func() (store.Aggregate, bool, error) { return s.IP(ctx, "198.51.100.8") },
		func() (store.Aggregate, bool, error) { return s.Number(ctx, "0046812118533") },
	} {
		if _, ok, err := miss(); ok || err != nil {
			t.Errorf("a key never seen: found %v (%v)", ok, err)
		}
	}
}

// The national match finds the same subscriber behind other dial-out prefixes.
func nationalMatch(t *testing.T, s Backend) {
	ctx := context.Background()
	must(t, s.Write(ctx, []*event.Event{ev(0, "198.51.100.1", "0046812118532"), ev(time.Second, "198.51.100.1", "900046812118532"),
		ev(2*time.Second, "198.51.100.1", "0046812118533")}))
	m, err := s.MatchNumbers(ctx, "+46812118532")
	must(t, err)
	var got []string
	for _, a := range m {
		got = append(got, a.Key)
	}
	if want := []string{"900046812118532", "0046812118532"}; !reflect.DeepEqual(got, want) {
		t.Errorf("national match %v, want %v (newest first)", got, want)
	}
}

// Lists are newest first (last seen, then key, both descending), select by last seen, and page.
func lists(t *testing.T, s Backend) {
	ctx := context.Background()
	var batch []*event.Event
	for i := range 5 {
		batch = append(batch, ev(time.Duration(i)*time.Hour, fmt.Sprintf("198.51.100.%d", i), fmt.Sprint(100+i)))
	}
	batch = append(batch, ev(4*time.Hour, "198.51.100.9", event.NotFound)) // not a number
	must(t, s.Write(ctx, batch))
	keys := func(l store.List, o store.ListOptions) []string {
		var k []string
		must(t, s.Each(ctx, l, o, func(a store.Aggregate) error { k = append(k, a.Key); return nil }))
		return k
	}
	since := event.FormatTime(base.Add(2 * time.Hour))
	for _, c := range []struct {
		l    store.List
		o    store.ListOptions
		want []string
	}{
		{store.IPAddresses, store.ListOptions{}, []string{"198.51.100.9", "198.51.100.4", "198.51.100.3", "198.51.100.2", "198.51.100.1", "198.51.100.0"}},
		{store.CalledNumbers, store.ListOptions{Since: since}, []string{"104", "103", "102"}},
		{store.CalledNumbers, store.ListOptions{Limit: 2, Offset: 1}, []string{"103", "102"}},
	} {
		if got := keys(c.l, c.o); !reflect.DeepEqual(got, c.want) {
			t.Errorf("list %d %+v: %v, want %v", c.l, c.o, got, c.want)
		}
	}
	if n, err := s.Count(ctx, store.CalledNumbers, since); err != nil || n != 3 {
		t.Errorf("%d numbers since (%v), want 3", n, err)
	}
}

// Statistics count per hour: a window starts on the hour of since.
func top(t *testing.T, s Backend) {
	ctx := context.Background()
	opt := ev(0, "198.51.100.1", "100")
	opt.SIPMethod = "OPTIONS"
	must(t, s.Write(ctx, []*event.Event{opt, ev(time.Minute, "198.51.100.1", "100"), ev(2*time.Hour, "198.51.100.1", "100"),
		ev(2*time.Hour+time.Minute, "198.51.100.1", "100")}))
	all, distinct, err := s.Top(ctx, store.SIPMethods, "", 0)
	if err != nil || distinct != 2 || !reflect.DeepEqual(all, []store.ValueCount{{Value: "INVITE", Count: 3}, {Value: "OPTIONS", Count: 1}}) {
		t.Errorf("methods %v of %d (%v)", all, distinct, err)
	}
	late, _, err := s.Top(ctx, store.SIPMethods, event.FormatTime(base.Add(2*time.Hour+30*time.Minute)), 0)
	if err != nil || !reflect.DeepEqual(late, []store.ValueCount{{Value: "INVITE", Count: 2}}) {
		t.Errorf("methods from 12:30 (the hour of 12:00 on) %v (%v)", late, err)
	}
}

// Export reads back every event as written, peers' provenance and the analytic keys too, in
// the order written (capture writes in time order).
func eventsRoundTrip(t *testing.T, s Backend) {
	ctx := context.Background()
	a := ev(time.Second, "2001:db8::7", "100")
	a.UASpoofed, a.Payload = true, []event.Payload{{Kind: "sqli", Where: "to"}}
	a.SIPMessageLength, a.SourceVerified = 70000, true
	b := fromPeer(ev(0, "198.51.100.1", event.NotFound), "12D3KooWPeerA", true)
	must(t, s.Write(ctx, []*event.Event{a, b}))
	var got []*event.Event
	must(t, s.Events(ctx, func(e *event.Event) error { got = append(got, e); return nil }))
	if len(got) != 2 {
		t.Fatalf("%d events", len(got))
	}
	b.Trusted = false // not kept per event: the trust gate's decision lives in the aggregates
	for i, want := range []*event.Event{a, b} {
		g := *got[i]
		g.Trusted = false
		if !reflect.DeepEqual(&g, want) {
			t.Errorf("event %d\n got %+v\nwant %+v", i, &g, want)
		}
	}
}

// Catch-up pages through the events in (timestamp, id) order from a cursor.
func recent(t *testing.T, s Backend) {
	ctx := context.Background()
	var batch []*event.Event
	for i := range 7 {
		batch = append(batch, ev(time.Duration(i/2)*time.Second, "198.51.100.1", fmt.Sprint(i))) // pairs share a time
	}
	must(t, s.Write(ctx, batch))
	var numbers []string
	since, after := "", int64(0)
	for pages := 0; ; pages++ {
		n := 0
		must(t, s.Recent(ctx, since, after, 3, func(e *event.Event, id int64) error {
			numbers = append(numbers, e.CalledNumber)
			since, after = e.Timestamp, id
			n++
			return nil
		}))
		if n < 3 || pages > 5 {
			break
		}
	}
	if want := []string{"0", "1", "2", "3", "4", "5", "6"}; !reflect.DeepEqual(numbers, want) {
		t.Errorf("pages read %v, want %v", numbers, want)
	}
}

// Retention deletes raw events before a time and keeps every count.
func retention(t *testing.T, s Backend) {
	ctx := context.Background()
	var batch []*event.Event
	for i := range 10 {
		batch = append(batch, ev(time.Duration(i)*time.Hour, "198.51.100.1", "100"))
	}
	must(t, s.Write(ctx, batch))
	cutoff := event.FormatTime(base.Add(6 * time.Hour))
	var deleted int64
	for {
		n, err := s.PruneEvents(ctx, cutoff, 4)
		must(t, err)
		deleted += n
		if n < 4 {
			break
		}
	}
	if left, err := s.CountEvents(ctx); deleted != 6 || left != 4 || err != nil {
		t.Errorf("deleted %d, %d left (%v); want 6 and 4", deleted, left, err)
	}
	if a, _, err := s.IP(ctx, "198.51.100.1"); a.Count != 10 || a.FirstSeen != batch[0].Timestamp || err != nil {
		t.Errorf("aggregate after retention %+v (%v)", a, err)
	}
	if top, _, err := s.Top(ctx, store.SIPMethods, "", 0); err != nil || len(top) != 1 || top[0].Count != 10 {
		t.Errorf("counts after retention %v (%v)", top, err)
	}
}

// With a labeler the store counts origins and targets, groups campaigns and counts events
// per minute.
func analytics(t *testing.T, s Backend) {
	ctx := context.Background()
	s.SetLabeler(intel.NewLabeler(""))
	must(t, s.Write(ctx, []*event.Event{ev(0, "130.149.1.1", "00449098790123"), ev(time.Minute, "130.149.1.1", "900449098790123"),
		ev(2*time.Hour, "130.149.1.1", "100")}))
	if c, _, err := s.Top(ctx, store.Countries, "", 0); err != nil || !reflect.DeepEqual(c, []store.ValueCount{{Value: "DE", Count: 3}}) {
		t.Errorf("countries %v (%v)", c, err)
	}
	var targets []store.Target
	total, err := s.Targets(ctx, store.TargetOptions{}, func(x store.Target) error { targets = append(targets, x); return nil })
	if err != nil || total != 2 || targets[0].Target != "+449098790123" || targets[0].Count != 2 || targets[0].Dialled != 2 || targets[0].Type != "premium-rate" {
		t.Errorf("targets %+v of %d (%v)", targets, total, err)
	}
	var camps []store.Campaign
	must(t, s.Campaigns(ctx, store.ListOptions{}, func(c store.Campaign) error { camps = append(camps, c); return nil }))
	if len(camps) != 2 || camps[0].Count != 1 || camps[1].Count != 2 || camps[1].Tool != "sipvicious" || camps[1].Country != "DE" {
		t.Errorf("campaigns %+v, want the 2-hour pause to split them", camps)
	}
	tl, err := s.Timeline(ctx, base, base.Add(2*time.Minute), time.Minute)
	if err != nil || len(tl) != 3 || tl[0].Count != 1 || tl[1].Count != 1 || tl[2].Count != 0 {
		t.Errorf("timeline %+v (%v)", tl, err)
	}
}

// A folded event (event.RepeatCount) counts every probe it stands for, in every count; it is
// one row, and reads back with its repeat count.
func foldedEvents(t *testing.T, s Backend) {
	ctx := context.Background()
	s.SetLabeler(intel.NewLabeler(""))
	first := ev(0, "130.149.1.1", "00449098790123")
	folded := ev(time.Second, "130.149.1.1", "00449098790123")
	folded.RepeatCount = 499
	folded.SourceVerified, folded.Payload = true, []event.Payload{{Kind: "sqli", Where: "user-agent"}}
	peer := fromPeer(ev(2*time.Second, "130.149.1.1", "00449098790123"), "12D3KooWPeerA", true)
	peer.RepeatCount = 1000
	must(t, s.Write(ctx, []*event.Event{first, folded, peer}))
	must(t, s.Write(ctx, []*event.Event{folded})) // a retry counts nothing twice
	if n, err := s.CountEvents(ctx); err != nil || n != 3 {
		t.Errorf("%d events stored (%v), want 3 rows", n, err)
	}
	want := store.Aggregate{FirstSeen: first.Timestamp, LastSeen: peer.Timestamp, Count: 1500, Local: 500,
		Peers: 1, TrustedPeers: 1, Verified: 499, VerifiedLocal: 499}
	for _, get := range []func() (store.Aggregate, bool, error){
		func() (store.Aggregate, bool, error) { return s.IP(ctx, "130.149.1.1") },
		func() (store.Aggregate, bool, error) { return s.Number(ctx, "00449098790123") },
	} {
		a, ok, err := get()
		want.Key = a.Key
		if err != nil || !ok || a != want {
			t.Errorf("aggregate %+v (%v %v)\nwant      %+v", a, ok, err, want)
		}
	}
	for _, c := range []struct {
		d    store.Dimension
		want []store.ValueCount
	}{
		{store.SIPMethods, []store.ValueCount{{Value: "INVITE", Count: 1500}}},
		{store.Tools, []store.ValueCount{{Value: "sipvicious", Count: 1500}}},
		{store.Countries, []store.ValueCount{{Value: "DE", Count: 1500}}},
		{store.Payloads, []store.ValueCount{{Value: "sqli@user-agent", Count: 499}}},
	} {
		if got, _, err := s.Top(ctx, c.d, "", 0); err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("dimension %d: %v (%v), want %v", c.d, got, err, c.want)
		}
	}
	if tl, err := s.Timeline(ctx, base, base, time.Minute); err != nil || len(tl) != 1 || tl[0].Count != 1500 {
		t.Errorf("timeline %+v (%v), want 1500 in the first minute", tl, err)
	}
	var camps []store.Campaign
	must(t, s.Campaigns(ctx, store.ListOptions{}, func(c store.Campaign) error { camps = append(camps, c); return nil }))
	if len(camps) != 1 || camps[0].Count != 1500 {
		t.Errorf("campaigns %+v, want one of 1500 probes", camps)
	}
	var targets []store.Target
	if _, err := s.Targets(ctx, store.TargetOptions{}, func(x store.Target) error { targets = append(targets, x); return nil }); err != nil || len(targets) != 1 || targets[0].Count != 1500 {
		t.Errorf("targets %+v (%v), want one called 1500 times", targets, err)
	}
	// A peer not trusted claims a million probes: one sighting, stored as sent.
	liar := fromPeer(ev(3*time.Second, "198.51.100.66", "100"), "12D3KooWPeerB", false)
	liar.RepeatCount = 1_000_000
	must(t, s.Write(ctx, []*event.Event{liar}))
	if a, _, err := s.IP(ctx, "198.51.100.66"); err != nil || a.Count != 1 {
		t.Errorf("an untrusted peer's claim of a million probes counted %d (%v), want 1", a.Count, err)
	}
	var got []int64
	must(t, s.Events(ctx, func(e *event.Event) error { got = append(got, e.RepeatCount); return nil }))
	if !reflect.DeepEqual(got, []int64{0, 499, 1000, 1_000_000}) {
		t.Errorf("repeat counts read back %v, want [0 499 1000 1000000]", got)
	}
}
