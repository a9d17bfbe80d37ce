package sip

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readMsg(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "messages", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMessages(t *testing.T) {
	tests := []struct {
		file                  string
		kind                  Kind
		method, number, agent string
		callID                string
		nvia, contentLength   int
	}{
		{"svmap-options.sip", Request, "OPTIONS", "100", "friendly-scanner", "1204174750980185618679479", 1, 0},
		{"svmap-invite.sip", Request, "INVITE", "100", "friendly-scanner", "729574545708011183216051", 1, 0},
		{"svwar-register.sip", Request, "REGISTER", "4110350636", "friendly-scanner", "2780908207", 1, 0},
		{"sipsak-options.sip", Request, "OPTIONS", "100", "sipsak 0.9.8.1", "2021808418@127.0.0.1", 1, 0},
		{"sipp-invite.sip", Request, "INVITE", "0046812118532", "NOT_FOUND", "1-5271@127.0.0.1", 1, 129},
		// The To URI has no user, so the number comes from the tel: Request-URI.
		{"compact-lf.sip", Request, "INVITE", "+4631234567", "NOT_FOUND", "abc@192.0.2.1", 1, 0},
		// The first User-Agent is blank: NOT_FOUND, not the second one.
		{"folded-blank-agent.sip", Request, "REGISTER", "9011441234", "NOT_FOUND", "folded", 1, 0},
		{"sqli-to.sip", Request, "OPTIONS", "1' OR '1'='1", "sipcli/v1.8", "sqli", 1, -1},
		{"response-200.sip", Response, "", "100", "NOT_FOUND", "resp", 1, 0},
		{"garbage-tls-hello.bin", Garbage, "", "", "", "", 0, -1},
		{"nul-in-start-line.bin", Garbage, "", "", "", "", 0, -1},
		{"empty.bin", Garbage, "", "", "", "", 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m := Parse(readMsg(t, tt.file))
			if m.Kind != tt.kind {
				t.Errorf("kind %v, want %v", m.Kind, tt.kind)
			}
			check := func(field string, got []byte, want string) {
				t.Helper()
				if string(got) != want {
					t.Errorf("%s = %q, want %q", field, got, want)
				}
			}
			check("method", m.Method, tt.method)
			check("called number", m.CalledNumber(), tt.number)
			check("agent", m.Agent(), tt.agent)
			check("call-id", m.CallID, tt.callID)
			if m.NVia != tt.nvia {
				t.Errorf("%d Via, want %d", m.NVia, tt.nvia)
			}
			if m.ContentLength != tt.contentLength {
				t.Errorf("content length %d, want %d", m.ContentLength, tt.contentLength)
			}
		})
	}
}

func TestParseFoldedVia(t *testing.T) {
	m := Parse(readMsg(t, "folded-blank-agent.sip"))
	want := "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKb;rport,\r\n SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc"
	if string(m.Via[0]) != want {
		t.Errorf("folded Via = %q, want %q", m.Via[0], want)
	}
}

func TestParseHeaderLen(t *testing.T) {
	b := readMsg(t, "sipp-invite.sip")
	m := Parse(b)
	if m.HeaderLen == 0 || m.HeaderLen+m.ContentLength != len(b) {
		t.Errorf("header %d + body %d != message %d", m.HeaderLen, m.ContentLength, len(b))
	}
	if m := Parse([]byte("OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n")); m.HeaderLen != 0 {
		t.Errorf("unterminated headers gave HeaderLen %d", m.HeaderLen)
	}
}

