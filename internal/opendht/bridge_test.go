package opendht

import (
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/trust"
)

// memDHT stands in for the network in the bridge's own tests: it keeps what is put. The
// real library and Debian's dhtnode are the other side in dhtnode_test.go (-tags opendht)
// and in test/opendht.
type memDHT struct {
	mu  sync.Mutex
	put [][]byte
}

func (m *memDHT) Listen(func([]byte)) {}
func (m *memDHT) Put(b []byte) {
	m.mu.Lock()
	m.put = append(m.put, b)
	m.mu.Unlock()
}
func (m *memDHT) NodeID() string            { return strings.Repeat("ab", 20) }
func (m *memDHT) Port() int                 { return 4222 }
func (m *memDHT) Nodes() int                { return 3 }
func (m *memDHT) Puts() (ok, failed uint64) { return uint64(len(m.put)), 0 }
func (m *memDHT) Close()                    {}

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

const ownNode = "5f0c4b0e-0d8a-4b8e-9a43-2f5d2b1c7e10"

func newBridge(t *testing.T, minSightings int, rate float64) (*Bridge, *[]*event.Event) {
	t.Helper()
	var got []*event.Event
	b := New(Config{NodeID: ownNode, Rate: rate, Gate: trust.New(trust.Policy{MinSightings: minSightings}),
		Receive: func(e *event.Event) { got = append(got, e) }, Now: func() time.Time { return now }}, &memDHT{})
	return b, &got
}

// value is a report as the reference's nodes put it, with changes.
func value(change func(map[string]any)) []byte {
	v := map[string]any{
		"app_name": "sentrypeer", "app_version": "v3.0.0",
		"event_timestamp":    "2026-11-30 11:59:00.123456789",
		"event_uuid":         "6d1f1c52-7a8e-4f35-9c3a-0b8c2b1f0a11",
		"created_by_node_id": "3b0b7c2e-5a1e-4e0f-8b9e-2d7d5c0e9a44",
		"collected_method":   "responsive", "transport_type": "UDP",
		"source_ip": "198.51.100.77", "destination_ip": "203.0.113.5",
		"called_number": "0046812345678", "sip_method": "INVITE",
		"sip_user_agent": "friendly-scanner", "sip_message": "INVITE sip:0046812345678@203.0.113.5 SIP/2.0\r\n\r\n",
	}
	if change != nil {
		change(v)
	}
	b, _ := json.Marshal(v)
	return b
}

func TestValuesCheckedAndRefusedByReason(t *testing.T) {
	for _, tt := range []struct {
		name   string
		data   []byte
		reason string // "" when it passes
	}{
		{"reference value", value(nil), ""},
		{"trailing NUL tolerated", append(value(nil), 0), ""},
		{"address with port", value(func(v map[string]any) { v["source_ip"] = "[2001:db8::7]:5060" }), ""},
		{"T in the timestamp", value(func(v map[string]any) { v["event_timestamp"] = "2026-11-30T11:59:00Z" }), ""},
		{"too big", append(value(nil), make([]byte, MaxValue)...), ReasonSize},
		{"not JSON", []byte("garbage"), ReasonSchema},
		{"two objects", append(value(nil), value(nil)...), ReasonSchema},
		{"trailing bracket", append(value(nil), ']'), ReasonSchema},
		{"key given twice", []byte(strings.Replace(string(value(nil)), `{`, `{"source_ip":"192.0.2.1",`, 1)), ReasonSchema},
		{"JSON array", []byte(`[1,2]`), ReasonSchema},
		{"no source", value(func(v map[string]any) { delete(v, "source_ip") }), ReasonSchema},
		{"bad address", value(func(v map[string]any) { v["source_ip"] = "198.51.100.300" }), ReasonSchema},
		{"backdated", value(func(v map[string]any) { v["event_timestamp"] = "2026-09-01 00:00:00" }), ReasonTime},
		{"ahead", value(func(v map[string]any) { v["event_timestamp"] = "2026-11-30 13:00:00" }), ReasonTime},
		{"no timestamp", value(func(v map[string]any) { v["event_timestamp"] = "yesterday" }), ReasonTime},
		{"number with a control character", value(func(v map[string]any) { v["called_number"] = "0046\x01" }), ReasonNumber},
		{"node id not a UUID", value(func(v map[string]any) { v["created_by_node_id"] = "me" }), ReasonSchema},
		{"own value back", value(func(v map[string]any) { v["created_by_node_id"] = ownNode }), ReasonOwn},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, got := newBridge(t, 1, 100)
			b.Handle(tt.data)
			r := b.Report()
			if tt.reason == "" {
				if len(*got) != 1 || r.Accepted != 1 || len(r.Refused) != 0 {
					t.Fatalf("refused: %v", r.Refused)
				}
				e := (*got)[0]
				if !e.FromPeer || e.Peer != Provenance || e.Trusted || e.SourceVerified || !IsFrom(e) {
					t.Errorf("event marked FromPeer %v, Peer %q, Trusted %v, SourceVerified %v", e.FromPeer, e.Peer, e.Trusted, e.SourceVerified)
				}
				return
			}
			if len(*got) != 0 || r.Refused[tt.reason] != 1 || r.Received != 1 {
				t.Fatalf("want refused for %s, got %d events, refused %v", tt.reason, len(*got), r.Refused)
			}
		})
	}
}

