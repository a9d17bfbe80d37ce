package store

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
)

func TestAggregateAdd(t *testing.T) {
	var a Aggregate
	for _, e := range []*event.Event{
		{Timestamp: "2026-11-30 10:00:02.000000000", RepeatCount: 499, SourceVerified: true},
		{Timestamp: "2026-11-30 10:00:01.000000000"},
		{Timestamp: "2026-11-30 10:00:03.000000000", FromPeer: true, Trusted: true, RepeatCount: 10, SourceVerified: true},
		{Timestamp: "2026-11-30 10:00:04.000000000", FromPeer: true, RepeatCount: 1_000_000}, // a claim only
	} {
		a.Add(e)
	}
	want := Aggregate{FirstSeen: "2026-11-30 10:00:01.000000000", LastSeen: "2026-11-30 10:00:04.000000000",
		Count: 511, Local: 500, Verified: 509, VerifiedLocal: 499, VerifiedTrusted: 10}
	if a != want {
		t.Errorf("aggregate %+v\nwant      %+v", a, want)
	}
}

func TestIsTargetAndCountedValue(t *testing.T) {
	for _, c := range []struct {
		t    string
		want bool
	}{{"+449098790123", true}, {"100", true}, {"12", false}, {"' OR 1=1--", false}, {"+" + strings.Repeat("1", 33), false}} {
		if got := IsTarget(c.t); got != c.want {
			t.Errorf("IsTarget(%q) = %v", c.t, got)
		}
	}
	long := strings.Repeat("é", MaxCountedValue+5)
	if got := CountedValue(long); got != strings.Repeat("é", MaxCountedValue) {
		t.Errorf("CountedValue cut to %d bytes, want %d characters", len(got), MaxCountedValue)
	}
}

func TestFillTrusted(t *testing.T) {
	recorded := map[string]bool{"0|198.51.100.1|A": true, "1|100|A": true, "0|198.51.100.2|A": true}
	asked := 0
	lookup := func(l List, key, peer string) (bool, error) {
		asked++
		if key == "broken" {
			return false, errors.New("database gone")
		}
		return recorded[string(rune('0'+l))+"|"+key+"|"+peer], nil
	}
	batch := []*event.Event{
		{FromPeer: true, Peer: "A", SourceIP: "198.51.100.1", CalledNumber: "100"},
		{FromPeer: true, Peer: "A", SourceIP: "198.51.100.1", CalledNumber: "100"}, // asked once
		{FromPeer: true, Peer: "A", SourceIP: "198.51.100.2", CalledNumber: "200"}, // not for this number
		{FromPeer: true, Peer: "B", SourceIP: "198.51.100.1", CalledNumber: event.NotFound},
		{SourceIP: "198.51.100.1"}, // local
	}
	if err := FillTrusted(batch, lookup); err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, e := range batch {
		got = append(got, e.Trusted)
	}
	if want := []bool{true, true, false, false, false}; !slices.Equal(got, want) || asked != 5 {
		t.Errorf("trusted %v after %d lookups, want %v after 5", got, asked, want)
	}
	if err := FillTrusted([]*event.Event{{FromPeer: true, Peer: "A", SourceIP: "broken"}}, lookup); err == nil {
		t.Error("a failed lookup was not reported")
	}
}
