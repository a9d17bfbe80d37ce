package numberintel

import (
	"fmt"
	"testing"
)

// Real dial patterns: the prefixes scanners put before a foreign number to break out of a PBX
// (the seed's honeynet saw "+", "900", "9011" and "000" before one Swedish number), North
// American and European access codes, national numbers behind an outside line, and what is
// no number at all.
func TestAnalyze(t *testing.T) {
	for _, tc := range []struct {
		dialled, home                string
		prefix, target, country, typ string
		e164                         bool
	}{
		{"+46812118532", "", "+", "+46812118532", "SE", "fixed", true},
		{"0046812118532", "", "00", "+46812118532", "SE", "fixed", true},
		{"00046812118532", "", "000", "+46812118532", "SE", "fixed", true},
		{"900468121185 32", "", "900", "+46812118532", "SE", "fixed", true},
		{"901146812118532", "", "9011", "+46812118532", "SE", "fixed", true},
		{"900046812118532", "", "9000", "+46812118532", "SE", "fixed", true},
		{"011442071838750", "", "011", "+442071838750", "GB", "fixed", true},
		{"0019005550123", "", "00", "+19005550123", "US", "premium-rate", true},
		{"+1 (900) 555-0123", "", "+", "+19005550123", "US", "premium-rate", true},
		{"+4915112345678", "", "+", "+4915112345678", "DE", "mobile", true},
		{"0033612345678", "", "00", "+33612345678", "FR", "mobile", true},
		{"+390612345678", "", "+", "+390612345678", "IT", "fixed", true},
		{"030123456", "DE", "", "+4930123456", "DE", "fixed", true},
		{"9030123456", "DE", "9", "+4930123456", "DE", "fixed", true},
		{"030123456", "", "", "030123456", "", "", false}, // no home: digits as dialled
		// An invented number still loses its prefix, so its forms group.
		{"+4990012345", "", "+", "+4990012345", "", "", false},
		{"9004990012345", "", "900", "+4990012345", "", "", false},
		{"0004990012345", "", "000", "+4990012345", "", "", false},
		{"100", "DE", "", "100", "", "", false},
		{"service", "DE", "", "service", "", "", false},
		{"", "", "", "", "", "", false},
		{"12+34", "", "", "12+34", "", "", false},
	} {
		got := Analyze(tc.dialled, tc.home)
		want := Info{Dialled: tc.dialled, Prefix: tc.prefix, Target: tc.target, E164: tc.e164, Country: tc.country, Type: tc.typ}
		if got != want {
			t.Errorf("Analyze(%q, %q) = %+v\n  want %+v", tc.dialled, tc.home, got, want)
		}
	}
}

// One target behind every prefix has one key: a campaign against it is one campaign.
func TestKeyGroupsPrefixes(t *testing.T) {
	keys := map[string]bool{}
	for _, d := range []string{"+46812118532", "0046812118532", "00046812118532", "90046812118532", "901146812118532", "011 46 8 121 185 32"} {
		keys[Analyze(d, "").Key()] = true
	}
	if len(keys) != 1 {
		t.Fatalf("one target, %d keys: %v", len(keys), keys)
	}
}

func BenchmarkAnalyze(b *testing.B) {
	for _, d := range []string{"9011441632960123", "0046812118532"} {
		b.Run(d, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Analyze(d, "DE")
			}
		})
	}
}

// FuzzAnalyze: any string, no panic; an E.164 target is "+" and digits, with a country.
func FuzzAnalyze(f *testing.F) {
	for _, s := range []string{"+46812118532", "9011441632960123", "030123456", "service", "+", "00", "9"} {
		f.Add(s, "DE")
	}
	f.Fuzz(func(t *testing.T, d, home string) {
		if len(home) > 3 {
			return
		}
		got := Analyze(d, home)
		if got.E164 && (len(got.Target) < 2 || got.Target[0] != '+' || got.Country == "") {
			t.Fatalf("%q: %+v", d, got)
		}
		_ = fmt.Sprint(got)
	})
}
