package hits

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

type memNotifier struct {
	mu     sync.Mutex
	alerts []Alert
}

func (m *memNotifier) Name() string { return "mem" }
func (m *memNotifier) Notify(a Alert) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.alerts = append(m.alerts, a)
	return nil
}

func TestRingPaging(t *testing.T) {
	r := New(Config{Capacity: 3})
	for i := range 5 {
		r.Record(Hit{Kind: KindNumber, Value: fmt.Sprint(i)})
	}
	for _, c := range []struct {
		limit, offset int
		want          string
	}{{0, 0, "4 3 2"}, {2, 0, "4 3"}, {2, 1, "3 2"}, {5, 2, "2"}, {1, 3, ""}} {
		total, page := r.Page(c.limit, c.offset)
		var got []string
		for _, h := range page {
			got = append(got, h.Value)
		}
		if total != 5 || strings.Join(got, " ") != c.want {
			t.Errorf("Page(%d, %d) = %d %v, want 5 %s", c.limit, c.offset, total, got, c.want)
		}
	}
	if st := r.Stats(); st.Hits != 5 || st.FellOut != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestAlertRules(t *testing.T) {
	clock := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		rules Rules
		hits  []Hit
		step  time.Duration
		want  int
	}{
		{"one per window", Rules{}, []Hit{{Matched: "a", SeenCount: 1, SeenLocally: true}, {Matched: "a", SeenCount: 2, SeenLocally: true}}, time.Minute, 1},
		{"window passed", Rules{Window: time.Minute}, []Hit{{Matched: "a", SeenCount: 1, SeenLocally: true}, {Matched: "a", SeenCount: 2, SeenLocally: true}}, time.Minute, 2},
		{"per key", Rules{}, []Hit{{Matched: "a", SeenCount: 1, SeenLocally: true}, {Matched: "b", SeenCount: 2, SeenLocally: true}}, 0, 2},
		{"min count", Rules{MinCount: 3}, []Hit{{Matched: "a", SeenCount: 2, SeenLocally: true}, {Matched: "b", SeenCount: 3, SeenLocally: true}}, 0, 1},
		{"trusted refuses peers only", Rules{}, []Hit{{Matched: "a", SeenCount: 5, SeenByPeers: 2}}, 0, 0},
		{"trusted takes trusted peers", Rules{}, []Hit{{Matched: "a", SeenCount: 5, SeenByPeers: 2, SeenByTrustedPeers: 1}}, 0, 1},
		{"local refuses trusted peers", Rules{Source: "local"}, []Hit{{Matched: "a", SeenCount: 5, SeenByPeers: 2, SeenByTrustedPeers: 1}}, 0, 0},
		{"all", Rules{Source: "all"}, []Hit{{Matched: "a", SeenCount: 5, SeenByPeers: 2}}, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := clock
			n := &memNotifier{}
			r := New(Config{Rules: c.rules, Notifiers: []Notifier{n}, Now: func() time.Time { return now }})
			for _, h := range c.hits {
				h.Kind = KindNumber
				r.consider(h)
				now = now.Add(c.step)
			}
			if len(n.alerts) != c.want {
				t.Errorf("%d alerts, want %d", len(n.alerts), c.want)
			}
		})
	}
}

func TestRecordNeverBlocks(t *testing.T) {
	n := &memNotifier{}
	r := New(Config{Capacity: 2, Notifiers: []Notifier{n}}) // not started: nobody reads the ring
	for range 10 {
		r.Record(Hit{Kind: KindIP, Matched: "192.0.2.1", SeenCount: 1, SeenLocally: true})
	}
	r.Start()
	r.Close()
	if st := r.Stats(); st.Dropped != 8 || st.Hits != 10 {
		t.Errorf("stats %+v, want 8 dropped of 10", st)
	}
	if len(n.alerts) != 1 {
		t.Errorf("%d alerts, want 1", len(n.alerts))
	}
}

func TestReason(t *testing.T) {
	h := Hit{Kind: KindNumber, Value: "+46812345678", Matched: "0046812345678", SeenCount: 4, SeenLast: "2026-11-30 09:00:00.000000000",
		SeenLocally: true, Client: "192.0.2.10", Token: "pbx1", Source: SourceAPI}
	want := "number +46812345678 matched (as 0046812345678), seen 4 times, last 2026-11-30 09:00:00.000000000 by this node; asked by token pbx1 from 192.0.2.10"
	if got := NewAlert(h).Reason; got != want {
		t.Errorf("reason\n%s\nwant\n%s", got, want)
	}
}
