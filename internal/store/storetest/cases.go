package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Targets group numbers by the number behind their dial-out prefix; the list pages and
// selects by first and last seen, and one target is read alone.
func targets(t *testing.T, s Backend) {
	ctx := context.Background()
	s.SetLabeler(intel.NewLabeler(""))
	must(t, s.Write(ctx, []*event.Event{ev(0, "130.149.1.1", "00449098790123"), ev(time.Minute, "130.149.1.1", "900449098790123"),
		ev(3*time.Hour, "130.149.1.1", "0046812118532"), ev(3*time.Hour+time.Minute, "130.149.1.1", "0046812118532"),
		ev(3*time.Hour+2*time.Minute, "130.149.1.1", "0046812118532")}))
	var all []store.Target
	total, err := s.Targets(ctx, store.TargetOptions{}, func(x store.Target) error { all = append(all, x); return nil })
	if err != nil || total != int64(len(all)) || len(all) < 2 {
		t.Fatalf("targets %+v of %d (%v)", all, total, err)
	}
	if all[0].Target != "+46812118532" || all[0].Count != 3 || all[0].Dialled != 1 || all[1].Target != "+449098790123" || all[1].Count != 2 {
		t.Errorf("targets %+v, want the one called 3 times first", all)
	}
	if n, err := s.CountTargets(ctx, store.TargetOptions{}); n != total || err != nil {
		t.Errorf("CountTargets %d (%v), want %d", n, err, total)
	}
	var page []store.Target
	n, err := s.Targets(ctx, store.TargetOptions{Limit: 1, Offset: 1}, func(x store.Target) error { page = append(page, x); return nil })
	if err != nil || n != total || len(page) != 1 || page[0] != all[1] {
		t.Errorf("page 2 of 1: %+v of %d (%v), want %+v of %d", page, n, err, all[1], total)
	}
	late := event.FormatTime(base.Add(time.Hour))
	if n, err := s.CountTargets(ctx, store.TargetOptions{Since: late}); n != 1 || err != nil {
		t.Errorf("%d targets last seen after 11:00 (%v), want 1", n, err)
	}
	if n, err := s.CountTargets(ctx, store.TargetOptions{FirstSince: late}); n != 1 || err != nil {
		t.Errorf("%d targets first seen after 11:00 (%v), want 1", n, err)
	}
	if x, ok, err := s.Target(ctx, "+449098790123"); !ok || err != nil || x != all[1] {
		t.Errorf("Target %+v %v (%v), want %+v", x, ok, err, all[1])
	}
	if _, ok, err := s.Target(ctx, "+449098790999"); ok || err != nil {
		t.Errorf("a target never called: found %v (%v)", ok, err)
	}
}

// TopNumbers ranks numbers by all their calls, within those last seen in the window.
func topNumbers(t *testing.T, s Backend) {
	ctx := context.Background()
	must(t, s.Write(ctx, []*event.Event{ev(0, "198.51.100.1", "100"), ev(time.Second, "198.51.100.1", "100"),
		ev(2*time.Second, "198.51.100.1", "100"), ev(0, "198.51.100.1", "200"), ev(2*time.Hour, "198.51.100.1", "300"),
		ev(2*time.Hour, "198.51.100.2", "300"), ev(0, "198.51.100.1", event.NotFound)}))
	top, n, err := s.TopNumbers(ctx, "", 2)
	if want := []store.ValueCount{{Value: "100", Count: 3}, {Value: "300", Count: 2}}; err != nil || n != 3 || !reflect.DeepEqual(top, want) {
		t.Errorf("top numbers %v of %d (%v), want %v of 3", top, n, err, want)
	}
	top, n, err = s.TopNumbers(ctx, event.FormatTime(base.Add(time.Hour)), 0)
	if want := []store.ValueCount{{Value: "300", Count: 2}}; err != nil || n != 1 || !reflect.DeepEqual(top, want) {
		t.Errorf("top numbers since 11:00 %v of %d (%v), want %v of 1", top, n, err, want)
	}
}

