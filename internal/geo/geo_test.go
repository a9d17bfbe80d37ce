package geo

import (
	"net/netip"
	"testing"
)

// Known ranges: addresses whose registration has been stable for decades (national research
// networks, large carriers), so a monthly data update does not move them.
func TestCountry(t *testing.T) {
	for _, tt := range []struct{ ip, want string }{
		{"130.149.1.1", "DE"},  // TU Berlin (DFN)
		{"193.174.0.1", "DE"},  // DFN
		{"128.30.2.1", "US"},   // MIT
		{"18.7.22.69", "US"},   // MIT
		{"131.111.8.46", "GB"}, // University of Cambridge
		{"133.11.0.1", "JP"},   // University of Tokyo
		{"192.87.102.1", "NL"}, // SURF
		{"2001:638::1", "DE"},  // DFN IPv6
		{"2001:630::1", "GB"},  // Jisc IPv6
		{"::ffff:130.149.1.1", "DE"},
		{"127.0.0.1", Unknown},
		{"10.1.2.3", Unknown},
		{"192.168.1.1", Unknown},
		{"::1", Unknown},
		{"fd00::1", Unknown},
		{"0.0.0.0", Unknown},
		{"224.0.0.1", Unknown},
	} {
		if got := Country(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("Country(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
	if got := CountryOf("not an address"); got != Unknown {
		t.Errorf("CountryOf(garbage) = %q", got)
	}
}

func TestNoAllocations(t *testing.T) {
	a4, a6 := netip.MustParseAddr("130.149.1.1"), netip.MustParseAddr("2001:638::1")
	Country(a6) // the IPv6 table is unpacked on first use
	if n := testing.AllocsPerRun(100, func() { Country(a4); Country(a6) }); n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}

func BenchmarkCountry(b *testing.B) {
	a := netip.MustParseAddr("130.149.1.1")
	for b.Loop() {
		Country(a)
	}
}
