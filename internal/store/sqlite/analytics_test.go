package sqlite

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

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
		{store.Prefixes, map[string]int64{"00": 3, "900": 1, "none": 3}},
		{store.Numbers, map[string]int64{"00449098790123": 3, "900449098790123": 1, "100": 2, "1' OR '1'='1": 1}},
		{store.Payloads, map[string]int64{"sqli@to": 1}},
		{store.TargetCountries, map[string]int64{"GB": 4}},
	} {
		if got := top(t, s, c.d); !reflect.DeepEqual(got, c.want) {
			t.Errorf("dimension %d: %v, want %v", c.d, got, c.want)
		}
	}

	var targets []store.Target
	if err := s.Targets(ctx, store.TargetOptions{}, func(t store.Target) error { targets = append(targets, t); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []store.Target{
		{Target: "+449098790123", Country: "GB", Type: "premium-rate", FirstSeen: first[0].Timestamp, LastSeen: event.FormatTime(time.Date(2026, 11, 23, 0, 20, 0, 0, time.UTC)), Count: 4, Dialled: 2},
		{Target: "100", FirstSeen: spoofed.Timestamp, LastSeen: event.FormatTime(time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)), Count: 2, Dialled: 1},
	}
	if !reflect.DeepEqual(targets, want) {
		t.Errorf("targets\n%+v\nwant\n%+v", targets, want)
	}
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
