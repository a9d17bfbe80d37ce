package intel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/sip"
)

func load(t testing.TB, name string) []byte {
	b, err := os.ReadFile(filepath.Join("../sip/testdata/messages", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func enrich(raw []byte) *event.Event {
	m := sip.Parse(raw)
	e := &event.Event{}
	Enrich(&m, raw, e)
	return e
}

func TestEnrich(t *testing.T) {
	for _, tt := range []struct {
		file, tool string
		spoofed    bool
		payload    string
	}{
		{"svmap-options.sip", "sipvicious", false, ""},
		{"svwar-register.sip", "sipvicious", false, ""},
		{"svcrack-register-auth.sip", "sipvicious", false, ""},
		{"sipp-invite.sip", "sipp", false, ""},
		{"sipsak-options.sip", "sipsak", false, ""},
		{"sqli-to.sip", "sipcli", false, "sqli@to"}, // named by its User-Agent only
		{"response-200.sip", "", false, ""},
		{"garbage-tls-hello.bin", "", false, ""},
		{"empty.bin", "", false, ""},
	} {
		e := enrich(load(t, tt.file))
		var p []string
		for _, f := range e.Payload {
			p = append(p, f.Kind+"@"+f.Where)
		}
		if e.Tool != tt.tool || e.UASpoofed != tt.spoofed || strings.Join(p, ",") != tt.payload {
			t.Errorf("%s: tool %q spoofed %v payload %q, want %q %v %q", tt.file, e.Tool, e.UASpoofed, p, tt.tool, tt.spoofed, tt.payload)
		}
		if err := event.Check(withContract(e), event.Rules{}); err != nil {
			t.Errorf("%s: enriched event fails the check: %v", tt.file, err)
		}
	}
	// sipvicious calling itself a Cisco gateway, as in the seed's capture.
	raw := strings.Replace(string(load(t, "svmap-options.sip")), "User-Agent: friendly-scanner", "User-Agent: Cisco-SIPGateway/IOS-12.x", 1)
	if e := enrich([]byte(raw)); e.Tool != "sipvicious" || !e.UASpoofed {
		t.Errorf("spoofed sipvicious: tool %q spoofed %v", e.Tool, e.UASpoofed)
	}
}

// withContract fills the contract keys Check needs, so that only the enrichment is checked.
func withContract(e *event.Event) *event.Event {
	c := *e
	c.AppName, c.UUID, c.CollectedMethod, c.Transport = "dialtrap", "0190d5a8-4c1e-7cc0-8e7a-9b7d2c1a0f00", event.Passive, event.UDP
	c.Timestamp, c.SourceIP = "2026-11-30 10:00:00.000000000", "192.0.2.1"
	return &c
}

// Enrichment of a clean scanner message allocates nothing: it runs for every probe.
func TestNoAllocations(t *testing.T) {
	for _, f := range []string{"svmap-options.sip", "sipp-invite.sip", "sipsak-options.sip"} {
		raw := load(t, f)
		m := sip.Parse(raw)
		e := &event.Event{}
		if n := testing.AllocsPerRun(100, func() { Enrich(&m, raw, e) }); n != 0 {
			t.Errorf("%s: %v allocations, want 0", f, n)
		}
	}
}

func TestLabeler(t *testing.T) {
	l := NewLabeler("")
	if c := l.Country("130.149.1.1"); c != "DE" {
		t.Errorf("country %q", c)
	}
	if c := l.Country("127.0.0.1"); c != "ZZ" {
		t.Errorf("loopback country %q", c)
	}
	a, b := l.Number("0044 9098790123"), l.Number("90044 9098790123")
	if a.Target != "+449098790123" || a.Country != "GB" || a.Type != "premium-rate" || a.Prefix != "00" {
		t.Errorf("number %+v", a)
	}
	if b.Target != a.Target || b.Prefix != "900" {
		t.Errorf("same target behind an outside line: %+v", b)
	}
	if c := l.Number("0044 9098790123"); c != a {
		t.Errorf("cached %+v, first %+v", c, a)
	}
	// Junk as long as a To URI allows is no number, and is not kept.
	long := strings.Repeat("1", 60000)
	if info := l.Analyze(long); info.Prefix != "" || info.E164 || len(l.nums) != 2 {
		t.Errorf("a 60 KB dial string: %+v, %d cached", info.Country, len(l.nums))
	}
	// The API's lookups read the cache but do not fill it.
	if info := l.Lookup("+4915123456789"); info.Country != "DE" || len(l.nums) != 2 {
		t.Errorf("lookup %+v, %d cached", info, len(l.nums))
	}
	if info := l.Lookup("0044 9098790123"); info != l.Analyze("0044 9098790123") {
		t.Errorf("lookup of a cached number %+v", info)
	}
}

// BenchmarkEnrich is the capture path's cost per probe: the goal is under 2 µs, no
// allocations.
func BenchmarkEnrich(b *testing.B) {
	for _, f := range []string{"svmap-options.sip", "sipp-invite.sip", "sipsak-options.sip", "sqli-to.sip"} {
		raw := load(b, f)
		m := sip.Parse(raw)
		b.Run(strings.TrimSuffix(f, ".sip"), func(b *testing.B) {
			b.ReportAllocs()
			e := &event.Event{}
			for b.Loop() {
				Enrich(&m, raw, e)
			}
		})
	}
}

// Whatever a packet holds, enrichment neither panics nor sets a tool or payload that the
// event check (what peers apply) would refuse.
func FuzzEnrich(f *testing.F) {
	for _, name := range []string{"svmap-options.sip", "sipp-invite.sip", "sipsak-options.sip", "sqli-to.sip", "garbage-tls-hello.bin"} {
		f.Add(load(f, name))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		e := enrich(raw)
		if err := event.Check(withContract(e), event.Rules{}); err != nil {
			t.Fatalf("enriched event refused: %v (tool %q, payload %v)", err, e.Tool, e.Payload)
		}
	})
}