func TestUserPart(t *testing.T) {
	tests := []struct{ in, want string }{
		{`"sipvicious"<sip:100@1.1.1.1>`, "100"},
		{`<sip:+441234567890;phone-context=x@example.com;user=phone>;tag=1`, "+441234567890"},
		{`sip:alice:secret@example.com`, "alice"},
		{`SIPS:00046500729221@example.com:5061;transport=tls`, "00046500729221"},
		{`<tel:+4631234567;ext=1>`, "+4631234567"},
		{`sip:example.com`, ""},
		{`"sip:100@trap" <sip:example.com>`, ""},
		{`http://100@example.com`, ""},
		{`<sip:100@`, "100"},
		{``, ""},
		{`<`, ""},
	}
	for _, tt := range tests {
		if got := UserPart([]byte(tt.in)); string(got) != tt.want {
			t.Errorf("UserPart(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseTolerance(t *testing.T) {
	tests := map[string]struct {
		in   string
		kind Kind
	}{
		"leading CRLF keep-alive":   {"\r\n\r\nOPTIONS sip:1@a SIP/2.0\r\n\r\n", Request},
		"only CRLF":                 {"\r\n\r\n", Garbage},
		"lower-case version":        {"OPTIONS sip:1@a sip/2.0\r\n\r\n", Request},
		"two-word line":             {"OPTIONS sip:1@a\r\n\r\n", Garbage},
		"response without code":     {"SIP/2.0\r\n\r\n", Garbage},
		"response with bad code":    {"SIP/2.0 2x0 OK\r\n", Garbage},
		"method with bad character": {"OPT<IONS sip:1@a SIP/2.0\r\n", Garbage},
		"header without colon":      {"OPTIONS sip:1@a SIP/2.0\r\nnonsense\r\nTo: <sip:9@a>\r\n\r\n", Request},
		"huge content length":       {"OPTIONS sip:1@a SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n", Request},
		"continuation first":        {"OPTIONS sip:1@a SIP/2.0\r\n folded\r\n\r\n", Request},
		"long method":               {strings.Repeat("A", 33) + " sip:1@a SIP/2.0\r\n", Garbage},
	}
	for name, tt := range tests {
		if m := Parse([]byte(tt.in)); m.Kind != tt.kind {
			t.Errorf("%s: kind %v, want %v", name, m.Kind, tt.kind)
		}
	}
}

func TestParseJunk64KiB(t *testing.T) {
	junk := bytes.Repeat([]byte{0xff, 0x00, '\n', ':', '<'}, 64<<10/5)
	m := Parse(junk)
	if m.Kind != Garbage {
		t.Errorf("64 KiB of junk parsed as %v", m.Kind)
	}
	// A request line followed by 64 KiB of header junk still gives what it can.
	msg := append([]byte("REGISTER sip:1@a SIP/2.0\r\nTo: <sip:42@a>\r\n"), junk...)
	m = Parse(msg)
	if m.Kind != Request || string(m.CalledNumber()) != "42" {
		t.Errorf("kind %v number %q", m.Kind, m.CalledNumber())
	}
}

func TestParseAllocs(t *testing.T) {
	b := readMsg(t, "svmap-options.sip")
	allocs := testing.AllocsPerRun(100, func() {
		m := Parse(b)
		_ = m.CalledNumber()
		_ = m.Agent()
	})
	if allocs != 0 {
		t.Errorf("Parse allocates %.0f times per message, want 0", allocs)
	}
}

func BenchmarkParse(b *testing.B) {
	msg := readMsg(b, "svmap-options.sip")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		m := Parse(msg)
		_ = m.CalledNumber()
	}
}

func FuzzParse(f *testing.F) {
	entries, err := os.ReadDir(filepath.Join("testdata", "messages"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		f.Add(readMsg(f, e.Name()))
	}
	r := &Responder{}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := Parse(b)
		num, agent := m.CalledNumber(), m.Agent()
		if m.Kind == Garbage && (num != nil || agent != nil || m.Method != nil) {
			t.Fatalf("garbage produced fields: %q %q %q", num, agent, m.Method)
		}
		if m.HeaderLen > len(b) {
			t.Fatalf("HeaderLen %d beyond input %d", m.HeaderLen, len(b))
		}
		for _, cred := range [][]byte{m.Authorization, m.ProxyAuthorization, b} {
			if n := AuthParam(cred, "nonce"); len(n) > len(cred) || !bytes.Contains(cred, n) {
				t.Fatalf("nonce %q is not part of %q", n, cred)
			}
		}
		if m.Kind == Garbage && (m.Authorization != nil || m.ProxyAuthorization != nil) {
			t.Fatalf("garbage produced credentials: %q %q", m.Authorization, m.ProxyAuthorization)
		}
		for _, reply := range r.Replies(&m, srcAddr) {
			if rm := Parse(reply); rm.Kind != Response {
				t.Fatalf("reply does not parse as a response: %q", reply)
			}
		}
	})
}
