package sip

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/golden"
)

var srcAddr = netip.MustParseAddrPort("192.0.2.77:15070")

func fixedTag() []byte { return []byte("a1b2c3d4e5") }

func fixedNonce() []byte { return []byte("00112233445566778899aabbccddeeff") }

// The replies' exact bytes. A REGISTER without credentials gets the 401 challenge
// (svwar-register, folded-blank-agent); one that answers it, 200 (the *-auth ones: any nonce
// counts here, as the Responder has no NonceOK).
func TestRepliesGolden(t *testing.T) {
	r := &Responder{tag: fixedTag, nonce: fixedNonce}
	for _, name := range []string{"svmap-options.sip", "svmap-invite.sip", "svwar-register.sip",
		"sipsak-options.sip", "sipp-invite.sip", "compact-lf.sip", "folded-blank-agent.sip",
		"svcrack-register-auth.sip", "sipsak-register-auth.sip"} {
		t.Run(name, func(t *testing.T) {
			m := Parse(readMsg(t, name))
			replies := r.Replies(&m, srcAddr)
			if len(replies) == 0 {
				t.Fatal("no reply")
			}
			got := bytes.Join(replies, []byte("----\n"))
			golden.Check(t, filepath.Join("testdata", "replies", strings.TrimSuffix(name, ".sip")+".golden"), got)
		})
	}
}

func TestRepliesEchoTransaction(t *testing.T) {
	r := &Responder{Persona: "Test PBX 1"}
	for _, name := range []string{"svmap-options.sip", "svmap-invite.sip", "svwar-register.sip", "sipsak-options.sip", "sipp-invite.sip",
		"svcrack-register-auth.sip"} {
		req := Parse(readMsg(t, name))
		replies := r.Replies(&req, srcAddr)
		for i, reply := range replies {
			if !bytes.HasSuffix(reply, []byte("\r\n\r\n")) {
				t.Errorf("%s reply %d does not end with the empty line", name, i)
			}
			m := Parse(reply)
			if m.Kind != Response || m.HeaderLen != len(reply) || m.ContentLength != 0 {
				t.Fatalf("%s reply %d is not a complete response: %q", name, i, reply)
			}
			for field, pair := range map[string][2][]byte{
				"From": {m.From, req.From}, "Call-ID": {m.CallID, req.CallID}, "CSeq": {m.CSeq, req.CSeq},
			} {
				if !bytes.Equal(pair[0], pair[1]) {
					t.Errorf("%s reply %d: %s %q, request had %q", name, i, field, pair[0], pair[1])
				}
			}
			if !bytes.HasPrefix(m.To, req.To) {
				t.Errorf("%s: To %q does not echo %q", name, m.To, req.To)
			}
			if m.StatusCode > 100 && !HasTag(m.To) {
				t.Errorf("%s: final reply To %q has no tag", name, m.To)
			}
			if !bytes.Contains(m.Via[0], []byte(";received=192.0.2.77")) {
				t.Errorf("%s: top Via %q lacks received", name, m.Via[0])
			}
			if bytes.Contains(req.Via[0], []byte(";rport")) && !bytes.Contains(m.Via[0], []byte(";rport=15070")) {
				t.Errorf("%s: top Via %q lacks the filled-in rport", name, m.Via[0])
			}
			if !bytes.Contains(reply, []byte("\r\nServer: Test PBX 1\r\n")) {
				t.Errorf("%s: no persona Server header", name)
			}
		}
	}
}

func TestRepliesPerMethod(t *testing.T) {
	req := func(method string) []byte {
		return []byte(method + " sip:100@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n" +
			"From: <sip:a@b>;tag=1\r\nTo: <sip:100@192.0.2.2>\r\nCall-ID: x\r\nCSeq: 1 " + method + "\r\n\r\n")
	}
	withAuth := func(method, header, cred string) []byte {
		return []byte(strings.Replace(string(req(method)), "\r\n\r\n", "\r\n"+header+": "+cred+"\r\n\r\n", 1))
	}
	tests := []struct {
		in    []byte
		codes []int
	}{
		{req("OPTIONS"), []int{200}},
		{req("REGISTER"), []int{401}},
		{withAuth("REGISTER", "Authorization", `Digest username="100", nonce="good", response="x"`), []int{200}},
		{withAuth("REGISTER", "authorization", `Digest nonce=good`), []int{200}},
		{withAuth("REGISTER", "Proxy-Authorization", `Digest nonce="good"`), []int{200}},
		{withAuth("REGISTER", "Authorization", `Digest username="100", nonce="stale", response="x"`), []int{401}},
		{withAuth("REGISTER", "Authorization", `Digest username="100", cnonce="good"`), []int{401}},
		{withAuth("INVITE", "Authorization", `Digest nonce="good"`), []int{100, 404}},
		{req("INVITE"), []int{100, 404}},
		{req("BYE"), []int{200}},
		{req("CANCEL"), []int{200}},
		{req("FOO"), []int{405}},
		{req("ACK"), nil},
		{readMsg(t, "response-200.sip"), nil},
		{readMsg(t, "garbage-tls-hello.bin"), nil},
		{[]byte("OPTIONS sip:1@a SIP/2.0\r\nCall-ID: no-via\r\n\r\n"), nil},
	}
	// Only the nonce "good" is ours.
	r := Responder{NonceOK: func(_ netip.Addr, n []byte) bool { return string(n) == "good" }}
	for _, tt := range tests {
		m := Parse(tt.in)
		replies := r.Replies(&m, srcAddr)
		var codes []int
		for _, reply := range replies {
			codes = append(codes, Parse(reply).StatusCode)
		}
		if len(codes) != len(tt.codes) {
			t.Errorf("%q: codes %v, want %v", firstLine(tt.in), codes, tt.codes)
			continue
		}
		for i := range codes {
			if codes[i] != tt.codes[i] {
				t.Errorf("%q: codes %v, want %v", firstLine(tt.in), codes, tt.codes)
			}
		}
	}
}

func TestTopViaKeepsOthers(t *testing.T) {
	via := []byte("SIP/2.0/UDP 10.0.0.1:5060;received=1.1.1.1;branch=z9hG4bKx;rport , SIP/2.0/UDP 10.0.0.2")
	got := string(appendTopVia(nil, via, srcAddr))
	want := "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport=15070;received=192.0.2.77, SIP/2.0/UDP 10.0.0.2"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func firstLine(b []byte) string {
	l, _ := nextLine(b, 0)
	return string(l)
}
