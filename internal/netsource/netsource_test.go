package netsource

import (
	"net/netip"
	"testing"
)

func TestOf(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"2001:db8:0:7::1", "2001:db8:0:7:ffff::9", true},
		{"::ffff:192.0.2.1", "192.0.2.1", true},
		{"fe80::1%eth0", "fe80::2", true},
		{"2001:db8:0:7::1", "2001:db8:0:8::1", false},
		{"192.0.2.1", "192.0.2.2", false},
	} {
		if got := Of(netip.MustParseAddr(c.a)) == Of(netip.MustParseAddr(c.b)); got != c.same {
			t.Errorf("%s and %s one source: %v, want %v", c.a, c.b, got, c.same)
		}
	}
}
