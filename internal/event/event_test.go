package event

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dialtrap/dialtrap/internal/golden"
)

func fixed() *Event {
	return &Event{
		AppName:         AppName,
		AppVersion:      "0.1.0",
		Timestamp:       "2026-11-23 10:11:12.000000042",
		UUID:            "4503cc92-26cb-4b3e-bb33-69a83fa09321",
		NodeID:          "e5ac3a88-3d52-4e84-b70c-b2ce83992d02",
		CollectedMethod: Responsive,
		Transport:       UDP,
		SourceIP:        "192.0.2.7",
		DestinationIP:   "198.51.100.1",
		CalledNumber:    "0046812118532",
		SIPMethod:       "OPTIONS",
		SIPUserAgent:    "friendly-scanner",
		SIPMessage:      "OPTIONS sip:100@198.51.100.1 SIP/2.0\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\n\r\n",
		SourcePort:      5173,
		DestinationPort: 5060,
	}
}

func TestJSONGolden(t *testing.T) {
	line, err := fixed().MarshalLine()
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "event.golden"), line)
}

func TestJSONKeyOrder(t *testing.T) {
	line, err := fixed().MarshalLine()
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(line)))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	want := []string{"app_name", "app_version", "event_timestamp", "event_uuid", "created_by_node_id",
		"collected_method", "transport_type", "source_ip", "destination_ip", "called_number",
		"sip_method", "sip_user_agent", "sip_message", "source_port", "destination_port", "source_verified"}
	for i := 0; dec.More(); i++ {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) || k != want[i] {
			t.Fatalf("key %d = %v, want %v", i, k, want[min(i, len(want)-1)])
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if i < 13 {
			if _, ok := v.(string); !ok {
				t.Errorf("key %s holds %T, want a string", k, v)
			}
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, line); err != nil {
		t.Fatal(err)
	}
	if compact.String()+"\n" != string(line) || strings.Count(string(line), "\n") != 1 {
		t.Errorf("line is not compact single-line JSON: %q", line)
	}
}

func TestNewStampsFields(t *testing.T) {
	o := Origin{
		AppVersion: "1.2.3", NodeID: "n", Method: Passive, Transport: TCP,
		Source: netip.MustParseAddrPort("[::ffff:192.0.2.9]:40000"),
		Dest:   netip.MustParseAddrPort("[2001:db8::1%eth0]:5060"),
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("X", 3600))
	e := New(o, now, "100", "INVITE", "sipsak", []byte("x\xffy"))
	if e.Timestamp != "2026-01-02 02:04:05.000000600" {
		t.Errorf("timestamp %q is not UTC with 9 fraction digits", e.Timestamp)
	}
	if e.SourceIP != "192.0.2.9" || e.SourcePort != 40000 {
		t.Errorf("source %s:%d, want the unmapped IPv4 and port apart", e.SourceIP, e.SourcePort)
	}
	if e.DestinationIP != "2001:db8::1" || e.DestinationPort != 5060 {
		t.Errorf("destination %s:%d", e.DestinationIP, e.DestinationPort)
	}
	if e.SIPMessage != "x\uFFFDy" {
		t.Errorf("message %q not sanitised", e.SIPMessage)
	}
	if err := Check(e, Rules{Now: now}); err != nil {
		t.Errorf("fresh event does not validate: %v", err)
	}
	if e2 := New(o, now, "", "", "", nil); e2.UUID == e.UUID {
		t.Error("two events share a UUID")
	}
}

func TestSanitizeKeeps64KiB(t *testing.T) {
	big := []byte(strings.Repeat("a", MaxMessage+100))
	if got := Sanitize(big); len(got) != MaxMessage {
		t.Errorf("kept %d bytes, want %d", len(got), MaxMessage)
	}
	nul := []byte("OPTIONS\x00sip")
	if got := Sanitize(nul); got != string(nul) {
		t.Errorf("NUL bytes changed: %q", got)
	}
}

