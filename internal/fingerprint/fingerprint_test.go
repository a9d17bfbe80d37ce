package fingerprint

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/sip"
)

func identify(raw []byte) Result {
	m := sip.Parse(raw)
	return Identify(&m, raw)
}

// setUA replaces (or adds, or with "" removes) the User-Agent of a captured message.
func setUA(raw []byte, ua string) []byte {
	lines := strings.Split(string(raw), "\r\n")
	var out []string
	done := false
	for _, l := range lines {
		if strings.HasPrefix(strings.ToLower(l), "user-agent:") {
			if ua != "" {
				out = append(out, "User-Agent: "+ua)
			}
			done = true
			continue
		}
		if l == "" && !done && ua != "" {
			out = append(out, "User-Agent: "+ua)
			done = true
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\r\n"))
}

func capture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "sip", "testdata", "messages", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The captures of the real tools (internal/sip/testdata/messages), as sent and with their
// User-Agent swapped for a PBX's, removed, or another tool's: the shape names the tool every
// time, and only a User-Agent that names something else is spoofed. The confusion matrix is
// printed.
func TestCaptures(t *testing.T) {
	truth := map[string]string{
		"svmap-options.sip": SIPVicious, "svmap-invite.sip": SIPVicious, "svwar-register.sip": SIPVicious,
		"svcrack-register-auth.sip": SIPVicious, "sipp-invite.sip": SIPp, "sipsak-options.sip": SIPSak,
		"sipsak-register-auth.sip": SIPSak,
	}
	matrix := map[[2]string]int{}
	for file, want := range truth {
		raw := capture(t, file)
		for _, v := range []struct {
			ua      string
			spoofed bool
		}{
			{"(as sent)", false}, {"Cisco-SIPGateway/IOS-12.x", true}, {"", false}, {"Asterisk PBX 18.2.0", true},
		} {
			msg := raw
			if v.ua != "(as sent)" {
				msg = setUA(raw, v.ua)
			}
			got := identify(msg)
			matrix[[2]string{want, got.Tool}]++
			if got.Tool != want || !got.ByShape {
				t.Errorf("%s with UA %q: %+v, want %s by shape", file, v.ua, got, want)
			}
			if got.UASpoofed != v.spoofed {
				t.Errorf("%s with UA %q: spoofed %v, want %v", file, v.ua, got.UASpoofed, v.spoofed)
			}
		}
	}
	// Another tool's name on sipvicious' shape is spoofed too.
	if got := identify(setUA(capture(t, "svmap-options.sip"), "sipsak 0.9.8")); got.Tool != SIPVicious || !got.UASpoofed {
		t.Errorf("svmap calling itself sipsak: %+v", got)
	}
	var rows []string
	for k, n := range matrix {
		rows = append(rows, fmt.Sprintf("  %-10s -> %-10s %d", k[0], or(k[1], "unknown"), n))
	}
	sort.Strings(rows)
	t.Logf("confusion matrix (truth -> identified):\n%s", strings.Join(rows, "\n"))
}

func or(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Ordinary phones and PBXs are not taken for scanners, whatever they send; a User-Agent alone
// names a tool without a shape (not by shape, never spoofed).
func TestNotATool(t *testing.T) {
	for name, msg := range map[string]string{
		"linphone": "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK.Ab3xYz9Q;rport\r\nFrom: <sip:alice@example.com>;tag=Zq8pL2\r\n" +
			"To: sip:alice@example.com\r\nCSeq: 20 REGISTER\r\nCall-ID: kT3mW9xQ2\r\nMax-Forwards: 70\r\nSupported: outbound\r\nContact: <sip:alice@192.0.2.5>\r\nExpires: 600\r\nUser-Agent: Linphone/5.2\r\nContent-Length: 0\r\n\r\n",
		"asterisk": "INVITE sip:0046812118532@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.1:5060;rport;branch=z9hG4bKPj5e1c0b6a-6c1f\r\nFrom: <sip:100@203.0.113.1>;tag=8c6d1e2a-4b1f\r\n" +
			"To: <sip:0046812118532@198.51.100.1>\r\nContact: <sip:100@203.0.113.1:5060>\r\nCall-ID: 3f9a1c2e-77b0-4d2a-9a55-0b3c1d2e3f40\r\nCSeq: 12345 INVITE\r\nMax-Forwards: 70\r\nUser-Agent: Asterisk PBX 18.2.0\r\nContent-Length: 0\r\n\r\n",
		"digits only call-id": "OPTIONS sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK776asdhds\r\nFrom: <sip:a@b>;tag=1928301774\r\nTo: <sip:100@198.51.100.1>\r\nCall-ID: 1234567890\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
	} {
		if got := identify([]byte(msg)); got.Tool != Unknown || got.ByShape || got.UASpoofed {
			t.Errorf("%s: %+v, want nothing", name, got)
		}
	}
	got := identify([]byte("OPTIONS sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:100@198.51.100.1>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nUser-Agent: sipcli/v1.8\r\n\r\n"))
	if got.Tool != SIPCli || got.ByShape || got.UASpoofed {
		t.Errorf("sipcli by its User-Agent: %+v", got)
	}
}

// Identify allocates nothing: it runs for every captured probe.
func TestNoAllocations(t *testing.T) {
	raws := [][]byte{capture(t, "svmap-options.sip"), capture(t, "sipp-invite.sip"), capture(t, "sipsak-options.sip")}
	msgs := make([]sip.Message, len(raws))
	for i, r := range raws {
		msgs[i] = sip.Parse(r)
	}
	if n := testing.AllocsPerRun(100, func() {
		for i := range raws {
			Identify(&msgs[i], raws[i])
		}
	}); n != 0 {
		t.Fatalf("%v allocations per run, want 0", n)
	}
}

func BenchmarkIdentify(b *testing.B) {
	for _, f := range []string{"svmap-options.sip", "sipp-invite.sip", "sipsak-options.sip"} {
		raw := capture(b, f)
		m := sip.Parse(raw)
		b.Run(strings.TrimSuffix(f, ".sip"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Identify(&m, raw)
			}
		})
	}
}

// FuzzIdentify: any input is answered without a panic, and a tool named by shape has a name.
func FuzzIdentify(f *testing.F) {
	for _, name := range []string{"svmap-options.sip", "sipp-invite.sip", "sipsak-options.sip", "compact-lf.sip", "folded-blank-agent.sip"} {
		b, err := os.ReadFile(filepath.Join("..", "sip", "testdata", "messages", name))
		if err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := sip.Parse(raw)
		r := Identify(&m, raw)
		if r.ByShape && r.Tool == Unknown || r.UASpoofed && !r.ByShape {
			t.Fatalf("%q: %+v", raw, r)
		}
		_ = bytes.Clone(raw)
	})
}

// A tool's name is looked for in the first maxAgent bytes of the User-Agent only, and every
// name Identify gives is one the event's statistics know.
func TestClaimedToolBoundsAndNames(t *testing.T) {
	if got := claimedTool([]byte(strings.Repeat("x", maxAgent) + "friendly-scanner")); got != Unknown {
		t.Errorf("a name after %d bytes was read: %q", maxAgent, got)
	}
	if got := claimedTool([]byte("friendly-scanner " + strings.Repeat("x", 60000))); got != SIPVicious {
		t.Errorf("a long User-Agent starting with the name: %q", got)
	}
	for _, tool := range []string{SIPVicious, SIPp, SIPSak, SIPCli, PPLSip} {
		if event.KnownTool(tool) != tool {
			t.Errorf("tool %q is not in event.Tools", tool)
		}
	}
}
