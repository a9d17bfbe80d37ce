package event

import (
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	now, _ := ParseTime("2026-11-23 10:11:12.000000042")
	window := Rules{Now: now}
	shared := Rules{Now: now, Shared: true}
	for _, c := range []struct {
		name   string
		mutate func(*Event)
		rules  Rules
		reason string // "" accepted
	}{
		{"valid", func(*Event) {}, shared, ""},
		{"valid passive IPv6 without destination", func(e *Event) {
			e.CollectedMethod, e.SourceIP, e.DestinationIP = Passive, "2001:db8::7", ""
		}, shared, ""},
		{"no app", func(e *Event) { e.AppName = "" }, Rules{}, ReasonSchema},
		{"bad uuid", func(e *Event) { e.UUID = "nope" }, Rules{}, ReasonSchema},
		{"tool and payload", func(e *Event) {
			e.Tool, e.UASpoofed, e.Payload = "sipvicious", true, []Payload{{"sqli", "to"}, {"script", "user-agent"}}
		}, shared, ""},
		{"tool not a label", func(e *Event) { e.Tool = "Sip Vicious" }, shared, ReasonSchema},
		{"tool too long", func(e *Event) { e.Tool = strings.Repeat("a", 33) }, shared, ReasonSchema},
		{"payload without kind", func(e *Event) { e.Payload = []Payload{{"", "to"}} }, shared, ReasonSchema},
		{"payload place with markup", func(e *Event) { e.Payload = []Payload{{"sqli", "<b>"}} }, shared, ReasonSchema},
		{"folded", func(e *Event) { e.RepeatCount = 49_999 }, shared, ""},
		{"repeat count negative", func(e *Event) { e.RepeatCount = -1 }, shared, ReasonSchema},
		{"repeat count beyond bound", func(e *Event) { e.RepeatCount = MaxRepeatCount + 1 }, shared, ReasonSchema},
		{"too many payloads", func(e *Event) { e.Payload = make([]Payload, 65) }, shared, ReasonSchema},
		{"uuid not canonical", func(e *Event) { e.UUID = "{4503cc92-26cb-4b3e-bb33-69a83fa09321}" }, Rules{}, ReasonSchema},
		{"bad collected", func(e *Event) { e.CollectedMethod = "peer" }, Rules{}, ReasonSchema},
		{"bad transport", func(e *Event) { e.Transport = "SCTP" }, Rules{}, ReasonSchema},
		{"port", func(e *Event) { e.SourcePort = 70000 }, Rules{}, ReasonSchema},
		{"invalid UTF-8", func(e *Event) { e.SIPUserAgent = "a\xffb" }, Rules{}, ReasonSchema},
		{"bad time", func(e *Event) { e.Timestamp = "2026-11-23T10:11:12Z" }, Rules{}, ReasonTime},
		{"future", func(e *Event) { e.Timestamp = FormatTime(now.Add(time.Hour)) }, window, ReasonTime},
		{"ancient", func(e *Event) { e.Timestamp = FormatTime(now.AddDate(-1, 0, 0)) }, window, ReasonTime},
		{"ancient without window", func(e *Event) { e.Timestamp = FormatTime(now.AddDate(-1, 0, 0)) }, Rules{}, ""},
		{"narrow window", func(e *Event) { e.Timestamp = FormatTime(now.Add(-2 * time.Hour)) }, Rules{Now: now, MaxAge: time.Hour}, ReasonTime},
		{"source with port", func(e *Event) { e.SourceIP = "192.0.2.7:5060" }, Rules{}, ReasonIP},
		{"source not canonical", func(e *Event) { e.SourceIP = "2001:DB8::1" }, Rules{}, ReasonIP},
		{"source mapped", func(e *Event) { e.SourceIP = "::ffff:192.0.2.7" }, Rules{}, ReasonIP},
		{"source unspecified stored", func(e *Event) { e.SourceIP = "0.0.0.0" }, Rules{}, ""},
		{"source unspecified shared", func(e *Event) { e.SourceIP = "::" }, shared, ReasonIP},
		{"dest not IP", func(e *Event) { e.DestinationIP = "x" }, Rules{}, ReasonIP},
		// Capture keeps what came; such events are stored but not shared.
		{"huge agent stored", func(e *Event) { e.SIPUserAgent = strings.Repeat("a", 9000) }, Rules{}, ""},
		{"huge agent shared", func(e *Event) { e.SIPUserAgent = strings.Repeat("a", 9000) }, shared, ReasonSchema},
		{"number control stored", func(e *Event) { e.CalledNumber = "123\t456" }, Rules{}, ""},
		{"number control shared", func(e *Event) { e.CalledNumber = "123\n456" }, shared, ReasonNumber},
		{"number huge shared", func(e *Event) { e.CalledNumber = strings.Repeat("1", 2000) }, shared, ReasonNumber},
		{"injection number shared", func(e *Event) { e.CalledNumber = "100' OR '1'='1" }, shared, ""},
		{"method not a token", func(e *Event) { e.SIPMethod = "INVITE sip:x" }, shared, ReasonSchema},
		{"node id", func(e *Event) { e.NodeID = "" }, shared, ReasonSchema},
		{"node id stored", func(e *Event) { e.NodeID = "" }, Rules{}, ""},
		{"version not printable", func(e *Event) { e.AppVersion = "1\x1b[31m" }, shared, ReasonSchema},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := fixed()
			c.mutate(e)
			err := Check(e, c.rules)
			if got := ReasonOf(err); got != c.reason || (c.reason == "") != (err == nil) {
				t.Errorf("Check = %v (reason %q), want reason %q", err, got, c.reason)
			}
		})
	}
}
