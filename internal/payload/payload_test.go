package payload

import (
	"bufio"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
)

// message puts value at where in an otherwise ordinary OPTIONS.
func message(where, value string) string {
	uri := "sip:100@192.0.2.2"
	if where == "request-uri" {
		uri = value
	}
	h := map[string]string{"from": "<sip:a@192.0.2.1>;tag=1", "to": "<sip:100@192.0.2.2>", "call-id": "c1@192.0.2.1",
		"contact": "<sip:a@192.0.2.1>", "user-agent": "test"}
	name := map[string]string{"from": "From", "to": "To", "call-id": "Call-ID", "contact": "Contact", "user-agent": "User-Agent"}
	var b strings.Builder
	fmt.Fprintf(&b, "OPTIONS %s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n", uri)
	for _, k := range []string{"from", "to", "call-id", "contact", "user-agent"} {
		v := h[k]
		if k == where {
			v = value
		}
		fmt.Fprintf(&b, "%s: %s\r\n", name[k], v)
	}
	if where == "other" {
		fmt.Fprintf(&b, "X-Extra: %s\r\n", value)
	}
	b.WriteString("CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
	return b.String()
}

// The corpus: every true positive found, of the right kind and at the right place; no false
// positive; precision and recall per kind printed (and held at 0.9 or better).
func TestCorpus(t *testing.T) {
	f, err := os.Open("testdata/corpus.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type counts struct{ tp, fp, fn int }
	per := map[string]*counts{}
	get := func(k string) *counts {
		if per[k] == nil {
			per[k] = &counts{}
		}
		return per[k]
	}
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) != 3 {
			t.Fatalf("corpus line %q: want kind, where, value", line)
		}
		kind, where, value := parts[0], parts[1], parts[2]
		lines++
		found := Detect([]byte(message(where, value)), nil)
		hit := false
		for _, fd := range found {
			if fd.Kind == kind && fd.Where == where {
				hit = true
				continue
			}
			get(fd.Kind).fp++
			t.Errorf("false positive: %s at %s in %q (%s %s)", fd.Kind, fd.Where, value, kind, where)
		}
		if kind != "none" {
			if hit {
				get(kind).tp++
			} else {
				get(kind).fn++
				t.Errorf("missed: %s at %s in %q (found %v)", kind, where, value, found)
			}
		}
	}
	if lines < 40 {
		t.Fatalf("corpus has %d entries", lines)
	}
	var kinds []string
	for k := range per {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		c := per[k]
		precision := float64(c.tp) / float64(max(c.tp+c.fp, 1))
		recall := float64(c.tp) / float64(max(c.tp+c.fn, 1))
		t.Logf("%-6s precision %.2f recall %.2f (tp %d fp %d fn %d)", k, precision, recall, c.tp, c.fp, c.fn)
		if precision < 0.9 || recall < 0.9 {
			t.Errorf("%s: precision %.2f, recall %.2f: want 0.9 or better", k, precision, recall)
		}
	}
}

// The real captures of the tools carry no payload, the seed's SQL injection in To does.
func TestCaptures(t *testing.T) {
	for name, want := range map[string]string{"svmap-options.sip": "", "sipp-invite.sip": "", "sipsak-options.sip": "", "svcrack-register-auth.sip": "", "sqli-to.sip": "sqli to"} {
		b, err := os.ReadFile("../sip/testdata/messages/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range Detect(b, nil) {
			got = append(got, f.Kind+" "+f.Where)
		}
		if strings.Join(got, ",") != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

func TestNoAllocations(t *testing.T) {
	msg := []byte(message("to", "<sip:1' OR '1'='1@192.0.2.2>"))
	out := make([]Finding, 0, 8)
	if n := testing.AllocsPerRun(100, func() { out = Detect(msg, out[:0]) }); n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}

func BenchmarkDetect(b *testing.B) {
	clean, _ := os.ReadFile("../sip/testdata/messages/svmap-options.sip")
	out := make([]Finding, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		out = Detect(clean, out[:0])
	}
}

// FuzzDetect: any input, no panic; every finding is of a known kind.
func FuzzDetect(f *testing.F) {
	f.Add([]byte(message("to", "<sip:1' OR '1'='1@192.0.2.2>")))
	f.Add([]byte("INVITE %s%n SIP/2.0\r\nf: $(id)\r\n\r\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, fd := range Detect(raw, nil) {
			switch fd.Kind {
			case SQLi, Shell, Format, Script:
			default:
				t.Fatalf("unknown kind %q", fd.Kind)
			}
			if fd.Where == "" {
				t.Fatal("a finding without a place")
			}
		}
	})
}

// One kind in many headers of one name is one finding, so a message cannot crowd out the
// others or count twenty times in the statistics.
func TestFindingsAreDistinct(t *testing.T) {
	var b strings.Builder
	b.WriteString("OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n")
	for i := range 20 {
		fmt.Fprintf(&b, "X-%d: 1' OR '1'='1\r\n", i)
	}
	b.WriteString("User-Agent: <script>alert(1)</script>\r\n\r\n")
	got := Detect([]byte(b.String()), nil)
	want := []Finding{{SQLi, "other"}, {Script, "user-agent"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("findings %v, want %v", got, want)
	}
}

// Every place a finding names is one the event's statistics know.
func TestPlacesAreKnown(t *testing.T) {
	for _, p := range append([]string{"request-uri", "other"}, headers...) {
		if !slices.Contains(event.PayloadPlaces, p) {
			t.Errorf("place %q is not in event.PayloadPlaces", p)
		}
	}
	for _, r := range rules {
		if !slices.Contains(event.PayloadKinds, r.kind) {
			t.Errorf("kind %q is not in event.PayloadKinds", r.kind)
		}
	}
}

// Only the first maxScan bytes of a value are read, escapes or not: the capture path reads
// every message, and a 64 KiB header must cost what its first KiB does.
func TestLongValuesAreBounded(t *testing.T) {
	pad := strings.Repeat("%20", maxScan) // maxScan bytes once decoded
	for _, tail := range []string{"%n", "' or 1=1--"} {
		msg := "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nSubject: " + pad + tail + "\r\n\r\n"
		if got := Detect([]byte(msg), nil); len(got) != 0 {
			t.Errorf("%q after %d bytes found: %v", tail, len(pad), got)
		}
	}
	if got := Detect([]byte("OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nSubject: %20%n\r\n\r\n"), nil); len(got) != 1 {
		t.Errorf("a format string near the start: %v", got)
	}
}
