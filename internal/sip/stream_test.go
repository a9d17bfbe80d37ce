package sip

import (
	"bytes"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
)

func TestFrame(t *testing.T) {
	invite := readMsg(t, "sipp-invite.sip")
	tests := []struct {
		name string
		in   []byte
		want []byte // nil: incomplete
	}{
		{"whole message with body", invite, invite},
		{"body not yet complete", invite[:len(invite)-5], nil},
		{"headers not yet complete", invite[:40], nil},
		{"two messages: first only", append(append([]byte{}, invite...), invite...), invite},
		{"LF-only line ends", []byte("OPTIONS sip:1@a SIP/2.0\nl: 3\n\nabcXYZ"), []byte("OPTIONS sip:1@a SIP/2.0\nl: 3\n\nabc")},
		{"no Content-Length means no body", []byte("OPTIONS sip:1@a SIP/2.0\r\n\r\nNEXT"), []byte("OPTIONS sip:1@a SIP/2.0\r\n\r\n")},
		{"garbage with an empty line", []byte("GET / HTTP/1.1\r\n\r\nx"), []byte("GET / HTTP/1.1\r\n\r\n")},
		{"body beyond 64 KiB waits", []byte("OPTIONS sip:1@a SIP/2.0\r\nContent-Length: 70000\r\n\r\n"), nil},
	}
	for _, tt := range tests {
		msg, _, ok := frame(tt.in)
		if ok != (tt.want != nil) || !bytes.Equal(msg, tt.want) {
			t.Errorf("%s: got %q (%v), want %q", tt.name, msg, ok, tt.want)
		}
	}
}

func FuzzFrame(f *testing.F) {
	f.Add(readMsg(f, "sipp-invite.sip"))
	f.Add([]byte("OPTIONS sip:1@a SIP/2.0\nl: 3\n\nabc\r\n\r\nOPTIONS sip:2@a SIP/2.0\r\n\r\n"))
	f.Add([]byte("\r\n\r\n\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Take messages off the front as serveStream does: each is a prefix no longer than
		// MaxMessage, and the loop always makes progress.
		for rest := b[skipBlankLines(b):]; len(rest) > 0; rest = rest[skipBlankLines(rest):] {
			msg, _, ok := frame(rest)
			if !ok {
				return
			}
			if len(msg) == 0 || len(msg) > event.MaxMessage || !bytes.HasPrefix(rest, msg) {
				t.Fatalf("frame returned %d bytes of %d", len(msg), len(rest))
			}
			rest = rest[len(msg):]
		}
	})
}