// A pause longer than CampaignGap splits a source's campaign; a later batch extends the
// campaign its events continue, a late one (catch-up, import) the earlier campaign it fits.
func campaigns(t *testing.T, s Backend) {
	ctx := context.Background()
	a, b := "198.51.100.1", "198.51.100.2"
	must(t, s.Write(ctx, []*event.Event{ev(0, a, "100"), ev(5*time.Minute, b, "100"), ev(10*time.Minute, a, "100"),
		ev(50*time.Minute, a, "100")}))
	must(t, s.Write(ctx, []*event.Event{ev(70*time.Minute, a, "100"), ev(15*time.Minute, a, "100")}))
	var got []store.Campaign
	must(t, s.Campaigns(ctx, store.ListOptions{}, func(c store.Campaign) error { c.ID = 0; got = append(got, c); return nil }))
	at := func(d time.Duration) string { return event.FormatTime(base.Add(d)) }
	camp := func(ip string, first, last time.Duration, n int64) store.Campaign {
		return store.Campaign{SourceIP: ip, Tool: "sipvicious", UserAgent: "friendly-scanner", FirstSeen: at(first), LastSeen: at(last), Count: n}
	}
	want := []store.Campaign{camp(a, 50*time.Minute, 70*time.Minute, 2), camp(a, 0, 15*time.Minute, 3), camp(b, 5*time.Minute, 5*time.Minute, 1)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("campaigns\n got %+v\nwant %+v", got, want)
	}
	if n, err := s.CountCampaigns(ctx, ""); n != 3 || err != nil {
		t.Errorf("%d campaigns (%v), want 3", n, err)
	}
	if n, err := s.CountCampaigns(ctx, at(10*time.Minute)); n != 2 || err != nil {
		t.Errorf("%d campaigns last seen after 10:10 (%v), want 2", n, err)
	}
	got = nil
	must(t, s.Campaigns(ctx, store.ListOptions{Limit: 1, Offset: 1}, func(c store.Campaign) error { c.ID = 0; got = append(got, c); return nil }))
	if !reflect.DeepEqual(got, want[1:2]) {
		t.Errorf("campaign page %+v, want %+v", got, want[1:2])
	}
}

