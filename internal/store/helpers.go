package store

// Helpers both backends share: what a counted value, a target, a campaign gap and a
// payload column are.

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

// IsTarget says whether a target is a number worth a row: digits, perhaps after a +, at
// least three of them (an extension a scanner enumerates counts; a name does not).
func IsTarget(t string) bool {
	d := strings.TrimPrefix(t, "+")
	if len(d) < 3 || len(d) > 32 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}

// ShiftTime moves an event_timestamp by d (a malformed one is returned as it is).
func ShiftTime(ts string, d time.Duration) string {
	t, err := event.ParseTime(ts)
	if err != nil {
		return ts
	}
	return event.FormatTime(t.Add(d))
}

// Apart says whether b is more than CampaignGap after a (timestamps in event layout).
func Apart(a, b string) bool {
	ta, err1 := event.ParseTime(a)
	tb, err2 := event.ParseTime(b)
	if err1 != nil || err2 != nil {
		return a != b
	}
	return tb.Sub(ta) > CampaignGap
}

func PayloadJSON(p []event.Payload) string {
	if len(p) == 0 {
		return ""
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "" // two strings a field: cannot fail
	}
	return string(b)
}

func ParsePayload(s string) ([]event.Payload, error) {
	if s == "" {
		return nil, nil
	}
	var p []event.Payload
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return nil, fmt.Errorf("stored payload %q is not JSON: %w", s, err)
	}
	return p, nil
}

// CountedValue cuts v to MaxCountedValue characters (as SQL's substr does in the migration).
func CountedValue(v string) string {
	if len(v) <= MaxCountedValue {
		return v
	}
	n := 0
	for i := range v {
		if n == MaxCountedValue {
			return v[:i]
		}
		n++
	}
	return v
}

// FillTrusted sets Trusted on the peer events of batch, as a store reads them back, for a
// copy into another store (dialtrap migrate). Trust is kept per (list, key, peer), not per
// event: trusted says whether a peer is recorded trusted for a key. A peer event counts as
// trusted when its peer is recorded trusted for its source IP and, if it has a number, for
// that number too. Written again in order, the events then rebuild the same records, so the
// copy's trusted-peer counts and trusted feeds are the source's. Verified sightings from
// trusted peers are exact unless a peer's trust changed while it reported one key: its
// earlier, untrusted events of that key then count as trusted too.
func FillTrusted(batch []*event.Event, trusted func(l List, key, peer string) (bool, error)) error {
	type keyPeer struct {
		l         List
		key, peer string
	}
	seen := map[keyPeer]bool{}
	lookup := func(kp keyPeer) (bool, error) {
		if t, ok := seen[kp]; ok {
			return t, nil
		}
		t, err := trusted(kp.l, kp.key, kp.peer)
		if err != nil {
			return false, err
		}
		seen[kp] = t
		return t, nil
	}
	for _, e := range batch {
		if !e.FromPeer || e.Peer == "" {
			continue
		}
		t, err := lookup(keyPeer{IPAddresses, e.SourceIP, e.Peer})
		if err != nil {
			return err
		}
		if t && CountsAsNumber(e.CalledNumber) {
			if t, err = lookup(keyPeer{CalledNumbers, e.CalledNumber, e.Peer}); err != nil {
				return err
			}
		}
		e.Trusted = t
	}
	return nil
}

// Add counts one sighting of the aggregate's key: e, by the probes it stands for
// (event.Weight), where it was seen and whether its source was proven.
func (a *Aggregate) Add(e *event.Event) {
	ts, w := e.Timestamp, e.Weight()
	if a.FirstSeen == "" || ts < a.FirstSeen {
		a.FirstSeen = ts
	}
	a.LastSeen = max(a.LastSeen, ts)
	a.Count += w
	if !e.FromPeer {
		a.Local += w
	}
	if e.SourceVerified {
		a.Verified += w
		switch {
		case !e.FromPeer:
			a.VerifiedLocal += w
		case e.Trusted:
			a.VerifiedTrusted += w
		}
	}
}

// AddSighting counts e in m's aggregate of key, making it on first sight.
func AddSighting(m map[string]*Aggregate, key string, e *event.Event) {
	a, ok := m[key]
	if !ok {
		a = &Aggregate{Key: key}
		m[key] = a
	}
	a.Add(e)
}
