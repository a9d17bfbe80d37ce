package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store"
)

// at is ev at a given offset from 2026-11-23 00:00 UTC.
func at(i int, d time.Duration, ip, number, tool string) *event.Event {
	e := ev(i, ip, number)
	e.Timestamp = event.FormatTime(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC).Add(d))
	e.Tool = tool
	return e
}

func top(t *testing.T, s *Store, d store.Dimension) map[string]int64 {
	t.Helper()
	vals, _, err := s.Top(context.Background(), d, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, v := range vals {
		m[v.Value] = v.Count
	}
	return m
}

func TestAnalytics(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	s.SetLabeler(intel.NewLabeler(""))

	spoofed := at(3, 2*time.Minute, "130.149.1.1", "100", "sipvicious")
	spoofed.UASpoofed = true
	sqli := at(4, 3*time.Minute, "127.0.0.1", "1' OR '1'='1", "")
	sqli.Payload = []event.Payload{{Kind: "sqli", Where: "to"}}
	first := []*event.Event{
		at(1, 0, "130.149.1.1", "00449098790123", "sipvicious"),
		at(2, time.Minute, "130.149.1.1", "900449098790123", "sipvicious"),
		spoofed, sqli,
		at(5, 3*time.Minute+30*time.Second, "130.149.1.1", "00449098790123", "sipsak"),
	}
	if err := s.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Continues the sipvicious campaign (within 30 minutes of its last event) in a later
	// batch, and starts a new one after a pause of an hour.
	if err := s.Write(ctx, []*event.Event{
		at(6, 20*time.Minute, "130.149.1.1", "00449098790123", "sipvicious"),
		at(7, 2*time.Hour, "130.149.1.1", "100", "sipvicious"),
	}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		d    store.Dimension
		want map[string]int64
	}{
		{store.Tools, map[string]int64{"sipvicious": 5, "sipsak": 1, "unknown": 1}},
		{store.SpoofedTools, map[string]int64{"sipvicious": 1}},
		{store.Countries, map[string]int64{"DE": 6, "ZZ": 1}},
		{store.Prefixes, map[string]int64{"00": 3, "900": 1, "none": 2}}, // the injection is no dial string
		{store.Payloads, map[string]int64{"sqli@to": 1}},
		{store.TargetCountries, map[string]int64{"GB": 4}},
	} {
		if got := top(t, s, c.d); !reflect.DeepEqual(got, c.want) {
			t.Errorf("dimension %d: %v, want %v", c.d, got, c.want)
		}
	}

	nums, distinct, err := s.TopNumbers(ctx, "", 2)
	if err != nil || distinct != 4 || !reflect.DeepEqual(nums, []store.ValueCount{{Value: "00449098790123", Count: 3}, {Value: "100", Count: 2}}) {
		t.Errorf("top numbers %v of %d (%v)", nums, distinct, err)
	}
	var targets []store.Target
	total, err := s.Targets(ctx, store.TargetOptions{}, func(t store.Target) error { targets = append(targets, t); return nil })
	if err != nil || total != 2 {
		t.Fatalf("%d targets (%v)", total, err)
	}
	if total, err := s.Targets(ctx, store.TargetOptions{Limit: 1, Offset: 5}, func(store.Target) error { return nil }); err != nil || total != 2 {
		t.Errorf("past the end: %d targets (%v)", total, err)
	}
	want := []store.Target{
		{Target: "+449098790123", Country: "GB", Type: "premium-rate", FirstSeen: first[0].Timestamp, LastSeen: event.FormatTime(time.Date(2026, 11, 23, 0, 20, 0, 0, time.UTC)), Count: 4, Dialled: 2},
		{Target: "100", FirstSeen: spoofed.Timestamp, LastSeen: event.FormatTime(time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)), Count: 2, Dialled: 1},
	}
	if !reflect.DeepEqual(targets, want) {
		t.Errorf("targets\n%+v\nwant\n%+v", targets, want)
	}
	// With more targets than are kept between requests, each request groups them itself,
	// and pages and counts the same.
	defer func(n int) { maxCachedTargets = n }(maxCachedTargets)
	maxCachedTargets = 1
	s.targets = targetsCache{}
	for _, o := range []store.TargetOptions{{}, {Limit: 1}, {Limit: 1, Offset: 1}, {FirstSince: spoofed.Timestamp}} {
		var got []store.Target
		total, err := s.Targets(ctx, o, func(t store.Target) error { got = append(got, t); return nil })
		wantPage := want[min(o.Offset, len(want)):]
		if o.Limit > 0 {
			wantPage = wantPage[:min(o.Limit, len(wantPage))]
		}
		wantTotal := int64(2)
		if o.FirstSince != "" {
			wantPage, wantTotal = want[1:], 1
		}
		if err != nil || total != wantTotal || !reflect.DeepEqual(got, wantPage) {
			t.Errorf("uncached %+v: %d %+v (%v), want %d %+v", o, total, got, err, wantTotal, wantPage)
		}
	}
	maxCachedTargets = 100_000
	if n, err := s.CountTargets(ctx, store.TargetOptions{FirstSince: spoofed.Timestamp}); err != nil || n != 1 {
		t.Errorf("fresh targets: %d %v, want 1", n, err)
	}
	if got, ok, err := s.Target(ctx, "+449098790123"); err != nil || !ok || got != want[0] {
		t.Errorf("Target: %+v %v %v", got, ok, err)
	}

	// Reopened, the store finds the open campaign in the database rather than its cache.
	s.Close()
	if s, err = Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	s.SetLabeler(intel.NewLabeler(""))
	if err := s.Write(ctx, []*event.Event{at(8, 2*time.Hour+10*time.Minute, "130.149.1.1", "100", "sipvicious")}); err != nil {
		t.Fatal(err)
	}
	var camps []store.Campaign
	if err := s.Campaigns(ctx, store.ListOptions{}, func(c store.Campaign) error { camps = append(camps, c); return nil }); err != nil {
		t.Fatal(err)
	}
	type short struct {
		ip, tool, country string
		from, to          time.Duration
		n                 int64
	}
	var got []short
	base := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	for _, c := range camps {
		f, _ := event.ParseTime(c.FirstSeen)
		l, _ := event.ParseTime(c.LastSeen)
		got = append(got, short{c.SourceIP, c.Tool, c.Country, f.Sub(base), l.Sub(base), c.Count})
	}
	wantCamps := []short{
		{"130.149.1.1", "sipvicious", "DE", 2 * time.Hour, 2*time.Hour + 10*time.Minute, 2},
		{"130.149.1.1", "sipvicious", "DE", 0, 20 * time.Minute, 4},
		{"130.149.1.1", "sipsak", "DE", 3*time.Minute + 30*time.Second, 3*time.Minute + 30*time.Second, 1},
		{"127.0.0.1", "unknown", "ZZ", 3 * time.Minute, 3 * time.Minute, 1},
	}
	if !reflect.DeepEqual(got, wantCamps) {
		t.Errorf("campaigns\n%+v\nwant\n%+v", got, wantCamps)
	}
	if n, err := s.CountCampaigns(ctx, event.FormatTime(base.Add(time.Hour))); err != nil || n != 1 {
		t.Errorf("campaigns in the last hour: %d %v", n, err)
	}

	tl, err := s.Timeline(ctx, base, base.Add(4*time.Minute+30*time.Second), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var counts []int64
	for _, b := range tl {
		counts = append(counts, b.Count)
	}
	if !reflect.DeepEqual(counts, []int64{1, 1, 1, 2, 0}) || tl[1].Time != "2026-11-23 00:01:00.000000000" {
		t.Errorf("timeline %+v", tl)
	}
	tl, err = s.Timeline(ctx, base, base.Add(3*time.Hour), time.Hour)
	if err != nil || len(tl) != 4 || tl[0].Count != 6 || tl[2].Count != 2 {
		t.Errorf("hourly timeline %+v %v", tl, err)
	}

	// Tool, spoofing and payloads come back with the event.
	var back []*event.Event
	if err := s.Events(ctx, func(e *event.Event) error { back = append(back, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if back[2].Tool != "sipvicious" || !back[2].UASpoofed || !reflect.DeepEqual(back[3].Payload, sqli.Payload) {
		t.Errorf("read back %+v / %+v", back[2], back[3])
	}
}

// A store without a labeler still counts tools and payloads, and leaves countries and
// targets out.
func TestAnalyticsWithoutLabeler(t *testing.T) {
	s := open(t)
	if err := s.Write(context.Background(), []*event.Event{at(1, 0, "130.149.1.1", "00449098790123", "sipp")}); err != nil {
		t.Fatal(err)
	}
	if got := top(t, s, store.Tools); got["sipp"] != 1 {
		t.Errorf("tools %v", got)
	}
	if got := top(t, s, store.Countries); len(got) != 0 {
		t.Errorf("countries %v", got)
	}
	if n, err := s.CountTargets(context.Background(), store.TargetOptions{}); err != nil || n != 0 {
		t.Errorf("targets %d %v", n, err)
	}
}

// BenchmarkWriteLabeled is what the analytics cost the store's writer: the same batches of
// scanner events (tools, numbers behind prefixes, 20 sources) written with and without the
// labeler (countries, targets) in one run, alternating.
//
//	go test -run '^$' -bench WriteLabeled -benchtime 1x ./internal/store/sqlite
func BenchmarkWriteLabeled(b *testing.B) {
	ctx := context.Background()
	const batches, size = 100, 1000
	prefixes := []string{"", "00", "000", "9011", "900", "+"}
	write := func(labeled bool) float64 {
		s, err := Open(ctx, filepath.Join(b.TempDir(), "b.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if labeled {
			s.SetLabeler(intel.NewLabeler(""))
		}
		i := 0
		var spent time.Duration
		for range batches {
			batch := make([]*event.Event, size)
			for j := range batch {
				i++
				e := ev(i%60, fmt.Sprintf("198.51.%d.%d", i%7, i%20), prefixes[i%len(prefixes)]+fmt.Sprint(4420000000+i%5000))
				e.UUID = uuid.Must(uuid.NewV7()).String()
				e.Timestamp = event.FormatTime(time.Date(2026, 11, 23, 0, 0, 0, i*1000, time.UTC))
				e.Tool = "sipvicious"
				batch[j] = e
			}
			start := time.Now()
			if err := s.Write(ctx, batch); err != nil {
				b.Fatal(err)
			}
			spent += time.Since(start)
		}
		return float64(batches*size) / spent.Seconds()
	}
	var plain, labeled float64
	for range b.N {
		for range 2 {
			plain += write(false)
			labeled += write(true)
		}
	}
	b.ReportMetric(plain/float64(2*b.N), "events/s-plain")
	b.ReportMetric(labeled/float64(2*b.N), "events/s-labeled")
	b.ReportMetric(labeled/plain, "x-plain")
}

// Late events (a peer's catch-up, an import) join the campaign they belong to, in the same
// batch or a later one, and the store goes on growing the latest campaign afterwards.
func TestCampaignsWithLateEvents(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	noon := 12 * time.Hour
	ip := "198.51.100.9"
	write := func(ds ...time.Duration) {
		t.Helper()
		var batch []*event.Event
		for _, d := range ds {
			e := at(0, d, ip, "100", "sipvicious")
			e.UUID = uuid.Must(uuid.NewV7()).String()
			batch = append(batch, e)
		}
		if err := s.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	write(noon, noon+10*time.Minute, 10*time.Hour, noon-5*time.Minute) // 10:00 alone; 11:55-12:10
	write(noon + 15*time.Minute)                                       // continues 11:55-12:10
	write(10*time.Hour + 20*time.Minute)                               // late: continues 10:00
	write(9 * time.Hour)                                               // late, apart from both: its own
	write(noon + 30*time.Minute)                                       // still the latest
	var got []string
	if err := s.Campaigns(ctx, store.ListOptions{}, func(c store.Campaign) error {
		got = append(got, fmt.Sprintf("%s-%s %d", c.FirstSeen[11:16], c.LastSeen[11:16], c.Count))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"11:55-12:30 5", "10:00-10:20 2", "09:00-09:00 1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("campaigns %v, want %v", got, want)
	}
}

// A peer's made-up tool and payload names, and a finding repeated, count as unknown and
// other, once: what a peer sends cannot add values to the statistics.
func TestPeerLabelsAreBounded(t *testing.T) {
	s := open(t)
	var batch []*event.Event
	for i := range 10 {
		e := at(i, time.Duration(i)*time.Second, "203.0.113.5", "100", fmt.Sprintf("made-up-%d", i))
		e.FromPeer, e.Peer = true, "12D3KooWPeer"
		for j := range 64 {
			e.Payload = append(e.Payload, event.Payload{Kind: "sqli", Where: "to"}, event.Payload{Kind: fmt.Sprintf("k%d", j), Where: fmt.Sprintf("h%d", j)})
		}
		batch = append(batch, e)
	}
	if err := s.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if got := top(t, s, store.Tools); !reflect.DeepEqual(got, map[string]int64{"unknown": 10}) {
		t.Errorf("tools %v", got)
	}
	if got := top(t, s, store.Payloads); !reflect.DeepEqual(got, map[string]int64{"sqli@to": 10, "other@other": 10}) {
		t.Errorf("payloads %v", got)
	}
}