// Feed pages select keys by source, verification, count and window, in key, change and
// last-seen order; the change sequence grows with each write, and the keys a write touched
// are those after the sequence read before it.
func feedPages(t *testing.T, s Backend) {
	ctx := context.Background()
	verified := ev(0, "198.51.100.1", "100")
	verified.SourceVerified = true
	must(t, s.Write(ctx, []*event.Event{verified, ev(time.Minute, "198.51.100.2", "100"), ev(2*time.Minute, "198.51.100.2", "100"),
		fromPeer(ev(3*time.Minute, "198.51.100.3", "100"), "12D3KooWPeerA", true),
		fromPeer(ev(4*time.Minute, "198.51.100.4", "100"), "12D3KooWPeerB", false)}))
	keys := func(f store.FeedFilter, o store.FeedOrder, after store.FeedItem, limit int) []string {
		t.Helper()
		page, err := s.FeedPage(ctx, store.IPAddresses, f, o, after, limit)
		must(t, err)
		var k []string
		for _, it := range page {
			k = append(k, it.Key)
		}
		return k
	}
	for _, c := range []struct {
		name string
		f    store.FeedFilter
		want []string
	}{
		{"trusted", store.FeedFilter{}, []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"}},
		{"all", store.FeedFilter{Source: store.SourceAll}, []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"}},
		{"local", store.FeedFilter{Source: store.SourceLocal}, []string{"198.51.100.1", "198.51.100.2"}},
		{"verified", store.FeedFilter{Verified: true}, []string{"198.51.100.1"}},
		{"twice", store.FeedFilter{MinCount: 2}, []string{"198.51.100.2"}},
		{"window", store.FeedFilter{Source: store.SourceAll, Since: event.FormatTime(base.Add(time.Minute)),
			Until: event.FormatTime(base.Add(3 * time.Minute))}, []string{"198.51.100.2", "198.51.100.3"}},
	} {
		if got := keys(c.f, store.ByKey, store.FeedItem{}, 100); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	page, err := s.FeedPage(ctx, store.IPAddresses, store.FeedFilter{Source: store.SourceAll}, store.ByLastSeen, store.FeedItem{}, 2)
	must(t, err)
	if len(page) != 2 || page[0].Key != "198.51.100.1" || page[1].Key != "198.51.100.2" || page[1].Count != 2 || page[0].Verified != 1 {
		t.Fatalf("first page by last seen %+v", page)
	}
	if got := keys(store.FeedFilter{Source: store.SourceAll}, store.ByLastSeen, page[1], 2); !reflect.DeepEqual(got, []string{"198.51.100.3", "198.51.100.4"}) {
		t.Errorf("second page by last seen %v", got)
	}

	epoch, seq, err := s.ChangeSeq(ctx)
	if err != nil || epoch == 0 {
		t.Fatalf("ChangeSeq %d %d (%v)", epoch, seq, err)
	}
	must(t, s.Write(ctx, []*event.Event{ev(5*time.Minute, "198.51.100.2", "100"), ev(6*time.Minute, "198.51.100.5", "100")}))
	epoch2, seq2, err := s.ChangeSeq(ctx)
	if err != nil || epoch2 != epoch || seq2 <= seq {
		t.Fatalf("after a write: epoch %d seq %d (%v), before %d %d", epoch2, seq2, err, epoch, seq)
	}
	changed, err := s.FeedPage(ctx, store.IPAddresses, store.FeedFilter{}, store.BySeq, store.FeedItem{Seq: seq + 1}, 100)
	must(t, err)
	var got []string
	for _, it := range changed {
		got = append(got, it.Key)
		if it.Seq <= seq || it.Seq > seq2 {
			t.Errorf("%s changed at %d, not in (%d, %d]", it.Key, it.Seq, seq, seq2)
		}
	}
	if want := []string{"198.51.100.2", "198.51.100.5"}; !reflect.DeepEqual(got, want) {
		t.Errorf("changed after %d: %v, want %v", seq, got, want)
	}
}

// A batch written again with new events in it (a retry after the acknowledgement was lost,
// with what queued meanwhile) adds and counts only the new ones.
func retriedBatch(t *testing.T, s Backend) {
	ctx := context.Background()
	first := []*event.Event{ev(0, "198.51.100.1", "100"), ev(time.Second, "198.51.100.1", "100"), ev(2*time.Second, "198.51.100.1", "200")}
	if n, err := s.WriteCount(ctx, first); n != 3 || err != nil {
		t.Fatalf("first write added %d (%v), want 3", n, err)
	}
	retry := append(first[1:], ev(3*time.Second, "198.51.100.1", "100"), ev(4*time.Second, "198.51.100.2", "100"))
	if n, err := s.WriteCount(ctx, retry); n != 2 || err != nil {
		t.Errorf("retry added %d (%v), want 2", n, err)
	}
	if n, err := s.WriteCount(ctx, retry); n != 0 || err != nil {
		t.Errorf("second retry added %d (%v), want 0", n, err)
	}
	if a, _, err := s.IP(ctx, "198.51.100.1"); a.Count != 4 || err != nil {
		t.Errorf("IP counted %d (%v), want 4", a.Count, err)
	}
	if a, _, err := s.Number(ctx, "100"); a.Count != 4 || err != nil {
		t.Errorf("number counted %d (%v), want 4", a.Count, err)
	}
	if top, _, err := s.Top(ctx, store.SIPMethods, "", 0); err != nil || len(top) != 1 || top[0].Count != 5 {
		t.Errorf("methods %v (%v), want 5 INVITEs", top, err)
	}
	if n, err := s.Count(ctx, store.IPAddresses, ""); n != 2 || err != nil {
		t.Errorf("%d IPs (%v), want 2", n, err)
	}
}

// Writers at once, each writing events the others write too (in another order) and its
// own: every event is stored and counted once.
func concurrentWriters(t *testing.T, s Backend) {
	ctx := context.Background()
	const writers, shared, own, batch = 6, 120, 60, 30
	ips := []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"}
	var common []*event.Event
	for i := range shared {
		common = append(common, ev(time.Duration(i)*time.Second, ips[i%len(ips)], fmt.Sprint(100+i%7)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		mine := make([]*event.Event, 0, shared+own)
		for _, e := range common {
			c := *e
			mine = append(mine, &c)
		}
		for i := range own {
			mine = append(mine, ev(time.Duration(i)*time.Second+time.Millisecond*time.Duration(w+1), ips[(i+w)%len(ips)], fmt.Sprint(100+i%7)))
		}
		r := rand.New(rand.NewPCG(uint64(w), 1))
		r.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(mine) > 0 {
				n := min(batch, len(mine))
				if err := s.Write(ctx, mine[:n]); err != nil {
					errs <- err
					return
				}
				mine = mine[n:]
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := int64(shared + writers*own)
	if n, err := s.CountEvents(ctx); n != want || err != nil {
		t.Errorf("%d events (%v), want %d", n, err, want)
	}
	var sum int64
	for _, ip := range ips {
		a, _, err := s.IP(ctx, ip)
		must(t, err)
		sum += a.Count
	}
	if sum != want {
		t.Errorf("IP counts sum to %d, want %d", sum, want)
	}
	if n, err := s.Count(ctx, store.IPAddresses, ""); n != int64(len(ips)) || err != nil {
		t.Errorf("%d IPs (%v), want %d", n, err, len(ips))
	}
	if n, err := s.Count(ctx, store.CalledNumbers, ""); n != 7 || err != nil {
		t.Errorf("%d numbers (%v), want 7", n, err)
	}
	if top, _, err := s.Top(ctx, store.SIPMethods, "", 0); err != nil || len(top) != 1 || top[0].Count != want {
		t.Errorf("methods %v (%v), want %d", top, err, want)
	}
	sum = 0
	must(t, s.Campaigns(ctx, store.ListOptions{}, func(c store.Campaign) error { sum += c.Count; return nil }))
	if n, err := s.CountCampaigns(ctx, ""); sum != want || n != int64(len(ips)) || err != nil {
		t.Errorf("%d campaigns (%v) counting %d events, want %d counting %d", n, err, sum, len(ips), want)
	}
	tl, err := s.Timeline(ctx, base, base.Add(10*time.Minute), 10*time.Minute)
	if err != nil || len(tl) != 2 || tl[0].Count != want {
		t.Errorf("timeline %+v (%v), want %d in the first bucket", tl, err, want)
	}
}

// A folded event stands for RepeatCount probes: every count adds that many.
func foldedWeights(t *testing.T, s Backend) {
	ctx := context.Background()
	s.SetLabeler(intel.NewLabeler(""))
	folded := ev(0, "130.149.1.1", "00449098790123")
	folded.RepeatCount = 500
	must(t, s.Write(ctx, []*event.Event{folded, ev(time.Minute, "130.149.1.1", "00449098790123")}))
	for _, get := range []func() (store.Aggregate, bool, error){
		func() (store.Aggregate, bool, error) { return s.IP(ctx, "130.149.1.1") },
		func() (store.Aggregate, bool, error) { return s.Number(ctx, "00449098790123") },
	} {
		if a, ok, err := get(); !ok || err != nil || a.Count != 501 || a.Local != 501 {
			t.Errorf("aggregate %+v (%v %v), want 501 sightings", a, ok, err)
		}
	}
	if top, _, err := s.Top(ctx, store.SIPMethods, "", 0); err != nil || len(top) != 1 || top[0].Count != 501 {
		t.Errorf("methods %v (%v), want 501", top, err)
	}
	if top, _, err := s.Top(ctx, store.Countries, "", 0); err != nil || len(top) != 1 || top[0].Count != 501 {
		t.Errorf("countries %v (%v), want 501", top, err)
	}
	if top, _, err := s.TopNumbers(ctx, "", 0); err != nil || len(top) != 1 || top[0].Count != 501 {
		t.Errorf("top numbers %v (%v), want 501", top, err)
	}
	if x, ok, err := s.Target(ctx, "+449098790123"); !ok || err != nil || x.Count != 501 {
		t.Errorf("target %+v %v (%v), want 501 calls", x, ok, err)
	}
	tl, err := s.Timeline(ctx, base, base.Add(time.Minute), time.Minute)
	if err != nil || len(tl) != 2 || tl[0].Count != 500 || tl[1].Count != 1 {
		t.Errorf("timeline %+v (%v), want 500 then 1", tl, err)
	}
	var camps []store.Campaign
	must(t, s.Campaigns(ctx, store.ListOptions{}, func(c store.Campaign) error { camps = append(camps, c); return nil }))
	if len(camps) != 1 || camps[0].Count != 501 {
		t.Errorf("campaigns %+v, want one of 501", camps)
	}
	var got []*event.Event
	must(t, s.Events(ctx, func(e *event.Event) error { got = append(got, e); return nil }))
	if len(got) != 2 || got[0].RepeatCount != 500 || got[0].Weight() != 500 {
		t.Errorf("events read back %+v, want the first with repeat_count 500", got)
	}
}