func TestDuplicatesAndRatesAreRefused(t *testing.T) {
	b, got := newBridge(t, 1, 2) // 2 a second for all of OpenDHT, bursts of 20
	b.Handle(value(nil))
	b.Handle(value(nil))
	for i := range 40 {
		// Node ids are the writer's to choose: varying them buys nothing.
		b.Handle(value(func(v map[string]any) {
			v["event_uuid"] = fmt.Sprintf("6d1f1c52-7a8e-4f35-9c3a-%012d", i)
			v["created_by_node_id"] = fmt.Sprintf("3b0b7c2e-5a1e-4e0f-8b9e-%012d", i)
		}))
	}
	r := b.Report()
	if r.Refused[ReasonDuplicate] != 1 || r.Refused[ReasonRate] < 20 || r.Accepted > 21 || int(r.Accepted) != len(*got) || r.Received != 42 {
		t.Fatalf("report %+v, %d events", r, len(*got))
	}
	// A value refused for rate and delivered again is judged again, not taken for a repeat.
	last := value(func(v map[string]any) { v["event_uuid"] = fmt.Sprintf("6d1f1c52-7a8e-4f35-9c3a-%012d", 39) })
	b.Handle(last)
	if b.Report().Refused[ReasonDuplicate] != 1 {
		t.Fatalf("a value refused for rate came back as a duplicate: %v", b.Report().Refused)
	}
}

// All of OpenDHT is one source: with a minimum of two, its reports never confirm each other,
// whatever node ids they carry; they count once this node (or a trusted peer) knows the key.
func TestTrustGateCountsOpenDHTAsOneSource(t *testing.T) {
	known := false
	var got []*event.Event
	b := New(Config{NodeID: ownNode, Rate: 100, Now: func() time.Time { return now },
		Gate:    trust.New(trust.Policy{MinSightings: 2, Known: func(string, string) bool { return known }}),
		Receive: func(e *event.Event) { got = append(got, e) }}, &memDHT{})
	b.Handle(value(nil))
	b.Handle(value(func(v map[string]any) {
		v["event_uuid"], v["created_by_node_id"] = "7e2f1c52-7a8e-4f35-9c3a-0b8c2b1f0a11", "4c1c8d3f-6b2f-4f10-9caf-3e8e6d1fab55"
	}))
	if len(got) != 0 || b.Report().Pending != 2 {
		t.Fatalf("two invented node ids met the minimum: %d events, %d pending", len(got), b.Report().Pending)
	}
	known = true
	b.Handle(value(func(v map[string]any) { v["event_uuid"] = "8e2f1c52-7a8e-4f35-9c3a-0b8c2b1f0a11" }))
	if len(got) == 0 || b.Report().MinSightings != 2 {
		t.Fatalf("a known address's report was held: %d events", len(got))
	}
}

