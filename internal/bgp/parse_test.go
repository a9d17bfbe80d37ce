package bgp

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseNeighbor(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	long := filepath.Join(t.TempDir(), "long")
	os.WriteFile(long, []byte(strings.Repeat("x", 81)), 0o600)
	for _, tc := range []struct {
		in   string
		want Neighbor
		err  string
	}{
		{in: "192.0.2.1 as 65001", want: Neighbor{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65001}},
		{in: "  2001:db8::1   as 4200000000 port 1179 passive local 2001:db8::2 ", want: Neighbor{Address: netip.MustParseAddr("2001:db8::1"),
			ASN: 4200000000, Port: 1179, Passive: true, LocalAddr: netip.MustParseAddr("2001:db8::2")}},
		{in: "::ffff:192.0.2.1 as 1 ttl-security password-file " + pw, want: Neighbor{Address: netip.MustParseAddr("192.0.2.1"), ASN: 1, TTLSecurity: true, Password: "s3cret"}},
		{in: "192.0.2.1 as 1 multihop 3", want: Neighbor{Address: netip.MustParseAddr("192.0.2.1"), ASN: 1, Multihop: 3}},
		{in: "", err: "ADDRESS as ASN"},
		{in: "router1 as 1", err: "not an IP address"},
		{in: "fe80::1%eth0 as 1", err: "not an IP address"},
		{in: "192.0.2.1", err: "AS number"},
		{in: "192.0.2.1 as", err: "as needs"},
		{in: "192.0.2.1 as 0", err: "as needs"},
		{in: "192.0.2.1 as 4294967296", err: "as needs"},
		{in: "192.0.2.1 as 1 port 0", err: "port needs"},
		{in: "192.0.2.1 as 1 port 65536", err: "port needs"},
		{in: "192.0.2.1 as 1 multihop 256", err: "multihop needs"},
		{in: "192.0.2.1 as 1 password-file /nonexistent/pw", err: "read the password"},
		{in: "192.0.2.1 as 1 password-file " + long, err: "1 to 80"},
		{in: "192.0.2.1 as 1 ttl-security multihop 2", err: "exclude"},
		{in: "192.0.2.1 as 1 password s3cret", err: "unknown word"},
	} {
		got, err := ParseNeighbor(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseNeighbor(%q) error %v, want one with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseNeighbor(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseNextHops(t *testing.T) {
	v4, v6, err := ParseNextHops(nil)
	if err != nil || v4 != DefaultNextHop4 || v6 != DefaultNextHop6 {
		t.Fatalf("defaults: %s %s %v", v4, v6, err)
	}
	v4, v6, err = ParseNextHops([]string{"2001:db8::66", "198.51.100.1"})
	if err != nil || v4.String() != "198.51.100.1" || v6.String() != "2001:db8::66" {
		t.Fatalf("both: %s %s %v", v4, v6, err)
	}
	for _, bad := range [][]string{{"x"}, {"0.0.0.0"}, {"1.1.1.1", "2.2.2.2"}, {"::1", "::2"}, {"fe80::1%lo"}} {
		if _, _, err := ParseNextHops(bad); err == nil {
			t.Errorf("ParseNextHops(%q) accepted", bad)
		}
	}
}

// FuzzParseNeighbor: any input gives a valid neighbour or an error, never a panic, and a
// valid one has an address and an AS number.
func FuzzParseNeighbor(f *testing.F) {
	for _, s := range []string{"192.0.2.1 as 65001", "2001:db8::1 as 1 port 179 passive", "1.2.3.4 as 1 multihop 2 local 1.2.3.5", "x as", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.Contains(s, "password-file") {
			return // reads files
		}
		n, err := ParseNeighbor(s)
		if err == nil && (!n.Address.IsValid() || n.ASN == 0 || (n.TTLSecurity && n.Multihop > 0)) {
			t.Fatalf("ParseNeighbor(%q) = %+v without an error", s, n)
		}
	})
}