func TestNodeIDStable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, err := LoadNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("node id changed across loads: %s then %s", a, b)
	}
	if err := os.WriteFile(filepath.Join(dir, NodeIDFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNodeID(dir); err == nil {
		t.Fatal("a corrupt node id file was accepted")
	}
}

func TestNewSanitizesPacketFields(t *testing.T) {
	e := New(Origin{}, time.Now(), "\x00\xfe1", "INVITE", "bad\xffagent", nil)
	if e.CalledNumber != "\x00\uFFFD1" || e.SIPUserAgent != "bad\uFFFDagent" {
		t.Errorf("number %q agent %q", e.CalledNumber, e.SIPUserAgent)
	}
}

func BenchmarkNew(b *testing.B) {
	o := Origin{AppVersion: "1", NodeID: "n", Method: Passive, Transport: UDP,
		Source: netip.MustParseAddrPort("192.0.2.1:5060"), Dest: netip.MustParseAddrPort("192.0.2.2:5060")}
	msg := []byte(strings.Repeat("OPTIONS sip:100@192.0.2.2 SIP/2.0\r\n", 12))
	b.ReportAllocs()
	for b.Loop() {
		New(o, time.Now(), "100", "OPTIONS", "friendly-scanner", msg)
	}
}

func BenchmarkMarshalLine(b *testing.B) {
	e := fixed()
	e.SIPMessage = strings.Repeat("OPTIONS sip:100@192.0.2.2 SIP/2.0\r\n", 12)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.AppendJSON(make([]byte, 0, 1024)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]string{
		"2026-11-23":                "2026-11-23 00:00:00.000000000",
		"2026-11-23 10:15":          "2026-11-23 10:15:00.000000000",
		"2026-11-23 10:15:30.25":    "2026-11-23 10:15:30.250000000",
		"2026-11-23T10:15:30":       "2026-11-23 10:15:30.000000000",
		"2026-11-23T12:15:30+02:00": "2026-11-23 10:15:30.000000000",
		"24h":                       "2026-11-22 12:00:00.000000000",
		"90m":                       "2026-11-23 10:30:00.000000000",
		"0s":                        "2026-11-23 12:00:00.000000000",
		"-1h":                       "",
		"yesterday":                 "",
		"2026-13-01":                "",
		"1e9h":                      "",
	} {
		got, err := ParseSince(in, now)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("ParseSince(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestParseIP(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1": "192.0.2.1", "::ffff:192.0.2.1": "192.0.2.1", "2001:DB8:0::5": "2001:db8::5",
		"fe80::1%eth0": "", "192.0.2.300": "", "192.0.2.1:5060": "", "": "",
	} {
		got, ok := ParseIP(in)
		if got != want || ok != (want != "") {
			t.Errorf("ParseIP(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestStoredMessageCap(t *testing.T) {
	for _, c := range []struct {
		name       string
		msg        []byte
		wantLen    int // of the stored text
		wantLength int // recorded
	}{
		{"short", []byte("OPTIONS sip:100@x SIP/2.0\r\n\r\n"), 29, 0},
		{"exactly the cap", bytes.Repeat([]byte("a"), MaxStoredMessage), MaxStoredMessage, 0},
		{"a 64 KiB datagram", bytes.Repeat([]byte("a"), 64<<10), MaxStoredMessage, 64 << 10},
		{"invalid bytes grow", bytes.Repeat([]byte{0xff, 'a'}, 6000), MaxStoredMessage, 12000}, // U+FFFD is 3 bytes
		{"empty", nil, 0, 0},
	} {
		s, n := StoredMessage(c.msg)
		if len(s) != c.wantLen || n != c.wantLength || !utf8.ValidString(s) {
			t.Errorf("%s: stored %d bytes, length %d; want %d, %d", c.name, len(s), n, c.wantLen, c.wantLength)
		}
	}
	e := New(Origin{Method: Passive, Transport: UDP, Source: netip.MustParseAddrPort("192.0.2.1:5060")}, time.Now(), "100", "OPTIONS", "x", bytes.Repeat([]byte("b"), 70000))
	b, err := e.AppendJSON(nil)
	if err != nil || !bytes.HasSuffix(b, []byte(`,"sip_message_length":70000}`)) {
		t.Errorf("JSON of a cut message ends %q (%v)", b[max(0, len(b)-60):], err)
	}
	if err := Check(e, Rules{}); err != nil {
		t.Errorf("a cut message does not check: %v", err)
	}
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2026-11-30 12:00:00.000000000", "2026-02-31 12:00:00.000000000", "2026-11-30 24:00:00.000000000",
		"2026-11-30T12:00:00.000000000", "2026-11-30 12:00:00.00000000x", "0000-01-01 00:00:00.000000000", "+026-11-30 12:00:00.000000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fast, ok := parseStamp(s)
		slow, err := time.ParseInLocation(TimeLayout, s, time.UTC)
		// The fast path may decline what time.Parse takes (a one-digit hour, a comma before
		// the fraction): ParseTime then asks time.Parse. What it takes, it must read alike.
		if ok && (err != nil || !fast.Equal(slow)) {
			t.Fatalf("%q: fast %v %v, time.Parse %v %v", s, fast, ok, slow, err)
		}
	})
}

// reference is what encoding/json writes for an event (HTML escaping off): AppendJSON must
// write the same bytes.
func reference(t testing.TB, e *Event) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	tricky := "\"quoted\" back\\slash <sip:a@b>&amp; \x00\x01\b\f\n\r\t\x1f\x7f é ✓ \u2028\u2029 bad\xff\xfe utf8 \U0001F600"
	for i, mutate := range []func(*Event){
		func(*Event) {},
		func(e *Event) { e.SIPMessage, e.SIPUserAgent, e.CalledNumber = tricky, tricky, tricky },
		func(e *Event) { e.SIPMessageLength, e.SourceVerified = 70000, true },
		func(e *Event) {
			e.Tool, e.UASpoofed = "sipvicious", true
			e.Payload = []Payload{{"sqli", "to"}, {"script", tricky}}
		},
		func(e *Event) { e.Payload = []Payload{} }, // empty, left out as omitempty does
		func(e *Event) { *e = Event{} },
		func(e *Event) { e.SourcePort, e.DestinationPort = -1, 65535 },
		func(e *Event) { e.RepeatCount = 49_999 },
		func(e *Event) { e.RepeatCount = -3 }, // refused by Check, but encoded as encoding/json does
	} {
		e := fixed()
		mutate(e)
		got, err := e.AppendJSON([]byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if want := append([]byte("prefix"), reference(t, e)...); !bytes.Equal(got, want) {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("friendly-scanner", "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n\r\n", "sipvicious", "to", 5060)
	f.Add("\x00\u2028\xff\"\\", "<script>&", "", "\n", -7)
	f.Fuzz(func(t *testing.T, agent, msg, tool, where string, port int) {
		e := fixed()
		e.SIPUserAgent, e.SIPMessage, e.Tool, e.SourcePort = agent, msg, tool, port
		if where != "" {
			e.Payload = []Payload{{Kind: agent, Where: where}}
		}
		got, err := e.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := reference(t, e); !bytes.Equal(got, want) {
			t.Fatalf("\n got %q\nwant %q", got, want)
		}
	})
}

func TestFolded(t *testing.T) {
	e := fixed()
	e.Tool, e.Payload = "sipvicious", []Payload{{"sqli", "to"}}
	last := time.Date(2026, 11, 30, 12, 0, 1, 5, time.UTC)
	for _, c := range []struct {
		n, want int64
	}{{1, 0}, {2, 2}, {49_999, 49_999}, {MaxRepeatCount + 5, MaxRepeatCount}} {
		f := e.Folded(last, c.n)
		if f.UUID == e.UUID || f.Timestamp != FormatTime(last) || f.RepeatCount != c.want || f.Weight() != max(1, c.want) {
			t.Errorf("folded %d: uuid %s (first %s), time %s, repeat_count %d; want a new UUID, the last time and %d",
				c.n, f.UUID, e.UUID, f.Timestamp, f.RepeatCount, c.want)
		}
		f.UUID, f.Timestamp, f.RepeatCount = e.UUID, e.Timestamp, e.RepeatCount
		if !reflect.DeepEqual(f, e) {
			t.Errorf("folded %d: content differs\n got %+v\nwant %+v", c.n, f, e)
		}
	}
}

func TestWeight(t *testing.T) {
	for _, c := range []struct {
		name             string
		repeat           int64
		fromPeer, trusts bool
		want             int64
	}{
		{"one probe", 0, false, false, 1},
		{"folded here", 4999, false, false, 4999},
		{"folded by a trusted peer", 4999, true, true, 4999},
		{"claimed by a peer not trusted", 4999, true, false, 1},
		{"peer, one probe", 0, true, false, 1},
	} {
		e := fixed()
		e.RepeatCount, e.FromPeer, e.Trusted = c.repeat, c.fromPeer, c.trusts
		if got := e.Weight(); got != c.want {
			t.Errorf("%s: weight %d, want %d", c.name, got, c.want)
		}
	}
}
