package event

import (
	"bytes"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
)

// joined is the oracle of the ip-port spelling: the event with source_ip and destination_ip
// joined to their ports by net.JoinHostPort (an address without a port left alone), encoded by
// encoding/json.
func joined(t testing.TB, e *Event) []byte {
	c := *e
	if c.SourceIP != "" && c.SourcePort > 0 {
		c.SourceIP = net.JoinHostPort(c.SourceIP, strconv.Itoa(c.SourcePort))
	}
	if c.DestinationIP != "" && c.DestinationPort > 0 {
		c.DestinationIP = net.JoinHostPort(c.DestinationIP, strconv.Itoa(c.DestinationPort))
	}
	return reference(t, &c)
}

func TestAppendJSONCompatIPPort(t *testing.T) {
	for _, c := range []struct {
		name             string
		src, dst         string
		srcPort, dstPort int
		wantSrc, wantDst string
	}{
		{"ipv4", "192.0.2.7", "198.51.100.1", 5173, 5060, "192.0.2.7:5173", "198.51.100.1:5060"},
		{"ipv6", "2001:db8::1", "2001:db8::2", 5060, 5061, "[2001:db8::1]:5060", "[2001:db8::2]:5061"},
		{"ipv6 source, ipv4 destination", "::1", "127.0.0.1", 40000, 5060, "[::1]:40000", "127.0.0.1:5060"},
		{"no source port", "192.0.2.7", "198.51.100.1", 0, 5060, "192.0.2.7", "198.51.100.1:5060"},
		{"no ports (reference database)", "2001:db8::1", "198.51.100.1", 0, 0, "2001:db8::1", "198.51.100.1"},
		{"no destination", "192.0.2.7", "", 5173, 0, "192.0.2.7:5173", ""},
		{"no destination, its port kept", "192.0.2.7", "", 5173, 5060, "192.0.2.7:5173", ""},
		{"highest port", "192.0.2.7", "198.51.100.1", 65535, 1, "192.0.2.7:65535", "198.51.100.1:1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := fixed()
			e.SourceIP, e.DestinationIP, e.SourcePort, e.DestinationPort = c.src, c.dst, c.srcPort, c.dstPort
			got, err := e.AppendJSONCompat([]byte("prefix"), CompatIPPort)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := bytes.CutPrefix(got, []byte("prefix"))
			if !ok {
				t.Fatalf("dst was not appended to: %s", got)
			}
			if want := joined(t, e); !bytes.Equal(got, want) {
				t.Errorf("\n got %s\nwant %s", got, want)
			}
			var m map[string]any
			if err := json.Unmarshal(got, &m); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, got)
			}
			if m["source_ip"] != c.wantSrc || m["destination_ip"] != c.wantDst {
				t.Errorf("source_ip %v destination_ip %v, want %s and %s", m["source_ip"], m["destination_ip"], c.wantSrc, c.wantDst)
			}
			// The ports stay, and every other key has AppendJSON's value, in AppendJSON's order.
			if m["source_port"] != float64(c.srcPort) || m["destination_port"] != float64(c.dstPort) {
				t.Errorf("ports %v and %v, want %d and %d", m["source_port"], m["destination_port"], c.srcPort, c.dstPort)
			}
			plain, _ := e.AppendJSON(nil)
			if gk, pk := keysOf(t, got), keysOf(t, plain); strings.Join(gk, ",") != strings.Join(pk, ",") {
				t.Errorf("keys\n got %v\nwant %v", gk, pk)
			}
			var pm map[string]any
			if err := json.Unmarshal(plain, &pm); err != nil {
				t.Fatal(err)
			}
			for k, v := range pm {
				if k != "source_ip" && k != "destination_ip" && m[k] != v {
					t.Errorf("%s = %v, want %v as without --event-compat", k, m[k], v)
				}
			}
		})
	}
}

// keysOf lists the top-level keys of a JSON object in the order they are written.
func keysOf(t testing.TB, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// CompatNone is AppendJSON byte for byte, extras included.
func TestAppendJSONCompatNoneIsContract(t *testing.T) {
	e := fixed()
	e.SourceIP, e.SourcePort = "2001:db8::1", 5060
	e.Tool, e.UASpoofed, e.Payload, e.RepeatCount, e.SIPMessageLength = "sipvicious", true, []Payload{{"sqli", "to"}}, 7, 70000
	plain, _ := e.AppendJSON(nil)
	none, _ := e.AppendJSONCompat(nil, CompatNone)
	if !bytes.Equal(plain, none) || !bytes.Equal(plain, reference(t, e)) {
		t.Errorf("CompatNone differs from the contract:\n got %s\nwant %s", none, plain)
	}
	// The extras follow the ports in ip-port too.
	ipport, _ := e.AppendJSONCompat(nil, CompatIPPort)
	if want := joined(t, e); !bytes.Equal(ipport, want) {
		t.Errorf("\n got %s\nwant %s", ipport, want)
	}
}

func TestParseCompat(t *testing.T) {
	for in, want := range map[string]Compat{"": CompatNone, "none": CompatNone, "ip-port": CompatIPPort} {
		if got, err := ParseCompat(in); err != nil || got != want {
			t.Errorf("ParseCompat(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"ip:port", "IP-PORT", "tpot", " none"} {
		if _, err := ParseCompat(in); err == nil || !strings.Contains(err.Error(), "ip-port") {
			t.Errorf("ParseCompat(%q) = %v, want an error naming the values", in, err)
		}
	}
	for i, n := range CompatNames {
		if c, err := ParseCompat(n); err != nil || int(c) != i || c.String() != n {
			t.Errorf("CompatNames[%d] %q: parsed %v (%v), String %q", i, n, c, err, c.String())
		}
	}
}

func FuzzAppendJSONCompat(f *testing.F) {
	f.Add("192.0.2.1", 5060, "2001:db8::1", 5061)
	f.Add("", 0, "\"]:\\", -1)
	f.Fuzz(func(t *testing.T, src string, srcPort int, dst string, dstPort int) {
		e := fixed()
		e.SourceIP, e.SourcePort, e.DestinationIP, e.DestinationPort = src, srcPort, dst, dstPort
		got, err := e.AppendJSONCompat(nil, CompatIPPort)
		if err != nil {
			t.Fatal(err)
		}
		if want := joined(t, e); !bytes.Equal(got, want) {
			t.Fatalf("\n got %q\nwant %q", got, want)
		}
	})
}

func BenchmarkMarshalLineIPPort(b *testing.B) {
	e := fixed()
	e.SIPMessage = strings.Repeat("OPTIONS sip:100@192.0.2.2 SIP/2.0\r\n", 12)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.AppendJSONCompat(make([]byte, 0, 1024), CompatIPPort); err != nil {
			b.Fatal(err)
		}
	}
}