// What a stranger cannot vouch for is not taken from it: a tool, payloads, a length.
func TestClaimsOfAStrangerAreDropped(t *testing.T) {
	b, got := newBridge(t, 1, 100)
	b.Handle(value(func(v map[string]any) {
		v["tool"], v["ua_spoofed"], v["payload"], v["sip_message_length"], v["source_verified"] = "sipvicious", true,
			[]any{map[string]any{"kind": "sqli", "where": "to"}}, 999999, true
	}))
	if len(*got) != 1 {
		t.Fatalf("refused: %v", b.Report().Refused)
	}
	e := (*got)[0]
	if e.Tool != "" || e.UASpoofed || e.Payload != nil || e.SIPMessageLength != 0 || e.SourceVerified {
		t.Fatalf("kept a stranger's claims: %+v", e)
	}
}

// What the bridge publishes is the reference's 13 keys, and another bridge reads it back as
// the same sighting.
func TestPublishedValueIsTheReferenceForm(t *testing.T) {
	d := &memDHT{}
	b := New(Config{NodeID: ownNode, Gate: trust.New(trust.Policy{}), Publish: true}, d)
	e := &event.Event{AppName: "dialtrap", AppVersion: "0.1.0", Timestamp: "2026-11-30 11:58:00.000000001",
		UUID: "0193a5c4-1c2d-7e3f-8a4b-5c6d7e8f9a0b", NodeID: ownNode, CollectedMethod: event.Responsive,
		Transport: event.TCP, SourceIP: "192.0.2.9", SourcePort: 5071, DestinationIP: "203.0.113.5", DestinationPort: 5060,
		CalledNumber: "100", SIPMethod: "OPTIONS", SIPUserAgent: "sipsak 0.9.8", SIPMessage: "OPTIONS sip:100@203.0.113.5 SIP/2.0\r\n<x>",
		SourceVerified: true, Tool: "sipsak", RepeatCount: 7}
	if err := b.Write(t.Context(), []*event.Event{e}); err != nil || len(d.put) != 1 {
		t.Fatalf("Write: %v, %d puts", err, len(d.put))
	}
	var keys []string
	dec := json.NewDecoder(strings.NewReader(string(d.put[0])))
	tok, _ := dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip any
		dec.Decode(&skip)
	}
	want := []string{"app_name", "app_version", "event_timestamp", "event_uuid", "created_by_node_id", "collected_method",
		"transport_type", "source_ip", "destination_ip", "called_number", "sip_method", "sip_user_agent", "sip_message"}
	if tok != json.Delim('{') || !slices.Equal(keys, want) || strings.Contains(string(d.put[0]), `\u003c`) || d.put[0][len(d.put[0])-1] != '}' {
		t.Fatalf("published %s", d.put[0])
	}
	other, got := newBridge(t, 1, 100)
	other.cfg.NodeID = "00000000-0000-4000-8000-000000000001"
	other.Handle(d.put[0])
	if len(*got) != 1 || (*got)[0].SourceIP != "192.0.2.9" || (*got)[0].UUID != e.UUID {
		t.Fatalf("read back: %v", other.Report().Refused)
	}
	if r := b.Report(); r.Published != 1 || !r.Publish || r.Key != Key || r.KeyHash != KeyHash {
		t.Fatalf("report %+v", r)
	}
}

// KeyHash is what OpenDHT makes of Key: its SHA-1.
func TestKeyHash(t *testing.T) {
	if got := fmt.Sprintf("%x", sha1Sum(Key)); got != KeyHash {
		t.Fatalf("sha1(%q) = %s, want %s", Key, got, KeyHash)
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(value(nil))
	f.Add([]byte("garbage\x00"))
	f.Add(value(func(v map[string]any) { v["source_ip"] = "[::1]:0" }))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, got := newBridge(t, 1, 1000)
		b.Handle(data)
		r := b.Report()
		var refused uint64
		for _, n := range r.Refused {
			refused += n
		}
		if r.Received != 1 || uint64(len(*got))+refused != 1 {
			t.Fatalf("one value: %d events, refused %v", len(*got), r.Refused)
		}
	})
}

func sha1Sum(s string) [20]byte { return sha1.Sum([]byte(s)) }
