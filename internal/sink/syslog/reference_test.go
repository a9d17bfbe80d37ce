package syslog

import (
	"bytes"
	"os"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
)

// The syslog example in docs/reference/events.md is the line written for the reference's
// example event.
func TestEventsReferenceSyslogLine(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/reference/events.md")
	if err != nil {
		t.Fatal(err)
	}
	e := &event.Event{SourceIP: "192.0.2.7", SIPMethod: "OPTIONS", SIPUserAgent: "friendly-scanner"}
	for _, want := range []string{"\n" + Line(e, 0) + "\n", "ident `" + Tag + "`", "1,024 bytes over UDP", "`" + Truncated + "`"} {
		if MaxUDP != 1024 || !bytes.Contains(doc, []byte(want)) {
			t.Errorf("docs/reference/events.md lacks %q", want)
		}
	}
}
